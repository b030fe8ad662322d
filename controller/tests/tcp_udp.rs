//! The binary with `--tcp-services-configmap` and `--udp-services-configmap` in manifests mode:
//! the ConfigMaps come from the manifests, their ports listen on the HTTP listener's address,
//! a changed ConfigMap opens and closes ports live, and bad entries are reported (ingress-nginx's
//! docs/user-guide/exposing-tcp-udp-services.md).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

use ostium_e2e::{Ostium, eventually, free_addr, workspace_root};
use ostium_model::Transport;
use ostium_translate::{Objects, Options, translate};

const BIN: &str = env!("CARGO_BIN_EXE_ostium");

/// A TCP backend answering `echo:` and then what it reads, until the client ends its side.
fn tcp_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.write_all(b"echo:");
                let mut copy = stream.try_clone().unwrap();
                let _ = std::io::copy(&mut stream, &mut copy);
                let _ = copy.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    addr
}

/// A UDP backend answering each datagram with `udp:` and the datagram.
fn udp_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(&[b"udp:", &buf[..n]].concat(), from);
        }
    });
    addr
}

/// A port free for both TCP and UDP on 127.0.0.1 a moment ago.
fn free_port() -> u16 {
    loop {
        let port = free_addr().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn tcp_exchange(port: u16, message: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream.write_all(message.as_bytes()).ok()?;
    stream.shutdown(std::net::Shutdown::Write).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

fn udp_exchange(port: u16, message: &str) -> Option<String> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    socket.send_to(message.as_bytes(), ("127.0.0.1", port)).ok()?;
    let mut buf = [0u8; 1024];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// The manifests: Services `tcp` and `udp` at the two backends, and the two ConfigMaps.
fn write_manifests(dir: &Path, tcp: SocketAddr, udp: SocketAddr, tcp_data: &str, udp_data: &str) {
    let manifests = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: tcp}}\nspec: {{ports: [{{name: db, port: 5432}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: tcp-1, labels: {{kubernetes.io/service-name: tcp}}}}\naddressType: IPv4\nports: [{{name: db, port: {}}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n---\napiVersion: v1\nkind: Service\nmetadata: {{name: udp}}\nspec: {{ports: [{{name: dns, port: 53, protocol: UDP}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: udp-1, labels: {{kubernetes.io/service-name: udp}}}}\naddressType: IPv4\nports: [{{name: dns, port: {}, protocol: UDP}}]\nendpoints: [{{addresses: [\"127.0.0.1\"]}}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: tcp-services, namespace: ingress-nginx}}\ndata: {{{tcp_data}}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: udp-services, namespace: ingress-nginx}}\ndata: {{{udp_data}}}\n",
        tcp.port(),
        udp.port()
    );
    // Written whole, then renamed, so the watcher never reads half a file.
    std::fs::write(dir.join("all.tmp"), manifests).unwrap();
    std::fs::rename(dir.join("all.tmp"), dir.join("all.yaml")).unwrap();
}

#[test]
fn tcp_and_udp_services_from_manifests_follow_their_configmaps() {
    let (tcp, udp) = (tcp_echo(), udp_echo());
    let (first, second, dns) = (free_port(), free_port(), free_port());
    let dir = tempfile::tempdir().unwrap();
    let tcp_data = |port: u16| format!("\"{port}\": \"default/tcp:db\", \"ssh\": \"default/tcp:22\"");
    let udp_data = format!("\"{dns}\": \"default/udp:53\"");
    write_manifests(dir.path(), tcp, udp, &tcp_data(first), &udp_data);
    let flags = ["--tcp-services-configmap", "ingress-nginx/tcp-services"];
    let flags = [&flags[..], &["--udp-services-configmap", "ingress-nginx/udp-services"]].concat();
    let ostium = Ostium::start(BIN.as_ref(), dir.path(), &flags);

    let wait = Duration::from_secs(10);
    eventually(wait, "the TCP service answers", || {
        tcp_exchange(first, "hello").as_deref() == Some("echo:hello")
    });
    eventually(wait, "the UDP service answers", || {
        udp_exchange(dns, "query").as_deref() == Some("udp:query")
    });
    let log = ostium.log();
    assert!(log.contains("InvalidStreamService") && log.contains("`ssh` is not a TCP port number"), "{log}");

    write_manifests(dir.path(), tcp, udp, &tcp_data(second), &udp_data);
    eventually(wait, "the new port answers", || {
        tcp_exchange(second, "moved").as_deref() == Some("echo:moved")
    });
    eventually(wait, "the removed port is closed", || TcpStream::connect(("127.0.0.1", first)).is_err());
    assert_eq!(udp_exchange(dns, "still").as_deref(), Some("udp:still"));
}

#[test]
fn the_example_serves_a_tcp_and_a_udp_service_without_diagnostics() {
    let dir = workspace_root().join("examples/tcp-udp");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.retain(|path| path.extension().is_some_and(|e| e == "yaml"));
    files.sort();
    let yaml: Vec<String> = files.iter().map(|path| std::fs::read_to_string(path).unwrap()).collect();
    let objects = Objects::from_yaml(&yaml.join("\n---\n")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let options = Options {
        tcp_services_configmap: Some("ingress-nginx/tcp-services".parse().unwrap()),
        udp_services_configmap: Some("ingress-nginx/udp-services".parse().unwrap()),
        ..Options::new(ostium_test_support::fallback_certificate(), provider)
    };
    let translation = translate(&objects, &options);
    assert!(translation.diagnostics.is_empty(), "{:?}", translation.diagnostics);
    let tcp = translation.table.stream(Transport::Tcp, 9432).unwrap();
    assert_eq!(tcp.endpoints.addrs(), vec!["127.0.0.1:15432".parse::<SocketAddr>().unwrap()]);
    let udp = translation.table.stream(Transport::Udp, 9053).unwrap();
    assert_eq!(udp.endpoints.addrs(), vec!["127.0.0.1:15353".parse::<SocketAddr>().unwrap()]);
}
