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

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub use crate::tiles::MAX_ENTRY_SIZE;
use crate::{Error, Result};

/// Largest integer an entry may hold: 2^53, exact in an IEEE double.
const MAX_SAFE_INTEGER: u64 = 1 << 53;

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

/// Civil date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl fmt::Display for Timestamp {
    /// `YYYY-MM-DDTHH:MM:SS.ffffffZ`, UTC. Hand-rolled: the writer formats
    /// one per append.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.div_euclid(1_000_000);
        let micros = self.0.rem_euclid(1_000_000);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let sod = secs.rem_euclid(86_400);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{micros:06}Z",
            sod / 3600,
            sod / 60 % 60,
            sod % 60
        )
    }
}

/// The Kubernetes object an entry is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ObjectRef {
    /// e.g. `serving.openmodel.dev/v1alpha1`.
    pub api_version: String,
    /// `metadata.generation`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// e.g. `OpenModel`.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// The object's UID, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// Who made a change, as Kubernetes authenticated them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Actor {
    /// The authenticator's extra attributes (`userInfo.extra`), such as
    /// `authentication.kubernetes.io/credential-id` (which token or
    /// certificate was used) or those an impersonator set. Absent when
    /// empty, so entries without it serialize as before. Its keys are
    /// free-form, so it is written in RFC 8785 key order (UTF-16 code
    /// units, which a `BTreeMap`'s UTF-8 order is not beyond the BMP).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        serialize_with = "canonical_map"
    )]
    pub extra: BTreeMap<String, Vec<String>>,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// User UID, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// User name.
    pub username: String,
}

/// Who appended an entry, as the ledger service authenticated them (a
/// TokenReview of their bearer token). The service writes it into every
/// entry it appends and refuses it in a request, so no caller can claim
/// another's identity. Absent from entries written straight into a ledger
/// file (`openmodel audit`, a local ledger), whose writer is whoever may
/// write the file, and from entries logged before it existed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Appender {
    /// The user's UID, when the API server gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
    /// The user name, e.g.
    /// `system:serviceaccount:openmodel-system:openmodel-operator`.
    pub username: String,
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
    /// On a controller entry: the indexes of the admission entries (the
    /// webhook's `spec.changed`) whose patches, applied in log order to the
    /// spec recorded before, give this generation's spec. An admission entry
    /// that no controller entry names was never seen to take effect (a
    /// change refused after the webhook admitted it, a forged request, or
    /// one not reconciled yet). Absent when empty, so entries without it
    /// serialize as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub confirms: Vec<u64>,
    /// Admission operation.
    pub operation: Operation,
    /// RFC 6902 JSON Patch from the old spec to the new one.
    #[serde(serialize_with = "canonical_values")]
    pub patch: Vec<Value>,
    /// UID of one admission request for the change. Written by versions
    /// before the webhook's dedupe key named the change itself; kept so
    /// that their logs still parse and verify. The webhook no longer sets
    /// it: the API server calls a webhook again, with a new UID, when it
    /// retries a write, so it does not name one change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_uid: Option<String>,
}

/// `dataset.referenced`: a dataset the model declares.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DatasetReferenced {
    /// Content digest, `sha256:<hex>`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// License identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// Dataset name.
    pub name: String,
    /// Role: training, evaluation, fine-tuning, …
    pub role: String,
    /// Where it lives.
    pub uri: String,
}

/// `weights.verified`: a pod fetched weights and their digest matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightsVerified {
    /// Manifest digest, `sha256:<hex>`.
    pub digest: String,
    /// The pod that verified them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Where the weights came from.
    pub source: String,
}

/// `model.deployed`: a rollout of verified weights completed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelDeployed {
    /// Manifest digest now served.
    pub digest: String,
    /// Server image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Ready replicas.
    pub replicas: u32,
    /// Index of the `weights.verified` entry for these weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_entry: Option<u64>,
}

/// `model.retired`: the model stopped being served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ModelRetired {
    /// Digest that was served last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_digest: Option<String>,
    /// Why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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
    /// Who appended it, as the ledger service authenticated them (`None`
    /// in drafts and in entries not appended through the service).
    pub appender: Option<Appender>,
    /// Recording path.
    pub source: Source,
    /// Makes a retried append idempotent: a second append with the same key
    /// returns the first entry's index instead of logging twice.
    pub dedupe_key: Option<String>,
    /// Kind and data.
    pub body: EntryBody,
}

