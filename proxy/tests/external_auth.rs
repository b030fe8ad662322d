//! External authentication on loopback, against a real auth service, as ingress-nginx behaves:
//! the auth location of rootfs/etc/nginx/template/nginx.tmpl (`proxy_pass_request_body off`,
//! `X-Original-URL`, `X-Original-Method`, `X-Sent-From`, `X-Auth-Request-Redirect`, `Host` of
//! the auth URL), nginx's `auth_request` (2xx passes, 401 and 403 are answered, anything else is
//! 500), buildAuthSignURL in internal/ingress/controller/template/template.go, and the cases of
//! test/e2e/annotations/auth.go (signin redirect, cookies, cached answers, the
//! `auth-proxy-set-headers` ConfigMap's headers).

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use ostium_model::{
    AuthCache, CidrSet, ExternalAuth, Policy, Satisfy, SourceAccess, Template, TemplatePart, Variable,
};
use ostium_proxy::ProxyConfig;
use ostium_test_support::{EchoBackend, echoed_header};
use support::*;
use tokio::net::TcpListener;

/// What the auth service saw of one subrequest.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    target: String,
    headers: HeaderMap,
    body_len: usize,
}

/// An auth service that decides by the client's `X-Decision` header (passed on with the
/// client's other headers): `allow` (200 with `X-Auth-Request-User: alice`), `deny` (401 with a
/// challenge), `forbid` (403), anything else 302. `X-Cookie: yes` adds a `Set-Cookie`.
struct AuthService {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl AuthService {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let log = log.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| decide(request, log.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, seen, task }
    }

