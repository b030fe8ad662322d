//! The `ostium` process: configuration, sources, the rebuild-and-publish step, the admin server,
//! and the wiring that runs them next to the proxy.

mod admin;
mod args;
mod events;
mod leader;
mod metrics;
mod publish;
mod rebuild;
pub mod source;
mod status;
mod store;

use std::sync::Arc;

use anyhow::Context;
use ostium_model::{Certificate, Table, TableStore, TlsTable};
use ostium_proxy::{Proxy, ProxyConfig};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

pub use args::{Args, Command, Config, ConfigError, LogFormat, StatusSource, Switch};
pub use metrics::Metrics;
pub use publish::{Build, Outcome, Publisher};

/// Runs ostium until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let options = translate_options(&config, self_signed_certificate(&provider)?, provider.clone());
    let store = TableStore::new(Table::new(TlsTable::new(options.fallback_certificate.clone())));
    let reader = store.reader();
    let metrics = Metrics::default();

    // The source starts first: a bad --manifests path must fail before any port is bound.
    let publisher = Publisher::new(store, options.clone(), metrics.clone());
    let (updates, updates_rx) = tokio::sync::mpsc::unbounded_channel();
    let (mut outputs, served) = rebuild::Outputs::new();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut leader = None;
    let store = match &config.manifests {
        Some(path) => {
            source::manifests::spawn(path.clone(), updates, reader.clone(), metrics.clone())?;
            store::Store::new(options, &[], false)
        }
        None => {
            let mut kube_config = kube::Config::infer()
                .await
                .context("no Kubernetes API to talk to (KUBECONFIG, ~/.kube/config, in-cluster); use --manifests PATH to run without one")?;
            // Our own loops retry with backoff and must see failures when they happen: a leader
            // has to notice it cannot renew, and an outage has to show in logs and metrics.
            kube_config.default_retry = false;
            let client =
                kube::Client::try_from(kube_config).context("cannot set up the Kubernetes client")?;
            let (fetch, fetches) = tokio::sync::mpsc::unbounded_channel();
            outputs.secret_fetches = Some(fetch);
            let namespace = config.watch_namespace.as_deref();
            let kinds =
                source::cluster::spawn(client.clone(), namespace, updates, fetches, metrics.clone()).await;
            leader =
                Some(spawn_leader_duties(&config, client, served, &mut outputs, &metrics, stopped.clone()));
            tracing::info!(namespace = namespace.unwrap_or("(all)"), "watching the cluster");
            store::Store::new(options, &kinds, true)
        }
    };
    tokio::spawn(rebuild::run(store, publisher, updates_rx, outputs));

    let bind = |addr: std::net::SocketAddr, flag: &'static str| async move {
        tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {flag} {addr}"))
    };
    let admin = bind(config.admin_addr, "--admin-addr").await?;
    let http = bind(config.http_addr, "--http-addr").await?;
    let https = bind(config.https_addr, "--https-addr").await?;
    let proxy_metrics = metrics.proxy();
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    // The admin server answers probes until the process exits, draining included.
    let admin_limits = config.connections.clone();
    tokio::spawn(admin::serve(admin, admin_limits, reader.clone(), metrics, std::future::pending()));

    let proxy_config = ProxyConfig {
        access_log: config.access_log,
        connections: config.connections.clone(),
        ..ProxyConfig::default()
    };
    let proxy = Proxy::new(reader.clone(), proxy_config, proxy_metrics, provider.clone());
    let http = tokio::spawn(ostium_proxy::serve_http(proxy.clone(), http, until_stopped(stopped.clone())));
    let tls = ostium_proxy::server_config(reader, provider);
    let https = tokio::spawn(ostium_proxy::serve_https(proxy, https, tls, until_stopped(stopped)));
    tracing::info!(http = %config.http_addr, https = %config.https_addr, admin = %config.admin_addr, "listening");

    shutdown_signal().await;
    tracing::info!("shutting down: no new connections, draining requests in flight");
    let _ = stop.send(true);
    if let Some(leader) = leader {
        // A leader hands its Lease over before draining ends.
        let _ = leader.await;
    }
    let _ = tokio::join!(http, https);
    tracing::info!("stopped");
    Ok(())
}

