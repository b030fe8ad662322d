//! Route policy on loopback: basic authentication (failing closed), redirects, HTTPS redirect
//! and HSTS, as ingress-nginx behaves (codes and headers per its annotation docs and Lua:
//! rootfs/etc/nginx/lua/lua_ingress.lua, internal/ingress/annotations/{auth,redirect}).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::HeaderValue;
use ostium_model::{
    BasicAuth, Credentials, GlobalSettings, HttpsRedirect, HttpsSettings, PasswordHash, PathRule, Policy,
    Redirect,
};
use ostium_proxy::ProxyConfig;
use ostium_test_support::{EchoBackend, echoed, echoed_header};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn policy(change: impl FnOnce(&mut Policy)) -> Policy {
    let mut policy = Policy::default();
    change(&mut policy);
    policy
}

fn basic_auth(users: &[(&str, PasswordHash)]) -> Arc<BasicAuth> {
    let users: HashMap<String, PasswordHash> =
        users.iter().map(|(u, h)| (u.to_string(), h.clone())).collect();
    Arc::new(BasicAuth::new(HeaderValue::from_static("Basic realm=\"team\""), Credentials::Users(users)))
}

fn authorization(user: &str, password: &str) -> String {
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

async fn get_with(addr: std::net::SocketAddr, host: &str, path: &str, extra: &str) -> Answer {
    raw(addr, format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n").as_bytes())
        .await
}

/// ingress-nginx's nginx.tmpl writes `proxy_set_header Authorization "";` in every basic-auth
/// location: the credentials are for the proxy and never reach the backend.
#[tokio::test]
async fn basic_auth_challenges_checks_and_removes_the_credentials_before_forwarding() {
    let backend = EchoBackend::start("a").await;
    let bcrypt = bcrypt::hash("s3cret", 4).unwrap();
    let auth = basic_auth(&[
        ("alice", PasswordHash::Bcrypt(bcrypt.into())),
        ("bob", PasswordHash::Apr1 { salt: "OS747Rix".into(), hash: "RkHZvvgkwtXvJEPl1Ymc60".into() }),
    ]);
    let table = TableBuilder::new().site(None, "a", backend.addr, policy(|p| p.auth = Some(auth))).build();
    let proxy = Harness::start(table).await;

    let answer = get_with(proxy.http, "h", "/", "").await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("www-authenticate"), Some("Basic realm=\"team\""));
    for wrong in [
        authorization("alice", "wrong"),
        authorization("nobody", "s3cret"),
        "Authorization: Bearer x\r\n".into(),
    ] {
        assert_eq!(get_with(proxy.http, "h", "/", &wrong).await.status, 401, "{wrong}");
    }
    assert_eq!(backend.requests(), 0, "nothing unauthenticated reached the backend");

    for _ in 0..2 {
        // the second time from the cache of verified credentials
        let answer = get_with(proxy.http, "h", "/", &authorization("alice", "s3cret")).await;
        assert_eq!(answer.status, 200);
        assert!(
            echoed_header(&answer.body, "authorization").is_empty(),
            "the credentials were for the proxy"
        );
    }
    assert_eq!(get_with(proxy.http, "h", "/", &authorization("bob", "secret")).await.status, 200);
}

#[tokio::test]
async fn misconfigured_auth_denies_with_503() {
    let backend = EchoBackend::start("a").await;
    let deny = Arc::new(BasicAuth::new(HeaderValue::from_static("Basic realm=\"\""), Credentials::Deny));
    let table = TableBuilder::new().site(None, "a", backend.addr, policy(|p| p.auth = Some(deny))).build();
    let proxy = Harness::start(table).await;
    assert_eq!(get_with(proxy.http, "h", "/", "").await.status, 503);
    assert_eq!(get_with(proxy.http, "h", "/", &authorization("alice", "anything")).await.status, 503);
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn fixed_redirects_and_app_root() {
    let backend = EchoBackend::start("a").await;
    let moved = Redirect { status: 308, location: HeaderValue::from_static("https://www.example.com/new") };
    let table = TableBuilder::new()
        .site(Some("old.example.com"), "a", backend.addr, policy(|p| p.redirect = Some(moved)))
        .site(
            Some("app.example.com"),
            "b",
            backend.addr,
            policy(|p| p.app_root = Some(HeaderValue::from_static("/app1"))),
        )
        .build();
    let proxy = Harness::start(table).await;

    let answer = get(proxy.http, "old.example.com", "/any/path?q=1").await;
    assert_eq!(answer.status, 308);
    assert_eq!(answer.header("location"), Some("https://www.example.com/new"), "used verbatim");
    let answer = get(proxy.http, "app.example.com:8080", "/").await;
    assert_eq!(answer.status, 302);
    assert_eq!(answer.header("location"), Some("http://app.example.com:8080/app1"));
    assert_eq!(get(proxy.http, "app.example.com", "/other").await.status, 200, "only / is redirected");
}

#[tokio::test]
async fn https_redirect_for_hosts_with_a_certificate_and_hsts_over_tls() {
    let backend = EchoBackend::start("a").await;
    let route = |b: TableBuilder, host: &'static str, https: HttpsRedirect| {
        b.site(Some(host), host, backend.addr, policy(|p| p.https_redirect = https))
    };
    let mut builder = TableBuilder::new();
    builder = route(builder, "secure.example.com", HttpsRedirect::WhenHostHasCertificate);
    builder = route(builder, "plain.example.com", HttpsRedirect::WhenHostHasCertificate);
    builder = route(builder, "forced.example.com", HttpsRedirect::Always);
    builder = route(builder, "optout.example.com", HttpsRedirect::Never);
    let table = builder
        .tls("secure.example.com", certificate(&["secure.example.com"]))
        .tls("optout.example.com", certificate(&["optout.example.com"]))
        .build();
    let proxy = Harness::start(table).await;

    let answer = get(proxy.http, "secure.example.com:8080", "/a/b/?x=1").await;
    assert_eq!(answer.status, 308);
    assert_eq!(answer.header("location"), Some("https://secure.example.com/a/b/?x=1"));
    let answer = get(proxy.http, "secure.example.com", "/dir/").await;
    assert_eq!(answer.header("location"), Some("https://secure.example.com/dir"), "a final / is dropped");
    assert_eq!(get(proxy.http, "secure.example.com", "/.well-known/acme-challenge/t").await.status, 200);
    assert_eq!(get(proxy.http, "plain.example.com", "/").await.status, 200, "no certificate, no redirect");
    assert_eq!(get(proxy.http, "forced.example.com", "/").await.status, 308);
    assert_eq!(get(proxy.http, "optout.example.com", "/").await.status, 200);

    let stream = TcpStream::connect(proxy.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("secure.example.com").unwrap();
    let mut tls = tls_client(&[b"http/1.1"]).connect(name, stream).await.unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: secure.example.com\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut bytes = Vec::new();
    let _ = tls.read_to_end(&mut bytes).await;
    let answer = parse(&bytes);
    assert_eq!(answer.status, 200, "no redirect over TLS");
    assert_eq!(answer.header("strict-transport-security"), Some("max-age=31536000; includeSubDomains"));
    assert_eq!(echoed(&answer.body, "backend"), Some("a"));
}

/// The ConfigMap's `http-redirect-code`, `no-tls-redirect-locations` and `hsts*` keys
/// (ingress-nginx's lua_ingress.lua `redirect_to_https` and `header`).
#[tokio::test]
async fn configmap_redirect_code_exempt_locations_and_hsts() {
    let backend = EchoBackend::start("a").await;
    let settings = |https: HttpsSettings| GlobalSettings { https, ..GlobalSettings::default() };
    let site = |hsts: Option<&'static str>| {
        let https = HttpsSettings {
            redirect_code: 301,
            no_redirect_locations: Box::new(["/open".into()]),
            hsts: hsts.map(HeaderValue::from_static),
        };
        TableBuilder::new()
            .site(Some("secure.example.com"), "a", backend.addr, Policy::default())
            .tls("secure.example.com", certificate(&["secure.example.com"]))
            .global(settings(https))
            .build()
    };
    let proxy = Harness::start(site(Some("max-age=60; preload"))).await;
    let answer = get(proxy.http, "secure.example.com", "/a").await;
    assert_eq!(answer.status, 301);
    assert_eq!(answer.header("location"), Some("https://secure.example.com/a"));
    assert_eq!(get(proxy.http, "secure.example.com", "/open/x").await.status, 200, "exempt");
    let answer = get(proxy.http, "secure.example.com", "/.well-known/acme-challenge/t").await;
    assert_eq!(answer.status, 301, "the default exemption is replaced");

    let over_tls = |proxy: &Harness| {
        let addr = proxy.https;
        async move {
            let stream = TcpStream::connect(addr).await.unwrap();
            let name = rustls::pki_types::ServerName::try_from("secure.example.com").unwrap();
            let mut tls = tls_client(&[b"http/1.1"]).connect(name, stream).await.unwrap();
            tls.write_all(b"GET / HTTP/1.1\r\nHost: secure.example.com\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut bytes = Vec::new();
            let _ = tls.read_to_end(&mut bytes).await;
            parse(&bytes)
        }
    };
    let answer = over_tls(&proxy).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("strict-transport-security"), Some("max-age=60; preload"));

    proxy.store.publish(Arc::new(site(None)));
    let answer = over_tls(&proxy).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("strict-transport-security"), None, "hsts: false");
}

