//! Server URL parsing over arbitrary UTF-8.
//!
//! Checked, besides "never panics":
//! - a URL that parses is shown (`Display`) as a URL that parses back to the same endpoint,
//!   whenever the user name and folder need no %-encoding to survive the trip (`Display` shows
//!   them decoded, so a `%`, `/` or `:` in the user, a `%` in the folder or a folder ending in
//!   `/` cannot round-trip and is left out);
//! - a password in the URL (`scheme://user:PASSWORD@host`) never reaches the error message:
//!   the message is the same whatever the password (a plain "does not contain" check would
//!   trip on passwords such as `a` that occur in the message's fixed words).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mailferry::endpoint::Endpoint;
use mailferry::error::Error;

/// The password as `Endpoint::parse` sees it: after the first `:` of the user info, which is
/// everything before the last `@` of the authority.
fn password(url: &str) -> Option<(usize, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let colon = userinfo.find(':')?;
    let start = scheme.len() + 3 + colon + 1;
    Some((start, &userinfo[colon + 1..]))
}

fuzz_target!(|url: &str| {
    match Endpoint::parse(url) {
        Ok(endpoint) => {
            assert!(
                password(url).is_none(),
                "a URL with a password was accepted"
            );
            let shown = endpoint.to_string();
            let survives = !endpoint.user.contains(['%', '/', ':'])
                && endpoint
                    .folder
                    .as_deref()
                    .is_none_or(|f| !f.contains('%') && !f.ends_with('/'));
            if survives {
                match Endpoint::parse(&shown) {
                    Ok(again) => assert_eq!(again, endpoint, "{url:?} shown as {shown:?}"),
                    Err(err) => panic!("{url:?} shown as {shown:?}, which does not parse: {err}"),
                }
            }
        }
        Err(err) => {
            let Error::Usage { message, .. } = &err else {
                panic!("a URL error is not a usage error: {err:?}");
            };
            let _ = err.to_string();
            if let Some((start, secret)) = password(url) {
                // Whatever the password is, the message is the same: it is never shown.
                let other = if secret == "x" { "y" } else { "x" };
                let swapped = [&url[..start], other, &url[start + secret.len()..]].concat();
                match Endpoint::parse(&swapped) {
                    Err(Error::Usage { message: m, .. }) => {
                        assert_eq!(&m, message, "{url:?} vs {swapped:?}")
                    }
                    other => panic!("{swapped:?} gave {other:?}, {url:?} gave {message:?}"),
                }
            }
        }
    }
});
