//! A synthetic table for benchmarks and allocation tests: `n` hosts `h<i>.bench.local`, each
//! with an `Exact /healthz` and a `Prefix /api` route, plus a host-less `Prefix /` route.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use ostium_model::{
    Backend, Certificate, EndpointKey, EndpointSet, HostRule, NamespacedName, PathRule, PortRef, Protocol,
    Route, RouteAction, Table, TableBuilder, Target, TlsTable,
};
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

pub fn table(n: usize) -> Table {
    let cert = rcgen::generate_simple_self_signed(vec!["bench.invalid".to_owned()]).unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let key = CertifiedKey::new(vec![cert.cert.der().clone()], any_supported_type(&key).unwrap());
    let mut table =
        TableBuilder::new(TlsTable::new(Certificate { key: Arc::new(key), source: "bench".into() }));
    let mut first = None;
    for i in 0..n {
        let service = NamespacedName::new("bench", format!("svc-{i}"));
        let addrs = (0..5u8).map(|j| SocketAddr::from((Ipv4Addr::new(10, (i >> 8) as u8, i as u8, j), 8080)));
        let set = EndpointSet::new(
            EndpointKey { service: service.clone(), port: 80, protocol: ostium_model::Transport::Tcp },
            addrs,
        );
        let backend = table.add_backend(Backend {
            service: Arc::new(service),
            port: PortRef::Number(80),
            protocol: Protocol::Http,
            target: Target::Endpoints(Arc::new(set)),
        });
        let host: HostRule = format!("h{i}.bench.local").parse().unwrap();
        let vhost = table.virtual_host_mut(Some(&host));
        for rule in [PathRule::exact("/healthz").unwrap(), PathRule::prefix("/api").unwrap()] {
            vhost
                .add_route(Route {
                    rule,
                    ingress: None,
                    action: RouteAction::Forward(backend.clone()),
                    policy: Arc::default(),
                })
                .unwrap();
        }
        first.get_or_insert(backend);
    }
    let any = table.virtual_host_mut(None);
    let backend = first.expect("n > 0");
    any.add_route(Route {
        rule: PathRule::prefix("/").unwrap(),
        ingress: None,
        action: RouteAction::Forward(backend),
        policy: Arc::default(),
    })
    .unwrap();
    table.build()
}