#[tokio::test]
async fn rewrite_target_with_captures_and_forwarded_prefix() {
    let backend = EchoBackend::start("a").await;
    let rule = PathRule::regex("/something(/|$)(.*)").unwrap();
    let PathRule::Regex(pattern) = rule.clone() else { unreachable!() };
    let rewrite = ostium_model::Rewrite {
        pattern,
        target: "/${2}".into(),
        forwarded_prefix: Some("/something".into()),
    };
    let table = TableBuilder::new()
        .route_with(None, rule, "a", endpoints("a", &[backend.addr]), policy(|p| p.rewrite = Some(rewrite)))
        .build();
    let proxy = Harness::start(table).await;
    for (request, upstream) in
        [("/something/new/x?y=1", "/new/x?y=1"), ("/something", "/"), ("/SOMETHING/a%20b", "/a%20b")]
    {
        let answer = get_with(proxy.http, "h", request, "X-Forwarded-Prefix: /evil\r\n").await;
        assert_eq!(answer.status, 200, "{request}");
        assert_eq!(echoed(&answer.body, "target"), Some(upstream), "{request}");
        assert_eq!(echoed_header(&answer.body, "x-forwarded-prefix"), ["/something"], "{request}");
    }
    assert_eq!(get(proxy.http, "h", "/somethingelse").await.status, 404, "(/|$) needs a separator");
}

