//! An `OpenModel`'s status, derived from an [`Observation`] (and what the
//! reconciler could not do), and the condition transitions worth an Event.
//! Pure: the reconciler applies the result to the status subresource.
//!
//! | condition | True when |
//! |---|---|
//! | `WeightsVerified` | a pod of the model's Deployment, of the current template, fetched weights with the expected digest |
//! | `Progressing` | the rollout of the current template is under way |
//! | `Degraded` | something needs a person: a pod or the Deployment fails, or the spec cannot be applied |
//! | `Ready` | the rollout is complete, the weights are verified, every replica is ready and nothing is degraded |

use crate::crd::{Condition, OpenModel, OpenModelStatus};
use crate::observe::{Observation, Rollout};
use crate::resources::{GRPC_PORT, selector_string};
use kube::ResourceExt;

/// Condition types, in the order they are listed.
pub const READY: &str = "Ready";
/// See [`READY`].
pub const WEIGHTS_VERIFIED: &str = "WeightsVerified";
/// See [`READY`].
pub const PROGRESSING: &str = "Progressing";
/// See [`READY`].
pub const DEGRADED: &str = "Degraded";

/// Why the reconciler could not put the spec into effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Blocker {
    /// The spec has no digest (its policy allowed that), and pods cannot
    /// fetch without one.
    DigestMissing,
    /// The API server refused an owned object; the message says why.
    ApplyFailed(String),
}

/// Everything a status is derived from.
pub struct StatusInput<'a> {
    /// The model, with its current generation and previous status.
    pub model: &'a OpenModel,
    /// What its Deployment and pods say.
    pub observation: &'a Observation,
    /// What kept the reconciler from applying the spec, if anything.
    pub blocker: Option<&'a Blocker>,
    /// The time to stamp on conditions that change (RFC 3339).
    pub now: &'a str,
}

/// The status the model should have. `ledger` stays as it was: the
/// reconciler moves it forward with the entries it appends.
pub fn derive(input: &StatusInput<'_>) -> OpenModelStatus {
    let model = input.model;
    let observation = input.observation;
    let generation = model.metadata.generation;
    let previous = model.status.clone().unwrap_or_default();
    let desired = model.spec.runtime.replicas;

    let degraded = degraded(input);
    let verified = weights_verified(input);
    let progressing = match (&observation.rollout, input.blocker) {
        (_, Some(_)) => (
            "False",
            "Blocked",
            "the spec cannot be put into effect".into(),
        ),
        (Rollout::Complete, _) => (
            "False",
            "RolloutComplete",
            format!("{desired} replicas run the current spec"),
        ),
        (Rollout::InProgress(why), _) => ("True", "RollingOut", why.clone()),
        (Rollout::Failed(why), _) => ("False", "ProgressDeadlineExceeded", why.clone()),
    };
    let ready = if let Some((_, reason, message)) = degraded.as_ref() {
        ("False", *reason, message.clone())
    } else if desired == 0 {
        ("False", "ScaledToZero", "spec.runtime.replicas is 0".into())
    } else if observation.rollout != Rollout::Complete {
        ("False", progressing.1, progressing.2.clone())
    } else if verified.0 != "True" {
        ("False", verified.1, verified.2.clone())
    } else if observation.ready_replicas < desired {
        (
            "False",
            "ReplicasNotReady",
            format!("{} of {desired} replicas ready", observation.ready_replicas),
        )
    } else {
        (
            "True",
            "Serving",
            format!("{desired} replicas serve {}", verified_digest(observation)),
        )
    };
    let degraded = degraded.unwrap_or(("False", "AsExpected", String::new()));

    let condition = |type_: &str, (status, reason, message): (&str, &str, String)| {
        let unchanged = previous
            .condition(type_)
            .filter(|c| c.status == status)
            .map(|c| c.last_transition_time.clone());
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: reason.into(),
            message,
            last_transition_time: unchanged.unwrap_or_else(|| input.now.to_string()),
            observed_generation: generation,
        }
    };
    let is_ready = ready.0 == "True";
    let conditions = vec![
        condition(READY, ready),
        condition(WEIGHTS_VERIFIED, verified),
        condition(PROGRESSING, progressing),
        condition(DEGRADED, degraded),
    ];
    OpenModelStatus {
        observed_generation: generation,
        conditions,
        replicas: observation.replicas,
        ready_replicas: observation.ready_replicas,
        selector: Some(selector_string(model)),
        endpoint: Some(format!(
            "{}.{}.svc:{GRPC_PORT}",
            model.name_any(),
            model.namespace().unwrap_or_default()
        )),
        served_digest: if is_ready {
            observation.verified.as_ref().map(|v| v.digest.clone())
        } else {
            previous.served_digest
        },
        ledger: previous.ledger,
    }
}

