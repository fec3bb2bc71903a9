//! Ledger entries: what is recorded, and its exact bytes.
//!
//! An entry is an envelope (schema version, time, cluster, the Kubernetes
//! object it is about, who acted, through which path, and an optional dedupe
//! key) plus a kind and its kind-specific `data`:
//!
//! ```json
//! {"actor":{"groups":["system:authenticated"],"uid":"42","username":"alice"},
//!  "cluster":"prod-eu","data":{"digest":"sha256:…","source":"hf://org/model@abc"},
//!  "dedupeKey":"uid-123/weights/sha256:…","kind":"weights.verified",
//!  "object":{"apiVersion":"serving.openmodel.dev/v1alpha1","kind":"OpenModel",
//!            "name":"minilm","namespace":"search","uid":"uid-123","generation":3},
//!  "source":"controller","time":"2026-11-28T15:36:50.123456Z","v":1}
//! ```
//!
//! The leaf bytes are the RFC 8785 (JCS) canonical JSON of the entry, at most
//! [`MAX_ENTRY_SIZE`] bytes. `time` is assigned by the ledger when the entry
//! is appended and never decreases along the log, so a time range is a
//! contiguous index range; callers submit entries without it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use crate::tiles::MAX_ENTRY_SIZE;
use crate::{Error, Result};

/// Envelope schema version written by this build.
pub const ENTRY_VERSION: u32 = 1;

/// Microseconds since the Unix epoch, UTC; printed as RFC 3339 with six
/// fractional digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The current time.
    pub fn now() -> Timestamp {
        let now = OffsetDateTime::now_utc();
        Timestamp((now.unix_timestamp_nanos() / 1000) as i64)
    }

    /// Parses RFC 3339 (`2026-11-28T15:36:50Z`, any fraction, any offset) or
    /// a plain date (`2026-11-28`, midnight UTC).
    pub fn parse(s: &str) -> Result<Timestamp> {
        let dt = OffsetDateTime::parse(s, &Rfc3339)
            .or_else(|_| OffsetDateTime::parse(&format!("{s}T00:00:00Z"), &Rfc3339))
            .map_err(|_| {
                Error::InvalidQuery(format!(
                    "time {s:?} is neither RFC 3339 (2026-11-28T15:36:50Z) nor a date (2026-11-28)"
                ))
            })?;
        Ok(Timestamp((dt.unix_timestamp_nanos() / 1000) as i64))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1000)
            .map_err(|_| fmt::Error)?;
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second(),
            dt.microsecond()
        )
    }
}

/// The Kubernetes object an entry is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRef {
    /// e.g. `serving.openmodel.dev/v1alpha1`.
    pub api_version: String,
    /// e.g. `OpenModel`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The object's UID, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// `metadata.generation`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// Who made a change, as Kubernetes authenticated them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Actor {
    /// User name.
    pub username: String,
    /// User UID, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// The path through which an entry was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The validating admission webhook.
    Admission,
    /// The operator's reconcile loop.
    Controller,
    /// A person, through the command line.
    Cli,
}

/// Operation of an admission request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Operation {
    /// Object created.
    Create,
    /// Object updated.
    Update,
    /// Object deleted.
    Delete,
}

/// `spec.changed`: a change to an OpenModel, with who made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpecChanged {
    /// Admission operation.
    pub operation: Operation,
    /// RFC 6902 JSON Patch from the old spec to the new one.
    pub patch: Vec<Value>,
    /// UID of the admission request, when recorded by the webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_uid: Option<String>,
}

/// `dataset.referenced`: a dataset the model declares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatasetReferenced {
    /// Dataset name.
    pub name: String,
    /// Where it lives.
    pub uri: String,
    /// Content digest, `sha256:<hex>`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// License identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Role: training, evaluation, fine-tuning, …
    pub role: String,
}

/// `weights.verified`: a pod fetched weights and their digest matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightsVerified {
    /// Manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// Where the weights came from.
    pub source: String,
    /// The pod that verified them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
}

/// `model.deployed`: a rollout of verified weights completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelDeployed {
    /// Manifest digest now served.
    pub digest: String,
    /// Ready replicas.
    pub replicas: u32,
    /// Server image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Index of the `weights.verified` entry for these weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_entry: Option<u64>,
}

/// `model.retired`: the model stopped being served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelRetired {
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Digest that was served last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_digest: Option<String>,
}

/// What happened to a ledger key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyEvent {
    /// The log was created with this key.
    Created,
    /// The log now signs with this key.
    Rotated,
}

