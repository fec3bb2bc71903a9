//! The connection to the ledger service: a tonic channel over TLS, sending
//! a bearer token with every call.
//!
//! ```no_run
//! # async fn example() -> openmodel_ledger_service::Result<()> {
//! use openmodel_ledger_service::client::{Credentials, connect};
//! use openmodel_proto::audit::ListEntriesRequest;
//!
//! let ca = std::fs::read("/etc/openmodel/ledger-ca.crt").expect("the CA file");
//! // In a pod: the projected service-account token, re-read as it rotates.
//! let credentials = Credentials::token_file("/var/run/secrets/kubernetes.io/serviceaccount/token");
//! let mut client = connect("https://openmodel-ledger.openmodel-system.svc:8443", &ca, credentials).await?;
//! let page = client.list_entries(ListEntriesRequest::default()).await.expect("allowed").into_inner();
//! # let _ = page;
//! # Ok(())
//! # }
//! ```
//!
//! Answers carry leaf bytes and signed checkpoints: check them with the
//! log's public key rather than trusting the connection, e.g.
//! `TlogProof::parse(&proof.tlog_proof)?.verify(&verifier, None)` for an
//! inclusion proof, [`openmodel_ledger::checkpoint::SignedCheckpoint::open`] for a
//! checkpoint and [`openmodel_ledger::tree::verify_consistency`] between two.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openmodel_proto::audit::audit_service_client::AuditServiceClient;
use openmodel_proto::audit::{AppendRequest, LoggedEntry};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic::{Request, Status};

use crate::limits::MAX_MESSAGE_BYTES;
use crate::{Error, Result};
use openmodel_ledger::entry::Entry;
use openmodel_ledger::store::StoredEntry;

/// How long a token read from a file is used before the file is read again
/// (the kubelet rewrites projected tokens well before they expire).
pub const TOKEN_FILE_REFRESH: Duration = Duration::from_secs(60);

/// A connected client.
pub type AuditClient = AuditServiceClient<InterceptedService<Channel, Credentials>>;

/// What a client sends as `authorization: Bearer <token>`.
#[derive(Clone)]
pub struct Credentials(Source);

#[derive(Clone)]
enum Source {
    None,
    Token(MetadataValue<Ascii>),
    File {
        path: PathBuf,
        cached: Arc<Mutex<Option<ReadToken>>>,
    },
}

/// How long connecting may take: TCP, TLS and HTTP/2 handshakes together.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often an open connection is pinged (HTTP/2 PING), with calls in
/// flight or none: a connection whose peer vanished without a word (no FIN,
/// no RST: a node lost, a connection-tracking table flushed) is found dead
/// within [`PING_INTERVAL`] + [`PING_TIMEOUT`] and closed, and the next call
/// connects again, instead of waiting on it forever.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);

/// How long a ping waits for its answer before the connection is closed.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);

/// A token read from a file, and when.
type ReadToken = (Instant, MetadataValue<Ascii>);

fn header(token: &str) -> Result<MetadataValue<Ascii>> {
    let token = token.trim();
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Config(
            "a bearer token must be one non-empty word of visible ASCII".into(),
        ));
    }
    format!("Bearer {token}")
        .parse()
        .map_err(|e| Error::Config(format!("bearer token: {e}")))
}

impl Credentials {
    /// No token: only useful to see UNAUTHENTICATED.
    pub fn none() -> Credentials {
        Credentials(Source::None)
    }

    /// A fixed token.
    pub fn token(token: &str) -> Result<Credentials> {
        Ok(Credentials(Source::Token(header(token)?)))
    }

    /// A token read from `path`, again every [`TOKEN_FILE_REFRESH`] (a
    /// projected service-account token rotates).
    pub fn token_file(path: impl AsRef<Path>) -> Credentials {
        Credentials(Source::File {
            path: path.as_ref().to_owned(),
            cached: Arc::default(),
        })
    }

    /// The header value to send now, if any.
    fn current(&self) -> Result<Option<MetadataValue<Ascii>>> {
        match &self.0 {
            Source::None => Ok(None),
            Source::Token(value) => Ok(Some(value.clone())),
            Source::File { path, cached } => {
                let mut cached = cached.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((read, value)) = cached.as_ref()
                    && read.elapsed() < TOKEN_FILE_REFRESH
                {
                    return Ok(Some(value.clone()));
                }
                let token = std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(format!("reading the token file {}: {e}", path.display()))
                })?;
                let value = header(&token)
                    .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
                *cached = Some((Instant::now(), value.clone()));
                Ok(Some(value))
            }
        }
    }
}

