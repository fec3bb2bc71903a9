//! Manifest digests of model folders.
//!
//! A folder's manifest lists every regular file under it by relative path
//! (`/`-separated, sorted by bytes), with its size and SHA-256. Hidden paths
//! (any component starting with `.`, such as `.git` or `.gitattributes`) are
//! not part of a model; symbolic links are refused, so a digest always means
//! the bytes in the folder itself. The manifest digest condenses it, in one
//! of two versions ([`Version`], named in `openmodel-contract`), each with
//! its own prefix:
//!
//! - **v2**, `sha256-manifest-v2:<hex>`, the default: SHA-256 over
//!   `"openmodel-manifest-v2\n"`, the number of files (u64, big-endian),
//!   then for each file in path order its path's length in bytes (u64),
//!   its path (UTF-8), its size (u64) and its 32-byte SHA-256. Every file is
//!   named by its path, as the resources of an OpenSSF model-signing
//!   manifest are, so renaming or moving a file changes the digest; the
//!   lengths make the encoding unambiguous.
//! - **v1**, `sha256:<hex>`, the first form: SHA-256 over the concatenated
//!   32-byte file digests in path order (OpenSSF model signing's digest of
//!   its resources' digests). It does not cover names: a file renamed so
//!   that the order is kept keeps the digest. Still computed and accepted
//!   where a model pins it, with that meaning.
//!
//! An [`Expectation`] is checked by the rule of its own version.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use openmodel_contract::digest::FORMS;
pub use openmodel_contract::digest::Version;

use crate::{Error, Result};

/// What a v2 digest's hash starts with, so that it can mean nothing else.
const V2_DOMAIN: &[u8] = b"openmodel-manifest-v2\n";

/// Largest manifest file read as an expectation, in bytes.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// One file of a manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileDigest {
    /// Path relative to the folder, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// `sha256:<hex>` of the file's bytes.
    pub digest: String,
}

/// A folder's manifest and its digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The manifest digest, in either version (see the module
    /// documentation).
    pub digest: String,
    /// Every file, sorted by path.
    pub files: Vec<FileDigest>,
}

fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// Relative paths of the model files under `dir`, sorted.
pub fn model_files(dir: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let entry = entry.map_err(|e| Error::io(dir, e))?;
            let name = entry.file_name().into_string().map_err(|n| {
                Error::BadFolder(format!("{}: file name {n:?} is not UTF-8", dir.display()))
            })?;
            if is_hidden(&name) {
                continue;
            }
            let path = entry.path();
            let kind = entry.file_type().map_err(|e| Error::io(&path, e))?;
            if kind.is_symlink() {
                return Err(Error::BadFolder(format!(
                    "{} is a symbolic link; copy the file itself into the model folder",
                    path.display()
                )));
            }
            if kind.is_dir() {
                walk(root, &path, out)?;
            } else if kind.is_file() {
                let rel = path.strip_prefix(root).expect("walked under root");
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push(parts.join("/"));
            }
        }
        Ok(())
    }
    if !dir.is_dir() {
        return Err(Error::BadFolder(format!(
            "{} is not a folder",
            dir.display()
        )));
    }
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    Ok(files)
}

/// SHA-256 of a file, streamed.
pub fn file_digest(path: &Path) -> Result<(u64, [u8; 32])> {
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, h.finalize().into()))
}

/// The 32 bytes of a file digest `sha256:<64 lowercase hex>`, if it is one.
fn file_digest_bytes(digest: &str) -> Option<[u8; 32]> {
    let hex = digest.strip_prefix("sha256:")?;
    if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex, &mut out).ok()?;
    Some(out)
}

