//! Kept table generations: a staged table's region is recorded in a token
//! (magic, region base, cells, pool id) in one hash map pinned beside the
//! others (`<pin dir>/FG_KEPT`), keyed by scope and generation, so that
//! rolling back (or forward) is one slot flip to a table that is still in
//! the cell pool — even after the process that staged it exited —, so a new
//! process can tell which generation is live by comparing region bases, and
//! so the pool allocator knows which regions kept generations hold (see
//! `pool.rs`).
//!
//! One map, not one pinned map per table: at 10k tenants × 2 generations,
//! listing the kept tables was a walk of ~20k bpffs entries (a `getdents`
//! and a `BPF_OBJ_GET` each) and keeping a generation created and pinned a
//! map per table. Now a listing is one `BPF_MAP_LOOKUP_BATCH` of the map and
//! keeping many tables one `BPF_MAP_UPDATE_BATCH`.

use std::{
    os::fd::{AsFd, BorrowedFd},
    path::Path,
};

use aya::maps::{Array, MapData, MapType};

use crate::{
    Error, PinnedAttachment, Slot, StagedTable, TableMap, Tables,
    layout::{self, KEPT},
    pool::Pool,
    slots, sys,
};

/// Token magic: `"FGK"` + version 2.
const TOKEN_MAGIC: u32 = 0x4647_4b02;

/// A token's value: magic, region base, cells, pool id.
type Token = [u32; 4];

/// Most bytes of a kept table's scope name: `tenant-` and the longest tenant
/// name the ruleset validator accepts (63 characters), with room to spare.
pub const KEPT_SCOPE_BYTES: usize = 72;

/// Entries of the kept-table map per tenant slot: fluxgate-control keeps
/// the live generation and the 8 newest earlier ones, each holding only the
/// tables it changed, so this covers nearly every tenant changing in every
/// one (the cell pool, one cell at least per kept table, is usually full
/// first).
const KEPT_PER_TENANT_SLOT: u32 = 8;

/// `BPF_F_NO_PREALLOC`: an element's memory is allocated when it is kept.
const BPF_F_NO_PREALLOC: u32 = 1;

/// `BPF_NOEXIST`: an update that fails if the key is there already.
const BPF_NOEXIST: u64 = 1;

/// Key of the kept-table map: scope name (NUL-padded) and generation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct KeptKey {
    scope: [u8; KEPT_SCOPE_BYTES],
    generation: u64,
}

// SAFETY: #[repr(C)], integers only, no implicit padding (72 + 8 bytes).
unsafe impl aya::Pod for KeptKey {}

impl KeptKey {
    /// The key of `scope`'s generation `generation`, refusing scope names
    /// that do not fit or are not made of `[A-Za-z0-9_-]`.
    fn new(scope: &str, generation: u64) -> Result<Self, Error> {
        let valid = !scope.is_empty()
            && scope.len() <= KEPT_SCOPE_BYTES
            && scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "{scope:?} is not a valid table scope name (1 to {KEPT_SCOPE_BYTES} of \
                 [A-Za-z0-9_-])"
            )));
        }
        let mut key = KeptKey {
            scope: [0; KEPT_SCOPE_BYTES],
            generation,
        };
        key.scope[..scope.len()].copy_from_slice(scope.as_bytes());
        Ok(key)
    }

    /// The scope name.
    fn scope(&self) -> String {
        let len = self
            .scope
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(KEPT_SCOPE_BYTES);
        String::from_utf8_lossy(&self.scope[..len]).into_owned()
    }
}

/// Entries of the kept-table map of an attachment with `tenant_slots` tenant
/// slots. The map is not preallocated: what it costs up front is its bucket
/// array (the next power of two of entries, 16 bytes each: 8 MiB at the
/// default 65,536 slots); each kept table adds one element (≈ 200 bytes).
pub(crate) fn kept_entries(tenant_slots: u32) -> u32 {
    tenant_slots.saturating_mul(KEPT_PER_TENANT_SLOT).max(1024)
}

