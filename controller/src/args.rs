//! Command-line flags (exactly those of CONTRACT.md) and the `Config` they become.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use ostium_model::{Certificate, NamespacedName};
use ostium_proxy::ConnectionLimits;
use ostium_translate::Options;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// Kubernetes ingress controller and reverse proxy in one process.
///
/// Every flag is global: it may come before or after a subcommand.
#[derive(Debug, Parser)]
#[command(name = "ostium", version, about)]
pub struct Args {
    /// Standalone mode: read Kubernetes objects (Ingress, IngressClass, Service, EndpointSlice,
    /// Endpoints, Secret) from a YAML file or a directory of YAML files (multi-document allowed),
    /// and re-read them when they change. Without it, ostium talks to the cluster named by
    /// KUBECONFIG, ~/.kube/config, or the in-cluster service account.
    #[arg(long, global = true, value_name = "PATH")]
    manifests: Option<PathBuf>,

    /// Plain HTTP listener.
    #[arg(long, global = true, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,

    /// TLS listener.
    #[arg(long, global = true, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    https_addr: SocketAddr,

    /// /healthz /readyz /metrics.
    #[arg(long, global = true, value_name = "ADDR", default_value = "0.0.0.0:10254")]
    admin_addr: SocketAddr,

    /// IngressClass name this instance serves (also the value of the legacy
    /// kubernetes.io/ingress.class annotation it accepts).
    #[arg(long, global = true, value_name = "NAME", default_value = Options::DEFAULT_INGRESS_CLASS)]
    ingress_class: String,

    /// Value of IngressClass.spec.controller it owns.
    #[arg(long, global = true, value_name = "NAME", default_value = Options::DEFAULT_CONTROLLER_NAME)]
    controller_name: String,

    /// Only this namespace (default: all).
    #[arg(long, global = true, value_name = "NS")]
    watch_namespace: Option<String>,

    /// Also serve Ingresses that name no class.
    #[arg(long, global = true)]
    watch_ingress_without_class: bool,

    /// Where unmatched requests go (default: built-in 404).
    #[arg(long, global = true, value_name = "NS/NAME")]
    default_backend_service: Option<NamespacedName>,

    /// Certificate for TLS hosts with no matching secret.
    #[arg(long, global = true, value_name = "NS/NAME")]
    default_ssl_certificate: Option<NamespacedName>,

    /// Annotation prefix.
    #[arg(long, global = true, value_name = "PREFIX", default_value = Options::DEFAULT_ANNOTATIONS_PREFIX)]
    annotations_prefix: String,

    /// Honour the ssl-passthrough annotation (TLS forwarded by SNI, not terminated).
    #[arg(long, global = true)]
    enable_ssl_passthrough: bool,

    /// Global settings: ingress-nginx's ConfigMap keys, same names, values and defaults (in
    /// --manifests mode: a ConfigMap among the manifests). Applied live; a bad value is reported
    /// and keeps its default.
    #[arg(long, global = true, value_name = "NS/NAME")]
    configmap: Option<NamespacedName>,

    /// Raw TCP forwarding: data "<port>": "<ns>/<svc>:<port>[:PROXY][:PROXY]" (ingress-nginx's
    /// format; in --manifests mode: a ConfigMap among the manifests). Applied live.
    #[arg(long, global = true, value_name = "NS/NAME")]
    tcp_services_configmap: Option<NamespacedName>,

    /// The same for UDP (ingress-nginx's format).
    #[arg(long, global = true, value_name = "NS/NAME")]
    udp_services_configmap: Option<NamespacedName>,

    /// Service whose address is written into Ingress status.loadBalancer.
    #[arg(long, global = true, value_name = "NS/NAME", conflicts_with = "publish_status_address")]
    publish_service: Option<NamespacedName>,

    /// Address written into Ingress status.loadBalancer.
    #[arg(long, global = true, value_name = "ADDR")]
    publish_status_address: Option<String>,

