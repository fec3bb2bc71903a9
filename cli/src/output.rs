//! Rendering entries for people (tables) and programs (JSON, CSV).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use openmodel_history::inventory::{Inventory, LiveModel};
use openmodel_ledger::checkpoint::SignedCheckpoint;
use openmodel_ledger::entry::{Entry, EntryBody};
use openmodel_ledger::query::Page;
use openmodel_ledger::store::StoredEntry;

/// A short description of what an entry says.
pub fn detail(entry: &Entry) -> String {
    match &entry.body {
        EntryBody::SpecChanged(s) => {
            let paths: Vec<&str> = s
                .patch
                .iter()
                .filter_map(|op| op.get("path").and_then(|p| p.as_str()))
                .collect();
            format!("{} {}", enum_name(&s.operation), paths.join(","))
        }
        EntryBody::DatasetReferenced(d) => format!("{} {} ({})", d.role, d.uri, d.name),
        EntryBody::WeightsVerified(w) => format!("{} from {}", short(&w.digest), w.source),
        EntryBody::ModelDeployed(m) => format!("{} x{}", short(&m.digest), m.replicas),
        EntryBody::ModelRetired(m) => m.reason.clone().unwrap_or_default(),
        EntryBody::LedgerKey(k) => format!("{} {}", enum_name(&k.event), k.key),
    }
}

/// The wire name of a unit enum (`CREATE`, `created`, …).
fn enum_name(value: &impl serde::Serialize) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A digest for a table: its algorithm and the first 12 hex digits, in
/// either manifest version (`sha256:8a36265b0b7a`,
/// `sha256-manifest-v2:0c2163746253`).
fn short(digest: &str) -> String {
    match digest.split_once(':') {
        Some((algorithm, hex)) => {
            format!("{algorithm}:{}", hex.chars().take(12).collect::<String>())
        }
        None => digest.chars().take(19).collect(),
    }
}

/// What the table says after an admission entry no controller entry
/// confirms.
pub const UNCONFIRMED: &str = " [unconfirmed: no controller entry confirms this change]";

/// Entries as an aligned table; the admission entries in `unconfirmed` are
/// marked so.
pub fn table(entries: &[StoredEntry], unconfirmed: &BTreeSet<u64>) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let o = e.entry.object.as_ref();
            vec![
                e.index.to_string(),
                e.entry
                    .time
                    .map(|t| t.to_string()[..19].to_owned())
                    .unwrap_or_default(),
                e.entry.kind().to_owned(),
                o.map(|o| format!("{}/{}", o.namespace, o.name))
                    .unwrap_or_else(|| "-".into()),
                e.entry
                    .actor
                    .as_ref()
                    .map(|a| a.username.clone())
                    .unwrap_or_else(|| "-".into()),
                if unconfirmed.contains(&e.index) {
                    format!("{}{UNCONFIRMED}", detail(&e.entry))
                } else {
                    detail(&e.entry)
                },
            ]
        })
        .collect();
    columns(
        &["INDEX", "TIME", "KIND", "MODEL", "ACTOR", "DETAIL"],
        &rows,
    )
}

/// `rows` under `header`, each column as wide as its widest cell; the last
/// column is not padded.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(header);
    for r in rows {
        line(&r.iter().map(String::as_str).collect::<Vec<_>>());
    }
    out
}

/// The completeness statement under a table; `proven` when each entry was
/// proven included in the checkpoint.
pub fn coverage(page: &Page, proven: bool) -> String {
    let cp = &page.checkpoint.checkpoint;
    let more = match page.next {
        Some(n) => format!("; more after this page: --start {n}"),
        None => String::new(),
    };
    let proofs = if proven {
        "; each entry's inclusion proof checked"
    } else {
        ""
    };
    format!(
        "{} matching entr{} in index range [{}, {}) of the signed tree of size {} (root {}){proofs}{more}",
        page.entries.len(),
        if page.entries.len() == 1 { "y" } else { "ies" },
        page.scanned.start,
        page.scanned.end,
        cp.size,
        cp.root.to_base64()
    )
}

