//! Basic authentication: the `Authorization` header checked against a route's htpasswd users.
//!
//! As ingress-nginx: no or wrong credentials get 401 with `WWW-Authenticate: Basic realm="…"`, a
//! misconfigured route (missing Secret, nothing usable in it) gets 503 and never lets a request
//! through, and the `Authorization` header is removed before the request is forwarded. Hash
//! comparisons are constant-time, and an unknown user name costs a verification against another
//! user's hash, so the time taken does not tell which names exist. Slow hashes run on the
//! blocking pool, and credentials that verified are remembered (see `BasicAuth`), so bcrypt is
//! paid once per user, not per request.

use std::ops::ControlFlow;
use std::sync::Arc;

use base64::Engine as _;
use http::HeaderMap;
use http::header::AUTHORIZATION;
use md5::{Digest as _, Md5};
use ostium_model::{BasicAuth, Credentials, PasswordHash};
use sha_crypt::{PasswordVerifier as _, ShaCrypt};
use sha1::Sha1;
use subtle::ConstantTimeEq;

use crate::ProxyError;
use crate::outcome::Outcome;

/// Lets a request with valid credentials through; challenges (401) one without, and refuses
/// (503) every request when the route's configuration cannot be evaluated.
pub(super) async fn check(auth: Option<&Arc<BasicAuth>>, headers: &HeaderMap) -> ControlFlow<Outcome> {
    let Some(auth) = auth else { return ControlFlow::Continue(()) };
    match verdict(auth, headers).await {
        Verdict::Allow => ControlFlow::Continue(()),
        Verdict::Challenge => ControlFlow::Break(Outcome::Challenge(auth.challenge.clone())),
        Verdict::Deny => ControlFlow::Break(Outcome::Refuse(ProxyError::AuthMisconfigured)),
    }
}

/// The outcome of checking a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Allow,
    /// 401 with the route's challenge.
    Challenge,
    /// 503: the route's authentication cannot be evaluated.
    Deny,
}

/// Checks a request's credentials.
async fn verdict(auth: &BasicAuth, headers: &HeaderMap) -> Verdict {
    let Credentials::Users(users) = &auth.credentials else { return Verdict::Deny };
    let Some((user, password)) = basic_credentials(headers) else { return Verdict::Challenge };
    if auth.is_cached(&user, &password) {
        return Verdict::Allow;
    }
    let (hash, is_known) = match users.get(&user) {
        Some(hash) => (hash, true),
        // `Users` is never empty (translation refuses that), so there is a hash to spend time on.
        None => match users.values().next() {
            Some(hash) => (hash, false),
            None => return Verdict::Challenge,
        },
    };
    let verified = match hash {
        PasswordHash::Sha1(_) => verify(hash, &password),
        // The others cost from a fraction of a millisecond (apr1) to ~100 ms (bcrypt): keep them
        // off the threads that serve connections.
        _ => {
            let (hash, password) = (hash.clone(), password.clone());
            tokio::task::spawn_blocking(move || verify(&hash, &password)).await.unwrap_or(false)
        }
    };
    if !(verified && is_known) {
        return Verdict::Challenge;
    }
    auth.remember(&user, &password);
    Verdict::Allow
}

