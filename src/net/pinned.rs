//! Certificates pinned with `--tls-ca`: the server presents exactly a certificate of the file.
//!
//! The servers people migrate off often present a self-signed certificate that webpki refuses
//! however much the user trusts it: `CA:TRUE` (as `openssl req -x509` makes them, refused as
//! `CaUsedAsEndEntity`), the host named only in the subject CN, another host's name, or dates
//! long past. A user who hands us that very certificate has vouched for it, so the byte
//! comparison is the identity check: what is off about its names and dates is reported in one
//! warning line ([`Pins::warn_once`]), not refused. The handshake signatures are still checked,
//! so a server presenting the certificate without its key fails. A CA in the same file stays a
//! CA: what it signed gets every check.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, NaiveDate, Utc};
use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// The certificates of a `--tls-ca` file, and the servers already warned about.
#[derive(Debug)]
pub(super) struct Pins {
    certs: Vec<CertificateDer<'static>>,
    /// (host, certificate) pairs whose warning was printed: every connection of a job meets
    /// the same certificate, and one line says it all.
    warned: Mutex<HashSet<(String, CertificateDer<'static>)>>,
}

impl Pins {
    pub(super) fn new(certs: Vec<CertificateDer<'static>>) -> Self {
        Pins {
            certs,
            warned: Mutex::default(),
        }
    }

    fn contains(&self, cert: &CertificateDer<'_>) -> bool {
        self.certs.iter().any(|pin| pin == cert)
    }

