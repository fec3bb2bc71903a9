//! TLS for a server's ports: one serving certificate and key (PEM files,
//! e.g. a Kubernetes `kubernetes.io/tls` Secret), read and checked once at
//! start, then handed to tonic for gRPC and to rustls for HTTPS; and, where
//! only known clients may connect (the admission webhook, which only the
//! API server may call), the client certificates it accepts
//! ([`ClientAuth`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::client::danger::HandshakeSignatureValid;
use tokio_rustls::rustls::client::verify_server_name;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use tokio_rustls::rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use tokio_rustls::rustls::{
    self, CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};
use tonic::transport::{Identity, ServerTlsConfig};

use crate::Error;

type Result<T, E = Error> = std::result::Result<T, E>;

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| Error::Read {
        what: what.into(),
        path: path.into(),
        source,
    })
}

/// Longest a client may take to finish the TLS handshake, on either port.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The serving certificate chain and key, checked to parse and to match.
pub struct TlsFiles {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    http: TlsAcceptor,
}

/// rustls' ring provider, installed as the process default too, so that
/// tonic's and kube's TLS use it whatever else links rustls.
fn provider() -> Arc<CryptoProvider> {
    let _ = ring::default_provider().install_default();
    Arc::new(ring::default_provider())
}

impl TlsFiles {
    /// Reads and checks the certificate chain and key.
    pub fn read(cert: &Path, key: &Path) -> Result<TlsFiles> {
        let cert_pem = read_file(cert, "TLS certificate (--tls-cert)")?;
        let key_pem = read_file(key, "TLS private key (--tls-key)")?;
        let http = acceptor(&cert_pem, &key_pem)
            .map_err(|e| Error::Tls(format!("{} and {}: {e}", cert.display(), key.display())))?;
        Ok(TlsFiles {
            cert_pem,
            key_pem,
            http,
        })
    }

    /// tonic's TLS configuration for the gRPC port.
    pub fn grpc(&self) -> ServerTlsConfig {
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .timeout(HANDSHAKE_TIMEOUT)
    }

    /// The TLS acceptor for the HTTPS port (HTTP/2 and HTTP/1.1).
    pub fn http(&self) -> TlsAcceptor {
        self.http.clone()
    }
}

/// A TLS acceptor (HTTP/2 and HTTP/1.1 by ALPN) for a PEM certificate
/// chain and its PEM private key, checked to parse and to match. Any client
/// may connect.
pub fn acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor> {
    build_acceptor(cert_pem, key_pem, None)
}

/// Like [`acceptor`], but only clients that present a certificate
/// [`ClientAuth`] accepts finish the handshake.
pub fn authenticating_acceptor(
    cert_pem: &[u8],
    key_pem: &[u8],
    clients: &ClientAuth,
) -> Result<TlsAcceptor> {
    build_acceptor(cert_pem, key_pem, Some(clients))
}