fn verified_digest(observation: &Observation) -> &str {
    observation
        .verified
        .as_ref()
        .map_or("", |v| v.digest.as_str())
}

/// `Degraded=True` with its reason and message, or `None`.
fn degraded(input: &StatusInput<'_>) -> Option<(&'static str, &'static str, String)> {
    if let Some(blocker) = input.blocker {
        return Some(match blocker {
            Blocker::DigestMissing => (
                "True",
                "DigestMissing",
                "spec.model.digest is not set, and pods verify the weights they fetch against it: \
                 set it to the output of `openmodel-server digest DIR`"
                    .into(),
            ),
            Blocker::ApplyFailed(message) => ("True", "ApplyFailed", message.clone()),
        });
    }
    let problems = &input.observation.problems;
    if let Some(first) = problems.first() {
        let more = match problems.len() - 1 {
            0 => String::new(),
            n => format!(" (and {n} more)"),
        };
        return Some((
            "True",
            first.kind.reason(),
            format!("{}{more}", first.message),
        ));
    }
    if let Rollout::Failed(why) = &input.observation.rollout {
        return Some(("True", "ProgressDeadlineExceeded", why.clone()));
    }
    None
}

/// The `WeightsVerified` condition.
fn weights_verified(input: &StatusInput<'_>) -> (&'static str, &'static str, String) {
    let observation = input.observation;
    if let Some(mismatch) = observation
        .problems
        .iter()
        .find(|p| p.kind == crate::observe::ProblemKind::DigestMismatch)
    {
        return ("False", "DigestMismatch", mismatch.message.clone());
    }
    match &observation.verified {
        Some(v) => (
            "True",
            "DigestVerified",
            format!("pod {} verified {}", v.pod, v.digest),
        ),
        None => (
            "Unknown",
            "Pending",
            "no pod of the current spec has fetched the weights yet".into(),
        ),
    }
}

/// A condition that changed, worth an Event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    /// The condition.
    pub type_: String,
    /// Its new status.
    pub status: String,
    /// Its new reason.
    pub reason: String,
    /// Its new message.
    pub message: String,
    /// True for bad news (Degraded or weights that failed), which become
    /// Warning events.
    pub warning: bool,
}

