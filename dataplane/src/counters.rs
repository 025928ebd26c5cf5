//! The outcome and malformed-reason counters, per CPU in the kernel, summed here.

use aya::maps::{Map, MapData, PerCpuArray};
use fluxgate_common::{Counter, Malformed, Outcome};
use serde::Serialize;

use crate::Error;

/// Counters summed over all CPUs, as read from the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub(crate) outcomes: [Counter; Outcome::COUNT as usize],
    pub(crate) malformed: [Counter; Malformed::COUNT as usize],
}

impl Counters {
    /// Packets and bytes with this outcome.
    pub fn outcome(&self, outcome: Outcome) -> Counter {
        self.outcomes[outcome as usize]
    }

    /// Malformed packets and bytes for this reason.
    pub fn malformed(&self, reason: Malformed) -> Counter {
        self.malformed[reason as usize]
    }

    /// All packets seen, whatever their outcome.
    pub fn total(&self) -> Counter {
        let mut total = Counter::default();
        self.outcomes.iter().for_each(|c| total.add(c));
        total
    }

    /// A serialisable snapshot (`{"outcomes": {"passed": {"packets":…,"bytes":…},…}, "malformed": {…}}`).
    pub fn report(&self) -> CountersReport {
        let entry = |name: &'static str, c: &Counter| {
            (
                name,
                CounterReport {
                    packets: c.packets,
                    bytes: c.bytes,
                },
            )
        };
        CountersReport {
            outcomes: Outcome::ALL
                .iter()
                .map(|o| entry(o.name(), &self.outcomes[*o as usize]))
                .collect(),
            malformed: Malformed::ALL
                .iter()
                .map(|m| entry(m.name(), &self.malformed[*m as usize]))
                .collect(),
        }
    }
}

/// Serialisable form of [`Counters`], keyed by stable outcome/reason names.
#[derive(Clone, Debug, Serialize)]
pub struct CountersReport {
    /// Per outcome.
    pub outcomes: std::collections::BTreeMap<&'static str, CounterReport>,
    /// Per malformed reason.
    pub malformed: std::collections::BTreeMap<&'static str, CounterReport>,
}

/// One counter in a [`CountersReport`].
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CounterReport {
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

impl Counters {
    /// Reads and sums over CPUs the per-CPU outcome and malformed maps.
    pub(crate) fn read(outcomes: &Map, malformed: &Map) -> Result<Counters, Error> {
        let mut counters = Counters::default();
        sum_into(outcomes, &mut counters.outcomes)?;
        sum_into(malformed, &mut counters.malformed)?;
        Ok(counters)
    }
}

/// Adds every CPU's value of each entry of per-CPU counter map `map` into `out`.
fn sum_into(map: &Map, out: &mut [Counter]) -> Result<(), Error> {
    let array: PerCpuArray<&MapData, Counter> =
        PerCpuArray::try_from(map).map_err(|e| Error::kernel("open a counter map", e))?;
    for (index, slot) in out.iter_mut().enumerate() {
        let values = array
            .get(&(index as u32), 0)
            .map_err(|e| Error::kernel("read a counter map", e))?;
        values.iter().for_each(|v| slot.add(v));
    }
    Ok(())
}
