//! Per-route policy: what a route does to a request besides picking a backend. Built from
//! annotations at translation time (typed, validated), only read by the proxy.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderValue;

use crate::{
    Affinity, BackendRef, BackendTls, Cors, ExternalAuth, LoadBalance, Mirror, NextUpstream, RateLimit,
    ResponseRate, RouteTracing, Satisfy, Shaping, SourceAccess, UpstreamHash,
};

/// ingress-nginx's default `proxy-body-size`: 1 MiB.
pub const DEFAULT_MAX_BODY_SIZE: u64 = 1024 * 1024;

/// ingress-nginx's default `client-body-buffer-size`: 8 KiB.
pub const DEFAULT_CLIENT_BODY_BUFFER_SIZE: u64 = 8 * 1024;

/// The longest connect timeout honoured: nginx documents that `proxy_connect_timeout` cannot
/// usually exceed 75 seconds (the system gives up on a connection attempt about then).
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(75);

/// What a route does besides forwarding. The default forwards, with ingress-nginx's default
/// body limit and HTTPS redirect for TLS hosts; a route with a [`Denial`] answers every request
/// with 503 before any other policy applies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Largest request body accepted (413 beyond); `None` for no limit.
    pub max_body_size: Option<u64>,
    /// `permanent-redirect` / `temporal-redirect`: every request answered with this redirect.
    pub redirect: Option<Redirect>,
    /// `app-root`: a request for exactly `/` is redirected (302) to this path.
    pub app_root: Option<HeaderValue>,
    /// `ssl-redirect` / `force-ssl-redirect`.
    pub https_redirect: HttpsRedirect,
    /// `auth-type: basic`: requests need credentials; `Deny` when misconfigured (fail closed).
    pub auth: Option<std::sync::Arc<BasicAuth>>,
    /// `auth-url` and its family: a subrequest to an auth service decides (after basic auth, as
    /// nginx's access phase runs them).
    pub external_auth: Option<std::sync::Arc<ExternalAuth>>,
    /// `rewrite-target`: the path sent upstream instead of the request's.
    pub rewrite: Option<Rewrite>,
    /// Every request is refused with 503, before any other policy: the route's Ingress asks for
    /// an access restriction ostium cannot apply (fail closed). `None` by default.
    pub denied: Option<Denial>,
    /// Protocols a client may switch to with `Upgrade` (tunnelled to the backend after its
    /// `101`); other `Upgrade` tokens are removed. WebSocket only by default.
    pub upgrades: Vec<UpgradeProtocol>,
    /// `allowlist-source-range` / `denylist-source-range`: 403 for the addresses they exclude.
    pub source_access: Option<SourceAccess>,
    /// `satisfy`: whether an allowed address also needs credentials.
    pub satisfy: Satisfy,
    /// `proxy-connect-timeout`, `proxy-send-timeout` and `proxy-read-timeout`; `None` for the
    /// proxy's defaults.
    pub upstream_timeouts: UpstreamTimeouts,
    /// `proxy-next-upstream` and its `-tries` and `-timeout`: when a failed try goes to another
    /// endpoint.
    pub next_upstream: NextUpstream,
    /// `proxy-request-buffering` (on by default, as ingress-nginx): the whole request body is
    /// read before an endpoint is chosen, so the endpoint gets it at once with its length, and a
    /// retry can send it again. Off: the body is streamed as it arrives.
    pub request_buffering: bool,
    /// `client-body-buffer-size`: how much of a buffered request body is kept in memory; the rest
    /// goes to a temporary file (its size is capped by `max_body_size`).
    pub client_body_buffer_size: u64,
    /// `enable-cors` and its settings.
    pub cors: Option<Cors>,
    /// `proxy-ssl-*`: TLS toward the endpoints of an HTTPS or GRPCS backend; `None` for the
    /// proxy's (encrypted, the endpoint's certificate not verified, no SNI).
    pub backend_tls: Option<std::sync::Arc<BackendTls>>,
    /// `upstream-vhost`: the `Host` sent upstream instead of the one routed on.
    pub upstream_host: Option<HeaderValue>,
    /// `enable-access-log`: whether the route's requests get an access log line.
    pub access_log: bool,
    /// `default-backend`: where requests go while the route's Service has no endpoints, and
    /// where [`Policy::error_pages`] are fetched from (instead of `--default-backend-service`).
    pub default_backend: Option<BackendRef>,
    /// `custom-http-errors`: answers with these codes are replaced by the default backend's.
    pub error_pages: Option<ErrorPages>,
    /// `limit-rps`, `limit-rpm`, `limit-connections`: requests over them are refused (503).
    pub rate_limit: Option<RateLimit>,
    /// `limit-rate`, `limit-rate-after`: how fast responses are sent.
    pub response_rate: Option<ResponseRate>,
    /// The request line and headers sent upstream, the endpoint's headers sent back, and the
    /// style of the proxy's own redirects.
    pub shaping: Shaping,
    /// `load-balance`: how an endpoint is chosen.
    pub load_balance: LoadBalance,
    /// `mirror-target` and its family: where a copy of each request goes.
    pub mirror: Option<std::sync::Arc<Mirror>>,
    /// `affinity: cookie`: a session cookie ties a client to an endpoint.
    pub affinity: Option<std::sync::Arc<Affinity>>,
    /// `upstream-hash-by`: a key of the request picks the endpoint (unless `affinity` is set).
    pub upstream_hash: Option<std::sync::Arc<UpstreamHash>>,
    /// `enable-opentelemetry` (or the ConfigMap's): a span per request, and `traceparent` sent
    /// upstream; `None`: not traced, and nothing of tracing is done.
    pub tracing: Option<RouteTracing>,
    /// The canary Ingress of the route's host and path: some requests go to its backend.
    pub canary: Option<std::sync::Arc<crate::Canary>>,
}

