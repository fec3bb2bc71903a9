//! The C2SP tlog-tiles layout: how a log is published (and exported) as
//! static files.
//!
//! - `checkpoint`: the latest signed checkpoint.
//! - `tile/<L>/<N>`: hash tile at tile level `L`, index `N`: the 256 hashes
//!   of tree level `8·L`, nodes `256·N … 256·N+255`, 32 bytes each,
//!   concatenated. The rightmost tile of a level may be partial:
//!   `tile/<L>/<N>.p/<W>` holds its first `W` hashes.
//! - `tile/entries/<N>`: entry bundle of entries `256·N … 256·N+255`, each as
//!   a big-endian 16-bit length followed by the entry bytes; partial bundles
//!   are `tile/entries/<N>.p/<W>`.
//!
//! `N` is written in groups of three digits, every group but the last
//! prefixed with `x`: 1234067 → `x001/x234/067`.
//!
//! [`TileResource`] names one such file and parses its path back (the
//! ledger service serves them over HTTP, `Ledger::tile` reads them).

use crate::tree::Node;
use crate::{Error, Result};

/// Tree levels per tile.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u64 = 1 << TILE_HEIGHT;
/// Longest entry an entry bundle can hold.
pub const MAX_ENTRY_SIZE: usize = u16::MAX as usize;

/// One tile of a tree of a given size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    /// Tile level: the tile holds tree level `8 · level`.
    pub level: u8,
    /// Tile index within its level.
    pub index: u64,
    /// Number of hashes (1..=256); below 256 only for the rightmost tile.
    pub width: u64,
}

impl Tile {
    /// The tree nodes whose hashes the tile holds, in order.
    pub fn nodes(self) -> impl Iterator<Item = Node> {
        let level = self.level * TILE_HEIGHT;
        let first = self.index * TILE_WIDTH;
        (first..first + self.width).map(move |index| Node { level, index })
    }

    /// Path of this hash tile.
    pub fn path(self) -> String {
        format!("tile/{}/{}", self.level, index_path(self.index, self.width))
    }

    /// Path of the entry bundle with this index and width (level must be 0).
    pub fn entries_path(self) -> String {
        format!("tile/entries/{}", index_path(self.index, self.width))
    }
}

/// One resource of the layout below `checkpoint`: a hash tile or an entry
/// bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TileResource {
    /// `tile/<L>/<N>[.p/<W>]`.
    Hashes(Tile),
    /// `tile/entries/<N>[.p/<W>]` (the tile's level is 0).
    Entries(Tile),
}

/// Highest tile level a path may name (C2SP tlog-tiles: 0 to 63).
const MAX_TILE_LEVEL: u8 = 63;

impl TileResource {
    /// Its path, relative to the log's prefix.
    pub fn path(self) -> String {
        match self {
            TileResource::Hashes(tile) => tile.path(),
            TileResource::Entries(tile) => tile.entries_path(),
        }
    }

    /// Parses a path relative to the log's prefix (`tile/0/x001/234.p/7`,
    /// `tile/entries/005`). Only the one spelling [`TileResource::path`]
    /// writes is accepted: no leading zeros in `L` or `W`, no all-zero
    /// leading `x` groups in `N`, `W` only for partial tiles (1..=255).
    pub fn parse(path: &str) -> Result<TileResource> {
        let bad = |why: &str| {
            Error::InvalidTilePath(format!(
                "{path:?}: {why}; tile paths are tile/<L>/<N>[.p/<W>] and tile/entries/<N>[.p/<W>] \
                 (c2sp.org/tlog-tiles)"
            ))
        };
        let rest = path
            .strip_prefix("tile/")
            .ok_or_else(|| bad("does not start with tile/"))?;
        let (first, rest) = rest.split_once('/').ok_or_else(|| bad("no tile index"))?;
        let level = match first {
            "entries" => None,
            l => Some(
                parse_canonical(l)
                    .and_then(|l| u8::try_from(l).ok())
                    .filter(|&l| l <= MAX_TILE_LEVEL)
                    .ok_or_else(|| bad("the level must be a decimal 0 to 63"))?,
            ),
        };
        let (index_part, width) = match rest.rsplit_once(".p/") {
            Some((index, w)) => {
                let width = parse_canonical(w)
                    .filter(|w| (1..TILE_WIDTH).contains(w))
                    .ok_or_else(|| bad("a partial width must be a decimal 1 to 255"))?;
                (index, width)
            }
            None => (rest, TILE_WIDTH),
        };
        let index = parse_index(index_part).ok_or_else(|| {
            bad("the index must be 3-digit groups, all but the last prefixed with x, without leading zero groups")
        })?;
        Ok(match level {
            None => TileResource::Entries(Tile {
                level: 0,
                index,
                width,
            }),
            Some(level) => TileResource::Hashes(Tile {
                level,
                index,
                width,
            }),
        })
    }
}

