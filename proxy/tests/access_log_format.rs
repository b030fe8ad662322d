//! The access log in the ConfigMap's `log-format-upstream`: one line per request, the template
//! with its nginx variables filled in, written as it is to the access log output; and the keys
//! that decide which requests are logged. ingress-nginx: internal/ingress/controller/config/
//! config.go (logFormatUpstream, the defaults), rootfs/etc/nginx/template/nginx.tmpl
//! (`log_format upstreaminfo escape=…`, `map $request_uri $loggable`, `access_log off`),
//! test/e2e/settings/log-format.go (escaping of a quote in a header), internal/ingress/
//! controller/controller.go (the catch-all server logged only with
//! enable-access-log-for-default-backend).

mod support;

use std::sync::Arc;
use std::time::Duration;

use ostium_model::{AccessLogSettings, LogEscape, LogFormat, Policy, Table};
use ostium_proxy::{AccessLogOutput, ProxyConfig};
use ostium_test_support::EchoBackend;
use ostium_test_support::log::LogBuffer;
use support::*;

/// ingress-nginx's default `log-format-upstream` (config.go `logFormatUpstream`).
const INGRESS_NGINX_FORMAT: &str = r#"$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name] [$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length $upstream_response_time $upstream_status $req_id"#;

fn format(template: &str, escape: LogEscape) -> AccessLogSettings {
    let (format, unknown) = LogFormat::parse(template, escape).unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    AccessLogSettings { format: Some(Arc::new(format)), ..AccessLogSettings::default() }
}

fn table(backend: &EchoBackend, settings: AccessLogSettings) -> Table {
    TableBuilder::new()
        .site(Some("shop.example"), "web", backend.addr, Policy::default())
        .access_log_settings(settings)
        .build()
}

/// A proxy whose access log lines go to the returned buffer.
async fn logging_proxy(table: Table) -> (Harness, LogBuffer) {
    let buffer = LogBuffer::default();
    let config =
        ProxyConfig { access_log_output: AccessLogOutput::writer(buffer.clone()), ..ProxyConfig::default() };
    (Harness::start_with(table, config).await, buffer)
}