    /// Called once a handshake with `host` has succeeded (so the server proved it holds the
    /// key): when it presented a pinned certificate with something off, prints one warning
    /// line to stderr, the first time for this host and certificate.
    pub(super) fn warn_once(&self, host: &str, presented: Option<&[CertificateDer<'_>]>) {
        let Some(end_entity) = presented
            .and_then(<[_]>::first)
            .filter(|cert| self.contains(cert))
        else {
            return;
        };
        let Some(warning) = warning(host, end_entity, UnixTime::now()) else {
            return;
        };
        let first = self
            .warned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((host.to_owned(), end_entity.clone().into_owned()));
        if first {
            eprintln!("warning: {warning}");
        }
    }
}

/// Trusts a pinned certificate as it is, and anything else as webpki does with the file's
/// certificates as roots.
#[derive(Debug)]
pub(super) struct PinningVerifier {
    /// Built with the job's crypto provider, so its signature checks use that provider's
    /// algorithms for pinned certificates too.
    pub(super) webpki: Arc<WebPkiServerVerifier>,
    pub(super) pins: Arc<Pins>,
}

impl ServerCertVerifier for PinningVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.pins.contains(end_entity) {
            return Ok(ServerCertVerified::assertion());
        }
        self.webpki
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// The warning for a pinned certificate presented by `host`, or `None` when nothing is off.
fn warning(host: &str, cert: &[u8], now: UnixTime) -> Option<String> {
    let now = i64::try_from(now.as_secs())
        .ok()
        .and_then(|secs| DateTime::from_timestamp(secs, 0))?;
    let problems = problems(host, cert, now);
    if problems.is_empty() {
        return None;
    }
    let what: Vec<String> = problems.iter().map(|p| p.describe(host)).collect();
    Some(format!(
        "{host}: trusting the pinned certificate (--tls-ca) although {}",
        what.join(", and ")
    ))
}

/// What is off about a pinned certificate for the host that presented it. Being a CA, or
/// self-signed, is not: that is what a pinned certificate usually is.
#[derive(Debug, PartialEq, Eq)]
enum Problem {
    /// The host is not among the certificate's names: its subjectAltNames, or its subject CN
    /// when it has none.
    OtherNames(Vec<String>),
    /// The host is named only in the subject CN, which clients stopped reading (RFC 6125).
    OnlyInCommonName,
    /// The certificate's last day has passed.
    Expired(DateTime<Utc>),
    /// The certificate's first day is still to come.
    NotYetValid(DateTime<Utc>),
    /// The certificate does not parse here, so neither names nor dates were checked.
    Unreadable,
}

impl Problem {
    fn describe(&self, host: &str) -> String {
        match self {
            Problem::OtherNames(names) if names.is_empty() => "it names no host".into(),
            Problem::OtherNames(names) => {
                let quoted: Vec<String> = names.iter().map(|n| format!("\"{n}\"")).collect();
                format!("it names {} not \"{host}\"", quoted.join(", "))
            }
            Problem::OnlyInCommonName => {
                format!("it names \"{host}\" only in its subject CN, with no subjectAltName")
            }
            Problem::Expired(at) => format!("expired on {}", at.format("%Y-%m-%d")),
            Problem::NotYetValid(at) => format!("is not valid before {}", at.format("%Y-%m-%d")),
            Problem::Unreadable => "its names and dates could not be read".into(),
        }
    }
}

fn problems(host: &str, cert: &[u8], now: DateTime<Utc>) -> Vec<Problem> {
    let Some(facts) = Facts::read(cert) else {
        return vec![Problem::Unreadable];
    };
    let mut problems: Vec<Problem> = facts.name_problem(host).into_iter().collect();
    if now > facts.not_after {
        problems.push(Problem::Expired(facts.not_after));
    } else if now < facts.not_before {
        problems.push(Problem::NotYetValid(facts.not_before));
    }
    problems
}

/// The parts of a certificate a warning is about.
#[derive(Debug)]
struct Facts {
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    common_name: Option<String>,
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
}

const SEQUENCE: u8 = 0x30;
const OID: u8 = 0x06;
const OCTET_STRING: u8 = 0x04;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;
/// `[0]`, constructed: the version field of a v2/v3 certificate.
const VERSION: u8 = 0xa0;
/// `[3]`, constructed: a v3 certificate's extensions.
const EXTENSIONS: u8 = 0xa3;
/// GeneralName choices `[2] dNSName` and `[7] iPAddress` (implicitly tagged, primitive).
const DNS_NAME: u8 = 0x82;
const IP_ADDRESS: u8 = 0x87;
/// 2.5.4.3, commonName.
const COMMON_NAME_OID: &[u8] = &[0x55, 0x04, 0x03];
/// 2.5.29.17, subjectAltName.
const SUBJECT_ALT_NAME_OID: &[u8] = &[0x55, 0x1d, 0x11];

impl Facts {
    /// Reads the validity, subject CN and subjectAltName of a DER certificate (RFC 5280
    /// §4.1). Only this much DER, for a warning: webpki does not expose dates or the CN.
    fn read(der: &[u8]) -> Option<Facts> {
        let (_, certificate) = Elements(der).next().filter(|e| e.0 == SEQUENCE)?;
        let (_, tbs) = Elements(certificate).next().filter(|e| e.0 == SEQUENCE)?;
        // After the version: serialNumber, signature, issuer, then the fields read here.
        let mut fields = Elements(tbs).skip_while(|e| e.0 == VERSION).skip(3);
        let (_, validity) = fields.next().filter(|e| e.0 == SEQUENCE)?;
        let (_, subject) = fields.next().filter(|e| e.0 == SEQUENCE)?;
        let mut times = Elements(validity);
        let not_before = time(times.next()?)?;
        let not_after = time(times.next()?)?;
        let common_name = Elements(subject)
            .flat_map(|(_, set)| Elements(set))
            .find_map(|(_, attribute)| {
                let mut parts = Elements(attribute);
                if parts.next() != Some((OID, COMMON_NAME_OID)) {
                    return None;
                }
                parts.next().map(|(_, value)| lossy(value))
            });
        let mut facts = Facts {
            not_before,
            not_after,
            common_name,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
        };
        let alt_names = fields
            .find(|e| e.0 == EXTENSIONS)
            .and_then(|(_, extensions)| Elements(extensions).next())
            .into_iter()
            .flat_map(|(_, list)| Elements(list))
            .find_map(|(_, extension)| {
                let mut parts = Elements(extension);
                if parts.next() != Some((OID, SUBJECT_ALT_NAME_OID)) {
                    return None;
                }
                // After the optional `critical` BOOLEAN.
                let (_, value) = parts.find(|e| e.0 == OCTET_STRING)?;
                Elements(value).next().map(|(_, names)| names)
            });
        for (tag, value) in alt_names.into_iter().flat_map(Elements) {
            match tag {
                DNS_NAME => facts.dns_names.push(lossy(value)),
                IP_ADDRESS => facts.ip_addresses.extend(ip_address(value)),
                _ => {}
            }
        }
        Some(facts)
    }