/// A decimal without sign or leading zeros.
fn parse_canonical(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    canonical.then(|| s.parse().ok()).flatten()
}

/// The inverse of [`index_path`] without the width: `x001/x234/067` → 1234067.
fn parse_index(s: &str) -> Option<u64> {
    let groups: Vec<&str> = s.split('/').collect();
    let (last, leading) = groups.split_last()?;
    // A leading group of zeros would be a second spelling of a smaller index.
    if leading.first().is_some_and(|g| *g == "x000") {
        return None;
    }
    let digits = |g: &str| -> Option<u64> {
        (g.len() == 3 && g.bytes().all(|b| b.is_ascii_digit()))
            .then(|| g.parse().ok())
            .flatten()
    };
    let mut index = 0u64;
    for group in leading {
        let value = digits(group.strip_prefix('x')?)?;
        index = index.checked_mul(1000)?.checked_add(value)?;
    }
    index.checked_mul(1000)?.checked_add(digits(last)?)
}

/// Where a stored node's hash appears in the hash tiles, if it does: tile
/// level, tile index and position within the tile. Only nodes on tree levels
/// that are multiples of [`TILE_HEIGHT`] are published in tiles.
pub fn tile_position(node: Node) -> Option<(u8, u64, usize)> {
    node.level.is_multiple_of(TILE_HEIGHT).then_some((
        node.level / TILE_HEIGHT,
        node.index / TILE_WIDTH,
        (node.index % TILE_WIDTH) as usize,
    ))
}

fn index_path(index: u64, width: u64) -> String {
    let digits = format!("{index:03}");
    let groups = digits.len().div_ceil(3);
    let padded = format!("{index:0width$}", width = groups * 3);
    let mut parts: Vec<String> = padded
        .as_bytes()
        .chunks(3)
        .map(|c| format!("x{}", std::str::from_utf8(c).expect("digits")))
        .collect();
    let last = parts.pop().expect("at least one group");
    parts.push(last[1..].to_owned());
    let mut path = parts.join("/");
    if width < TILE_WIDTH {
        path.push_str(&format!(".p/{width}"));
    }
    path
}

/// Every hash tile of a tree of `size` leaves, level by level.
pub fn tiles_for_size(size: u64) -> Vec<Tile> {
    let mut tiles = Vec::new();
    let mut level = 0u8;
    while u32::from(level) * u32::from(TILE_HEIGHT) < 64 {
        let nodes = size >> (u32::from(level) * u32::from(TILE_HEIGHT));
        if nodes == 0 {
            break;
        }
        tiles.extend(level_tiles(level, nodes));
        level += 1;
    }
    tiles
}

/// The entry bundles of a tree of `size` leaves (level 0 tiles).
pub fn bundles_for_size(size: u64) -> Vec<Tile> {
    level_tiles(0, size).collect()
}

fn level_tiles(level: u8, nodes: u64) -> impl Iterator<Item = Tile> {
    (0..nodes.div_ceil(TILE_WIDTH)).map(move |index| Tile {
        level,
        index,
        width: (nodes - index * TILE_WIDTH).min(TILE_WIDTH),
    })
}

/// Encodes entries as an entry bundle.
pub fn encode_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for e in entries {
        let len = u16::try_from(e.len()).map_err(|_| Error::EntryTooLarge {
            size: e.len(),
            max: MAX_ENTRY_SIZE,
        })?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(e);
    }
    Ok(out)
}

