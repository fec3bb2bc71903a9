//! Readers of the audit ledger for tests: a service account granted `get`
//! on the virtual subresource `openmodels/audit` in one namespace,
//! cluster-wide, or nowhere, with a token from the TokenRequest API.
//!
//! ```no_run
//! # async fn example(client: kube::Client) -> Result<(), openmodel_tests::Error> {
//! use openmodel_tests::audit_access::{Grant, audit_reader};
//!
//! let token = audit_reader(&client, "my-ns", "auditor", Grant::Cluster).await?;
//! # let _ = token;
//! # Ok(())
//! # }
//! ```

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReviewSpec};
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use openmodel_ledger_service::{AUDIT_API_GROUP, AUDIT_RESOURCE, AUDIT_SUBRESOURCE, AUDIT_VERB};

use crate::Error;
use crate::identities::{ledger_token, service_account_user, wait_for_permission};

/// Where a service account may read audit entries.
#[derive(Clone, Copy, Debug)]
pub enum Grant<'a> {
    /// Nowhere: authenticated, but may read no entry.
    Nowhere,
    /// In this namespace (a Role and RoleBinding there).
    Namespace(&'a str),
    /// Every namespace (a ClusterRole and ClusterRoleBinding named
    /// `<namespace>-<name>-audit-reader`).
    Cluster,
}

/// Creates service account `name` in `namespace`, grants it `get
/// openmodels/audit` as `grant` says, waits until RBAC allows it, and
/// returns a token for it.
pub async fn audit_reader(
    client: &Client,
    namespace: &str,
    name: &str,
    grant: Grant<'_>,
) -> Result<String, Error> {
    let token = ledger_token(client, namespace, name).await?;
    let subject = Subject {
        kind: "ServiceAccount".into(),
        name: name.into(),
        namespace: Some(namespace.into()),
        ..Subject::default()
    };
    let rules = Some(vec![PolicyRule {
        api_groups: Some(vec![AUDIT_API_GROUP.into()]),
        resources: Some(vec![format!("{AUDIT_RESOURCE}/{AUDIT_SUBRESOURCE}")]),
        verbs: vec![AUDIT_VERB.into()],
        ..PolicyRule::default()
    }]);
    let meta = |name: &str| ObjectMeta {
        name: Some(name.into()),
        ..ObjectMeta::default()
    };
    let role_ref = |kind: &str, name: &str| RoleRef {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: kind.into(),
        name: name.into(),
    };
    let pp = PostParams::default();
    let scope = match grant {
        Grant::Nowhere => return Ok(token),
        Grant::Namespace(ns) => {
            let role = format!("{name}-audit-reader");
            Api::<Role>::namespaced(client.clone(), ns)
                .create(
                    &pp,
                    &Role {
                        metadata: meta(&role),
                        rules,
                    },
                )
                .await?;
            Api::<RoleBinding>::namespaced(client.clone(), ns)
                .create(
                    &pp,
                    &RoleBinding {
                        metadata: meta(&role),
                        role_ref: role_ref("Role", &role),
                        subjects: Some(vec![subject]),
                    },
                )
                .await?;
            Some(ns.to_owned())
        }
        Grant::Cluster => {
            let role = format!("{namespace}-{name}-audit-reader");
            Api::<ClusterRole>::all(client.clone())
                .create(
                    &pp,
                    &ClusterRole {
                        metadata: meta(&role),
                        rules,
                        ..ClusterRole::default()
                    },
                )
                .await?;
            Api::<ClusterRoleBinding>::all(client.clone())
                .create(
                    &pp,
                    &ClusterRoleBinding {
                        metadata: meta(&role),
                        role_ref: role_ref("ClusterRole", &role),
                        subjects: Some(vec![subject]),
                    },
                )
                .await?;
            None
        }
    };
    wait_for_permission(
        client,
        SubjectAccessReviewSpec {
            user: Some(service_account_user(namespace, name)),
            resource_attributes: Some(ResourceAttributes {
                group: Some(AUDIT_API_GROUP.into()),
                resource: Some(AUDIT_RESOURCE.into()),
                subresource: Some(AUDIT_SUBRESOURCE.into()),
                verb: Some(AUDIT_VERB.into()),
                namespace: scope,
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
    )
    .await?;
    Ok(token)
}
