//! C2SP tlog-checkpoint: the signed statement of a log's size and root.
//!
//! ```text
//! openmodel.example/ledger
//! 20852163
//! CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=
//! ```
//!
//! The body is the origin (the log's unique name), the tree size in decimal
//! without leading zeros, and the standard-base64 root hash, each ending in a
//! newline, optionally followed by extension lines. It travels inside a
//! signed note (see [`crate::note`]).

use crate::hash::Hash;
use crate::note::{Signer, Verifier};
use crate::{Error, Result};

/// The body of a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// Number of leaves.
    pub size: u64,
    /// Root hash of those leaves.
    pub root: Hash,
    /// Extension lines (without their newlines), passed through unchanged.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note text for this checkpoint.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for ext in &self.extensions {
            text.push_str(ext);
            text.push('\n');
        }
        text
    }

    /// Parses a checkpoint body (the text of a signed note).
    pub fn parse(text: &str) -> Result<Checkpoint> {
        let body = text
            .strip_suffix('\n')
            .ok_or_else(|| Error::InvalidCheckpoint("body must end in a newline".into()))?;
        let mut lines = body.split('\n');
        let origin = lines.next().unwrap_or_default();
        if origin.is_empty() {
            return Err(Error::InvalidCheckpoint("the origin line is empty".into()));
        }
        let size_line = lines
            .next()
            .ok_or_else(|| Error::InvalidCheckpoint("missing the tree size line".into()))?;
        let size = parse_decimal(size_line).ok_or_else(|| {
            Error::InvalidCheckpoint(format!(
                "tree size {size_line:?} is not a decimal without leading zeros"
            ))
        })?;
        let root_line = lines
            .next()
            .ok_or_else(|| Error::InvalidCheckpoint("missing the root hash line".into()))?;
        let root = Hash::from_base64(root_line, "root hash")
            .map_err(|e| Error::InvalidCheckpoint(e.to_string()))?;
        let extensions: Vec<String> = lines.map(str::to_owned).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(Error::InvalidCheckpoint(
                "extension lines must not be empty".into(),
            ));
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Signs the checkpoint, returning the signed note.
    pub fn sign(&self, signer: &Signer) -> Result<String> {
        signer.sign(&self.to_text())
    }
}

/// Parses an unsigned decimal with no sign and no leading zeros.
pub fn parse_decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// A checkpoint together with the signed note it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The parsed body.
    pub checkpoint: Checkpoint,
    /// The whole signed note, verbatim.
    pub note: String,
}

impl SignedCheckpoint {
    /// Verifies `note` with `verifier` and parses its body. The origin must
    /// equal the key name, so one log's key cannot vouch for another log.
    pub fn open(note: &str, verifier: &Verifier) -> Result<SignedCheckpoint> {
        let opened = verifier.open(note)?;
        let checkpoint = Checkpoint::parse(&opened.text)?;
        if checkpoint.origin != verifier.name() {
            return Err(Error::BadSignature(format!(
                "checkpoint origin {:?} differs from the key name {:?}: this checkpoint belongs to another log",
                checkpoint.origin,
                verifier.name()
            )));
        }
        Ok(SignedCheckpoint {
            checkpoint,
            note: note.to_owned(),
        })
    }

    /// Parses `note`'s body WITHOUT checking any signature: for a note that
    /// is checked later, or never (`--no-verify`). It proves nothing.
    pub fn parse_unverified(note: &str) -> Result<SignedCheckpoint> {
        let (text, _) = note.split_once("\n\n").ok_or_else(|| {
            Error::InvalidNote("no blank line between the text and the signatures".into())
        })?;
        Ok(SignedCheckpoint {
            checkpoint: Checkpoint::parse(&format!("{text}\n"))?,
            note: note.to_owned(),
        })
    }

    /// Signs `checkpoint` with `signer`.
    pub fn sign(checkpoint: Checkpoint, signer: &Signer) -> Result<SignedCheckpoint> {
        let note = checkpoint.sign(signer)?;
        Ok(SignedCheckpoint { checkpoint, note })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::empty_root;

    #[test]
    fn round_trip_and_signature() {
        let signer = Signer::generate("example.com/log").unwrap();
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 12,
            root: empty_root(),
            extensions: vec!["ext one".into()],
        };
        assert_eq!(Checkpoint::parse(&cp.to_text()).unwrap(), cp);
        let signed = SignedCheckpoint::sign(cp.clone(), &signer).unwrap();
        let opened = SignedCheckpoint::open(&signed.note, &signer.verifier()).unwrap();
        assert_eq!(opened.checkpoint, cp);
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let root = empty_root().to_base64();
        for bad in [
            String::new(),
            "origin\n".into(),
            format!("origin\n012\n{root}\n"),
            format!("origin\n-1\n{root}\n"),
            "origin\n1\nAAAA\n".into(),
            format!("\n1\n{root}\n"),
            format!("origin\n1\n{root}"),
        ] {
            assert!(Checkpoint::parse(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn origin_must_match_key() {
        let signer = Signer::generate("log-a").unwrap();
        let cp = Checkpoint {
            origin: "log-b".into(),
            size: 0,
            root: empty_root(),
            extensions: vec![],
        };
        let note = cp.sign(&signer).unwrap();
        let err = SignedCheckpoint::open(&note, &signer.verifier()).unwrap_err();
        assert!(err.to_string().contains("another log"), "{err}");
    }
}
