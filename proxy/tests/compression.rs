//! Response compression (`use-gzip`, `enable-brotli`), as ingress-nginx's nginx does it with
//! its template's `gzip_proxied any`, `gzip_vary on` and `gzip_http_version 1.1` (rootfs/etc/
//! nginx/template/nginx.tmpl), nginx's gzip filter (ngx_http_gzip_filter_module.c,
//! `ngx_http_gzip_ok`) and ngx_brotli's filter: decoded by curl and by the decoders of the
//! encoders the proxy uses; the answers it leaves alone; a streamed answer that keeps streaming.

mod support;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use ostium_model::{Compression, GlobalSettings, MediaTypes, Policy, UserAgents};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Text long enough for every default minimum length.
fn text() -> Vec<u8> {
    (0..200).flat_map(|i| format!("line {i} of a text worth compressing\n").into_bytes()).collect()
}

fn compression(gzip: bool, brotli: bool) -> GlobalSettings {
    let mut compression = Compression::default();
    compression.gzip.enabled = gzip;
    compression.brotli.enabled = brotli;
    GlobalSettings { compression, ..GlobalSettings::default() }
}

/// One answer of the scripted backend.
#[derive(Clone)]
struct Reply {
    status: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn text() -> Self {
        Self {
            status: "200 OK",
            headers: vec![("Content-Type", "text/plain; charset=utf-8".into())],
            body: text(),
        }
    }

    fn with(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }
}

/// A backend that answers each path with its [`Reply`] (`Content-Length` framing), one request
/// per connection.
async fn scripted_backend(replies: Vec<(&'static str, Reply)>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let replies = Arc::new(replies);
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else { return };
            let replies = replies.clone();
            tokio::spawn(async move {
                let head = read_head(&mut stream).await;
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
                let reply =
                    replies.iter().find(|(p, _)| *p == path).map_or_else(Reply::text, |(_, r)| r.clone());
                let mut out = format!("HTTP/1.1 {}\r\nConnection: close\r\n", reply.status);
                for (name, value) in &reply.headers {
                    out.push_str(&format!("{name}: {value}\r\n"));
                }
                let bodiless = reply.status.starts_with("304") || reply.status.starts_with("204");
                if !bodiless {
                    out.push_str(&format!("Content-Length: {}\r\n", reply.body.len()));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                if !bodiless && !head.starts_with("HEAD ") {
                    bytes.extend_from_slice(&reply.body);
                }
                let _ = stream.write_all(&bytes).await;
            });
        }
    });
    addr
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// The response head and the body as it came (still encoded), over HTTP/1.1 or 1.0.
async fn fetch(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    version: Version,
) -> (u16, HeaderMap, Vec<u8>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path).version(version);
    if !headers.iter().any(|(name, _)| *name == "host") {
        request = request.header("host", "a.example");
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes().to_vec();
    (parts.status.as_u16(), parts.headers, body)
}

async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, HeaderMap, Vec<u8>) {
    fetch(addr, Method::GET, path, headers, Version::HTTP_11).await
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    decoder.write_all(bytes).unwrap();
    decoder.finish().unwrap()
}

fn unbrotli(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    brotli::BrotliDecompress(&mut &bytes[..], &mut out).unwrap();
    out
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.to_str().unwrap())
}

async fn proxy_for(backend: SocketAddr, settings: GlobalSettings) -> Harness {
    Harness::start(TableBuilder::new().site(None, "web", backend, Policy::default()).global(settings).build())
        .await
}

