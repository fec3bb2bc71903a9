//! The OCI images scripts/build-images.sh writes to .cache/images/: for each
//! of openmodel-operator, openmodel-ledger and openmodel-server the archive
//! is a well-formed OCI image layout (blob digests checked), its config runs
//! as the non-root user 65532 with the binary as entrypoint and carries the
//! OCI labels (source, version, revision), the single layer holds the binary,
//! its libraries and the CA bundle and nothing like a shell, the image is
//! small, and the binary runs inside it with runc (Debian package) as the
//! image's user: `<binary> --version` prints the workspace version.
//!
//! The images are built by the script, not here (it takes a cargo build);
//! when they are missing the tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::{Value, json};

/// Compressed size above which an image no longer counts as small (the
/// release images are 5–10 MB, stripped debug ones 8–13 MB).
const MAX_COMPRESSED_BYTES: u64 = 50_000_000;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// Runs a command and returns its stdout, or an error with its stderr.
fn run(command: &mut Command) -> Result<String> {
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    ensure!(
        output.status.success(),
        "{command:?} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

/// One image's archive unpacked into a temporary OCI layout.
struct Image {
    name: &'static str,
    layout: tempfile::TempDir,
    config: Value,
    layers: Vec<PathBuf>,
    compressed_bytes: u64,
}

impl Image {
    fn open(name: &'static str) -> Result<Image> {
        let archive = workspace().join(format!(".cache/images/{name}.oci.tar"));
        if !archive.is_file() {
            bail!(
                "{} is missing: run scripts/build-images.sh (or scripts/build-images.sh --profile debug) first",
                archive.display()
            );
        }
        let compressed_bytes = std::fs::metadata(&archive)?.len();
        let layout = tempfile::tempdir()?;
        run(Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(layout.path()))?;
        let index = read_json(&layout.path().join("index.json"))?;
        let manifests = index["manifests"]
            .as_array()
            .context("index.json has no manifests")?;
        ensure!(
            manifests.len() == 1,
            "{name}: expected one manifest, got {manifests:?}"
        );
        let ref_name = manifests[0]["annotations"]["org.opencontainers.image.ref.name"].as_str();
        ensure!(
            ref_name
                == Some(&format!(
                    "docker.io/openmodel/{name}:{}",
                    env!("CARGO_PKG_VERSION")
                )),
            "{name}: the image is tagged {ref_name:?}"
        );
        let blob = |descriptor: &Value| -> Result<PathBuf> {
            let digest = descriptor["digest"]
                .as_str()
                .context("a descriptor without digest")?;
            let hex = digest
                .strip_prefix("sha256:")
                .context("not a sha256 digest")?;
            let path = layout.path().join("blobs/sha256").join(hex);
            let sum = run(Command::new("sha256sum").arg(&path))?;
            ensure!(
                sum.starts_with(hex),
                "{name}: blob {digest} does not match its digest"
            );
            Ok(path)
        };
        let manifest = read_json(&blob(&manifests[0])?)?;
        let config = read_json(&blob(&manifest["config"])?)?;
        let layers = manifest["layers"]
            .as_array()
            .context("the manifest has no layers")?
            .iter()
            .map(blob)
            .collect::<Result<Vec<_>>>()?;
        Ok(Image {
            name,
            layout,
            config,
            layers,
            compressed_bytes,
        })
    }

    fn binary(&self) -> String {
        format!("/usr/local/bin/{}", self.name)
    }

    /// Every path in the image, without the leading "/".
    fn files(&self) -> Result<Vec<String>> {
        let mut files = Vec::new();
        for layer in &self.layers {
            files.extend(
                run(Command::new("tar").arg("-tzf").arg(layer))?
                    .lines()
                    .map(str::to_owned),
            );
        }
        Ok(files)
    }

    fn check_config(&self) -> Result<()> {
        let name = self.name;
        let config = &self.config["config"];
        ensure!(
            self.config["os"] == "linux",
            "{name}: os {}",
            self.config["os"]
        );
        ensure!(
            config["User"] == "65532:65532",
            "{name}: User is {}, not the non-root 65532:65532",
            config["User"]
        );
        ensure!(
            config["Entrypoint"] == json!([self.binary()]),
            "{name}: Entrypoint is {}",
            config["Entrypoint"]
        );
        let labels = &config["Labels"];
        let label = |key: &str| labels[key].as_str().unwrap_or_default().to_owned();
        ensure!(
            label("org.opencontainers.image.version") == env!("CARGO_PKG_VERSION"),
            "{name}: version label {:?}",
            label("org.opencontainers.image.version")
        );
        ensure!(
            label("org.opencontainers.image.source") == env!("CARGO_PKG_REPOSITORY"),
            "{name}: source label {:?}",
            label("org.opencontainers.image.source")
        );
        let revision = label("org.opencontainers.image.revision");
        let commit = revision.strip_suffix("-dirty").unwrap_or(&revision);
        ensure!(
            commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{name}: revision label {revision:?} is not a git commit"
        );
        ensure!(
            label("org.opencontainers.image.title") == name,
            "{name}: title label"
        );
        Ok(())
    }

    fn check_contents(&self) -> Result<()> {
        let name = self.name;
        let files = self.files()?;
        for wanted in [
            &self.binary()[1..],
            "etc/ssl/certs/ca-certificates.crt",
            "etc/passwd",
            "etc/group",
            "lib64/ld-linux-x86-64.so.2",
            "tmp/",
        ] {
            ensure!(
                files.iter().any(|f| f == wanted),
                "{name}: {wanted} is not in the image: {files:?}"
            );
        }
        let listing = self
            .layers
            .iter()
            .map(|layer| {
                run(Command::new("tar")
                    .args(["--numeric-owner", "-tvzf"])
                    .arg(layer))
            })
            .collect::<Result<String>>()?;
        ensure!(
            listing
                .lines()
                .any(|line| line.contains(" 65532/65532 ") && line.ends_with(" home/nonroot/")),
            "{name}: /home/nonroot does not belong to 65532: {listing}"
        );
        for unwanted in ["bin/sh", "usr/bin/sh", "bin/bash"] {
            ensure!(
                !files.iter().any(|f| f == unwanted),
                "{name}: the image has a shell ({unwanted})"
            );
        }
        ensure!(
            self.compressed_bytes < MAX_COMPRESSED_BYTES,
            "{name}: {} bytes compressed is not small",
            self.compressed_bytes
        );
        Ok(())
    }

    /// Runs `<entrypoint> --version` in the image with runc: the layer
    /// unpacked as the bundle's root filesystem, `runc spec`'s default
    /// config (namespaces, no capabilities, read-only root) with the image
    /// config's user, environment, working directory and entrypoint.
    fn run_version(&self) -> Result<String> {
        let name = self.name;
        let bundle = self.layout.path().join("bundle");
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs)?;
        for layer in &self.layers {
            run(Command::new("tar")
                .arg("-xzf")
                .arg(layer)
                .arg("-C")
                .arg(&rootfs))?;
        }
        if Command::new("runc").arg("--version").output().is_err() {
            bail!(
                "runc is missing: apt-get install runc (the image test runs the binaries in their image with it)"
            );
        }
        // As root runc runs the process as the image's user 65532; without
        // root, the rootless spec maps only the caller's uid (to 0 inside),
        // so the process runs as that.
        let rootless = run(Command::new("id").arg("-u"))?.trim() != "0";
        let mut spec = Command::new("runc");
        spec.arg("spec").arg("--bundle").arg(&bundle);
        if rootless {
            spec.arg("--rootless");
        }
        run(&mut spec)?;
        let config_path = bundle.join("config.json");
        let mut runtime = read_json(&config_path)?;
        let image = &self.config["config"];
        let mut args = image["Entrypoint"]
            .as_array()
            .context("no Entrypoint")?
            .clone();
        args.push(json!("--version"));
        let process = &mut runtime["process"];
        process["terminal"] = json!(false);
        process["args"] = Value::Array(args);
        process["env"] = image["Env"].clone();
        process["cwd"] = image["WorkingDir"].clone();
        if !rootless {
            let user = image["User"].as_str().context("no User")?;
            let (uid, gid) = user.split_once(':').context("User is not uid:gid")?;
            process["user"] = json!({"uid": uid.parse::<u32>()?, "gid": gid.parse::<u32>()?});
        }
        std::fs::write(&config_path, serde_json::to_vec_pretty(&runtime)?)?;
        let state = self.layout.path().join("runc-state");
        let id = format!("openmodel-test-{name}-{}", std::process::id());
        let mut runc = Command::new("runc");
        if rootless {
            runc.arg("--rootless").arg("true");
        }
        runc.arg("--root")
            .arg(&state)
            .arg("run")
            .arg("--bundle")
            .arg(&bundle)
            .arg(&id);
        let output = run(&mut runc).with_context(|| format!("{name}: running the image with runc"));
        // `runc run` removes the container when the process exits; delete
        // it anyway in case it failed half-way.
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["delete", "--force", &id])
            .output();
        output
    }
}

fn check(name: &'static str) -> Result<()> {
    let image = Image::open(name)?;
    image.check_config()?;
    image.check_contents()?;
    let version = image.run_version()?;
    ensure!(
        version.trim() == format!("{name} {}", env!("CARGO_PKG_VERSION")),
        "{name} --version in its image printed {version:?}"
    );
    Ok(())
}

#[test]
fn operator_image_is_non_root_labelled_and_runs() -> Result<()> {
    check("openmodel-operator")
}

#[test]
fn ledger_image_is_non_root_labelled_and_runs() -> Result<()> {
    check("openmodel-ledger")
}

#[test]
fn server_image_is_non_root_labelled_and_runs() -> Result<()> {
    check("openmodel-server")
}