/// `ledger.key`: a signing key event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LedgerKey {
    /// The event.
    pub event: KeyEvent,
    /// The verifier key (`name+id+base64`).
    pub key: String,
}

/// The kind of an entry and its kind-specific data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data")]
pub enum EntryBody {
    /// `spec.changed`
    #[serde(rename = "spec.changed")]
    SpecChanged(SpecChanged),
    /// `dataset.referenced`
    #[serde(rename = "dataset.referenced")]
    DatasetReferenced(DatasetReferenced),
    /// `weights.verified`
    #[serde(rename = "weights.verified")]
    WeightsVerified(WeightsVerified),
    /// `model.deployed`
    #[serde(rename = "model.deployed")]
    ModelDeployed(ModelDeployed),
    /// `model.retired`
    #[serde(rename = "model.retired")]
    ModelRetired(ModelRetired),
    /// `ledger.key`
    #[serde(rename = "ledger.key")]
    LedgerKey(LedgerKey),
}

/// Every kind name, for help texts and validation.
pub const KINDS: [&str; 6] = [
    "spec.changed",
    "dataset.referenced",
    "weights.verified",
    "model.deployed",
    "model.retired",
    "ledger.key",
];

impl EntryBody {
    /// The kind name, e.g. `weights.verified`.
    pub fn kind(&self) -> &'static str {
        match self {
            EntryBody::SpecChanged(_) => KINDS[0],
            EntryBody::DatasetReferenced(_) => KINDS[1],
            EntryBody::WeightsVerified(_) => KINDS[2],
            EntryBody::ModelDeployed(_) => KINDS[3],
            EntryBody::ModelRetired(_) => KINDS[4],
            EntryBody::LedgerKey(_) => KINDS[5],
        }
    }
}

/// One ledger entry. `time` is `None` until the ledger assigns it.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// When the ledger appended it.
    pub time: Option<Timestamp>,
    /// Cluster name.
    pub cluster: String,
    /// The object it is about (`None` only for `ledger.key`).
    pub object: Option<ObjectRef>,
    /// Who acted (`None` for the system itself).
    pub actor: Option<Actor>,
    /// Recording path.
    pub source: Source,
    /// Makes a retried append idempotent: a second append with the same key
    /// returns the first entry's index instead of logging twice.
    pub dedupe_key: Option<String>,
    /// Kind and data.
    pub body: EntryBody,
}

/// The JSON shape of an entry.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Wire {
    v: u32,
    kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    cluster: String,
    object: Option<ObjectRef>,
    actor: Option<Actor>,
    source: Source,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dedupe_key: Option<String>,
    data: Value,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidEntry(msg.into())
}

/// Checks the `sha256:<64 lowercase hex>` form.
pub fn check_digest(field: &str, digest: &str) -> Result<()> {
    let ok = digest.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    });
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{field} {digest:?} is not a digest of the form sha256:<64 lowercase hex digits>"
        )))
    }
}

fn check_non_empty(field: &str, value: &str) -> Result<()> {
    if value.trim().is_empty() {
        return Err(invalid(format!("{field} must not be empty")));
    }
    Ok(())
}

const PATCH_OPS: [&str; 6] = ["add", "remove", "replace", "move", "copy", "test"];

fn check_patch(patch: &[Value]) -> Result<()> {
    for (i, op) in patch.iter().enumerate() {
        let name = op.get("op").and_then(Value::as_str);
        if !name.is_some_and(|n| PATCH_OPS.contains(&n)) {
            return Err(invalid(format!(
                "data.patch[{i}] needs \"op\" set to one of {PATCH_OPS:?} (RFC 6902)"
            )));
        }
        let path = op.get("path").and_then(Value::as_str);
        if !path.is_some_and(|p| p.is_empty() || p.starts_with('/')) {
            return Err(invalid(format!(
                "data.patch[{i}] needs \"path\", a JSON Pointer such as \"/spec/runtime/replicas\""
            )));
        }
    }
    Ok(())
}

impl Entry {
    /// Parses an entry to append: JSON without `time` (the ledger assigns it).
    pub fn parse_draft(json: &[u8]) -> Result<Entry> {
        Self::parse_wire(json, false)
    }

    /// Parses a logged entry (leaf bytes), which must carry its time.
    pub fn parse_logged(leaf: &[u8]) -> Result<Entry> {
        Self::parse_wire(leaf, true)
    }

