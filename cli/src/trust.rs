//! What this computer trusts about a log, kept between runs in the user's
//! config folder (`$XDG_CONFIG_HOME/openmodel/`, else
//! `~/.config/openmodel/`), one file per log origin:
//!
//! - `keys/<origin>`: the log's verifier key, pinned the first time it is
//!   used (given with `--key`, or read from the log's `ledger.key` entry:
//!   trust on first use, announced loudly). A different key later is refused.
//! - `checkpoints/<origin>`: the latest signed checkpoint seen. Every
//!   checkpoint a server answers with must be proven consistent with it
//!   (the same tree, or one that contains it, or a prefix of it); only then
//!   does the stored one advance. Anything else is a fork: whoever holds the
//!   log's key has shown two histories.
//!
//! `<origin>` is the origin with every byte outside `[A-Za-z0-9._-]`
//! percent-encoded (`ledger.example/prod` → `ledger.example%2Fprod`). Files
//! are replaced atomically (a temporary file, then a rename).

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, anyhow, bail};
use openmodel_ledger::Error as LedgerError;
use openmodel_ledger::checkpoint::{Checkpoint, SignedCheckpoint};
use openmodel_ledger::hash::Hash;
use openmodel_ledger::note::Verifier;
use openmodel_ledger::tree::verify_consistency;

/// The folder under the user's config folder.
const APP_DIR: &str = "openmodel";

/// The per-user store of pinned keys and last-seen checkpoints.
#[derive(Clone, Debug)]
pub struct Store {
    dir: PathBuf,
}

/// `origin` as a file name: bytes outside `[A-Za-z0-9._-]` percent-encoded.
fn escape(origin: &str) -> String {
    let mut name = String::with_capacity(origin.len());
    for b in origin.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            name.push(char::from(b));
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    // "." and ".." are no file names of their own.
    if name.bytes().all(|b| b == b'.') {
        name = name.replace('.', "%2E");
    }
    name
}