    /// Cluster mode: name of the Lease (in the controller's namespace) that elects the replica
    /// writing Ingress status and Events.
    #[arg(long, global = true, value_name = "NAME", default_value = "ostium-leader")]
    election_id: String,

    /// Access and event log format (default: text on a TTY, json otherwise).
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,

    /// One log line per finished request.
    #[arg(long, global = true, value_enum, value_name = "on|off", default_value = "on")]
    access_log: Switch,

    /// From accept (TLS handshake and protocol detection included) to a complete request head.
    /// D: a number of seconds or a duration with unit: 500ms, 2s, 3m.
    #[arg(long, global = true, value_name = "D", default_value = "60s")]
    client_header_timeout: TimeSpan,

    /// Between two reads of a request body (408 when it runs out).
    #[arg(long, global = true, value_name = "D", default_value = "60s")]
    client_body_timeout: TimeSpan,

    /// Idle HTTP/1 keep-alive connection.
    #[arg(long, global = true, value_name = "D", default_value = "75s")]
    keepalive_timeout: TimeSpan,

    /// Idle HTTP/2 connection, no open stream.
    #[arg(long, global = true, value_name = "D", default_value = "3m")]
    http2_idle_timeout: TimeSpan,

    /// Open client connections per listener before new ones are refused (default: a quarter
    /// of the process's file-descriptor limit).
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,

    /// Cluster mode: the identity this replica campaigns and records Events as (default: the
    /// host name). Set from the Pod by the Deployment.
    #[arg(long, global = true, env = "POD_NAME", hide = true)]
    pod_name: Option<String>,

    /// Cluster mode: the namespace of the leader Lease (default: the kubeconfig's).
    #[arg(long, global = true, env = "POD_NAMESPACE", hide = true)]
    pod_namespace: Option<String>,

    #[command(subcommand)]
    command: Option<Command>,
}

/// Offline tools that read manifests the way the controller does (the flags above that shape
/// translation — class, controller name, annotation prefix, defaults — apply to them too).
#[derive(Clone, Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// The migration report: per Ingress, what ostium does differently from ingress-nginx.
    /// Reads a YAML file or directory, or without one (and without --manifests) the cluster of
    /// the current kubeconfig context, read-only. Exits 1 if an Ingress it serves has an
    /// error, or if no Ingress is served at all.
    Check {
        /// A YAML file or a directory of YAML files (default: --manifests, else the cluster).
        #[arg(value_name = "PATH")]
        manifests: Option<PathBuf>,
        /// The report as text or as one JSON object (shape in docs/cli.md).
        #[arg(long, value_enum, value_name = "FORMAT", default_value = "text")]
        output: OutputFormat,
        /// The ingress-nginx ConfigMap whose keys are listed (default: --configmap, else
        /// ingress-nginx/ingress-nginx-controller).
        #[arg(long, value_name = "NS/NAME")]
        nginx_configmap: Option<NamespacedName>,
    },
    /// Explain which rule, backend and policies a request would get.
    Route {
        /// A YAML file or a directory of YAML files.
        #[arg(value_name = "PATH")]
        manifests: PathBuf,
        /// The request's Host.
        #[arg(long, value_name = "H")]
        host: String,
        /// The request's path.
        #[arg(long, value_name = "P", default_value = "/")]
        path: String,
        /// The request arrives over TLS.
        #[arg(long)]
        https: bool,
    },
}

/// A positive duration: seconds (`60`) or a number with a unit (`500ms`, `2s`, `3m`, `1h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct TimeSpan(pub(crate) Duration);

impl FromStr for TimeSpan {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(digits);
        let number: u64 =
            number.parse().map_err(|_| format!("`{text}` is not a duration such as 60, 500ms, 2s or 3m"))?;
        let duration = match unit {
            "ms" => Duration::from_millis(number),
            "" | "s" => Duration::from_secs(number),
            "m" => Duration::from_secs(number.saturating_mul(60)),
            "h" => Duration::from_secs(number.saturating_mul(3600)),
            _ => return Err(format!("`{text}`: the unit must be ms, s, m or h")),
        };
        if duration.is_zero() {
            return Err(format!("`{text}` must be longer than zero"));
        }
        Ok(Self(duration))
    }
}

