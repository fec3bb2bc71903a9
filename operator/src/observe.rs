//! What the Deployment and its pods say about a model, reduced to what its
//! status and ledger records need. Pure: the reconciler lists the objects
//! and hands them in.
//!
//! The verified digest comes from the `fetch` init container's termination
//! message (`openmodel-server fetch --termination-log` writes the digest on
//! success and `fetch failed: …` otherwise). Only pods of the current pod
//! template count (told apart by [`TEMPLATE_HASH_ANNOTATION`]); old pods on
//! their way out neither verify nor fail the new weights.
//!
//! Only pods the model's Deployment made count at all ([`made_by`]): a pod
//! controlled by a ReplicaSet that the Deployment controls, the Deployment
//! being controlled by the model, uids compared at each link as
//! Kubernetes' garbage collector compares them. Labels and annotations
//! anyone who may create pods can copy; a pod that only looks like the
//! model's neither verifies weights nor reports problems.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;

use crate::resources::{
    FETCH_CONTAINER, SERVER_CONTAINER, TEMPLATE_HASH_ANNOTATION, WEIGHTS_ENTRY_ANNOTATION,
};

/// How a rollout of the current Deployment stands, judged as
/// `kubectl rollout status` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// Every replica runs the current template and is available.
    Complete,
    /// Still rolling; the message says what it waits for.
    InProgress(String),
    /// The Deployment gave up (`ProgressDeadlineExceeded`).
    Failed(String),
}

/// A digest a pod's fetch step verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedWeights {
    /// `sha256:<64 hex>`.
    pub digest: String,
    /// The pod that verified it (the first by name).
    pub pod: String,
}

/// Something wrong with a pod or the Deployment, most severe kinds first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProblemKind {
    /// The fetched weights do not have the expected digest.
    DigestMismatch,
    /// The fetch step failed for another reason (network, source, disk).
    FetchFailed,
    /// The image cannot be pulled.
    ImagePullFailed,
    /// A container keeps crashing.
    CrashLoopBackOff,
    /// A container cannot be created (bad config, missing Secret, …).
    ContainerCreateFailed,
    /// No node can take the pod (e.g. no free GPU).
    Unschedulable,
    /// The pod failed.
    PodFailed,
    /// The Deployment cannot create pods (quota, admission).
    ReplicaFailure,
}

impl ProblemKind {
    /// The condition reason for this kind, e.g. `DigestMismatch`.
    pub fn reason(self) -> &'static str {
        match self {
            ProblemKind::DigestMismatch => "DigestMismatch",
            ProblemKind::FetchFailed => "FetchFailed",
            ProblemKind::ImagePullFailed => "ImagePullFailed",
            ProblemKind::CrashLoopBackOff => "CrashLoopBackOff",
            ProblemKind::ContainerCreateFailed => "ContainerCreateFailed",
            ProblemKind::Unschedulable => "Unschedulable",
            ProblemKind::PodFailed => "PodFailed",
            ProblemKind::ReplicaFailure => "ReplicaFailure",
        }
    }
}

/// One problem, with what the cluster said about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// What kind of problem.
    pub kind: ProblemKind,
    /// Where and what, for people.
    pub message: String,
}

/// Everything the status and the ledger records are derived from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// The rollout of the current template.
    pub rollout: Rollout,
    /// The expected digest, verified by a pod of the current template.
    pub verified: Option<VerifiedWeights>,
    /// Problems of current pods and of the Deployment, most severe first.
    pub problems: Vec<Problem>,
    /// Server pods that exist (any template).
    pub replicas: i32,
    /// Server pods that are ready.
    pub ready_replicas: i32,
}

/// Waiting reasons that mean an image cannot be pulled.
const IMAGE_PULL_REASONS: [&str; 4] = [
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];

/// Waiting reasons that mean a container cannot be created.
const CREATE_REASONS: [&str; 3] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Reduces a Deployment (if it exists yet) and the model's pods to an
/// [`Observation`]. `template_hash` names the current pod template,
/// `expected_digest` the digest the spec asks for.
pub fn observe(
    deployment: Option<&Deployment>,
    pods: &[Pod],
    template_hash: &str,
    expected_digest: &str,
) -> Observation {
    let mut current: Vec<&Pod> = pods
        .iter()
        .filter(|pod| {
            pod.annotations()
                .get(TEMPLATE_HASH_ANNOTATION)
                .map(String::as_str)
                == Some(template_hash)
        })
        .collect();
    current.sort_by_key(|pod| pod.name_any());
    let mut problems: Vec<Problem> = current
        .iter()
        .flat_map(|pod| pod_problems(pod, expected_digest))
        .chain(deployment.and_then(replica_failure))
        .collect();
    problems.sort_by_key(|p| p.kind);
    let verified = current.iter().find_map(|pod| {
        let digest = verified_digest(pod)?;
        (digest == expected_digest).then(|| VerifiedWeights {
            digest: digest.to_string(),
            pod: pod.name_any(),
        })
    });
    let status = deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    Observation {
        rollout: rollout(deployment),
        verified,
        problems,
        replicas: status.replicas.unwrap_or(0),
        ready_replicas: status.ready_replicas.unwrap_or(0),
    }
}

