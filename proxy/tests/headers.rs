//! The header keys of the `--configmap` ConfigMap on loopback, as ingress-nginx's nginx.tmpl
//! applies them: `proxy_set_header` for `proxy-set-headers` (after the proxy's own) and
//! `X-Original-URI` (`proxy-add-original-uri-header`), `more_set_headers` for `add-headers`
//! (test/e2e/settings/custom_header.go) and for the `custom-headers` annotation
//! (test/e2e/annotations/customheaders.go), `proxy_hide_header` for `hide-headers`,
//! `server_tokens` with `more_clear_headers Server` (test/e2e/settings/server_tokens.go),
//! `underscores_in_headers` and `ignore_invalid_headers`, the `$req_id` map
//! (`generate-request-id`), and the `$block_ua`/`$block_ref` maps answered 403 in every server
//! (test/e2e/settings/global_access_block.go).

mod support;

use std::sync::Arc;

use http::{HeaderName, HeaderValue};
use ostium_model::{
    BlockPattern, GlobalSettings, HeaderBlock, HeaderSettings, Policy, SetValue, Shaping, Template,
    TemplatePart, Variable,
};
use ostium_test_support::{EchoBackend, echoed, echoed_header};
use support::*;

fn pairs(pairs: &[(&'static str, &'static str)]) -> Box<[(HeaderName, HeaderValue)]> {
    pairs.iter().map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
}

/// A proxy with one site on `web.example.com` to `backend`, under these header settings.
async fn proxy(backend: &EchoBackend, headers: HeaderSettings, policy: Policy) -> Harness {
    Harness::start(table(backend, headers, policy)).await
}

fn table(backend: &EchoBackend, headers: HeaderSettings, policy: Policy) -> ostium_model::Table {
    TableBuilder::new()
        .site(Some("web.example.com"), "web", backend.addr, policy)
        .global(GlobalSettings { headers, ..GlobalSettings::default() })
        .build()
}

/// `GET /` on `web.example.com` with extra header lines.
async fn get_with(proxy: &Harness, extra: &str) -> Answer {
    let request = format!("GET / HTTP/1.1\r\nHost: web.example.com\r\n{extra}Connection: close\r\n\r\n");
    raw(proxy.http, request.as_bytes()).await
}

#[tokio::test]
async fn proxy_set_headers_replace_what_the_client_and_the_proxy_set() {
    let backend = EchoBackend::start("web").await;
    let text = |value: &'static str| SetValue::Text(HeaderValue::from_static(value));
    let headers = HeaderSettings {
        proxy_set_headers: Box::new([
            (HeaderName::from_static("x-forwarded-proto"), text("https")),
            (HeaderName::from_static("x-team"), text("edge")),
            (HeaderName::from_static("x-removed"), text("")),
        ]),
        ..HeaderSettings::default()
    };
    let proxy = proxy(&backend, headers, Policy::default()).await;
    let answer = get_with(&proxy, "X-Team: client\r\nX-Removed: 1\r\n").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(echoed_header(&answer.body, "x-team"), ["edge"]);
    assert_eq!(echoed_header(&answer.body, "x-forwarded-proto"), ["https"]);
    assert!(echoed_header(&answer.body, "x-removed").is_empty(), "an empty value removes");
    assert_eq!(echoed_header(&answer.body, "x-forwarded-scheme"), ["http"], "the proxy's others stay");

    // Without the setting the client's header goes through as it was.
    proxy.publish(table(&backend, HeaderSettings::default(), Policy::default()));
    let answer = get_with(&proxy, "X-Team: client\r\n").await;
    assert_eq!(echoed_header(&answer.body, "x-team"), ["client"]);
    assert_eq!(echoed_header(&answer.body, "x-forwarded-proto"), ["http"]);
}

/// The few nginx variables ostium fills, from the request as the client sent it
/// (docs/examples/customization/custom-headers: `X-Request-Start: t=${msec}`).
#[tokio::test]
async fn proxy_set_headers_fill_their_variables_per_request() {
    let backend = EchoBackend::start("web").await;
    let template = |parts: Vec<TemplatePart>| SetValue::Template(Template::new(parts));
    let headers = HeaderSettings {
        proxy_set_headers: Box::new([
            (
                HeaderName::from_static("x-request-start"),
                template(vec![TemplatePart::Text("t=".into()), TemplatePart::Variable(Variable::Msec)]),
            ),
            (
                HeaderName::from_static("x-seen"),
                template(vec![
                    TemplatePart::Variable(Variable::Header(HeaderName::from_static("x-forwarded-for"))),
                    TemplatePart::Text(" via ".into()),
                    TemplatePart::Variable(Variable::Host),
                ]),
            ),
            (
                HeaderName::from_static("x-empty"),
                template(vec![TemplatePart::Variable(Variable::Header(HeaderName::from_static("x-absent")))]),
            ),
        ]),
        ..HeaderSettings::default()
    };
    let proxy = proxy(&backend, headers, Policy::default()).await;
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let answer = get_with(&proxy, "X-Forwarded-For: 203.0.113.9\r\nX-Empty: client\r\n").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let start = echoed_header(&answer.body, "x-request-start");
    let seconds: f64 = start[0].strip_prefix("t=").unwrap().parse().unwrap();
    assert!(seconds >= before.floor() && start[0].split_once('.').unwrap().1.len() == 3, "{start:?}");
    assert_eq!(echoed_header(&answer.body, "x-seen"), ["203.0.113.9 via web.example.com"]);
    assert!(echoed_header(&answer.body, "x-empty").is_empty(), "a value that comes out empty removes");
}