/// `ostium check --output`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Switch {
    On,
    Off,
}

/// Where `status.loadBalancer` addresses come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StatusSource {
    Service(NamespacedName),
    Address(String),
}

/// The validated configuration the process runs with.
#[derive(Clone, Debug)]
pub struct Config {
    pub manifests: Option<PathBuf>,
    pub(crate) http_addr: SocketAddr,
    pub(crate) https_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// What translation needs, with the process's crypto provider (the one every TLS user of the
    /// process shares) and the certificate served when nothing better is configured.
    pub(crate) translate: Options,
    pub(crate) status: Option<StatusSource>,
    pub(crate) election_id: String,
    pub(crate) pod_name: Option<String>,
    pub(crate) pod_namespace: Option<String>,
    pub log_format: Option<LogFormat>,
    pub(crate) access_log: bool,
    /// Client connection timeouts and limits.
    pub(crate) connections: ConnectionLimits,
    pub command: Option<Command>,
}

/// A flag combination that parses but cannot run.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{0} must not be empty")]
    Empty(&'static str),
    #[error("--http-addr, --https-addr and --admin-addr must differ")]
    SameAddress,
    #[error("cannot make the default certificate: {0}")]
    DefaultCertificate(String),
}

impl TryFrom<Args> for Config {
    type Error = ConfigError;

    fn try_from(args: Args) -> Result<Self, Self::Error> {
        args.check()?;
        // Destructured so that a new flag cannot be dropped silently.
        let Args {
            manifests,
            http_addr,
            https_addr,
            admin_addr,
            ingress_class,
            controller_name,
            watch_namespace,
            watch_ingress_without_class,
            default_backend_service,
            default_ssl_certificate,
            annotations_prefix,
            enable_ssl_passthrough,
            configmap,
            tcp_services_configmap,
            udp_services_configmap,
            publish_service,
            publish_status_address,
            election_id,
            log_format,
            access_log,
            client_header_timeout,
            client_body_timeout,
            keepalive_timeout,
            http2_idle_timeout,
            max_connections,
            pod_name,
            pod_namespace,
            command,
        } = args;
        let status = match (publish_service, publish_status_address) {
            (Some(service), _) => Some(StatusSource::Service(service)),
            (None, Some(address)) => Some(StatusSource::Address(address)),
            (None, None) => None,
        };
        let crypto_provider = Arc::new(rustls::crypto::ring::default_provider());
        // Every field named, so that a new translation option cannot be left at a default here.
        let translate = Options {
            ingress_class,
            controller_name,
            watch_ingress_without_class,
            watch_namespace: watch_namespace.filter(|ns| !ns.is_empty()),
            default_backend_service,
            default_ssl_certificate,
            fallback_certificate: self_signed_certificate(&crypto_provider)?,
            annotations_prefix,
            configmap,
            enable_ssl_passthrough,
            tcp_services_configmap,
            udp_services_configmap,
            reserved_ports: vec![http_addr.port(), https_addr.port(), admin_addr.port()],
            crypto_provider,
            rate_limit_zones: Default::default(),
        };
        Ok(Self {
            manifests,
            http_addr,
            https_addr,
            admin_addr,
            translate,
            status,
            election_id,
            pod_name,
            pod_namespace,
            log_format,
            access_log: access_log == Switch::On,
            connections: ConnectionLimits {
                client_header_timeout: client_header_timeout.0,
                client_body_timeout: client_body_timeout.0,
                keepalive_timeout: keepalive_timeout.0,
                http2_idle_timeout: http2_idle_timeout.0,
                max_connections: max_connections
                    .map_or_else(ostium_proxy::default_max_connections, |n| n as usize),
                ..ConnectionLimits::default()
            },
            command,
        })
    }
}

