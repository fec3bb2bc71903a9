//! Single tlog-tiles resources read from the file, for serving the log as
//! its C2SP tiles (the ledger service's HTTP side) without exporting it.

use rusqlite::Connection;

use crate::store::Ledger;
use crate::store::nodes::SqlHashes;
use crate::tiles::{self, TILE_HEIGHT, TILE_WIDTH, Tile, TileResource};
use crate::tree::{HashReader, Node};
use crate::{Error, Result};

/// The number of tree nodes on tile level `level` of a tree of `size`
/// leaves (0 where the level is above the tree).
fn nodes_on_tile_level(size: u64, level: u8) -> u64 {
    size.checked_shr(u32::from(level) * u32::from(TILE_HEIGHT))
        .unwrap_or(0)
}

/// True when the tree of `size` leaves holds every node of `tile` (a tile
/// narrower than the level's rightmost nodes is a prefix of them, and
/// serving it is as safe as serving the partial tile of a checkpoint).
fn tile_exists(tile: Tile, nodes_on_level: u64) -> bool {
    tile.index
        .checked_mul(TILE_WIDTH)
        .and_then(|first| first.checked_add(tile.width))
        .is_some_and(|end| end <= nodes_on_level)
}

impl Ledger {
    /// The bytes of one tlog-tiles resource of the tree of the latest
    /// checkpoint: a hash tile (the concatenated 32-byte hashes) or an entry
    /// bundle. A tile beyond that tree is [`Error::NotFound`].
    pub fn tile(&self, resource: TileResource) -> Result<Vec<u8>> {
        self.read(|c| {
            let size = self.checkpoint_in(c)?.checkpoint.size;
            let (tile, nodes) = match resource {
                TileResource::Hashes(t) => (t, nodes_on_tile_level(size, t.level)),
                TileResource::Entries(t) => (t, size),
            };
            if !tile_exists(tile, nodes) {
                return Err(Error::NotFound(format!(
                    "{} is beyond the tree of size {size}, whose checkpoint is at /checkpoint",
                    resource.path()
                )));
            }
            match resource {
                TileResource::Hashes(t) => hash_tile(c, t),
                TileResource::Entries(t) => entry_bundle(c, t),
            }
        })
    }
}

fn hash_tile(conn: &Connection, tile: Tile) -> Result<Vec<u8>> {
    let ids: Vec<u64> = tile.nodes().map(Node::stored_index).collect();
    let hashes = SqlHashes(conn).read_hashes(&ids)?;
    Ok(hashes.iter().flat_map(|h| h.0).collect())
}

fn entry_bundle(conn: &Connection, tile: Tile) -> Result<Vec<u8>> {
    let first = tile.index * TILE_WIDTH;
    let mut stmt =
        conn.prepare_cached("SELECT leaf FROM entries WHERE idx >= ?1 AND idx < ?2 ORDER BY idx")?;
    let leaves = stmt
        .query_map([first as i64, (first + tile.width) as i64], |r| {
            r.get::<_, Vec<u8>>(0)
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    if leaves.len() as u64 != tile.width {
        return Err(Error::Tampered {
            index: first + leaves.len() as u64,
            detail: format!(
                "{} of the {} entries of {} are stored",
                leaves.len(),
                tile.width,
                tile.entries_path()
            ),
        });
    }
    tiles::encode_bundle(leaves.iter().map(Vec::as_slice))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_above_the_tree_are_empty() {
        assert_eq!(nodes_on_tile_level(300, 0), 300);
        assert_eq!(nodes_on_tile_level(300, 1), 1);
        assert_eq!(nodes_on_tile_level(300, 2), 0);
        assert_eq!(nodes_on_tile_level(u64::MAX, 7), 255);
        assert_eq!(nodes_on_tile_level(u64::MAX, 8), 0);
        assert_eq!(nodes_on_tile_level(u64::MAX, 63), 0);
    }

    #[test]
    fn only_tiles_within_the_level_exist() {
        let t = |index, width| Tile {
            level: 0,
            index,
            width,
        };
        assert!(tile_exists(t(0, 256), 300));
        assert!(tile_exists(t(1, 44), 300));
        assert!(tile_exists(t(1, 10), 300), "a prefix of the rightmost tile");
        assert!(!tile_exists(t(1, 45), 300));
        assert!(!tile_exists(t(1, 256), 300));
        assert!(!tile_exists(t(2, 1), 300));
        assert!(!tile_exists(t(u64::MAX, 1), u64::MAX), "no overflow");
    }
}
