//! The validating admission webhook: for every CREATE, UPDATE and DELETE of
//! an OpenModel the API server asks it first, and it appends `spec.changed`
//! with the requesting user (`userInfo`), the operation and the JSON Patch
//! old → new **before** answering. A change the ledger cannot record is
//! refused, so with `failurePolicy: Fail` no change is admitted unrecorded.
//! Dry runs, and updates that leave the spec as it was, are admitted without
//! an entry ([`review`]).
//!
//! It is served over TLS ([`certificate`]): from files, or a CA and serving
//! certificate the operator keeps in a Secret and puts into the
//! ValidatingWebhookConfiguration's `caBundle`.
//!
//! The admission entries (source `admission`) say who asked for what; the
//! controller's own `spec.changed` entries (source `controller`, one per
//! generation) say what was stored, and are what the spec history is
//! rebuilt from.

pub mod certificate;
pub mod review;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kube::Client;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Error;
use crate::crd::OpenModel;
use crate::journal::Journal;

/// The path the API server posts AdmissionReviews to.
pub const PATH: &str = "/validate";

/// Where the webhook's serving certificate comes from.
#[derive(Clone, Debug)]
pub enum CertificateSource {
    /// `tls.crt` and `tls.key` in this folder (e.g. cert-manager's Secret).
    Dir(PathBuf),
    /// A Secret the operator creates when missing, for these host names.
    Secret {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The names the certificate is for (the webhook Service's DNS
        /// name, or an address).
        hosts: Vec<String>,
    },
}

/// How the webhook is served.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// The HTTPS address.
    pub listen: SocketAddr,
    /// The certificate.
    pub certificate: CertificateSource,
    /// The ValidatingWebhookConfiguration whose `caBundle` the operator
    /// fills (none: someone else does, e.g. cert-manager's CA injector).
    pub configuration: Option<String>,
}

/// A webhook ready to serve: certificate in hand, port bound.
pub struct Webhook {
    listener: TcpListener,
    tls: tokio_rustls::TlsAcceptor,
    journal: Journal,
}

impl Webhook {
    /// Gets the certificate, fills the `caBundle` and binds the port.
    pub async fn start(
        client: &Client,
        journal: Journal,
        config: &WebhookConfig,
    ) -> Result<Webhook, Error> {
        let certificate = match &config.certificate {
            CertificateSource::Dir(dir) => certificate::from_dir(dir)?,
            CertificateSource::Secret {
                namespace,
                name,
                hosts,
            } => certificate::ensure_secret(client, namespace, name, hosts).await?,
        };
        if let (Some(configuration), Some(ca)) = (&config.configuration, &certificate.ca_pem) {
            certificate::inject_ca_bundle(client, configuration, ca).await?;
        }
        let tls = openmodel_runtime::https::acceptor(
            certificate.cert_pem.as_bytes(),
            certificate.key_pem.as_bytes(),
        )
        .map_err(|e| Error::Webhook(format!("its certificate: {e}")))?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen,
                source,
            })?;
        tracing::info!(listen = %config.listen, path = PATH, "serving the admission webhook");
        Ok(Webhook {
            listener,
            tls,
            journal,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves until `stopping` turns true; requests in flight finish.
    pub async fn serve(self, stopping: watch::Receiver<bool>) {
        let app = Router::new()
            .route(PATH, post(validate))
            .with_state(Arc::new(self.journal));
        openmodel_runtime::https::serve(self.listener, self.tls, app, stopping).await;
    }
}

/// `POST /validate`: an AdmissionReview in, one out.
async fn validate(State(journal): State<Arc<Journal>>, body: Bytes) -> Response {
    let request: AdmissionRequest<OpenModel> =
        match serde_json::from_slice::<AdmissionReview<OpenModel>>(&body)
            .map_err(|e| e.to_string())
            .and_then(|review| review.try_into().map_err(|e| format!("{e}")))
        {
            Ok(request) => request,
            Err(e) => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("expected an admission.k8s.io/v1 AdmissionReview of an OpenModel: {e}"),
                )
                    .into_response();
            }
        };
    let review = decide(&journal, &request).await.into_review();
    match serde_json::to_vec(&review) {
        Ok(body) => ([(CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// Records the change, then admits it; refuses what cannot be recorded.
async fn decide(journal: &Journal, request: &AdmissionRequest<OpenModel>) -> AdmissionResponse {
    let admitted = AdmissionResponse::from(request);
    let entry = match review::admission_entry(request, journal.cluster()) {
        Ok(entry) => entry,
        Err(why) => {
            tracing::debug!(uid = %request.uid, why, "admitted without an entry");
            return admitted;
        }
    };
    let user = request.user_info.username.clone().unwrap_or_default();
    match journal.record(entry).await {
        Ok(recorded) => {
            tracing::info!(
                uid = %request.uid,
                user,
                operation = ?request.operation,
                index = recorded.index,
                "admission recorded"
            );
            admitted
        }
        Err(e) => {
            tracing::warn!(uid = %request.uid, user, error = %e, "admission refused: not recorded");
            admitted.deny(format!(
                "the OpenModel audit ledger could not record this change, so it was not admitted: {e}. Try again; if this persists, look at the openmodel-operator's logs"
            ))
        }
    }
}
