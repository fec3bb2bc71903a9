//! The file paths a source lists, checked before anything is written: a
//! listing comes from the network and may name `../../etc/passwd`.
//!
//! [`check_relative`] is the pure rule: a path a model folder can hold is
//! relative, `/`-separated, made of non-empty components that are neither
//! `.` nor `..` nor hidden (`.git`: not part of a model), without
//! backslashes or control characters, at most [`MAX_PATH_BYTES`] long.
//! [`inside`] applies it and then walks the destination: no component that
//! exists may be a symbolic link, and all but the last must be folders, so
//! the file lands inside the destination and nowhere else.

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Longest path accepted from a listing, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;

/// Longest component (file or folder name) accepted, in bytes: Linux's
/// `NAME_MAX`.
pub const MAX_COMPONENT_BYTES: usize = 255;

/// Most files accepted in one listing.
pub const MAX_FILES: usize = 100_000;

fn unsafe_path(path: &str, reason: impl Into<String>) -> Error {
    Error::UnsafePath {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Checks that `path` names a file inside a model folder (see the module
/// documentation); the error says what is wrong with it.
pub fn check_relative(path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(unsafe_path(path, "is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(unsafe_path(
            path,
            format!("is longer than {MAX_PATH_BYTES} bytes"),
        ));
    }
    if path.starts_with('/') {
        return Err(unsafe_path(path, "is absolute"));
    }
    if path.contains('\\') {
        return Err(unsafe_path(
            path,
            "contains a backslash (paths are /-separated)",
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(unsafe_path(path, "contains a control character"));
    }
    for component in path.split('/') {
        match component {
            "" => {
                return Err(unsafe_path(
                    path,
                    "has an empty component (// or a trailing /)",
                ));
            }
            "." | ".." => {
                return Err(unsafe_path(path, format!("has a {component:?} component")));
            }
            c if c.starts_with('.') => {
                return Err(unsafe_path(
                    path,
                    format!("has a hidden component {c:?} (hidden files are not part of a model)"),
                ));
            }
            c if c.len() > MAX_COMPONENT_BYTES => {
                return Err(unsafe_path(
                    path,
                    format!("has a component longer than {MAX_COMPONENT_BYTES} bytes"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks a whole listing: at most [`MAX_FILES`] paths, each one
/// [`check_relative`].
pub fn check_listing<'a>(paths: impl ExactSizeIterator<Item = &'a str>) -> Result<()> {
    if paths.len() > MAX_FILES {
        return Err(Error::BadListing(format!(
            "it lists {} files, more than the {MAX_FILES} a model may have",
            paths.len()
        )));
    }
    paths.into_iter().try_for_each(check_relative)
}

/// `root/path` once `path` passed [`check_relative`] and no component of
/// it that already exists under `root` is a symbolic link (or, but for the
/// last, anything other than a folder).
pub fn inside(root: &Path, path: &str) -> Result<PathBuf> {
    check_relative(path)?;
    let mut at = root.to_path_buf();
    let mut components = path.split('/').peekable();
    while let Some(component) = components.next() {
        at.push(component);
        let last = components.peek().is_none();
        match fs::symlink_metadata(&at) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&at, e)),
            Ok(m) if m.file_type().is_symlink() => {
                return Err(unsafe_path(
                    path,
                    format!(
                        "would go through the symbolic link {}; remove it from the destination",
                        at.display()
                    ),
                ));
            }
            Ok(m) if !last && !m.is_dir() => {
                return Err(unsafe_path(
                    path,
                    format!("needs {} to be a folder, but it is a file", at.display()),
                ));
            }
            Ok(_) => {}
        }
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use std::path::Component;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn paths_that_leave_the_folder_are_refused_naming_why() {
        for (path, why) in [
            ("", "is empty"),
            ("/etc/passwd", "is absolute"),
            ("../x", "\"..\" component"),
            ("a/../../x", "\"..\" component"),
            ("a/./b", "\".\" component"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("a\\..\\b", "backslash"),
            ("a\nb", "control character"),
            (".git/config", "hidden component \".git\""),
            ("1_Pooling/.config.json", "hidden component"),
        ] {
            let err = check_relative(path).unwrap_err().to_string();
            assert!(
                err.contains(why) && err.contains(&format!("{path:?}")),
                "{path:?}: {err}"
            );
        }
        assert!(check_relative(&"a/".repeat(600)).is_err());
        assert!(check_relative(&"a".repeat(256)).is_err());
        for fine in [
            "model.safetensors",
            "1_Pooling/config.json",
            "a/b/c..d",
            "naïve.txt",
        ] {
            check_relative(fine).unwrap();
        }
    }

    #[test]
    fn a_listing_is_bounded() {
        let many = vec!["a"; MAX_FILES + 1];
        let err = check_listing(many.iter().copied()).unwrap_err().to_string();
        assert!(err.contains("100001 files"), "{err}");
        check_listing(["a", "b/c"].into_iter()).unwrap();
        assert!(check_listing(["a", "../b"].into_iter()).is_err());
    }

    #[test]
    fn links_and_files_in_the_way_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        fs::write(root.path().join("file"), b"x").unwrap();
        let err = inside(root.path(), "link/model.bin")
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
        let err = inside(root.path(), "file/model.bin")
            .unwrap_err()
            .to_string();
        assert!(err.contains("to be a folder"), "{err}");
        assert_eq!(
            inside(root.path(), "new/model.bin").unwrap(),
            root.path().join("new/model.bin")
        );
        assert_eq!(
            inside(root.path(), "file").unwrap(),
            root.path().join("file")
        );
    }

    /// Path components as a listing might hold them, hostile ones included.
    fn component() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[a-zA-Z0-9_-][a-zA-Z0-9_.-]{0,12}",
            1 => Just(".".to_owned()),
            1 => Just("..".to_owned()),
            1 => Just(String::new()),
            1 => "\\.[a-z]{1,5}",
            1 => "[a-z]{0,3}[\\\\\\x00\\n][a-z]{0,3}",
            1 => "[^/]{1,8}",
        ]
    }

    fn listed_path() -> impl Strategy<Value = String> {
        (
            prop::bool::weighted(0.1),
            prop::collection::vec(component(), 1..6),
        )
            .prop_map(|(absolute, parts)| {
                let joined = parts.join("/");
                if absolute {
                    format!("/{joined}")
                } else {
                    joined
                }
            })
    }

    proptest! {
        /// An accepted path only goes down into the folder, and to a
        /// non-hidden file: every component is a plain name.
        #[test]
        fn accepted_paths_stay_inside(path in listed_path()) {
            if check_relative(&path).is_ok() {
                let components: Vec<Component> = Path::new(&path).components().collect();
                prop_assert_eq!(components.len(), path.split('/').count());
                for c in components {
                    match c {
                        Component::Normal(name) => {
                            prop_assert!(!name.to_string_lossy().starts_with('.'));
                        }
                        other => prop_assert!(false, "{path:?} has {other:?}"),
                    }
                }
                let root = Path::new("/dest");
                prop_assert!(root.join(&path).starts_with(root));
            }
        }

        /// Every path with a way out is refused.
        #[test]
        fn paths_with_a_way_out_are_refused(path in listed_path()) {
            let way_out = path.starts_with('/')
                || path.split('/').any(|c| c.is_empty() || c == "." || c == "..");
            if way_out {
                prop_assert!(check_relative(&path).is_err(), "{path:?} was accepted");
            }
        }

        /// Ordinary model file names are accepted.
        #[test]
        fn plain_names_are_accepted(parts in prop::collection::vec("[a-zA-Z0-9_-][a-zA-Z0-9_.-]{0,30}", 1..5)) {
            let path = parts.join("/");
            prop_assert!(check_relative(&path).is_ok(), "{path:?}");
        }
    }
}