    fn parse_wire(json: &[u8], logged: bool) -> Result<Entry> {
        if json.len() > MAX_ENTRY_SIZE {
            return Err(Error::EntryTooLarge {
                size: json.len(),
                max: MAX_ENTRY_SIZE,
            });
        }
        let wire: Wire = serde_json::from_slice(json).map_err(|e| invalid(e.to_string()))?;
        if wire.v != ENTRY_VERSION {
            return Err(invalid(format!(
                "entry schema version {} is not supported (this build writes and reads v{ENTRY_VERSION})",
                wire.v
            )));
        }
        match (logged, &wire.time) {
            (false, Some(_)) => {
                return Err(invalid(
                    "\"time\" is assigned by the ledger when the entry is appended; remove it",
                ));
            }
            (true, None) => return Err(invalid("a logged entry must carry \"time\"")),
            _ => {}
        }
        if !KINDS.contains(&wire.kind.as_str()) {
            return Err(invalid(format!(
                "unknown kind {:?}; kinds are {KINDS:?}",
                wire.kind
            )));
        }
        let body: EntryBody = serde_json::from_value(serde_json::json!({
            "kind": wire.kind,
            "data": wire.data,
        }))
        .map_err(|e| invalid(format!("data of {}: {e}", wire.kind)))?;
        let time = wire
            .time
            .map(|t| {
                let ts = Timestamp::parse(&t)
                    .map_err(|_| invalid(format!("time {t:?} is not RFC 3339")))?;
                if ts.to_string() != t {
                    return Err(invalid(format!(
                        "time {t:?} is not in the ledger's form (UTC, six fractional digits)"
                    )));
                }
                Ok(ts)
            })
            .transpose()?;
        let entry = Entry {
            time,
            cluster: wire.cluster,
            object: wire.object,
            actor: wire.actor,
            source: wire.source,
            dedupe_key: wire.dedupe_key,
            body,
        };
        entry.validate()?;
        Ok(entry)
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self) -> Result<()> {
        check_non_empty("cluster", &self.cluster)?;
        match (&self.object, &self.body) {
            (None, EntryBody::LedgerKey(_)) => {}
            (None, body) => {
                return Err(invalid(format!(
                    "{} entries must name the object they are about",
                    body.kind()
                )));
            }
            (Some(o), _) => {
                for (field, value) in [
                    ("object.apiVersion", &o.api_version),
                    ("object.kind", &o.kind),
                    ("object.namespace", &o.namespace),
                    ("object.name", &o.name),
                ] {
                    check_non_empty(field, value)?;
                }
            }
        }
        if let Some(a) = &self.actor {
            check_non_empty("actor.username", &a.username)?;
        }
        if let Some(k) = &self.dedupe_key {
            check_non_empty("dedupeKey", k)?;
        }
        match &self.body {
            EntryBody::SpecChanged(s) => check_patch(&s.patch)?,
            EntryBody::DatasetReferenced(d) => {
                check_non_empty("data.name", &d.name)?;
                check_non_empty("data.uri", &d.uri)?;
                check_non_empty("data.role", &d.role)?;
                if let Some(digest) = &d.digest {
                    check_digest("data.digest", digest)?;
                }
            }
            EntryBody::WeightsVerified(w) => {
                check_digest("data.digest", &w.digest)?;
                check_non_empty("data.source", &w.source)?;
            }
            EntryBody::ModelDeployed(m) => check_digest("data.digest", &m.digest)?,
            EntryBody::ModelRetired(m) => {
                if let Some(d) = &m.last_digest {
                    check_digest("data.lastDigest", d)?;
                }
            }
            EntryBody::LedgerKey(k) => {
                crate::note::Verifier::from_str(&k.key)
                    .map_err(|e| invalid(format!("data.key: {e}")))?;
            }
        }
        Ok(())
    }

    /// The kind name.
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }

    /// The leaf bytes: RFC 8785 canonical JSON, at most [`MAX_ENTRY_SIZE`].
    pub fn canonical_bytes(&self) -> Result<Vec<u8>> {
        let tagged = serde_json::to_value(&self.body).map_err(|e| invalid(e.to_string()))?;
        let data = tagged.get("data").cloned().unwrap_or(Value::Null);
        let wire = Wire {
            v: ENTRY_VERSION,
            kind: self.kind().to_owned(),
            time: self.time.map(|t| t.to_string()),
            cluster: self.cluster.clone(),
            object: self.object.clone(),
            actor: self.actor.clone(),
            source: self.source,
            dedupe_key: self.dedupe_key.clone(),
            data,
        };
        let bytes = serde_json_canonicalizer::to_vec(&wire).map_err(|e| invalid(e.to_string()))?;
        if bytes.len() > MAX_ENTRY_SIZE {
            return Err(Error::EntryTooLarge {
                size: bytes.len(),
                max: MAX_ENTRY_SIZE,
            });
        }
        Ok(bytes)
    }

    /// Digests this entry mentions (weights and datasets), for queries.
    pub fn digests(&self) -> Vec<&str> {
        match &self.body {
            EntryBody::WeightsVerified(w) => vec![&w.digest],
            EntryBody::ModelDeployed(m) => vec![&m.digest],
            EntryBody::ModelRetired(m) => m.last_digest.as_deref().into_iter().collect(),
            EntryBody::DatasetReferenced(d) => d.digest.as_deref().into_iter().collect(),
            EntryBody::SpecChanged(_) | EntryBody::LedgerKey(_) => vec![],
        }
    }

    /// Dataset URIs this entry mentions, for queries.
    pub fn dataset_uris(&self) -> Vec<&str> {
        match &self.body {
            EntryBody::DatasetReferenced(d) => vec![&d.uri],
            _ => vec![],
        }
    }
}