    fn url(&self, path: &str) -> Template {
        Template::new(vec![TemplatePart::Text(format!("http://{}{path}", self.addr).into())])
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for AuthService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn decide(
    request: Request<Incoming>,
    log: Arc<Mutex<Vec<Seen>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body_len = body.collect().await.map(|b| b.to_bytes().len()).unwrap_or(usize::MAX);
    let decision = parts.headers.get("x-decision").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let cookie = parts.headers.get("x-cookie").is_some();
    log.lock().unwrap().push(Seen {
        method: parts.method,
        target: parts.uri.path_and_query().map_or("", |pq| pq.as_str()).to_owned(),
        headers: parts.headers,
        body_len,
    });
    let mut response = Response::new(Full::new(Bytes::from_static(b"auth says")));
    *response.status_mut() = match decision.as_str() {
        "allow" => {
            response.headers_mut().insert("x-auth-request-user", HeaderValue::from_static("alice"));
            StatusCode::OK
        }
        "deny" => {
            response
                .headers_mut()
                .insert("www-authenticate", HeaderValue::from_static("Bearer realm=\"sso\""));
            StatusCode::UNAUTHORIZED
        }
        "forbid" => StatusCode::FORBIDDEN,
        _ => StatusCode::FOUND,
    };
    if cookie {
        response.headers_mut().insert("set-cookie", HeaderValue::from_static("session=abc; Path=/"));
    }
    Ok(response)
}

fn with_auth(auth: ExternalAuth) -> Policy {
    Policy { external_auth: Some(Arc::new(auth)), ..Policy::default() }
}

async fn request(addr: SocketAddr, method: &str, host: &str, path: &str, extra: &str) -> Answer {
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    raw(addr, request.as_bytes()).await
}

#[tokio::test]
async fn a_2xx_answer_lets_the_request_through_with_the_auth_response_headers() {
    let (backend, auth) = (EchoBackend::start("app").await, AuthService::start().await);
    let mut settings = support::external_auth(auth.url("/check"));
    settings.response_headers =
        vec![HeaderName::from_static("x-auth-request-user"), HeaderName::from_static("x-auth-request-email")]
            .into();
    let table = TableBuilder::new().site(None, "app", backend.addr, with_auth(settings)).build();
    let proxy = Harness::start(table).await;

    // The client's own claims are replaced by the auth service's answer, or removed.
    let claims = "X-Decision: allow\r\nX-Auth-Request-User: mallory\r\nX-Auth-Request-Email: m@evil\r\n";
    let answer = request(proxy.http, "GET", "app.example.com", "/data", claims).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(echoed_header(&answer.body, "x-auth-request-user"), ["alice"]);
    assert!(echoed_header(&answer.body, "x-auth-request-email").is_empty());

    for (decision, status) in [("deny", 401), ("forbid", 403)] {
        let answer =
            request(proxy.http, "GET", "app.example.com", "/data", &format!("X-Decision: {decision}\r\n"))
                .await;
        assert_eq!(answer.status, status, "{decision}");
    }
    assert_eq!(backend.requests(), 1, "only the allowed request reached the backend");
}

#[tokio::test]
async fn a_401_keeps_the_auth_challenge_and_other_statuses_or_no_answer_are_500() {
    let (backend, auth) = (EchoBackend::start("app").await, AuthService::start().await);
    let unreachable = closed_port().await;
    let down = Template::new(vec![TemplatePart::Text(format!("http://{unreachable}/check").into())]);
    let table = TableBuilder::new()
        .site(
            Some("up.example.com"),
            "app",
            backend.addr,
            with_auth(support::external_auth(auth.url("/check"))),
        )
        .site(Some("down.example.com"), "app2", backend.addr, with_auth(support::external_auth(down)))
        .build();
    let proxy = Harness::start(table).await;

    let answer = request(proxy.http, "GET", "up.example.com", "/", "X-Decision: deny\r\n").await;
    assert_eq!(answer.status, 401);
    assert_eq!(answer.header("www-authenticate"), Some("Bearer realm=\"sso\""));
    assert!(!answer.body.contains("auth says"), "the auth service's body is not the answer");
    let answer = request(proxy.http, "GET", "up.example.com", "/", "X-Decision: redirect-me\r\n").await;
    assert_eq!(answer.status, 500, "a 302 from the auth service is not an answer auth_request takes");
    let answer = request(proxy.http, "GET", "down.example.com", "/", "X-Decision: allow\r\n").await;
    assert_eq!(answer.status, 500, "an unreachable auth service fails closed");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn the_subrequest_carries_the_original_request_but_never_its_body() {
    let (backend, auth) = (EchoBackend::start("app").await, AuthService::start().await);
    let table = TableBuilder::new()
        .site(None, "app", backend.addr, with_auth(support::external_auth(auth.url("/check?v=1"))))
        .build();
    let proxy = Harness::start(table).await;

    let extra =
        "X-Decision: allow\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nContent-Length: 11\r\n";
    let request = format!(
        "POST /upload?q=1 HTTP/1.1\r\nHost: app.example.com:8080\r\n{extra}Connection: close\r\n\r\nsecret-body"
    );
    let answer = raw(proxy.http, request.as_bytes()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(answer.body.contains("received: 11"), "the backend still gets the body: {}", answer.body);

    let seen = auth.seen();
    assert_eq!(seen.len(), 1);
    let seen = &seen[0];
    let header = |name: &str| seen.headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(seen.method, Method::GET, "nginx's subrequests are GET");
    assert_eq!(seen.target, "/check?v=1");
    assert_eq!(seen.body_len, 0);
    assert_eq!(header("content-length"), None);
    assert_eq!(header("host").as_deref(), Some("127.0.0.1"), "the auth URL's host, without port");
    assert_eq!(header("x-original-url").as_deref(), Some("http://app.example.com:8080/upload?q=1"));
    assert_eq!(header("x-original-method").as_deref(), Some("POST"));
    assert_eq!(header("x-sent-from").as_deref(), Some("nginx-ingress-controller"));
    assert_eq!(header("x-real-ip").as_deref(), Some("127.0.0.1"));
    assert_eq!(header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(header("x-forwarded-host"), None, "the client's claim is not passed on");
    assert_eq!(header("x-auth-request-redirect").as_deref(), Some("/upload?q=1"));
    assert_eq!(header("x-decision").as_deref(), Some("allow"), "the client's headers are passed");
    assert_eq!(header("x-original-uri"), None, "only with auth-method");
    let request_id = header("x-request-id").expect("a request id");
    assert_eq!(echoed_header(&answer.body, "x-request-id"), [request_id.as_str()], "the backend's too");
}

#[tokio::test]
async fn auth_method_and_request_redirect_change_the_subrequest() {
    let (backend, auth) = (EchoBackend::start("app").await, AuthService::start().await);
    let mut settings = support::external_auth(auth.url("/check"));
    settings.method = Some(Method::POST);
    settings.request_redirect = Some(HeaderValue::from_static("https://app.example.com/landing"));
    let table = TableBuilder::new().site(None, "app", backend.addr, with_auth(settings)).build();
    let proxy = Harness::start(table).await;

    let answer = request(proxy.http, "GET", "app.example.com", "/a?b=c", "X-Decision: allow\r\n").await;
    assert_eq!(answer.status, 200);
    let seen = auth.seen();
    let header = |name: &str| seen[0].headers.get(name).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(seen[0].method, Method::POST);
    assert_eq!(seen[0].body_len, 0);
    assert_eq!(header("x-original-uri").as_deref(), Some("/a?b=c"));
    assert_eq!(header("x-scheme").as_deref(), Some("http"));
    assert_eq!(header("x-auth-request-redirect").as_deref(), Some("https://app.example.com/landing"));
}

/// `auth-proxy-set-headers` (internal/ingress/annotations/authreq/main.go; nginx.tmpl's
/// `buildAuthProxySetHeaders` lines after the fixed ones): each entry is set on the subrequest,
/// replacing what the client sent; a variable is filled from the request; a value that comes
/// out empty sends no header.
#[tokio::test]
async fn auth_proxy_set_headers_reach_the_auth_service() {
    let (backend, auth) = (EchoBackend::start("app").await, AuthService::start().await);
    let text = |text: &str| Template::new(vec![TemplatePart::Text(text.into())]);
    let mut settings = support::external_auth(auth.url("/check"));
    settings.proxy_set_headers = vec![
        (HeaderName::from_static("x-tenant"), text("acme \"corp\"")),
        (HeaderName::from_static("x-sent-from"), text("edge")),
        (
            HeaderName::from_static("x-user-agent"),
            Template::new(vec![
                TemplatePart::Text("ua=".into()),
                TemplatePart::Variable(Variable::Header(HeaderName::from_static("user-agent"))),
            ]),
        ),
        (HeaderName::from_static("x-empty"), text("")),
    ]
    .into();
    let table = TableBuilder::new().site(None, "app", backend.addr, with_auth(settings)).build();
    let proxy = Harness::start(table).await;

    let extra = "X-Decision: allow\r\nX-Tenant: forged\r\nX-Empty: from-client\r\nUser-Agent: probe/1\r\n";
    let answer = request(proxy.http, "GET", "app.example.com", "/", extra).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = auth.seen();
    let header = |name: &str| -> Vec<String> {
        seen[0].headers.get_all(name).iter().map(|v| v.to_str().unwrap().to_owned()).collect()
    };
    assert_eq!(header("x-tenant"), ["acme \"corp\""], "set, not appended to the client's");
    assert_eq!(header("x-sent-from"), ["edge"], "set after the fixed headers");
    assert_eq!(header("x-user-agent"), ["ua=probe/1"]);
    assert!(header("x-empty").is_empty(), "an empty value sends no header");
    assert_eq!(echoed_header(&answer.body, "x-tenant"), ["forged"], "the backend is not told");
}

/// test/e2e/annotations/auth.go: `auth-signin: http://$host/auth/start` redirects a 401 to
/// `http://<host>/auth/start?rd=http://<host><url.QueryEscape("/?a=b&c=d")>`.
#[tokio::test]
async fn a_401_redirects_to_the_signin_url_with_rd() {
    let (backend, auth) = (EchoBackend::start("app").await, AuthService::start().await);
    let mut settings = support::external_auth(auth.url("/check"));
    // What translation makes of `http://$host/auth/start` (buildAuthSignURL).
    settings.signin = Some(Template::new(vec![
        TemplatePart::Text("http://".into()),
        TemplatePart::Variable(Variable::Host),
        TemplatePart::Text("/auth/start?rd=".into()),
        TemplatePart::Variable(Variable::Scheme),
        TemplatePart::Text("://".into()),
        TemplatePart::Variable(Variable::HttpHost),
        TemplatePart::Variable(Variable::EscapedRequestUri),
    ]));
    let table = TableBuilder::new().site(None, "app", backend.addr, with_auth(settings)).build();
    let proxy = Harness::start(table).await;

    let answer = request(proxy.http, "GET", "Auth.example.com", "/?a=b&c=d", "X-Decision: deny\r\n").await;
    assert_eq!(answer.status, 302);
    assert_eq!(
        answer.header("location"),
        Some("http://auth.example.com/auth/start?rd=http://Auth.example.com%2F%3Fa%3Db%26c%3Dd")
    );
    let answer = request(proxy.http, "GET", "auth.example.com", "/", "X-Decision: forbid\r\n").await;
    assert_eq!(answer.status, 403, "only a 401 redirects");
}

#[tokio::test]
async fn answers_are_cached_by_key_for_their_duration() {
    let (backend, auth) = (EchoBackend::start("app").await, AuthService::start().await);
    let mut settings = support::external_auth(auth.url("/check"));
    let key = Template::new(vec![TemplatePart::Variable(Variable::Header(HeaderName::from_static(
        "authorization",
    )))]);
    settings.cache = Some(AuthCache::new(key, vec![(vec![200, 401].into(), Duration::from_secs(3600))]));
    let table = TableBuilder::new().site(None, "app", backend.addr, with_auth(settings)).build();
    let proxy = Harness::start(table).await;

    let alice = "Authorization: Bearer alice\r\nX-Decision: allow\r\n";
    for _ in 0..3 {
        assert_eq!(request(proxy.http, "GET", "app.example.com", "/", alice).await.status, 200);
    }
    assert_eq!(auth.seen().len(), 1, "the auth service was asked once within the duration");
    // The cached answer decides, whatever else the request says.
    let alice_again = "Authorization: Bearer alice\r\nX-Decision: deny\r\n";
    assert_eq!(request(proxy.http, "GET", "app.example.com", "/", alice_again).await.status, 200);
    let bob = "Authorization: Bearer bob\r\nX-Decision: forbid\r\n";
    assert_eq!(request(proxy.http, "GET", "app.example.com", "/", bob).await.status, 403);
    assert_eq!(request(proxy.http, "GET", "app.example.com", "/", bob).await.status, 403);
    assert_eq!(auth.seen().len(), 3, "a new key asks again, and a 403 is not kept");
    let other_host = "Authorization: Bearer alice\r\nX-Decision: deny\r\n";
    assert_eq!(request(proxy.http, "GET", "other.example.com", "/", other_host).await.status, 401);
    assert_eq!(auth.seen().len(), 4, "the host is part of the key");
}

/// test/e2e/annotations/auth.go, "cookie set by external authentication server": the cookie
/// reaches the client with a 200, not with the backend's 503 unless `auth-always-set-cookie`.
#[tokio::test]
async fn the_auth_cookie_goes_to_the_client_on_success_or_always() {
    let (backend, auth) = (EchoBackend::start("app").await, AuthService::start().await);
    let mut always = support::external_auth(auth.url("/check"));
    always.always_set_cookie = true;
    let table = TableBuilder::new()
        .site(
            Some("default.example.com"),
            "app",
            backend.addr,
            with_auth(support::external_auth(auth.url("/check"))),
        )
        .site(Some("always.example.com"), "app2", backend.addr, with_auth(always))
        .build();
    let proxy = Harness::start(table).await;
    let allow = "X-Decision: allow\r\nX-Cookie: yes\r\n";

    let answer = request(proxy.http, "GET", "default.example.com", "/", allow).await;
    assert_eq!((answer.status, answer.header("set-cookie")), (200, Some("session=abc; Path=/")));
    let answer = request(proxy.http, "GET", "default.example.com", "/status/503", allow).await;
    assert_eq!((answer.status, answer.header("set-cookie")), (503, None));
    let answer = request(proxy.http, "GET", "always.example.com", "/status/503", allow).await;
    assert_eq!((answer.status, answer.header("set-cookie")), (503, Some("session=abc; Path=/")));
    let deny = "X-Decision: deny\r\nX-Cookie: yes\r\n";
    let answer = request(proxy.http, "GET", "always.example.com", "/", deny).await;
    assert_eq!((answer.status, answer.header("set-cookie")), (401, Some("session=abc; Path=/")));
    let answer = request(proxy.http, "GET", "default.example.com", "/", deny).await;
    assert_eq!((answer.status, answer.header("set-cookie")), (401, None));
}

/// nginx's `satisfy any`: an allowed address needs no auth service; another address still may
/// pass it. With `all`, the address is checked first and the auth service is not asked.
#[tokio::test]
async fn satisfy_any_lets_an_allowed_address_skip_the_auth_service() {
    let (backend, auth) = (EchoBackend::start("app").await, AuthService::start().await);
    let ranges = |list: &str| SourceAccess { allow: Some(list.parse::<CidrSet>().unwrap()), deny: None };
    let any = |list: &str| Policy {
        source_access: Some(ranges(list)),
        satisfy: Satisfy::Any,
        ..with_auth(support::external_auth(auth.url("/check")))
    };
    let all = Policy {
        source_access: Some(ranges("10.0.0.0/8")),
        ..with_auth(support::external_auth(auth.url("/check")))
    };
    let table = TableBuilder::new()
        .site(Some("inside.example.com"), "a", backend.addr, any("127.0.0.0/8"))
        .site(Some("outside.example.com"), "b", backend.addr, any("10.0.0.0/8"))
        .site(Some("all.example.com"), "c", backend.addr, all)
        .build();
    let proxy = Harness::start(table).await;

    assert_eq!(
        request(proxy.http, "GET", "inside.example.com", "/", "X-Decision: deny\r\n").await.status,
        200
    );
    assert!(auth.seen().is_empty());
    assert_eq!(
        request(proxy.http, "GET", "outside.example.com", "/", "X-Decision: allow\r\n").await.status,
        200
    );
    assert_eq!(
        request(proxy.http, "GET", "outside.example.com", "/", "X-Decision: deny\r\n").await.status,
        401
    );
    assert_eq!(auth.seen().len(), 2);
    assert_eq!(request(proxy.http, "GET", "all.example.com", "/", "X-Decision: allow\r\n").await.status, 403);
    assert_eq!(auth.seen().len(), 2, "with `all`, a refused address is not worth asking about");
}

/// The subrequest has its own clock: the proxy's connect and read timeouts (nginx's defaults in
/// the auth location). An auth service that does not answer in time fails closed with 500.
#[tokio::test]
async fn an_auth_service_slower_than_the_read_timeout_is_a_500() {
    let (backend, slow) = (EchoBackend::start("app").await, EchoBackend::start("slow-auth").await);
    let url = Template::new(vec![TemplatePart::Text(format!("http://{}/delay/5000", slow.addr).into())]);
    let table =
        TableBuilder::new().site(None, "app", backend.addr, with_auth(support::external_auth(url))).build();
    let config =
        ProxyConfig { access_log: false, read_timeout: Duration::from_millis(200), ..ProxyConfig::default() };
    let proxy = Harness::start_with(table, config).await;

    assert_eq!(request(proxy.http, "GET", "app.example.com", "/", "").await.status, 500);
    assert_eq!(slow.requests(), 1);
    assert_eq!(backend.requests(), 0);
}

/// An auth URL with variables is filled per request (oauth2-proxy's `https://$host/oauth2/auth`).
#[tokio::test]
async fn variables_in_the_auth_url_are_filled_from_the_request() {
    let (backend, auth) = (EchoBackend::start("app").await, AuthService::start().await);
    let url = Template::new(vec![
        TemplatePart::Text("http://".into()),
        TemplatePart::Variable(Variable::HttpHost),
        TemplatePart::Text("/oauth2/auth?method=".into()),
        TemplatePart::Variable(Variable::RequestMethod),
    ]);
    let table =
        TableBuilder::new().site(None, "app", backend.addr, with_auth(support::external_auth(url))).build();
    let proxy = Harness::start(table).await;

    let host = auth.addr.to_string();
    let answer = request(proxy.http, "DELETE", &host, "/item", "X-Decision: allow\r\n").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let seen = auth.seen();
    assert_eq!(seen[0].target, "/oauth2/auth?method=DELETE");
    assert_eq!(seen[0].headers["host"], "127.0.0.1");
}