impl Args {
    /// Refuses flag combinations that parse but cannot run.
    fn check(&self) -> Result<(), ConfigError> {
        for (flag, value) in [
            ("ingress-class", &self.ingress_class),
            ("controller-name", &self.controller_name),
            ("annotations-prefix", &self.annotations_prefix),
            ("election-id", &self.election_id),
        ] {
            if value.is_empty() {
                return Err(ConfigError::Empty(flag));
            }
        }
        let (http, https, admin) = (self.http_addr, self.https_addr, self.admin_addr);
        if http == https || http == admin || https == admin {
            return Err(ConfigError::SameAddress);
        }
        Ok(())
    }
}

/// The certificate served when nothing better is configured, made fresh at every start.
fn self_signed_certificate(provider: &CryptoProvider) -> Result<Certificate, ConfigError> {
    let failed = |e: &dyn std::fmt::Display| ConfigError::DefaultCertificate(e.to_string());
    let generated =
        rcgen::generate_simple_self_signed(vec!["ostium.invalid".to_owned()]).map_err(|e| failed(&e))?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der()));
    let key =
        CertifiedKey::from_der(vec![generated.cert.der().clone()], key, provider).map_err(|e| failed(&e))?;
    Ok(Certificate { key: Arc::new(key), source: "self-signed".into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let args = Args::try_parse_from(std::iter::once("ostium").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        Config::try_from(args).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_those_of_the_contract() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.http_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.https_addr, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(c.admin_addr, "0.0.0.0:10254".parse().unwrap());
        assert_eq!(c.translate.ingress_class, "ostium");
        assert_eq!(c.translate.controller_name, "ostium.dev/ingress-controller");
        assert_eq!(c.translate.annotations_prefix, "nginx.ingress.kubernetes.io");
        assert!(!c.translate.enable_ssl_passthrough);
        assert!(c.access_log);
        assert!(c.manifests.is_none() && c.translate.watch_namespace.is_none() && c.status.is_none());
        assert_eq!(c.connections.client_header_timeout, Duration::from_secs(60));
        assert_eq!(c.connections.client_body_timeout, Duration::from_secs(60));
        assert_eq!(c.connections.keepalive_timeout, Duration::from_secs(75));
        assert_eq!(c.connections.http2_idle_timeout, Duration::from_secs(180));
        assert_eq!(c.connections.max_connections, ostium_proxy::default_max_connections());
        // The flags' defaults and the proxy's own (used by embedders and tests) are the same.
        let proxy = ConnectionLimits::default();
        let flags = &c.connections;
        assert_eq!(
            (flags.client_header_timeout, flags.client_body_timeout, flags.keepalive_timeout),
            (proxy.client_header_timeout, proxy.client_body_timeout, proxy.keepalive_timeout)
        );
        assert_eq!(flags.http2_idle_timeout, proxy.http2_idle_timeout);
    }

    #[test]
    fn durations_take_seconds_or_a_unit() {
        let c = parse(&[
            "--client-header-timeout",
            "500ms",
            "--client-body-timeout",
            "7",
            "--keepalive-timeout",
            "2s",
            "--http2-idle-timeout",
            "3m",
            "--max-connections",
            "100",
        ])
        .unwrap();
        assert_eq!(c.connections.client_header_timeout, Duration::from_millis(500));
        assert_eq!(c.connections.client_body_timeout, Duration::from_secs(7));
        assert_eq!(c.connections.keepalive_timeout, Duration::from_secs(2));
        assert_eq!(c.connections.http2_idle_timeout, Duration::from_secs(180));
        assert_eq!(c.connections.max_connections, 100);
        for bad in ["0", "0s", "1.5s", "10x", "", "-1", "s"] {
            assert!(parse(&["--keepalive-timeout", bad]).is_err(), "{bad}");
        }
        assert!(parse(&["--max-connections", "0"]).is_err());
    }

    #[test]
    fn every_flag_parses() {
        let c = parse(&[
            "--manifests",
            "dir",
            "--http-addr",
            "127.0.0.1:1",
            "--https-addr",
            "127.0.0.1:2",
            "--admin-addr",
            "127.0.0.1:3",
            "--ingress-class",
            "nginx",
            "--controller-name",
            "k8s.io/ingress-nginx",
            "--watch-namespace",
            "apps",
            "--watch-ingress-without-class",
            "--default-backend-service",
            "ingress/default",
            "--default-ssl-certificate",
            "ingress/cert",
            "--annotations-prefix",
            "x.io",
            "--enable-ssl-passthrough",
            "--configmap",
            "ingress/ostium",
            "--publish-status-address",
            "10.0.0.1",
            "--log-format",
            "json",
            "--access-log",
            "off",
        ])
        .unwrap();
        assert_eq!(c.manifests, Some(PathBuf::from("dir")));
        assert_eq!(c.translate.default_backend_service, Some(NamespacedName::new("ingress", "default")));
        assert_eq!(c.status, Some(StatusSource::Address("10.0.0.1".into())));
        assert_eq!(c.log_format, Some(LogFormat::Json));
        assert!(c.translate.watch_ingress_without_class && !c.access_log);
        assert!(c.translate.enable_ssl_passthrough);
        assert_eq!(c.translate.configmap, Some(NamespacedName::new("ingress", "ostium")));
    }

    #[test]
    fn check_and_route_take_flags_before_them() {
        let c = parse(&[
            "--ingress-class",
            "nginx",
            "route",
            "dir",
            "--host",
            "a.example.com",
            "--path",
            "/x",
            "--https",
        ])
        .unwrap();
        assert_eq!(c.translate.ingress_class, "nginx");
        assert_eq!(
            c.command,
            Some(Command::Route {
                manifests: "dir".into(),
                host: "a.example.com".into(),
                path: "/x".into(),
                https: true
            })
        );
        assert_eq!(
            parse(&["check", "dir"]).unwrap().command,
            Some(Command::Check {
                manifests: Some("dir".into()),
                output: OutputFormat::Text,
                nginx_configmap: None,
            })
        );
    }

    #[test]
    fn flags_are_accepted_after_the_subcommand() {
        let c = parse(&["check", "dir", "--ingress-class", "nginx", "--output", "json"]).unwrap();
        assert_eq!(c.translate.ingress_class, "nginx");
        assert!(matches!(c.command, Some(Command::Check { output: OutputFormat::Json, .. })));
        let c = parse(&["route", "dir", "--host", "a", "--default-backend-service", "ns/fallback"]).unwrap();
        assert_eq!(c.translate.default_backend_service, Some(NamespacedName::new("ns", "fallback")));
        // Every flag, including those added later.
        let command = <Args as clap::CommandFactory>::command();
        for flag in command.get_arguments().filter(|a| !a.is_positional()) {
            if !["help", "version"].contains(&flag.get_id().as_str()) {
                assert!(flag.is_global_set(), "--{} is not global", flag.get_id());
            }
        }
    }

    #[test]
    fn the_pod_comes_in_through_hidden_flags() {
        let c = parse(&["--pod-name", "ostium-0", "--pod-namespace", "ingress"]).unwrap();
        assert_eq!((c.pod_name.as_deref(), c.pod_namespace.as_deref()), (Some("ostium-0"), Some("ingress")));
        let help = <Args as clap::CommandFactory>::command().render_long_help().to_string();
        assert!(!help.contains("pod"), "{help}");
    }

    #[test]
    fn malformed_values_are_refused() {
        assert!(parse(&["--default-backend-service", "no-slash"]).is_err());
        assert!(parse(&["--http-addr", "localhost"]).is_err());
        assert!(parse(&["--access-log", "maybe"]).is_err());
        assert!(parse(&["--publish-service", "a/b", "--publish-status-address", "1.2.3.4"]).is_err());
        assert!(parse(&["--http-addr", "127.0.0.1:1", "--https-addr", "127.0.0.1:1"]).is_err());
        assert!(parse(&["--ingress-class", ""]).is_err());
    }
}