/// The conditions whose status or reason differ between two statuses.
pub fn transitions(old: Option<&OpenModelStatus>, new: &OpenModelStatus) -> Vec<Transition> {
    new.conditions
        .iter()
        .filter(|c| {
            old.and_then(|o| o.condition(&c.type_))
                .is_none_or(|o| o.status != c.status || o.reason != c.reason)
        })
        .map(|c| Transition {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            warning: (c.type_ == DEGRADED && c.status == "True")
                || (c.type_ == WEIGHTS_VERIFIED && c.status == "False"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::tests::{HASH, deployment, pod, terminated};
    use crate::observe::{Problem, ProblemKind, observe};
    use crate::resources::fixtures::{DIGEST, model};

    fn status_of(model: &OpenModel, observation: &Observation) -> OpenModelStatus {
        derive(&StatusInput {
            model,
            observation,
            blocker: None,
            now: "2026-11-28T12:00:00Z",
        })
    }

    fn summary(status: &OpenModelStatus) -> Vec<(String, String, String)> {
        status
            .conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    fn expect(status: &OpenModelStatus, wanted: [(&str, &str, &str); 4]) {
        let wanted: Vec<_> = wanted
            .iter()
            .map(|(t, s, r)| (t.to_string(), s.to_string(), r.to_string()))
            .collect();
        assert_eq!(summary(status), wanted);
    }

    #[test]
    fn a_complete_verified_rollout_is_ready_and_serves_the_digest() {
        let m = model();
        let pods = [pod("a", HASH, terminated(0, DIGEST))];
        let o = observe(Some(&deployment(2, 2, 2, 2)), &pods, HASH, DIGEST);
        let s = status_of(&m, &o);
        expect(
            &s,
            [
                (READY, "True", "Serving"),
                (WEIGHTS_VERIFIED, "True", "DigestVerified"),
                (PROGRESSING, "False", "RolloutComplete"),
                (DEGRADED, "False", "AsExpected"),
            ],
        );
        assert_eq!(s.served_digest.as_deref(), Some(DIGEST));
        assert_eq!(s.endpoint.as_deref(), Some("minilm.search.svc:8001"));
        assert_eq!(s.observed_generation, Some(1));
        assert_eq!((s.replicas, s.ready_replicas), (2, 2));
    }

    #[test]
    fn verified_but_rolling_is_progressing_not_ready() {
        let m = model();
        let pods = [pod("a", HASH, terminated(0, DIGEST))];
        let o = observe(Some(&deployment(2, 2, 1, 1)), &pods, HASH, DIGEST);
        expect(
            &status_of(&m, &o),
            [
                (READY, "False", "RollingOut"),
                (WEIGHTS_VERIFIED, "True", "DigestVerified"),
                (PROGRESSING, "True", "RollingOut"),
                (DEGRADED, "False", "AsExpected"),
            ],
        );
    }

    #[test]
    fn a_wrong_digest_degrades_and_is_never_ready() {
        let mut m = model();
        m.status = Some(OpenModelStatus {
            served_digest: Some("sha256:old".into()),
            ..OpenModelStatus::default()
        });
        let pods = [pod(
            "a",
            HASH,
            terminated(1, "fetch failed: digest mismatch: expected x, got y"),
        )];
        // Even a Deployment that claims completion does not make it Ready.
        let o = observe(Some(&deployment(2, 2, 2, 2)), &pods, HASH, DIGEST);
        let s = status_of(&m, &o);
        expect(
            &s,
            [
                (READY, "False", "DigestMismatch"),
                (WEIGHTS_VERIFIED, "False", "DigestMismatch"),
                (PROGRESSING, "False", "RolloutComplete"),
                (DEGRADED, "True", "DigestMismatch"),
            ],
        );
        assert!(s.conditions[3].message.contains("digest mismatch"));
        assert_eq!(s.served_digest.as_deref(), Some("sha256:old"));
    }

    #[test]
    fn blockers_and_scale_to_zero_say_why() {
        let m = model();
        let o = observe(None, &[], HASH, DIGEST);
        let s = derive(&StatusInput {
            model: &m,
            observation: &o,
            blocker: Some(&Blocker::ApplyFailed("Deployment is invalid: cpu".into())),
            now: "t",
        });
        assert_eq!(
            summary(&s)[0],
            (READY.into(), "False".into(), "ApplyFailed".into())
        );
        assert_eq!(s.conditions[3].message, "Deployment is invalid: cpu");
        let mut zero = model();
        zero.spec.runtime.replicas = 0;
        let o = observe(Some(&deployment(0, 0, 0, 0)), &[], HASH, DIGEST);
        assert_eq!(status_of(&zero, &o).conditions[0].reason, "ScaledToZero");
    }

    #[test]
    fn several_problems_name_the_worst_and_count_the_rest() {
        let m = model();
        let o = Observation {
            rollout: Rollout::InProgress("x".into()),
            verified: None,
            problems: vec![
                Problem {
                    kind: ProblemKind::ImagePullFailed,
                    message: "pod a: pull".into(),
                },
                Problem {
                    kind: ProblemKind::CrashLoopBackOff,
                    message: "pod b: crash".into(),
                },
            ],
            replicas: 2,
            ready_replicas: 0,
        };
        let s = status_of(&m, &o);
        assert_eq!(s.conditions[3].reason, "ImagePullFailed");
        assert_eq!(s.conditions[3].message, "pod a: pull (and 1 more)");
    }

    #[test]
    fn transition_times_stay_until_the_status_changes_and_transitions_become_events() {
        let mut m = model();
        let rolling = observe(Some(&deployment(2, 2, 1, 1)), &[], HASH, DIGEST);
        let first = status_of(&m, &rolling);
        m.status = Some(first.clone());
        let again = derive(&StatusInput {
            model: &m,
            observation: &rolling,
            blocker: None,
            now: "later",
        });
        assert!(
            again
                .conditions
                .iter()
                .all(|c| c.last_transition_time == "2026-11-28T12:00:00Z")
        );
        assert!(transitions(Some(&first), &again).is_empty());
        assert_eq!(transitions(None, &first).len(), 4);
        let pods = [pod(
            "a",
            HASH,
            terminated(1, "fetch failed: digest mismatch"),
        )];
        let bad = observe(Some(&deployment(2, 2, 1, 1)), &pods, HASH, DIGEST);
        let degraded = status_of(&m, &bad);
        let changed = transitions(Some(&first), &degraded);
        let degraded_event = changed.iter().find(|t| t.type_ == DEGRADED).unwrap();
        assert!(degraded_event.warning);
    }
}