    /// Whether the certificate names `host` as TLS clients read names: its subjectAltNames,
    /// and only when it has none, its subject CN.
    fn name_problem(&self, host: &str) -> Option<Problem> {
        if self.dns_names.is_empty() && self.ip_addresses.is_empty() {
            return match &self.common_name {
                Some(cn) if dns_name_matches(cn, host) => Some(Problem::OnlyInCommonName),
                cn => Some(Problem::OtherNames(cn.iter().cloned().collect())),
            };
        }
        let named = match host.parse::<IpAddr>() {
            Ok(ip) => self.ip_addresses.contains(&ip),
            Err(_) => self.dns_names.iter().any(|n| dns_name_matches(n, host)),
        };
        (!named).then(|| {
            let ips = self.ip_addresses.iter().map(IpAddr::to_string);
            Problem::OtherNames(self.dns_names.iter().cloned().chain(ips).collect())
        })
    }
}

/// A certificate name against a host name: equal but for case and a final dot, or a
/// wildcard `*.` standing for exactly one leftmost label.
fn dns_name_matches(name: &str, host: &str) -> bool {
    let canonical = |s: &str| s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    let (name, host) = (canonical(name), canonical(host));
    match name.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => name == host,
    }
}

fn lossy(value: &[u8]) -> String {
    String::from_utf8_lossy(value).into_owned()
}

fn ip_address(octets: &[u8]) -> Option<IpAddr> {
    match octets.len() {
        4 => <[u8; 4]>::try_from(octets).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(octets).ok().map(IpAddr::from),
        _ => None,
    }
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`), the
/// two forms RFC 5280 §4.1.2.5 allows.
fn time((tag, value): (u8, &[u8])) -> Option<DateTime<Utc>> {
    let text = std::str::from_utf8(value).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        UTC_TIME => {
            let yy: i32 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, text.get(2..)?)
        }
        GENERALIZED_TIME => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    if rest.len() != 10 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let two = |at: usize| rest.get(at..at + 2)?.parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(year, two(0)?, two(2)?)?;
    Some(date.and_hms_opt(two(4)?, two(6)?, two(8)?)?.and_utc())
}

/// The DER elements one after another in a byte string, as (tag, contents); ends early at
/// anything malformed.
struct Elements<'a>(&'a [u8]);

impl<'a> Iterator for Elements<'a> {
    type Item = (u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, rest) = self.0.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (length, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            // Long form: the low bits count the length's bytes; a certificate needs few.
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                self.0 = &[];
                return None;
            }
            let (bytes, rest) = rest.split_at(count);
            let length = bytes.iter().fold(0, |n, &b| n << 8 | usize::from(b));
            (length, rest)
        };
        if rest.len() < length {
            self.0 = &[];
            return None;
        }
        let (contents, rest) = rest.split_at(length);
        self.0 = rest;
        Some((tag, contents))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    const SELF_SIGNED_EXPIRED: &[u8] = include_bytes!("../../fixtures/tls/self-signed-expired.pem");
    const CA: &[u8] = include_bytes!("../../fixtures/tls/ca.pem");
    const CA_SIGNED: &[u8] = include_bytes!("../../fixtures/tls/ca-signed.pem");

    fn der(pem: &[u8]) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem).unwrap()
    }

    fn day(text: &str) -> DateTime<Utc> {
        NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(12, 0, 0)
            .unwrap()
            .and_utc()
    }

    fn unix(at: DateTime<Utc>) -> UnixTime {
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(at.timestamp() as u64))
    }

    /// The verifier a `--tls-ca` file holding `pems` makes.
    fn verifier(pems: &[&[u8]]) -> PinningVerifier {
        let certs: Vec<_> = pems.iter().map(|pem| der(pem)).collect();
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(certs.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        PinningVerifier {
            webpki: WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap(),
            pins: Arc::new(Pins::new(certs)),
        }
    }

    fn verify(verifier: &PinningVerifier, cert: &[u8], host: &str, at: &str) -> Result<(), String> {
        let name = ServerName::try_from(host.to_owned()).unwrap();
        verifier
            .verify_server_cert(&der(cert), &[], &name, &[], unix(day(at)))
            .map(drop)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_pinned_certificate_is_trusted_whatever_its_names_and_dates() {
        let pinned = verifier(&[SELF_SIGNED_EXPIRED]);
        for (host, at) in [
            ("127.0.0.1", "2026-12-01"),
            ("old.example", "2019-06-01"),
            ("old.example", "2022-06-01"),
        ] {
            verify(&pinned, SELF_SIGNED_EXPIRED, host, at).unwrap();
        }
        // Without the pin, webpki refuses the very same certificate.
        let err = verify(
            &verifier(&[CA]),
            SELF_SIGNED_EXPIRED,
            "old.example",
            "2022-06-01",
        )
        .unwrap_err();
        assert!(err.contains("invalid peer certificate"), "{err}");
    }

    #[test]
    fn a_ca_in_the_file_keeps_every_check() {
        let with_ca = verifier(&[CA]);
        verify(&with_ca, CA_SIGNED, "old.example", "2027-01-01").unwrap();
        verify(&with_ca, CA_SIGNED, "imap.old.example", "2027-01-01").unwrap();
        let wrong_name = verify(&with_ca, CA_SIGNED, "127.0.0.1", "2027-01-01").unwrap_err();
        assert!(wrong_name.contains("not valid for name"), "{wrong_name}");
        let expired = verify(&with_ca, CA_SIGNED, "old.example", "2127-01-01").unwrap_err();
        assert!(expired.contains("expired"), "{expired}");
    }

    #[test]
    fn reads_names_and_dates_in_both_time_forms() {
        let old = Facts::read(&der(SELF_SIGNED_EXPIRED)).unwrap();
        assert_eq!(old.common_name.as_deref(), Some("old.example"));
        assert!(old.dns_names.is_empty() && old.ip_addresses.is_empty());
        assert_eq!(old.not_before.to_rfc3339(), "2020-01-01T00:00:00+00:00");
        assert_eq!(old.not_after.to_rfc3339(), "2024-01-01T00:00:00+00:00");
        let signed = Facts::read(&der(CA_SIGNED)).unwrap();
        assert_eq!(signed.dns_names, ["old.example", "*.old.example"]);
        assert_eq!(signed.not_after.format("%Y").to_string(), "2126");
        assert!(Facts::read(b"\x30\x82\x01").is_none());
    }

    #[test]
    fn names_what_is_off() {
        let old = der(SELF_SIGNED_EXPIRED);
        let at = |when: &str| unix(day(when));
        assert_eq!(
            warning("127.0.0.1", &old, at("2026-12-01")).as_deref(),
            Some(
                "127.0.0.1: trusting the pinned certificate (--tls-ca) although it names \
                 \"old.example\" not \"127.0.0.1\", and expired on 2024-01-01"
            )
        );
        assert_eq!(
            problems("OLD.example.", &old, day("2022-06-01")),
            [Problem::OnlyInCommonName]
        );
        assert_eq!(
            warning("old.example", &old, at("2019-06-01")).as_deref(),
            Some(
                "old.example: trusting the pinned certificate (--tls-ca) although it names \
                 \"old.example\" only in its subject CN, with no subjectAltName, and is not \
                 valid before 2020-01-01"
            )
        );
        let signed = der(CA_SIGNED);
        for host in ["old.example", "imap.old.example"] {
            assert_eq!(warning(host, &signed, at("2027-01-01")), None, "{host}");
        }
        assert_eq!(
            problems("a.b.old.example", &signed, day("2027-01-01")),
            [Problem::OtherNames(vec![
                "old.example".into(),
                "*.old.example".into()
            ])]
        );
        assert_eq!(
            problems("old.example", b"not DER", day("2027-01-01")),
            [Problem::Unreadable]
        );
    }

    #[test]
    fn warns_once_per_host_and_certificate() {
        let pins = Pins::new(vec![der(SELF_SIGNED_EXPIRED)]);
        let presented = [der(SELF_SIGNED_EXPIRED)];
        for _ in 0..3 {
            pins.warn_once("127.0.0.1", Some(&presented));
        }
        pins.warn_once("localhost", Some(&presented));
        pins.warn_once("127.0.0.1", Some(&[der(CA_SIGNED)]));
        let warned = pins.warned.lock().unwrap();
        assert_eq!(warned.len(), 2, "{warned:?}");
    }
}
