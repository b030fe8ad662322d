//! TCP and UDP services on real loopback sockets: forwarding, half-close, live endpoint
//! changes, ports opened and closed as tables are published, the PROXY protocol both ways, and
//! UDP sessions with their idle timeout and limit. Behaviour follows ingress-nginx's stream
//! servers (rootfs/etc/nginx/template/nginx.tmpl, TCPBackends and UDPBackends;
//! internal/ingress/controller/controller.go getStreamServices).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ostium_model::{
    EndpointKey, EndpointSet, GlobalSettings, NamespacedName, PortRef, StreamService, StreamSettings, Table,
    TableStore, TlsTable, Transport,
};
use ostium_proxy::{Proxy, ProxyConfig, ProxyMetrics, StreamLimits};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The stream supervisor on 127.0.0.1, fed tables by hand.
struct Streams {
    store: TableStore,
    published: watch::Sender<()>,
    task: JoinHandle<()>,
}

impl Streams {
    fn start(table: Table, limits: StreamLimits) -> Self {
        let store = TableStore::new(table);
        store.publish(store.current());
        let config = ProxyConfig { access_log: false, ..ProxyConfig::default() };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let proxy = Proxy::new(store.reader(), config, ProxyMetrics::default(), provider);
        let (published, changes) = watch::channel(());
        let ip = Ipv4Addr::LOCALHOST.into();
        let task =
            tokio::spawn(ostium_proxy::serve_streams(proxy, ip, limits, changes, std::future::pending()));
        Self { store, published, task }
    }

    fn publish(&self, table: Table) {
        self.store.publish(Arc::new(table));
        self.published.send_replace(());
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn table(streams: Vec<StreamService>) -> Table {
    table_with(streams, StreamSettings::default())
}

/// A table with these `proxy-stream-*` settings.
fn table_with(streams: Vec<StreamService>, settings: StreamSettings) -> Table {
    let mut table =
        ostium_model::TableBuilder::new(TlsTable::new(ostium_test_support::fallback_certificate()));
    for stream in streams {
        assert!(table.add_stream(stream));
    }
    table.set_global(Arc::new(GlobalSettings { stream: settings, ..GlobalSettings::default() }));
    table.build()
}

fn stream(protocol: Transport, port: u16, service: &str, endpoints: &[SocketAddr]) -> StreamService {
    let key = EndpointKey { service: NamespacedName::new("default", service), port: 80, protocol };
    StreamService {
        port,
        protocol,
        service: Arc::new(key.service.clone()),
        service_port: PortRef::Number(80),
        decode_proxy_protocol: false,
        send_proxy_protocol: false,
        endpoints: Arc::new(EndpointSet::new(key, endpoints.iter().copied())),
    }
}

/// A loopback port nothing listens on (TCP and UDP), for a table to name.
async fn free_port() -> u16 {
    loop {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = tcp.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).await.is_ok() {
            return port;
        }
    }
}

/// Connects once the port listens (the supervisor binds it on its own task).
async fn connect(port: u16) -> TcpStream {
    for _ in 0..200 {
        if let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await {
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("port {port} never listened");
}

/// Waits until the port refuses connections.
async fn until_refused(port: u16) {
    for _ in 0..200 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("port {port} still listens");
}

/// A TCP backend that answers each connection with `<name>:` and then everything it reads,
/// and ends its side when the client ends its own.
async fn tcp_echo(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                stream.write_all(format!("{name}:").as_bytes()).await.unwrap();
                let (mut read, mut write) = stream.split();
                tokio::io::copy(&mut read, &mut write).await.unwrap();
                write.shutdown().await.unwrap();
            });
        }
    });
    addr
}

/// A connection through the port whose endpoint has answered (its greeting `<name>:` read).
async fn established(port: u16) -> (TcpStream, String) {
    let mut stream = connect(port).await;
    let mut greeting = [0u8; 2];
    stream.read_exact(&mut greeting).await.unwrap();
    (stream, String::from_utf8_lossy(&greeting).into_owned())
}

/// Sends `message`, ends the client's side, and reads the whole answer (empty when the proxy
/// closed the connection, by a reset if `message` was left unread).
async fn exchange(mut stream: TcpStream, message: &str) -> String {
    let _ = stream.write_all(message.as_bytes()).await;
    let _ = stream.shutdown().await;
    let mut answer = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer)).await;
    match read.expect("an answer or the end of the connection") {
        Ok(_) => answer,
        Err(error) if error.kind() == std::io::ErrorKind::ConnectionReset => answer,
        Err(error) => panic!("{error}"),
    }
}

