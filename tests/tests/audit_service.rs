//! The ledger service (`openmodel_ledger_service`, what `openmodel-ledger
//! serve` runs) against the real kube-apiserver: bearer tokens from the
//! TokenRequest API checked with TokenReview, RBAC on the virtual
//! subresource `openmodels/audit` asked with SubjectAccessReview, TLS on
//! both ports, proofs that verify with the ledger's own verifier, appends
//! that are idempotent, watches that follow the log, and the tiles that
//! mirrors and witnesses read.
//!
//! Every test starts its own service on a fresh ledger seeded with entries
//! in two namespaces of its own (A at indexes 1, 3, 5; B at 2, 4; the
//! ledger's key entry at 0); all share one control plane.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use kube::Client;
use openmodel_ledger::checkpoint::SignedCheckpoint;
use openmodel_ledger::hash::leaf_hash;
use openmodel_ledger::proof_file::TlogProof;
use openmodel_ledger::tiles::{TileResource, bundles_for_size, tiles_for_size};
use openmodel_ledger::tree::{verify_consistency, verify_inclusion};
use openmodel_ledger_service::client::{
    AuditClient, Credentials, append_request, connect, stored_entry,
};
use openmodel_proto::audit::{
    AppendRequest, EntryFilter, GetCheckpointRequest, GetConsistencyProofRequest, GetEntryRequest,
    GetInclusionProofRequest, ListEntriesRequest, LoggedEntry, WatchEntriesRequest,
};
use openmodel_tests::audit_access::{Grant, audit_reader};
use openmodel_tests::entries::weights_verified;
use openmodel_tests::{
    ControlPlane, LedgerService, create_namespace, service_account_token, service_account_user,
    serving_certificate,
};
use tonic::{Code, Status};

async fn control_plane() -> &'static ControlPlane {
    ControlPlane::shared()
        .await
        .unwrap_or_else(|err| panic!("starting the control plane: {err}"))
}

/// One test's world: two namespaces, a service on a seeded ledger.
struct Fixture {
    admin: Client,
    /// Namespace A: entries 1, 3, 5; the service accounts live here.
    a: String,
    /// Namespace B: entries 2, 4.
    b: String,
    service: LedgerService,
}

impl Fixture {
    /// Sets up for `test`; `appender` names a service account (in A) that
    /// may append.
    async fn new(test: &str, appender: Option<&str>) -> Result<Fixture> {
        let control_plane = control_plane().await;
        let admin = control_plane.client()?;
        let a = create_namespace(&admin, &format!("{test}_a")).await?;
        let b = create_namespace(&admin, &format!("{test}_b")).await?;
        let entries = vec![
            weights_verified(&a, "m1", 1),
            weights_verified(&b, "m2", 2),
            weights_verified(&a, "m1", 3),
            weights_verified(&b, "m2", 4),
            weights_verified(&a, "m3", 5),
        ];
        let append_users = appender
            .map(|name| service_account_user(&a, name))
            .into_iter()
            .collect();
        let service = LedgerService::start(admin.clone(), entries, append_users).await?;
        Ok(Fixture {
            admin,
            a,
            b,
            service,
        })
    }

    /// A service account `name` in namespace A with `grant`, and its token;
    /// returns once RBAC says the grant holds.
    async fn identity(&self, name: &str, grant: Grant<'_>) -> Result<String> {
        Ok(audit_reader(&self.admin, &self.a, name, grant).await?)
    }

    async fn client(&self, token: Option<&str>) -> Result<AuditClient> {
        let credentials = match token {
            Some(token) => Credentials::token(token)?,
            None => Credentials::none(),
        };
        Ok(self.service.client(credentials).await?)
    }
}

/// A filter on one namespace.
fn in_namespace(namespace: &str) -> Option<EntryFilter> {
    Some(EntryFilter {
        namespace: namespace.into(),
        ..EntryFilter::default()
    })
}

fn list(filter: Option<EntryFilter>) -> ListEntriesRequest {
    ListEntriesRequest {
        filter,
        start: 0,
        limit: 0,
    }
}

