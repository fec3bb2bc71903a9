//! The OCI images scripts/build-images.sh writes to .cache/images/: for each
//! of openmodel-operator, openmodel-ledger and openmodel-server the archive
//! is a well-formed OCI image layout (blob digests checked), its config runs
//! as the non-root user 65532 with the binary as entrypoint and carries the
//! OCI labels (source, version, revision), the single layer holds the binary,
//! its libraries and the CA bundle and nothing like a shell, the image is
//! small, and the binary runs inside it with runc (Debian package) as the
//! image's user: `<binary> --version` prints the workspace version.
//!
//! The CUDA server image (`scripts/build-images.sh --cuda`, from the binary
//! of scripts/build-cuda.sh) is checked the same way, and more: the CUDA
//! runtime libraries are in it and libcuda is not (the node's driver
//! provides it), every library the binary loads resolves inside the image
//! (the image's own loader, `ldd -r` style: every symbol bound, against the
//! build's stand-in for libcuda), and it runs `--version` under runc with
//! that stand-in where the NVIDIA container toolkit mounts the driver. That
//! test is ignored by default (the CUDA build takes 30 minutes cold);
//! scripts/test.sh runs it whenever the CUDA build is cached.
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

/// The CUDA server image's bound: 517 MB compressed on 2026-12-03, most of
/// it cuBLASLt.
const MAX_CUDA_COMPRESSED_BYTES: u64 = 700_000_000;

/// Where the CUDA image keeps the CUDA runtime libraries, and what it must
/// hold there.
const CUDA_LIB_DIR: &str = "usr/local/cuda/lib64";
const CUDA_LIBS: [&str; 4] = [
    "libcudart.so.13",
    "libcublas.so.13",
    "libcublasLt.so.13",
    "libcurand.so.10",
];

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
    /// The archive's name, `.cache/images/<name>.oci.tar`.
    name: &'static str,
    /// The binary it runs, `/usr/local/bin/<binary>`.
    binary: &'static str,
    layout: tempfile::TempDir,
    config: Value,
    layers: Vec<PathBuf>,
    compressed_bytes: u64,
}

impl Image {
    /// Opens `.cache/images/<name>.oci.tar`, the image of `binary` tagged
    /// `<version><tag_suffix>`; `build` says how to make it.
    fn open(
        name: &'static str,
        binary: &'static str,
        tag_suffix: &str,
        build: &str,
    ) -> Result<Image> {
        let archive = workspace().join(format!(".cache/images/{name}.oci.tar"));
        if !archive.is_file() {
            bail!("{} is missing: run {build} first", archive.display());
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
                    "docker.io/openmodel/{binary}:{}{tag_suffix}",
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
            binary,
            layout,
            config,
            layers,
            compressed_bytes,
        })
    }

    fn binary_path(&self) -> String {
        format!("/usr/local/bin/{}", self.binary)
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
            config["Entrypoint"] == json!([self.binary_path()]),
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
            label("org.opencontainers.image.title") == self.binary,
            "{name}: title label"
        );
        Ok(())
    }

    fn check_contents(&self, max_compressed_bytes: u64) -> Result<()> {
        let name = self.name;
        let files = self.files()?;
        for wanted in [
            &self.binary_path()[1..],
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
            self.compressed_bytes < max_compressed_bytes,
            "{name}: {} bytes compressed is over its bound of {max_compressed_bytes}",
            self.compressed_bytes
        );
        Ok(())
    }

    /// The image's layers unpacked, the root filesystem of a runc bundle
    /// (unpacked on the first call).
    fn rootfs(&self) -> Result<PathBuf> {
        let rootfs = self.layout.path().join("bundle/rootfs");
        if !rootfs.is_dir() {
            std::fs::create_dir_all(&rootfs)?;
            for layer in &self.layers {
                run(Command::new("tar")
                    .arg("-xzf")
                    .arg(layer)
                    .arg("-C")
                    .arg(&rootfs))?;
            }
        }
        Ok(rootfs)
    }

    /// Runs `<entrypoint> --version` in the image with runc: the layer
    /// unpacked as the bundle's root filesystem, `runc spec`'s default
    /// config (namespaces, no capabilities, read-only root) with the image
    /// config's user, environment, working directory and entrypoint.
    fn run_version(&self) -> Result<String> {
        let name = self.name;
        let bundle = self.rootfs()?.parent().context("a bundle")?.to_path_buf();
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
    let image = Image::open(
        name,
        name,
        "",
        "scripts/build-images.sh (or scripts/build-images.sh --profile debug)",
    )?;
    image.check_config()?;
    image.check_contents(MAX_COMPRESSED_BYTES)?;
    check_version(&image)
}

fn check_version(image: &Image) -> Result<()> {
    let version = image.run_version()?;
    ensure!(
        version.trim() == format!("{} {}", image.binary, env!("CARGO_PKG_VERSION")),
        "{} --version in its image printed {version:?}",
        image.name
    );
    Ok(())
}

