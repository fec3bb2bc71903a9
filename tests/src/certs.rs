//! The test PKI: a throwaway certificate authority, the kube-apiserver's
//! serving certificate, an admin client certificate and the service-account
//! signing key. Everything is generated in memory (ECDSA P-256) for each
//! control plane and never reused.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// The user name in the admin client certificate.
pub(crate) const ADMIN_USER: &str = "openmodel-test-admin";
/// The group in the admin client certificate: Kubernetes' built-in
/// superuser group, which RBAC always allows.
pub(crate) const ADMIN_GROUP: &str = "system:masters";

/// A certificate and its private key, both PEM.
pub(crate) struct CertifiedKey {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
}

/// Every certificate and key one control plane needs.
pub(crate) struct Pki {
    /// The CA certificate (clients trust it; the apiserver checks client
    /// certificates against it).
    pub(crate) ca_pem: String,
    /// The apiserver's serving certificate, for 127.0.0.1 and localhost.
    pub(crate) apiserver: CertifiedKey,
    /// A client certificate for `ADMIN_USER` in `ADMIN_GROUP`.
    pub(crate) admin: CertifiedKey,
    /// The private key that signs service-account tokens (PKCS#8 PEM).
    pub(crate) service_account_key_pem: String,
    /// Its public key (SubjectPublicKeyInfo PEM), for verifying them.
    pub(crate) service_account_pub_pem: String,
    /// The CA itself, to sign more client certificates (test users).
    pub(crate) ca: Issuer<'static, KeyPair>,
    /// A CA of its own for the certificate the apiserver presents to
    /// admission webhooks (webhooks trust only it).
    pub(crate) webhook_client_ca_pem: String,
    /// That certificate, for [`WEBHOOK_CLIENT_NAME`].
    pub(crate) webhook_client: CertifiedKey,
}

/// The DNS name in the certificate the apiserver presents to webhooks.
pub const WEBHOOK_CLIENT_NAME: &str = "kube-apiserver-webhook-client";

/// A new certificate authority: its certificate (PEM) and the issuer that
/// signs with it.
fn new_ca() -> Result<(String, Issuer<'static, KeyPair>), rcgen::Error> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "openmodel-test-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_pem = ca_params.self_signed(&ca_key)?.pem();
    Ok((ca_pem, Issuer::new(ca_params, ca_key)))
}

/// A throwaway certificate authority and a serving certificate it signed,
/// for a TLS server under test (clients trust `ca_pem`).
pub struct ServingCertificate {
    /// The CA certificate, PEM.
    pub ca_pem: String,
    /// The serving certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PEM (PKCS#8).
    pub key_pem: String,
}

/// Generates a CA and a serving certificate for `sans` (host names or IP
/// addresses, e.g. `127.0.0.1` and `localhost`), ECDSA P-256.
pub fn serving_certificate(sans: &[&str]) -> Result<ServingCertificate, rcgen::Error> {
    let (ca_pem, ca) = new_ca()?;
    let serving = leaf(
        &ca,
        sans,
        sans.first().copied().unwrap_or("server"),
        &[],
        ExtendedKeyUsagePurpose::ServerAuth,
    )?;
    Ok(ServingCertificate {
        ca_pem,
        cert_pem: serving.cert_pem,
        key_pem: serving.key_pem,
    })
}

impl Pki {
    /// Generates a fresh PKI.
    pub(crate) fn generate() -> Result<Pki, rcgen::Error> {
        let (ca_pem, ca) = new_ca()?;

        // `CertificateParams::new` turns "127.0.0.1" into an IP address SAN.
        let apiserver = leaf(
            &ca,
            &["127.0.0.1", "localhost"],
            "kube-apiserver",
            &[],
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let admin = leaf(
            &ca,
            &[],
            ADMIN_USER,
            &[ADMIN_GROUP],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        let (webhook_client_ca_pem, webhook_client_ca) = new_ca()?;
        let webhook_client = leaf(
            &webhook_client_ca,
            &[WEBHOOK_CLIENT_NAME],
            "kube-apiserver",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;

        let service_account = KeyPair::generate()?;
        Ok(Pki {
            webhook_client_ca_pem,
            webhook_client,
            ca_pem,
            apiserver,
            admin,
            service_account_key_pem: service_account.serialize_pem(),
            service_account_pub_pem: service_account.public_key_pem(),
            ca,
        })
    }
}

/// A client certificate for `user` in `groups`, signed by `ca`.
pub(crate) fn client_certificate(
    ca: &Issuer<'_, KeyPair>,
    user: &str,
    groups: &[&str],
) -> Result<CertifiedKey, rcgen::Error> {
    leaf(ca, &[], user, groups, ExtendedKeyUsagePurpose::ClientAuth)
}

/// A certificate signed by `ca`. Kubernetes reads the user name from the
/// common name and the groups from the organizations.
fn leaf(
    ca: &Issuer<'_, KeyPair>,
    sans: &[&str],
    common_name: &str,
    organizations: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> Result<CertifiedKey, rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut params =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    for organization in organizations {
        params
            .distinguished_name
            .push(DnType::OrganizationName, *organization);
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![usage];
    params.use_authority_key_identifier_extension = true;
    Ok(CertifiedKey {
        cert_pem: params.signed_by(&key, ca)?.pem(),
        key_pem: key.serialize_pem(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_piece_is_pem_of_the_right_kind() {
        let pki = Pki::generate().unwrap();
        for cert in [&pki.ca_pem, &pki.apiserver.cert_pem, &pki.admin.cert_pem] {
            assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
        }
        for key in [
            &pki.apiserver.key_pem,
            &pki.admin.key_pem,
            &pki.service_account_key_pem,
        ] {
            assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"), "{key}");
            KeyPair::from_pem(key).unwrap();
        }
        assert!(
            pki.service_account_pub_pem
                .starts_with("-----BEGIN PUBLIC KEY-----")
        );
    }

    #[test]
    fn serving_certificates_are_signed_by_their_own_ca() {
        let a = serving_certificate(&["127.0.0.1", "localhost"]).unwrap();
        let b = serving_certificate(&["127.0.0.1"]).unwrap();
        assert_ne!(a.ca_pem, b.ca_pem);
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        KeyPair::from_pem(&a.key_pem).unwrap();
    }

    #[test]
    fn each_control_plane_gets_its_own_keys() {
        let (a, b) = (Pki::generate().unwrap(), Pki::generate().unwrap());
        assert_ne!(a.ca_pem, b.ca_pem);
        assert_ne!(a.service_account_key_pem, b.service_account_key_pem);
    }
}
