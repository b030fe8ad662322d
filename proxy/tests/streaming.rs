//! Request bodies stream through the proxy: a large upload passes with flat memory. Alone in
//! its test binary, so the peak RSS measured is this test's.

mod support;

use ostium_model::Policy;
use ostium_test_support::{EchoBackend, echoed};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPLOAD: u64 = 256 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_upload_streams_with_flat_memory() {
    let backend = EchoBackend::start("sink").await;
    let unlimited = Policy { max_body_size: None, ..Policy::default() };
    let table = TableBuilder::new().site(None, "sink", backend.addr, unlimited).build();
    let proxy = Harness::start(table).await;
    let measured = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = status_kib("VmHWM");

    let stream = TcpStream::connect(proxy.http).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let send = tokio::spawn(async move {
        writer
            .write_all(b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let chunk = vec![b'x'; CHUNK];
        let head = format!("{CHUNK:x}\r\n");
        for _ in 0..(UPLOAD / CHUNK as u64) {
            writer.write_all(head.as_bytes()).await.unwrap();
            writer.write_all(&chunk).await.unwrap();
            writer.write_all(b"\r\n").await.unwrap();
        }
        writer.write_all(b"0\r\n\r\n").await.unwrap();
        writer // kept open: a half-closed client counts as gone
    });
    let mut response = Vec::new();
    let writer = send.await.unwrap();
    reader.read_to_end(&mut response).await.unwrap();
    drop(writer);

    let answer = parse(&response);
    assert_eq!(answer.status, 200, "{}", answer.head);
    assert_eq!(echoed(&answer.body, "received"), Some(UPLOAD.to_string().as_str()));
    if measured {
        let grown_mib = (status_kib("VmHWM") - before) / 1024;
        assert!(grown_mib < 64, "peak RSS grew by {grown_mib} MiB for a {} MiB upload", UPLOAD >> 20);
    }
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
