//! `mirror-target`, `mirror-host`, `mirror-request-body`: a copy of each request sent to another
//! address, its answer ignored (ingress-nginx's `mirror` directive and the internal location its
//! template writes for it, `internal/ingress/controller/template/template.go`
//! `buildMirrorLocations`).

use http::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme};

/// Where copies of a route's requests go and what they carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// `http` or `https`.
    pub scheme: Scheme,
    /// The host (a name, resolved when connecting, or an address) and port of the target.
    pub authority: Authority,
    pub path: MirrorPath,
    /// The `Host` the copy carries: `mirror-host`, else the target's host name without its port.
    pub host: HeaderValue,
    /// `mirror-request-body` (on by default): whether the copy carries the request's body.
    pub request_body: bool,
}

/// The path and query of a copy, from the target's path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MirrorPath {
    /// A path without variables: it replaces the request's path, and the request's query is
    /// appended (nginx's `proxy_pass` with a URI and no variables).
    Fixed(Box<str>),
    /// A path using `$request_uri`: these literal parts with the request's URI as the client sent
    /// it (path and query) between each two, and nothing else appended (nginx's `proxy_pass`
    /// with variables). A target without a path is `["", ""]`: the request's URI itself.
    WithRequestUri(Box<[Box<str>]>),
}

impl Mirror {
    /// The path and query of the copy of a request whose URI was `request_uri`; `None` when they
    /// do not make a valid URI path.
    pub fn path_and_query(&self, request_uri: &PathAndQuery) -> Option<PathAndQuery> {
        let text = match &self.path {
            MirrorPath::Fixed(path) => match request_uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path.to_string(),
            },
            MirrorPath::WithRequestUri(parts) => parts.join(request_uri.as_str()),
        };
        PathAndQuery::try_from(text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mirror(path: MirrorPath) -> Mirror {
        Mirror {
            scheme: Scheme::HTTP,
            authority: Authority::from_static("mirror.internal"),
            path,
            host: HeaderValue::from_static("mirror.internal"),
            request_body: true,
        }
    }

    #[test]
    fn a_fixed_path_keeps_the_query_and_request_uri_is_used_as_sent() {
        let uri = PathAndQuery::from_static("/api/items?page=2");
        let fixed = mirror(MirrorPath::Fixed("/mirror".into()));
        assert_eq!(fixed.path_and_query(&uri).unwrap(), "/mirror?page=2");
        let plain = PathAndQuery::from_static("/api");
        assert_eq!(fixed.path_and_query(&plain).unwrap(), "/mirror");
        let whole = mirror(MirrorPath::WithRequestUri(["".into(), "".into()].into()));
        assert_eq!(whole.path_and_query(&uri).unwrap(), "/api/items?page=2");
        // `https://test.env.com/$request_uri` (ingress-nginx's e2e test) doubles the slash.
        let slash = mirror(MirrorPath::WithRequestUri(["/".into(), "".into()].into()));
        assert_eq!(slash.path_and_query(&uri).unwrap(), "//api/items?page=2");
    }
}