/// A page as JSON, with its completeness statement and the admission
/// entries on it that no controller entry confirms.
pub fn page_json(page: &Page, unconfirmed: &BTreeSet<u64>) -> serde_json::Value {
    serde_json::json!({
        "checkpoint": page.checkpoint.note,
        "treeSize": page.checkpoint.checkpoint.size,
        "scanned": {"from": page.scanned.start, "to": page.scanned.end},
        "next": page.next,
        "entries": page.entries.iter().map(StoredEntry::to_json).collect::<Vec<_>>(),
        "unconfirmedAdmissions": unconfirmed,
    })
}

/// The note about admission entries no controller entry confirms, when
/// there are any.
pub fn unconfirmed_note(unconfirmed: &[u64]) -> Option<String> {
    const SHOWN: usize = 20;
    let (count, shown) = (unconfirmed.len(), unconfirmed.len().min(SHOWN));
    if count == 0 {
        return None;
    }
    let mut list: Vec<String> = unconfirmed[..shown].iter().map(u64::to_string).collect();
    if count > shown {
        list.push(format!("and {} more", count - shown));
    }
    Some(format!(
        "{count} admission entr{} no controller entry confirms ({}): changes refused after the \
         webhook admitted them, forged requests, or changes not reconciled yet \
         (docs/ledger.md, \"Confirmed admissions\")",
        if count == 1 { "y" } else { "ies" },
        list.join(", ")
    ))
}

/// One line per dataset: `name=uri` with `@digest` when known.
fn datasets_text(m: &LiveModel, separator: &str) -> String {
    m.datasets
        .iter()
        .map(|d| match &d.digest {
            Some(digest) => format!("{}={}@{digest}", d.name, d.uri),
            None => format!("{}={}", d.name, d.uri),
        })
        .collect::<Vec<_>>()
        .join(separator)
}

/// The live models as an aligned table.
pub fn inventory_table(inventory: &Inventory) -> String {
    let rows: Vec<Vec<String>> = inventory
        .models
        .iter()
        .map(|m| {
            let (digest, from) = match &m.digest {
                Some(s) => (short(&s.digest), format!("{} #{}", s.kind, s.index)),
                None => ("-".into(), "-".into()),
            };
            vec![
                format!("{}/{}", m.namespace, m.name),
                digest,
                from,
                m.live_since.to_string()[..19].to_owned(),
                datasets_text(m, ", "),
            ]
        })
        .collect();
    columns(
        &["MODEL", "DIGEST", "FROM ENTRY", "LIVE SINCE", "DATASETS"],
        &rows,
    )
}

/// Column names of the CSV form of an inventory.
const INVENTORY_CSV_HEADER: [&str; 9] = [
    "namespace",
    "name",
    "uid",
    "generation",
    "live_since",
    "digest",
    "digest_kind",
    "digest_entry",
    "datasets",
];

/// The live models as CSV (datasets as space-separated `name=uri[@digest]`).
pub fn inventory_csv(inventory: &Inventory) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(INVENTORY_CSV_HEADER)
        .expect("writing to memory");
    for m in &inventory.models {
        let served = m.digest.as_ref();
        w.write_record([
            m.namespace.clone(),
            m.name.clone(),
            m.uid.clone().unwrap_or_default(),
            m.generation.map(|g| g.to_string()).unwrap_or_default(),
            m.live_since.to_string(),
            served.map(|s| s.digest.clone()).unwrap_or_default(),
            served.map(|s| s.kind.to_owned()).unwrap_or_default(),
            served.map(|s| s.index.to_string()).unwrap_or_default(),
            datasets_text(m, " "),
        ])
        .expect("writing to memory");
    }
    String::from_utf8(w.into_inner().expect("writing to memory")).expect("CSV of UTF-8 strings")
}

/// An inventory as JSON, with the checkpoint it was proven against.
pub fn inventory_json(inventory: &Inventory, checkpoint: &SignedCheckpoint) -> serde_json::Value {
    let mut json = serde_json::to_value(inventory).expect("an inventory is JSON");
    json["treeSize"] = checkpoint.checkpoint.size.into();
    json["checkpoint"] = checkpoint.note.clone().into();
    json
}