impl Interceptor for Credentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let value = self
            .current()
            .map_err(|e| Status::unauthenticated(e.to_string()))?;
        if let Some(value) = value {
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// `error` and its sources, as one line (tonic's transport errors say
/// little at the top).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}

/// The most a client sends in one request: an append carries one entry of
/// at most 64 KiB.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// Connects to the service at `endpoint` (`https://host:port`), trusting
/// the CA certificates in `ca_pem` (PEM) for its serving certificate. The
/// client accepts answers of up to [`MAX_MESSAGE_BYTES`] (the service keeps
/// its pages within its `--max-response-bytes`, which may not exceed that)
/// and sends requests of up to [`MAX_REQUEST_BYTES`]. Connecting fails
/// after [`CONNECT_TIMEOUT`]; the connection is pinged every
/// [`PING_INTERVAL`] (see there). Calls have no deadline of their own:
/// [`RemoteLog`](super::RemoteLog) gives each one.
pub async fn connect(
    endpoint: &str,
    ca_pem: &[u8],
    credentials: Credentials,
) -> Result<AuditClient> {
    connect_expecting(endpoint, ca_pem, credentials, None).await
}

/// [`connect`], checking the service's certificate for `server_name` instead
/// of the endpoint's host (`kubectl --tls-server-name`): for an endpoint
/// reached by another name than its certificate's, such as a Service's
/// cluster IP or a port-forward.
pub async fn connect_expecting(
    endpoint: &str,
    ca_pem: &[u8],
    credentials: Credentials,
    server_name: Option<&str>,
) -> Result<AuditClient> {
    let failed = |e: &dyn std::error::Error| {
        Error::Transport(format!("connecting to {endpoint}: {}", error_chain(e)))
    };
    if !endpoint.starts_with("https://") {
        return Err(Error::Config(format!(
            "{endpoint:?} is no https:// address: the ledger service speaks TLS only"
        )));
    }
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(name) = server_name {
        tls = tls.domain_name(name);
    }
    let channel = Channel::from_shared(endpoint.to_owned())
        .map_err(|e| Error::Config(format!("{endpoint:?} is no URL: {e}")))?
        .tls_config(tls)
        .map_err(|e| failed(&e))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT)
        .keep_alive_while_idle(true);
    // tonic's connect timeout covers TCP only, not the TLS handshake.
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, channel.connect())
        .await
        .map_err(|_| {
            Error::Transport(format!(
                "connecting to {endpoint}: no TLS handshake within {} s",
                CONNECT_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| failed(&e))?;
    Ok(AuditServiceClient::with_interceptor(channel, credentials)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_REQUEST_BYTES))
}

/// The request that appends `entry`, which must be valid and carry no time
/// (the ledger assigns it).
pub fn append_request(entry: &Entry) -> Result<AppendRequest> {
    entry.validate()?;
    if entry.time.is_some() {
        return Err(Error::Ledger(openmodel_ledger::Error::InvalidEntry(
            "\"time\" is assigned by the ledger when the entry is appended; leave it unset".into(),
        )));
    }
    Ok(AppendRequest {
        entry: entry.canonical_bytes()?,
    })
}

/// An entry as received, parsed; its leaf bytes are kept as they came, for
/// hashing. Bytes that are no logged entry are [`openmodel_ledger::Error::Tampered`].
pub fn stored_entry(logged: LoggedEntry) -> Result<StoredEntry> {
    Ok(StoredEntry::from_leaf(logged.index, logged.leaf)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(credentials: &mut Credentials) -> Option<String> {
        let request = credentials.call(Request::new(())).unwrap();
        request
            .metadata()
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn tokens_are_sent_as_bearer_headers() {
        assert_eq!(sent(&mut Credentials::none()), None);
        assert_eq!(
            sent(&mut Credentials::token("abc.def\n").unwrap()).as_deref(),
            Some("Bearer abc.def")
        );
        for bad in ["", "a b", "é"] {
            assert!(Credentials::token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn token_files_are_read_when_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let mut credentials = Credentials::token_file(&path);
        let err = credentials.call(Request::new(())).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("token file"), "{}", err.message());
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(sent(&mut credentials).as_deref(), Some("Bearer first"));
        // Within the refresh interval the token read is reused.
        std::fs::write(&path, "second\n").unwrap();
        assert_eq!(sent(&mut credentials).as_deref(), Some("Bearer first"));
    }

    #[test]
    fn entries_go_out_as_drafts_and_come_back_parsed() {
        use openmodel_ledger::entry::{EntryBody, KeyEvent, LedgerKey, Source, Timestamp};

        let mut entry = Entry {
            appender: None,
            time: None,
            cluster: "c".into(),
            object: None,
            actor: None,
            source: Source::Cli,
            dedupe_key: Some("k".into()),
            body: EntryBody::LedgerKey(LedgerKey {
                event: KeyEvent::Created,
                key: openmodel_ledger::note::Signer::generate("unit.test/log")
                    .unwrap()
                    .verifier()
                    .to_string(),
            }),
        };
        let request = append_request(&entry).unwrap();
        assert_eq!(Entry::parse_draft(&request.entry).unwrap(), entry);

        entry.time = Some(Timestamp(1_000_000));
        assert!(append_request(&entry).is_err(), "the ledger assigns time");
        let leaf = entry.canonical_bytes().unwrap();
        let stored = stored_entry(LoggedEntry {
            index: 4,
            leaf: leaf.clone(),
        })
        .unwrap();
        assert_eq!((stored.index, stored.leaf, stored.entry), (4, leaf, entry));
        assert!(
            stored_entry(LoggedEntry {
                index: 4,
                leaf: b"{}".to_vec()
            })
            .is_err()
        );
    }

    #[tokio::test]
    async fn a_service_that_accepts_and_says_nothing_fails_the_connect_in_time() {
        // A peer that takes the TCP connection and never answers the TLS
        // handshake.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                kept.push(socket);
            }
        });
        let started = Instant::now();
        let err = connect(&format!("https://{addr}"), b"", Credentials::none())
            .await
            .err()
            .unwrap()
            .to_string();
        let waited = started.elapsed();
        assert!(err.contains("no TLS handshake within 10 s"), "{err}");
        assert!(
            waited >= CONNECT_TIMEOUT && waited < CONNECT_TIMEOUT + Duration::from_secs(5),
            "{waited:?}"
        );
        held.abort();
    }

    #[tokio::test]
    async fn plain_http_addresses_are_refused() {
        let err = connect("http://127.0.0.1:1", b"", Credentials::none())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("TLS only"), "{err}");
    }
}
