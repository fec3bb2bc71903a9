//! Fetching a model folder into a directory and verifying it: what the
//! operator's init container runs before the server starts. The source is
//! not trusted: only the digest of what arrives counts, and nothing it says
//! may make the fetch write outside the destination, hang, or fill the
//! disk.
//!
//! Sources:
//! - `file:///path/to/folder`: copied.
//! - `http://host/base/` or `https://…`: the folder as static files, listed by
//!   `<base>/.openmodel-manifest.json` (written by `openmodel-server digest DIR
//!   -o json`; hidden, so not part of the digest), which gives each file's
//!   path, size and digest: a listing whose files do not make the expected
//!   digest is refused before any download.
//! - `hf://org/repo@revision`: a Hugging Face Hub repository at a revision,
//!   through the endpoint in `HF_ENDPOINT` (the Hub or a mirror), listed by
//!   `<endpoint>/api/models/<repo>/revision/<rev>?blobs=true` (with sizes
//!   when the Hub gives them) and downloaded from
//!   `<endpoint>/<repo>/resolve/<rev>/<file>`.
//!
//! Every listed path is checked before anything is written ([`paths`]:
//! relative, no `..`, no links, inside the destination); downloads are
//! bounded in time and bytes ([`http`]). Files go into
//! `<dest>/.openmodel-fetch/` first. Each resumes with an HTTP range request
//! after a dropped connection and is retried with backoff on timeouts and
//! 5xx answers; partial files survive a restart of the process (an emptyDir
//! survives an init container restart), so the next attempt continues where
//! this one stopped. Only when the whole folder's manifest digest matches the
//! expected one are the files moved into `dest`; when it does not, the
//! staging folder is removed, so that a corrupt file is downloaded afresh
//! next time instead of being resumed (or found whole) forever.

pub mod http;
pub mod paths;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::manifest::{Expectation, Manifest, model_files};
use crate::{Error, Result};
use http::{Client, encode_component, encode_path};

/// Name of the listing of an HTTP source.
pub const MANIFEST_FILE: &str = ".openmodel-manifest.json";
const STAGING: &str = ".openmodel-fetch";

/// Where a model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A local folder.
    File(PathBuf),
    /// A base URL ending in `/`.
    Http(String),
    /// A Hub repository and revision.
    Hf {
        /// `org/name`.
        repo: String,
        /// Branch, tag or commit.
        revision: String,
    },
}

impl Source {
    /// Parses `file://`, `http(s)://` and `hf://org/repo@rev` URIs.
    pub fn parse(uri: &str) -> Result<Source> {
        if let Some(path) = uri.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(Error::BadSource(format!(
                    "{uri}: file:// needs an absolute path, e.g. file:///models/minilm"
                )));
            }
            return Ok(Source::File(PathBuf::from(path)));
        }
        if uri.starts_with("http://") || uri.starts_with("https://") {
            let base = if uri.ends_with('/') {
                uri.to_owned()
            } else {
                format!("{uri}/")
            };
            return Ok(Source::Http(base));
        }
        if let Some(rest) = uri.strip_prefix("hf://") {
            let (repo, revision) = rest.split_once('@').ok_or_else(|| {
                Error::BadSource(format!("{uri}: pin a revision, e.g. hf://org/model@<commit>, so the weights cannot change under you"))
            })?;
            let parts: Vec<&str> = repo.split('/').collect();
            if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) || revision.is_empty() {
                return Err(Error::BadSource(format!(
                    "{uri}: expected hf://<org>/<repo>@<revision>"
                )));
            }
            return Ok(Source::Hf {
                repo: repo.to_owned(),
                revision: revision.to_owned(),
            });
        }
        Err(Error::BadSource(format!(
            "{uri}: unsupported source; use file:///…, http(s)://… or hf://org/repo@revision"
        )))
    }
}

