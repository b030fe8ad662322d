//! Request bodies pass through the proxy with flat memory: streamed (`proxy-request-buffering:
//! off`), and buffered (the default), where all but `client-body-buffer-size` goes to a temporary
//! file. Alone in its test binary, so the peak RSS measured is this test's.

mod support;

use ostium_model::Policy;
use ostium_test_support::{EchoBackend, echoed};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CHUNK: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(target_os = "linux"), ignore = "peak RSS is read from Linux's /proc")]
async fn large_uploads_pass_with_flat_memory_streamed_or_buffered() {
    let backend = EchoBackend::start("sink").await;
    for (request_buffering, upload) in [(false, 256 << 20), (true, 128 << 20)] {
        let unlimited = Policy { max_body_size: None, request_buffering, ..Policy::default() };
        let table = TableBuilder::new().site(None, "sink", backend.addr, unlimited).build();
        let proxy = Harness::start(table).await;
        // Resets the peak RSS, so each upload is measured alone.
        std::fs::write("/proc/self/clear_refs", "5").expect("/proc/self/clear_refs is writable");
        let before = status_kib("VmHWM");

        let answer = upload_chunked(proxy.http, upload).await;
        assert_eq!(answer.status, 200, "{}", answer.head);
        assert_eq!(echoed(&answer.body, "received"), Some(upload.to_string().as_str()));
        let grown_mib = (status_kib("VmHWM") - before) / 1024;
        assert!(
            grown_mib < 64,
            "peak RSS grew by {grown_mib} MiB for a {} MiB upload (request buffering {request_buffering})",
            upload >> 20
        );
    }
}

async fn upload_chunked(proxy: std::net::SocketAddr, size: u64) -> Answer {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let send = tokio::spawn(async move {
        writer
            .write_all(b"POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let chunk = vec![b'x'; CHUNK];
        let head = format!("{CHUNK:x}\r\n");
        for _ in 0..(size / CHUNK as u64) {
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
    parse(&response)
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}