/// The status of a call that must fail with `code`.
fn refused<T: std::fmt::Debug>(
    result: Result<tonic::Response<T>, Status>,
    code: Code,
) -> Result<Status> {
    match result {
        Err(status) if status.code() == code => Ok(status),
        other => bail!("expected {code:?}, got {other:?}"),
    }
}

fn indexes(entries: &[LoggedEntry]) -> Vec<u64> {
    entries.iter().map(|e| e.index).collect()
}

#[tokio::test]
async fn a_reader_of_one_namespace_sees_only_its_entries() -> Result<()> {
    let f = Fixture::new("audit_one_namespace", None).await?;
    let token = f.identity("reader", Grant::Namespace(&f.a)).await?;
    let mut reader = f.client(Some(&token)).await?;

    let page = reader
        .list_entries(list(in_namespace(&f.a)))
        .await?
        .into_inner();
    assert_eq!(indexes(&page.entries), [1, 3, 5]);
    for logged in page.entries {
        let entry = stored_entry(logged)?;
        assert_eq!(entry.entry.object.context("object")?.namespace, f.a);
    }
    let checkpoint = SignedCheckpoint::open(&page.checkpoint, f.service.verifier())?;
    assert_eq!(checkpoint.checkpoint.size, 6);
    assert_eq!(
        (page.scanned_start, page.scanned_end, page.next),
        (0, 6, None)
    );
    let one_model = EntryFilter {
        namespace: f.a.clone(),
        name: "m1".into(),
        ..EntryFilter::default()
    };
    let page = reader
        .list_entries(list(Some(one_model)))
        .await?
        .into_inner();
    assert_eq!(indexes(&page.entries), [1, 3]);

    // B, every namespace, and a filter that names no namespace: refused.
    let status = refused(
        reader.list_entries(list(in_namespace(&f.b))).await,
        Code::PermissionDenied,
    )?;
    let user = service_account_user(&f.a, "reader");
    assert!(status.message().contains(&user), "{}", status.message());
    assert!(
        status.message().contains("openmodels/audit"),
        "{}",
        status.message()
    );
    assert!(status.message().contains(&f.b), "{}", status.message());
    let status = refused(
        reader.list_entries(list(None)).await,
        Code::PermissionDenied,
    )?;
    assert!(
        status.message().contains("cluster-wide"),
        "{}",
        status.message()
    );
    let by_kind = EntryFilter {
        kind: "weights.verified".into(),
        ..EntryFilter::default()
    };
    refused(
        reader.list_entries(list(Some(by_kind))).await,
        Code::PermissionDenied,
    )?;

    // Single entries: those of A only; the key entry belongs to no namespace.
    let entry = reader
        .get_entry(GetEntryRequest { index: 3 })
        .await?
        .into_inner();
    assert_eq!(entry.entry.context("entry")?.index, 3);
    for index in [0, 2, 4] {
        refused(
            reader.get_entry(GetEntryRequest { index }).await,
            Code::PermissionDenied,
        )?;
        refused(
            reader
                .get_inclusion_proof(GetInclusionProofRequest {
                    index,
                    tree_size: 0,
                })
                .await,
            Code::PermissionDenied,
        )?;
    }
    let proof = reader
        .get_inclusion_proof(GetInclusionProofRequest {
            index: 5,
            tree_size: 0,
        })
        .await?
        .into_inner();
    TlogProof::parse(&proof.tlog_proof)?.verify(f.service.verifier(), None)?;

    // Hashes only: any authenticated user.
    reader.get_checkpoint(GetCheckpointRequest {}).await?;

    // A watch of B is refused before it starts.
    let watch = WatchEntriesRequest {
        filter: in_namespace(&f.b),
        start: 0,
    };
    refused(reader.watch_entries(watch).await, Code::PermissionDenied)?;
    Ok(())
}

