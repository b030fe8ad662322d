//! Access by client address and `satisfy`, on loopback: clients bind chosen 127.0.0.x source
//! addresses. Semantics as ingress-nginx renders `allowlist-source-range`,
//! `denylist-source-range` and `satisfy` (nginx `deny`/`allow`/`deny all`, `satisfy any|all`):
//! internal/ingress/annotations/{ipallowlist,ipdenylist,satisfy}/main.go and nginx.tmpl, where a
//! location whose annotations do not parse (LocationDenied) answers `return 503`.

mod support;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use ostium_model::{BasicAuth, Credentials, PasswordHash, Policy, Satisfy, SourceAccess};
use ostium_test_support::EchoBackend;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// `GET /` from `source`, with extra header lines.
async fn get_from(source: &str, proxy: SocketAddr, extra: &str) -> u16 {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(source.parse::<IpAddr>().unwrap(), 0)).unwrap();
    let mut stream = socket.connect(proxy).await.unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: h\r\n{extra}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut bytes)).await;
    parse(&bytes).status
}

fn access(allow: Option<&str>, deny: Option<&str>) -> SourceAccess {
    SourceAccess { allow: allow.map(|a| a.parse().unwrap()), deny: deny.map(|d| d.parse().unwrap()) }
}

fn alice() -> Arc<BasicAuth> {
    use sha1::Digest as _;
    let users =
        HashMap::from([("alice".to_owned(), PasswordHash::Sha1(sha1::Sha1::digest(b"s3cret").into()))]);
    Arc::new(BasicAuth::new(HeaderValue::from_static("Basic realm=\"r\""), Credentials::Users(users)))
}

fn credentials() -> String {
    format!("Authorization: Basic {}\r\n", base64::engine::general_purpose::STANDARD.encode("alice:s3cret"))
}

#[tokio::test]
async fn addresses_outside_the_allowlist_or_in_the_denylist_get_403() {
    let backend = EchoBackend::start("a").await;
    let policy =
        Policy { source_access: Some(access(Some("127.0.0.0/8"), Some("127.0.0.3"))), ..Policy::default() };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, policy).build()).await;
    assert_eq!(get_from("127.0.0.2", proxy.http, "").await, 200);
    assert_eq!(get_from("127.0.0.3", proxy.http, "").await, 403, "the denylist wins");

    let only_one = Policy { source_access: Some(access(Some("127.0.0.2/32"), None)), ..Policy::default() };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, only_one).build()).await;
    assert_eq!(get_from("127.0.0.2", proxy.http, "").await, 200);
    assert_eq!(get_from("127.0.0.4", proxy.http, "").await, 403);
    assert_eq!(
        get_from("127.0.0.4", proxy.http, "X-Forwarded-For: 127.0.0.2\r\n").await,
        403,
        "headers are not trusted"
    );
    assert_eq!(backend.requests(), 2, "only the two allowed requests reached it");
}

#[tokio::test]
async fn with_satisfy_all_an_allowed_address_still_needs_credentials() {
    let backend = EchoBackend::start("a").await;
    let policy = Policy {
        source_access: Some(access(Some("127.0.0.2/32"), None)),
        auth: Some(alice()),
        ..Policy::default()
    };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, policy).build()).await;
    assert_eq!(get_from("127.0.0.2", proxy.http, "").await, 401);
    assert_eq!(get_from("127.0.0.2", proxy.http, &credentials()).await, 200);
    assert_eq!(get_from("127.0.0.5", proxy.http, &credentials()).await, 403, "the address first");
}

#[tokio::test]
async fn with_satisfy_any_an_allowed_address_or_credentials_suffice() {
    let backend = EchoBackend::start("a").await;
    let policy = Policy {
        source_access: Some(access(Some("127.0.0.2/32"), None)),
        auth: Some(alice()),
        satisfy: Satisfy::Any,
        ..Policy::default()
    };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, policy).build()).await;
    assert_eq!(get_from("127.0.0.2", proxy.http, "").await, 200, "the office needs no password");
    assert_eq!(get_from("127.0.0.5", proxy.http, "").await, 401, "elsewhere, a challenge");
    assert_eq!(get_from("127.0.0.5", proxy.http, &credentials()).await, 200);

    let without_auth = Policy {
        source_access: Some(access(Some("127.0.0.2/32"), None)),
        satisfy: Satisfy::Any,
        ..Policy::default()
    };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, without_auth).build()).await;
    assert_eq!(get_from("127.0.0.5", proxy.http, "").await, 403, "nothing else to satisfy");
}

/// nginx.tmpl writes only `deny <range>;` for a denylist: an address it does not name matches no
/// access rule (NGX_DECLINED), which `satisfy any` does not count as a pass, so basic auth still
/// decides; a denylisted address with credentials passes by them.
#[tokio::test]
async fn with_satisfy_any_a_denylist_alone_lets_no_one_skip_credentials() {
    let backend = EchoBackend::start("a").await;
    let policy = Policy {
        source_access: Some(access(None, Some("127.0.0.4/32"))),
        auth: Some(alice()),
        satisfy: Satisfy::Any,
        ..Policy::default()
    };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, policy).build()).await;
    assert_eq!(get_from("127.0.0.5", proxy.http, "").await, 401, "not denied is not allowed");
    assert_eq!(get_from("127.0.0.5", proxy.http, &credentials()).await, 200);
    assert_eq!(get_from("127.0.0.4", proxy.http, "").await, 401, "a challenge is answered before a 403");
    assert_eq!(get_from("127.0.0.4", proxy.http, &credentials()).await, 200);
    assert_eq!(backend.requests(), 2);
}

#[tokio::test]
async fn misconfigured_auth_denies_even_an_allowed_address_under_satisfy_any() {
    let backend = EchoBackend::start("a").await;
    let broken = Arc::new(BasicAuth::new(HeaderValue::from_static("Basic realm=\"r\""), Credentials::Deny));
    let policy = Policy {
        source_access: Some(access(Some("127.0.0.2/32"), None)),
        auth: Some(broken),
        satisfy: Satisfy::Any,
        ..Policy::default()
    };
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, policy).build()).await;
    assert_eq!(get_from("127.0.0.2", proxy.http, "").await, 503);
    assert_eq!(get_from("127.0.0.5", proxy.http, &credentials()).await, 503);
    assert_eq!(backend.requests(), 0);
}
