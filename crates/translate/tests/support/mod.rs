//! What the fixture-driven tests share.

use std::sync::Arc;

use ostium_translate::Options;

/// Options as the controller would build them from these flags (defaults otherwise).
pub fn options(flags: &str) -> Options {
    let fallback = ostium_test_support::fallback_certificate();
    let mut options = Options::new(fallback, Arc::new(rustls::crypto::ring::default_provider()));
    for line in flags.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (flag, value) = line.split_once(' ').unwrap_or((line, ""));
        match flag {
            "--watch-ingress-without-class" => options.watch_ingress_without_class = true,
            "--watch-namespace" => options.watch_namespace = Some(value.into()),
            "--ingress-class" => options.ingress_class = value.into(),
            "--controller-name" => options.controller_name = value.into(),
            "--default-backend-service" => options.default_backend_service = Some(value.parse().unwrap()),
            "--default-ssl-certificate" => options.default_ssl_certificate = Some(value.parse().unwrap()),
            "--annotations-prefix" => options.annotations_prefix = value.into(),
            "--enable-ssl-passthrough" => options.enable_ssl_passthrough = true,
            "--configmap" => options.configmap = Some(value.parse().unwrap()),
            "--tcp-services-configmap" => options.tcp_services_configmap = Some(value.parse().unwrap()),
            "--udp-services-configmap" => options.udp_services_configmap = Some(value.parse().unwrap()),
            other => panic!("unknown flag in fixture: {other}"),
        }
    }
    options
}
