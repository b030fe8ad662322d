//! The process wiring: the source, the rebuild loop, the listeners and, in a cluster, the
//! leader's duties, run until SIGTERM or Ctrl-C; the offline tools; logging.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use ostium_model::{NamespacedName, Table, TableReader, TableStore, TlsTable};
use ostium_proxy::{AccessLogOutput, Proxy, ProxyConfig, StreamLimits};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::args::{Command, Config};
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::store::{Store, Update};
use crate::{admin, events, leader, rebuild, source, status, workers};

/// Runs ostium until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let options = &config.translate;
    let tables = TableStore::new(Table::new(TlsTable::new(options.fallback_certificate.clone())));
    let reader = tables.reader();
    let metrics = Metrics::default();
    let publisher = Publisher::new(tables, options.clone(), metrics.clone());
    let published = publisher.subscribe();
    let (stop, stopped) = watch::channel(false);

    // The source starts first: a bad --manifests path must fail before any port is bound.
    let (updates, updates_rx) = mpsc::unbounded_channel();
    let (mut outputs, served) = rebuild::Outputs::new();
    let (store, leader) = match &config.manifests {
        Some(path) => {
            // No status writer reads which Ingresses are served: the list is not made at all.
            drop(served);
            source::manifests::spawn(path.clone(), updates, reader.clone(), metrics.clone())?;
            (Store::new(options.clone(), &[], false), None)
        }
        None => {
            let cluster = Cluster { config: &config, outputs: &mut outputs, metrics: &metrics };
            cluster.start(updates, served, stopped.clone()).await?
        }
    };
    tokio::spawn(rebuild::run(store, publisher, updates_rx, outputs));
    let proxy = serve(&config, reader, metrics, published, stopped).await?;

    shutdown_signal().await;
    tracing::info!("shutting down: no new connections, draining requests in flight");
    let _ = stop.send(true);
    if let Some(leader) = leader {
        // A leader hands its Lease over before draining ends.
        let _ = leader.await;
    }
    let _ = proxy.await;
    tracing::info!("stopped");
    Ok(())
}

/// Binds the listeners and serves: the admin server until the process exits (probes answer
/// while requests drain), the proxy's workers until `stopped` turns true (the task returned
/// ends when they have drained and their last access log lines are written).
async fn serve(
    config: &Config,
    reader: TableReader,
    metrics: Metrics,
    published: watch::Receiver<()>,
    stopped: watch::Receiver<bool>,
) -> anyhow::Result<JoinHandle<()>> {
    let bind = |addr: SocketAddr, flag: &'static str| async move {
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {flag} {addr}"))
    };
    let admin = bind(config.admin_addr, "--admin-addr").await?;
    let http = bind(config.http_addr, "--http-addr").await?;
    let https = bind(config.https_addr, "--https-addr").await?;
    let proxy_metrics = metrics.proxy();
    let admin_limits = config.connections.clone();
    tokio::spawn(admin::serve(admin, admin_limits, reader.clone(), metrics, std::future::pending()));

    let provider = config.translate.crypto_provider.clone();
    // `log-format-upstream` lines go to stdout from a thread of their own, as the log does.
    let (access_log_output, lines_written) = match config.access_log {
        true => {
            let (lines, written) = line_writer(std::io::stdout(), "access-log");
            (AccessLogOutput::writer(lines), Some(written))
        }
        false => (AccessLogOutput::default(), None),
    };
    let proxy_config = ProxyConfig {
        access_log: config.access_log,
        access_log_output,
        connections: config.connections.clone(),
        ..ProxyConfig::default()
    };
    let proxy = Proxy::new(reader.clone(), proxy_config, proxy_metrics, provider.clone());
    // TCP and UDP services listen on the HTTP listener's address.
    let streams = ostium_proxy::serve_streams(
        proxy.clone(),
        config.http_addr.ip(),
        StreamLimits::default(),
        published,
        workers::until(stopped.clone()),
    );
    tokio::spawn(streams);
    let tls = ostium_proxy::server_config(reader, provider);
    let workers = workers::start(proxy, (http, https), tls, stopped)?;
    tracing::info!(http = %config.http_addr, https = %config.https_addr, admin = %config.admin_addr, "listening");
    Ok(tokio::spawn(async move {
        let _ = workers.await;
        // Writes out the lines of the last requests (waiting up to a second).
        if let Some(written) = lines_written {
            let _ = tokio::task::spawn_blocking(move || drop(written)).await;
        }
    }))
}

/// Cluster mode: the watchers, and the duties of the leader.
struct Cluster<'a> {
    config: &'a Config,
    outputs: &'a mut rebuild::Outputs,
    metrics: &'a Metrics,
}

