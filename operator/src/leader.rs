//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! `leaderelection` does it: the holder renews the Lease every retry
//! period; the others take it over once its record has not changed for a
//! whole lease duration, measured on their own clock (so clock skew between
//! instances does not matter). Updates carry the `resourceVersion` they
//! read, so two candidates can never both win.
//!
//! Only the leader reconciles and writes the ledger. A leader that cannot
//! renew within the renew deadline stops leading (the process exits and is
//! restarted), before anyone else may take over.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use tokio::time::Instant;

use crate::Error;

/// Where the Lease lives and how it is timed.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// This instance's identity (its pod name, say).
    pub identity: String,
    /// How long a Lease whose record does not change stays valid.
    pub duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// The pause between attempts.
    pub retry_period: Duration,
}

/// What a candidate should do with the Lease as it saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it: create the Lease.
    Create,
    /// This instance holds it: renew.
    Renew,
    /// It is free or expired: take it over.
    TakeOver,
    /// Someone else holds it: wait.
    Wait,
}

/// Decides, from the Lease's holder and how long its record has been
/// unchanged (on this instance's clock), what to do.
pub fn decide(
    lease: Option<&Lease>,
    me: &str,
    unchanged_for: Duration,
    duration: Duration,
) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or("");
    if holder == me {
        Decision::Renew
    } else if holder.is_empty() || unchanged_for >= duration {
        Decision::TakeOver
    } else {
        Decision::Wait
    }
}

/// The record a candidate last saw, and since when (its own clock).
struct Observed {
    record: Option<LeaseSpec>,
    since: Instant,
}

/// One candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Observed,
}

impl Elector {
    /// A candidate that has seen nothing yet.
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Elector {
            api: Api::namespaced(client, &config.namespace),
            observed: Observed {
                record: None,
                since: Instant::now(),
            },
            config,
        }
    }

    /// Tries once to acquire or renew the Lease; true when this instance
    /// holds it afterwards.
    pub async fn try_lead(&mut self) -> Result<bool, Error> {
        let lease = self.api.get_opt(&self.config.name).await?;
        let record = lease.as_ref().and_then(|l| l.spec.clone());
        if record != self.observed.record {
            self.observed = Observed {
                record,
                since: Instant::now(),
            };
        }
        let decision = decide(
            lease.as_ref(),
            &self.config.identity,
            self.observed.since.elapsed(),
            self.config.duration,
        );
        let now = MicroTime(Timestamp::now());
        let seconds = i32::try_from(self.config.duration.as_secs()).unwrap_or(i32::MAX);
        let result = match (decision, lease) {
            (Decision::Wait, _) => return Ok(false),
            (Decision::Create, _) => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.config.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.config.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(now.clone()),
                        renew_time: Some(now),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            (decision, Some(mut lease)) => {
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                if decision == Decision::TakeOver {
                    spec.holder_identity = Some(self.config.identity.clone());
                    spec.acquire_time = Some(now.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(seconds);
                spec.renew_time = Some(now);
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
            (_, None) => unreachable!("only Create has no Lease"),
        };
        match result {
            Ok(lease) => {
                self.observed = Observed {
                    record: lease.spec,
                    since: Instant::now(),
                };
                Ok(true)
            }
            // Another candidate wrote first.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until this instance leads. Errors reaching the API server are
    /// logged and retried; `on_attempt` hears whether each attempt reached it.
    pub async fn acquire(&mut self, on_attempt: impl Fn(bool)) {
        loop {
            match self.try_lead().await {
                Ok(true) => {
                    on_attempt(true);
                    return;
                }
                Ok(false) => on_attempt(true),
                Err(e) => {
                    on_attempt(false);
                    tracing::warn!(error = %e, "leader election attempt failed");
                }
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
    }

    /// Renews the Lease every retry period while this instance leads;
    /// returns when it has failed to renew for the renew deadline (or lost
    /// the Lease), that is, when it must stop leading.
    pub async fn hold(&mut self) {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_lead().await {
                Ok(true) => last_renewed = Instant::now(),
                Ok(false) => {
                    tracing::error!("the Lease was taken over");
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "renewing the Lease failed"),
            }
            if last_renewed.elapsed() >= self.config.renew_deadline {
                tracing::error!("could not renew the Lease within the renew deadline");
                return;
            }
        }
    }

    /// Gives the Lease up (on a clean shutdown), so another instance takes
    /// over at once instead of after a lease duration.
    pub async fn release(&mut self) -> Result<(), Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: Option<&str>) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn candidates_wait_for_a_lease_to_go_stale() {
        let d = Duration::from_secs(15);
        let fresh = Duration::from_secs(3);
        let stale = Duration::from_secs(15);
        assert_eq!(decide(None, "a", fresh, d), Decision::Create);
        assert_eq!(
            decide(Some(&held_by(Some("a"))), "a", stale, d),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&held_by(Some("b"))), "a", fresh, d),
            Decision::Wait
        );
        assert_eq!(
            decide(Some(&held_by(Some("b"))), "a", stale, d),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&held_by(None)), "a", fresh, d),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&held_by(Some(""))), "a", fresh, d),
            Decision::TakeOver
        );
    }
}