/// Creates the (empty) kept-table map of an attachment with `tenant_slots`
/// tenant slots.
pub(crate) fn create_kept_map(tenant_slots: u32) -> Result<MapData, Error> {
    sys::create_hash(
        KEPT,
        size_of::<KeptKey>() as u32,
        size_of::<Token>() as u32,
        kept_entries(tenant_slots),
        BPF_F_NO_PREALLOC,
    )
    .map_err(|e| Error::kernel("create the kept-table map", e))
}

/// Opens the pinned kept-table map at `path`, after checking its shape.
pub(crate) fn adopt_kept_map(path: &Path, tenant_slots: u32) -> Result<MapData, Error> {
    let data = layout::pinned_map(path)?;
    let found = layout::shape(&layout::map_info(&data)?);
    let expected: layout::Shape = (
        Some(MapType::Hash),
        size_of::<KeptKey>() as u32,
        size_of::<Token>() as u32,
        kept_entries(tenant_slots),
        BPF_F_NO_PREALLOC,
    );
    if found != expected {
        return Err(Error::Incompatible {
            path: path.to_path_buf(),
            reason: format!(
                "expected {expected:?} (type, key, value, entries, flags), found {found:?}"
            ),
        });
    }
    Ok(data)
}

impl PinnedAttachment {
    /// The kept-table map (opened once, checked when it is).
    fn kept_map(&self) -> Result<&MapData, Error> {
        if let Some(map) = self.kept.get() {
            return Ok(map);
        }
        let map = adopt_kept_map(&self.dir().join(KEPT), self.tenant_slots())?;
        Ok(self.kept.get_or_init(|| map))
    }

    /// Keeps `table` as generation `generation` of `scope` (e.g. `dispatch`,
    /// `global`, `tenant-<name>`: at most [`KEPT_SCOPE_BYTES`] of
    /// `[A-Za-z0-9_-]`). Keeping an already kept generation is an error.
    pub fn keep_table(
        &self,
        scope: &str,
        generation: u64,
        table: &StagedTable,
    ) -> Result<(), Error> {
        self.keep_tables(&[(scope, generation, table)])
    }

    /// [`PinnedAttachment::keep_table`] for many tables: one map update each
    /// (`BPF_NOEXIST`, which `BPF_MAP_UPDATE_BATCH` refuses: its element
    /// flags allow only `BPF_F_LOCK`), no pin, no map creation. All or
    /// nothing: if one cannot be kept (kept already, the map is full), those
    /// written before it are removed again.
    pub fn keep_tables(&self, tables: &[(&str, u64, &StagedTable)]) -> Result<(), Error> {
        if tables.is_empty() {
            return Ok(());
        }
        let pool = self.cell_pool()?;
        let mut keys = Vec::with_capacity(tables.len());
        let mut tokens = Vec::with_capacity(tables.len());
        for (scope, generation, table) in tables {
            if table.pool_id() != pool.id() {
                return Err(Error::InvalidArgument(format!(
                    "table {scope}/{generation} was staged in another attachment's cell pool"
                )));
            }
            keys.push(KeptKey::new(scope, *generation)?);
            tokens.push([TOKEN_MAGIC, table.base(), table.cells(), pool.id()]);
        }
        let map = self.kept_map()?;
        let fd = map.fd().as_fd();
        let mut failed = None;
        for (done, (key, token)) in keys.iter().zip(&tokens).enumerate() {
            if let Err(e) = sys::update_elem(fd, key, token, BPF_NOEXIST) {
                failed = Some((done, e));
                break;
            }
        }
        let Some((done, e)) = failed else {
            return Ok(());
        };
        // Undo: the ones written are exactly the first `done`.
        let _best_effort = sys::delete_batch(fd, &keys[..done]);
        let (scope, generation, _) = tables[done];
        Err(match e.raw_os_error() {
            Some(libc::EEXIST) => Error::InvalidArgument(format!(
                "generation {generation} of {scope} is kept already"
            )),
            Some(libc::E2BIG) => Error::KeptFull {
                entries: kept_entries(self.tenant_slots()),
            },
            _ => Error::kernel("keep tables", e),
        })
    }