// --- TCP ---

#[tokio::test]
async fn tcp_connections_reach_the_endpoint_and_half_closes_pass_through() {
    let a = tcp_echo("a").await;
    let port = free_port().await;
    let _streams =
        Streams::start(table(vec![stream(Transport::Tcp, port, "a", &[a])]), StreamLimits::default());
    assert_eq!(exchange(connect(port).await, "ping").await, "a:ping");
}

#[tokio::test]
async fn an_endpoint_change_moves_new_connections_without_a_new_table() {
    let (a, b) = (tcp_echo("a").await, tcp_echo("b").await);
    let port = free_port().await;
    let streams =
        Streams::start(table(vec![stream(Transport::Tcp, port, "web", &[a])]), StreamLimits::default());
    let (open, greeting) = established(port).await;
    assert_eq!(greeting, "a:");
    let set = streams.store.current().stream(Transport::Tcp, port).unwrap().endpoints.clone();
    assert!(set.replace([b]));
    assert_eq!(exchange(connect(port).await, "x").await, "b:x");
    assert_eq!(exchange(open, "y").await, "y", "a connection keeps its endpoint");
}

#[tokio::test]
async fn unreachable_endpoints_are_skipped() {
    let a = tcp_echo("a").await;
    let refused = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let port = free_port().await;
    let _streams = Streams::start(
        table(vec![stream(Transport::Tcp, port, "web", &[refused, a])]),
        StreamLimits::default(),
    );
    for _ in 0..4 {
        assert_eq!(exchange(connect(port).await, "z").await, "a:z");
    }
}

#[tokio::test]
async fn a_new_table_opens_its_ports_and_closes_removed_ones_while_open_connections_finish() {
    let a = tcp_echo("a").await;
    let (first, second) = (free_port().await, free_port().await);
    let streams =
        Streams::start(table(vec![stream(Transport::Tcp, first, "a", &[a])]), StreamLimits::default());
    let (open, _) = established(first).await;

    streams.publish(table(vec![stream(Transport::Tcp, second, "a", &[a])]));
    assert_eq!(exchange(connect(second).await, "new").await, "a:new");
    until_refused(first).await;
    assert_eq!(exchange(open, "old").await, "old", "an open connection carries on");

    streams.publish(table(vec![stream(Transport::Tcp, first, "a", &[a])]));
    assert_eq!(exchange(connect(first).await, "again").await, "a:again");
    until_refused(second).await;
}

/// A TCP backend that answers with the first line it reads (a PROXY v1 header) and what
/// follows it.
async fn header_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut all = String::new();
                stream.read_line(&mut all).await.unwrap();
                stream.read_to_string(&mut all).await.unwrap();
                stream.get_mut().write_all(all.as_bytes()).await.unwrap();
            });
        }
    });
    addr
}

/// The second `PROXY`: ingress-nginx's template says `proxy_protocol on`, the text header.
#[tokio::test]
async fn the_second_proxy_sends_the_client_address_to_the_endpoint() {
    let backend = header_echo().await;
    let port = free_port().await;
    let service =
        StreamService { send_proxy_protocol: true, ..stream(Transport::Tcp, port, "web", &[backend]) };
    let _streams = Streams::start(table(vec![service]), StreamLimits::default());
    let client = connect(port).await;
    let local = client.local_addr().unwrap();
    let answer = exchange(client, "payload").await;
    assert_eq!(answer, format!("PROXY TCP4 127.0.0.1 127.0.0.1 {} {port}\r\npayload", local.port()));
}

#[tokio::test]
async fn the_first_proxy_reads_v1_and_v2_headers_and_passes_their_client_on() {
    let backend = header_echo().await;
    let port = free_port().await;
    let service = StreamService {
        decode_proxy_protocol: true,
        send_proxy_protocol: true,
        ..stream(Transport::Tcp, port, "web", &[backend])
    };
    let _streams = Streams::start(table(vec![service]), StreamLimits::default());

    let v1 = exchange(connect(port).await, "PROXY TCP4 192.0.2.7 198.51.100.1 40000 9000\r\nhello").await;
    assert_eq!(v1, "PROXY TCP4 192.0.2.7 198.51.100.1 40000 9000\r\nhello");

    let addresses: (SocketAddr, SocketAddr) =
        ("[2001:db8::7]:41000".parse().unwrap(), "[2001:db8::1]:53".parse().unwrap());
    let mut v2 = ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        addresses,
    )
    .build()
    .unwrap();
    v2.extend_from_slice(b"binary");
    let mut client = connect(port).await;
    client.write_all(&v2).await.unwrap();
    client.shutdown().await.unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).await.unwrap();
    assert_eq!(answer, "PROXY TCP6 2001:db8::7 2001:db8::1 41000 53\r\nbinary");
}

