//! Request and response shaping on loopback, as ingress-nginx configures nginx: the `Connection`
//! value and HTTP version sent upstream (internal/ingress/annotations/connection/main.go,
//! nginx.tmpl `proxy_set_header Connection` and `proxy_http_version`), `proxy_redirect` on
//! `Location` and `Refresh`, `proxy_cookie_domain`/`proxy_cookie_path` on `Set-Cookie`
//! (internal/ingress/annotations/proxy/main.go), and the style of redirects:
//! `preserve_trailing_slash` and `use_port_in_redirects` in rootfs/etc/nginx/lua/lua_ingress.lua,
//! `port_in_redirect` and `absolute_redirect` for a `return 301 /path`
//! (test/e2e/annotations/relativeredirects.go); and `X-Forwarded-Prefix` with the captures of
//! the rewrite (internal/ingress/annotations/xforwardedprefix/main.go).

mod support;

use std::net::SocketAddr;

use http::{HeaderValue, Version};
use ostium_model::{HttpsRedirect, PathRule, Policy, Redirect, Rewrite, Shaping, TextRewrite};
use ostium_test_support::{EchoBackend, echoed, echoed_header};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

fn shaped(shaping: Shaping) -> Policy {
    Policy { shaping, ..Policy::default() }
}

fn text_rewrite(from: &str, to: &str) -> Option<TextRewrite> {
    Some(TextRewrite { from: from.into(), to: to.into() })
}

/// A backend that reads each request head (not its body), reports it, answers `response` and
/// closes the connection.
struct RawBackend {
    addr: SocketAddr,
    heads: mpsc::UnboundedReceiver<String>,
    task: JoinHandle<()>,
}

impl RawBackend {
    async fn start(response: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (report, heads) = mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap() == 1 {
                    head.push(byte[0]);
                }
                report.send(String::from_utf8(head).unwrap()).unwrap();
                stream.write_all(response.as_bytes()).await.unwrap();
                stream.shutdown().await.unwrap();
            }
        });
        Self { addr, heads, task }
    }

    /// The next request head the backend read.
    async fn head(&mut self) -> String {
        self.heads.recv().await.unwrap()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every value of a response header, in order.
fn all<'a>(answer: &'a Answer, name: &str) -> Vec<&'a str> {
    answer
        .head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// nginx.tmpl: `proxy_set_header Connection {{ $location.Connection.Header }}` replaces
/// `$connection_upgrade`, which sends nothing (`upstream-keepalive-connections` > 0) unless the
/// client asks for an upgrade; test/e2e/annotations/connection.go expects `keep-alive` upstream.
#[tokio::test]
async fn connection_proxy_header_replaces_the_connection_sent_upstream() {
    let backend = EchoBackend::start("a").await;
    let keep_alive =
        Shaping { connection: Some(HeaderValue::from_static("keep-alive")), ..Shaping::default() };
    let close = Shaping { connection: Some(HeaderValue::from_static("close")), ..Shaping::default() };
    let table = TableBuilder::new()
        .site(Some("default.example"), "a", backend.addr, Policy::default())
        .site(Some("keep-alive.example"), "b", backend.addr, shaped(keep_alive))
        .site(Some("close.example"), "c", backend.addr, shaped(close))
        .build();
    let proxy = Harness::start(table).await;

    let answer = get(proxy.http, "default.example", "/").await;
    assert_eq!(echoed_header(&answer.body, "connection"), Vec::<&str>::new());
    let answer = get(proxy.http, "keep-alive.example", "/").await;
    assert_eq!(echoed_header(&answer.body, "connection"), ["keep-alive"]);
    let answer = get(proxy.http, "close.example", "/").await;
    assert_eq!(echoed_header(&answer.body, "connection"), ["close"]);

    // A WebSocket upgrade keeps the `Connection: upgrade` its tunnel needs.
    let upgrade =
        b"GET /ws HTTP/1.1\r\nHost: keep-alive.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    stream.write_all(upgrade).await.unwrap();
    let mut head = vec![0u8; 1024];
    let n = stream.read(&mut head).await.unwrap();
    assert_eq!(parse(&head[..n]).status, 101);
}

