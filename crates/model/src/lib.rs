//! The routing table of ostium.
//!
//! A [`Table`] is built once per configuration change (by `ostium-translate`), never mutated
//! afterwards, and shared by the proxy through a [`TableStore`]. Lookups are synchronous and do
//! not allocate. The only part that moves on its own is each backend's [`EndpointSet`], which
//! the controller swaps in place when pods come and go, without rebuilding the table.
//!
//! This crate knows nothing of Kubernetes, hyper or tokio: it is data plus lookup.

mod access;
mod access_log;
mod affinity;
mod backend;
mod backend_tls;
mod balance;
mod canary;
mod client_address;
mod client_auth;
mod client_limits;
mod compression;
mod cors;
mod external_auth;
mod global;
mod headers;
mod host;
mod host_map;
mod mirror;
mod name;
mod path;
mod policy;
mod rate_limit;
mod redirect;
mod retry;
mod shaping;
mod store;
mod stream;
mod table;
mod telemetry;
mod tls;
mod upstream_hash;

pub use access::{AddressVerdict, CidrSet, InvalidNetwork, Satisfy, SourceAccess};
pub use access_log::{
    AccessLogSettings, InvalidLogFormat, LogEscape, LogFormat, LogPart, LogVariable, civil_from_days,
};
pub use affinity::{
    Affinity, AffinityMode, DEFAULT_SESSION_COOKIE, SameSite, SessionCookie, same_site_none_compatible,
};
pub use backend::{
    Backend, BackendRef, Endpoint, EndpointKey, EndpointSet, Endpoints, PortRef, Protocol, Target,
};
pub use backend_tls::{
    BackendTls, BackendTlsError, BackendTlsSettings, DEFAULT_BACKEND_TLS_NAME, Verification,
    accept_any_server_certificate,
};
pub use balance::{DECAY_TIME_US, LoadBalance, decay_ewma};
pub use canary::{Canary, CanaryAffinity, CanaryHeader, CanarySessions, DEFAULT_WEIGHT_TOTAL, HeaderRule};
pub use client_address::{Blocked, ClientAddressing, ForwardedHeaders, ProxyProtocol, every_ipv4_address};
pub use client_auth::{ClientAuth, ClientTrust, ClientVerify, VerifyClient};
pub use client_limits::ClientLimits;
pub use compression::{
    Compression, DEFAULT_BROTLI_TYPES, DEFAULT_GZIP_TYPES, Encoding, MediaTypes, UserAgents,
};
pub use cors::{Cors, CorsOrigins};
pub use external_auth::{
    AUTH_CACHE_ENTRIES, AuthCache, CachedAnswer, ExternalAuth, Template, TemplatePart, Variable,
};
pub use global::{ACME_CHALLENGE, GlobalSettings, HttpsSettings};
pub use headers::{BlockPattern, HeaderBlock, HeaderSettings, SetValue};
pub use host::{HostMatch, HostRule, InvalidHost, NormalizedHost, normalize_host};
pub use mirror::{Mirror, MirrorPath};
pub use name::{InvalidName, NamePart, NamespacedName};
pub use path::{InvalidPath, PathMatch, PathMatchKind, PathRegex, PathRule, forwarded_path, normalize_path};
pub use policy::{
    BasicAuth, Credentials, DEFAULT_CLIENT_BODY_BUFFER_SIZE, DEFAULT_MAX_BODY_SIZE, Denial, ErrorPages,
    HttpsRedirect, MAX_CONNECT_TIMEOUT, PasswordHash, Policy, Redirect, Rewrite, UpgradeProtocol,
    UpstreamTimeouts,
};
pub use rate_limit::{
    ConnectionSlot, LimitStatuses, Limited, RateLimit, RateLimitZone, RateLimitZones, RequestRate,
    ResponseRate,
};
pub use redirect::{HostRedirect, Location, RedirectContext, Redirection, redirection};
pub use retry::{NextUpstream, RetryCondition, RetryConditions};
pub use shaping::{Shaping, TextRewrite};
pub use store::{TableReader, TableStore};
pub use stream::{StreamService, StreamSettings, Transport};
pub use table::{Replaced, Route, RouteAction, RouteConflict, RouteMatch, Table, TableBuilder, VirtualHost};
pub use telemetry::{RouteTracing, Sampler, TraceExport};
pub use tls::{Certificate, ServerTls, TlsTable, TlsVersions, describe_tls_error};
pub use upstream_hash::{DEFAULT_SUBSET_SIZE, HashRing, POINTS_PER_NODE, StableHasher, UpstreamHash};

/// Hash maps of the table and of translation: a fast hasher, randomly seeded per process (keys
/// come from the configuration, lookups from requests).
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