fn build_acceptor(
    cert_pem: &[u8],
    key_pem: &[u8],
    clients: Option<&ClientAuth>,
) -> Result<TlsAcceptor> {
    let chain = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls(format!("not PEM certificates: {e}")))?;
    if chain.is_empty() {
        return Err(Error::Tls(
            "no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let private_key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| Error::Tls(format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}")))?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("TLS: {e}")))?;
    let builder = match clients {
        Some(clients) => builder.with_client_cert_verifier(clients.verifier()?),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|e| Error::Tls(format!("do not make a serving identity: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Which clients may connect: those whose certificate chains to one of
/// these CA certificates and, when names are given, names one of them as a
/// DNS name (or IP address) in its subjectAltName. A CA that signs other
/// certificates too (a cluster CA signs kubelets' and users') admits all of
/// them unless names narrow it.
#[derive(Clone, Debug)]
pub struct ClientAuth {
    roots: Arc<RootCertStore>,
    names: Vec<ServerName<'static>>,
}

impl ClientAuth {
    /// Reads the CA certificates (PEM) from `ca` and checks the names.
    pub fn read(ca: &Path, names: &[String]) -> Result<ClientAuth> {
        let pem = read_file(ca, "client CA certificates")?;
        ClientAuth::from_pem(&pem, names).map_err(|e| Error::Tls(format!("{}: {e}", ca.display())))
    }

    /// Parses the CA certificates (PEM) and checks the names.
    pub fn from_pem(ca_pem: &[u8], names: &[String]) -> Result<ClientAuth> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| Error::Tls(format!("not PEM certificates: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| Error::Tls(format!("not a usable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::Tls(
                "no PEM CA certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        let names = names
            .iter()
            .map(|n| {
                ServerName::try_from(n.clone()).map_err(|_| {
                    Error::Tls(format!(
                        "client name {n:?} is neither a DNS name nor an IP address"
                    ))
                })
            })
            .collect::<Result<_>>()?;
        Ok(ClientAuth {
            roots: Arc::new(roots),
            names,
        })
    }

    fn verifier(&self) -> Result<Arc<dyn ClientCertVerifier>> {
        let chain = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| Error::Tls(format!("client verification: {e}")))?;
        Ok(Arc::new(NamedClients {
            chain,
            names: self.names.clone(),
        }))
    }
}

/// A client verifier: the chain as webpki checks it, then the names.
#[derive(Debug)]
struct NamedClients {
    chain: Arc<dyn ClientCertVerifier>,
    names: Vec<ServerName<'static>>,
}

impl ClientCertVerifier for NamedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.chain.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .chain
            .verify_client_cert(end_entity, intermediates, now)?;
        if self.names.is_empty() {
            return Ok(verified);
        }
        let cert = ParsedCertificate::try_from(end_entity)?;
        if self
            .names
            .iter()
            .any(|name| verify_server_name(&cert, name).is_ok())
        {
            Ok(verified)
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for localhost and its key, PEM.
    fn self_signed() -> (String, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        (certified.cert.pem(), certified.signing_key.serialize_pem())
    }

    #[test]
    fn a_matching_certificate_and_key_make_an_identity() {
        let dir = tempfile::tempdir().unwrap();
        let (cert_pem, key_pem) = self_signed();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert, cert_pem).unwrap();
        std::fs::write(&key, key_pem).unwrap();
        let files = TlsFiles::read(&cert, &key).unwrap();
        let _ = (files.grpc(), files.http());
    }

    /// A new CA: its certificate (PEM) and the issuer that signs with it.
    fn new_ca() -> (String, rcgen::Issuer<'static, rcgen::KeyPair>) {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let pem = params.self_signed(&key).unwrap().pem();
        (pem, Issuer::new(params, key))
    }

    /// A client certificate signed by `ca` for `name` (a DNS SAN) and its key.
    fn client(ca: &rcgen::Issuer<'static, rcgen::KeyPair>, name: &str) -> (String, String) {
        use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, ca).unwrap().pem();
        (cert, key.serialize_pem())
    }

    /// Runs one handshake over an in-memory pipe: a server that accepts
    /// `clients`, a client presenting `client` (or nothing). The server's
    /// result.
    async fn handshake(
        clients: Option<&ClientAuth>,
        client: Option<&(String, String)>,
    ) -> Result<(), String> {
        use tokio_rustls::TlsConnector;
        use tokio_rustls::rustls::ClientConfig;
        let (cert_pem, key_pem) = self_signed();
        let server = match clients {
            Some(clients) => {
                authenticating_acceptor(cert_pem.as_bytes(), key_pem.as_bytes(), clients)
            }
            None => acceptor(cert_pem.as_bytes(), key_pem.as_bytes()),
        }
        .unwrap();
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
            .unwrap();
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()],
                    PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let (near, far) = tokio::io::duplex(64 * 1024);
        let connector = TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from("localhost").unwrap();
        let client = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            // TLS 1.3: the client finishes before the server has checked
            // its certificate; reading waits for the server's verdict.
            if let Ok(mut stream) = connector.connect(name, far).await {
                let _ = stream.read(&mut [0u8; 1]).await;
            }
        });
        let result = server
            .accept(near)
            .await
            .map(drop)
            .map_err(|e| e.to_string());
        client.abort();
        result
    }

    #[tokio::test]
    async fn only_clients_the_ca_signed_for_a_named_client_finish_the_handshake() {
        let (ca, issuer) = new_ca();
        let apiserver = client(&issuer, "kube-apiserver-webhook-client");
        // Signed by the same CA for another name: a kubelet, say.
        let colleague = client(&issuer, "kubelet");
        let stranger = client(&new_ca().1, "kube-apiserver-webhook-client");
        let any_name = ClientAuth::from_pem(ca.as_bytes(), &[]).unwrap();
        let named =
            ClientAuth::from_pem(ca.as_bytes(), &["kube-apiserver-webhook-client".into()]).unwrap();

        assert_eq!(handshake(None, None).await, Ok(()));
        assert_eq!(handshake(Some(&any_name), Some(&apiserver)).await, Ok(()));
        assert_eq!(handshake(Some(&named), Some(&apiserver)).await, Ok(()));
        let no_certificate = handshake(Some(&any_name), None).await.unwrap_err();
        assert!(no_certificate.contains("certificate"), "{no_certificate}");
        let other_ca = handshake(Some(&any_name), Some(&stranger))
            .await
            .unwrap_err();
        assert!(other_ca.contains("invalid peer certificate"), "{other_ca}");
        assert_eq!(handshake(Some(&any_name), Some(&colleague)).await, Ok(()));
        let other_name = handshake(Some(&named), Some(&colleague)).await.unwrap_err();
        assert!(other_name.contains("NotValidForName"), "{other_name}");
    }

    #[test]
    fn bad_client_authorities_and_names_are_named() {
        let err = ClientAuth::from_pem(b"hello", &[]).unwrap_err().to_string();
        assert!(err.contains("no PEM CA certificate"), "{err}");
        let (ca, _) = new_ca();
        let err = ClientAuth::from_pem(ca.as_bytes(), &["not a name!".into()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"not a name!\""), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("client-ca.crt");
        let err = ClientAuth::read(&missing, &[]).unwrap_err().to_string();
        assert!(err.contains("client-ca.crt"), "{err}");
    }

    #[test]
    fn unreadable_wrong_or_mismatched_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("tls.crt");
        let key = dir.path().join("tls.key");
        let err = TlsFiles::read(&cert, &key).err().unwrap().to_string();
        assert!(
            err.contains("--tls-cert") && err.contains("tls.crt"),
            "{err}"
        );

        std::fs::write(&cert, "hello").unwrap();
        std::fs::write(&key, "hello").unwrap();
        let err = TlsFiles::read(&cert, &key).err().unwrap().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");

        let (cert_pem, _) = self_signed();
        std::fs::write(&cert, cert_pem).unwrap();
        let err = TlsFiles::read(&cert, &key).err().unwrap().to_string();
        assert!(err.contains("no PEM private key"), "{err}");

        let (_, other_key) = self_signed();
        std::fs::write(&key, other_key).unwrap();
        let err = TlsFiles::read(&cert, &key).err().unwrap().to_string();
        assert!(err.contains("do not make a serving identity"), "{err}");
    }
}