/// `custom-http-errors` and `disable-proxy-intercept-errors`: which answers are replaced by the
/// default backend's answer to a request for `/` carrying the error's details (`X-Code` …).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorPages {
    /// Status codes, sorted.
    pub codes: Box<[u16]>,
    /// Whether the endpoint's own answers are replaced too, or only the proxy's (502, 503, 504,
    /// 403 …): `disable-proxy-intercept-errors: "true"` turns this off.
    pub intercept_upstream: bool,
}

impl ErrorPages {
    pub fn covers(&self, status: u16) -> bool {
        self.codes.binary_search(&status).is_ok()
    }
}

/// nginx's clocks toward the endpoint, for one route.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Longest wait for a connection to the endpoint, at most [`MAX_CONNECT_TIMEOUT`].
    pub connect: Option<Duration>,
    /// Longest pause between two writes of the request to the endpoint.
    pub send: Option<Duration>,
    /// Longest pause between two reads from the endpoint, from the end of the request on.
    pub read: Option<Duration>,
}

/// A protocol a request may ask to switch to with `Upgrade`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpgradeProtocol {
    /// `websocket` (RFC 6455).
    WebSocket,
}

impl UpgradeProtocol {
    /// The protocol an `Upgrade` token names, compared case-insensitively.
    pub fn from_token(token: &str) -> Option<Self> {
        token.eq_ignore_ascii_case("websocket").then_some(Self::WebSocket)
    }
}

/// Why a route refuses every request (503). ingress-nginx denies a location whose annotation
/// cannot be applied; serving it instead would be less strict than the Ingress asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Denial {
    /// An annotation that restricts access (source ranges, external or client-certificate
    /// auth, rate limits, WAF …) and that ostium does not implement yet.
    UnimplementedAnnotation {
        /// The full key, prefix included.
        annotation: Box<str>,
    },
    /// A configuration snippet: never interpreted, and it may hold `deny all;`.
    RefusedSnippet {
        /// The full key, prefix included.
        annotation: Box<str>,
    },
    /// An access restriction whose value is invalid (ingress-nginx denies the location).
    InvalidAnnotation {
        /// The full key, prefix included.
        annotation: Box<str>,
    },
    /// A ConfigMap key that restricts access has a value ostium cannot apply (`global-auth-url`,
    /// `whitelist-source-range` …), or a ConfigMap snippet or WAF switch denies every route.
    InvalidSetting {
        /// The ConfigMap key.
        key: Box<str>,
    },
    /// An annotation graded above the ConfigMap's `annotations-risk-level` (ingress-nginx
    /// refuses the Ingress).
    TooRisky {
        /// The full key, prefix included.
        annotation: Box<str>,
    },
}

