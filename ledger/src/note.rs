//! C2SP signed notes with Ed25519, and key strings in the format of Go's
//! `golang.org/x/mod/sumdb/note`.
//!
//! ```text
//! If you think cryptography is the answer to your problem,
//! then you don't know what your problem is.
//!
//! — PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=
//! ```
//!
//! A note is UTF-8 text ending in a newline, a blank line, then one or more
//! signature lines `— <name> <base64(key ID ‖ signature)>`. The key ID is the
//! first four bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`; 0x01 is the
//! Ed25519 algorithm byte. Keys are written
//! `PRIVATE+KEY+<name>+<key ID hex>+<base64(0x01 ‖ seed)>` (signer) and
//! `<name>+<key ID hex>+<base64(0x01 ‖ public key)>` (verifier).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

const ALG_ED25519: u8 = 1;
const SIG_PREFIX: &str = "\u{2014} ";
/// Largest note accepted by [`Verifier::open`], as in Go's implementation.
pub const MAX_NOTE_SIZE: usize = 1_000_000;
/// Most signature lines accepted by [`Verifier::open`].
pub const MAX_SIGNATURES: usize = 100;

fn key_id(name: &str, public: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([ALG_ED25519]);
    h.update(public);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::InvalidKey("key name is empty".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || *c == '+' || c.is_control())
    {
        return Err(Error::InvalidKey(format!(
            "key name {name:?} contains {c:?}; names may not contain '+', spaces or control characters"
        )));
    }
    Ok(())
}

/// Decodes `base64(0x01 ‖ 32 bytes)`.
fn decode_key_material(b64: &str) -> Result<[u8; 32]> {
    let raw = B64
        .decode(b64)
        .map_err(|e| Error::InvalidKey(format!("key material is not base64: {e}")))?;
    match raw.split_first() {
        Some((&ALG_ED25519, rest)) if rest.len() == 32 => Ok(rest.try_into().expect("32 bytes")),
        Some((&ALG_ED25519, rest)) => Err(Error::InvalidKey(format!(
            "Ed25519 key material has {} bytes, expected 32",
            rest.len()
        ))),
        Some((alg, _)) => Err(Error::InvalidKey(format!(
            "unsupported key algorithm {alg}; only Ed25519 (1) is supported"
        ))),
        None => Err(Error::InvalidKey("key material is empty".into())),
    }
}

fn parse_key_id(hex_id: &str) -> Result<u32> {
    if hex_id.len() != 8 || !hex_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidKey(format!(
            "key ID {hex_id:?} must be 8 hexadecimal digits"
        )));
    }
    u32::from_str_radix(hex_id, 16).map_err(|e| Error::InvalidKey(e.to_string()))
}

fn encode_key(name: &str, id: u32, material: &[u8; 32]) -> String {
    let mut raw = vec![ALG_ED25519];
    raw.extend_from_slice(material);
    format!("{name}+{id:08x}+{}", B64.encode(raw))
}

/// An Ed25519 signing key with its name.
#[derive(Clone)]
pub struct Signer {
    name: String,
    key: SigningKey,
}