    /// The kept table `generation` of `scope`.
    pub fn kept_table(&self, scope: &str, generation: u64) -> Result<StagedTable, Error> {
        let key = KeptKey::new(scope, generation)?;
        let map = self.kept_map()?;
        let token = lookup(map.fd().as_fd(), &key)?
            .filter(|t| t[0] == TOKEN_MAGIC)
            .ok_or_else(|| {
                Error::InvalidArgument(format!("generation {generation} of {scope} is not kept"))
            })?;
        held(&self.cell_pool()?, self.dir(), scope, generation, token)
    }

    /// Every kept `(scope, generation, base, cells)`, in no particular order:
    /// one `BPF_MAP_LOOKUP_BATCH` of the map.
    fn read_kept(&self) -> Result<Vec<(KeptKey, Token)>, Error> {
        let map = self.kept_map()?;
        let entries: Vec<(KeptKey, Token)> = sys::lookup_batch(map.fd().as_fd(), 4096)
            .map_err(|e| Error::kernel("read the kept-table map", e))?;
        Ok(entries
            .into_iter()
            .filter(|(_, t)| t[0] == TOKEN_MAGIC)
            .collect())
    }

    /// `(base, cells)` of every kept table's region.
    pub(crate) fn kept_tokens(&self) -> Result<Vec<(u32, u32)>, Error> {
        Ok(self
            .read_kept()?
            .into_iter()
            .map(|(_, t)| (t[1], t[2]))
            .collect())
    }

    /// Every kept `(scope, generation)`, sorted.
    pub fn kept_tables(&self) -> Result<Vec<(String, u64)>, Error> {
        let mut keys: Vec<KeptKey> = self.read_kept()?.into_iter().map(|(k, _)| k).collect();
        // NUL-padded names sort as the names do: sort the fixed-size keys,
        // then make strings.
        keys.sort_unstable_by_key(|k| (k.scope, k.generation));
        Ok(keys
            .into_iter()
            .map(|k| (k.scope(), k.generation))
            .collect())
    }

    /// Every kept table's scope, generation and id (region base, what
    /// [`StagedTable::id`] and [`crate::Tables::slot_tables`] report), sorted,
    /// in one read of the map and without a handle or header check each: what
    /// telling which kept table a slot holds needs.
    pub fn kept_table_ids(&self) -> Result<Vec<(String, u64, u32)>, Error> {
        let mut out: Vec<(String, u64, u32)> = self
            .read_kept()?
            .into_iter()
            .map(|(key, token)| (key.scope(), key.generation, token[1]))
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// Every kept table with its scope and generation, sorted by them: what
    /// [`PinnedAttachment::kept_tables`] then [`PinnedAttachment::kept_table`]
    /// of each would give, in one read of the map.
    pub fn kept_table_handles(&self) -> Result<Vec<(String, u64, StagedTable)>, Error> {
        let pool = self.cell_pool()?;
        let kept = self.read_kept()?;
        let headers = pool.headers(&kept.iter().map(|(_, t)| t[1]).collect::<Vec<_>>())?;
        let mut out = Vec::with_capacity(kept.len());
        for ((key, token), header) in kept.into_iter().zip(headers) {
            let scope = key.scope();
            let table = checked(&pool, self.dir(), &scope, key.generation, token, header)?;
            out.push((scope, key.generation, table));
        }
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        Ok(out)
    }

    /// Forgets a kept table; its cells are reused once no slot points at it
    /// any more (and an RCU grace period has passed). Forgetting a table
    /// that is not kept does nothing.
    pub fn forget_table(&self, scope: &str, generation: u64) -> Result<(), Error> {
        self.forget_tables(&[(scope, generation)])
    }

    /// [`PinnedAttachment::forget_table`] for many tables: one lookup each,
    /// then one `BPF_MAP_DELETE_BATCH`.
    pub fn forget_tables(&self, tables: &[(&str, u64)]) -> Result<(), Error> {
        if tables.is_empty() {
            return Ok(());
        }
        let keys = tables
            .iter()
            .map(|(scope, generation)| KeptKey::new(scope, *generation))
            .collect::<Result<Vec<_>, Error>>()?;
        let map = self.kept_map()?;
        let fd = map.fd().as_fd();
        let mut found = Vec::with_capacity(keys.len());
        let mut regions = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(token) = lookup(fd, &key)? {
                found.push(key);
                if token[0] == TOKEN_MAGIC {
                    regions.push(token[1]);
                }
            }
        }
        found.sort_by_key(|k| (k.scope, k.generation));
        found.dedup();
        sys::delete_batch(fd, &found).map_err(|e| Error::kernel("forget kept tables", e))?;
        if !regions.is_empty() {
            self.cell_pool()?.quarantine(regions);
        }
        Ok(())
    }