impl Cluster<'_> {
    /// Connects to the API server and starts the watchers and the leader election. Returns the
    /// store, waiting for every watched kind, and the election task (see [`Self::lead`]).
    async fn start(
        self,
        updates: mpsc::UnboundedSender<Update>,
        served: watch::Receiver<Arc<[NamespacedName]>>,
        stopped: watch::Receiver<bool>,
    ) -> anyhow::Result<(Store, Option<JoinHandle<()>>)> {
        let kube_config = kube::Config::infer()
            .await
            .context("no Kubernetes API to talk to (KUBECONFIG, ~/.kube/config, in-cluster); use --manifests PATH to run without one")?;
        let api_url = kube_config.cluster_url.clone();
        let client = source::cluster::client(&kube_config)
            .with_context(|| format!("cannot set up the client for the Kubernetes API at {api_url}"))?;
        let (fetch, fetches) = mpsc::unbounded_channel();
        self.outputs.fetches = Some(fetch);
        let namespace = self.config.translate.watch_namespace.as_deref();
        let metrics = self.metrics.clone();
        let kinds =
            source::cluster::spawn(client.clone(), &api_url, namespace, updates, fetches, metrics).await;
        tracing::info!(api = %api_url, namespace = namespace.unwrap_or("(all)"), "watching the cluster");
        let store = Store::new(self.config.translate.clone(), &kinds, true);
        Ok((store, Some(self.lead(client, served, stopped))))
    }

    /// The leader election, and the status writer and Event recorder that act only while this
    /// replica leads. Returns the election task, which ends (releasing the Lease) once `stop`
    /// turns true.
    fn lead(
        self,
        client: kube::Client,
        served: watch::Receiver<Arc<[NamespacedName]>>,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let config = self.config;
        let identity = config
            .pod_name
            .clone()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
            .filter(|name| !name.is_empty())
            .unwrap_or_else(|| format!("ostium-{}", std::process::id()));
        let namespace = config.pod_namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
        let (leads, leader) = watch::channel(false);

        let (diagnostics, reports) = mpsc::unbounded_channel();
        self.outputs.diagnostics = Some(diagnostics);
        tokio::spawn(events::run(client.clone(), identity.clone(), reports, leader.clone()));
        if let Some(source) = &config.status {
            let writer = status::StatusWriter::new(
                client.clone(),
                source.clone(),
                config.translate.watch_namespace.clone(),
                self.metrics.clone(),
            );
            tokio::spawn(writer.run(leader, served));
        }
        tracing::info!(lease = %format!("{namespace}/{}", config.election_id), identity, "campaigning for leader");
        let elector =
            leader::Elector::new(kube::Api::namespaced(client, &namespace), &config.election_id, identity);
        tokio::spawn(elector.run(leads, self.metrics.clone(), stop))
    }
}

/// `ostium check` (see [`crate::check`]) and `ostium route`: translate and report. Returns the
/// process exit code.
pub fn run_tool(config: &Config, command: &Command) -> anyhow::Result<u8> {
    match command {
        Command::Check { manifests, output, nginx_configmap } => {
            // The ConfigMap ostium is given is the one a migration carries over.
            let nginx_configmap = nginx_configmap.clone().or_else(|| config.translate.configmap.clone());
            let nginx_configmap = nginx_configmap
                .unwrap_or_else(|| NamespacedName::new("ingress-nginx", "ingress-nginx-controller"));
            crate::check::run(config, manifests.as_deref(), *output, &nginx_configmap)
        }
        Command::Route { manifests, host, path, https } => {
            let objects = source::manifests::Manifests::new(manifests.clone()).load()?;
            let translation = ostium_translate::translate(&objects, &config.translate);
            print!("{}", translation.explain(host, path, *https));
            Ok(0)
        }
    }
}

/// h2 logs some client-triggered events (an unsolicited PING ACK) as warnings, one per event, so a
/// client could flood the log: its errors are kept, the rest go.
const DEFAULT_LOG_FILTER: &str = "info,h2=error";

/// One subscriber for the process: JSON or text, filtered by `RUST_LOG` (default: `info`, without
/// h2's client-triggered warnings). Panics are logged through it as one escaped line.
///
/// Lines are written to stderr by a thread of their own, in batches (the access log writes one
/// for each request): the returned guard writes what is left when it is dropped (waiting up to
/// a second), so it is held until the process ends. A stderr that stops taking lines holds up
/// the loggers once [`QUEUED_LINES`] are queued, as a blocked write did before; lines still
/// queued when the process aborts are lost.
pub fn init_logging(json: bool, filter: Option<&str>) -> LogGuard {
    let filter = tracing_subscriber::EnvFilter::try_new(filter.unwrap_or(DEFAULT_LOG_FILTER))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a terminal: a log file or collector would get escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = line_writer(std::io::stderr(), "log");
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    if json {
        builder.json().event_format(crate::log_format::JsonLines::new()).init();
    } else {
        builder.init();
    }
    install_panic_hook();
    LogGuard { _writer: guard }
}

/// Log lines queued for their writer thread at most, before loggers wait for it: several
/// times what a pipe holds, and the queue's slots are allocated up front.
const QUEUED_LINES: usize = 1_024;

/// A thread that writes the lines given to the returned writer to `output`, buffered, flushing
/// whenever it has no more; dropping the guard writes out what is queued.
fn line_writer(
    output: impl std::io::Write + Send + 'static,
    thread: &str,
) -> (tracing_appender::non_blocking::NonBlocking, tracing_appender::non_blocking::WorkerGuard) {
    tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .buffered_lines_limit(QUEUED_LINES)
        .thread_name(thread)
        .finish(std::io::BufWriter::new(output))
}

/// Keeps the log's writer thread; dropping it writes out the lines still queued.
#[derive(Debug)]
#[must_use = "the log's last lines are written when it is dropped"]
pub struct LogGuard {
    _writer: tracing_appender::non_blocking::WorkerGuard,
}

/// Logs panics through the subscriber instead of the default hook's raw stderr text.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(log_panic));
}

/// A panic costs one connection (the task unwinds); it is logged as one event whose message is
/// Debug-escaped, so text copied from a request (a path, a header) cannot forge log lines.
fn log_panic(info: &std::panic::PanicHookInfo<'_>) {
    let payload = info
        .payload()
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    let location = info.location().map(|l| format!("{}:{}", l.file(), l.line()));
    tracing::error!(panic = ?payload, location = location.as_deref().unwrap_or("unknown"), "panic");
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM: {e}");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
