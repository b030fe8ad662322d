//! Upgraded connections (WebSocket): bytes copied both ways until both sides have finished, or
//! until nothing has moved either way for the idle timeout (`proxy-read-timeout`, as nginx
//! times out an idle WebSocket).

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Copies `client` ⇄ `upstream`. A side that ends its stream has the other's write half shut
/// down (a half-close passes through); the tunnel closes when both have ended, on an error, or
/// after `idle` with no byte either way.
pub(crate) async fn tunnel<C, U>(client: C, upstream: U, idle: Duration) -> std::io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream);
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let (mut client_done, mut upstream_done) = (false, false);
    while !(client_done && upstream_done) {
        tokio::select! {
            read = client_read.read(&mut up), if !client_done => match read? {
                0 => {
                    client_done = true;
                    upstream_write.shutdown().await?;
                }
                n => upstream_write.write_all(&up[..n]).await?,
            },
            read = upstream_read.read(&mut down), if !upstream_done => match read? {
                0 => {
                    upstream_done = true;
                    client_write.shutdown().await?;
                }
                n => client_write.write_all(&down[..n]).await?,
            },
            () = tokio::time::sleep(idle) => {
                tracing::debug!(?idle, "upgraded connection idle; closing it");
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bytes_flow_both_ways_and_half_closes_pass_through() {
        let (client, mut client_peer) = tokio::io::duplex(64);
        let (upstream, mut upstream_peer) = tokio::io::duplex(64);
        let tunnel = tokio::spawn(tunnel(client, upstream, Duration::from_secs(60)));
        client_peer.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        upstream_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        upstream_peer.write_all(b"pong").await.unwrap();
        client_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        client_peer.shutdown().await.unwrap();
        assert_eq!(upstream_peer.read(&mut buf).await.unwrap(), 0, "the client's end reached upstream");
        upstream_peer.write_all(b"late").await.unwrap();
        client_peer.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"late", "the other direction still flows");
        drop(upstream_peer);
        tunnel.await.unwrap().unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_tunnel_closes_after_the_timeout() {
        let (client, _client_peer) = tokio::io::duplex(64);
        let (upstream, _upstream_peer) = tokio::io::duplex(64);
        let started = tokio::time::Instant::now();
        tunnel(client, upstream, Duration::from_secs(60)).await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(60));
    }
}