/// curl with `--compressed` (as a browser: `deflate, gzip, br, zstd`), which decodes what it
/// gets: the response head and the decoded body.
async fn curl_compressed(addr: SocketAddr) -> (String, Vec<u8>) {
    let url = format!("http://{addr}/text");
    let output = tokio::task::spawn_blocking(move || {
        let head = tempfile::NamedTempFile::new().unwrap();
        let output = std::process::Command::new("curl")
            .args(["-sS", "--compressed", "-H", "Host: a.example", "-D"])
            .arg(head.path())
            .arg(url)
            .output()
            .expect("curl is installed");
        assert!(output.status.success(), "curl: {}", String::from_utf8_lossy(&output.stderr));
        (std::fs::read_to_string(head.path()).unwrap().to_ascii_lowercase(), output.stdout)
    });
    output.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_decodes_gzip_and_brotli() {
    let backend = scripted_backend(Vec::new()).await;
    let gzip = proxy_for(backend, compression(true, false)).await;
    let (head, body) = curl_compressed(gzip.http).await;
    assert!(head.contains("content-encoding: gzip\r\n"), "{head}");
    assert!(head.contains("vary: accept-encoding\r\n"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    assert_eq!(body, text());

    let both = proxy_for(backend, compression(true, true)).await;
    let (head, body) = curl_compressed(both.http).await;
    assert!(head.contains("content-encoding: br\r\n"), "brotli before gzip: {head}");
    assert_eq!(body, text());
}

/// ngx_brotli's filter runs before nginx's gzip filter: brotli when the client accepts it
/// (whatever the q-values say, as long as br's is not 0), gzip otherwise; the same answer
/// decoded either way.
#[tokio::test]
async fn brotli_is_chosen_over_gzip_when_both_are_accepted() {
    let backend = scripted_backend(Vec::new()).await;
    let proxy = proxy_for(backend, compression(true, true)).await;
    for (accept, coding) in [
        ("gzip;q=1, br;q=0.5", Some("br")),
        ("gzip, br;q=0", Some("gzip")),
        ("GZIP", Some("gzip")),
        ("br", Some("br")),
        ("identity", None),
        ("*", None),
    ] {
        let (status, headers, body) = get(proxy.http, "/text", &[("accept-encoding", accept)]).await;
        assert_eq!(status, 200);
        assert_eq!(header(&headers, "content-encoding"), coding, "{accept}");
        assert_eq!(header(&headers, "vary"), Some("Accept-Encoding"), "{accept}");
        let decoded = match coding {
            Some("br") => unbrotli(&body),
            Some(_) => gunzip(&body),
            None => body,
        };
        assert_eq!(decoded, text(), "{accept}");
    }
}

#[tokio::test]
async fn answers_nginx_would_not_compress_are_left_alone() {
    let backend = scripted_backend(vec![
        ("/encoded", Reply::text().with("Content-Encoding", "br")),
        ("/no-transform", Reply::text().with("Cache-Control", "public, no-transform")),
        ("/small", Reply { body: vec![b'x'; 255], ..Reply::text() }),
        ("/image", Reply { headers: vec![("Content-Type", "image/png".into())], ..Reply::text() }),
        ("/untyped", Reply { headers: Vec::new(), ..Reply::text() }),
        ("/not-modified", Reply { status: "304 Not Modified", ..Reply::text() }),
        ("/no-content", Reply { status: "204 No Content", ..Reply::text() }),
        ("/error", Reply { status: "500 Internal Server Error", ..Reply::text() }),
        ("/created", Reply { status: "201 Created", ..Reply::text() }),
        ("/grpc", Reply { headers: vec![("Content-Type", "application/grpc".into())], ..Reply::text() }),
    ])
    .await;
    let mut settings = compression(true, false);
    settings.compression.gzip.types = MediaTypes::parse("text/plain application/grpc").unwrap();
    let proxy = proxy_for(backend, settings).await;
    let gzip = [("accept-encoding", "gzip")];
    for path in [
        "/encoded",
        "/no-transform",
        "/small",
        "/image",
        "/untyped",
        "/not-modified",
        "/no-content",
        "/error",
        "/created",
        "/grpc",
    ] {
        let (_, headers, body) = get(proxy.http, path, &gzip).await;
        assert_ne!(header(&headers, "content-encoding"), Some("gzip"), "{path}");
        assert_eq!(header(&headers, "vary"), None, "{path}: nothing to vary on");
        if !matches!(path, "/not-modified" | "/no-content") {
            assert_eq!(body.len().to_string(), header(&headers, "content-length").unwrap(), "{path}");
        }
    }
    let (_, headers, body) = fetch(proxy.http, Method::HEAD, "/text", &gzip, Version::HTTP_11).await;
    assert_eq!(header(&headers, "content-encoding"), None, "HEAD");
    assert_eq!(header(&headers, "content-length"), Some(text().len().to_string().as_str()), "HEAD");
    assert!(body.is_empty());

    // Compressible, but not for this client: the answer still varies on Accept-Encoding.
    for (accept, version) in
        [("gzip;q=0", Version::HTTP_11), ("deflate", Version::HTTP_11), ("gzip", Version::HTTP_10)]
    {
        let (_, headers, body) =
            fetch(proxy.http, Method::GET, "/text", &[("accept-encoding", accept)], version).await;
        assert_eq!(header(&headers, "content-encoding"), None, "{accept} {version:?}");
        assert_eq!(header(&headers, "vary"), Some("Accept-Encoding"), "{accept} {version:?}");
        assert_eq!(body, text());
    }
}

/// `gzip-disable`: nginx's `gzip_disable` on `User-Agent`, ignoring case; brotli is not
/// concerned.
#[tokio::test]
async fn gzip_disable_spares_matching_user_agents() {
    let backend = scripted_backend(Vec::new()).await;
    let mut settings = compression(true, true);
    settings.compression.gzip_disable = Some(UserAgents::parse("oldbrowser/[0-3]").unwrap());
    let proxy = proxy_for(backend, settings).await;
    let old = [("accept-encoding", "gzip"), ("user-agent", "OldBrowser/2.1")];
    let (_, headers, _) = get(proxy.http, "/text", &old).await;
    assert_eq!(header(&headers, "content-encoding"), None);
    let (_, headers, _) =
        get(proxy.http, "/text", &[("accept-encoding", "gzip"), ("user-agent", "OldBrowser/4")]).await;
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    let (_, headers, _) = get(proxy.http, "/text", &[("accept-encoding", "br"), old[1]]).await;
    assert_eq!(header(&headers, "content-encoding"), Some("br"));

    // nginx's own keyword, with the user agents of ingress-nginx's test/e2e/settings/gzip.go.
    let mut settings = compression(true, false);
    settings.compression.gzip_disable = Some(UserAgents::parse("msie6").unwrap());
    let proxy = proxy_for(backend, settings).await;
    for (user_agent, coding) in [
        ("Mozilla/4.8 [en] (Windows NT 5.1; U)", Some("gzip")),
        ("Mozilla/45.0 (compatible; MSIE 6.0; Windows NT 5.1)", None),
    ] {
        let (_, headers, _) =
            get(proxy.http, "/text", &[("accept-encoding", "gzip"), ("user-agent", user_agent)]).await;
        assert_eq!(header(&headers, "content-encoding"), coding, "{user_agent}");
    }
}

/// The compressed answer: `Vary` merged, a strong `ETag` made weak, `Accept-Ranges` and
/// `Content-Length` gone (nginx's ngx_http_weak_etag, ngx_http_clear_accept_ranges,
/// ngx_http_clear_content_length); a 404 is compressed like a 200.
#[tokio::test]
async fn compressed_answers_vary_and_weaken_their_etag() {
    let tagged = Reply::text().with("Vary", "Origin").with("ETag", "\"v1\"").with("Accept-Ranges", "bytes");
    let backend = scripted_backend(vec![
        ("/tagged", tagged),
        ("/varied", Reply::text().with("Vary", "accept-encoding, origin").with("ETag", "W/\"v2\"")),
        ("/missing", Reply { status: "404 Not Found", ..Reply::text().with("ETag", "unquoted") }),
    ])
    .await;
    let proxy = proxy_for(backend, compression(true, false)).await;
    let gzip = [("accept-encoding", "gzip")];
    let (_, headers, body) = get(proxy.http, "/tagged", &gzip).await;
    assert_eq!(header(&headers, "content-encoding"), Some("gzip"));
    assert_eq!(headers.get_all("vary").iter().collect::<Vec<_>>(), ["Origin, Accept-Encoding"]);
    assert_eq!(header(&headers, "etag"), Some("W/\"v1\""));
    assert_eq!(header(&headers, "accept-ranges"), None);
    assert_eq!(header(&headers, "content-length"), None);
    assert_eq!(gunzip(&body), text());

    let (_, headers, _) = get(proxy.http, "/varied", &gzip).await;
    assert_eq!(header(&headers, "vary"), Some("accept-encoding, origin"));
    assert_eq!(header(&headers, "etag"), Some("W/\"v2\""));

    let (status, headers, body) = get(proxy.http, "/missing", &gzip).await;
    assert_eq!((status, header(&headers, "content-encoding")), (404, Some("gzip")));
    assert_eq!(header(&headers, "etag"), None, "a malformed ETag is removed");
    assert_eq!(gunzip(&body), text());
}

/// The proxy's own answers go through the same filters: its 404 for an unknown host, with a
/// brotli minimum below its length; under the default minimum (20 bytes) it is sent as it is.
#[tokio::test]
async fn the_proxy_s_own_answers_follow_the_same_rules() {
    let backend = scripted_backend(Vec::new()).await;
    let unknown = [("accept-encoding", "br"), ("host", "unknown.example")];
    for (min_length, coding) in [(10, Some("br")), (20, None)] {
        let mut settings = compression(false, true);
        settings.compression.brotli.min_length = min_length;
        let table = TableBuilder::new().site(Some("a.example"), "web", backend, Policy::default());
        let proxy = Harness::start(table.global(settings).build()).await;
        let (status, headers, body) = get(proxy.http, "/", &unknown).await;
        assert_eq!((status, header(&headers, "content-encoding")), (404, coding), "minimum {min_length}");
        let body = if coding.is_some() { unbrotli(&body) } else { body };
        assert_eq!(body, b"404 Not Found\n");
    }
}

/// A table without compression (the ConfigMap changed) leaves answers alone from the next
/// request on; with it, they are compressed again.
#[tokio::test]
async fn a_new_table_turns_compression_off_and_on() {
    let backend = scripted_backend(Vec::new()).await;
    let table = |gzip| {
        TableBuilder::new()
            .site(None, "web", backend, Policy::default())
            .global(compression(gzip, false))
            .build()
    };
    let proxy = Harness::start(table(true)).await;
    let gzip = [("accept-encoding", "gzip")];
    assert_eq!(header(&get(proxy.http, "/text", &gzip).await.1, "content-encoding"), Some("gzip"));
    proxy.publish(table(false));
    let (_, headers, body) = get(proxy.http, "/text", &gzip).await;
    assert_eq!((header(&headers, "content-encoding"), header(&headers, "vary")), (None, None));
    assert_eq!(body, text());
    proxy.publish(table(true));
    assert_eq!(header(&get(proxy.http, "/text", &gzip).await.1, "content-encoding"), Some("gzip"));
}

/// A backend that sends the first part of a chunked answer, waits for `go`, then sends the
/// rest.
async fn pausing_backend(first: &'static [u8], rest: &'static [u8], go: Arc<Notify>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let go = go.clone();
            tokio::spawn(async move {
                read_head(&mut stream).await;
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
                let chunk =
                    |data: &[u8]| [format!("{:x}\r\n", data.len()).as_bytes(), data, b"\r\n"].concat();
                stream.write_all(&[head.as_bytes(), &chunk(first)].concat()).await.unwrap();
                go.notified().await;
                stream.write_all(&[&chunk(rest)[..], b"0\r\n\r\n"].concat()).await.unwrap();
            });
        }
    });
    addr
}