#[tokio::test]
async fn a_connection_without_the_expected_proxy_header_is_closed() {
    let backend = tcp_echo("a").await;
    let port = free_port().await;
    let service =
        StreamService { decode_proxy_protocol: true, ..stream(Transport::Tcp, port, "web", &[backend]) };
    let limits =
        StreamLimits { proxy_protocol_timeout: Duration::from_millis(200), ..StreamLimits::default() };
    let _streams = Streams::start(table(vec![service]), limits);
    assert_eq!(exchange(connect(port).await, "GET / HTTP/1.1\r\n\r\n").await, "");
    // Silence until the header timeout.
    let mut silent = connect(port).await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read_to_end(&mut answer)).await;
    assert!(matches!(read, Ok(Ok(0))), "{read:?}");
}

// --- UDP ---

/// A UDP backend that answers each datagram with `<name> <sender> <datagram>`.
async fn udp_echo(name: &'static str) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let reply = format!("{name} {from} {}", String::from_utf8_lossy(&buf[..n]));
            let _ = socket.send_to(reply.as_bytes(), from).await;
        }
    });
    addr
}

/// Sessions that only the idle timeout ends (nginx's default without ingress-nginx's
/// `proxy-stream-responses`).
fn lasting_sessions() -> StreamSettings {
    StreamSettings { responses: None, ..StreamSettings::default() }
}

/// The same, ending after 300 ms without a datagram.
fn short_sessions() -> StreamSettings {
    StreamSettings { timeout: Duration::from_millis(300), ..lasting_sessions() }
}

/// A client socket that retries its first datagram until the port answers.
async fn udp_client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// Sends `message` to the port and returns the reply as `(backend, sender the backend saw,
/// echoed message)`; retried while the port is not yet open.
async fn ask(client: &UdpSocket, port: u16, message: &str) -> (String, String, String) {
    let mut buf = [0u8; 2048];
    for _ in 0..100 {
        client.send_to(message.as_bytes(), ("127.0.0.1", port)).await.unwrap();
        if let Ok(Ok((n, from))) =
            tokio::time::timeout(Duration::from_millis(50), client.recv_from(&mut buf)).await
        {
            assert_eq!(from.port(), port, "the reply comes from the service port");
            let reply = String::from_utf8_lossy(&buf[..n]).into_owned();
            let mut parts = reply.splitn(3, ' ').map(str::to_owned);
            return (parts.next().unwrap(), parts.next().unwrap(), parts.next().unwrap_or_default());
        }
    }
    panic!("no reply on UDP port {port}");
}

#[tokio::test]
async fn udp_clients_get_their_own_replies_through_their_own_sessions() {
    let a = udp_echo("a").await;
    let port = free_port().await;
    let table = table_with(vec![stream(Transport::Udp, port, "dns", &[a])], lasting_sessions());
    let _streams = Streams::start(table, StreamLimits::default());
    let (one, two) = (udp_client().await, udp_client().await);
    let (backend, one_seen, echoed) = ask(&one, port, "from one").await;
    assert_eq!((backend.as_str(), echoed.as_str()), ("a", "from one"));
    let (_, two_seen, echoed) = ask(&two, port, "from two").await;
    assert_eq!(echoed, "from two");
    assert_ne!(one_seen, two_seen, "each client has its own upstream socket");
    let (_, again, echoed) = ask(&one, port, "one again").await;
    assert_eq!((again, echoed.as_str()), (one_seen, "one again"), "the session stays");
}

#[tokio::test]
async fn an_idle_udp_session_ends_and_the_next_datagram_starts_one_on_the_current_endpoints() {
    let (a, b) = (udp_echo("a").await, udp_echo("b").await);
    let port = free_port().await;
    let table = table_with(vec![stream(Transport::Udp, port, "dns", &[a])], short_sessions());
    let streams = Streams::start(table, StreamLimits::default());
    let client = udp_client().await;
    let (backend, first_seen, _) = ask(&client, port, "1").await;
    assert_eq!(backend, "a");

    let set = streams.store.current().stream(Transport::Udp, port).unwrap().endpoints.clone();
    assert!(set.replace([b]));
    let (backend, seen, _) = ask(&client, port, "2").await;
    assert_eq!((backend.as_str(), &seen), ("a", &first_seen), "a live session keeps its endpoint");

    tokio::time::sleep(Duration::from_millis(800)).await;
    let (backend, seen, _) = ask(&client, port, "3").await;
    assert_eq!(backend, "b", "a new session, on the current endpoints");
    assert_ne!(seen, first_seen);
}