/// `rewrite-target`, as nginx's `rewrite "(?i)<path>" <target> break;`: the whole path is
/// replaced by the target, with `$1`… taken from the route's pattern; the query is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rewrite {
    /// Matched against the normalised request path for the captures.
    pub pattern: crate::PathRegex,
    /// The target, its references written `${1}` so that `$1abc` means group 1, then `abc`.
    pub target: Box<str>,
    /// `x-forwarded-prefix`: sent upstream with rewritten requests, its references (`${1}`)
    /// filled like the target's.
    pub forwarded_prefix: Option<Box<str>>,
}

/// A fixed redirect: status and `Location`, used verbatim (no path or query appended).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    pub status: u16,
    pub location: HeaderValue,
}

/// When plain HTTP requests are redirected to HTTPS (308, path and query kept).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpsRedirect {
    Never,
    /// ingress-nginx's default (`ssl-redirect: "true"`): when the host is a TLS host, with a
    /// certificate of its own or served with the default one ([`crate::TlsTable::has_certificate`]).
    WhenHostHasCertificate,
    /// `force-ssl-redirect: "true"`: always.
    Always,
}

/// Basic authentication for a route.
pub struct BasicAuth {
    /// `WWW-Authenticate` of the 401 challenge, `Basic realm="<auth-realm>"`.
    pub challenge: HeaderValue,
    pub credentials: Credentials,
    cache: VerifiedCache,
}

/// Who may pass.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Users and their password hashes.
    Users(HashMap<String, PasswordHash>),
    /// The configuration cannot be used (missing Secret or key, nothing parsable): every
    /// request is refused with 503, never let through.
    Deny,
}

/// A password hash from an htpasswd line, by scheme.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$2a$`, `$2b$`, `$2y$`: the whole hash string.
    Bcrypt(Box<str>),
    /// `$apr1$salt$hash` (Apache MD5).
    Apr1 { salt: Box<str>, hash: Box<str> },
    /// `{SHA}` + base64 of SHA-1: the decoded digest.
    Sha1([u8; 20]),
    /// `$5$` (SHA-256 crypt) or `$6$` (SHA-512 crypt): the whole hash string.
    ShaCrypt(Box<str>),
}

/// Slots in the cache of verified credentials.
const CACHE_SLOTS: usize = 1024;

/// A bounded, lock-free cache of credentials that verified, so a slow hash (bcrypt) is paid once
/// per user rather than per request. It holds keyed 64-bit hashes of `user:password` (a random
/// key per cache), never the password; a new `BasicAuth` (any change of its Secret) starts
/// empty. Direct-mapped: a colliding entry just evicts the older one.
struct VerifiedCache {
    key: RandomState,
    slots: Box<[AtomicU64]>,
}

// === impl Policy ===

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_body_size: Some(DEFAULT_MAX_BODY_SIZE),
            redirect: None,
            app_root: None,
            https_redirect: HttpsRedirect::WhenHostHasCertificate,
            auth: None,
            external_auth: None,
            rewrite: None,
            denied: None,
            upgrades: vec![UpgradeProtocol::WebSocket],
            source_access: None,
            satisfy: Satisfy::All,
            upstream_timeouts: UpstreamTimeouts::default(),
            next_upstream: NextUpstream::default(),
            request_buffering: true,
            client_body_buffer_size: DEFAULT_CLIENT_BODY_BUFFER_SIZE,
            cors: None,
            backend_tls: None,
            upstream_host: None,
            access_log: true,
            default_backend: None,
            error_pages: None,
            rate_limit: None,
            response_rate: None,
            shaping: Shaping::default(),
            load_balance: LoadBalance::default(),
            mirror: None,
            affinity: None,
            upstream_hash: None,
            tracing: None,
            canary: None,
        }
    }
}

