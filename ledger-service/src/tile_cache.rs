//! Hash tiles kept in memory, so callers without a token (witnesses,
//! mirrors, and anyone else) are answered without reading the file. Tiles
//! never change (a partial tile has a path of its own), so nothing here
//! expires; the cache holds at most `--tile-cache-bytes` and forgets the
//! oldest tiles first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use tonic::codegen::Bytes;

/// Tiles by path, up to a number of bytes.
pub(crate) struct TileCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tiles: HashMap<String, Bytes>,
    order: VecDeque<String>,
    bytes: usize,
}

impl TileCache {
    /// Holding at most `max_bytes`.
    pub(crate) fn new(max_bytes: usize) -> TileCache {
        TileCache {
            max_bytes,
            inner: Mutex::default(),
        }
    }

    /// The tile at `path`, if kept.
    pub(crate) fn get(&self, path: &str) -> Option<Bytes> {
        self.lock().tiles.get(path).cloned()
    }

    /// Keeps `tile` as `path`, forgetting the oldest tiles to make room; a
    /// tile larger than the whole cache is not kept.
    pub(crate) fn insert(&self, path: &str, tile: Bytes) {
        if tile.len() > self.max_bytes {
            return;
        }
        let mut inner = self.lock();
        if inner.tiles.contains_key(path) {
            return;
        }
        while inner.bytes + tile.len() > self.max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(gone) = inner.tiles.remove(&oldest) {
                inner.bytes -= gone.len();
            }
        }
        inner.bytes += tile.len();
        inner.order.push_back(path.to_owned());
        inner.tiles.insert(path.to_owned(), tile);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_are_kept_up_to_the_budget_oldest_forgotten_first() {
        let cache = TileCache::new(20);
        let tile = |n: usize| Bytes::from(vec![0u8; n]);
        cache.insert("tile/0/000", tile(8));
        cache.insert("tile/0/001", tile(8));
        assert_eq!(cache.get("tile/0/000").map(|t| t.len()), Some(8));
        cache.insert("tile/0/002", tile(8));
        assert!(cache.get("tile/0/000").is_none(), "the oldest made room");
        assert!(cache.get("tile/0/001").is_some() && cache.get("tile/0/002").is_some());
        cache.insert("tile/1/000", tile(21));
        assert!(cache.get("tile/1/000").is_none(), "larger than the cache");
        cache.insert("tile/0/002", tile(8));
        let inner = cache.lock();
        assert!(inner.bytes <= 20);
        assert_eq!(inner.order.len(), inner.tiles.len());
    }
}