/// True when `bytes` are exactly the RFC 8785 canonical form of their JSON.
pub fn is_canonical(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes)
        .ok()
        .and_then(|v| serde_json_canonicalizer::to_vec(&v).ok())
        .is_some_and(|c| c == bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> &'static str {
        r#"{"v":1,"kind":"weights.verified","cluster":"prod","source":"controller","actor":null,
            "object":{"apiVersion":"serving.openmodel.dev/v1alpha1","kind":"OpenModel","namespace":"search","name":"minilm","generation":3},
            "data":{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","source":"file:///m"}}"#
    }

    #[test]
    fn canonical_bytes_are_jcs_and_round_trip() {
        let mut e = Entry::parse_draft(sample().as_bytes()).unwrap();
        e.time = Some(Timestamp(1_700_000_000_123_456));
        let bytes = e.canonical_bytes().unwrap();
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.starts_with(r#"{"actor":null,"cluster":"prod","data":{"digest":"sha256:"#),
            "{text}"
        );
        assert!(
            text.contains(r#""time":"2023-11-14T22:13:20.123456Z","v":1}"#),
            "{text}"
        );
        assert!(is_canonical(&bytes));
        assert_eq!(Entry::parse_logged(&bytes).unwrap(), e);
    }

    #[test]
    fn bad_entries_name_the_problem() {
        let cases = [
            (sample().replace("\"v\":1", "\"v\":2"), "version 2"),
            (
                sample().replace("weights.verified", "weights.eaten"),
                "unknown kind",
            ),
            (
                sample().replace("sha256:0000", "sha256:zz00"),
                "data.digest",
            ),
            (
                sample().replace("\"cluster\":\"prod\"", "\"cluster\":\"\""),
                "cluster",
            ),
            (
                sample().replace(
                    "\"actor\":null",
                    "\"actor\":null,\"time\":\"2026-01-01T00:00:00Z\"",
                ),
                "assigned by the ledger",
            ),
            (
                sample().replace("\"actor\":null", "\"actor\":null,\"color\":1"),
                "unknown field",
            ),
            (
                sample().replace("\"source\":\"controller\"", "\"source\":\"magic\""),
                "unknown variant",
            ),
        ];
        for (json, needle) in cases {
            let err = Entry::parse_draft(json.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn oversized_entries_are_refused() {
        let big = "x".repeat(MAX_ENTRY_SIZE);
        let json = sample().replace("file:///m", &big);
        assert!(matches!(
            Entry::parse_draft(json.as_bytes()),
            Err(Error::EntryTooLarge { .. })
        ));
        let mut e = Entry::parse_draft(sample().as_bytes()).unwrap();
        if let EntryBody::WeightsVerified(w) = &mut e.body {
            w.source = "y".repeat(MAX_ENTRY_SIZE - 200);
        }
        assert!(matches!(
            e.canonical_bytes(),
            Err(Error::EntryTooLarge { .. })
        ));
    }

    #[test]
    fn timestamps_parse_dates_and_offsets() {
        assert_eq!(
            Timestamp::parse("1970-01-02").unwrap(),
            Timestamp(86_400_000_000)
        );
        assert_eq!(
            Timestamp::parse("1970-01-01T01:00:00+01:00").unwrap(),
            Timestamp(0)
        );
        assert!(Timestamp::parse("yesterday").is_err());
    }

    proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = Entry::parse_draft(&bytes);
            let _ = Entry::parse_logged(&bytes);
        }

        #[test]
        fn mutated_entries_never_panic(pos in 0usize..600, byte in any::<u8>()) {
            let mut bytes = sample().as_bytes().to_vec();
            let at = pos % bytes.len();
            bytes[at] = byte;
            let _ = Entry::parse_draft(&bytes);
        }
    }
}