/// What a decoder made of the compressed bytes so far.
enum Decoder {
    Gzip(Box<flate2::write::GzDecoder<Vec<u8>>>),
    Brotli(Box<brotli::DecompressorWriter<Vec<u8>>>),
}

impl Decoder {
    fn feed(&mut self, bytes: &[u8]) -> &[u8] {
        match self {
            Self::Gzip(gzip) => {
                gzip.write_all(bytes).unwrap();
                gzip.flush().unwrap();
                gzip.get_ref()
            }
            Self::Brotli(brotli) => {
                brotli.write_all(bytes).unwrap();
                brotli.flush().unwrap();
                brotli.get_ref()
            }
        }
    }
}

/// A streamed answer (server-sent events) keeps streaming through the compressor: the client
/// decodes the first event while the backend still holds back the rest.
#[tokio::test]
async fn a_streamed_answer_is_compressed_as_it_arrives() {
    const FIRST: &[u8] = b"data: the first event, sent before the backend pauses\n\n";
    const REST: &[u8] = b"data: the second event, sent once the first was decoded\n\n";
    for (accept, coding) in [("gzip", "gzip"), ("br", "br")] {
        let go = Arc::new(Notify::new());
        let backend = pausing_backend(FIRST, REST, go.clone()).await;
        let mut settings = compression(true, true);
        settings.compression.gzip.types = MediaTypes::parse("text/event-stream").unwrap();
        settings.compression.brotli.types = MediaTypes::parse("text/event-stream").unwrap();
        let proxy = proxy_for(backend, settings).await;

        let stream = TcpStream::connect(proxy.http).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        let request = Request::get("/events").header("host", "a.example").header("accept-encoding", accept);
        let response = sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
        assert_eq!(header(response.headers(), "content-encoding"), Some(coding));
        let mut body = response.into_body();
        let mut decoder = match coding {
            "gzip" => Decoder::Gzip(Box::new(flate2::write::GzDecoder::new(Vec::new()))),
            _ => Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(Vec::new(), 4096))),
        };
        let until_first = async {
            loop {
                let frame = body.frame().await.expect("the body goes on").unwrap();
                if decoder.feed(frame.data_ref().unwrap()) == FIRST {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(10), until_first)
            .await
            .unwrap_or_else(|_| panic!("{coding}: the first event was not decoded while the backend waited"));
        go.notify_one();
        while let Some(frame) = body.frame().await {
            decoder.feed(frame.unwrap().data_ref().unwrap());
        }
        assert_eq!(decoder.feed(b""), [FIRST, REST].concat(), "{coding}");
    }
}