#[tokio::test]
async fn add_headers_are_set_on_every_answer_and_custom_headers_on_their_routes() {
    let backend = EchoBackend::start("web").await;
    let headers = HeaderSettings {
        add_headers: pairs(&[("x-frame-options", "DENY"), ("x-backend", "replaced"), ("x-both", "global")]),
        ..HeaderSettings::default()
    };
    let custom = Shaping {
        custom_headers: Some(Arc::from(pairs(&[("my-custom-header", "42"), ("x-both", "$remote_addr")]))),
        ..Shaping::default()
    };
    let table = TableBuilder::new()
        .site(
            Some("custom.example.com"),
            "custom",
            backend.addr,
            Policy { shaping: custom, ..Policy::default() },
        )
        .site(Some("web.example.com"), "web", backend.addr, Policy::default())
        .global(GlobalSettings { headers, ..GlobalSettings::default() })
        .build();
    let proxy = Harness::start(table).await;

    let plain = get(proxy.http, "web.example.com", "/").await;
    assert_eq!(plain.header("x-frame-options"), Some("DENY"), "{plain:?}");
    assert_eq!(plain.header("x-backend"), Some("replaced"), "more_set_headers replaces the endpoint's");
    assert_eq!(plain.header("x-both"), Some("global"));
    assert_eq!(plain.header("my-custom-header"), None, "custom-headers belong to their route");

    let custom = get(proxy.http, "custom.example.com", "/").await;
    assert_eq!(custom.header("my-custom-header"), Some("42"));
    assert_eq!(custom.header("x-both"), Some("$remote_addr"), "the route's last, as literal text");
    assert_eq!(custom.header("x-frame-options"), Some("DENY"));
    let error = get(proxy.http, "custom.example.com", "/status/502").await;
    assert_eq!((error.status, error.header("my-custom-header")), (502, Some("42")));

    let unknown = get(proxy.http, "nowhere.example.com", "/").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.header("x-frame-options"), Some("DENY"), "the proxy's own answers too");
}

#[tokio::test]
async fn hide_headers_remove_the_endpoints_headers() {
    let backend = EchoBackend::start("web").await;
    let headers = HeaderSettings {
        hide_headers: Box::new([HeaderName::from_static("x-backend")]),
        ..HeaderSettings::default()
    };
    let proxy = proxy(&backend, headers, Policy::default()).await;
    let answer = get(proxy.http, "web.example.com", "/").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-backend"), None, "{answer:?}");
    assert!(answer.header("content-type").is_some());

    proxy.publish(table(&backend, HeaderSettings::default(), Policy::default()));
    assert_eq!(get(proxy.http, "web.example.com", "/").await.header("x-backend"), Some("web"));
}

