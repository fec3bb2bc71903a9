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
//! ValidatingWebhookConfiguration's `caBundle`. Only the API server may
//! call it when [`WebhookConfig::clients`] is set: the handshake then needs
//! the client certificate the API server presents to webhooks (its
//! AdmissionConfiguration's `kubeConfigFile`), so no one else can post an
//! AdmissionReview that names another user.
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
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use openmodel_ledger::entry::Entry;
use openmodel_runtime::https::{self, ClientAuth};
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
    /// The client certificates accepted: the API server's, as its
    /// AdmissionConfiguration presents it (none: any client may call, and
    /// whoever reaches the port can record changes in anyone's name).
    pub clients: Option<ClientAuth>,
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
        let (cert, key) = (
            certificate.cert_pem.as_bytes(),
            certificate.key_pem.as_bytes(),
        );
        let tls = match &config.clients {
            Some(clients) => https::authenticating_acceptor(cert, key, clients),
            None => {
                tracing::warn!(
                    "the admission webhook accepts requests from any client: whoever reaches its port can record changes in anyone's name. Give --webhook-client-ca (the CA of the certificate the API server presents to webhooks; docs/install.md)"
                );
                https::acceptor(cert, key)
            }
        }
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
        https::serve(self.listener, self.tls, app, stopping).await;
    }
}

/// `POST /validate`: an AdmissionReview in, one out.
async fn validate(State(journal): State<Arc<Journal>>, body: Bytes) -> Response {
    let (admitted, entry) = match read_review(&body, journal.cluster()) {
        Ok(read) => read,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected an admission.k8s.io/v1 AdmissionReview of an OpenModel or of its scale: {e}"),
            )
                .into_response();
        }
    };
    let review = decide(&journal, admitted, entry).await.into_review();
    match serde_json::to_vec(&review) {
        Ok(body) => ([(CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The answer that admits the request, and the entry it needs (or why
/// none): a change of an OpenModel, or of its replicas through the `scale`
/// subresource.
fn read_review(
    body: &[u8],
    cluster: &str,
) -> Result<(AdmissionResponse, Result<Entry, &'static str>), String> {
    fn request<T: kube::Resource>(body: &[u8]) -> Result<AdmissionRequest<T>, String>
    where
        AdmissionReview<T>: serde::de::DeserializeOwned,
    {
        let review: AdmissionReview<T> = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        review.try_into().map_err(|e| format!("{e}"))
    }
    let any = request::<DynamicObject>(body)?;
    if any.sub_resource.as_deref() == Some("scale") {
        return Ok((
            AdmissionResponse::from(&any),
            review::scale_entry(&any, cluster),
        ));
    }
    let model = request::<OpenModel>(body)?;
    Ok((
        AdmissionResponse::from(&model),
        review::admission_entry(&model, cluster),
    ))
}

/// Records the change, then admits it; refuses what cannot be recorded.
async fn decide(
    journal: &Journal,
    admitted: AdmissionResponse,
    entry: Result<Entry, &'static str>,
) -> AdmissionResponse {
    let uid = admitted.uid.clone();
    let entry = match entry {
        Ok(entry) => entry,
        Err(why) => {
            tracing::debug!(uid, why, "admitted without an entry");
            return admitted;
        }
    };
    let user = entry
        .actor
        .as_ref()
        .map(|a| a.username.clone())
        .unwrap_or_default();
    match journal.record(entry).await {
        Ok(recorded) => {
            tracing::info!(uid, user, index = recorded.index, "admission recorded");
            admitted
        }
        Err(e) => {
            tracing::warn!(uid, user, error = %e, "admission refused: not recorded");
            // Trying again gives the same key and the same refusal.
            let advice = match e {
                Error::DedupeConflict { .. } => "",
                _ => ". Try again; if this persists, look at the openmodel-operator's logs",
            };
            admitted.deny(format!(
                "the OpenModel audit ledger could not record this change, so it was not admitted: {e}{advice}"
            ))
        }
    }
}