/// The manifest digest of `files` (sorted by path, each file digest
/// well-formed) in `version`.
pub fn root(files: &[FileDigest], version: Version) -> Result<String> {
    let mut hasher = Sha256::new();
    if version == Version::V2 {
        hasher.update(V2_DOMAIN);
        hasher.update((files.len() as u64).to_be_bytes());
    }
    for f in files {
        let digest = file_digest_bytes(&f.digest).ok_or_else(|| {
            Error::BadExpectation(format!(
                "file digest {:?} of {} is not sha256:<64 lowercase hex digits>",
                f.digest, f.path
            ))
        })?;
        if version == Version::V2 {
            hasher.update((f.path.len() as u64).to_be_bytes());
            hasher.update(f.path.as_bytes());
            hasher.update(f.size.to_be_bytes());
        }
        hasher.update(digest);
    }
    Ok(version.format(&hex::encode(hasher.finalize())))
}

impl Manifest {
    /// Computes the manifest of the model folder `dir`, its digest in the
    /// current version (v2).
    pub fn of_folder(dir: &Path) -> Result<Manifest> {
        let files = model_files(dir)?;
        if files.is_empty() {
            return Err(Error::BadFolder(format!(
                "{} holds no model files",
                dir.display()
            )));
        }
        let mut out = Vec::with_capacity(files.len());
        for rel in files {
            let (size, digest) = file_digest(&dir.join(&rel))?;
            out.push(FileDigest {
                path: rel,
                size,
                digest: format!("sha256:{}", hex::encode(digest)),
            });
        }
        Ok(Manifest {
            digest: root(&out, Version::CURRENT)?,
            files: out,
        })
    }

    /// The same files with their digest in `version`.
    pub fn in_version(&self, version: Version) -> Result<Manifest> {
        Ok(Manifest {
            digest: root(&self.files, version)?,
            files: self.files.clone(),
        })
    }

    /// The first file that differs between `self` (expected) and `actual`.
    pub fn first_difference(&self, actual: &Manifest) -> Option<String> {
        let (mut a, mut b) = (self.files.iter().peekable(), actual.files.iter().peekable());
        loop {
            match (a.peek(), b.peek()) {
                (None, None) => return None,
                (Some(e), None) => return Some(format!("{} is missing", e.path)),
                (None, Some(g)) => return Some(format!("{} is not expected", g.path)),
                (Some(e), Some(g)) if e.path < g.path => {
                    return Some(format!("{} is missing", e.path));
                }
                (Some(e), Some(g)) if e.path > g.path => {
                    return Some(format!("{} is not expected", g.path));
                }
                (Some(e), Some(g)) if e.digest != g.digest || e.size != g.size => {
                    return Some(format!(
                        "{} (expected {}, {} bytes; got {}, {} bytes)",
                        e.path, e.digest, e.size, g.digest, g.size
                    ));
                }
                _ => {
                    a.next();
                    b.next();
                }
            }
        }
    }

    /// Reads a manifest written by `openmodel-server digest -o json`,
    /// checking that its files are sorted by path, once each, and that its
    /// digest is theirs by the rule of its version.
    pub fn from_json(text: &str, origin: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| {
            Error::BadExpectation(format!(
                "{origin} is not a manifest (openmodel-server digest -o json): {e}"
            ))
        })?;
        let bad = |why: String| Error::BadExpectation(format!("{origin}: {why}"));
        let version = Version::of(&m.digest)
            .ok_or_else(|| bad(format!("its digest {:?} is not {FORMS}", m.digest)))?;
        if let Some(pair) = m.files.windows(2).find(|w| w[0].path >= w[1].path) {
            return Err(bad(format!(
                "its files are not sorted by path, each once ({:?} before {:?})",
                pair[0].path, pair[1].path
            )));
        }
        let computed = root(&m.files, version).map_err(|e| bad(e.to_string()))?;
        if computed != m.digest {
            return Err(bad("its digest does not match its file list".into()));
        }
        Ok(m)
    }
}

/// What a model folder must hash to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expectation {
    /// Only the manifest digest is known.
    Digest(String),
    /// The whole manifest is known, so a mismatch names the file.
    Manifest(Manifest),
}