/// How hard to try, and how far to trust the source.
#[derive(Clone, Debug)]
pub struct Options {
    /// Attempts per file after the first.
    pub retries: u32,
    /// Longest wait for an answer's headers.
    pub timeout: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest gap in the data of an answer.
    pub idle_timeout: Duration,
    /// Longest the whole fetch may take, retries and backoff included.
    pub total_timeout: Duration,
    /// First backoff between attempts (doubles each time).
    pub backoff: Duration,
    /// Most bytes the whole model may have.
    pub max_bytes: u64,
    /// Base URL of the Hub for `hf://` sources.
    pub hf_endpoint: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retries: 5,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            total_timeout: Duration::from_secs(2 * 3600),
            backoff: Duration::from_millis(500),
            max_bytes: 256 << 30,
            hf_endpoint: None,
        }
    }
}

/// A file a source lists: its relative path and, when the source says,
/// its size.
struct Listed {
    path: String,
    size: Option<u64>,
}

/// Fetches `source` into `dest` and checks it against `expect` (by the rule
/// of its version); returns the verified manifest, its digest in that
/// version. If `dest` already holds exactly the expected model, nothing is
/// downloaded.
pub fn fetch(
    source: &Source,
    dest: &Path,
    expect: &Expectation,
    opts: &Options,
) -> Result<Manifest> {
    let started = Instant::now();
    fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    let present = model_files(dest)?;
    if !present.is_empty() {
        return expect.check(&Manifest::of_folder(dest)?).map_err(|e| {
            Error::BadFolder(format!(
                "{} already holds other files ({e}); give an empty destination",
                dest.display()
            ))
        });
    }
    let staging = staging_folder(dest)?;
    match source {
        Source::File(dir) => copy_folder(dir, &staging, opts.max_bytes)?,
        Source::Http(base) => {
            let mut client = Client::new(opts, started);
            let url = format!("{base}{MANIFEST_FILE}");
            let listing = Manifest::from_json(&client.get_text(&url)?, &url)?;
            paths::check_listing(listing.files.iter().map(|f| f.path.as_str()))?;
            // A listing of other files (renamed ones, for a v2 digest) is
            // refused before anything is downloaded.
            expect.check(&listing).map_err(|e| {
                Error::BadListing(format!("it describes other files than expected ({e})"))
            })?;
            let files = listing
                .files
                .into_iter()
                .map(|f| Listed {
                    path: f.path,
                    size: Some(f.size),
                })
                .collect();
            download_all(&mut client, &staging, files, |rel| {
                format!("{base}{}", encode_path(rel))
            })?;
        }
        Source::Hf { repo, revision } => {
            let endpoint = opts.hf_endpoint.as_deref().ok_or_else(|| {
                Error::BadSource("hf:// sources need HF_ENDPOINT (or --hf-endpoint): the Hub's address or a mirror's".into())
            })?;
            let endpoint = endpoint.trim_end_matches('/');
            let revision = encode_component(revision);
            let mut client = Client::new(opts, started);
            let files = hf_files(&client, endpoint, repo, &revision)?;
            download_all(&mut client, &staging, files, |rel| {
                format!("{endpoint}/{repo}/resolve/{revision}/{}", encode_path(rel))
            })?;
        }
    }
    let manifest = match expect.check(&Manifest::of_folder(&staging)?) {
        Ok(verified) => verified,
        Err(e) => {
            // Partial files are kept for the next attempt, but not these: a
            // corrupt file would be resumed, or found whole, forever.
            if let Err(removing) = fs::remove_dir_all(&staging) {
                tracing::warn!("cannot clear {}: {removing}", staging.display());
            }
            return Err(e);
        }
    };
    for f in &manifest.files {
        let to = paths::inside(dest, &f.path)?;
        create_parent(&to)?;
        fs::rename(paths::inside(&staging, &f.path)?, &to).map_err(|e| Error::io(&to, e))?;
    }
    fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    Ok(manifest)
}