/// Decodes an entry bundle that must hold exactly `count` entries.
pub fn decode_bundle(data: &[u8], count: u64) -> Result<Vec<&[u8]>> {
    let mut entries = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let [a, b, tail @ ..] = rest else {
            return Err(Error::InvalidBundle(
                "entry bundle ends inside a length prefix".into(),
            ));
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if tail.len() < len {
            return Err(Error::InvalidBundle(format!(
                "entry {} of the bundle claims {len} bytes but only {} remain",
                entries.len(),
                tail.len()
            )));
        }
        entries.push(&tail[..len]);
        rest = &tail[len..];
    }
    if entries.len() as u64 != count {
        return Err(Error::InvalidBundle(format!(
            "entry bundle holds {} entries, expected {count}",
            entries.len()
        )));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_follow_the_spec() {
        let t = |level, index, width| Tile {
            level,
            index,
            width,
        };
        assert_eq!(t(0, 0, 256).path(), "tile/0/000");
        assert_eq!(t(0, 1234067, 256).path(), "tile/0/x001/x234/067");
        assert_eq!(t(1, 5, 3).path(), "tile/1/005.p/3");
        assert_eq!(t(0, 1000, 256).entries_path(), "tile/entries/x001/000");
    }

    #[test]
    fn tiles_cover_the_tree() {
        let tiles = tiles_for_size(300);
        assert_eq!(
            tiles,
            vec![
                Tile {
                    level: 0,
                    index: 0,
                    width: 256
                },
                Tile {
                    level: 0,
                    index: 1,
                    width: 44
                },
                Tile {
                    level: 1,
                    index: 0,
                    width: 1
                },
            ]
        );
        assert!(tiles_for_size(0).is_empty());
        assert_eq!(tiles_for_size(65536).len(), 256 + 1 + 1);
    }

    #[test]
    fn paths_parse_back() {
        let hashes = |level, index, width| {
            TileResource::Hashes(Tile {
                level,
                index,
                width,
            })
        };
        let entries = |index, width| {
            TileResource::Entries(Tile {
                level: 0,
                index,
                width,
            })
        };
        for (path, resource) in [
            ("tile/0/000", hashes(0, 0, 256)),
            ("tile/0/x001/x234/067", hashes(0, 1234067, 256)),
            ("tile/1/005.p/3", hashes(1, 5, 3)),
            ("tile/63/999.p/255", hashes(63, 999, 255)),
            ("tile/entries/x001/000", entries(1000, 256)),
            ("tile/entries/000.p/1", entries(0, 1)),
            (
                "tile/0/x018/x446/x744/x073/x709/x551/615",
                hashes(0, u64::MAX, 256),
            ),
        ] {
            assert_eq!(TileResource::parse(path).unwrap(), resource, "{path}");
            assert_eq!(resource.path(), path);
        }
        for bad in [
            "",
            "checkpoint",
            "tile/",
            "tile/0",
            "tile/0/",
            "tile/00/000",
            "tile/64/000",
            "tile/-1/000",
            "tile/0/0",
            "tile/0/0000",
            "tile/0/x000/001",
            "tile/0/x001",
            "tile/0/001/002",
            "tile/0/x1/002",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/05",
            "tile/0/000.p/",
            "tile/0/000.p",
            "tile/entries/",
            "tile/entries/x000/000",
            "tile/0/x018/x446/x744/x073/x709/x551/616",
            "tile/0/x999/x999/x999/x999/x999/x999/x999/999",
            "tile/0/+01",
            "tile/0/١٢٣",
        ] {
            assert!(TileResource::parse(bad).is_err(), "{bad:?}");
        }
        let err = TileResource::parse("tile/0/x000/001")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tlog-tiles"), "{err}");
    }

    proptest! {
        #[test]
        fn bundles_round_trip(entries in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20)) {
            let data = encode_bundle(entries.iter().map(Vec::as_slice)).unwrap();
            let back = decode_bundle(&data, entries.len() as u64).unwrap();
            prop_assert_eq!(back, entries.iter().map(Vec::as_slice).collect::<Vec<_>>());
        }

        #[test]
        fn every_tile_path_parses_back(
            level in 0u8..=63,
            index in any::<u64>(),
            width in 1u64..=256,
            entries in any::<bool>(),
        ) {
            let resource = if entries {
                TileResource::Entries(Tile { level: 0, index, width })
            } else {
                TileResource::Hashes(Tile { level, index, width })
            };
            prop_assert_eq!(TileResource::parse(&resource.path()).unwrap(), resource);
        }

        #[test]
        fn parsed_paths_are_canonical(
            path in "tile/(entries|[0-9]{1,3}|x)(/x?[0-9]{1,4}){1,8}(\\.p/[0-9]{1,4})?(/)?",
        ) {
            // Whatever parses is in the one spelling `path()` writes.
            if let Ok(resource) = TileResource::parse(&path) {
                prop_assert_eq!(resource.path(), path);
            }
        }

        #[test]
        fn parse_never_panics(path in "\\PC{0,80}") {
            let _ = TileResource::parse(&path);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..600), count in 0u64..10) {
            let _ = decode_bundle(&data, count);
        }
    }
}
