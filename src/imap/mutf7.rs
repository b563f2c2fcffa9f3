//! Modified UTF-7 for mailbox names (RFC 3501 §5.1.3).
//!
//! IMAP4rev1 servers name mailboxes in this encoding: printable ASCII stands for itself except
//! `&`, which becomes `&-`; everything else is UTF-16, base64-encoded with `,` in place of `/`,
//! between `&` and `-`.

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,";

/// Encodes a mailbox name for the wire.
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    for ch in name.chars() {
        if (' '..='~').contains(&ch) {
            flush_base64(&mut pending, &mut out);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            pending.extend_from_slice(ch.encode_utf16(&mut [0; 2]));
        }
    }
    flush_base64(&mut pending, &mut out);
    out
}

fn flush_base64(units: &mut Vec<u16>, out: &mut String) {
    if units.is_empty() {
        return;
    }
    let bytes: Vec<u8> = units.iter().flat_map(|u| u.to_be_bytes()).collect();
    out.push('&');
    base64_into(&bytes, ALPHABET, false, out);
    out.push('-');
    units.clear();
}

/// Base64 with a chosen alphabet; shared with SASL, which wants the standard one with padding.
pub(super) fn base64_into(input: &[u8], alphabet: &[u8; 64], pad: bool, out: &mut String) {
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(alphabet[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if pad {
                out.push('=');
            }
        }
    }
}

/// Decodes a mailbox name from the wire; `None` when it is not valid modified UTF-7 (some
/// servers send raw UTF-8 or 8-bit names, which the caller may then keep as they are).
pub fn decode(wire: &str) -> Option<String> {
    let mut out = String::with_capacity(wire.len());
    let mut rest = wire;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let end = after.find('-')?;
        if end == 0 {
            out.push('&');
        } else {
            out.push_str(&decode_base64_utf16(&after[..end])?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn decode_base64_utf16(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in text.as_bytes() {
        let value = ALPHABET.iter().position(|&a| a == c)? as u32;
        acc = (acc << 6 | value) & 0xFFFF;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            bytes.push((acc >> bits) as u8);
        }
    }
    // Leftover bits must be zero padding, and the bytes must make whole UTF-16 units.
    if acc & ((1 << bits) - 1) != 0 || bytes.is_empty() || bytes.len() % 2 != 0 {
        return None;
    }
    let units: Vec<u16> = bytes
        .chunks(2)
        .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
        .collect();
    String::from_utf16(&units).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_names() {
        let cases = [
            ("INBOX", "INBOX"),
            ("Données", "Donn&AOk-es"),
            ("a&b", "a&-b"),
            ("&", "&-"),
            ("Entwürfe/Alt", "Entw&APw-rfe/Alt"),
            ("台北", "&U,BTFw-"),
            ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),
            ("😀", "&2D3eAA-"),
            ("x😀y€", "x&2D3eAA-y&IKw-"),
        ];
        for (name, wire) in cases {
            assert_eq!(encode(name), wire, "encode {name}");
            assert_eq!(decode(wire).as_deref(), Some(name), "decode {wire}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for wire in ["&", "&AOk", "&A-", "&AO!-", "&2D0-", "&AOl-"] {
            assert_eq!(decode(wire), None, "{wire}");
        }
    }

    proptest! {
        #[test]
        fn any_name_round_trips(name in any::<String>()) {
            let wire = encode(&name);
            prop_assert!(wire.bytes().all(|b| (0x20..0x7f).contains(&b)));
            prop_assert_eq!(decode(&wire), Some(name));
        }
    }
}
