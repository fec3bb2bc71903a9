//! Manifest digests of model folders.
//!
//! A folder's manifest lists every regular file under it by relative path
//! (`/`-separated, sorted by bytes), with its size and SHA-256. The manifest
//! digest is `sha256:` + SHA-256 over the concatenated 32-byte file digests in
//! that order — OpenSSF model signing's file serialization. Hidden paths (any
//! component starting with `.`, such as `.git` or `.gitattributes`) are not
//! part of a model; symbolic links are refused, so a digest always means the
//! bytes in the folder itself.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

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
    /// The manifest digest, `sha256:<hex>`.
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

fn hex_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(bytes))
}

impl Manifest {
    /// Computes the manifest of the model folder `dir`.
    pub fn of_folder(dir: &Path) -> Result<Manifest> {
        let files = model_files(dir)?;
        if files.is_empty() {
            return Err(Error::BadFolder(format!(
                "{} holds no model files",
                dir.display()
            )));
        }
        let mut root = Sha256::new();
        let mut out = Vec::with_capacity(files.len());
        for rel in files {
            let (size, digest) = file_digest(&dir.join(&rel))?;
            root.update(digest);
            out.push(FileDigest {
                path: rel,
                size,
                digest: hex_digest(&digest),
            });
        }
        Ok(Manifest {
            digest: hex_digest(&root.finalize()),
            files: out,
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
                (Some(e), Some(g)) if e.digest != g.digest => {
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

    /// Reads a manifest written by `openmodel-server digest -o json`.
    pub fn from_json(text: &str, origin: &str) -> Result<Manifest> {
        let m: Manifest = serde_json::from_str(text).map_err(|e| {
            Error::BadExpectation(format!(
                "{origin} is not a manifest (openmodel-server digest -o json): {e}"
            ))
        })?;
        let mut root = Sha256::new();
        for f in &m.files {
            let hex = f
                .digest
                .strip_prefix("sha256:")
                .and_then(|h| hex::decode(h).ok())
                .filter(|d| d.len() == 32);
            let bytes = hex.ok_or_else(|| {
                Error::BadExpectation(format!(
                    "{origin}: file digest {:?} of {} is not sha256:<64 hex>",
                    f.digest, f.path
                ))
            })?;
            root.update(bytes);
        }
        if hex_digest(&root.finalize()) != m.digest {
            return Err(Error::BadExpectation(format!(
                "{origin}: its digest does not match its file list"
            )));
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
    /// Parses `sha256:<64 hex>` or the path of a manifest JSON file.
    pub fn parse(s: &str) -> Result<Expectation> {
        if let Some(hex) = s.strip_prefix("sha256:") {
            if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Ok(Expectation::Digest(s.to_owned()));
            }
            return Err(Error::BadExpectation(format!(
                "{s:?} is not sha256:<64 lowercase hex digits>"
            )));
        }
        let path = PathBuf::from(s);
        if path.is_file() {
            let text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            return Ok(Expectation::Manifest(Manifest::from_json(&text, s)?));
        }
        Err(Error::BadExpectation(format!(
            "expected digest {s:?} is neither sha256:<64 hex> nor a manifest file (openmodel-server digest DIR -o json)"
        )))
    }

    /// The expected manifest digest.
    pub fn digest(&self) -> &str {
        match self {
            Expectation::Digest(d) => d,
            Expectation::Manifest(m) => &m.digest,
        }
    }

    /// Checks `actual` against the expectation.
    pub fn check(&self, actual: &Manifest) -> Result<()> {
        if actual.digest == self.digest() {
            return Ok(());
        }
        Err(Error::DigestMismatch {
            expected: self.digest().to_owned(),
            actual: actual.digest.clone(),
            first_difference: match self {
                Expectation::Manifest(m) => m.first_difference(actual),
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

    #[test]
    fn digest_is_root_over_sorted_file_digests() {
        let dir = folder(&[
            ("b.txt", b"bee"),
            ("a/x.bin", b"ex"),
            (".git/HEAD", b"ignored"),
            (".gitattributes", b"ignored"),
        ]);
        let m = Manifest::of_folder(dir.path()).unwrap();
        let paths: Vec<&str> = m.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/x.bin", "b.txt"]);
        let mut root = Sha256::new();
        root.update(Sha256::digest(b"ex"));
        root.update(Sha256::digest(b"bee"));
        assert_eq!(m.digest, hex_digest(&root.finalize()));
        assert_eq!(
            Manifest::from_json(&serde_json::to_string(&m).unwrap(), "m").unwrap(),
            m
        );
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
        assert!(
            Expectation::parse("sha256:abc")
                .unwrap_err()
                .to_string()
                .contains("64 lowercase hex")
        );
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
        let tampered = r#"{"digest":"sha256:0000000000000000000000000000000000000000000000000000000000000000","files":[]}"#;
        assert!(
            Manifest::from_json(tampered, "m.json")
                .unwrap_err()
                .to_string()
                .contains("does not match")
        );
    }
}