/// Writes `contents` to `path` atomically: a temporary file beside it,
/// synced, then renamed over it.
fn write_atomically(path: &Path, contents: &str) -> Result<()> {
    let parent = path.parent().context("a stored file has a folder")?;
    fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
    let written = fs::File::create(&temp)
        .and_then(|mut f| {
            f.write_all(contents.as_bytes())?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
}

impl Store {
    /// The store in `dir`.
    pub fn at(dir: PathBuf) -> Store {
        Store { dir }
    }

    /// The user's store: `$XDG_CONFIG_HOME/openmodel`, else
    /// `$HOME/.config/openmodel`.
    pub fn for_user() -> Result<Store> {
        let non_empty = |var: &str| std::env::var_os(var).filter(|v| !v.is_empty());
        let config = non_empty("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| non_empty("HOME").map(|home| PathBuf::from(home).join(".config")))
            .context(
                "neither XDG_CONFIG_HOME nor HOME is set, so there is no folder to keep the \
                 log's key and last checkpoint in: set one of them",
            )?;
        Ok(Store::at(config.join(APP_DIR)))
    }

    fn key_path(&self, origin: &str) -> PathBuf {
        self.dir.join("keys").join(escape(origin))
    }

    /// Where the last checkpoint seen of `origin` is kept.
    pub fn checkpoint_path(&self, origin: &str) -> PathBuf {
        self.dir.join("checkpoints").join(escape(origin))
    }

    /// The key pinned for `origin`, if any.
    pub fn pinned_key(&self, origin: &str) -> Result<Option<Verifier>> {
        let path = self.key_path(origin);
        match fs::read_to_string(&path) {
            Ok(text) => text.trim().parse().map(Some).with_context(|| {
                format!(
                    "{} should hold the pinned key of {origin}; delete it to pin again",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    /// Pins `key` for its origin (its name); returns the file.
    pub fn pin_key(&self, key: &Verifier) -> Result<PathBuf> {
        let path = self.key_path(key.name());
        write_atomically(&path, &format!("{key}\n"))?;
        Ok(path)
    }

    /// The last checkpoint seen of `key`'s log, checked with `key`.
    pub fn last_checkpoint(&self, key: &Verifier) -> Result<Option<SignedCheckpoint>> {
        let path = self.checkpoint_path(key.name());
        let note = match fs::read_to_string(&path) {
            Ok(note) => note,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        SignedCheckpoint::open(&note, key)
            .map(Some)
            .with_context(|| {
                format!(
                    "{} holds no checkpoint signed by the pinned key {key}; it was altered, or the \
                 key changed: find out why before deleting it",
                    path.display()
                )
            })
    }

    /// Keeps `checkpoint` as the last one seen of its log.
    pub fn save_checkpoint(&self, checkpoint: &SignedCheckpoint) -> Result<()> {
        write_atomically(
            &self.checkpoint_path(&checkpoint.checkpoint.origin),
            &checkpoint.note,
        )
    }
}

/// What accepting a checkpoint takes, given the last one seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing seen before: keep it.
    First,
    /// The very tree seen before.
    Same,
    /// A larger tree: prove the seen one (`old` leaves) is its prefix, then
    /// keep it.
    Grown {
        /// The size seen before.
        old: u64,
        /// The new size.
        new: u64,
    },
    /// A smaller tree (an answer from before the last one seen): prove it
    /// is a prefix of the seen one, and keep the seen one.
    Older {
        /// The new, smaller size.
        old: u64,
        /// The size seen before.
        new: u64,
    },
    /// Two trees of one size with different roots.
    Fork,
}

/// The step that accepts `new` after `seen`.
pub fn step(seen: Option<&Checkpoint>, new: &Checkpoint) -> Step {
    let Some(seen) = seen.filter(|s| s.size > 0) else {
        return Step::First;
    };
    match seen.size.cmp(&new.size) {
        std::cmp::Ordering::Equal if seen.root == new.root => Step::Same,
        std::cmp::Ordering::Equal => Step::Fork,
        std::cmp::Ordering::Less => Step::Grown {
            old: seen.size,
            new: new.size,
        },
        std::cmp::Ordering::Greater => Step::Older {
            old: new.size,
            new: seen.size,
        },
    }
}

/// Indents every line of `text` by four spaces.
fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// The loud report of a fork between the checkpoint kept in `kept` and the
/// one `source` answered with.
pub fn fork_error(
    source: &str,
    kept: &Path,
    seen: &SignedCheckpoint,
    served: &SignedCheckpoint,
    detail: &str,
) -> LedgerError {
    LedgerError::Fork(format!(
        "{source} serves a history of {origin} that cannot extend the one seen before: {detail}\n\
         \n\
         checkpoint seen before (kept in {kept}):\n{seen_note}\
         checkpoint served now:\n{served_note}\
         \n\
         Both carry valid signatures by the log's key, so whoever holds that key has shown two \
         different histories of one log. Keep both checkpoints as evidence and report this to \
         the log's operator and your security team. The stored checkpoint was not changed.",
        origin = served.checkpoint.origin,
        kept = kept.display(),
        seen_note = indent(&seen.note),
        served_note = indent(&served.note),
    ))
}

/// The trust in one log: its key and the last checkpoint seen.
pub struct Trust {
    store: Store,
    key: Verifier,
    seen: Option<SignedCheckpoint>,
}

impl Trust {
    /// The trust in log `origin` (as the server names it): `key` if given
    /// (`--key`; it must match a key pinned before, else it is pinned now),
    /// else the pinned key, else the one `learn` reads from the log, pinned
    /// on first use and announced on standard error.
    pub fn establish(
        store: Store,
        origin: &str,
        key: Option<Verifier>,
        learn: impl FnOnce() -> Result<Verifier>,
    ) -> Result<Trust> {
        let key = match key {
            Some(key) => {
                match store.pinned_key(key.name())? {
                    Some(pinned) if pinned != key => {
                        return Err(anyhow!(LedgerError::BadSignature(format!(
                            "the key you passed ({key}) is not the key pinned for {} ({pinned}, in \
                             {}): if the log's operator really changed keys, confirm it with them \
                             and delete that file",
                            key.name(),
                            store.key_path(key.name()).display()
                        ))));
                    }
                    Some(_) => {}
                    None => {
                        let path = store.pin_key(&key)?;
                        eprintln!(
                            "pinned the key you passed for {} in {}",
                            key.name(),
                            path.display()
                        );
                    }
                }
                key
            }
            None => match store.pinned_key(origin)? {
                Some(pinned) => pinned,
                None => {
                    let key = learn()?;
                    if key.name() != origin {
                        bail!(LedgerError::BadSignature(format!(
                            "the log names itself {origin:?} but its key entry holds a key for {:?}",
                            key.name()
                        )));
                    }
                    let path = store.pin_key(&key)?;
                    eprintln!(
                        "NOTICE: trusting the key of {origin} on first use:\n\
                         \x20   {key}\n\
                         \x20 It was read from the log itself and is now pinned in {}.\n\
                         \x20 Compare it with the key the log's operator publishes; from now on a\n\
                         \x20 different key is refused. Pass --key to pin a key you obtained yourself.",
                        path.display()
                    );
                    key
                }
            },
        };
        let seen = store.last_checkpoint(&key)?;
        Ok(Trust { store, key, seen })
    }

    /// The trusted key.
    pub fn key(&self) -> &Verifier {
        &self.key
    }

    /// The last checkpoint seen before or during this run.
    pub fn seen(&self) -> Option<&SignedCheckpoint> {
        self.seen.as_ref()
    }

    /// Checks the signature of a checkpoint note with the trusted key.
    pub fn open(&self, note: &str) -> Result<SignedCheckpoint> {
        Ok(SignedCheckpoint::open(note, &self.key)?)
    }

    /// Accepts `served` (already opened with the key) from `source` after
    /// proving it consistent with the last checkpoint seen; keeps it when it
    /// is newer. `prove(old, new)` asks the source for a consistency proof
    /// between two of its tree sizes, `None` when it has no signed tree of
    /// size `new`.
    pub fn accept(
        &mut self,
        source: &str,
        served: &SignedCheckpoint,
        prove: impl FnOnce(u64, u64) -> Result<Option<Vec<Hash>>>,
    ) -> Result<()> {
        let seen = self.seen.clone();
        let kept = self.store.checkpoint_path(self.key.name());
        let fork = |seen: &SignedCheckpoint, detail: &str| {
            anyhow!(fork_error(source, &kept, seen, served, detail))
        };
        match (
            step(seen.as_ref().map(|s| &s.checkpoint), &served.checkpoint),
            &seen,
        ) {
            (Step::Same, _) => return Ok(()),
            (Step::First, _) => {}
            (Step::Fork, Some(seen)) => {
                return Err(fork(
                    seen,
                    &format!(
                        "two signed checkpoints of size {} with different roots",
                        seen.checkpoint.size
                    ),
                ));
            }
            (Step::Grown { old, new }, Some(seen)) => {
                let proof = prove(old, new)?.with_context(|| {
                    format!(
                        "{source} cannot prove its tree of size {new} extends the one of size {old}"
                    )
                })?;
                verify_consistency(old, new, &seen.checkpoint.root.0, &served.checkpoint.root.0, &proof)
                    .map_err(|e| fork(seen, &format!("its tree of size {new} does not contain the tree of size {old} seen before ({e})")))?;
            }
            (Step::Older { old, new }, Some(seen)) => {
                let Some(proof) = prove(old, new)? else {
                    return Err(fork(
                        seen,
                        &format!(
                            "it no longer has the tree of size {new} it signed before: the log was rolled back"
                        ),
                    ));
                };
                verify_consistency(old, new, &served.checkpoint.root.0, &seen.checkpoint.root.0, &proof)
                    .map_err(|e| fork(seen, &format!("its tree of size {old} is no prefix of the tree of size {new} seen before ({e})")))?;
                return Ok(());
            }
            (_, None) => {}
        }
        self.store.save_checkpoint(served)?;
        self.seen = Some(served.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openmodel_ledger::checkpoint::Checkpoint;
    use openmodel_ledger::hash::leaf_hash;
    use openmodel_ledger::note::Signer;
    use openmodel_ledger::tree::{Frontier, consistency_proof, tree_root};

    use super::*;

    /// A tree of `n` leaves `"0"`, `"1"`, … (or `"x0"`, … for `forked`).
    struct Tree {
        leaves: Vec<Hash>,
    }

    impl Tree {
        fn new(n: u64, prefix: &str) -> Tree {
            Tree {
                leaves: (0..n)
                    .map(|i| leaf_hash(format!("{prefix}{i}").as_bytes()))
                    .collect(),
            }
        }

        fn root(&self, size: u64) -> Hash {
            let mut f = Frontier::new();
            for h in &self.leaves[..size as usize] {
                f.push(*h);
            }
            f.root()
        }

        fn checkpoint(&self, signer: &Signer, size: u64) -> SignedCheckpoint {
            let cp = Checkpoint {
                origin: signer.name().into(),
                size,
                root: self.root(size),
                extensions: vec![],
            };
            SignedCheckpoint::sign(cp, signer).unwrap()
        }

        fn proof(&self, old: u64, new: u64) -> Vec<Hash> {
            let mut stored = Vec::new();
            let mut f = Frontier::new();
            for h in &self.leaves {
                stored.extend(f.push(*h));
            }
            let reader = MemHashes(stored);
            assert_eq!(tree_root(new, &reader).unwrap(), self.root(new));
            consistency_proof(old, new, &reader).unwrap()
        }
    }

    struct MemHashes(Vec<Hash>);

    impl openmodel_ledger::tree::HashReader for MemHashes {
        fn read_hashes(&self, ids: &[u64]) -> openmodel_ledger::Result<Vec<Hash>> {
            Ok(ids.iter().map(|&i| self.0[i as usize]).collect())
        }
    }

    fn setup() -> (tempfile::TempDir, Store, Signer) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::at(dir.path().join("openmodel"));
        (dir, store, Signer::generate("log.test/a").unwrap())
    }

    #[test]
    fn origins_become_safe_file_names() {
        assert_eq!(escape("ledger.example/prod"), "ledger.example%2Fprod");
        assert_eq!(escape("a b:c"), "a%20b%3Ac");
        assert_eq!(escape(".."), "%2E%2E");
        assert_eq!(escape("ok-name_1.2"), "ok-name_1.2");
    }

    #[test]
    fn steps_between_checkpoints() {
        let t = Tree::new(10, "");
        let cp = |size| Checkpoint {
            origin: "o".into(),
            size,
            root: t.root(size),
            extensions: vec![],
        };
        assert_eq!(step(None, &cp(3)), Step::First);
        assert_eq!(step(Some(&cp(3)), &cp(3)), Step::Same);
        assert_eq!(step(Some(&cp(3)), &cp(7)), Step::Grown { old: 3, new: 7 });
        assert_eq!(step(Some(&cp(7)), &cp(3)), Step::Older { old: 3, new: 7 });
        let mut other = cp(3);
        other.root = Tree::new(3, "x").root(3);
        assert_eq!(step(Some(&cp(3)), &other), Step::Fork);
    }

    #[test]
    fn keys_are_pinned_once_and_a_different_key_is_refused() {
        let (_dir, store, signer) = setup();
        let key = signer.verifier();
        let learned =
            Trust::establish(store.clone(), "log.test/a", None, || Ok(key.clone())).unwrap();
        assert_eq!(learned.key(), &key);
        // Pinned: not learned again.
        Trust::establish(store.clone(), "log.test/a", None, || bail!("not asked")).unwrap();
        Trust::establish(store.clone(), "log.test/a", Some(key.clone()), || {
            bail!("not asked")
        })
        .unwrap();
        let other = Signer::generate("log.test/a").unwrap().verifier();
        let err = Trust::establish(store.clone(), "log.test/a", Some(other), || {
            bail!("not asked")
        })
        .err()
        .unwrap();
        assert!(err.to_string().contains("is not the key pinned"), "{err}");
        assert!(
            err.downcast_ref::<LedgerError>()
                .unwrap()
                .is_verification_failure()
        );
        // A log whose key entry names another log is refused.
        let stranger = Signer::generate("log.test/b").unwrap().verifier();
        let err = Trust::establish(store, "log.test/c", None, || Ok(stranger))
            .err()
            .unwrap();
        assert!(err.to_string().contains("log.test/c"), "{err}");
    }

    #[test]
    fn checkpoints_advance_only_when_proven_and_forks_are_loud() {
        let (_dir, store, signer) = setup();
        let honest = Tree::new(20, "");
        let mut trust =
            Trust::establish(store.clone(), "log.test/a", Some(signer.verifier()), || {
                bail!("no")
            })
            .unwrap();
        let no_proof = |_, _| -> Result<Option<Vec<Hash>>> { bail!("no proof needed") };
        trust
            .accept("srv", &honest.checkpoint(&signer, 5), no_proof)
            .unwrap();
        assert_eq!(trust.seen().unwrap().checkpoint.size, 5);
        trust
            .accept("srv", &honest.checkpoint(&signer, 5), no_proof)
            .unwrap();
        trust
            .accept("srv", &honest.checkpoint(&signer, 12), |o, n| {
                Ok(Some(honest.proof(o, n)))
            })
            .unwrap();
        // Kept across runs.
        let reopened = store.last_checkpoint(&signer.verifier()).unwrap().unwrap();
        assert_eq!(reopened.checkpoint.size, 12);
        // An older answer is fine once proven a prefix; the stored one stays.
        trust
            .accept("srv", &honest.checkpoint(&signer, 8), |o, n| {
                Ok(Some(honest.proof(o, n)))
            })
            .unwrap();
        assert_eq!(trust.seen().unwrap().checkpoint.size, 12);

        // Another history under the same key: same size, larger, rolled back.
        let forked = Tree::new(20, "x");
        let err = trust
            .accept("srv", &forked.checkpoint(&signer, 12), no_proof)
            .unwrap_err();
        let text = err.to_string();
        assert!(err.downcast_ref::<LedgerError>().unwrap().is_fork());
        assert!(text.contains("two signed checkpoints of size 12"), "{text}");
        assert!(text.contains("checkpoint seen before (kept in"), "{text}");
        assert!(
            text.contains(&indent(&honest.checkpoint(&signer, 12).note)),
            "{text}"
        );
        assert!(
            text.contains(&indent(&forked.checkpoint(&signer, 12).note)),
            "{text}"
        );
        let err = trust
            .accept("srv", &forked.checkpoint(&signer, 15), |o, n| {
                Ok(Some(forked.proof(o, n)))
            })
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("does not contain the tree of size 12"),
            "{err}"
        );
        let err = trust
            .accept("srv", &forked.checkpoint(&signer, 3), |_, _| Ok(None))
            .unwrap_err();
        assert!(err.to_string().contains("rolled back"), "{err}");
        assert_eq!(
            store
                .last_checkpoint(&signer.verifier())
                .unwrap()
                .unwrap()
                .checkpoint
                .size,
            12
        );

        // A stored checkpoint that the key did not sign is an error, not a reset.
        let stranger = Signer::generate("log.test/a").unwrap();
        std::fs::write(
            store.checkpoint_path("log.test/a"),
            honest.checkpoint(&stranger, 3).note,
        )
        .unwrap();
        let err = store.last_checkpoint(&signer.verifier()).unwrap_err();
        assert!(
            format!("{err:#}").contains("no checkpoint signed by the pinned key"),
            "{err:#}"
        );
    }
}