/// The pods of the current template that verified `digest` and do not yet
/// carry `index` (the ledger index of its `weights.verified` entry) in their
/// [`WEIGHTS_ENTRY_ANNOTATION`], by name.
pub fn pods_to_annotate(
    pods: &[Pod],
    template_hash: &str,
    digest: &str,
    index: u64,
) -> Vec<String> {
    let index = index.to_string();
    let mut names: Vec<String> = pods
        .iter()
        .filter(|pod| {
            let annotations = pod.annotations();
            annotations
                .get(TEMPLATE_HASH_ANNOTATION)
                .map(String::as_str)
                == Some(template_hash)
                && verified_digest(pod) == Some(digest)
                && annotations.get(WEIGHTS_ENTRY_ANNOTATION) != Some(&index)
        })
        .map(|pod| pod.name_any())
        .collect();
    names.sort();
    names
}

/// The controller owner reference of `meta`, when it names a `kind`.
fn controller<'a>(meta: &'a ObjectMeta, kind: &str) -> Option<&'a OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true) && owner.kind == kind)
}

/// Whether `meta`'s controller is the `kind` with this `uid`.
pub fn controlled_by(meta: &ObjectMeta, kind: &str, uid: &str) -> bool {
    controller(meta, kind).is_some_and(|owner| owner.uid == uid)
}

/// The ReplicaSets that control `pods`, by uid, with their names: the
/// ones to look up before [`made_by`] can tell whose the pods are.
pub fn replica_sets_of(pods: &[Pod]) -> BTreeMap<String, String> {
    pods.iter()
        .filter_map(|pod| controller(&pod.metadata, "ReplicaSet"))
        .map(|owner| (owner.uid.clone(), owner.name.clone()))
        .collect()
}

/// The pods a Deployment made, of `pods`: those controlled by one of
/// `replica_sets`, the uids of the ReplicaSets that Deployment controls
/// (looked up by the caller, from [`replica_sets_of`]). A pod that has no
/// controller, or another one, is not the Deployment's, whatever its labels.
pub fn made_by(pods: Vec<Pod>, replica_sets: &HashSet<String>) -> Vec<Pod> {
    pods.into_iter()
        .filter(|pod| {
            controller(&pod.metadata, "ReplicaSet")
                .is_some_and(|owner| replica_sets.contains(&owner.uid))
        })
        .collect()
}

/// The rollout state, by `kubectl rollout status`'s rules.
fn rollout(deployment: Option<&Deployment>) -> Rollout {
    let Some(deployment) = deployment else {
        return Rollout::InProgress("the Deployment does not exist yet".into());
    };
    let status = deployment.status.clone().unwrap_or_default();
    let generation = deployment.metadata.generation.unwrap_or(0);
    if status.observed_generation.unwrap_or(0) < generation {
        return Rollout::InProgress(format!(
            "waiting for the Deployment controller to observe generation {generation}"
        ));
    }
    if let Some(deadline) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    }) {
        return Rollout::Failed(
            deadline
                .message
                .clone()
                .unwrap_or_else(|| "the rollout made no progress within its deadline".into()),
        );
    }
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let total = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < desired {
        Rollout::InProgress(format!("{updated} of {desired} replicas updated"))
    } else if total > updated {
        Rollout::InProgress(format!(
            "{} old replicas pending termination",
            total - updated
        ))
    } else if available < updated {
        Rollout::InProgress(format!(
            "{available} of {updated} updated replicas available"
        ))
    } else {
        Rollout::Complete
    }
}

/// The Deployment's `ReplicaFailure` condition, as a problem.
fn replica_failure(deployment: &Deployment) -> Option<Problem> {
    let status = deployment.status.as_ref()?;
    let condition = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")?;
    Some(Problem {
        kind: ProblemKind::ReplicaFailure,
        message: condition
            .message
            .clone()
            .unwrap_or_else(|| "the Deployment cannot create pods".into()),
    })
}