#[tokio::test]
async fn from_to_www_redirect_keeps_the_path_and_drops_a_final_slash() {
    let table = TableBuilder::new().redirect_host("shop.example.com", "www.shop.example.com").build();
    let proxy = Harness::start(table).await;
    let answer = get(proxy.http, "shop.example.com", "/cart/?id=3").await;
    assert_eq!(answer.status, 308);
    assert_eq!(answer.header("location"), Some("http://www.shop.example.com/cart/?id=3"));
    let answer = get(proxy.http, "shop.example.com", "/cart/").await;
    assert_eq!(answer.header("location"), Some("http://www.shop.example.com/cart"));
}

/// internal/ingress/annotations/proxy/main.go reads `proxy-read-timeout` in seconds; nginx.tmpl
/// writes `proxy_read_timeout {{ $location.Proxy.ReadTimeout }}s`.
#[tokio::test]
async fn a_route_read_timeout_overrides_the_default_both_ways() {
    let backend = EchoBackend::start("a").await;
    let longer = policy(|p| p.upstream_timeouts.read = Some(Duration::from_secs(10)));
    let shorter = policy(|p| p.upstream_timeouts.read = Some(Duration::from_millis(200)));
    let table = TableBuilder::new()
        .site(Some("default.example"), "a", backend.addr, Policy::default())
        .site(Some("longer.example"), "a", backend.addr, longer)
        .site(Some("shorter.example"), "a", backend.addr, shorter)
        .build();
    let config =
        ProxyConfig { access_log: false, read_timeout: Duration::from_millis(500), ..ProxyConfig::default() };
    let proxy = Harness::start_with(table, config).await;
    assert_eq!(get(proxy.http, "default.example", "/delay/1000").await.status, 504);
    assert_eq!(get(proxy.http, "longer.example", "/delay/1000").await.status, 200);
    assert_eq!(get(proxy.http, "shorter.example", "/delay/350").await.status, 504);
    assert_eq!(get(proxy.http, "default.example", "/delay/350").await.status, 200);
}

fn cors(origins: ostium_model::CorsOrigins) -> ostium_model::Cors {
    ostium_model::Cors {
        origins,
        allow_methods: HeaderValue::from_static("GET, PUT, POST, DELETE, PATCH, OPTIONS"),
        allow_headers: HeaderValue::from_static("DNT,Keep-Alive,User-Agent,Content-Type,Authorization"),
        expose_headers: Some(HeaderValue::from_static("X-Total")),
        allow_credentials: true,
        max_age: HeaderValue::from_static("1728000"),
    }
}

