//! The first flight of a TLS connection, read before anything is decided: its ClientHello says
//! (by SNI) whether the connection is passed through undecrypted to the backend of an
//! `ssl-passthrough` host, or terminated here with the host's handshake settings. Either way
//! the bytes read are replayed, to the backend or to the TLS handshake.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ostium_model::{Endpoint, Target};
use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::net::TcpStream;

use crate::Proxy;

/// The most bytes read while waiting for a complete ClientHello: a ClientHello of 16 KiB
/// (several records, post-quantum key shares included) and its record headers.
const MAX_CLIENT_HELLO_BYTES: usize = 16 * 1024 + 256;
/// A spliced connection with no byte either way for this long is closed (nginx's stream
/// `proxy_timeout` default).
const PASSTHROUGH_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Endpoints tried, one after another, before a passed-through connection is given up.
const MAX_CONNECT_TRIES: usize = 3;

/// What the client sent first, and the server name its ClientHello asks for.
#[derive(Debug)]
pub(crate) struct ClientHello {
    /// Every byte read so far, to be replayed.
    pub(crate) bytes: Vec<u8>,
    /// The SNI name; `None` without one, or when the bytes are no ClientHello (the TLS
    /// handshake then refuses them itself).
    pub(crate) server_name: Option<String>,
}

/// Why no ClientHello could be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HelloError {
    #[error("the client closed the connection before its ClientHello was complete")]
    Closed,
    #[error("the ClientHello is larger than {MAX_CLIENT_HELLO_BYTES} bytes")]
    TooLarge,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads from `stream` until the ClientHello is complete (parsed by rustls), keeping every byte;
/// `read` are bytes of it read already (after a PROXY header). The caller bounds the time it
/// may take.
pub(crate) async fn read_client_hello(
    stream: &mut TcpStream,
    read: Vec<u8>,
) -> Result<ClientHello, HelloError> {
    let mut acceptor = Acceptor::default();
    let mut bytes = read;
    bytes.reserve(2048);
    let mut start = 0;
    loop {
        if start == bytes.len() {
            let room = MAX_CLIENT_HELLO_BYTES.saturating_sub(bytes.len());
            if room == 0 {
                return Err(HelloError::TooLarge);
            }
            if (&mut *stream).take(room as u64).read_buf(&mut bytes).await? == 0 {
                return Err(HelloError::Closed);
            }
        }
        let mut fresh = &bytes[start..];
        start = bytes.len();
        while !fresh.is_empty() {
            if !matches!(acceptor.read_tls(&mut fresh), Ok(n) if n > 0) {
                // Not a ClientHello rustls can read: let the handshake refuse it.
                return Ok(ClientHello { bytes, server_name: None });
            }
        }
        match acceptor.accept() {
            Ok(None) => {}
            Ok(Some(accepted)) => {
                let server_name = accepted.client_hello().server_name().map(str::to_owned);
                return Ok(ClientHello { bytes, server_name });
            }
            Err(_) => return Ok(ClientHello { bytes, server_name: None }),
        }
    }
}

/// Passes a TLS connection through to `target` undecrypted: the bytes read so far first, then
/// both ways until both sides end or the connection is idle.
pub(crate) async fn splice(
    proxy: &Proxy,
    target: &Target,
    hello: Vec<u8>,
    client: TcpStream,
    remote: SocketAddr,
) {
    let Some((upstream, endpoint)) = connect(proxy, target).await else {
        tracing::debug!(%remote, "no endpoint of the passthrough backend could be reached; closing");
        return;
    };
    if let Some(endpoint) = &endpoint {
        endpoint.start_request();
    }
    let result =
        crate::tunnel::tunnel(Replayed::new(hello, client), upstream, PASSTHROUGH_IDLE_TIMEOUT).await;
    if let Some(endpoint) = &endpoint {
        endpoint.finish_request();
    }
    if let Err(error) = result {
        tracing::debug!(%remote, %error, "passed-through connection ended with an error");
    }
}

