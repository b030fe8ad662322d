//! The proxy's workers: one thread for each CPU the process may use, each running a
//! single-threaded runtime that accepts on the proxy's listening sockets (shared by all, each
//! worker waiting on its own copy). A connection, its requests and the upstream exchanges they
//! start stay on the thread that accepted it: no work stealing, no wake-ups across cores. All
//! workers read the one routing table the controller swaps.

use std::sync::Arc;

use anyhow::Context;
use ostium_proxy::Proxy;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Starts the workers on `http` and `https`. The task returned ends when every worker has
/// stopped accepting (`stopped` turned true) and drained its connections.
pub(crate) fn start(
    proxy: Proxy,
    (http, https): (TcpListener, TcpListener),
    tls: Arc<rustls::ServerConfig>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let count = std::thread::available_parallelism().map_or(1, usize::from);
    let (http, https) = (http.into_std()?, https.into_std()?);
    let mut threads = Vec::with_capacity(count);
    for i in 0..count {
        let sockets = (http.try_clone()?, https.try_clone()?);
        let (proxy, tls, stopped) = (proxy.clone(), tls.clone(), stopped.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start a proxy worker's runtime")?;
        let thread = std::thread::Builder::new()
            .name(format!("ostium-worker-{i}"))
            .spawn(move || runtime.block_on(serve(proxy, sockets, tls, stopped)))
            .context("cannot start a proxy worker")?;
        threads.push(thread);
    }
    Ok(tokio::task::spawn_blocking(move || {
        for thread in threads {
            if thread.join().is_err() {
                tracing::error!("a proxy worker panicked");
            }
        }
    }))
}

/// One worker: both listeners until `stopped` turns true, then until their connections drain.
async fn serve(
    proxy: Proxy,
    (http, https): (std::net::TcpListener, std::net::TcpListener),
    tls: Arc<rustls::ServerConfig>,
    stopped: watch::Receiver<bool>,
) {
    // Registered with this worker's runtime, which then polls them.
    let (http, https) = match (TcpListener::from_std(http), TcpListener::from_std(https)) {
        (Ok(http), Ok(https)) => (http, https),
        (Err(error), _) | (_, Err(error)) => {
            tracing::error!(%error, "a proxy worker cannot take its listeners");
            return;
        }
    };
    let serving_http = ostium_proxy::serve_http(proxy.clone(), http, until(stopped.clone()));
    let serving_https = ostium_proxy::serve_https(proxy, https, tls, until(stopped));
    tokio::join!(serving_http, serving_https);
}

/// Resolves when `stopped` turns true.
pub(crate) async fn until(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}