#[tokio::test]
async fn udp_sessions_are_bounded() {
    let a = udp_echo("a").await;
    let port = free_port().await;
    let limits = StreamLimits { max_udp_sessions: 1, ..StreamLimits::default() };
    let table = table_with(vec![stream(Transport::Udp, port, "dns", &[a])], short_sessions());
    let _streams = Streams::start(table, limits);
    let (one, two) = (udp_client().await, udp_client().await);
    ask(&one, port, "first").await;
    two.send_to(b"second", ("127.0.0.1", port)).await.unwrap();
    let mut buf = [0u8; 64];
    let refused = tokio::time::timeout(Duration::from_millis(100), two.recv_from(&mut buf)).await;
    assert!(refused.is_err(), "no session for a second client while the first lasts");
    // Once the first session has gone idle, the second client gets one.
    let (_, _, echoed) = ask(&two, port, "second").await;
    assert_eq!(echoed, "second");
}

/// ingress-nginx's `proxy-stream-responses: 1` (nginx's `proxy_responses`): a session ends with
/// the reply to its datagram, so each query is balanced on its own.
#[tokio::test]
async fn by_default_a_reply_ends_the_session_and_the_next_datagram_is_balanced_again() {
    let (a, b) = (udp_echo("a").await, udp_echo("b").await);
    let port = free_port().await;
    let _streams =
        Streams::start(table(vec![stream(Transport::Udp, port, "dns", &[a, b])]), StreamLimits::default());
    let client = udp_client().await;
    let mut backends = Vec::new();
    for i in 0..4 {
        let (backend, _, echoed) = ask(&client, port, &i.to_string()).await;
        assert_eq!(echoed, i.to_string());
        backends.push(backend);
    }
    assert!(backends.windows(2).all(|w| w[0] != w[1]), "round robin per datagram: {backends:?}");
}

/// `proxy-stream-next-upstream: "false"`: an endpoint that refuses is not left for another.
#[tokio::test]
async fn without_next_upstream_a_refused_connection_is_not_tried_elsewhere() {
    let a = tcp_echo("a").await;
    let refused = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let port = free_port().await;
    let settings = StreamSettings { next_upstream: false, ..StreamSettings::default() };
    let _streams = Streams::start(
        table_with(vec![stream(Transport::Tcp, port, "web", &[refused, a])], settings),
        StreamLimits::default(),
    );
    let mut answers = Vec::new();
    for _ in 0..4 {
        answers.push(exchange(connect(port).await, "z").await);
    }
    assert!(answers.contains(&String::new()), "some connections closed: {answers:?}");
    assert!(answers.contains(&"a:z".to_owned()), "others served: {answers:?}");
}

/// `proxy-stream-timeout`: a TCP connection with no byte either way for that long is closed.
#[tokio::test]
async fn an_idle_tcp_connection_is_closed_after_the_stream_timeout() {
    let a = tcp_echo("a").await;
    let port = free_port().await;
    let settings = StreamSettings { timeout: Duration::from_millis(200), ..StreamSettings::default() };
    let _streams = Streams::start(
        table_with(vec![stream(Transport::Tcp, port, "a", &[a])], settings),
        StreamLimits::default(),
    );
    let (mut idle, _) = established(port).await;
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), idle.read_to_end(&mut rest)).await;
    assert!(matches!(read, Ok(Ok(0))), "closed without more bytes: {read:?}");
}

/// A port taken by another process when the table names it is opened once it is free, without
/// a new table.
#[tokio::test]
async fn a_port_that_cannot_be_bound_is_tried_again() {
    let a = tcp_echo("a").await;
    let squatter = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = squatter.local_addr().unwrap().port();
    let _streams =
        Streams::start(table(vec![stream(Transport::Tcp, port, "a", &[a])]), StreamLimits::default());
    // Let the supervisor fail once before the port is freed.
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(squatter);
    let mut answer = String::new();
    for _ in 0..300 {
        answer = exchange(connect(port).await, "late").await;
        if answer == "a:late" {
            break;
        }
    }
    assert_eq!(answer, "a:late");
}
