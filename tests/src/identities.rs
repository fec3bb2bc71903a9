//! Identities other than the admin for tests: service accounts with tokens
//! from the TokenRequest API, and waiting until RBAC grants what a test just
//! bound (the authorizer reads roles from a cache).

use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::authorization::v1::{SubjectAccessReview, SubjectAccessReviewSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::Error;
use openmodel_ledger_service::DEFAULT_TOKEN_AUDIENCE;

/// How long RBAC gets to grant what was just bound.
const PERMISSION_TIMEOUT: Duration = Duration::from_secs(30);

/// The Kubernetes user name of service account `name` in `namespace`.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Creates service account `name` in `namespace` and returns a token for it
/// from the TokenRequest API (valid for an hour), for the API server's own
/// audience.
pub async fn service_account_token(
    client: &Client,
    namespace: &str,
    name: &str,
) -> Result<String, Error> {
    token_for(client, namespace, name, None).await
}

/// [`service_account_token`], for the ledger service's audience
/// ([`DEFAULT_TOKEN_AUDIENCE`]), as a projected token or `kubectl create
/// token --audience` makes it: the API server itself does not take it.
pub async fn ledger_token(client: &Client, namespace: &str, name: &str) -> Result<String, Error> {
    token_for(
        client,
        namespace,
        name,
        Some(vec![DEFAULT_TOKEN_AUDIENCE.into()]),
    )
    .await
}

async fn token_for(
    client: &Client,
    namespace: &str,
    name: &str,
    audiences: Option<Vec<String>>,
) -> Result<String, Error> {
    let accounts = Api::<ServiceAccount>::namespaced(client.clone(), namespace);
    let account = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..ObjectMeta::default()
        },
        ..ServiceAccount::default()
    };
    accounts.create(&PostParams::default(), &account).await?;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            audiences,
            ..TokenRequestSpec::default()
        }),
        ..TokenRequest::default()
    };
    let issued: TokenRequest = accounts
        .create_subresource("token", name, &PostParams::default(), &request)
        .await?;
    issued
        .status
        .and_then(|status| status.token)
        .filter(|token| !token.is_empty())
        .ok_or_else(|| {
            Error::io(format!("requesting a token for {namespace}/{name}"))(std::io::Error::other(
                "the TokenRequest came back without a token",
            ))
        })
}

/// Asks the API server (as `client`, which may create
/// SubjectAccessReviews) until it allows `spec`, for at most 30 s.
pub async fn wait_for_permission(
    client: &Client,
    spec: SubjectAccessReviewSpec,
) -> Result<(), Error> {
    let reviews = Api::<SubjectAccessReview>::all(client.clone());
    let review = SubjectAccessReview {
        spec,
        ..SubjectAccessReview::default()
    };
    let started = Instant::now();
    loop {
        let answer = reviews.create(&PostParams::default(), &review).await?;
        if answer.status.as_ref().is_some_and(|s| s.allowed) {
            return Ok(());
        }
        if started.elapsed() > PERMISSION_TIMEOUT {
            return Err(Error::Timeout {
                what: "an RBAC grant".into(),
                waited: started.elapsed(),
                detail: format!(
                    "{:?} is still not allowed: {:?}",
                    review.spec, answer.status
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
