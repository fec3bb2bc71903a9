//! C2SP tlog-proof files: a self-contained, offline-verifiable proof that one
//! entry is in the log.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 of the entry's canonical JSON>
//! index 42
//! <base64 hash, leaf's sibling first>
//! …
//!
//! <signed checkpoint, verbatim>
//! ```
//!
//! OpenModel puts the entry itself in the `extra` line, so the file alone
//! lets anyone holding the log's public key check that exactly this entry
//! sits at this index under a signed root. The extra data is not trusted:
//! its leaf hash must reproduce the signed root through the proof.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use crate::checkpoint::{SignedCheckpoint, parse_decimal};
use crate::hash::{Hash, leaf_hash};
use crate::note::Verifier;
use crate::tree::verify_inclusion;
use crate::{Error, Result};

const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// A parsed tlog-proof.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlogProof {
    /// Opaque extra data (for OpenModel: the entry's leaf bytes).
    pub extra: Option<Vec<u8>>,
    /// Index of the entry.
    pub index: u64,
    /// Inclusion proof, leaf's sibling first.
    pub path: Vec<Hash>,
    /// The signed checkpoint the proof leads to, verbatim.
    pub checkpoint: String,
}

impl TlogProof {
    /// Writes the proof in the tlog-proof text format.
    pub fn encode(&self) -> String {
        let mut out = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", B64.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.path {
            out.push_str(&h.to_base64());
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses the tlog-proof text format (signature not yet checked).
    pub fn parse(text: &str) -> Result<TlogProof> {
        let bad = |m: String| Error::InvalidProof(format!("tlog-proof: {m}"));
        let (head, checkpoint) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the checkpoint".into()))?;
        let mut lines = head.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(bad(format!("the first line must be {HEADER}")));
        }
        let mut line = lines
            .next()
            .ok_or_else(|| bad("missing the index line".into()))?;
        let mut extra = None;
        if let Some(b64) = line.strip_prefix("extra ") {
            extra = Some(
                B64.decode(b64)
                    .map_err(|e| bad(format!("extra data is not base64: {e}")))?,
            );
            line = lines
                .next()
                .ok_or_else(|| bad("missing the index line".into()))?;
        }
        let index = line
            .strip_prefix("index ")
            .and_then(parse_decimal)
            .ok_or_else(|| bad(format!("expected \"index <decimal>\", found {line:?}")))?;
        let path = lines
            .enumerate()
            .map(|(i, l)| Hash::from_base64(l, &format!("proof hash {i}")))
            .collect::<Result<Vec<_>>>()?;
        if path.len() > 64 {
            return Err(bad(format!(
                "{} proof hashes; a 64-bit tree needs at most 64",
                path.len()
            )));
        }
        Ok(TlogProof {
            extra,
            index,
            path,
            checkpoint: checkpoint.to_owned(),
        })
    }

    /// Verifies the checkpoint signature and that `leaf` (the entry bytes;
    /// the `extra` data when `leaf` is `None`) is at `index` under its root.
    pub fn verify(&self, verifier: &Verifier, leaf: Option<&[u8]>) -> Result<SignedCheckpoint> {
        let signed = SignedCheckpoint::open(&self.checkpoint, verifier)?;
        let data = leaf.or(self.extra.as_deref()).ok_or_else(|| {
            Error::InvalidProof(
                "the proof carries no entry (no extra line); give the entry separately".into(),
            )
        })?;
        let cp = &signed.checkpoint;
        verify_inclusion(
            self.index,
            cp.size,
            &leaf_hash(data).0,
            &self.path,
            &cp.root.0,
        )?;
        Ok(signed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_garbage() {
        for bad in [
            "",
            "c2sp.org/tlog-proof@v1\n",
            "c2sp.org/tlog-proof@v2\nindex 1\n\ncp\n",
            "c2sp.org/tlog-proof@v1\nindex 01\n\ncp\n",
            "c2sp.org/tlog-proof@v1\nextra !!\nindex 1\n\ncp\n",
            "c2sp.org/tlog-proof@v1\nindex 1\nAAAA\n\ncp\n",
        ] {
            assert!(TlogProof::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn encode_parse_round_trip() {
        let p = TlogProof {
            extra: Some(b"{}".to_vec()),
            index: 7,
            path: vec![leaf_hash(b"a"), leaf_hash(b"b")],
            checkpoint: "origin\n8\nroot\n\n\u{2014} origin sig\n".into(),
        };
        assert_eq!(TlogProof::parse(&p.encode()).unwrap(), p);
    }
}
