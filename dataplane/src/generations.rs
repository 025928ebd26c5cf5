//! Kept table generations: a staged table's region is recorded in a token
//! (a one-entry ARRAY map: magic, region base, cells, pool id) pinned under
//! `<pin dir>/tables/<scope>/<generation>`, so that rolling back (or forward)
//! is one slot flip to a table that is still in the cell pool — even after the
//! process that staged it exited —, so a new process can tell which generation
//! is live by comparing region bases, and so the pool allocator knows which
//! regions kept generations hold (see `pool.rs`).

use std::{
    fs, io,
    os::fd::AsFd,
    path::{Path, PathBuf},
};

use crate::{Error, PinnedAttachment, Slot, StagedTable, Tables, sys, tables, versions::map_fd};

/// Token magic: `"FGK"` + version 1.
const TOKEN_MAGIC: u32 = 0x4647_4b01;

pub(crate) const TABLES_DIR: &str = "tables";

impl PinnedAttachment {
    fn table_path(&self, scope: &str, generation: u64) -> Result<PathBuf, Error> {
        let valid = !scope.is_empty()
            && scope.len() <= 200
            && !scope.starts_with('.')
            && scope
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
        if !valid {
            return Err(Error::InvalidArgument(format!(
                "{scope:?} is not a valid table scope name"
            )));
        }
        Ok(self
            .dir()
            .join(TABLES_DIR)
            .join(scope)
            .join(generation.to_string()))
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
        let token = sys::create_array("fg_kept", 16, 1, 0)
            .map_err(|e| Error::kernel("create a kept-table token", e))?;
        let value = [TOKEN_MAGIC, table.base(), table.cells(), pool.id()];
        sys::update_batch(token.as_fd(), &[0], &[value])
            .map_err(|e| Error::kernel("write a kept-table token", e))?;
        sys::obj_pin(token.as_fd(), &path).map_err(|e| Error::kernel("pin a table", e))
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
        let loc = tables::slot_location(slot, false)?;
        let map = self.open_map(loc.map)?;
        let base = sys::lookup_u32(map_fd(&map)?, loc.index + buffer)
            .map_err(|e| Error::kernel("read a table slot", e))?;
        Ok(base.filter(|b| *b != 0))
    }
}

/// `(base, cells)` from a kept-table token; `None` if there is none.
fn read_token(path: &Path) -> Result<Option<(u32, u32)>, Error> {
    let Ok(fd) = sys::obj_get(path) else {
        return Ok(None);
    };
    let value = sys::lookup(fd.as_fd(), 0, [0u32; 4])
        .map_err(|e| Error::kernel("read a kept-table token", e))?;
    Ok(value.filter(|v| v[0] == TOKEN_MAGIC).map(|v| (v[1], v[2])))
}