/// A connection to the target: an endpoint (skipping those that refuse, up to
/// [`MAX_CONNECT_TRIES`]), or an external name.
async fn connect(proxy: &Proxy, target: &Target) -> Option<(TcpStream, Option<Arc<Endpoint>>)> {
    let timeout = proxy.config().connect_timeout;
    let set = match target {
        Target::Endpoints(set) | Target::ClusterIp(set) => set,
        Target::ExternalName(authority) => {
            let stream = tokio::time::timeout(timeout, TcpStream::connect(authority.as_str())).await;
            return Some((stream.ok()?.ok()?, None));
        }
        Target::Unavailable => return None,
    };
    let endpoints = set.load();
    let upstream = &proxy.inner.upstream;
    let mut tried = Vec::new();
    while tried.len() < MAX_CONNECT_TRIES {
        let endpoint = crate::upstream::pick(&endpoints, upstream.now_ms(), &tried)?;
        match tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                endpoint.record_success();
                return Some((stream, Some(endpoint)));
            }
            _ => {
                endpoint.record_failure(upstream.now_ms(), upstream.eject_for_ms());
                tried.push(endpoint.addr);
            }
        }
    }
    None
}

/// A stream whose first bytes, already read from it, are read again.
#[derive(Debug)]
pub(crate) struct Replayed<S> {
    head: Vec<u8>,
    position: usize,
    inner: S,
}

impl<S> Replayed<S> {
    pub(crate) fn new(head: Vec<u8>, inner: S) -> Self {
        Self { head, position: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replayed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.position < this.head.len() {
            let n = buf.remaining().min(this.head.len() - this.position);
            buf.put_slice(&this.head[this.position..this.position + n]);
            this.position += n;
            if this.position == this.head.len() {
                // Replayed in full: the memory is not needed for the connection's lifetime.
                this.head = Vec::new();
                this.position = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

write_through_to_inner!(Replayed);

#[cfg(test)]
mod tests {
    use tokio::io::AsyncWriteExt;

    use super::*;

    #[tokio::test]
    async fn the_bytes_read_first_are_read_again_then_the_rest() {
        let (inner, mut peer) = tokio::io::duplex(64);
        let mut replayed = Replayed::new(b"hello ".to_vec(), inner);
        peer.write_all(b"world").await.unwrap();
        drop(peer);
        let mut all = Vec::new();
        replayed.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"hello world");
    }

    async fn hello_from(bytes: Vec<u8>) -> Result<ClientHello, HelloError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(&bytes).await.unwrap();
            stream.shutdown().await.unwrap(); // nothing more comes
            stream
        });
        let (mut stream, _) = listener.accept().await.unwrap();
        let hello = read_client_hello(&mut stream, Vec::new()).await;
        drop(client.await.unwrap());
        hello
    }

    #[tokio::test]
    async fn bytes_that_are_no_client_hello_are_kept_for_the_handshake_to_refuse() {
        let hello = hello_from(b"GET / HTTP/1.1\r\n\r\n".to_vec()).await.unwrap();
        assert_eq!(hello.bytes, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(hello.server_name, None);
    }

    #[tokio::test]
    async fn a_client_hello_cut_short_is_an_error() {
        // A handshake record header announcing more than is sent, then the end of the stream.
        let error = hello_from(vec![22, 3, 1, 0, 200, 1, 0, 0]).await.unwrap_err();
        assert!(matches!(error, HelloError::Closed), "{error}");
    }

    #[tokio::test]
    async fn a_client_hello_beyond_the_limit_is_not_read_further() {
        // A ClientHello announcing 60000 bytes, sent in full records of zeros.
        let mut records = vec![22, 3, 1, 0x40, 0, 1, 0, 0xEA, 0x60];
        records.resize(5 + 16384, 0);
        records.extend([22, 3, 1, 0x10, 0]);
        records.resize(records.len() + 4096, 0);
        let error = hello_from(records).await.unwrap_err();
        assert!(matches!(error, HelloError::TooLarge), "{error}");
    }
}