/// The fetch container's status in a pod.
fn fetch_status(pod: &Pod) -> Option<&ContainerStatus> {
    container_status(
        pod.status.as_ref()?.init_container_statuses.as_ref()?,
        FETCH_CONTAINER,
    )
}

fn container_status<'a>(
    statuses: &'a [ContainerStatus],
    name: &str,
) -> Option<&'a ContainerStatus> {
    statuses.iter().find(|s| s.name == name)
}

/// The digest a pod's fetch step verified: its termination message when it
/// exited 0.
fn verified_digest(pod: &Pod) -> Option<&str> {
    let terminated = fetch_status(pod)?.state.as_ref()?.terminated.as_ref()?;
    if terminated.exit_code != 0 {
        return None;
    }
    terminated.message.as_deref().map(str::trim)
}

/// Everything wrong with one pod of the current template.
fn pod_problems(pod: &Pod, expected_digest: &str) -> Vec<Problem> {
    let name = pod.name_any();
    let problem = |kind, message: String| Problem {
        kind,
        message: format!("pod {name}: {message}"),
    };
    let mut problems = Vec::new();
    let Some(status) = pod.status.as_ref() else {
        return problems;
    };
    if let Some(fetch) = fetch_status(pod) {
        problems.extend(fetch_problem(fetch, expected_digest).map(|(k, m)| problem(k, m)));
    }
    let containers = status.init_container_statuses.iter().flatten();
    for container in containers.chain(status.container_statuses.iter().flatten()) {
        problems.extend(waiting_problem(container).map(|(k, m)| problem(k, m)));
    }
    if let Some(unschedulable) = status.conditions.iter().flatten().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
    }) {
        problems.push(problem(
            ProblemKind::Unschedulable,
            unschedulable.message.clone().unwrap_or_default(),
        ));
    }
    if status.phase.as_deref() == Some("Failed") {
        let why = status
            .message
            .clone()
            .or(status.reason.clone())
            .unwrap_or_default();
        problems.push(problem(ProblemKind::PodFailed, why));
    }
    problems
}

/// A failed fetch: a non-zero exit now or before a restart, or a digest
/// other than the expected one.
fn fetch_problem(fetch: &ContainerStatus, expected_digest: &str) -> Option<(ProblemKind, String)> {
    let terminated = [fetch.state.as_ref(), fetch.last_state.as_ref()]
        .into_iter()
        .flatten()
        .find_map(|s| s.terminated.as_ref())?;
    let message = terminated.message.as_deref().unwrap_or("").trim();
    if terminated.exit_code == 0 {
        return (message != expected_digest).then(|| {
            (
                ProblemKind::DigestMismatch,
                format!("fetch verified {message:?}, but the spec expects {expected_digest}"),
            )
        });
    }
    let kind = if message.contains("digest mismatch") {
        ProblemKind::DigestMismatch
    } else {
        ProblemKind::FetchFailed
    };
    let message = if message.is_empty() {
        format!("fetch exited with code {}", terminated.exit_code)
    } else {
        message.to_string()
    };
    Some((kind, message))
}