/// HTTP/2 clients are answered the same way (nginx's `gzip_http_version 1.1` lets 2 through).
#[tokio::test]
async fn http2_clients_get_compressed_answers() {
    let backend = scripted_backend(Vec::new()).await;
    let proxy = proxy_for(backend, compression(true, false)).await;
    let (mut sender, _connection) = h2c(proxy.http).await;
    let request = Request::get("http://a.example/text").header("accept-encoding", "gzip");
    let response = sender.send_request(request.body(Empty::<Bytes>::new()).unwrap()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(header(response.headers(), "content-encoding"), Some("gzip"));
    assert_eq!(header(response.headers(), "content-length"), None);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(gunzip(&body), text());
}

/// An upgrade (101) is never compressed, whatever the types: the tunnel carries the bytes as
/// they are.
#[tokio::test]
async fn an_upgraded_connection_is_tunnelled_untouched() {
    let backend = ostium_test_support::EchoBackend::start("ws").await;
    let mut settings = compression(true, true);
    settings.compression.gzip.types = MediaTypes::Any;
    settings.compression.brotli.types = MediaTypes::Any;
    let proxy = proxy_for(backend.addr, settings).await;
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    stream
        .write_all(b"GET /chat HTTP/1.1\r\nHost: h\r\nAccept-Encoding: gzip, br\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut stream).await.to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(!head.contains("content-encoding") && !head.contains("vary"), "{head}");
    stream.write_all(b"raw bytes").await.unwrap();
    let mut echoed = [0u8; 9];
    tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut echoed)).await.unwrap().unwrap();
    assert_eq!(&echoed, b"raw bytes");
}

