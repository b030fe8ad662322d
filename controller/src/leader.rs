//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's leaderelection does it.
//!
//! Candidates try every [`RETRY`]. The holder renews; a candidate takes the Lease over only after
//! it has seen the same holder record, unrenewed, for the Lease's whole duration, timed on its
//! own clock (so clock skew between nodes does not matter). A holder that cannot renew for
//! [`RENEW_DEADLINE`] steps down, before anyone else may take over. Writes carry the
//! `resourceVersion` they read, so two candidates can never both win.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;

pub(crate) const LEASE_DURATION: Duration = Duration::from_secs(15);
pub(crate) const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub(crate) const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub(crate) struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// The holder record last seen, and when it was first seen.
    observed: Option<(Record, Instant)>,
    last_renewed: Option<Instant>,
}

fn timed_out() -> kube::Error {
    kube::Error::Service("the API server did not answer in time".into())
}

/// What identifies one renewal of a Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<MicroTime>,
}

impl Elector {
    pub(crate) fn new(api: Api<Lease>, name: impl Into<String>, identity: impl Into<String>) -> Self {
        Self { api, name: name.into(), identity: identity.into(), observed: None, last_renewed: None }
    }

    /// Campaigns until `stop` turns true, publishing whether this candidate leads; a leader
    /// then gives the Lease up.
    pub(crate) async fn run(
        mut self,
        leader: watch::Sender<bool>,
        metrics: Metrics,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut failing = false;
        loop {
            let round = tokio::time::timeout(RENEW_DEADLINE, self.try_acquire_or_renew()).await;
            let leads = match round.unwrap_or_else(|_| Err(timed_out())) {
                Ok(leads) => {
                    if std::mem::take(&mut failing) {
                        tracing::info!(lease = self.name, "leader election: the API server answers again");
                    }
                    leads
                }
                Err(e) => {
                    // Once per outage; each retry at debug.
                    let e = crate::source::cluster::with_causes(&e);
                    if std::mem::replace(&mut failing, true) {
                        tracing::debug!(lease = self.name, "leader election still failing: {e}");
                    } else {
                        tracing::warn!(lease = self.name, "leader election failed, retrying: {e}");
                    }
                    // Keep leading only while the last renewal is recent enough.
                    *leader.borrow() && self.last_renewed.is_some_and(|t| t.elapsed() < RENEW_DEADLINE)
                }
            };
            if !leads {
                self.last_renewed = None;
            }
            let changed = leader.send_if_modified(|current| std::mem::replace(current, leads) != leads);
            if changed {
                metrics.set_leader(leads);
                let role = if leads { "leading" } else { "following" };
                tracing::info!(lease = self.name, identity = self.identity, "{role}");
            }
            let stopping = tokio::select! {
                () = tokio::time::sleep(RETRY) => false,
                _ = stop.wait_for(|stop| *stop) => true,
            };
            if stopping {
                let leads = *leader.borrow();
                if leads {
                    // Bounded: shutting down must not wait on an API server that does not answer.
                    match tokio::time::timeout(RETRY, self.release())
                        .await
                        .unwrap_or_else(|_| Err(timed_out()))
                    {
                        Ok(()) => tracing::info!(lease = self.name, "leader lease released"),
                        Err(e) => tracing::warn!(lease = self.name, "cannot release the leader lease: {e}"),
                    }
                    leader.send_replace(false);
                }
                return;
            }
        }
    }

    /// One round: `Ok(true)` when this candidate holds the Lease afterwards.
    pub(crate) async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = Instant::now();
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..ObjectMeta::default() },
                spec: Some(self.spec(None)),
            };
            return self.write(self.api.create(&PostParams::default(), &lease).await, now);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let record = Record { holder: spec.holder_identity.clone(), renew_time: spec.renew_time.clone() };
        let ours = record.holder.as_deref() == Some(&self.identity);
        let vacant = record.holder.as_deref().is_none_or(str::is_empty);
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != record) {
            self.observed = Some((record, now));
        }
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(LEASE_DURATION, Duration::from_secs);
        let expired =
            self.observed.as_ref().is_some_and(|(_, seen_at)| now.duration_since(*seen_at) >= duration);
        if !(ours || vacant || expired) {
            return Ok(false);
        }
        let replacement = Lease { metadata: lease.metadata.clone(), spec: Some(self.spec(Some(&spec))) };
        self.write(self.api.replace(&self.name, &PostParams::default(), &replacement).await, now)
    }

    /// The spec that makes us the holder, from the current one.
    fn spec(&self, current: Option<&LeaseSpec>) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let same_holder = current.and_then(|c| c.holder_identity.as_deref()) == Some(&self.identity);
        let transitions = current.and_then(|c| c.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_DURATION.as_secs() as i32),
            acquire_time: if same_holder {
                current.and_then(|c| c.acquire_time.clone())
            } else {
                Some(now.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if same_holder || current.is_none() {
                transitions
            } else {
                transitions + 1
            }),
            ..LeaseSpec::default()
        }
    }

    /// A create or replace answered: a conflict means someone else wrote first.
    fn write(&mut self, result: Result<Lease, kube::Error>, now: Instant) -> Result<bool, kube::Error> {
        match result {
            Ok(lease) => {
                let spec = lease.spec.unwrap_or_default();
                self.observed =
                    Some((Record { holder: spec.holder_identity, renew_time: spec.renew_time }, now));
                self.last_renewed = Some(now);
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (at shutdown), so a follower takes over at once.
    pub(crate) async fn release(&self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else { return Ok(()) };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return Ok(());
        }
        let released = LeaseSpec { holder_identity: None, lease_duration_seconds: Some(1), ..spec };
        let lease = Lease { metadata: lease.metadata, spec: Some(released) };
        self.api.replace(&self.name, &PostParams::default(), &lease).await.map(drop)
    }
}