/// The JSON shape of an entry, as read. `data` stays raw until the kind is
/// known, then is parsed straight into that kind's type.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireIn {
    v: u32,
    kind: String,
    #[serde(default)]
    time: Option<String>,
    cluster: String,
    object: Option<ObjectRef>,
    actor: Option<Actor>,
    #[serde(default)]
    appender: Option<Appender>,
    source: Source,
    #[serde(default)]
    dedupe_key: Option<String>,
    data: Box<serde_json::value::RawValue>,
}

/// The JSON shape of an entry, as written (borrowing the entry).
///
/// Fields here and in every type below are declared in RFC 8785 key order
/// (all keys are ASCII, so byte order is UTF-16 order), strings are escaped
/// by serde_json exactly as RFC 8785 requires, and integers are kept below
/// 2^53 by [`Entry::validate`]; so plain serde_json output is canonical. The
/// one free-form part, a patch's JSON values, goes through a full RFC 8785
/// canonicalizer. A property test checks the result against that
/// canonicalizer for the whole entry.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WireOut<'a> {
    actor: &'a Option<Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    appender: &'a Option<Appender>,
    cluster: &'a str,
    data: BodyData<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dedupe_key: Option<&'a str>,
    kind: &'a str,
    object: &'a Option<ObjectRef>,
    source: Source,
    #[serde(skip_serializing_if = "Option::is_none")]
    time: Option<String>,
    v: u32,
}

/// Serializes free-form JSON values in RFC 8785 form.
fn canonical_values<S: serde::Serializer>(
    values: &Vec<Value>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let text = serde_json_canonicalizer::to_string(values).map_err(serde::ser::Error::custom)?;
    let raw = serde_json::value::RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

/// Serializes a map with free-form keys in RFC 8785 form.
fn canonical_map<S: serde::Serializer>(
    map: &BTreeMap<String, Vec<String>>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let text = serde_json_canonicalizer::to_string(map).map_err(serde::ser::Error::custom)?;
    let raw = serde_json::value::RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
    raw.serialize(s)
}

/// Serializes only the kind-specific data of a body.
struct BodyData<'a>(&'a EntryBody);

impl Serialize for BodyData<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            EntryBody::SpecChanged(d) => d.serialize(s),
            EntryBody::DatasetReferenced(d) => d.serialize(s),
            EntryBody::WeightsVerified(d) => d.serialize(s),
            EntryBody::ModelDeployed(d) => d.serialize(s),
            EntryBody::ModelRetired(d) => d.serialize(s),
            EntryBody::LedgerKey(d) => d.serialize(s),
        }
    }
}

/// Parses the raw `data` of an entry of kind `kind`.
fn parse_body(kind: &str, data: &str) -> Result<EntryBody> {
    fn typed<T: serde::de::DeserializeOwned>(kind: &str, data: &str) -> Result<T> {
        serde_json::from_str(data).map_err(|e| invalid(format!("data of {kind}: {e}")))
    }
    Ok(match kind {
        "spec.changed" => EntryBody::SpecChanged(typed(kind, data)?),
        "dataset.referenced" => EntryBody::DatasetReferenced(typed(kind, data)?),
        "weights.verified" => EntryBody::WeightsVerified(typed(kind, data)?),
        "model.deployed" => EntryBody::ModelDeployed(typed(kind, data)?),
        "model.retired" => EntryBody::ModelRetired(typed(kind, data)?),
        "ledger.key" => EntryBody::LedgerKey(typed(kind, data)?),
        other => {
            return Err(invalid(format!(
                "unknown kind {other:?}; kinds are {KINDS:?}"
            )));
        }
    })
}

/// Length of a timestamp in the ledger's form (`2026-11-28T15:36:50.123456Z`).
const TIME_LEN: usize = 27;
/// How every canonical entry ends: `time` and `v` are the last keys in
/// RFC 8785 order (see [`Entry::canonical_template`]).
const TAIL: &[u8] = b"\",\"v\":1}";

/// Canonical entry bytes whose `time` is filled in later, in place.
#[derive(Clone, Debug)]
pub struct LeafTemplate(Vec<u8>);