/// ingress-nginx's test/e2e/settings/gzip.go and brotli.go: `gzip-min-length: 100` and
/// `brotli-min-length: 24` with `application/octet-stream` listed; an answer of exactly the
/// minimum is compressed, one byte less is not.
#[tokio::test]
async fn minimum_lengths_are_inclusive() {
    let bytes = |length| Reply {
        headers: vec![("Content-Type", "application/octet-stream".into())],
        body: vec![b'b'; length],
        ..Reply::text()
    };
    let backend = scripted_backend(vec![
        ("/23", bytes(23)),
        ("/24", bytes(24)),
        ("/99", bytes(99)),
        ("/100", bytes(100)),
    ])
    .await;
    let mut settings = compression(true, true);
    settings.compression.gzip.min_length = 100;
    settings.compression.gzip.types = MediaTypes::parse("application/octet-stream").unwrap();
    settings.compression.brotli.min_length = 24;
    settings.compression.brotli.types = MediaTypes::parse("application/octet-stream").unwrap();
    let proxy = proxy_for(backend, settings).await;
    for (path, accept, coding) in [
        ("/99", "gzip", None),
        ("/100", "gzip", Some("gzip")),
        ("/23", "br", None),
        ("/24", "br", Some("br")),
    ] {
        let (_, headers, _) = get(proxy.http, path, &[("accept-encoding", accept)]).await;
        assert_eq!(header(&headers, "content-encoding"), coding, "{path}");
    }
}