// === impl Denial ===

impl Denial {
    /// The annotation that causes the denial (prefix included), or the ConfigMap key.
    pub fn annotation(&self) -> &str {
        match self {
            Self::UnimplementedAnnotation { annotation }
            | Self::RefusedSnippet { annotation }
            | Self::InvalidAnnotation { annotation }
            | Self::InvalidSetting { key: annotation }
            | Self::TooRisky { annotation } => annotation,
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnimplementedAnnotation { annotation } => {
                write!(f, "annotation {annotation} is not implemented")
            }
            Self::RefusedSnippet { annotation } => {
                write!(f, "annotation {annotation} is a configuration snippet, never interpreted")
            }
            Self::InvalidAnnotation { annotation } => {
                write!(f, "annotation {annotation} has an invalid value")
            }
            Self::InvalidSetting { key } => {
                write!(f, "the ConfigMap's {key} has a value that cannot be applied")
            }
            Self::TooRisky { annotation } => {
                write!(f, "annotation {annotation} is graded above the ConfigMap's annotations-risk-level")
            }
        }
    }
}

// === impl BasicAuth ===

impl BasicAuth {
    pub fn new(challenge: HeaderValue, credentials: Credentials) -> Self {
        let slots = (0..CACHE_SLOTS).map(|_| AtomicU64::new(0)).collect();
        Self { challenge, credentials, cache: VerifiedCache { key: RandomState::new(), slots } }
    }

    /// Whether these credentials verified before.
    pub fn is_cached(&self, user: &str, password: &[u8]) -> bool {
        let (slot, tag) = self.cache.locate(user, password);
        self.cache.slots[slot].load(Ordering::Relaxed) == tag
    }

    /// Remembers credentials that verified.
    pub fn remember(&self, user: &str, password: &[u8]) {
        let (slot, tag) = self.cache.locate(user, password);
        self.cache.slots[slot].store(tag, Ordering::Relaxed);
    }
}

impl VerifiedCache {
    fn locate(&self, user: &str, password: &[u8]) -> (usize, u64) {
        let tag = self.key.hash_one((user, password)) | 1; // never 0, the empty slot
        ((tag >> 32) as usize % self.slots.len(), tag)
    }
}

/// Two `BasicAuth`s are equal when they challenge and admit alike; the cache does not count.
impl PartialEq for BasicAuth {
    fn eq(&self, other: &Self) -> bool {
        self.challenge == other.challenge && self.credentials == other.credentials
    }
}

impl Eq for BasicAuth {}

// Never print hashes.
impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("challenge", &self.challenge)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Users(users) => {
                let mut names: Vec<_> = users.keys().collect();
                names.sort();
                f.debug_tuple("Users").field(&names).finish()
            }
            Self::Deny => f.write_str("Deny"),
        }
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bcrypt(_) => "Bcrypt(..)",
            Self::Apr1 { .. } => "Apr1(..)",
            Self::Sha1(_) => "Sha1(..)",
            Self::ShaCrypt(_) => "ShaCrypt(..)",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_remembers_exact_credentials_only() {
        let auth = BasicAuth::new(HeaderValue::from_static("Basic realm=\"\""), Credentials::Deny);
        assert!(!auth.is_cached("alice", b"secret"));
        auth.remember("alice", b"secret");
        assert!(auth.is_cached("alice", b"secret"));
        assert!(!auth.is_cached("alice", b"Secret"));
        assert!(!auth.is_cached("alic", b"esecret"));
    }

    #[test]
    fn debug_never_shows_hashes() {
        let users =
            HashMap::from([("alice".to_owned(), PasswordHash::Bcrypt("$2y$10$abcdefghijklmnop".into()))]);
        let auth = BasicAuth::new(HeaderValue::from_static("Basic realm=\"x\""), Credentials::Users(users));
        let shown = format!("{auth:?}");
        assert!(shown.contains("alice") && !shown.contains("$2y$"), "{shown}");
    }
}