/// ingress-nginx's nginx.tmpl CORS block: `if ($request_method = 'OPTIONS') { set $cors
/// ${cors}options; }`, `more_set_headers 'Access-Control-…'` for `$cors = "true"`, and
/// `return 204` with `Content-Type: text/plain charset=UTF-8` for `"trueoptions"`.
#[tokio::test]
async fn cors_preflights_are_answered_before_auth_and_allowed_origins_get_the_headers() {
    let backend = EchoBackend::start("a").await;
    let origins = ostium_model::CorsOrigins::list(&["https://app.example.com"]);
    let auth = basic_auth(&[("alice", PasswordHash::Bcrypt(bcrypt::hash("s3cret", 4).unwrap().into()))]);
    let policy = policy(|p| {
        p.cors = Some(cors(origins));
        p.auth = Some(auth);
    });
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, policy).build()).await;

    let preflight = "OPTIONS /api HTTP/1.1\r\nHost: h\r\nOrigin: https://app.example.com\r\nAccess-Control-Request-Method: PUT\r\nConnection: close\r\n\r\n";
    let answer = raw(proxy.http, preflight.as_bytes()).await;
    assert_eq!(answer.status, 204, "{}", answer.head);
    assert_eq!(answer.header("access-control-allow-origin"), Some("https://app.example.com"));
    assert_eq!(answer.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(answer.header("access-control-allow-methods"), Some("GET, PUT, POST, DELETE, PATCH, OPTIONS"));
    assert_eq!(answer.header("access-control-expose-headers"), Some("X-Total"));
    assert_eq!(answer.header("access-control-max-age"), Some("1728000"));
    assert_eq!(answer.header("content-type"), Some("text/plain charset=UTF-8"));
    assert_eq!(backend.requests(), 0, "a preflight never reaches the backend");

    // An ordinary request still needs credentials; its answer (the 401 too) carries the headers.
    let get = "GET /api HTTP/1.1\r\nHost: h\r\nOrigin: https://app.example.com\r\nConnection: close\r\n\r\n";
    let answer = raw(proxy.http, get.as_bytes()).await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("access-control-allow-origin"), Some("https://app.example.com"));
    let with_credentials = format!(
        "GET /api HTTP/1.1\r\nHost: h\r\nOrigin: https://app.example.com\r\n{}Connection: close\r\n\r\n",
        authorization("alice", "s3cret")
    );
    let answer = raw(proxy.http, with_credentials.as_bytes()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("access-control-allow-origin"), Some("https://app.example.com"));

    // Another origin gets nothing, and its OPTIONS is the application's business.
    let other =
        "OPTIONS /api HTTP/1.1\r\nHost: h\r\nOrigin: https://evil.example\r\nConnection: close\r\n\r\n";
    let answer = raw(proxy.http, other.as_bytes()).await;
    assert_eq!(answer.status, 401, "not a preflight of ours: authentication applies");
    assert_eq!(answer.header("access-control-allow-origin"), None);
}

#[tokio::test]
async fn cors_for_any_origin_answers_with_a_star() {
    let backend = EchoBackend::start("a").await;
    let policy = policy(|p| p.cors = Some(cors(ostium_model::CorsOrigins::Any)));
    let proxy = Harness::start(TableBuilder::new().site(None, "a", backend.addr, policy).build()).await;
    let answer = get(proxy.http, "h", "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("access-control-allow-origin"), Some("*"));
    let preflight = raw(proxy.http, b"OPTIONS / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").await;
    assert_eq!(preflight.status, 204);
    assert_eq!(backend.requests(), 1);
}

/// nginx.tmpl: `proxy_set_header Host {{ $location.UpstreamVhost | quote }}`; X-Forwarded-Host
/// stays `$best_http_host`.
#[tokio::test]
async fn upstream_vhost_replaces_the_host_sent_upstream_only() {
    let backend = EchoBackend::start("a").await;
    let vhost = policy(|p| p.upstream_host = Some(HeaderValue::from_static("internal.svc:8080")));
    let proxy =
        Harness::start(TableBuilder::new().site(Some("app.example.com"), "a", backend.addr, vhost).build())
            .await;
    let answer = get(proxy.http, "app.example.com", "/").await;
    assert_eq!(echoed_header(&answer.body, "host"), ["internal.svc:8080"]);
    assert_eq!(echoed_header(&answer.body, "x-forwarded-host"), ["app.example.com"]);
}