/// The statement under an inventory table.
pub fn inventory_coverage(inventory: &Inventory, checkpoint: &SignedCheckpoint) -> String {
    let cp = &checkpoint.checkpoint;
    format!(
        "{} model{} live at {}: replayed entries [0, {}) of the signed tree of size {} (root {}), \
         proven to be every entry logged until then",
        inventory.models.len(),
        if inventory.models.len() == 1 { "" } else { "s" },
        inventory.at,
        inventory.entries,
        cp.size,
        cp.root.to_base64()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_digests_keep_twelve_hex_digits_in_both_versions() {
        assert_eq!(
            super::short(&format!("sha256:{}", "8a36265b0b7a".repeat(5))),
            "sha256:8a36265b0b7a"
        );
        assert_eq!(
            super::short(&format!("sha256-manifest-v2:{}", "0c2163746253".repeat(5))),
            "sha256-manifest-v2:0c2163746253"
        );
    }

    use openmodel_history::inventory::{DatasetInForce, Served};
    use openmodel_ledger::checkpoint::Checkpoint;
    use openmodel_ledger::entry::Timestamp;
    use openmodel_ledger::hash::empty_root;

    use super::*;

    fn inventory() -> Inventory {
        let model = |name: &str, digest: Option<Served>, datasets: Vec<DatasetInForce>| LiveModel {
            namespace: "search".into(),
            name: name.into(),
            uid: Some(format!("uid-{name}")),
            generation: Some(2),
            live_since: Timestamp(1_000_000),
            digest,
            datasets,
            unconfirmed_admissions: vec![],
            warnings: vec![],
        };
        let dataset = |name: &str, digest: Option<&str>| DatasetInForce {
            name: name.into(),
            uri: format!("hf://datasets/{name}@1"),
            digest: digest.map(str::to_owned),
            role: "training".into(),
            license: None,
            entry: Some(3),
        };
        Inventory {
            at: Timestamp(5_000_000),
            entries: 9,
            models: vec![
                model(
                    "minilm",
                    Some(Served {
                        digest: format!("sha256:{}", "ab".repeat(32)),
                        kind: "model.deployed",
                        index: 7,
                        time: Timestamp(4_000_000),
                    }),
                    vec![dataset("ms_marco", Some("sha256:00")), dataset("nq", None)],
                ),
                model("empty", None, vec![]),
            ],
        }
    }

    #[test]
    fn tables_align_columns_and_leave_the_last_unpadded() {
        let text = columns(
            &["A", "BB"],
            &[vec!["long".into(), "x".into()], vec!["s".into(), "".into()]],
        );
        assert_eq!(text, "A     BB\nlong  x\ns\n");
    }

    #[test]
    fn inventories_print_as_table_csv_and_json() {
        let inv = inventory();
        let table = inventory_table(&inv);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("MODEL"), "{table}");
        assert!(
            lines[1].starts_with("search/minilm  sha256:abababababab"),
            "{table}"
        );
        assert!(lines[1].contains("model.deployed #7"), "{table}");
        assert!(
            lines[1]
                .ends_with("ms_marco=hf://datasets/ms_marco@1@sha256:00, nq=hf://datasets/nq@1"),
            "{table}"
        );
        assert!(lines[2].starts_with("search/empty   -"), "{table}");

        let csv = inventory_csv(&inv);
        let mut rows = csv::Reader::from_reader(csv.as_bytes());
        let records: Vec<csv::StringRecord> = rows.records().map(Result::unwrap).collect();
        assert_eq!(records.len(), 2);
        assert_eq!(&records[0][7], "7");
        assert_eq!(
            &records[0][8],
            "ms_marco=hf://datasets/ms_marco@1@sha256:00 nq=hf://datasets/nq@1"
        );

        let checkpoint = SignedCheckpoint {
            checkpoint: Checkpoint {
                origin: "o".into(),
                size: 12,
                root: empty_root(),
                extensions: vec![],
            },
            note: "note".into(),
        };
        let json = inventory_json(&inv, &checkpoint);
        assert_eq!(json["treeSize"], 12);
        assert_eq!(json["at"], "1970-01-01T00:00:05.000000Z");
        assert_eq!(json["models"][0]["digest"]["kind"], "model.deployed");
        assert_eq!(json["models"][1]["digest"], serde_json::Value::Null);
        assert!(
            inventory_coverage(&inv, &checkpoint).starts_with(
                "2 models live at 1970-01-01T00:00:05.000000Z: replayed entries [0, 9)"
            )
        );
    }
}