impl Expectation {
    /// Parses a digest of either version, or the path of a manifest JSON
    /// file.
    pub fn parse(s: &str) -> Result<Expectation> {
        if Version::of(s).is_some() {
            return Ok(Expectation::Digest(s.to_owned()));
        }
        if s.starts_with("sha256") {
            return Err(Error::BadExpectation(format!(
                "{s:?} is not a manifest digest: expected {FORMS}"
            )));
        }
        let path = PathBuf::from(s);
        if path.is_file() {
            let size = fs::metadata(&path).map_err(|e| Error::io(&path, e))?.len();
            if size > MAX_MANIFEST_BYTES {
                return Err(Error::BadExpectation(format!(
                    "{s}: {size} bytes is too large for a manifest (at most {MAX_MANIFEST_BYTES})"
                )));
            }
            let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            return Ok(Expectation::Manifest(Manifest::from_json(&text, s)?));
        }
        Err(Error::BadExpectation(format!(
            "expected digest {s:?} is neither a manifest digest ({FORMS}) nor a manifest file (openmodel-server digest DIR -o json)"
        )))
    }

    /// The expected manifest digest.
    pub fn digest(&self) -> &str {
        match self {
            Expectation::Digest(d) => d,
            Expectation::Manifest(m) => &m.digest,
        }
    }

    /// The version whose rule the expectation is checked by.
    pub fn version(&self) -> Version {
        Version::of(self.digest()).expect("checked when parsed")
    }