#[tokio::test]
async fn callers_without_a_token_or_the_permission_are_refused() -> Result<()> {
    let f = Fixture::new("audit_refused", Some("operator")).await?;

    for token in [None, Some("not-a-kubernetes-token")] {
        let mut client = f.client(token).await?;
        let status = refused(
            client.get_checkpoint(GetCheckpointRequest {}).await,
            Code::Unauthenticated,
        )?;
        let expected = if token.is_none() {
            "no bearer token"
        } else {
            "did not accept"
        };
        assert!(status.message().contains(expected), "{}", status.message());
        refused(
            client.list_entries(list(in_namespace(&f.a))).await,
            Code::Unauthenticated,
        )?;
        refused(
            client.get_entry(GetEntryRequest { index: 1 }).await,
            Code::Unauthenticated,
        )?;
        refused(
            client
                .get_consistency_proof(GetConsistencyProofRequest {
                    old_size: 1,
                    new_size: 0,
                })
                .await,
            Code::Unauthenticated,
        )?;
        refused(
            client
                .append(append_request(&weights_verified(&f.a, "m9", 9))?)
                .await,
            Code::Unauthenticated,
        )?;
        let watch = WatchEntriesRequest {
            filter: in_namespace(&f.a),
            start: 0,
        };
        refused(client.watch_entries(watch).await, Code::Unauthenticated)?;
    }

    // A real token of a reader, but issued for the API server's audience,
    // not the ledger's: the service does not take it, so a token that
    // works against the API server is never one it is sent.
    let api_token = service_account_token(&f.admin, &f.a, "api-audience").await?;
    let mut api_audience = f.client(Some(&api_token)).await?;
    let status = refused(
        api_audience.get_checkpoint(GetCheckpointRequest {}).await,
        Code::Unauthenticated,
    )?;
    assert!(
        status.message().contains("--audience openmodel-ledger"),
        "{}",
        status.message()
    );

    // Authenticated, but granted nothing: hashes yes, entries no.
    let token = f.identity("stranger", Grant::Nowhere).await?;
    let mut stranger = f.client(Some(&token)).await?;
    let status = refused(
        stranger.list_entries(list(in_namespace(&f.a))).await,
        Code::PermissionDenied,
    )?;
    assert!(
        status.message().contains("RoleBinding"),
        "{}",
        status.message()
    );
    refused(
        stranger.get_entry(GetEntryRequest { index: 1 }).await,
        Code::PermissionDenied,
    )?;
    let checkpoint = stranger
        .get_checkpoint(GetCheckpointRequest {})
        .await?
        .into_inner();
    assert_eq!(checkpoint.tree_size, 6);
    stranger
        .get_consistency_proof(GetConsistencyProofRequest {
            old_size: 2,
            new_size: 0,
        })
        .await?;

    // A client that does not trust the service's CA gets no connection.
    let other_ca = serving_certificate(&["127.0.0.1"])?.ca_pem;
    let err = connect(
        &f.service.grpc_endpoint(),
        other_ca.as_bytes(),
        Credentials::token(&token)?,
    )
    .await
    .err()
    .context("a connection trusting another CA")?;
    assert!(err.to_string().contains("connecting to"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_cluster_wide_reader_sees_everything_with_proofs_that_verify() -> Result<()> {
    let f = Fixture::new("audit_cluster", None).await?;
    let token = f.identity("auditor", Grant::Cluster).await?;
    let mut auditor = f.client(Some(&token)).await?;
    let verifier = f.service.verifier();
    let ledger = f.service.read_ledger()?;

    // Pages of two chain to the whole log, byte for byte as stored.
    let mut entries = Vec::new();
    let mut start = 0;
    loop {
        let page = auditor
            .list_entries(ListEntriesRequest {
                filter: None,
                start,
                limit: 2,
            })
            .await?
            .into_inner();
        ensure!(page.entries.len() <= 2, "a page of {}", page.entries.len());
        entries.extend(page.entries);
        match page.next {
            Some(next) => start = next,
            None => break,
        }
    }
    assert_eq!(indexes(&entries), [0, 1, 2, 3, 4, 5]);
    for logged in &entries {
        assert_eq!(logged.leaf, ledger.entry(logged.index)?.leaf);
    }

    let latest = auditor
        .get_checkpoint(GetCheckpointRequest {})
        .await?
        .into_inner();
    let signed = SignedCheckpoint::open(&latest.checkpoint, verifier)?;
    assert_eq!(
        (latest.tree_size, latest.origin.as_str()),
        (6, openmodel_tests::LEDGER_ORIGIN)
    );
    assert_eq!(latest.root_hash, signed.checkpoint.root.0);

    // Every entry's inclusion proof verifies, as hashes and as a tlog-proof.
    for logged in &entries {
        let proof = auditor
            .get_inclusion_proof(GetInclusionProofRequest {
                index: logged.index,
                tree_size: 0,
            })
            .await?
            .into_inner();
        let entry = proof.entry.context("the proven entry")?;
        assert_eq!(entry, *logged);
        let cp = SignedCheckpoint::open(&proof.checkpoint, verifier)?.checkpoint;
        verify_inclusion(
            entry.index,
            cp.size,
            &leaf_hash(&entry.leaf).0,
            &proof.hashes,
            &cp.root.0,
        )?;
        let file = TlogProof::parse(&proof.tlog_proof)?;
        assert_eq!(file.verify(verifier, None)?.checkpoint, cp);
        assert_eq!(file.extra.as_deref(), Some(entry.leaf.as_slice()));
    }
    // In an older signed tree, too.
    let proof = auditor
        .get_inclusion_proof(GetInclusionProofRequest {
            index: 2,
            tree_size: 4,
        })
        .await?
        .into_inner();
    let cp = TlogProof::parse(&proof.tlog_proof)?
        .verify(verifier, None)?
        .checkpoint;
    assert_eq!(cp.size, 4);
    refused(
        auditor
            .get_inclusion_proof(GetInclusionProofRequest {
                index: 99,
                tree_size: 0,
            })
            .await,
        Code::OutOfRange,
    )?;

    // The log only grew: from size 3 to the latest and to 5.
    let old = ledger
        .checkpoint_at(3)?
        .context("a checkpoint of size 3")?
        .checkpoint;
    for new_size in [0, 5] {
        let proof = auditor
            .get_consistency_proof(GetConsistencyProofRequest {
                old_size: 3,
                new_size,
            })
            .await?
            .into_inner();
        let new = SignedCheckpoint::open(&proof.checkpoint, verifier)?.checkpoint;
        assert_eq!(new.size, if new_size == 0 { 6 } else { 5 });
        verify_consistency(3, new.size, &old.root.0, &new.root.0, &proof.hashes)?;
    }
    refused(
        auditor
            .get_consistency_proof(GetConsistencyProofRequest {
                old_size: 0,
                new_size: 0,
            })
            .await,
        Code::InvalidArgument,
    )?;
    Ok(())
}

#[tokio::test]
async fn appends_are_for_the_appender_only_and_idempotent() -> Result<()> {
    let f = Fixture::new("audit_append", Some("operator")).await?;
    let auditor_token = f.identity("auditor", Grant::Cluster).await?;
    let operator_token = f.identity("operator", Grant::Nowhere).await?;
    let mut auditor = f.client(Some(&auditor_token)).await?;
    let mut operator = f.client(Some(&operator_token)).await?;
    let entry = weights_verified(&f.a, "m4", 40);

    // Reading everything is no licence to write.
    let status = refused(
        auditor.append(append_request(&entry)?).await,
        Code::PermissionDenied,
    )?;
    assert!(
        status.message().contains("--append-user"),
        "{}",
        status.message()
    );

    let first = operator.append(append_request(&entry)?).await?.into_inner();
    assert_eq!(
        (first.index, first.tree_size, first.existing),
        (6, 7, false)
    );
    let logged = auditor
        .get_entry(GetEntryRequest { index: 6 })
        .await?
        .into_inner();
    let logged = stored_entry(logged.entry.context("entry")?)?;
    assert_eq!(first.leaf_hash, logged.leaf_hash().0);
    assert_eq!(first.time, logged.entry.time.context("time")?.to_string());
    // The service wrote who appended it, as the API server authenticated
    // the token.
    let appender = logged.entry.appender.context("the appender")?;
    assert_eq!(appender.username, service_account_user(&f.a, "operator"));
    assert!(appender.uid.is_some_and(|uid| !uid.is_empty()));

    // A retry names the same entry and logs nothing.
    let again = operator.append(append_request(&entry)?).await?.into_inner();
    assert_eq!((again.index, again.tree_size, again.existing), (6, 7, true));
    assert_eq!(again.leaf_hash, first.leaf_hash);
    // The same key for other content is a conflict.
    let mut other = weights_verified(&f.a, "m4", 41);
    other.dedupe_key = entry.dedupe_key.clone();
    let status = refused(
        operator.append(append_request(&other)?).await,
        Code::AlreadyExists,
    )?;
    assert!(
        status.message().contains("dedupe key"),
        "{}",
        status.message()
    );
    // Malformed entries, and entries that carry a time, are refused.
    for bad in [&b"{}"[..], br#"{"v":1}"#, b"not json"] {
        let request = AppendRequest {
            entry: bad.to_vec(),
        };
        refused(operator.append(request).await, Code::InvalidArgument)?;
    }
    // An entry that names its own appender is refused: only the service
    // writes it.
    let mut claimed = weights_verified(&f.a, "m6", 60);
    claimed.appender = Some(openmodel_ledger::entry::Appender {
        uid: None,
        username: "system:serviceaccount:kube-system:someone-else".into(),
    });
    let request = AppendRequest {
        entry: claimed.canonical_bytes()?,
    };
    let status = refused(operator.append(request).await, Code::InvalidArgument)?;
    assert!(
        status.message().contains("appender"),
        "{}",
        status.message()
    );
    let mut timed = weights_verified(&f.a, "m5", 50);
    timed.time = Some(openmodel_ledger::entry::Timestamp::now());
    let request = AppendRequest {
        entry: timed.canonical_bytes()?,
    };
    refused(operator.append(request).await, Code::InvalidArgument)?;

    let checkpoint = auditor
        .get_checkpoint(GetCheckpointRequest {})
        .await?
        .into_inner();
    assert_eq!(checkpoint.tree_size, 7);
    f.service.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_watch_follows_the_log_within_its_namespace() -> Result<()> {
    let f = Fixture::new("audit_watch", Some("operator")).await?;
    let reader_token = f.identity("reader", Grant::Namespace(&f.a)).await?;
    let operator_token = f.identity("operator", Grant::Nowhere).await?;
    let mut reader = f.client(Some(&reader_token)).await?;
    let mut operator = f.client(Some(&operator_token)).await?;

    let watch = |start| WatchEntriesRequest {
        filter: in_namespace(&f.a),
        start,
    };
    let mut from_start = reader.watch_entries(watch(0)).await?.into_inner();
    let mut from_four = reader.watch_entries(watch(4)).await?.into_inner();
    let next = async |stream: &mut tonic::Streaming<_>| -> Result<openmodel_proto::audit::WatchEntriesResponse> {
        tokio::time::timeout(Duration::from_secs(20), stream.message())
            .await
            .context("no message within 20 s")??
            .context("the stream ended")
    };

    // What is logged already comes first...
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let message = next(&mut from_start).await?;
        ensure!(!message.entries.is_empty(), "an empty message");
        SignedCheckpoint::open(&message.checkpoint, f.service.verifier())?;
        seen.extend(indexes(&message.entries));
    }
    assert_eq!(seen, [1, 3, 5]);
    assert_eq!(indexes(&next(&mut from_four).await?.entries), [5]);

    // ... then what is appended after the watch began, in A only.
    let b_entry = operator
        .append(append_request(&weights_verified(&f.b, "m2", 60))?)
        .await?
        .into_inner();
    let a_entry = operator
        .append(append_request(&weights_verified(&f.a, "m1", 61))?)
        .await?
        .into_inner();
    assert_eq!((b_entry.index, a_entry.index), (6, 7));
    for stream in [&mut from_start, &mut from_four] {
        let message = next(stream).await?;
        assert_eq!(indexes(&message.entries), [7]);
        let entry = stored_entry(message.entries[0].clone())?;
        assert_eq!(entry.leaf_hash().0.to_vec(), a_entry.leaf_hash);
        assert_eq!(message.scanned_end, 8);
    }

    // Stopping the service ends open watches: UNAVAILABLE, watch again.
    f.service.stop().await?;
    let ended = tokio::time::timeout(Duration::from_secs(20), from_start.message())
        .await
        .context("the watch did not end when the service stopped")?;
    match ended {
        Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        Ok(message) => bail!("expected UNAVAILABLE, got {message:?}"),
    }
    Ok(())
}

/// A GET over HTTPS trusting only `ca_pem`: status, content type, body.
async fn https_get(
    url: String,
    ca_pem: String,
    token: Option<String>,
) -> Result<(u16, String, Vec<u8>)> {
    tokio::task::spawn_blocking(move || {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let ca = Certificate::from_pem(ca_pem.as_bytes())?.to_owned();
        let agent = ureq::Agent::config_builder()
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::Specific(Arc::new(vec![ca])))
                    .build(),
            )
            .http_status_as_error(false)
            .build()
            .new_agent();
        let mut request = agent.get(&url);
        if let Some(token) = token {
            request = request.header("authorization", &format!("Bearer {token}"));
        }
        let mut response = request.call()?;
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = response.body_mut().read_to_vec()?;
        Ok((response.status().as_u16(), content_type, body))
    })
    .await?
}

#[tokio::test]
async fn tiles_are_served_over_tls_and_match_the_export() -> Result<()> {
    let f = Fixture::new("audit_tiles", None).await?;
    let reader_token = f.identity("reader", Grant::Namespace(&f.a)).await?;
    let auditor_token = f.identity("auditor", Grant::Cluster).await?;
    let get = |path: &str, token: Option<&str>| {
        https_get(
            f.service.tiles_url(path),
            f.service.ca_pem().to_owned(),
            token.map(str::to_owned),
        )
    };

    let ledger = f.service.read_ledger()?;
    let export = tempfile::tempdir()?;
    let bundle = export.path().join("bundle");
    ledger.export(&bundle)?;
    let size = ledger.checkpoint()?.checkpoint.size;

    // Hashes need no token.
    let (status, content_type, body) = get("checkpoint", None).await?;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "text/plain; charset=utf-8")
    );
    assert_eq!(body, std::fs::read(bundle.join("checkpoint"))?);
    for tile in tiles_for_size(size) {
        let path = TileResource::Hashes(tile).path();
        let (status, content_type, body) = get(&path, None).await?;
        assert_eq!(
            (status, content_type.as_str()),
            (200, "application/octet-stream"),
            "{path}"
        );
        assert_eq!(body, std::fs::read(bundle.join(&path))?, "{path}");
    }

    // Entry bundles carry entries of every namespace: cluster-wide only.
    for tile in bundles_for_size(size) {
        let path = TileResource::Entries(tile).path();
        assert_eq!(get(&path, None).await?.0, 401, "{path}");
        assert_eq!(get(&path, Some("garbage")).await?.0, 401, "{path}");
        let (status, _, body) = get(&path, Some(&reader_token)).await?;
        assert_eq!(status, 403, "{path}: {}", String::from_utf8_lossy(&body));
        let (status, _, body) = get(&path, Some(&auditor_token)).await?;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body, std::fs::read(bundle.join(&path))?, "{path}");
    }

    // Beyond the tree, malformed, or elsewhere.
    assert_eq!(get("tile/0/000.p/7", None).await?.0, 404);
    assert_eq!(get("tile/0/001", None).await?.0, 404);
    assert_eq!(get("tile/0/x000/000", None).await?.0, 400);
    assert_eq!(get("entries.jsonl", None).await?.0, 404);

    // TLS only: plain HTTP and clients that trust another CA get nothing.
    let plain = f
        .service
        .tiles_url("checkpoint")
        .replacen("https://", "http://", 1);
    let other_ca = serving_certificate(&["127.0.0.1"])?.ca_pem;
    ensure!(
        https_get(plain, f.service.ca_pem().to_owned(), None)
            .await
            .is_err(),
        "plain HTTP was answered"
    );
    ensure!(
        https_get(f.service.tiles_url("checkpoint"), other_ca, None)
            .await
            .is_err(),
        "a client trusting another CA was answered"
    );
    Ok(())
}