/// A container waiting for a reason that will not fix itself.
fn waiting_problem(container: &ContainerStatus) -> Option<(ProblemKind, String)> {
    let waiting = container.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    let kind = if IMAGE_PULL_REASONS.contains(&reason) {
        ProblemKind::ImagePullFailed
    } else if CREATE_REASONS.contains(&reason) {
        ProblemKind::ContainerCreateFailed
    } else if reason == "CrashLoopBackOff" {
        // The fetch container's crashes are reported with their message.
        if container.name == FETCH_CONTAINER {
            return None;
        }
        ProblemKind::CrashLoopBackOff
    } else {
        return None;
    };
    let last_exit = container
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .map(|t| {
            let message = t
                .message
                .as_deref()
                .map(str::trim)
                .filter(|m| !m.is_empty());
            format!(
                "; last exit code {}{}",
                t.exit_code,
                message.map(|m| format!(": {m}")).unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let detail = waiting.message.as_deref().unwrap_or(reason);
    let which = if container.name == SERVER_CONTAINER {
        "server"
    } else {
        container.name.as_str()
    };
    Some((
        kind,
        format!("{which} container {reason}: {detail}{last_exit}"),
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStateWaiting, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    use crate::resources::fixtures::DIGEST;

    pub const HASH: &str = "abc";

    /// A pod of template `hash` whose fetch container is in `fetch`.
    pub fn pod(name: &str, hash: &str, fetch: ContainerState) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: Some(BTreeMap::from([(
                    TEMPLATE_HASH_ANNOTATION.to_string(),
                    hash.to_string(),
                )])),
                ..ObjectMeta::default()
            },
            spec: None,
            status: Some(PodStatus {
                init_container_statuses: Some(vec![ContainerStatus {
                    name: FETCH_CONTAINER.into(),
                    state: Some(fetch),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
        }
    }

    pub fn terminated(exit_code: i32, message: &str) -> ContainerState {
        ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code,
                message: Some(message.into()),
                ..ContainerStateTerminated::default()
            }),
            ..ContainerState::default()
        }
    }

    /// A Deployment of `desired` replicas whose status says `updated`
    /// updated and `available` available (of `total`).
    pub fn deployment(desired: i32, total: i32, updated: i32, available: i32) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                observed_generation: Some(2),
                replicas: Some(total),
                updated_replicas: Some(updated),
                available_replicas: Some(available),
                ready_replicas: Some(available),
                ..DeploymentStatus::default()
            }),
        }
    }

    /// `pod`, controlled by the ReplicaSet `uid` (named after it).
    pub fn controlled(mut pod: Pod, kind: &str, uid: &str) -> Pod {
        pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            name: format!("rs-{uid}"),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        pod
    }

    #[test]
    fn only_pods_of_the_deployment_s_replica_sets_are_the_model_s() {
        let verified = || terminated(0, DIGEST);
        let ours = controlled(pod("ours", HASH, verified()), "ReplicaSet", "rs-1");
        let old_ours = controlled(pod("old", "old", verified()), "ReplicaSet", "rs-0");
        // Same labels and annotations, no owner: made by hand.
        let unowned = pod("fake-a", HASH, verified());
        // Owned by a ReplicaSet the Deployment does not control.
        let stranger = controlled(pod("fake-b", HASH, verified()), "ReplicaSet", "rs-x");
        // Owned by the right uid, but not as its ReplicaSet.
        let mut not_controller = controlled(pod("fake-c", HASH, verified()), "ReplicaSet", "rs-1");
        not_controller.metadata.owner_references.as_mut().unwrap()[0].controller = None;
        let other_kind = controlled(pod("fake-d", HASH, verified()), "StatefulSet", "rs-1");
        let pods = vec![
            unowned,
            stranger,
            not_controller,
            other_kind,
            ours.clone(),
            old_ours.clone(),
        ];

        // The caller looks up every ReplicaSet the pods name.
        let looked_up: Vec<_> = replica_sets_of(&pods).into_iter().collect();
        assert_eq!(
            looked_up,
            [
                ("rs-0".to_string(), "rs-rs-0".to_string()),
                ("rs-1".into(), "rs-rs-1".into()),
                ("rs-x".into(), "rs-rs-x".into())
            ]
        );
        let theirs = HashSet::from(["rs-0".to_string(), "rs-1".to_string()]);
        let made = made_by(pods.clone(), &theirs);
        assert_eq!(made, [ours, old_ours]);

        // Only the Deployment's pods verify: without the check the first
        // by name, a fake, would have.
        let o = observe(Some(&deployment(1, 1, 1, 1)), &made, HASH, DIGEST);
        assert_eq!(o.verified.unwrap().pod, "ours");
        assert_eq!(pods_to_annotate(&made, HASH, DIGEST, 7), ["ours"]);
        let fakes = made_by(pods, &HashSet::from(["rs-x".to_string()]));
        assert_eq!(fakes.len(), 1);
        assert!(made_by(fakes, &HashSet::new()).is_empty());
    }

    #[test]
    fn a_deployment_is_the_model_s_when_the_model_controls_it() {
        let mut d = deployment(1, 1, 1, 1);
        assert!(!controlled_by(&d.metadata, "OpenModel", "uid-1"));
        d.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "serving.openmodel.dev/v1alpha1".into(),
            kind: "OpenModel".into(),
            name: "minilm".into(),
            uid: "uid-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        assert!(controlled_by(&d.metadata, "OpenModel", "uid-1"));
        assert!(!controlled_by(&d.metadata, "OpenModel", "uid-2"));
        assert!(!controlled_by(&d.metadata, "ReplicaSet", "uid-1"));
    }

    #[test]
    fn only_current_verified_pods_without_the_index_are_annotated() {
        let verified = || terminated(0, DIGEST);
        let mut annotated = pod("c", HASH, verified());
        annotated
            .annotations_mut()
            .insert(WEIGHTS_ENTRY_ANNOTATION.into(), "7".into());
        let pods = [
            pod("b", HASH, verified()),
            pod("a", HASH, verified()),
            annotated,
            pod("old", "other-template", verified()),
            pod("failed", HASH, terminated(1, "digest mismatch")),
        ];
        assert_eq!(pods_to_annotate(&pods, HASH, DIGEST, 7), ["a", "b"]);
        assert_eq!(pods_to_annotate(&pods, HASH, DIGEST, 8), ["a", "b", "c"]);
    }

    #[test]
    fn rollouts_are_judged_like_kubectl() {
        assert_eq!(rollout(Some(&deployment(2, 2, 2, 2))), Rollout::Complete);
        assert_eq!(
            rollout(Some(&deployment(2, 2, 1, 1))),
            Rollout::InProgress("1 of 2 replicas updated".into())
        );
        assert_eq!(
            rollout(Some(&deployment(2, 3, 2, 2))),
            Rollout::InProgress("1 old replicas pending termination".into())
        );
        assert_eq!(
            rollout(Some(&deployment(2, 2, 2, 1))),
            Rollout::InProgress("1 of 2 updated replicas available".into())
        );
        let mut stale = deployment(2, 2, 2, 2);
        stale.metadata.generation = Some(3);
        assert!(
            matches!(rollout(Some(&stale)), Rollout::InProgress(m) if m.contains("generation 3"))
        );
        let mut stuck = deployment(2, 2, 1, 1);
        stuck.status.as_mut().unwrap().conditions = Some(vec![DeploymentCondition {
            type_: "Progressing".into(),
            status: "False".into(),
            reason: Some("ProgressDeadlineExceeded".into()),
            message: Some("ReplicaSet \"x\" has timed out progressing.".into()),
            ..DeploymentCondition::default()
        }]);
        assert!(matches!(rollout(Some(&stuck)), Rollout::Failed(m) if m.contains("timed out")));
        assert!(matches!(rollout(None), Rollout::InProgress(_)));
    }

    #[test]
    fn the_fetch_termination_message_verifies_the_digest() {
        let pods = [
            pod("b", HASH, terminated(0, DIGEST)),
            pod("a", HASH, terminated(0, &format!("{DIGEST}\n"))),
        ];
        let o = observe(Some(&deployment(2, 2, 2, 2)), &pods, HASH, DIGEST);
        assert_eq!(
            o.verified,
            Some(VerifiedWeights {
                digest: DIGEST.into(),
                pod: "a".into()
            })
        );
        assert!(o.problems.is_empty(), "{:?}", o.problems);
        assert_eq!(o.rollout, Rollout::Complete);
    }

    #[test]
    fn old_template_pods_neither_verify_nor_fail() {
        let pods = [
            pod("old-ok", "old", terminated(0, DIGEST)),
            pod("old-bad", "old", terminated(1, "fetch failed: boom")),
        ];
        let o = observe(None, &pods, HASH, DIGEST);
        assert_eq!(o.verified, None);
        assert!(o.problems.is_empty());
    }

    #[test]
    fn a_digest_mismatch_is_named_with_the_fetch_message() {
        let message = format!(
            "fetch failed: digest mismatch: expected {DIGEST}, got sha256:{}",
            "2".repeat(64)
        );
        let pods = [pod("a", HASH, terminated(1, &message))];
        let o = observe(None, &pods, HASH, DIGEST);
        assert_eq!(o.verified, None);
        assert_eq!(o.problems[0].kind, ProblemKind::DigestMismatch);
        assert!(
            o.problems[0]
                .message
                .contains("pod a: fetch failed: digest mismatch")
        );
        // A digest other than the expected one, even with exit code 0.
        let other = format!("sha256:{}", "3".repeat(64));
        let o = observe(None, &[pod("a", HASH, terminated(0, &other))], HASH, DIGEST);
        assert_eq!(o.verified, None);
        assert_eq!(o.problems[0].kind, ProblemKind::DigestMismatch);
    }

    #[test]
    fn image_pulls_and_crash_loops_are_problems() {
        let waiting = |reason: &str| ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.into()),
                message: Some(format!("{reason} details")),
            }),
            ..ContainerState::default()
        };
        let pull = pod("a", HASH, waiting("ImagePullBackOff"));
        let mut crash = pod("b", HASH, terminated(0, DIGEST));
        crash.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
            name: SERVER_CONTAINER.into(),
            state: Some(waiting("CrashLoopBackOff")),
            last_state: Some(terminated(137, "out of memory")),
            ..ContainerStatus::default()
        }]);
        let o = observe(None, &[pull, crash], HASH, DIGEST);
        let kinds: Vec<_> = o.problems.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            [ProblemKind::ImagePullFailed, ProblemKind::CrashLoopBackOff]
        );
        assert!(
            o.problems[1]
                .message
                .contains("last exit code 137: out of memory"),
            "{}",
            o.problems[1].message
        );
    }
}