#[tokio::test]
async fn server_tokens_name_the_proxy_and_otherwise_no_server_header_is_sent() {
    let backend = EchoBackend::start("web").await;
    let proxy = proxy(&backend, HeaderSettings::default(), Policy::default()).await;
    assert_eq!(get(proxy.http, "web.example.com", "/").await.header("server"), None);
    assert_eq!(get(proxy.http, "nowhere.example.com", "/").await.header("server"), None);

    let headers = HeaderSettings { server_tokens: true, ..HeaderSettings::default() };
    proxy.publish(table(&backend, headers, Policy::default()));
    let server = format!("ostium/{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(get(proxy.http, "web.example.com", "/").await.header("server"), Some(server.as_str()));
    assert_eq!(get(proxy.http, "nowhere.example.com", "/").await.header("server"), Some(server.as_str()));
}

#[tokio::test]
async fn headers_nginx_ignores_are_dropped_unless_allowed() {
    let backend = EchoBackend::start("web").await;
    let sent = "X_Custom: 1\r\nX.Dotted: 2\r\nX_Forwarded_For: 1.2.3.4\r\nX-Fine: 3\r\n";
    let proxy = proxy(&backend, HeaderSettings::default(), Policy::default()).await;
    let answer = get_with(&proxy, sent).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(echoed_header(&answer.body, "x_custom").is_empty());
    assert!(echoed_header(&answer.body, "x.dotted").is_empty());
    assert_eq!(echoed_header(&answer.body, "x-fine"), ["3"]);

    let headers = HeaderSettings { underscores_in_headers: true, ..HeaderSettings::default() };
    proxy.publish(table(&backend, headers, Policy::default()));
    let answer = get_with(&proxy, sent).await;
    assert_eq!(echoed_header(&answer.body, "x_custom"), ["1"]);
    assert!(echoed_header(&answer.body, "x.dotted").is_empty());
    assert!(echoed_header(&answer.body, "x_forwarded_for").is_empty(), "never a spelling of the proxy's");

    let headers = HeaderSettings { ignore_invalid_headers: false, ..HeaderSettings::default() };
    proxy.publish(table(&backend, headers, Policy::default()));
    let answer = get_with(&proxy, sent).await;
    assert_eq!(echoed_header(&answer.body, "x_custom"), ["1"], "nginx ignores nothing then");
    assert_eq!(echoed_header(&answer.body, "x.dotted"), ["2"]);
    assert!(echoed_header(&answer.body, "x_forwarded_for").is_empty());
}

#[tokio::test]
async fn request_ids_are_generated_kept_or_left_out() {
    let backend = EchoBackend::start("web").await;
    let proxy = proxy(&backend, HeaderSettings::default(), Policy::default()).await;
    let generated = get_with(&proxy, "").await;
    let id = echoed_header(&generated.body, "x-request-id");
    assert!(id.len() == 1 && id[0].len() == 32 && id[0].bytes().all(|b| b.is_ascii_hexdigit()), "{id:?}");
    let kept = get_with(&proxy, "X-Request-ID: abc-123\r\n").await;
    assert_eq!(echoed_header(&kept.body, "x-request-id"), ["abc-123"]);

    let headers = HeaderSettings { generate_request_id: false, ..HeaderSettings::default() };
    proxy.publish(table(&backend, headers, Policy::default()));
    let none = get_with(&proxy, "").await;
    assert_eq!(none.status, 200);
    assert!(echoed_header(&none.body, "x-request-id").is_empty(), "{none:?}");
    let kept = get_with(&proxy, "X-Request-ID: abc-123\r\n").await;
    assert_eq!(echoed_header(&kept.body, "x-request-id"), ["abc-123"]);
}

#[tokio::test]
async fn the_original_uri_is_sent_when_asked() {
    let backend = EchoBackend::start("web").await;
    let headers = HeaderSettings { original_uri_header: true, ..HeaderSettings::default() };
    let proxy = proxy(&backend, headers, Policy::default()).await;
    let request = "GET /a/../b%2Fc?x=1 HTTP/1.1\r\nHost: web.example.com\r\nX-Original-URI: /forged\r\nConnection: close\r\n\r\n";
    let answer = raw(proxy.http, request.as_bytes()).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(echoed_header(&answer.body, "x-original-uri"), ["/a/../b%2Fc?x=1"]);

    proxy.publish(table(&backend, HeaderSettings::default(), Policy::default()));
    let answer = get_with(&proxy, "").await;
    assert!(echoed_header(&answer.body, "x-original-uri").is_empty());
}

#[tokio::test]
async fn blocked_user_agents_and_referers_get_403_before_routing() {
    let backend = EchoBackend::start("web").await;
    let block = |exact: &str, pattern: &str| {
        let patterns = vec![BlockPattern::new(pattern, true).unwrap()];
        Some(HeaderBlock::new(vec![exact.to_owned()], patterns).unwrap())
    };
    let headers = HeaderSettings {
        block_user_agents: block("AlphaBot", r"chrome\/68\.0\.3440\.106\ safari\/537\.36"),
        block_referers: block("qwerty", r"example\.com"),
        ..HeaderSettings::default()
    };
    let proxy = proxy(&backend, headers, Policy::default()).await;
    let chrome = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/68.0.3440.106 Safari/537.36";
    let safari = "Mozilla/5.0 (iPhone; CPU iPhone OS 11_4_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/11.0 Mobile/15E148 Safari/604.1";
    for (extra, status) in [
        (format!("User-Agent: {chrome}\r\n"), 403),
        ("User-Agent: alphabot\r\n".to_owned(), 403),
        ("User-Agent: AlphaBot/2\r\n".to_owned(), 200),
        (format!("User-Agent: {safari}\r\n"), 200),
        ("Referer: https://www.EXAMPLE.com/page\r\n".to_owned(), 403),
        ("Referer: qwerty\r\n".to_owned(), 403),
        ("Referer: qwerty123\r\n".to_owned(), 200),
        (String::new(), 200),
    ] {
        let answer = get_with(&proxy, &extra).await;
        assert_eq!(answer.status, status, "{extra}: {answer:?}");
        if status == 200 {
            assert_eq!(echoed(&answer.body, "backend"), Some("web"));
        }
    }
    let requests = backend.requests();
    let unknown_host =
        "GET / HTTP/1.1\r\nHost: nowhere.example.com\r\nUser-Agent: AlphaBot\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(proxy.http, unknown_host.as_bytes()).await.status, 403, "every server blocks");
    assert_eq!(backend.requests(), requests);
}
