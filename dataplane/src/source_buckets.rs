//! The LRU map of per-source limit buckets (`maps::SOURCE_BUCKETS`): how
//! full it is and how many buckets it has forgotten.

use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use fluxgate_common::{limit::SourceKey, maps};
use serde::Serialize;

use crate::{Error, Tables};

/// The per-source bucket map of an attachment, read at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SourceBuckets {
    /// Entries the map holds at most (chosen at attach time).
    pub capacity: u32,
    /// Buckets present now (one per rule with `per saddr` and source prefix
    /// seen lately).
    pub present: u64,
    /// Buckets the program inserted since it was attached (a source's first
    /// packet, or its first since it was forgotten).
    pub inserted: u64,
    /// Buckets the LRU evicted to make room: inserted − present. An evicted
    /// source's next packet finds a full bucket (a burst more than the limit
    /// would allow); steadily growing, the map is too small for the sources
    /// (attach with more `source_buckets`).
    pub evicted: u64,
}

/// [`SourceBuckets`] of `tables` (a loaded program or a pinned attachment):
/// one pass over the map's keys (at most its capacity).
pub fn source_buckets<T: Tables + ?Sized>(tables: &mut T) -> Result<SourceBuckets, Error> {
    let inserted = {
        let mut map = tables.table_map(maps::SOURCE_INSERTS)?;
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(&*map.get())
            .map_err(|e| Error::kernel("open the per-source insert counter", e))?;
        let values = array
            .get(&0, 0)
            .map_err(|e| Error::kernel("read the per-source insert counter", e))?;
        values.iter().sum::<u64>()
    };
    let mut map = tables.table_map(maps::SOURCE_BUCKETS)?;
    let map: &Map = map.get();
    let Map::LruHashMap(data) = map else {
        return Err(not_a(maps::SOURCE_BUCKETS));
    };
    let capacity = data
        .info()
        .map_err(|e| Error::kernel("read the per-source bucket map's info", e))?
        .max_entries();
    let hash: HashMap<&MapData, SourceKey, u64> =
        HashMap::try_from(map).map_err(|e| Error::kernel("open the per-source bucket map", e))?;
    let mut present = 0u64;
    for key in hash.keys() {
        // A key evicted between two reads ends this walk early; count what
        // was seen (the number is a snapshot of a map that moves).
        if key.is_err() {
            break;
        }
        present += 1;
    }
    Ok(SourceBuckets {
        capacity,
        present,
        inserted,
        evicted: inserted.saturating_sub(present),
    })
}

fn not_a(name: &str) -> Error {
    Error::InvalidArgument(format!("{name} has not the expected map type"))
}
