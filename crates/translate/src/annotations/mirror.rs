//! `mirror-target`, `mirror-host`, `mirror-request-body`, as ingress-nginx's
//! `internal/ingress/annotations/mirror/main.go` and the internal location its template writes
//! (`buildMirrorLocations`): the target is an `http` or `https` URL whose path may use
//! `$request_uri`; the copy's `Host` is `mirror-host`, else the target's host name; the body goes
//! with the copy unless `mirror-request-body: off`.
//!
//! The target is parsed here, once, into its parts; nothing of it is interpreted later. Only
//! `$request_uri` is read in it (the variable ingress-nginx documents): a target with another
//! variable, a variable in its host, user information or a fragment is refused with a
//! diagnostic, and the route is served without a mirror (ingress-nginx's validator accepts only
//! letters, digits and `-._~/:^$[](){}*+?|&=\` as well).

use std::sync::Arc;

use http::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme};
use ostium_model::{Mirror, MirrorPath};

use super::{Parser, is_origin_host};
use crate::{Diagnostic, Reason};

/// The keys this module reads.
pub(super) const KEYS: &[&str] = &["mirror-target", "mirror-host", "mirror-request-body"];

/// The one variable a target may use.
const REQUEST_URI: &str = "$request_uri";

impl Parser<'_> {
    /// The route's mirror, or `None` without a valid `mirror-target`.
    pub(super) fn mirror(&mut self) -> Option<Arc<Mirror>> {
        let Some(target) = self.value("mirror-target").map(str::trim) else {
            for key in ["mirror-host", "mirror-request-body"] {
                if self.value(key).is_some() {
                    let message =
                        format!("annotation {}/{key} has no effect without mirror-target", self.prefix);
                    self.diagnostics.push(Diagnostic::warning(
                        self.object.clone(),
                        Reason::InvalidAnnotation,
                        message,
                    ));
                }
            }
            return None;
        };
        // As ingress-nginx: checked with its spaces removed, then anything but `off` (trimmed)
        // is on; a value that fails the check is on, with a warning.
        let request_body = match self.value("mirror-request-body") {
            None => true,
            Some(value) if matches!(value.replace(' ', "").as_str(), "on" | "off") => value.trim() != "off",
            Some(_) => {
                self.warn_default("mirror-request-body", "on");
                true
            }
        };
        let Some((scheme, authority, path)) = parse_target(target) else {
            self.invalid(
                "mirror-target",
                "an http:// or https:// URL whose path may use $request_uri once (no other variable)",
            );
            return None;
        };
        let host = match self.value("mirror-host").map(str::trim) {
            None => None,
            Some(host) => match HeaderValue::from_str(host) {
                Ok(value) if is_origin_host(host) && !host.contains('*') => Some(value),
                _ => {
                    self.warn_default("mirror-host", "the host name of mirror-target");
                    None
                }
            },
        };
        // The target's host name, without its port (Go's `URL.Hostname`).
        let name = authority.host().trim_start_matches('[').trim_end_matches(']');
        let host = host.or_else(|| HeaderValue::from_str(name).ok())?;
        Some(Arc::new(Mirror { scheme, authority, path, host, request_body }))
    }
}

/// A target's scheme, authority and path; `None` when it is not one ostium can send to.
fn parse_target(target: &str) -> Option<(Scheme, Authority, MirrorPath)> {
    let (scheme, rest) = match target.split_once("://")? {
        (scheme, rest) if scheme.eq_ignore_ascii_case("http") => (Scheme::HTTP, rest),
        (scheme, rest) if scheme.eq_ignore_ascii_case("https") => (Scheme::HTTPS, rest),
        _ => return None,
    };
    // The path starts at its `/` or at `$request_uri` (`https://test.env.com$request_uri`).
    let (authority, path) = rest.find(['/', '$']).map_or((rest, ""), |i| rest.split_at(i));
    if authority.contains(['$', '@']) || authority.contains("..") || path.contains('#') {
        return None;
    }
    let authority = Authority::try_from(authority).ok().filter(|a| !a.host().is_empty())?;
    let path = if path.contains('$') {
        let parts: Box<[Box<str>]> = path.split(REQUEST_URI).map(Box::from).collect();
        // One `$request_uri` at most: each copy would repeat the request's URI.
        if parts.len() > 2 || parts.iter().any(|part| part.contains('$')) {
            return None;
        }
        MirrorPath::WithRequestUri(parts)
    } else if path.is_empty() {
        // nginx would send the name of its internal mirror location (`/_mirror-<uid>`): the
        // request's own URI is what such a target means.
        MirrorPath::WithRequestUri([Box::from(""), Box::from("")].into())
    } else if path.contains('?') {
        return None; // a query of its own: how nginx joins the request's is not reproduced
    } else {
        MirrorPath::Fixed(path.into())
    };
    // Every literal part must be valid in a URI path (a request URI always is).
    let literal = match &path {
        MirrorPath::Fixed(path) => path.to_string(),
        MirrorPath::WithRequestUri(parts) => parts.join("/"),
    };
    let literal = if literal.starts_with('/') { literal } else { format!("/{literal}") };
    PathAndQuery::try_from(literal).ok()?;
    Some((scheme, authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_parsed_into_their_parts() {
        let (scheme, authority, path) = parse_target("https://test.env.com$request_uri").unwrap();
        assert_eq!((scheme.as_str(), authority.as_str()), ("https", "test.env.com"));
        assert_eq!(path, MirrorPath::WithRequestUri(["".into(), "".into()].into()));
        let (_, authority, path) = parse_target("http://10.0.0.9:8080/mirror").unwrap();
        assert_eq!(authority.as_str(), "10.0.0.9:8080");
        assert_eq!(path, MirrorPath::Fixed("/mirror".into()));
        for refused in [
            "ftp://host/x",
            "host/x",
            "http://$host$request_uri",
            "http://user@host/",
            "http://a..b/",
            "http://host/$uri",
            "http://host/a?b=c",
            "http:///path",
            "http://host/a b",
        ] {
            assert!(parse_target(refused).is_none(), "{refused}");
        }
    }
}