/// The log's lines once there are `count` (a line is written when its response body is done
/// with, which can trail the client a little).
async fn lines(buffer: &LogBuffer, count: usize) -> Vec<String> {
    for _ in 0..200 {
        let text = buffer.text();
        if text.lines().count() >= count {
            return text.lines().map(str::to_owned).collect();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("fewer than {count} lines: {:?}", buffer.text());
}

async fn request(proxy: &Harness, path: &str, headers: &str) -> u16 {
    let request = format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\n{headers}Connection: close\r\n\r\n");
    raw(proxy.http, request.as_bytes()).await.status
}

#[tokio::test]
async fn the_ingress_nginx_default_format_is_written_as_nginx_writes_it() {
    let backend = EchoBackend::start("web").await;
    let (proxy, log) = logging_proxy(table(&backend, format(INGRESS_NGINX_FORMAT, LogEscape::Default))).await;
    let headers = "User-Agent: probe/1.0\r\nX-Request-ID: abc123\r\n";
    assert_eq!(request(&proxy, "/seen?x=1", headers).await, 200);

    let lines = lines(&log, 1).await;
    let pattern = format!(
        r#"^127\.0\.0\.1 - - \[\d\d/[A-Z][a-z]{{2}}/\d{{4}}:\d\d:\d\d:\d\d \+0000\] "GET /seen\?x=1 HTTP/1\.1" 200 (\d+) "-" "probe/1\.0" (\d+) \d+\.\d{{3}} \[default-web-80\] \[\] {} (\d+) \d+\.\d{{3}} 200 abc123$"#,
        regex::escape(&backend.addr.to_string())
    );
    let captures = regex::Regex::new(&pattern).unwrap().captures(&lines[0]);
    let captures = captures.unwrap_or_else(|| panic!("{:?} does not match {pattern}", lines[0]));
    let body_bytes: u64 = captures[1].parse().unwrap();
    assert!(body_bytes > 0);
    // $upstream_response_length is the body the endpoint sent, all of which went on.
    assert_eq!(captures[3].parse::<u64>().unwrap(), body_bytes);
    // The request head as sent, at least: request line, Host and the headers above.
    assert!(captures[2].parse::<u64>().unwrap() >= (25 + 20 + headers.len()) as u64, "{}", lines[0]);
}

#[tokio::test]
async fn a_custom_format_reads_any_request_header() {
    let backend = EchoBackend::start("web").await;
    let settings = format("$request_method $uri $http_x_custom $http_x_absent $status", LogEscape::Default);
    let (proxy, log) = logging_proxy(table(&backend, settings)).await;
    assert_eq!(request(&proxy, "/a/b", "X-Custom: blue\r\n").await, 200);
    assert_eq!(lines(&log, 1).await, ["GET /a/b blue - 200"]);
}

#[tokio::test]
async fn a_quote_in_a_header_is_escaped_as_the_format_asks() {
    let backend = EchoBackend::start("web").await;
    let template = r#"{"my_header1":"$http_header1", "my_header2":"$http_header2"}"#;
    let header = "Header1: Here is \"header1\" with escape\r\n";
    let cases = [
        (LogEscape::Json, r#"{"my_header1":"Here is \"header1\" with escape", "my_header2":""}"#),
        (LogEscape::Default, r#"{"my_header1":"Here is \x22header1\x22 with escape", "my_header2":"-"}"#),
        (LogEscape::None, r#"{"my_header1":"Here is "header1" with escape", "my_header2":""}"#),
    ];
    for (escape, expected) in cases {
        let (proxy, log) = logging_proxy(table(&backend, format(template, escape))).await;
        assert_eq!(request(&proxy, "/", header).await, 200);
        assert_eq!(lines(&log, 1).await, [expected], "{escape:?}");
    }
}

#[tokio::test]
async fn skipped_urls_are_not_logged() {
    let backend = EchoBackend::start("web").await;
    let settings = AccessLogSettings {
        skip_urls: ["/healthz".into()].into(),
        ..format("$request_uri $status", LogEscape::Default)
    };
    let (proxy, log) = logging_proxy(table(&backend, settings)).await;
    assert_eq!(request(&proxy, "/healthz", "").await, 200);
    assert_eq!(request(&proxy, "/HEALTHZ", "").await, 200);
    // nginx's map compares the whole $request_uri, query included.
    assert_eq!(request(&proxy, "/healthz?full=1", "").await, 200);
    assert_eq!(request(&proxy, "/shop", "").await, 200);
    assert_eq!(lines(&log, 2).await, ["/healthz?full=1 200", "/shop 200"]);
}

#[tokio::test]
async fn disable_access_log_logs_nothing_whatever_the_route_says() {
    let backend = EchoBackend::start("web").await;
    let settings = AccessLogSettings { disabled: true, ..format("$request_uri $status", LogEscape::Default) };
    let (proxy, log) = logging_proxy(table(&backend, settings)).await;
    assert_eq!(request(&proxy, "/unseen", "").await, 200);
    // A second proxy on the same table without the key logs: the first had time to write.
    let logged = table(&backend, format("$request_uri $status", LogEscape::Default));
    let (witness, witness_log) = logging_proxy(logged).await;
    assert_eq!(request(&witness, "/seen", "").await, 200);
    assert_eq!(lines(&witness_log, 1).await, ["/seen 200"]);
    assert_eq!(request(&proxy, "/unseen-again", "").await, 200);
    assert_eq!(log.text(), "");
}

#[tokio::test]
async fn requests_no_route_takes_are_logged_only_when_asked() {
    let backend = EchoBackend::start("web").await;
    let template = "$host $status [$proxy_upstream_name] [$namespace]";
    let (proxy, log) = logging_proxy(table(&backend, format(template, LogEscape::Default))).await;
    assert_eq!(get(proxy.http, "nobody.example", "/").await.status, 404);
    assert_eq!(get(proxy.http, "shop.example", "/").await.status, 200);
    assert_eq!(lines(&log, 1).await, ["shop.example 200 [default-web-80] [default]"]);

    let settings = AccessLogSettings { default_backend: true, ..format(template, LogEscape::Default) };
    let (proxy, log) = logging_proxy(table(&backend, settings)).await;
    assert_eq!(get(proxy.http, "Nobody.Example:8080", "/").await.status, 404);
    assert_eq!(lines(&log, 1).await, ["nobody.example 404 [upstream-default-backend] []"]);
}

#[tokio::test]
async fn a_new_format_applies_from_the_next_table_on() {
    let backend = EchoBackend::start("web").await;
    let (proxy, log) = logging_proxy(table(&backend, format("first $status", LogEscape::Default))).await;
    assert_eq!(request(&proxy, "/", "").await, 200);
    lines(&log, 1).await;
    proxy.publish(table(&backend, format("second $request_method", LogEscape::Default)));
    assert_eq!(request(&proxy, "/", "").await, 200);
    assert_eq!(lines(&log, 2).await, ["first 200", "second GET"]);
}

#[tokio::test]
async fn tls_variables_name_what_the_handshake_agreed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let backend = EchoBackend::start("web").await;
    let template = "$scheme $https $ssl_protocol $ssl_cipher $ssl_server_name $server_protocol";
    let (proxy, log) = logging_proxy(table(&backend, format(template, LogEscape::Default))).await;
    assert_eq!(request(&proxy, "/", "").await, 200);

    let stream = tokio::net::TcpStream::connect(proxy.https).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("shop.example").unwrap();
    let mut tls = tls_client(&[b"http/1.1"]).connect(name, stream).await.unwrap();
    let suite = tls.get_ref().1.negotiated_cipher_suite().unwrap().suite();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: shop.example\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));

    // nginx names suites as OpenSSL does.
    let openssl_name = match suite {
        rustls::CipherSuite::TLS13_AES_128_GCM_SHA256 => "TLS_AES_128_GCM_SHA256",
        rustls::CipherSuite::TLS13_AES_256_GCM_SHA384 => "TLS_AES_256_GCM_SHA384",
        rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => "TLS_CHACHA20_POLY1305_SHA256",
        other => panic!("a TLS 1.3 suite expected, not {other:?}"),
    };
    let lines = lines(&log, 2).await;
    assert_eq!(lines[0], "http  - - - HTTP/1.1");
    assert_eq!(lines[1], format!("https on TLSv1.3 {openssl_name} shop.example HTTP/1.1"));
}

#[tokio::test]
async fn credentials_are_never_logged_but_the_basic_user_is() {
    let backend = EchoBackend::start("web").await;
    let (format, withheld) =
        LogFormat::parse("$remote_user|$http_authorization|$http_cookie|$cookie_sid", LogEscape::Default)
            .unwrap();
    assert_eq!(withheld.len(), 3);
    let settings = AccessLogSettings { format: Some(Arc::new(format)), ..AccessLogSettings::default() };
    let (proxy, log) = logging_proxy(table(&backend, settings)).await;
    // "alice:secret"
    let headers = "Authorization: Basic YWxpY2U6c2VjcmV0\r\nCookie: sid=s3cr3t\r\n";
    assert_eq!(request(&proxy, "/", headers).await, 200);
    assert_eq!(lines(&log, 1).await, ["alice|-|-|-"]);
}
