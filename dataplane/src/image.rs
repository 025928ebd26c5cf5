//! Loading a compiled [`Image`] into the kernel: every table is staged beside
//! whatever is live, then published slot by slot in an order that never lets a
//! packet reach a tenant slot that is not there yet.

use fluxgate_ruleset::Image;

use crate::{Error, StagedTable, Tables};

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
    /// Copies every table of `image` into the cell pool of `tables` (one
    /// batch for all; [`Error::PoolFull`] and nothing written when it does not fit).
    pub fn new(tables: &mut impl Tables, image: &Image) -> Result<StagedImage, Error> {
        let names: Vec<String> = image
            .tenants
            .iter()
            .map(|t| format!("tenant {}", t.name))
            .collect();
        let mut all: Vec<(&str, &[fluxgate_common::table::Cell])> = vec![
            ("dispatch", &image.dispatch.cells),
            ("global", &image.global.cells),
        ];
        for (t, name) in image.tenants.iter().zip(&names) {
            all.push((name, &t.table.cells));
        }
        let mut staged = tables.stage_all(&all)?.into_iter();
        let mut next = || {
            staged
                .next()
                .ok_or_else(|| Error::InvalidArgument("a table was not staged".into()))
        };
        Ok(StagedImage {
            dispatch: next()?,
            global: next()?,
            tenants: image
                .tenants
                .iter()
                .map(|t| next().map(|table| (t.index, table)))
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
