//! The webhook's serving certificate, managed by the operator: a CA and a
//! serving certificate kept in a Secret (so every replica serves the same
//! one and a restart keeps it), and the CA put into the
//! ValidatingWebhookConfiguration's `caBundle` so the API server trusts it.
//! With cert-manager, pass the certificate files instead
//! (`--webhook-cert-dir`) and let its CA injector fill the `caBundle`.

use std::collections::BTreeMap;
use std::path::Path;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::Error;

/// The keys of the Secret (those of a `kubernetes.io/tls` Secret, plus the CA).
const CA_KEY: &str = "ca.crt";
const CERT_KEY: &str = "tls.crt";
const PRIVATE_KEY: &str = "tls.key";

/// A serving certificate, its key and (when the operator made it) its CA.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServingCertificate {
    /// The CA certificate, PEM; `None` for certificates from files.
    pub ca_pem: Option<String>,
    /// The serving certificate chain, PEM.
    pub cert_pem: String,
    /// Its private key, PEM.
    pub key_pem: String,
}

/// A new CA and a serving certificate it signed for `names` (DNS names, or
/// IP addresses such as `127.0.0.1`), ECDSA P-256, valid for the rcgen
/// default period.
pub fn generate(names: &[String]) -> Result<ServingCertificate, Error> {
    let certificate = || -> Result<ServingCertificate, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "openmodel-webhook-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_pem = ca.self_signed(&ca_key)?.pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(names.to_vec())?;
        serving.distinguished_name.push(
            DnType::CommonName,
            names.first().map_or("openmodel-webhook", String::as_str),
        );
        serving.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving.use_authority_key_identifier_extension = true;
        Ok(ServingCertificate {
            ca_pem: Some(ca_pem),
            cert_pem: serving.signed_by(&key, &issuer)?.pem(),
            key_pem: key.serialize_pem(),
        })
    };
    certificate().map_err(|e| Error::Webhook(format!("generating its certificate: {e}")))
}

/// Reads `tls.crt` and `tls.key` from `dir` (a mounted `kubernetes.io/tls`
/// Secret, e.g. cert-manager's).
pub fn from_dir(dir: &Path) -> Result<ServingCertificate, Error> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| {
            Error::Webhook(format!(
                "reading {} (--webhook-cert-dir): {e}",
                path.display()
            ))
        })
    };
    Ok(ServingCertificate {
        ca_pem: None,
        cert_pem: read(CERT_KEY)?,
        key_pem: read(PRIVATE_KEY)?,
    })
}

/// The certificate in the Secret `namespace/name`, made and stored first
/// when there is none. Replicas starting together agree: the first create
/// wins and the others read it.
pub async fn ensure_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    names: &[String],
) -> Result<ServingCertificate, Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    if let Some(secret) = secrets.get_opt(name).await? {
        return from_secret(&secret);
    }
    let made = generate(names)?;
    let data = |pem: &str| ByteString(pem.as_bytes().to_vec());
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".into(),
                "openmodel-operator".into(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(BTreeMap::from([
            (
                CA_KEY.into(),
                data(made.ca_pem.as_deref().unwrap_or_default()),
            ),
            (CERT_KEY.into(), data(&made.cert_pem)),
            (PRIVATE_KEY.into(), data(&made.key_pem)),
        ])),
        ..Secret::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(made),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            from_secret(&secrets.get(name).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The certificate a Secret holds.
fn from_secret(secret: &Secret) -> Result<ServingCertificate, Error> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let field = |key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or_else(|| {
                Error::Webhook(format!(
                    "the Secret {name} has no {key}; delete it and the operator makes a new one"
                ))
            })
    };
    Ok(ServingCertificate {
        ca_pem: Some(field(CA_KEY)?),
        cert_pem: field(CERT_KEY)?,
        key_pem: field(PRIVATE_KEY)?,
    })
}

/// Puts `ca_pem` into the `caBundle` of every webhook of the
/// ValidatingWebhookConfiguration `name` (retrying on a write conflict).
pub async fn inject_ca_bundle(client: &Client, name: &str, ca_pem: &str) -> Result<(), Error> {
    let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    let bundle = ByteString(ca_pem.as_bytes().to_vec());
    for _ in 0..5 {
        let Some(mut configuration) = api.get_opt(name).await? else {
            return Err(Error::Webhook(format!(
                "the ValidatingWebhookConfiguration {name} does not exist; install it (the Helm chart does) or pass --webhook-configuration \"\""
            )));
        };
        let webhooks = configuration.webhooks.get_or_insert_with(Vec::new);
        if webhooks
            .iter()
            .all(|w| w.client_config.ca_bundle.as_ref() == Some(&bundle))
        {
            return Ok(());
        }
        for webhook in webhooks {
            webhook.client_config.ca_bundle = Some(bundle.clone());
        }
        match api
            .replace(name, &PostParams::default(), &configuration)
            .await
        {
            Ok(_) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Webhook(format!(
        "the ValidatingWebhookConfiguration {name} kept changing while its caBundle was set"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_serves_tls_for_its_names() {
        let made = generate(&[
            "openmodel-webhook.openmodel-system.svc".into(),
            "127.0.0.1".into(),
        ])
        .unwrap();
        assert!(
            made.ca_pem
                .as_deref()
                .unwrap()
                .contains("BEGIN CERTIFICATE")
        );
        openmodel_runtime::https::acceptor(made.cert_pem.as_bytes(), made.key_pem.as_bytes())
            .unwrap();
        let other = generate(&["x".into()]).unwrap();
        assert_ne!(made, other, "every call makes a new CA and key");
    }

    #[test]
    fn a_secret_without_its_keys_is_named() {
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some("openmodel-webhook-tls".into()),
                ..ObjectMeta::default()
            },
            ..Secret::default()
        };
        let err = from_secret(&secret).unwrap_err().to_string();
        assert!(
            err.contains("openmodel-webhook-tls") && err.contains("ca.crt"),
            "{err}"
        );
    }
}