/// The folder of the build's stand-in for the driver, `libcuda.so.1`
/// (target-cuda/cuda-env, written by scripts/build-cuda.sh).
fn driver_stub_dir() -> Result<PathBuf> {
    let env_file = workspace().join("target-cuda/cuda-env");
    let text = std::fs::read_to_string(&env_file).with_context(|| {
        format!(
            "reading {}: run scripts/build-cuda.sh first",
            env_file.display()
        )
    })?;
    let dir = text
        .lines()
        .find_map(|line| line.strip_prefix("CUDA_DRIVER_STUB_DIR="))
        .with_context(|| format!("{} names no CUDA_DRIVER_STUB_DIR", env_file.display()))?;
    let dir = PathBuf::from(dir);
    ensure!(
        dir.join("libcuda.so.1").exists(),
        "{}/libcuda.so.1 is gone: run scripts/build-cuda.sh again",
        dir.display()
    );
    Ok(dir)
}

/// Every library the image's binary loads, found by the image's own loader
/// with symbols bound now (what `ldd -r` does): `(soname, path)` pairs.
/// Searches the image's library folders, then `extra` (the driver
/// stand-in), never this machine's.
fn loaded_libraries(rootfs: &Path, binary: &str, extra: &Path) -> Result<Vec<(String, String)>> {
    let search = [
        CUDA_LIB_DIR,
        "lib/x86_64-linux-gnu",
        "usr/lib/x86_64-linux-gnu",
    ]
    .iter()
    .map(|dir| rootfs.join(dir).display().to_string())
    .chain([extra.display().to_string()])
    .collect::<Vec<_>>()
    .join(":");
    let output = Command::new(rootfs.join("lib64/ld-linux-x86-64.so.2"))
        .arg("--library-path")
        .arg(&search)
        .arg(rootfs.join(binary.trim_start_matches('/')))
        .env_clear()
        .env("LD_TRACE_LOADED_OBJECTS", "1")
        .env("LD_WARN", "yes")
        .env("LD_BIND_NOW", "yes")
        .output()
        .context("running the image's loader")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "the image's loader failed on {binary}: {text}"
    );
    for problem in ["not found", "undefined symbol", "symbol lookup error"] {
        ensure!(
            !text.contains(problem),
            "{binary} in the image: {problem}: {text}"
        );
    }
    Ok(text
        .lines()
        .filter_map(|line| {
            let (soname, rest) = line.trim().split_once(" => ")?;
            let path = rest.split(" (").next()?;
            Some((soname.to_owned(), path.to_owned()))
        })
        .collect())
}

#[test]
#[ignore = "needs the CUDA image: scripts/build-cuda.sh (30 min cold), then scripts/build-images.sh --cuda; scripts/test.sh runs it whenever the CUDA build is cached"]
fn cuda_server_image_holds_the_cuda_runtime_and_runs() -> Result<()> {
    let image = Image::open(
        "openmodel-server-cuda",
        "openmodel-server",
        "-cuda",
        "scripts/build-cuda.sh, then scripts/build-images.sh --cuda",
    )?;
    image.check_config()?;
    image.check_contents(MAX_CUDA_COMPRESSED_BYTES)?;
    let env = image.config["config"]["Env"].clone();
    ensure!(
        env.as_array()
            .is_some_and(|env| env.contains(&json!(format!("LD_LIBRARY_PATH=/{CUDA_LIB_DIR}")))),
        "the CUDA image's environment does not put /{CUDA_LIB_DIR} on LD_LIBRARY_PATH: {env}"
    );
    let files = image.files()?;
    for lib in CUDA_LIBS {
        let path = format!("{CUDA_LIB_DIR}/{lib}");
        ensure!(
            files.contains(&path),
            "the CUDA image lacks {path}: {files:?}"
        );
    }
    ensure!(
        !files.iter().any(|f| f.contains("libcuda.so")),
        "the CUDA image holds a libcuda (the node's driver must provide it): {files:?}"
    );

    // Every library resolves inside the image, bar the driver.
    let stub = driver_stub_dir()?;
    let rootfs = image.rootfs()?;
    let loaded = loaded_libraries(&rootfs, &image.binary_path(), &stub)?;
    for (soname, path) in &loaded {
        if soname == "libcuda.so.1" {
            ensure!(
                Path::new(path).starts_with(&stub),
                "libcuda.so.1 resolved to {path}, not the driver stand-in"
            );
        } else {
            ensure!(
                Path::new(path).starts_with(&rootfs),
                "{soname} resolved outside the image, to {path}"
            );
        }
    }
    for wanted in CUDA_LIBS.iter().chain(&["libcuda.so.1", "libc.so.6"]) {
        ensure!(
            loaded.iter().any(|(soname, _)| soname == wanted),
            "the binary does not load {wanted}: {loaded:?}"
        );
    }

    // Where the NVIDIA container toolkit mounts the driver, the stand-in;
    // then the binary starts in the image as on a GPU node.
    let driver = rootfs.join("usr/lib/x86_64-linux-gnu/libcuda.so.1");
    std::fs::create_dir_all(driver.parent().context("a parent")?)?;
    std::fs::copy(stub.join("libcuda.so.1"), &driver)?;
    check_version(&image)
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
