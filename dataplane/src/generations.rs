//! Kept table generations: staged tables pinned under `<pin dir>/tables/<scope>/<generation>`
//! so that rolling back (or forward) is one slot flip to a table that is still
//! loaded — even after the process that staged it exited — and so a new
//! process can tell which generation is live by comparing map ids.

use std::{fs, io, path::PathBuf};

use aya::maps::MapData;

use crate::{Error, PinnedAttachment, Slot, StagedTable, Tables, sys, tables, versions::map_fd};

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
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::kernel("create a table directory", e))?;
        }
        table
            .map
            .pin(&path)
            .map_err(|e| Error::kernel("pin a table", e))
    }

    /// The kept table `generation` of `scope`.
    pub fn kept_table(&self, scope: &str, generation: u64) -> Result<StagedTable, Error> {
        let path = self.table_path(scope, generation)?;
        let map = MapData::from_pin(&path).map_err(|e| {
            Error::InvalidArgument(format!(
                "generation {generation} of {scope} is not kept (no {}: {e})",
                path.display()
            ))
        })?;
        StagedTable::from_map(map)
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

    /// Unpins a kept table; the kernel frees it once no slot publishes it.
    pub fn forget_table(&self, scope: &str, generation: u64) -> Result<(), Error> {
        let path = self.table_path(scope, generation)?;
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::kernel("unpin a table", e)),
        }
        if let Some(parent) = path.parent() {
            let _not_empty_is_fine = fs::remove_dir(parent);
        }
        Ok(())
    }

    /// Map id of the table published in `slot` (what packets see now), if any.
    pub fn live_table_id(&mut self, slot: Slot) -> Result<Option<u32>, Error> {
        let buffer = self.live_buffer(slot)?;
        self.buffer_table_id(slot, buffer)
    }

    /// Map id of the table waiting in the standby buffer of `slot` (the
    /// previous one, after a publish), if any.
    pub fn standby_table_id(&mut self, slot: Slot) -> Result<Option<u32>, Error> {
        let buffer = 1 - self.live_buffer(slot)?;
        self.buffer_table_id(slot, buffer)
    }

    fn buffer_table_id(&self, slot: Slot, buffer: u32) -> Result<Option<u32>, Error> {
        let loc = tables::slot_location(slot, false)?;
        let map = self.open_map(loc.map)?;
        let id = sys::lookup_u32(map_fd(&map)?, loc.index + buffer)
            .map_err(|e| Error::kernel("read a table slot", e))?;
        // The placeholder stands for "nothing" (see `unpublish_all`).
        Ok(id.filter(|id| Some(*id) != self.known_placeholder_id()))
    }

    /// Empties every slot of `slots` (both buffers) in one batch per outer
    /// map — one RCU grace period in all, where deleting entries costs one per
    /// entry. The slots are filled with the placeholder table, which
    /// [`PinnedAttachment::live_table_id`] reports as empty. Only for slots no
    /// packet reaches any more (a removed tenant, after dispatch moved on):
    /// the placeholder has no valid header.
    pub fn unpublish_all(&mut self, slots: &[Slot]) -> Result<(), Error> {
        if slots.is_empty() {
            return Ok(());
        }
        let (fd, _) = self.placeholder()?;
        let raw = std::os::fd::AsRawFd::as_raw_fd(&fd) as u32;
        let mut writes = Vec::new();
        for slot in slots {
            let loc = tables::slot_location(*slot, false)?;
            writes
                .extend((0..fluxgate_common::TABLE_BUFFERS).map(|b| (loc.map, loc.index + b, raw)));
        }
        for (name, keys, fds) in tables::batches(writes) {
            let map = self.open_map(name)?;
            sys::update_batch(map_fd(&map)?, &keys, &fds)
                .map_err(|e| Error::kernel("empty table slots", e))?;
        }
        Ok(())
    }
}