    /// Id ([`StagedTable::id`]) of the table published in `slot` (what packets see now), if any.
    pub fn live_table_id(&mut self, slot: Slot) -> Result<Option<u32>, Error> {
        let buffer = self.live_buffer(slot)?;
        self.buffer_table_id(slot, buffer)
    }

    /// Id of the table waiting in the standby buffer of `slot` (the
    /// previous one, after a publish), if any.
    pub fn standby_table_id(&mut self, slot: Slot) -> Result<Option<u32>, Error> {
        let buffer = 1 - self.live_buffer(slot)?;
        self.buffer_table_id(slot, buffer)
    }

    fn buffer_table_id(&self, slot: Slot, buffer: u32) -> Result<Option<u32>, Error> {
        let loc = slots::slot_location(slot, false, self.tenant_slots())?;
        let map = self.open_map(loc.map)?;
        let array: Array<&MapData, u32> =
            Array::try_from(&map).map_err(|e| Error::kernel("open a slot map", e))?;
        let base = array
            .get(&(loc.index + buffer), 0)
            .map_err(|e| Error::kernel("read a table slot", e))?;
        Ok(Some(base).filter(|b| *b != 0))
    }
}

/// The token of `key`, if it is kept.
fn lookup(fd: BorrowedFd<'_>, key: &KeptKey) -> Result<Option<Token>, Error> {
    sys::lookup_elem(fd, key).map_err(|e| Error::kernel("read the kept-table map", e))
}

/// A handle on the kept table of `token`, after checking that the cell pool
/// still holds a table of its size at its base.
fn held(
    pool: &Pool,
    dir: &Path,
    scope: &str,
    generation: u64,
    token: Token,
) -> Result<StagedTable, Error> {
    let header = pool.header(token[1])?;
    checked(pool, dir, scope, generation, token, header)
}

/// A handle on the kept table of `token`, whose region's header is `header`.
fn checked(
    pool: &Pool,
    dir: &Path,
    scope: &str,
    generation: u64,
    token: Token,
    header: Option<fluxgate_common::table::Header>,
) -> Result<StagedTable, Error> {
    let (base, cells) = (token[1], token[2]);
    match header {
        Some(h) if h.cells == cells => Ok(StagedTable::held(pool, base, cells)),
        _ => Err(Error::Incompatible {
            path: dir.join(KEPT),
            reason: format!(
                "kept table {scope}/{generation}: the cell pool holds no {cells}-cell table at {base}"
            ),
        }),
    }
}

/// The pinned attachment as a place for tables: its maps, its cell pool,
/// and the regions its kept generations hold.
impl Tables for PinnedAttachment {
    fn table_map(&mut self, name: &'static str) -> Result<TableMap<'_>, Error> {
        Ok(TableMap::Owned(self.open_map(name)?))
    }

    fn pool(&mut self) -> Result<Pool, Error> {
        self.cell_pool()
    }

    fn kept_regions(&mut self) -> Result<Vec<(u32, u32)>, Error> {
        self.kept_tokens()
    }

    fn tenant_slots(&self) -> u32 {
        PinnedAttachment::tenant_slots(self)
    }

    fn counter_slots(&self) -> u32 {
        PinnedAttachment::counter_slots(self)
    }
}