    /// Checks `actual` by the rule of the expectation's version; returns
    /// the verified manifest with its digest in that version.
    pub fn check(&self, actual: &Manifest) -> Result<Manifest> {
        let actual = actual.in_version(self.version())?;
        if actual.digest == self.digest() {
            return Ok(actual);
        }
        Err(Error::DigestMismatch {
            expected: self.digest().to_owned(),
            actual: actual.digest.clone(),
            first_difference: match self {
                Expectation::Manifest(m) => m.first_difference(&actual),
                Expectation::Digest(_) => None,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, data) in files {
            let p = dir.path().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        }
        dir
    }

    fn known_folder() -> tempfile::TempDir {
        folder(&[
            ("b.txt", b"bee"),
            ("a/x.bin", b"ex"),
            (".git/HEAD", b"ignored"),
            (".gitattributes", b"ignored"),
        ])
    }

    #[test]
    fn both_versions_have_known_answers() {
        let m = Manifest::of_folder(known_folder().path()).unwrap();
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/x.bin", "b.txt"]);
        // v2 by its definition, byte for byte.
        let mut v2 = Sha256::new();
        v2.update(b"openmodel-manifest-v2\n");
        v2.update(2u64.to_be_bytes());
        for (path, data) in [("a/x.bin", &b"ex"[..]), ("b.txt", b"bee")] {
            v2.update((path.len() as u64).to_be_bytes());
            v2.update(path.as_bytes());
            v2.update((data.len() as u64).to_be_bytes());
            v2.update(Sha256::digest(data));
        }
        assert_eq!(
            m.digest,
            format!("sha256-manifest-v2:{}", hex::encode(v2.finalize()))
        );
        assert_eq!(
            m.digest,
            "sha256-manifest-v2:e24d4d077c6654b778fa0460410fd760d4474a72efe02fcde014cf0032a9dc36"
        );
        // v1 gives what it gave before version 2 existed (pinned from the
        // release that had only v1).
        assert_eq!(
            m.in_version(Version::V1).unwrap().digest,
            "sha256:f3e00885613765a54ae0c0ef28b0e355e7a9b5ad8924d67b33fbb9d5966d27a8"
        );
        for v in [Version::V1, Version::V2] {
            let json = serde_json::to_string(&m.in_version(v).unwrap()).unwrap();
            assert_eq!(
                Manifest::from_json(&json, "m").unwrap(),
                m.in_version(v).unwrap()
            );
        }
    }

    #[test]
    fn a_rename_that_keeps_the_order_changes_v2_only() {
        let original = Manifest::of_folder(known_folder().path()).unwrap();
        // a/x.bin → a/y.bin: still before b.txt.
        let renamed =
            Manifest::of_folder(folder(&[("b.txt", b"bee"), ("a/y.bin", b"ex")]).path()).unwrap();
        assert_ne!(renamed.digest, original.digest);
        assert_eq!(
            renamed.in_version(Version::V1).unwrap().digest,
            original.in_version(Version::V1).unwrap().digest,
            "v1 never covered names"
        );
        let err = Expectation::parse(&original.digest)
            .unwrap()
            .check(&renamed)
            .unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
        // Each expectation by its own rule; the verified manifest comes
        // back in the expectation's version.
        let v1 = original.in_version(Version::V1).unwrap().digest;
        let verified = Expectation::parse(&v1).unwrap().check(&renamed).unwrap();
        assert_eq!(verified.digest, v1);
    }

    #[test]
    fn mismatches_name_the_first_differing_file() {
        let good =
            Manifest::of_folder(folder(&[("a", b"1"), ("b", b"2"), ("c", b"3")]).path()).unwrap();
        let changed =
            Manifest::of_folder(folder(&[("a", b"1"), ("b", b"X"), ("c", b"3")]).path()).unwrap();
        let missing = Manifest::of_folder(folder(&[("a", b"1"), ("c", b"3")]).path()).unwrap();
        let extra = Manifest::of_folder(
            folder(&[("a", b"1"), ("b", b"2"), ("bb", b"9"), ("c", b"3")]).path(),
        )
        .unwrap();
        let expect = Expectation::Manifest(good.clone());
        let err = expect.check(&changed).unwrap_err().to_string();
        assert!(
            err.contains(&good.digest)
                && err.contains(&changed.digest)
                && err.contains("first differing file: b "),
            "{err}"
        );
        assert!(
            expect
                .check(&missing)
                .unwrap_err()
                .to_string()
                .contains("b is missing")
        );
        assert!(
            expect
                .check(&extra)
                .unwrap_err()
                .to_string()
                .contains("bb is not expected")
        );
        expect.check(&good).unwrap();
        Expectation::Digest(good.digest.clone())
            .check(&good)
            .unwrap();
    }

    #[test]
    fn bad_expectations_and_folders_are_explained() {
        for bad in ["sha256:abc", "sha256-manifest-v2:abc"] {
            let err = Expectation::parse(bad).unwrap_err().to_string();
            assert!(
                err.contains("sha256-manifest-v2:<64 lowercase hex digits>")
                    && err.contains("sha256:<64 lowercase hex digits>"),
                "{err}"
            );
        }
        assert!(
            Expectation::parse("md5:abc")
                .unwrap_err()
                .to_string()
                .contains("neither")
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(
            Manifest::of_folder(empty.path())
                .unwrap_err()
                .to_string()
                .contains("no model files")
        );
        let dir = folder(&[("a", b"1")]);
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("link")).unwrap();
        assert!(
            Manifest::of_folder(dir.path())
                .unwrap_err()
                .to_string()
                .contains("symbolic link")
        );
        let zero = "0".repeat(64);
        for (json, says) in [
            (
                format!(r#"{{"digest":"sha256:{zero}","files":[]}}"#),
                "does not match",
            ),
            (
                format!(r#"{{"digest":"sha256-manifest-v2:{zero}","files":[]}}"#),
                "does not match",
            ),
            (
                format!(r#"{{"digest":"sha512:{zero}","files":[]}}"#),
                "is not sha256-manifest-v2",
            ),
            (
                format!(
                    r#"{{"digest":"sha256:{zero}","files":[{{"path":"b","size":1,"digest":"sha256:{zero}"}},{{"path":"a","size":1,"digest":"sha256:{zero}"}}]}}"#
                ),
                "not sorted by path",
            ),
            (
                format!(
                    r#"{{"digest":"sha256:{zero}","files":[{{"path":"a","size":1,"digest":"sha256:xyz"}}]}}"#
                ),
                "is not sha256:<64 lowercase hex digits>",
            ),
        ] {
            let err = Manifest::from_json(&json, "m.json")
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{json}: {err}");
        }
    }
}
