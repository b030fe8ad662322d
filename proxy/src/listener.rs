//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 on them, drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use rustls::ServerConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::framing::{AmbiguityFlag, FramingGuard};
use crate::{ConnectionInfo, Proxy};

/// Serves plain HTTP (HTTP/1.1, and HTTP/2 with prior knowledge) until `shutdown` completes,
/// then lets in-flight requests finish within the drain timeout.
pub async fn serve_http(proxy: Proxy, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    accept_loop(proxy, listener, shutdown, |proxy, builder, watcher, stream, remote| async move {
        let (stream, flag) = FramingGuard::new(stream);
        serve_connection(proxy, builder, watcher, stream, Some(flag), remote, false).await;
    })
    .await;
}

/// Serves HTTPS: TLS with certificates chosen by SNI, then HTTP/1.1 or HTTP/2 by ALPN.
pub async fn serve_https(
    proxy: Proxy,
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(tls);
    accept_loop(proxy, listener, shutdown, move |proxy, builder, watcher, stream, remote| {
        let acceptor = acceptor.clone();
        async move {
            let timeout = proxy.config().tls_handshake_timeout;
            let stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%remote, %error, "TLS handshake failed");
                    proxy.metrics().tls_handshake_error();
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "TLS handshake timed out");
                    proxy.metrics().tls_handshake_error();
                    return;
                }
            };
            let is_h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            if is_h2 {
                serve_connection(proxy, builder, watcher, stream, None, remote, true).await;
            } else {
                let (stream, flag) = FramingGuard::new(stream);
                serve_connection(proxy, builder, watcher, stream, Some(flag), remote, true).await;
            }
        }
    })
    .await;
}

async fn accept_loop<F, Fut>(
    proxy: Proxy,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    on_connection: F,
) where
    F: Fn(Proxy, auto::Builder<TokioExecutor>, Watcher, TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let builder = connection_builder(&proxy);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Usually out of file descriptors: pause rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(on_connection(proxy.clone(), builder.clone(), graceful.watcher(), stream, remote));
    }
    drop(listener);
    let drain = proxy.config().drain_timeout;
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(?drain, "drain deadline passed with requests still in flight");
    }
}

fn connection_builder(proxy: &Proxy) -> auto::Builder<TokioExecutor> {
    let config = proxy.config();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout)
        .max_buf_size(config.max_header_bytes);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(config.max_header_bytes as u32);
    builder
}

async fn serve_connection<S>(
    proxy: Proxy,
    builder: auto::Builder<TokioExecutor>,
    watcher: Watcher,
    stream: S,
    ambiguous_framing: Option<AmbiguityFlag>,
    remote: SocketAddr,
    is_tls: bool,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let _open = proxy.metrics().connection();
    // Rendered once per connection, shared by every request on it.
    let client_ip =
        HeaderValue::from_str(&remote.ip().to_string()).expect("an IP address is a valid header value");
    let info = Arc::new(ConnectionInfo { remote, is_tls, client_ip, ambiguous_framing });
    let service = service_fn(move |request| {
        let proxy = proxy.clone();
        let info = info.clone();
        async move { Ok::<_, Infallible>(proxy.handle(request, &info).await) }
    });
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).into_owned();
    if let Err(error) = watcher.watch(connection).await {
        tracing::debug!(%remote, error = %error, "connection ended with an error");
    }
}