impl LeafTemplate {
    /// The canonical bytes with `time` set: equal to
    /// [`Entry::canonical_bytes`] of the entry with that time. `None` for
    /// times outside years 0000–9999, whose text has another length.
    pub fn with_time(&self, time: Timestamp) -> Option<Vec<u8>> {
        let text = time.to_string();
        if text.len() != TIME_LEN {
            return None;
        }
        let mut leaf = self.0.clone();
        let at = leaf.len() - TAIL.len() - TIME_LEN;
        leaf[at..at + TIME_LEN].copy_from_slice(text.as_bytes());
        Some(leaf)
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::InvalidEntry(msg.into())
}

/// Checks the `sha256:<64 lowercase hex>` form.
pub fn check_digest(field: &str, digest: &str) -> Result<()> {
    check_digest_with(field, digest, &["sha256:"])
}

/// The forms of a model's weights digest (the manifest digest): `sha256:`,
/// the first version, over the files' contents; `sha256-manifest-v2:`,
/// which binds each file's path and size too (openmodel-contract's
/// `digest::Version`). Entries recorded with either keep verifying as what
/// they were.
pub const MODEL_DIGEST_PREFIXES: [&str; 2] = ["sha256:", "sha256-manifest-v2:"];

/// Checks that `digest` is a model's weights digest of one of
/// [`MODEL_DIGEST_PREFIXES`] followed by 64 lowercase hex digits.
pub fn check_model_digest(field: &str, digest: &str) -> Result<()> {
    check_digest_with(field, digest, &MODEL_DIGEST_PREFIXES)
}

fn check_digest_with(field: &str, digest: &str, prefixes: &[&str]) -> Result<()> {
    let ok = prefixes.iter().any(|prefix| {
        digest.strip_prefix(prefix).is_some_and(|h| {
            h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        })
    });
    if ok {
        Ok(())
    } else {
        let forms = prefixes
            .iter()
            .map(|p| format!("{p}<64 lowercase hex digits>"))
            .collect::<Vec<_>>()
            .join(" or ");
        Err(invalid(format!(
            "{field} {digest:?} is not a digest of the form {forms}"
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
        let wire: WireIn = serde_json::from_slice(json).map_err(|e| invalid(e.to_string()))?;
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
        if !logged && wire.appender.is_some() {
            return Err(invalid(
                "\"appender\" is written by the ledger service from the caller's authenticated \
                 identity; remove it",
            ));
        }
        let body = parse_body(&wire.kind, wire.data.get())?;
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
            appender: wire.appender,
            source: wire.source,
            dedupe_key: wire.dedupe_key,
            body,
        };
        entry.validate()?;
        Ok(entry)
    }

    /// Checks the rules serde cannot express.
    pub fn validate(&self) -> Result<()> {
        for (field, value) in self.integers() {
            if value > MAX_SAFE_INTEGER {
                return Err(invalid(format!(
                    "{field} is {value}; JSON numbers in entries must stay below 2^53 (RFC 8785 numbers are IEEE doubles)"
                )));
            }
        }
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
        if let Some(a) = &self.appender {
            check_non_empty("appender.username", &a.username)?;
        }
        if let Some(k) = &self.dedupe_key {
            check_non_empty("dedupeKey", k)?;
        }
        match &self.body {
            EntryBody::SpecChanged(s) => {
                check_patch(&s.patch)?;
                if !s.confirms.is_empty() && self.source != Source::Controller {
                    return Err(invalid(
                        "data.confirms: only the controller's entries confirm admissions",
                    ));
                }
                if !s.confirms.is_sorted_by(|a, b| a < b) {
                    return Err(invalid(
                        "data.confirms: indexes must be in increasing order, each once",
                    ));
                }
            }
            EntryBody::DatasetReferenced(d) => {
                check_non_empty("data.name", &d.name)?;
                check_non_empty("data.uri", &d.uri)?;
                check_non_empty("data.role", &d.role)?;
                if let Some(digest) = &d.digest {
                    check_digest("data.digest", digest)?;
                }
            }
            EntryBody::WeightsVerified(w) => {
                check_model_digest("data.digest", &w.digest)?;
                check_non_empty("data.source", &w.source)?;
            }
            EntryBody::ModelDeployed(m) => check_model_digest("data.digest", &m.digest)?,
            EntryBody::ModelRetired(m) => {
                if let Some(d) = &m.last_digest {
                    check_model_digest("data.lastDigest", d)?;
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

    /// Every integer field, by name (absolute values).
    fn integers(&self) -> Vec<(&'static str, u64)> {
        let mut out = Vec::new();
        if let Some(g) = self.object.as_ref().and_then(|o| o.generation) {
            out.push(("object.generation", g.unsigned_abs()));
        }
        if let EntryBody::SpecChanged(s) = &self.body {
            out.extend(s.confirms.iter().map(|&index| ("data.confirms", index)));
        }
        if let EntryBody::ModelDeployed(m) = &self.body {
            out.push(("data.replicas", u64::from(m.replicas)));
            if let Some(w) = m.weights_entry {
                out.push(("data.weightsEntry", w));
            }
        }
        out
    }

    /// The leaf bytes: RFC 8785 canonical JSON, at most [`MAX_ENTRY_SIZE`].
    pub fn canonical_bytes(&self) -> Result<Vec<u8>> {
        let wire = WireOut {
            v: ENTRY_VERSION,
            kind: self.kind(),
            time: self.time.map(|t| t.to_string()),
            cluster: &self.cluster,
            object: &self.object,
            actor: &self.actor,
            appender: &self.appender,
            source: self.source,
            dedupe_key: self.dedupe_key.as_deref(),
            data: BodyData(&self.body),
        };
        let bytes = serde_json::to_vec(&wire).map_err(|e| invalid(e.to_string()))?;
        if bytes.len() > MAX_ENTRY_SIZE {
            return Err(Error::EntryTooLarge {
                size: bytes.len(),
                max: MAX_ENTRY_SIZE,
            });
        }
        Ok(bytes)
    }

    /// The canonical bytes with a placeholder time that the ledger overwrites
    /// when it appends ([`LeafTemplate::with_time`]). Lets appenders do the
    /// serialization in parallel while the single writer only patches 27
    /// bytes. Sound because JCS orders keys by name, not value, so `time` and
    /// `v` always end the document and the time has a fixed length.
    pub fn canonical_template(&self) -> Result<LeafTemplate> {
        let mut placeholder = self.clone();
        placeholder.time = Some(Timestamp(0));
        let bytes = placeholder.canonical_bytes()?;
        let tail = [b"\"time\":\"", Timestamp(0).to_string().as_bytes(), TAIL].concat();
        if !bytes.ends_with(&tail) {
            return Err(invalid(
                "internal: canonical entry does not end with time and v",
            ));
        }
        Ok(LeafTemplate(bytes))
    }

    /// True when `leaf` is exactly this entry's canonical form.
    pub fn is_canonical_form_of(&self, leaf: &[u8]) -> bool {
        self.canonical_bytes().is_ok_and(|c| c == leaf)
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn model_digests_of_both_manifest_versions_are_accepted_dataset_digests_are_sha256() {
        let v2 = format!("sha256-manifest-v2:{}", "1f".repeat(32));
        let entry = sample().replace(&format!("sha256:{}", "0".repeat(64)), &v2);
        Entry::parse_draft(entry.as_bytes()).unwrap();
        assert!(check_model_digest("d", &v2).is_ok());
        let err = check_digest("data.digest", &v2).unwrap_err().to_string();
        assert!(err.contains("sha256:<64 lowercase hex digits>"), "{err}");
        let err = check_model_digest("data.digest", "sha256-manifest-v3:00")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "sha256:<64 lowercase hex digits> or sha256-manifest-v2:<64 lowercase hex digits>"
            ),
            "{err}"
        );
    }

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
        let parsed = Entry::parse_logged(&bytes).unwrap();
        assert_eq!(parsed, e);
        assert!(parsed.is_canonical_form_of(&bytes));
        let spaced = text.replacen(',', ", ", 1);
        assert!(
            !Entry::parse_logged(spaced.as_bytes())
                .unwrap()
                .is_canonical_form_of(spaced.as_bytes())
        );
        // The writer's template patched with the time gives the same bytes.
        let mut draft = e.clone();
        draft.time = None;
        assert_eq!(
            draft
                .canonical_template()
                .unwrap()
                .with_time(e.time.unwrap())
                .unwrap(),
            bytes
        );
    }

    #[test]
    fn entries_with_a_request_uid_from_earlier_webhooks_still_parse() {
        // A leaf as the webhook wrote it before the dedupe key named the
        // change: logs holding such entries must keep verifying.
        let leaf = br#"{"actor":{"groups":["search-team"],"username":"alice"},"cluster":"kubernetes","data":{"operation":"UPDATE","patch":[{"op":"replace","path":"/spec/runtime/replicas","value":2}],"requestUid":"b88579ed-51e5-4e0a-a8f7-6012ee81c355"},"dedupeKey":"u-1/spec.changed/admission/b88579ed-51e5-4e0a-a8f7-6012ee81c355","kind":"spec.changed","object":{"apiVersion":"serving.openmodel.dev/v1alpha1","kind":"OpenModel","name":"minilm","namespace":"search","uid":"u-1"},"source":"admission","time":"2026-11-29T03:39:03.000000Z","v":1}"#;
        let entry = Entry::parse_logged(leaf).unwrap();
        let EntryBody::SpecChanged(change) = &entry.body else {
            panic!("{entry:?}")
        };
        assert_eq!(
            change.request_uid.as_deref(),
            Some("b88579ed-51e5-4e0a-a8f7-6012ee81c355")
        );
        assert!(entry.is_canonical_form_of(leaf));
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
    fn unsafe_integers_are_refused() {
        let json = sample().replace("\"generation\":3", "\"generation\":9007199254740993");
        let err = Entry::parse_draft(json.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("below 2^53"), "{err}");
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

    proptest! {
        #[test]
        fn timestamp_text_matches_the_time_crate(us in -62_135_596_800_000_000i64..253_402_300_799_999_999) {
            let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).unwrap();
            let expected = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
                dt.year(), u8::from(dt.month()), dt.day(), dt.hour(), dt.minute(), dt.second(), dt.microsecond()
            );
            prop_assert_eq!(Timestamp(us).to_string(), expected.clone());
            prop_assert_eq!(Timestamp::parse(&expected).unwrap(), Timestamp(us));
        }
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

    fn arb_entry() -> impl Strategy<Value = Entry> {
        let text = "(?s).{0,12}";
        (
            (text, text, text, proptest::option::of(text), proptest::option::of(-(1i64 << 52)..(1i64 << 52))),
            proptest::option::of((
                text,
                proptest::option::of(text),
                proptest::collection::vec(text, 0..3),
                proptest::collection::btree_map(text, proptest::collection::vec(text, 0..2), 0..3),
            )),
            proptest::option::of(text),
            (text, text, proptest::collection::vec(any::<u32>(), 0..3), any::<f64>(), 0u8..4),
        )
            .prop_map(|((cluster, ns, name, uid, generation), actor, dedupe, (a, b, nums, float, kind))| {
                let object = Some(ObjectRef {
                    api_version: "serving.openmodel.dev/v1alpha1".into(),
                    kind: "OpenModel".into(),
                    namespace: ns,
                    name,
                    uid,
                    generation,
                });
                let body = match kind {
                    0 => EntryBody::SpecChanged(SpecChanged {
                        operation: Operation::Update,
                        confirms: { let mut c: Vec<u64> = nums.iter().map(|&n| u64::from(n)).collect(); c.sort_unstable(); c.dedup(); c },
                        patch: vec![serde_json::json!({"op": "add", "path": "/x", "value": {"é": a, "z": nums, "a": float.is_finite().then_some(float), "\u{10000}": 1, "\u{e000}": 2}})],
                        request_uid: Some(b),
                    }),
                    1 => EntryBody::DatasetReferenced(DatasetReferenced { name: a, uri: b, digest: None, license: Some("x\u{7f}\u{1}".into()), role: "training".into() }),
                    2 => EntryBody::ModelRetired(ModelRetired { reason: Some(a), last_digest: None }),
                    _ => EntryBody::ModelDeployed(ModelDeployed { digest: format!("sha256:{}", "ab".repeat(32)), replicas: nums.first().copied().unwrap_or(0), image: Some(b), weights_entry: Some(7) }),
                };
                let actor = actor.map(|(username, uid, groups, extra)| Actor { username, uid, groups, extra });
                let (source, appender) = if kind == 0 {
                    (Source::Controller, Some(Appender { uid: dedupe.clone(), username: "system:serviceaccount:o:p".into() }))
                } else {
                    (Source::Admission, None)
                };
                Entry { time: Some(Timestamp(1_700_000_000_000_000)), cluster, object, actor, appender, source, dedupe_key: dedupe, body }
            })
    }

    proptest! {
        #[test]
        fn serialization_is_rfc8785_canonical(e in arb_entry()) {
            let fast = e.canonical_bytes().unwrap();
            let reference = serde_json_canonicalizer::to_vec(&serde_json::from_slice::<Value>(&fast).unwrap()).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&fast), String::from_utf8_lossy(&reference));
        }

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
