//! Fetching a model folder into a directory and verifying it: what the
//! operator's init container runs before the server starts.
//!
//! Sources:
//! - `file:///path/to/folder`: copied.
//! - `http://host/base/` or `https://…`: the folder as static files, listed by
//!   `<base>/.openmodel-manifest.json` (written by `openmodel-server digest DIR
//!   -o json`; hidden, so not part of the digest). The listing is not trusted:
//!   only the digest of what arrives counts.
//! - `hf://org/repo@revision`: a Hugging Face Hub repository at a revision,
//!   through the endpoint in `HF_ENDPOINT` (the Hub or a mirror), listed by
//!   `<endpoint>/api/models/<repo>/revision/<rev>` and downloaded from
//!   `<endpoint>/<repo>/resolve/<rev>/<file>`.
//!
//! Downloads go into `<dest>/.openmodel-fetch/` first. Each file resumes with
//! an HTTP range request after a dropped connection and is retried with
//! backoff on timeouts and 5xx answers; partial files survive a restart of
//! the process (an emptyDir survives an init container restart), so the next
//! attempt continues where this one stopped. Only when the whole folder's
//! manifest digest matches the expected one are the files moved into `dest`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::manifest::{Expectation, Manifest, model_files};
use crate::{Error, Result};

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

/// How hard to try.
#[derive(Clone, Debug)]
pub struct Options {
    /// Attempts per file after the first.
    pub retries: u32,
    /// Connect and read timeout per request.
    pub timeout: Duration,
    /// First backoff between attempts (doubles each time).
    pub backoff: Duration,
    /// Base URL of the Hub for `hf://` sources.
    pub hf_endpoint: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retries: 5,
            timeout: Duration::from_secs(30),
            backoff: Duration::from_millis(500),
            hf_endpoint: None,
        }
    }
}

/// Fetches `source` into `dest` and checks it against `expect`; returns the
/// verified manifest. If `dest` already holds exactly the expected model,
/// nothing is downloaded.
pub fn fetch(
    source: &Source,
    dest: &Path,
    expect: &Expectation,
    opts: &Options,
) -> Result<Manifest> {
    fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    let present = model_files(dest)?;
    if !present.is_empty() {
        let manifest = Manifest::of_folder(dest)?;
        expect.check(&manifest).map_err(|e| {
            Error::BadFolder(format!(
                "{} already holds other files ({e}); give an empty destination",
                dest.display()
            ))
        })?;
        return Ok(manifest);
    }
    let staging = dest.join(STAGING);
    fs::create_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    match source {
        Source::File(dir) => {
            for rel in model_files(dir)? {
                let to = staging.join(&rel);
                create_parent(&to)?;
                fs::copy(dir.join(&rel), &to).map_err(|e| Error::io(&to, e))?;
            }
        }
        Source::Http(base) => {
            let agent = agent(opts);
            let listing = get_text(&agent, &format!("{base}{MANIFEST_FILE}"), opts)?;
            let listed = Manifest::from_json(&listing, &format!("{base}{MANIFEST_FILE}"))?;
            for f in &listed.files {
                download(
                    &agent,
                    &format!("{base}{}", f.path),
                    &staging.join(&f.path),
                    opts,
                )?;
            }
        }
        Source::Hf { repo, revision } => {
            let endpoint = opts.hf_endpoint.as_deref().ok_or_else(|| {
                Error::BadSource("hf:// sources need HF_ENDPOINT (or --hf-endpoint): the Hub's address or a mirror's".into())
            })?;
            let endpoint = endpoint.trim_end_matches('/');
            let agent = agent(opts);
            for rel in hf_files(&agent, endpoint, repo, revision, opts)? {
                download(
                    &agent,
                    &format!("{endpoint}/{repo}/resolve/{revision}/{rel}"),
                    &staging.join(&rel),
                    opts,
                )?;
            }
        }
    }
    let manifest = Manifest::of_folder(&staging)?;
    expect.check(&manifest)?;
    for f in &manifest.files {
        let to = dest.join(&f.path);
        create_parent(&to)?;
        fs::rename(staging.join(&f.path), &to).map_err(|e| Error::io(&to, e))?;
    }
    fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    Ok(manifest)
}

fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().expect("a file under a folder");
    fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))
}

fn agent(opts: &Options) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(opts.timeout))
        .timeout_recv_response(Some(opts.timeout))
        .timeout_recv_body(None)
        .timeout_per_call(None)
        .build()
        .into()
}

/// Whether an error is worth another attempt.
fn retryable(e: &ureq::Error) -> bool {
    match e {
        ureq::Error::StatusCode(code) => *code >= 500 || *code == 429 || *code == 408,
        _ => true,
    }
}

fn failure(url: &str, e: impl std::fmt::Display) -> Error {
    Error::Download {
        url: url.to_owned(),
        reason: e.to_string(),
    }
}

/// Retries `attempt` with exponential backoff while its error is retryable.
fn with_retries<T>(
    url: &str,
    opts: &Options,
    mut attempt: impl FnMut() -> std::result::Result<T, (bool, String)>,
) -> Result<T> {
    let mut wait = opts.backoff;
    let mut last = String::new();
    for n in 0..=opts.retries {
        match attempt() {
            Ok(v) => return Ok(v),
            Err((false, reason)) => return Err(failure(url, reason)),
            Err((true, reason)) => last = reason,
        }
        if n < opts.retries {
            std::thread::sleep(wait);
            wait *= 2;
        }
    }
    Err(failure(
        url,
        format!("{last} (gave up after {} attempts)", opts.retries + 1),
    ))
}

fn get_text(agent: &ureq::Agent, url: &str, opts: &Options) -> Result<String> {
    with_retries(url, opts, || {
        let resp = agent
            .get(url)
            .call()
            .map_err(|e| (retryable(&e), e.to_string()))?;
        resp.into_body()
            .read_to_string()
            .map_err(|e| (true, e.to_string()))
    })
}

fn hf_files(
    agent: &ureq::Agent,
    endpoint: &str,
    repo: &str,
    revision: &str,
    opts: &Options,
) -> Result<Vec<String>> {
    let url = format!("{endpoint}/api/models/{repo}/revision/{revision}");
    let text = get_text(agent, &url, opts)?;
    let info: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| failure(&url, format!("not JSON: {e}")))?;
    let siblings = info["siblings"]
        .as_array()
        .ok_or_else(|| failure(&url, "no \"siblings\" list in the answer"))?;
    let mut files: Vec<String> = siblings
        .iter()
        .filter_map(|s| s["rfilename"].as_str())
        .filter(|f| !f.split('/').any(|part| part.starts_with('.')))
        .map(str::to_owned)
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(failure(&url, "the repository lists no files"));
    }
    Ok(files)
}

/// Downloads `url` to `path`, resuming a partial file with a range request.
fn download(agent: &ureq::Agent, url: &str, path: &Path, opts: &Options) -> Result<()> {
    create_parent(path)?;
    with_retries(url, opts, || {
        let have = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        let mut req = agent.get(url);
        if have > 0 {
            req = req.header("Range", format!("bytes={have}-"));
        }
        let resp = match req.call() {
            Ok(r) => r,
            // The partial file is already whole, or the server changed: start over.
            Err(ureq::Error::StatusCode(416)) => {
                fs::remove_file(path).map_err(|e| (false, e.to_string()))?;
                return Err((true, "range not satisfiable; restarting the file".into()));
            }
            Err(e) => return Err((retryable(&e), e.to_string())),
        };
        let resumed = resp.status().as_u16() == 206;
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(resumed)
            .write(true)
            .truncate(!resumed)
            .open(path)
            .map_err(|e| (false, format!("{}: {e}", path.display())))?;
        let mut body = resp.into_body().into_with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = body.read(&mut buf).map_err(|e| {
                (
                    true,
                    format!("connection lost after {} bytes: {e}", file_len(path)),
                )
            })?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n])
                .map_err(|e| (false, format!("{}: {e}", path.display())))?;
        }
        file.sync_all()
            .map_err(|e| (false, format!("{}: {e}", path.display())))?;
        Ok(())
    })
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|m| m.len()).unwrap_or(0)
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
