//! Kept table generations: a staged table's region is recorded in a token
//! (a one-entry ARRAY map: magic, region base, cells, pool id) pinned under
//! `<pin dir>/tables/<scope>/<generation>`, so that rolling back (or forward)
//! is one slot flip to a table that is still in the cell pool — even after the
//! process that staged it exited —, so a new process can tell which generation
//! is live by comparing region bases, and so the pool allocator knows which
//! regions kept generations hold (see `pool.rs`).

use std::{fs, io, path::Path};

use aya::maps::{Array, Map, MapData};

use crate::{
    Error, PinnedAttachment, Slot, StagedTable, TableMap, Tables,
    layout::{self, TABLES_DIR},
    pool::Pool,
    slots, sys,
};

/// Token magic: `"FGK"` + version 1.
const TOKEN_MAGIC: u32 = 0x4647_4b01;

/// A token's value: magic, region base, cells, pool id.
type Token = [u32; 4];

impl PinnedAttachment {
    fn table_path(&self, scope: &str, generation: u64) -> Result<std::path::PathBuf, Error> {
        layout::kept_table_path(self.dir(), scope, generation)
    }

    /// Pins `table` as generation `generation` of `scope` (e.g. `dispatch`,
    /// `global`, `tenant-<name>`; bpffs refuses dots in names). Pinning an already kept generation is an error.
    pub fn keep_table(
        &self,
        scope: &str,
        generation: u64,
        table: &StagedTable,
    ) -> Result<(), Error> {
        let path = self.table_path(scope, generation)?;
        let pool = self.cell_pool()?;
        if table.pool_id() != pool.id() {
            return Err(Error::InvalidArgument(format!(
                "table {scope}/{generation} was staged in another attachment's cell pool"
            )));
        }
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::kernel("create a table directory", e))?;
        }
        let token = sys::create_array("fg_kept", size_of::<Token>() as u32, 1, 0)
            .map_err(|e| Error::kernel("create a kept-table token", e))?;
        let mut array: Array<MapData, Token> = Array::try_from(Map::Array(token))
            .map_err(|e| Error::kernel("open a kept-table token", e))?;
        let value: Token = [TOKEN_MAGIC, table.base(), table.cells(), pool.id()];
        array
            .set(0, value, 0)
            .map_err(|e| Error::kernel("write a kept-table token", e))?;
        array
            .pin(&path)
            .map_err(|e| Error::kernel("pin a table", e))
    }

    /// The kept table `generation` of `scope`.
    pub fn kept_table(&self, scope: &str, generation: u64) -> Result<StagedTable, Error> {
        let path = self.table_path(scope, generation)?;
        let (base, cells) = read_token(&path)?.ok_or_else(|| {
            Error::InvalidArgument(format!(
                "generation {generation} of {scope} is not kept (no valid {})",
                path.display()
            ))
        })?;
        let pool = self.cell_pool()?;
        match pool.header(base)? {
            Some(h) if h.cells == cells => Ok(StagedTable::held(&pool, base, cells)),
            _ => Err(Error::Incompatible {
                path,
                reason: format!("the cell pool holds no {cells}-cell table at {base}"),
            }),
        }
    }

    /// `(base, cells)` of every kept table's region.
    pub(crate) fn kept_tokens(&self) -> Result<Vec<(u32, u32)>, Error> {
        let mut out = Vec::new();
        for (scope, g) in self.kept_tables()? {
            if let Some(region) = read_token(&self.table_path(&scope, g)?)? {
                out.push(region);
            }
        }
        Ok(out)
    }

    /// Every kept `(scope, generation)`, sorted.
    pub fn kept_tables(&self) -> Result<Vec<(String, u64)>, Error> {
        let root = self.dir().join(TABLES_DIR);
        let mut out = Vec::new();
        let scopes = match fs::read_dir(&root) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(Error::kernel("list kept tables", e)),
        };
        for scope in scopes.filter_map(Result::ok) {
            let Ok(name) = scope.file_name().into_string() else {
                continue;
            };
            let gens =
                fs::read_dir(scope.path()).map_err(|e| Error::kernel("list kept tables", e))?;
            for g in gens.filter_map(Result::ok) {
                if let Some(g) = g.file_name().to_str().and_then(|s| s.parse().ok()) {
                    out.push((name.clone(), g));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Unpins a kept table; its cells are reused once no slot points at it
    /// any more (and an RCU grace period has passed).
    pub fn forget_table(&self, scope: &str, generation: u64) -> Result<(), Error> {
        let path = self.table_path(scope, generation)?;
        let region = read_token(&path).ok().flatten();
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::kernel("unpin a table", e)),
        }
        if let Some((base, _)) = region {
            self.cell_pool()?.quarantine([base]);
        }
        if let Some(parent) = path.parent() {
            let _not_empty_is_fine = fs::remove_dir(parent);
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
        let loc = slots::slot_location(slot, false)?;
        let map = self.open_map(loc.map)?;
        let array: Array<&MapData, u32> =
            Array::try_from(&map).map_err(|e| Error::kernel("open a slot map", e))?;
        let base = array
            .get(&(loc.index + buffer), 0)
            .map_err(|e| Error::kernel("read a table slot", e))?;
        Ok(Some(base).filter(|b| *b != 0))
    }
}

/// `(base, cells)` from a kept-table token; `None` if there is none.
fn read_token(path: &Path) -> Result<Option<(u32, u32)>, Error> {
    let Ok(data) = MapData::from_pin(path) else {
        return Ok(None);
    };
    let array: Array<MapData, Token> = Array::try_from(Map::Array(data))
        .map_err(|e| Error::kernel("open a kept-table token", e))?;
    let value = array
        .get(&0, 0)
        .map_err(|e| Error::kernel("read a kept-table token", e))?;
    Ok((value[0] == TOKEN_MAGIC).then_some((value[1], value[2])))
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
}
