//! Session affinity (`affinity`, `affinity-mode`, `session-cookie-*`) and consistent hashing
//! (`upstream-hash-by`, `upstream-hash-by-subset`, `upstream-hash-by-subset-size`), as
//! ingress-nginx's `internal/ingress/annotations/sessionaffinity/main.go` and
//! `upstreamhashby/main.go` read them. As its Lua balancer (`balancer.lua`), cookie affinity
//! wins over hashing.

use std::num::NonZeroU32;
use std::sync::Arc;

use ostium_model::{
    Affinity, AffinityMode, DEFAULT_SESSION_COOKIE, DEFAULT_SUBSET_SIZE, Policy, SameSite, SessionCookie,
    UpstreamHash,
};

use super::external_auth::template;
use super::{Parser, is_basic_char};
use crate::{Diagnostic, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &[
    "affinity",
    "affinity-mode",
    "session-cookie-name",
    "session-cookie-path",
    "session-cookie-domain",
    "session-cookie-expires",
    "session-cookie-max-age",
    "session-cookie-samesite",
    "session-cookie-conditional-samesite-none",
    "session-cookie-secure",
    "session-cookie-change-on-failure",
    "upstream-hash-by",
    "upstream-hash-by-subset",
    "upstream-hash-by-subset-size",
];

impl Parser<'_> {
    /// `affinity: cookie` and its settings; an invalid setting is reported and keeps its
    /// default, as ingress-nginx's `cookieAffinityParse`. Returns whether the cookie's path is
    /// the route's (no valid `session-cookie-path`): then each route sets it.
    pub(super) fn affinity(&mut self, policy: &mut Policy) -> bool {
        match self.value("affinity").map(str::trim) {
            None | Some("") => return false,
            Some("cookie") => {}
            Some(_) => {
                self.invalid("affinity", "cookie");
                return false;
            }
        }
        let mode = match self.value("affinity-mode").map(str::trim) {
            None | Some("balanced") => AffinityMode::Balanced,
            Some("persistent") => AffinityMode::Persistent,
            Some(_) => {
                self.warn_default("affinity-mode", "balanced");
                AffinityMode::Balanced
            }
        };
        let name = match self.text("session-cookie-name", is_basic_char) {
            Some(Ok(name)) => name,
            Some(Err(())) => {
                self.warn_default("session-cookie-name", DEFAULT_SESSION_COOKIE);
                DEFAULT_SESSION_COOKIE.into()
            }
            None => DEFAULT_SESSION_COOKIE.into(),
        };
        let path = match self.text("session-cookie-path", |b| is_basic_char(b) || b",?&=".contains(&b)) {
            Some(Ok(path)) => Some(path),
            Some(Err(())) => {
                let message = format!(
                    "annotation {}/session-cookie-path has an invalid value; the route's path is used",
                    self.prefix
                );
                self.diagnostics.push(Diagnostic::warning(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
                None
            }
            None => None,
        };
        if path.is_none() && self.value("use-regex").is_some_and(|v| parses_true(v.trim())) {
            let message = format!(
                "annotation {}/session-cookie-path should be set when use-regex is true: the cookie's Path is the regex as written",
                self.prefix
            );
            self.diagnostics.push(Diagnostic::warning(
                self.object.clone(),
                Reason::InvalidAnnotation,
                message,
            ));
        }
        let domain = match self.text("session-cookie-domain", is_basic_char) {
            Some(Ok(domain)) => Some(domain),
            Some(Err(())) => {
                self.warn_default("session-cookie-domain", "");
                None
            }
            None => None,
        };
        let expires = self.cookie_seconds("session-cookie-expires");
        let max_age = self.cookie_seconds("session-cookie-max-age");
        let same_site = self.same_site();
        let cookie = SessionCookie {
            name,
            path: path.clone().unwrap_or_else(|| "/".into()),
            domain,
            expires,
            max_age,
            same_site,
            conditional_same_site_none: self
                .flag("session-cookie-conditional-samesite-none")
                .unwrap_or(false),
            secure: self.flag("session-cookie-secure").unwrap_or(false),
        };
        let change_on_failure = self.flag("session-cookie-change-on-failure").unwrap_or(false);
        policy.affinity = Some(Arc::new(Affinity { mode, cookie, change_on_failure }));
        path.is_none()
    }

    /// `upstream-hash-by` with its subset keys. ingress-nginx refuses the whole Ingress when one
    /// of them fails its validation; here the invalid key is reported (an error) and left out.
    pub(super) fn upstream_hash(&mut self, policy: &mut Policy) {
        let Some(value) = self.value("upstream-hash-by").map(str::trim).filter(|v| !v.is_empty()) else {
            return;
        };
        // ingress-nginx's `hashByRegex`: letters, digits, `-_${}`.
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-_${}".contains(&b);
        let key = match value.bytes().all(allowed).then(|| template(value)) {
            Some(Ok(key)) => key,
            Some(Err(reason)) => {
                self.invalid("upstream-hash-by", &format!("nginx variables and text ({reason})"));
                return;
            }
            None => {
                self.invalid("upstream-hash-by", "nginx variables and text of letters, digits, -, _");
                return;
            }
        };
        let subset = self.flag("upstream-hash-by-subset").unwrap_or(false);
        let size = match self.value("upstream-hash-by-subset-size").map(|v| v.trim().parse::<i64>()) {
            None | Some(Ok(0)) => DEFAULT_SUBSET_SIZE,
            Some(Ok(size)) if size > 0 => u32::try_from(size).unwrap_or(u32::MAX),
            Some(_) => {
                self.warn_default("upstream-hash-by-subset-size", "3");
                DEFAULT_SUBSET_SIZE
            }
        };
        if policy.affinity.is_some() {
            let message = format!(
                "annotation {}/upstream-hash-by has no effect: affinity cookie decides the endpoint",
                self.prefix
            );
            self.diagnostics.push(Diagnostic::warning(
                self.object.clone(),
                Reason::InvalidAnnotation,
                message,
            ));
            return;
        }
        let subset_size = subset.then(|| NonZeroU32::new(size)).flatten();
        policy.upstream_hash = Some(Arc::new(UpstreamHash { key, subset_size }));
    }

    /// A value made of the bytes `allowed` accepts, trimmed (`Err` otherwise); `None` when unset
    /// or empty, as ingress-nginx's `parseString` treats an empty value as missing.
    fn text(&mut self, name: &str, allowed: impl Fn(u8) -> bool) -> Option<Result<Box<str>, ()>> {
        let value = self.value(name)?.trim();
        if value.is_empty() {
            return None;
        }
        Some(if value.bytes().all(allowed) { Ok(value.into()) } else { Err(()) })
    }

    /// `session-cookie-expires` and `-max-age`: whole seconds, possibly negative (as
    /// `affinityCookieExpiresRegex`); anything else is reported and no attribute is written.
    fn cookie_seconds(&mut self, name: &str) -> Option<i64> {
        let value = self.value(name)?.trim();
        match value.parse::<i64>() {
            Ok(seconds) if !value.starts_with('+') => Some(seconds),
            _ => {
                self.warn_default(name, "");
                None
            }
        }
    }

    /// `session-cookie-samesite`. ingress-nginx accepts `none`, `lax` and `strict` in any case,
    /// but `resty.cookie` writes the attribute only for `None`, `Lax` and `Strict` as spelled
    /// here; other spellings give no attribute, with a warning.
    fn same_site(&mut self) -> Option<SameSite> {
        let value = self.value("session-cookie-samesite")?.trim();
        let same_site = match value {
            "None" => SameSite::None,
            "Lax" => SameSite::Lax,
            "Strict" => SameSite::Strict,
            "" => return None,
            _ => {
                let message = format!(
                    "annotation {}/session-cookie-samesite: only None, Lax or Strict (capitalised so) give the cookie a SameSite attribute, as in ingress-nginx; none is written",
                    self.prefix
                );
                self.diagnostics.push(Diagnostic::warning(
                    self.object.clone(),
                    Reason::InvalidAnnotation,
                    message,
                ));
                return None;
            }
        };
        Some(same_site)
    }
}

/// The policy of a route whose session cookie takes the route's path (`$location_path`: the
/// Ingress path as written). A path that cannot be a cookie attribute keeps `/`.
pub(crate) fn with_cookie_path(policy: &Arc<Policy>, written: &str) -> Arc<Policy> {
    let Some(affinity) = &policy.affinity else { return policy.clone() };
    let usable = written.bytes().all(|b| b.is_ascii_graphic() && b != b';');
    if !usable || *affinity.cookie.path == *written {
        return policy.clone();
    }
    let mut affinity = Affinity::clone(affinity);
    affinity.cookie.path = written.into();
    Arc::new(Policy { affinity: Some(Arc::new(affinity)), ..Policy::clone(policy) })
}

/// `true` as Go's `strconv.ParseBool` reads it.
fn parses_true(value: &str) -> bool {
    matches!(value, "1" | "t" | "T" | "true" | "TRUE" | "True")
}