/// Cluster mode: the leader election, and the status writer and Event recorder that act only
/// while this replica leads. Returns the election task, which ends (releasing the Lease) once
/// `stop` turns true.
fn spawn_leader_duties(
    config: &Config,
    client: kube::Client,
    served: tokio::sync::watch::Receiver<Arc<[ostium_model::NamespacedName]>>,
    outputs: &mut rebuild::Outputs,
    metrics: &Metrics,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let identity = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_owned()))
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| format!("ostium-{}", std::process::id()));
    let namespace = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| client.default_namespace().to_owned());
    let (leads, leader) = tokio::sync::watch::channel(false);

    let (diagnostics, reports) = tokio::sync::mpsc::unbounded_channel();
    outputs.diagnostics = Some(diagnostics);
    tokio::spawn(events::run(client.clone(), identity.clone(), reports, leader.clone()));
    if let Some(source) = &config.status {
        let writer = status::StatusWriter::new(
            client.clone(),
            source.clone(),
            config.watch_namespace.clone(),
            metrics.clone(),
        );
        tokio::spawn(writer.run(leader, served));
    }
    tracing::info!(lease = %format!("{namespace}/{}", config.election_id), identity, "campaigning for leader");
    let elector =
        leader::Elector::new(kube::Api::namespaced(client, &namespace), &config.election_id, identity);
    tokio::spawn(elector.run(leads, metrics.clone(), stop))
}

/// `ostium check` and `ostium route`: translate manifests offline and report. Returns the
/// process exit code.
pub fn run_tool(config: &Config, command: &Command) -> anyhow::Result<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let options = translate_options(config, self_signed_certificate(&provider)?, provider);
    let manifests = match command {
        Command::Check { manifests } | Command::Route { manifests, .. } => manifests,
    };
    let objects = source::manifests::Manifests::new(manifests.clone()).load()?;
    let translation = ostium_translate::translate(&objects, &options);
    match command {
        Command::Check { .. } => {
            for diagnostic in &translation.diagnostics {
                println!("{diagnostic}");
            }
            let errors = translation
                .diagnostics
                .iter()
                .filter(|d| d.severity == ostium_translate::Severity::Error)
                .count();
            println!(
                "{} ingresses served, {} hosts, {errors} errors, {} warnings",
                translation.ingresses.len(),
                translation.table.host_count(),
                translation.diagnostics.len() - errors
            );
            Ok(if errors > 0 { 1 } else { 0 })
        }
        Command::Route { host, path, https, .. } => {
            print!("{}", translation.explain(host, path, *https));
            Ok(0)
        }
    }
}

/// Translation options from the configuration.
pub fn translate_options(
    config: &Config,
    fallback_certificate: Certificate,
    crypto_provider: Arc<CryptoProvider>,
) -> ostium_translate::Options {
    ostium_translate::Options {
        ingress_class: config.ingress_class.clone(),
        controller_name: config.controller_name.clone(),
        watch_ingress_without_class: config.watch_ingress_without_class,
        watch_namespace: config.watch_namespace.clone(),
        default_backend_service: config.default_backend_service.clone(),
        default_ssl_certificate: config.default_ssl_certificate.clone(),
        annotations_prefix: config.annotations_prefix.clone(),
        ..ostium_translate::Options::new(fallback_certificate, crypto_provider)
    }
}

/// The certificate served when nothing better is configured, made fresh at every start.
pub fn self_signed_certificate(provider: &CryptoProvider) -> anyhow::Result<Certificate> {
    let generated = rcgen::generate_simple_self_signed(vec!["ostium.invalid".to_owned()])
        .context("cannot generate the default certificate")?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
    let key = CertifiedKey::from_der(vec![generated.cert.der().clone()], key, provider)
        .context("cannot load the default certificate")?;
    Ok(Certificate { key: Arc::new(key), source: "self-signed".into() })
}

/// kube-client logs every failed API call as an error (ours say what failed, once per outage);
/// h2 logs some client-triggered events (an unsolicited PING ACK) as warnings, one per event, so a
/// client could flood the log: its errors are kept, the rest go.
const DEFAULT_LOG_FILTER: &str = "info,kube_client::client::builder=off,h2=error";

/// One subscriber for the process: JSON or text, filtered by `RUST_LOG` (default: `info`, without
/// kube-client's per-call errors and h2's client-triggered warnings). Panics are logged through it
/// as one escaped line.
pub fn init_logging(json: bool, filter: Option<&str>) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter.unwrap_or(DEFAULT_LOG_FILTER))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    install_panic_hook();
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
