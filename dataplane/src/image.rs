//! Loading a compiled [`Image`] into the kernel: every table is staged beside
//! whatever is live, then published slot by slot in an order that never lets a
//! packet reach a tenant slot that is not there yet.

use fluxgate_ruleset::Image;

use crate::{Error, StagedTable};

/// All tables of one image, created and filled in the kernel, not yet live.
#[derive(Debug)]
pub struct StagedImage {
    /// Destination → tenant.
    pub dispatch: StagedTable,
    /// Global rules and gateway default.
    pub global: StagedTable,
    /// Per tenant: tenant slot and table, sorted by slot.
    pub tenants: Vec<(u32, StagedTable)>,
}

impl StagedImage {
    /// Creates and fills a kernel map for every table of `image`.
    pub fn new(image: &Image) -> Result<StagedImage, Error> {
        Ok(StagedImage {
            dispatch: StagedTable::new("fg_dispatch", &image.dispatch.cells)?,
            global: StagedTable::new("fg_global", &image.global.cells)?,
            tenants: image
                .tenants
                .iter()
                .map(|t| {
                    StagedTable::new(&format!("fg_t_{}", t.name), &t.table.cells)
                        .map(|table| (t.index, table))
                })
                .collect::<Result<_, _>>()?,
        })
    }

    /// Kernel memory of all tables' values, in bytes.
    pub fn bytes(&self) -> u64 {
        self.dispatch.bytes()
            + self.global.bytes()
            + self.tenants.iter().map(|(_, t)| t.bytes()).sum::<u64>()
    }
}
