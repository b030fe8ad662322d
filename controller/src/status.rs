//! Ingress status: the leader writes our address into `status.loadBalancer.ingress` of every
//! Ingress we serve, and takes it out of Ingresses we stop serving. Followers never write.
//!
//! The writer keeps what each Ingress's status says: read with one list when it starts leading
//! (and every [`RESYNC`]), then kept from its own writes, so it only writes what differs. The
//! store ignores status changes, so these writes never cause a rebuild.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use ostium_model::NamespacedName;
use tokio::sync::watch;

use crate::args::StatusSource;
use crate::metrics::Metrics;

/// How often the address is looked up again (a LoadBalancer may get its address late).
const ADDRESS_REFRESH: Duration = Duration::from_secs(30);
/// How often the leader re-reads every status, to repair ones edited behind its back.
const RESYNC: Duration = Duration::from_secs(300);

pub(crate) struct StatusWriter {
    client: Client,
    source: StatusSource,
    namespace: Option<String>,
    metrics: Metrics,
    /// What each Ingress's status says, as far as we know.
    known: HashMap<NamespacedName, Vec<IngressLoadBalancerIngress>>,
}

impl StatusWriter {
    pub(crate) fn new(
        client: Client,
        source: StatusSource,
        namespace: Option<String>,
        metrics: Metrics,
    ) -> Self {
        Self { client, source, namespace, metrics, known: HashMap::new() }
    }

    /// Runs until the `served` sender is gone: writes while `leader` is true.
    pub(crate) async fn run(
        mut self,
        mut leader: watch::Receiver<bool>,
        mut served: watch::Receiver<Arc<[NamespacedName]>>,
    ) {
        loop {
            if leader.wait_for(|leads| *leads).await.is_err() {
                return;
            }
            if let Err(e) = self.read_statuses().await {
                tracing::warn!("cannot read Ingress statuses: {e}");
                tokio::time::sleep(ADDRESS_REFRESH).await;
                continue;
            }
            let resync_at = tokio::time::Instant::now() + RESYNC;
            while *leader.borrow_and_update() {
                let ingresses = served.borrow_and_update().clone();
                match self.address().await {
                    Ok(address) => self.sync(&ingresses, &address).await,
                    Err(e) => tracing::warn!("cannot tell the address to publish: {e}"),
                }
                tokio::select! {
                    changed = served.changed() => if changed.is_err() { return },
                    _ = leader.changed() => {}
                    () = tokio::time::sleep(ADDRESS_REFRESH) => {}
                }
                if tokio::time::Instant::now() >= resync_at {
                    break;
                }
            }
        }
    }

    async fn read_statuses(&mut self) -> Result<(), kube::Error> {
        let api: Api<Ingress> = match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        };
        self.known.clear();
        for ingress in api.list(&ListParams::default()).await? {
            let key = NamespacedName::new(
                ingress.metadata.namespace.clone().unwrap_or_default(),
                ingress.metadata.name.clone().unwrap_or_default(),
            );
            let current = ingress.status.and_then(|s| s.load_balancer?.ingress).unwrap_or_default();
            self.known.insert(key, current);
        }
        Ok(())
    }

    /// The addresses to publish, from `--publish-status-address` or `--publish-service` (its
    /// load balancer's addresses, else its external IPs, else its cluster IP).
    async fn address(&self) -> Result<Vec<IngressLoadBalancerIngress>, kube::Error> {
        let service = match &self.source {
            StatusSource::Address(address) => return Ok(vec![entry(address)]),
            StatusSource::Service(service) => service,
        };
        let api: Api<Service> = Api::namespaced(self.client.clone(), &service.namespace);
        let service = api.get(&service.name).await?;
        let balancer = service.status.and_then(|s| s.load_balancer?.ingress).unwrap_or_default();
        let spec = service.spec.unwrap_or_default();
        let mut addresses: Vec<IngressLoadBalancerIngress> = balancer
            .into_iter()
            .map(|b| IngressLoadBalancerIngress { ip: b.ip, hostname: b.hostname, ports: None })
            .collect();
        if addresses.is_empty() {
            addresses = spec.external_ips.unwrap_or_default().iter().map(|a| entry(a)).collect();
        }
        if addresses.is_empty() {
            addresses
                .extend(spec.cluster_ip.filter(|ip| !ip.is_empty() && ip != "None").map(|ip| entry(&ip)));
        }
        addresses.sort_by(|a, b| (&a.ip, &a.hostname).cmp(&(&b.ip, &b.hostname)));
        Ok(addresses)
    }

    /// Writes `address` into the served Ingresses, and takes it out of the others.
    async fn sync(&mut self, served: &[NamespacedName], address: &[IngressLoadBalancerIngress]) {
        let served_set: BTreeSet<&NamespacedName> = served.iter().collect();
        let mut writes: Vec<(NamespacedName, Vec<IngressLoadBalancerIngress>)> = Vec::new();
        for ingress in served {
            if self.known.get(ingress).is_none_or(|current| current != address) {
                writes.push((ingress.clone(), address.to_vec()));
            }
        }
        for (ingress, current) in &self.known {
            if !served_set.contains(ingress) && current.iter().any(|a| address.contains(a)) {
                let rest = current.iter().filter(|a| !address.contains(a)).cloned().collect();
                writes.push((ingress.clone(), rest));
            }
        }
        for (ingress, status) in writes {
            let api: Api<Ingress> = Api::namespaced(self.client.clone(), &ingress.namespace);
            let patch = serde_json::json!({ "status": { "loadBalancer": { "ingress": status } } });
            match api.patch_status(&ingress.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    self.metrics.status_written(true);
                    tracing::debug!(ingress = %ingress, "status written");
                    self.known.insert(ingress, status);
                }
                // Deleted meanwhile: nothing to write.
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    self.known.remove(&ingress);
                }
                Err(e) => {
                    self.metrics.status_written(false);
                    tracing::warn!(ingress = %ingress, "cannot write the status: {e}");
                }
            }
        }
    }
}

impl std::fmt::Debug for StatusWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusWriter").field("source", &self.source).finish_non_exhaustive()
    }
}

/// An address as a status entry: an IP, or else a host name.
fn entry(address: &str) -> IngressLoadBalancerIngress {
    match address.parse::<IpAddr>() {
        Ok(_) => IngressLoadBalancerIngress { ip: Some(address.to_owned()), ..Default::default() },
        Err(_) => IngressLoadBalancerIngress { hostname: Some(address.to_owned()), ..Default::default() },
    }
}