/// `Authorization: Basic base64(user:password)`, decoded.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, Vec<u8>)> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, encoded) = value.split_at(value.iter().position(|&b| b == b' ')?);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim_ascii()).ok()?;
    let colon = decoded.iter().position(|&b| b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

/// Whether a password matches a hash.
fn verify(hash: &PasswordHash, password: &[u8]) -> bool {
    match hash {
        PasswordHash::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
        PasswordHash::ShaCrypt(hash) => ShaCrypt::default().verify_password(password, hash.as_ref()).is_ok(),
        PasswordHash::Sha1(digest) => Sha1::digest(password).as_slice().ct_eq(digest).into(),
        PasswordHash::Apr1 { salt, hash } => {
            apr1(password, salt.as_bytes()).as_bytes().ct_eq(hash.as_bytes()).into()
        }
    }
}

/// Apache's MD5 crypt (`$apr1$`): the FreeBSD md5-crypt construction with magic `$apr1$`,
/// encoded in crypt's base64 alphabet. Returns the 22-character hash part.
fn apr1(password: &[u8], salt: &[u8]) -> String {
    const MAGIC: &[u8] = b"$apr1$";
    let salt = &salt[..salt.len().min(8)];

    let alternate = Md5::new().chain_update(password).chain_update(salt).chain_update(password).finalize();
    let mut context = Md5::new().chain_update(password).chain_update(MAGIC).chain_update(salt);
    let mut left = password.len();
    while left > 0 {
        let take = left.min(16);
        context.update(&alternate[..take]);
        left -= take;
    }
    let mut bits = password.len();
    while bits > 0 {
        context.update(if bits & 1 == 1 { &[0u8][..] } else { &password[..1] });
        bits >>= 1;
    }
    let mut digest = context.finalize();
    for round in 0..1000 {
        let mut step = Md5::new();
        if round & 1 == 1 {
            step.update(password)
        } else {
            step.update(digest)
        }
        if round % 3 != 0 {
            step.update(salt);
        }
        if round % 7 != 0 {
            step.update(password);
        }
        if round & 1 == 1 {
            step.update(digest)
        } else {
            step.update(password)
        }
        digest = step.finalize();
    }

    const ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(22);
    let mut encode = |value: u32, chars: usize| {
        let mut value = value;
        for _ in 0..chars {
            out.push(ALPHABET[(value & 0x3f) as usize] as char);
            value >>= 6;
        }
    };
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        encode(u32::from(digest[a]) << 16 | u32::from(digest[b]) << 8 | u32::from(digest[c]), 4);
    }
    encode(u32::from(digest[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Hashes made with Debian's htpasswd (apache2-utils) and mkpasswd; the password is "secret".
    const APR1: (&str, &str) = ("OS747Rix", "RkHZvvgkwtXvJEPl1Ymc60");
    const SHA1: &str = "5en6G6MezRroT3XKqkdPOmY/BfQ=";

    #[test]
    fn apr1_matches_htpasswd() {
        assert_eq!(apr1(b"secret", APR1.0.as_bytes()), APR1.1);
        let hash = PasswordHash::Apr1 { salt: APR1.0.into(), hash: APR1.1.into() };
        assert!(verify(&hash, b"secret"));
        assert!(!verify(&hash, b"Secret"));
    }

    #[test]
    fn sha1_matches_htpasswd() {
        let digest: [u8; 20] =
            base64::engine::general_purpose::STANDARD.decode(SHA1).unwrap().try_into().unwrap();
        assert!(verify(&PasswordHash::Sha1(digest), b"secret"));
        assert!(!verify(&PasswordHash::Sha1(digest), b"secre"));
    }

    const SHA512_CRYPT: &str = "$6$7P/SvTZN/P6N0BZ/$vGPi8Vr9ehCd09ep1ArRRUYJpLDzT2HQ2puJemyPjVp/3AtBkHLVRjvQw2yw3XHC6Al7Pu7JA7fPlKZG5ARwc1";
    const SHA256_CRYPT: &str = "$5$KvvN61rx03G8ymJ4$Tmf.Yiz1.lCb06SLCpSBuHjIJsbt6ysOhkJnwtjndW0";

    #[test]
    fn sha_crypt_matches_mkpasswd() {
        for hash in [SHA512_CRYPT, SHA256_CRYPT] {
            assert!(verify(&PasswordHash::ShaCrypt(hash.into()), b"secret"), "{hash}");
            assert!(!verify(&PasswordHash::ShaCrypt(hash.into()), b"secret2"), "{hash}");
        }
    }

    #[test]
    fn bcrypt_verifies() {
        let bcrypt = bcrypt::hash_with_result("secret", 4).unwrap().format_for_version(bcrypt::Version::TwoY);
        assert!(verify(&PasswordHash::Bcrypt(bcrypt.clone().into()), b"secret"));
        assert!(!verify(&PasswordHash::Bcrypt(bcrypt.into()), b"wrong"));
        assert!(
            !verify(&PasswordHash::Bcrypt("$2y$10$not-a-hash".into()), b"secret"),
            "malformed: false, no panic"
        );
    }

    #[test]
    fn basic_header_is_decoded() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Basic YWxpY2U6czNjcjN0OndpdGg6Y29sb25z".parse().unwrap());
        assert_eq!(basic_credentials(&headers), Some(("alice".to_owned(), b"s3cr3t:with:colons".to_vec())));
        headers.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(basic_credentials(&headers), None);
        headers.insert(AUTHORIZATION, "Basic !!!".parse().unwrap());
        assert_eq!(basic_credentials(&headers), None);
    }
}
