//! TLS for a server's ports: one serving certificate and key (PEM files,
//! e.g. a Kubernetes `kubernetes.io/tls` Secret), read and checked once at
//! start, then handed to tonic for gRPC and to rustls for HTTPS.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
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
/// chain and its PEM private key, checked to parse and to match.
pub fn acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsAcceptor> {
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
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Tls(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|e| Error::Tls(format!("do not make a serving identity: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
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
