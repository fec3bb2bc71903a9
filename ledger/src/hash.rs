//! SHA-256 hashes and the RFC 6962 leaf and node hash functions.
//!
//! Leaf: `SHA-256(0x00 ‖ leaf bytes)`; interior node: `SHA-256(0x01 ‖ left ‖ right)`;
//! the root of the empty tree is `SHA-256("")`.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// Size of a hash in bytes.
pub const HASH_SIZE: usize = 32;

/// A SHA-256 hash: a leaf hash, a subtree hash or a root.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Hash(pub [u8; HASH_SIZE]);

impl Hash {
    /// Takes exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Hash> {
        bytes.try_into().ok().map(Hash)
    }

    /// Standard base64 (RFC 4648 §4), as in checkpoints and proofs.
    pub fn to_base64(&self) -> String {
        B64.encode(self.0)
    }

    /// Parses standard base64 of exactly 32 bytes; `what` names the field in errors.
    pub fn from_base64(s: &str, what: &str) -> Result<Hash> {
        let bytes = B64
            .decode(s)
            .map_err(|e| Error::InvalidProof(format!("{what}: {s:?} is not base64 ({e})")))?;
        Hash::from_slice(&bytes).ok_or_else(|| {
            Error::InvalidProof(format!(
                "{what}: decodes to {} bytes, a SHA-256 hash has {HASH_SIZE}",
                bytes.len()
            ))
        })
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The `sha256:<hex>` form used for digests in entries.
    pub fn to_digest_string(&self) -> String {
        format!("sha256:{}", self.to_hex())
    }
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Plain SHA-256.
pub fn sha256(data: &[u8]) -> Hash {
    Hash(Sha256::digest(data).into())
}

/// RFC 6962 leaf hash of `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    Hash(h.finalize().into())
}

/// RFC 6962 interior node hash.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left.0);
    h.update(right.0);
    Hash(h.finalize().into())
}

/// Root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    sha256(b"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6962_known_answers() {
        // From RFC 6962 test data used across CT implementations.
        assert_eq!(
            empty_root().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            leaf_hash(b"").to_hex(),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        assert_eq!(
            node_hash(&leaf_hash(b""), &leaf_hash(&[0])).to_hex(),
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
        );
    }

    #[test]
    fn base64_round_trip_and_errors() {
        let h = leaf_hash(b"x");
        assert_eq!(Hash::from_base64(&h.to_base64(), "root").unwrap(), h);
        let err = Hash::from_base64("ZG9uJ3QgY2FyZSAy", "root").unwrap_err();
        assert!(err.to_string().contains("12 bytes"), "{err}");
        assert!(Hash::from_base64("not base64!", "root").is_err());
    }
}
