//! Rendering entries for people (tables) and programs (JSON, CSV).

use std::fmt::Write as _;

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

fn short(digest: &str) -> String {
    digest.chars().take(19).collect()
}

/// Entries as an aligned table.
pub fn table(entries: &[StoredEntry]) -> String {
    let rows: Vec<[String; 6]> = entries
        .iter()
        .map(|e| {
            let o = e.entry.object.as_ref();
            [
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
                detail(&e.entry),
            ]
        })
        .collect();
    let header = ["INDEX", "TIME", "KIND", "MODEL", "ACTOR", "DETAIL"];
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
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
    line(&mut out, &header);
    for r in &rows {
        line(&mut out, &r.each_ref().map(String::as_str));
    }
    out
}

/// The completeness statement under a table.
pub fn coverage(page: &Page) -> String {
    let cp = &page.checkpoint.checkpoint;
    let more = match page.next {
        Some(n) => format!("; more after this page: --start {n}"),
        None => String::new(),
    };
    format!(
        "{} matching entr{} in index range [{}, {}) of the signed tree of size {} (root {}){more}",
        page.entries.len(),
        if page.entries.len() == 1 { "y" } else { "ies" },
        page.scanned.start,
        page.scanned.end,
        cp.size,
        cp.root.to_base64()
    )
}

/// A page as JSON, with its completeness statement.
pub fn page_json(page: &Page) -> serde_json::Value {
    serde_json::json!({
        "checkpoint": page.checkpoint.note,
        "treeSize": page.checkpoint.checkpoint.size,
        "scanned": {"from": page.scanned.start, "to": page.scanned.end},
        "next": page.next,
        "entries": page.entries.iter().map(StoredEntry::to_json).collect::<Vec<_>>(),
    })
}