impl Signer {
    /// A new random key named `name` (for a log, its origin).
    pub fn generate(name: &str) -> Result<Signer> {
        check_name(name)?;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed)
            .map_err(|e| Error::InvalidKey(format!("no randomness for a new key: {e}")))?;
        Ok(Signer {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` (which must end in a newline and hold no blank line) and
    /// returns the whole signed note.
    pub fn sign(&self, text: &str) -> Result<String> {
        check_text(text)?;
        let sig = self.key.sign(text.as_bytes());
        let mut raw = key_id(&self.name, self.key.verifying_key().as_bytes())
            .to_be_bytes()
            .to_vec();
        raw.extend_from_slice(&sig.to_bytes());
        Ok(format!(
            "{text}\n{SIG_PREFIX}{} {}\n",
            self.name,
            B64.encode(raw)
        ))
    }
}

impl FromStr for Signer {
    type Err = Error;

    /// Parses `PRIVATE+KEY+<name>+<id>+<base64>`.
    fn from_str(s: &str) -> Result<Signer> {
        let s = s.trim_end_matches(['\n', '\r']);
        let rest = s.strip_prefix("PRIVATE+KEY+").ok_or_else(|| {
            Error::InvalidKey(
                "a signer key starts with PRIVATE+KEY+ (is this a verifier key?)".into(),
            )
        })?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::InvalidKey(
                "a signer key has the form PRIVATE+KEY+<name>+<8 hex digits>+<base64>".into(),
            ));
        };
        check_name(name)?;
        let id = parse_key_id(id)?;
        let key = SigningKey::from_bytes(&decode_key_material(material)?);
        if key_id(name, key.verifying_key().as_bytes()) != id {
            return Err(Error::InvalidKey(format!(
                "key ID {id:08x} does not match the key named {name:?}"
            )));
        }
        Ok(Signer {
            name: name.to_owned(),
            key,
        })
    }
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let id = key_id(&self.name, self.key.verifying_key().as_bytes());
        write!(
            f,
            "PRIVATE+KEY+{}",
            encode_key(&self.name, id, &self.key.to_bytes())
        )
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", self.verifier())
    }
}

/// An Ed25519 verifier key with its name.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    name: String,
    key: VerifyingKey,
}

/// The text of a note whose signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Names of the other signers (not checked: their keys are unknown here).
    pub unverified_signers: Vec<String>,
}

impl Verifier {
    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key ID (first four bytes of the key hash).
    pub fn key_id(&self) -> u32 {
        key_id(&self.name, self.key.as_bytes())
    }

    /// Checks `note` and returns its text when it carries a valid signature by
    /// this key. Signatures by other keys are reported, not checked.
    pub fn open(&self, note: &str) -> Result<OpenedNote> {
        let (text, sigs) = split_note(note)?;
        let my_id = self.key_id();
        let mut verified = false;
        let mut others = Vec::new();
        for line in sigs {
            let (name, raw) = parse_signature_line(line)?;
            let id = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
            if name != self.name || id != my_id {
                others.push(name.to_owned());
                continue;
            }
            let sig = Signature::from_slice(&raw[4..]).map_err(|_| {
                Error::InvalidNote(format!(
                    "signature by {name} has {} bytes, Ed25519 signatures have 64",
                    raw.len() - 4
                ))
            })?;
            self.key.verify(text.as_bytes(), &sig).map_err(|_| {
                Error::BadSignature(format!(
                    "the signature by {name} ({id:08x}) does not match the note text: the note was altered or signed by another key"
                ))
            })?;
            verified = true;
        }
        if !verified {
            return Err(Error::BadSignature(format!(
                "no signature by {} ({my_id:08x}) on this note (signed by: {})",
                self.name,
                if others.is_empty() {
                    "nobody".to_owned()
                } else {
                    others.join(", ")
                }
            )));
        }
        Ok(OpenedNote {
            text: text.to_owned(),
            unverified_signers: others,
        })
    }
}

impl FromStr for Verifier {
    type Err = Error;

    /// Parses `<name>+<id>+<base64>`.
    fn from_str(s: &str) -> Result<Verifier> {
        let s = s.trim_end_matches(['\n', '\r']);
        if s.starts_with("PRIVATE+KEY+") {
            return Err(Error::InvalidKey(
                "this is a private signer key; give the verifier key (name+id+base64) instead"
                    .into(),
            ));
        }
        let mut parts = s.splitn(3, '+');
        let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(Error::InvalidKey(
                "a verifier key has the form <name>+<8 hex digits>+<base64>".into(),
            ));
        };
        check_name(name)?;
        let id = parse_key_id(id)?;
        let public = decode_key_material(material)?;
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| Error::InvalidKey("not a valid Ed25519 public key".into()))?;
        if key_id(name, &public) != id {
            return Err(Error::InvalidKey(format!(
                "key ID {id:08x} does not match the key named {name:?}"
            )));
        }
        Ok(Verifier {
            name: name.to_owned(),
            key,
        })
    }
}

impl fmt::Display for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_key(&self.name, self.key_id(), self.key.as_bytes()))
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({self})")
    }
}

/// Text rules shared by signing and opening.
fn check_text(text: &str) -> Result<()> {
    if text.is_empty() || !text.ends_with('\n') {
        return Err(Error::InvalidNote(
            "note text must be non-empty and end in a newline".into(),
        ));
    }
    if text.contains("\n\n") || text.starts_with('\n') {
        return Err(Error::InvalidNote(
            "note text must not contain a blank line".into(),
        ));
    }
    if let Some(c) = text.chars().find(|&c| c != '\n' && c.is_control()) {
        return Err(Error::InvalidNote(format!(
            "note text contains control character {c:?}"
        )));
    }
    Ok(())
}

/// Splits a signed note into its text and signature lines.
fn split_note(note: &str) -> Result<(&str, Vec<&str>)> {
    if note.len() > MAX_NOTE_SIZE {
        return Err(Error::InvalidNote(format!(
            "note is {} bytes, the limit is {MAX_NOTE_SIZE}",
            note.len()
        )));
    }
    let split = note.rfind("\n\n").ok_or_else(|| {
        Error::InvalidNote("no blank line separating the text from the signatures".into())
    })?;
    let (text, sigs) = (&note[..split + 1], &note[split + 2..]);
    check_text(text)?;
    let body = sigs
        .strip_suffix('\n')
        .ok_or_else(|| Error::InvalidNote("the signature block must end in a newline".into()))?;
    let lines: Vec<&str> = body.split('\n').collect();
    if lines.len() > MAX_SIGNATURES {
        return Err(Error::InvalidNote(format!(
            "{} signature lines, the limit is {MAX_SIGNATURES}",
            lines.len()
        )));
    }
    Ok((text, lines))
}

/// Parses `— <name> <base64>` into the name and the decoded bytes (≥ 5).
fn parse_signature_line(line: &str) -> Result<(&str, Vec<u8>)> {
    let rest = line.strip_prefix(SIG_PREFIX).ok_or_else(|| {
        Error::InvalidNote(format!(
            "signature line {line:?} does not start with \"— \""
        ))
    })?;
    let (name, b64) = rest.split_once(' ').ok_or_else(|| {
        Error::InvalidNote(format!(
            "signature line {line:?} has no space between name and signature"
        ))
    })?;
    check_name(name).map_err(|e| Error::InvalidNote(e.to_string()))?;
    let raw = B64
        .decode(b64)
        .map_err(|e| Error::InvalidNote(format!("signature by {name} is not base64: {e}")))?;
    if raw.len() < 5 {
        return Err(Error::InvalidNote(format!(
            "signature by {name} is too short"
        )));
    }
    Ok((name, raw))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_round_trip_and_sign() {
        let s = Signer::generate("example.com/log").unwrap();
        let s2: Signer = s.to_string().parse().unwrap();
        assert_eq!(s.verifier(), s2.verifier());
        let v: Verifier = s.verifier().to_string().parse().unwrap();
        let note = s.sign("hello\nworld\n").unwrap();
        assert_eq!(v.open(&note).unwrap().text, "hello\nworld\n");
        let forged = note.replacen("hello", "HELLO", 1);
        assert!(matches!(v.open(&forged), Err(Error::BadSignature(_))));
        let other = Signer::generate("example.com/log").unwrap();
        assert!(matches!(
            other.verifier().open(&note),
            Err(Error::BadSignature(_))
        ));
    }

    #[test]
    fn bad_texts_are_refused() {
        let s = Signer::generate("n").unwrap();
        assert!(s.sign("no newline").is_err());
        assert!(s.sign("a\n\nb\n").is_err());
        assert!(s.sign("tab\there\n").is_err());
    }

    #[test]
    fn key_errors_are_clear() {
        let err = "PRIVATE+KEY+x".parse::<Signer>().unwrap_err().to_string();
        assert!(err.contains("PRIVATE+KEY+<name>"), "{err}");
        let err = "PRIVATE+KEY+a+b+c"
            .parse::<Verifier>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("private signer key"), "{err}");
        let err = "name+zzzzzzzz+AA=="
            .parse::<Verifier>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("8 hexadecimal"), "{err}");
    }
}