/// nginx.tmpl: `proxy_http_version {{ $location.Proxy.ProxyHTTPVersion }}`
/// (test/e2e/annotations/proxy.go "should change the default proxy HTTP version").
#[tokio::test]
async fn proxy_http_version_sets_the_request_line_upstream() {
    let response = "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
    let mut backend = RawBackend::start(response).await;
    let http10 = Shaping { http_version: Version::HTTP_10, ..Shaping::default() };
    let table = TableBuilder::new()
        .site(Some("old.example"), "a", backend.addr, shaped(http10.clone()))
        .site(Some("new.example"), "b", backend.addr, Policy::default())
        .build();
    let proxy = Harness::start(table).await;

    let answer = get(proxy.http, "old.example", "/x?y=1").await;
    assert_eq!((answer.status, answer.body.as_str()), (200, "ok"));
    assert!(backend.head().await.starts_with("GET /x?y=1 HTTP/1.0\r\n"));
    get(proxy.http, "new.example", "/x").await;
    assert!(backend.head().await.starts_with("GET /x HTTP/1.1\r\n"));

    let post =
        "POST /form HTTP/1.1\r\nHost: old.example\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello";
    assert_eq!(raw(proxy.http, post.as_bytes()).await.status, 200);
    let head = backend.head().await;
    assert!(head.starts_with("POST /form HTTP/1.0\r\n") && head.contains("content-length: 5\r\n"), "{head}");
    // HTTP/1.0 has no chunked coding: a body of unknown length is sent with its length once
    // buffered (the default), as nginx does, and cannot be sent as it comes.
    let chunked = |host: &str| {
        format!(
            "POST /form HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        )
    };
    assert_eq!(raw(proxy.http, chunked("old.example").as_bytes()).await.status, 200);
    let head = backend.head().await;
    assert!(head.starts_with("POST /form HTTP/1.0\r\n") && head.contains("content-length: 5\r\n"), "{head}");
    let streamed = Policy { request_buffering: false, ..shaped(http10) };
    proxy.publish(TableBuilder::new().site(Some("old.example"), "a", backend.addr, streamed).build());
    assert_eq!(raw(proxy.http, chunked("old.example").as_bytes()).await.status, 411);
}

/// nginx's `proxy_redirect <from> <to>` (ingress-nginx renders it from proxy-redirect-from and
/// -to) rewrites `Location` and `Refresh`; its header filter then makes a `Location` that became
/// a path absolute, with the port only under `port_in_redirect on` (`use-port-in-redirects`), or
/// leaves it relative under `absolute_redirect off` (`relative-redirects`).
#[tokio::test]
async fn location_and_refresh_are_rewritten_and_a_path_made_absolute() {
    let response = "HTTP/1.1 302 Found\r\nLocation: http://backend:8080/login?next=/\r\nRefresh: 0; url=http://backend:8080/done\r\nContent-Length: 0\r\n\r\n";
    let backend = RawBackend::start(response).await;
    let redirect = |port_in_redirects, relative_redirects| {
        shaped(Shaping {
            redirect: text_rewrite("http://backend:8080/", "/app/"),
            port_in_redirects,
            relative_redirects,
            ..Shaping::default()
        })
    };
    let table = TableBuilder::new()
        .site(Some("plain.example"), "a", backend.addr, Policy::default())
        .site(Some("absolute.example"), "b", backend.addr, redirect(false, false))
        .site(Some("port.example"), "c", backend.addr, redirect(true, false))
        .site(Some("relative.example"), "d", backend.addr, redirect(true, true))
        .build();
    let proxy = Harness::start(table).await;

    let answer = get(proxy.http, "plain.example:8080", "/").await;
    assert_eq!(answer.header("location"), Some("http://backend:8080/login?next=/"));
    assert_eq!(answer.header("refresh"), Some("0; url=http://backend:8080/done"));
    let answer = get(proxy.http, "absolute.example:8080", "/").await;
    assert_eq!(answer.status, 302);
    assert_eq!(answer.header("location"), Some("http://absolute.example/app/login?next=/"));
    assert_eq!(answer.header("refresh"), Some("0; url=/app/done"));
    let answer = get(proxy.http, "port.example:8080", "/").await;
    assert_eq!(answer.header("location"), Some("http://port.example:8080/app/login?next=/"));
    let answer = get(proxy.http, "relative.example:8080", "/").await;
    assert_eq!(answer.header("location"), Some("/app/login?next=/"));
}

/// nginx's `proxy_cookie_domain localhost example.org` and `proxy_cookie_path /one/ /`
/// (test/e2e/annotations/proxy.go "should setup proxy cookies") on every `Set-Cookie`.
#[tokio::test]
async fn every_set_cookie_gets_its_domain_and_path_rewritten() {
    let response = "HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Domain=.localhost; Path=/one/two\r\nSet-Cookie: b=2;path=/one/;HttpOnly\r\nSet-Cookie: c=3; Domain=other.test; Path=/two\r\nContent-Length: 0\r\n\r\n";
    let backend = RawBackend::start(response).await;
    let cookies = Shaping {
        cookie_domain: text_rewrite("localhost", "example.org"),
        cookie_path: text_rewrite("/one/", "/"),
        ..Shaping::default()
    };
    let table = TableBuilder::new()
        .site(Some("plain.example"), "a", backend.addr, Policy::default())
        .site(Some("cookies.example"), "b", backend.addr, shaped(cookies))
        .build();
    let proxy = Harness::start(table).await;

    let answer = get(proxy.http, "cookies.example", "/").await;
    assert_eq!(
        all(&answer, "set-cookie"),
        ["a=1; Domain=.example.org; Path=/two", "b=2; path=/; HttpOnly", "c=3; Domain=other.test; Path=/two"]
    );
    let answer = get(proxy.http, "plain.example", "/").await;
    assert_eq!(
        all(&answer, "set-cookie")[..2],
        ["a=1; Domain=.localhost; Path=/one/two", "b=2;path=/one/;HttpOnly"]
    );
}

/// rootfs/etc/nginx/lua/lua_ingress.lua: the HTTPS redirect drops a final `/` unless
/// `preserve_trailing_slash` (test/e2e/annotations/preservetrailingslash.go), and names the
/// HTTPS listen port with `use_port_in_redirects`.
#[tokio::test]
async fn https_redirects_keep_the_trailing_slash_or_name_the_port_when_asked() {
    let backend = EchoBackend::start("a").await;
    let forced = |shaping| Policy { https_redirect: HttpsRedirect::Always, shaping, ..Policy::default() };
    let table = TableBuilder::new()
        .site(Some("plain.example"), "a", backend.addr, forced(Shaping::default()))
        .site(
            Some("slash.example"),
            "b",
            backend.addr,
            forced(Shaping { preserve_trailing_slash: true, ..Shaping::default() }),
        )
        .site(
            Some("port.example"),
            "c",
            backend.addr,
            forced(Shaping { port_in_redirects: true, ..Shaping::default() }),
        )
        .build();
    let proxy = Harness::start(table).await;

    assert_eq!(get(proxy.http, "plain.example", "/").await.header("location"), Some("https://plain.example"));
    assert_eq!(
        get(proxy.http, "plain.example", "/a/").await.header("location"),
        Some("https://plain.example/a")
    );
    assert_eq!(
        get(proxy.http, "slash.example", "/").await.header("location"),
        Some("https://slash.example/")
    );
    assert_eq!(
        get(proxy.http, "slash.example", "/a/").await.header("location"),
        Some("https://slash.example/a/")
    );
    let answer = get(proxy.http, "port.example:8080", "/a/").await;
    assert_eq!((answer.status, answer.header("location")), (308, Some("https://port.example:443/a")));
}

/// test/e2e/annotations/relativeredirects.go: `permanent-redirect: /new-location` answers an
/// absolute URL, or the path itself with `relative-redirects`; the port only with
/// `use-port-in-redirects` (nginx's `port_in_redirect`).
#[tokio::test]
async fn a_permanent_redirect_to_a_path_is_absolute_unless_relative_redirects() {
    let backend = EchoBackend::start("a").await;
    let to_path = |shaping| {
        let redirect = Redirect { status: 301, location: HeaderValue::from_static("/new-location") };
        Policy { redirect: Some(redirect), shaping, ..Policy::default() }
    };
    let table = TableBuilder::new()
        .site(Some("absolute.example"), "a", backend.addr, to_path(Shaping::default()))
        .site(
            Some("port.example"),
            "b",
            backend.addr,
            to_path(Shaping { port_in_redirects: true, ..Shaping::default() }),
        )
        .site(
            Some("relative.example"),
            "c",
            backend.addr,
            to_path(Shaping { relative_redirects: true, ..Shaping::default() }),
        )
        .build();
    let proxy = Harness::start(table).await;

    let answer = get(proxy.http, "absolute.example:8080", "/something").await;
    assert_eq!(
        (answer.status, answer.header("location")),
        (301, Some("http://absolute.example/new-location"))
    );
    let answer = get(proxy.http, "port.example:8080", "/something").await;
    assert_eq!(answer.header("location"), Some("http://port.example:8080/new-location"));
    let answer = get(proxy.http, "port.example:80", "/something").await;
    assert_eq!(
        answer.header("location"),
        Some("http://port.example/new-location"),
        "the default port is not named"
    );
    let answer = get(proxy.http, "relative.example:8080", "/something").await;
    assert_eq!(answer.header("location"), Some("/new-location"));
}

/// ingress-nginx's buildProxyPass writes `proxy_set_header X-Forwarded-Prefix "<value>"` after
/// the location's `rewrite`, so `$1`… in the value are the rewrite's captures.
#[tokio::test]
async fn the_forwarded_prefix_takes_the_captures_of_the_rewrite() {
    let backend = EchoBackend::start("a").await;
    let rule = PathRule::regex("/(shop|cart)/(.*)").unwrap();
    let PathRule::Regex(pattern) = rule.clone() else { unreachable!("a regex rule") };
    let rewrite = Rewrite { pattern, target: "/${2}".into(), forwarded_prefix: Some("/${1}/base".into()) };
    let policy = Policy { rewrite: Some(rewrite), ..Policy::default() };
    let table =
        TableBuilder::new().route_with(None, rule, "a", endpoints("a", &[backend.addr]), policy).build();
    let proxy = Harness::start(table).await;

    for (request, upstream, prefix) in
        [("/cart/items?x=1", "/items?x=1", "/cart/base"), ("/Shop/a%20b", "/a%20b", "/Shop/base")]
    {
        let answer = get(proxy.http, "h", request).await;
        assert_eq!(echoed(&answer.body, "target"), Some(upstream), "{request}");
        assert_eq!(echoed_header(&answer.body, "x-forwarded-prefix"), [prefix], "{request}");
    }
}