/// `dest/.openmodel-fetch`, created, and a real folder (not a link).
fn staging_folder(dest: &Path) -> Result<PathBuf> {
    let staging = dest.join(STAGING);
    if fs::symlink_metadata(&staging).is_ok_and(|m| !m.is_dir()) {
        return Err(Error::BadFolder(format!(
            "{} is not a folder (a link?); remove it",
            staging.display()
        )));
    }
    fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    Ok(staging)
}

/// Copies the model files of `dir` into `staging`, at most `max_bytes`.
fn copy_folder(dir: &Path, staging: &Path, max_bytes: u64) -> Result<()> {
    let mut left = max_bytes;
    for rel in model_files(dir)? {
        let from = dir.join(&rel);
        let size = fs::metadata(&from).map_err(|e| Error::io(&from, e))?.len();
        left = left.checked_sub(size).ok_or_else(|| {
            Error::BadSource(format!(
                "{} holds more than --max-bytes ({max_bytes} bytes); raise it if the model is really that large",
                dir.display()
            ))
        })?;
        let to = paths::inside(staging, &rel)?;
        create_parent(&to)?;
        fs::copy(&from, &to).map_err(|e| Error::io(&to, e))?;
    }
    Ok(())
}

/// Checks a source's listing (paths, count, total size), then downloads
/// every file into `staging` from `url_of(path)`.
fn download_all(
    client: &mut Client,
    staging: &Path,
    files: Vec<Listed>,
    url_of: impl Fn(&str) -> String,
) -> Result<()> {
    paths::check_listing(files.iter().map(|f| f.path.as_str()))?;
    let announced = files
        .iter()
        .filter_map(|f| f.size)
        .try_fold(0u64, u64::checked_add);
    if announced.is_none_or(|total| total > client.budget()) {
        return Err(Error::BadListing(format!(
            "it announces {} bytes, more than --max-bytes ({} bytes); raise it if the model is really that large",
            announced.map_or("over 2^64".to_owned(), |t| t.to_string()),
            client.budget()
        )));
    }
    for f in files {
        let path = paths::inside(staging, &f.path)?;
        create_parent(&path)?;
        client.download(&url_of(&f.path), &path, f.size)?;
    }
    Ok(())
}

fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().expect("a file under a folder");
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))
}

/// The files of a Hub repository at a revision (hidden ones left out),
/// with their sizes when the Hub gives them.
fn hf_files(client: &Client, endpoint: &str, repo: &str, revision: &str) -> Result<Vec<Listed>> {
    let url = format!("{endpoint}/api/models/{repo}/revision/{revision}?blobs=true");
    let text = client.get_text(&url)?;
    let bad = |why: String| Error::Download {
        url: url.clone(),
        reason: why,
    };
    let info: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let siblings = info["siblings"]
        .as_array()
        .ok_or_else(|| bad("no \"siblings\" list in the answer".into()))?;
    let mut files: Vec<Listed> = siblings
        .iter()
        .filter_map(|s| {
            let path = s["rfilename"].as_str()?;
            let hidden = path.split('/').any(|part| part.starts_with('.'));
            (!hidden).then(|| Listed {
                path: path.to_owned(),
                size: s["size"].as_u64(),
            })
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    if files.is_empty() {
        return Err(bad("the repository lists no files".into()));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_with_clear_errors() {
        assert_eq!(
            Source::parse("file:///m").unwrap(),
            Source::File("/m".into())
        );
        assert_eq!(
            Source::parse("http://h:1/m").unwrap(),
            Source::Http("http://h:1/m/".into())
        );
        assert_eq!(
            Source::parse("hf://org/model@abc").unwrap(),
            Source::Hf {
                repo: "org/model".into(),
                revision: "abc".into()
            }
        );
        for (bad, needle) in [
            ("file://relative", "absolute path"),
            ("hf://org/model", "pin a revision"),
            ("hf://org@abc", "hf://<org>/<repo>@<revision>"),
            ("s3://bucket/m", "unsupported source"),
        ] {
            let err = Source::parse(bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
