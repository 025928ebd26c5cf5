//! The fluxgate object loaded into the kernel (verified, not attached), and
//! `BPF_PROG_TEST_RUN` on its programs or any other XDP program.

use std::{os::fd::AsFd, time::Duration};

use aya::{
    Ebpf,
    maps::{Array, Map, MapData, ProgramArray},
    programs::{TestRun, TestRunOptions, Xdp},
};
use fluxgate_common::{
    CLASSIFIER_PROGRAM_NAME, DEFAULT_COUNTER_SLOTS, DEFAULT_POOL_CELLS, DEFAULT_TENANT_SLOTS,
    FLOOR_PROGRAM_NAME, GatewayConfig, PROBE_PROGRAM_NAME, PROGRAM_NAME, TAIL_FLOOR_PROGRAM_NAME,
    maps,
};

use crate::{Counters, Error, OBJECT, config, layout, pool::Pool};

/// The fluxgate XDP program, loaded into the kernel (verified) but not attached.
///
/// Holding a `Program` keeps the program and its maps alive; dropping it unloads
/// them unless they are attached or pinned elsewhere.
pub struct Program {
    pub(crate) ebpf: Ebpf,
    pub(crate) pool: Pool,
    /// Tenant slots its maps were sized for.
    pub(crate) tenant_slots: u32,
    /// Counter slots its maps were sized for.
    pub(crate) counter_slots: u32,
    /// Entries of its per-source bucket map.
    pub(crate) source_buckets: u32,
}

/// The sizes of a [`Program`]'s maps chosen at load time
/// ([`Program::load_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Cells (128 bytes each, allocated up front) of the table pool: every
    /// table of every kept generation must fit in it (see [`Error::PoolFull`]).
    pub pool_cells: u32,
    /// Tenant slots: tenant indexes `0..tenant_slots` (1 to
    /// [`fluxgate_common::MAX_TENANT_SLOTS`]). What they cost is said at
    /// [`fluxgate_common::DEFAULT_TENANT_SLOTS`]; they also size the map of
    /// kept tables of a pinned attachment.
    pub tenant_slots: u32,
    /// Counter slots: rule counter slots `0..counter_slots` (1 to
    /// [`fluxgate_common::MAX_COUNTER_SLOTS`]; one per rule and per table
    /// default of every live and kept generation). Each costs 16 bytes per
    /// possible CPU (see [`fluxgate_common::DEFAULT_COUNTER_SLOTS`]).
    pub counter_slots: u32,
    /// Entries of the LRU map of per-source limit buckets (1 to
    /// [`fluxgate_common::MAX_SOURCE_BUCKETS`]; one per rule and source
    /// prefix seen lately; cost at
    /// [`fluxgate_common::DEFAULT_SOURCE_BUCKETS`]).
    pub source_buckets: u32,
}

impl Default for Sizes {
    fn default() -> Self {
        Sizes {
            pool_cells: DEFAULT_POOL_CELLS,
            tenant_slots: DEFAULT_TENANT_SLOTS,
            counter_slots: DEFAULT_COUNTER_SLOTS,
            source_buckets: fluxgate_common::DEFAULT_SOURCE_BUCKETS,
        }
    }
}

/// Result of running one packet through the program with `BPF_PROG_TEST_RUN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunOutput {
    /// The XDP verdict (`fluxgate_common::xdp::PASS`, `DROP`, …).
    pub verdict: u32,
    /// Average time per run, as the kernel measured it (whole nanoseconds).
    pub duration: Duration,
}

/// The kernel refuses `BPF_PROG_TEST_RUN` input shorter than an Ethernet header
/// (also behind XDP metadata), and Ethernet devices never deliver such frames.
const ETH_HLEN: usize = 14;

impl Program {
    /// Loads and verifies the embedded programs (dispatcher, classifier, probe,
    /// floors), installs the classifier as version 0 — serving every tenant —
    /// and writes `config`. The table cell pool gets
    /// [`fluxgate_common::DEFAULT_POOL_CELLS`] cells (see [`Program::load_sized`]).
    pub fn load(config: &GatewayConfig) -> Result<Program, Error> {
        Program::load_sized(config, DEFAULT_POOL_CELLS)
    }

    /// [`Program::load`] with a table cell pool of `pool_cells` cells (128
    /// bytes each, allocated up front): every table of every kept generation
    /// of this attachment must fit in it (see [`Error::PoolFull`]).
    pub fn load_sized(config: &GatewayConfig, pool_cells: u32) -> Result<Program, Error> {
        Program::load_with(
            config,
            Sizes {
                pool_cells,
                ..Sizes::default()
            },
        )
    }

    /// [`Program::load`] with the map sizes `sizes` (table cell pool, tenant
    /// and counter slots). `config`'s [`GatewayConfig::tenant_slots`] and
    /// [`GatewayConfig::counter_slots`] are replaced by `sizes`'.
    pub fn load_with(config: &GatewayConfig, sizes: Sizes) -> Result<Program, Error> {
        let Sizes {
            pool_cells,
            tenant_slots,
            counter_slots,
            source_buckets,
        } = sizes;
        if pool_cells < 2 {
            return Err(Error::InvalidArgument(format!(
                "a cell pool of {pool_cells} cells cannot hold a table (cell 0 is reserved)"
            )));
        }
        layout::check_tenant_slots(tenant_slots)?;
        layout::check_counter_slots(counter_slots)?;
        layout::check_source_buckets(source_buckets)?;
        let slots = layout::Slots {
            tenant: tenant_slots,
            counter: counter_slots,
            source: source_buckets,
        };
        let mut loader = aya::EbpfLoader::new();
        loader.map_max_entries(maps::POOL, pool_cells);
        for (name, entries) in layout::sized_map_entries(slots)? {
            loader.map_max_entries(name, entries);
        }
        let ebpf = loader
            .load(OBJECT)
            .map_err(|e| {
                Error::kernel(
                    "load the fluxgate eBPF object (is the memlock/memcg limit too low for the cell pool?)",
                    e,
                )
            })?;
        let pool_fd = match ebpf.map(maps::POOL) {
            Some(Map::Array(data)) => data
                .fd()
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::kernel("duplicate a map fd", e))?,
            _ => return Err(missing_map(maps::POOL)),
        };
        let pool = Pool::open(pool_fd, true)?;
        let mut program = Program {
            ebpf,
            pool,
            tenant_slots,
            counter_slots,
            source_buckets,
        };
        for name in [
            PROGRAM_NAME,
            CLASSIFIER_PROGRAM_NAME,
            PROBE_PROGRAM_NAME,
            FLOOR_PROGRAM_NAME,
            TAIL_FLOOR_PROGRAM_NAME,
        ] {
            load_xdp(&mut program.ebpf, name)?;
        }
        program.install(maps::CLASSIFIERS, 0, CLASSIFIER_PROGRAM_NAME)?;
        program.install(maps::BENCH_TAIL, 0, FLOOR_PROGRAM_NAME)?;
        program.set_config(config)?;
        Ok(program)
    }

    /// Puts program `name` of this object at `index` of the program array `map`.
    fn install(&mut self, map: &'static str, index: u32, name: &str) -> Result<(), Error> {
        let fd = xdp_of(&self.ebpf, name)?
            .fd()
            .map_err(|e| Error::kernel("get a program fd", e))?
            .try_clone()
            .map_err(|e| Error::kernel("duplicate a program fd", e))?;
        let mut array: ProgramArray<&mut MapData> = ProgramArray::try_from(self.map_mut(map)?)
            .map_err(|e| Error::kernel("open a program array", e))?;
        array
            .set(index, &fd, 0)
            .map_err(|e| Error::kernel("install a classifier version", e))
    }

    /// Runs `frame` through the dispatcher plus one tail call replaced by the
    /// floor: `test_run_floor` + exactly one tail call (benchmarks).
    pub fn test_run_tail_floor(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutput, Error> {
        test_run_xdp(xdp_of(&self.ebpf, TAIL_FLOOR_PROGRAM_NAME)?, frame, repeat)
    }

    /// Replaces the capture configuration (see [`crate::DropReader`]).
    pub fn set_capture(&mut self, config: &fluxgate_common::CaptureConfig) -> Result<(), Error> {
        config::write_capture(self.map_mut(maps::CAPTURE)?, config)
    }

    /// Discards every captured record waiting in the drop ring; how many.
    pub fn drain_drops(&mut self) -> Result<usize, Error> {
        let mut ring = aya::maps::RingBuf::try_from(self.map_mut(maps::DROPS)?)
            .map_err(|e| Error::kernel("open the drop ring", e))?;
        let mut n = 0;
        while ring.next().is_some() {
            n += 1;
        }
        Ok(n)
    }

    /// Replaces the gateway configuration the program reads on every packet
    /// (its [`GatewayConfig::tenant_slots`] and
    /// [`GatewayConfig::counter_slots`] stay the program's).
    pub fn set_config(&mut self, config: &GatewayConfig) -> Result<(), Error> {
        let config = GatewayConfig {
            tenant_slots: self.tenant_slots,
            counter_slots: self.counter_slots,
            ..*config
        };
        config::write_config(self.map_mut(maps::CONFIG)?, &config)
    }

    /// Tenant slots the program's maps were sized for (see [`Sizes`]).
    pub fn tenant_slots(&self) -> u32 {
        self.tenant_slots
    }

    /// Counter slots the program's maps were sized for (see [`Sizes`]): rule
    /// counter slots `0..counter_slots`.
    pub fn counter_slots(&self) -> u32 {
        self.counter_slots
    }

    /// Entries of the LRU map of per-source limit buckets.
    pub fn source_buckets(&self) -> u32 {
        self.source_buckets
    }

    /// The last decision recorded while [`GatewayConfig::trace`] is on.
    pub fn last_trace(&self) -> Result<fluxgate_common::Trace, Error> {
        let array: Array<&MapData, fluxgate_common::Trace> =
            Array::try_from(self.map(maps::TRACE)?)
                .map_err(|e| Error::kernel("open the trace map", e))?;
        array
            .get(&0, 0)
            .map_err(|e| Error::kernel("read the trace map", e))
    }

    /// Reads the counters, summed over CPUs.
    pub fn counters(&self) -> Result<Counters, Error> {
        Counters::read(self.map(maps::OUTCOMES)?, self.map(maps::MALFORMED)?)
    }

    /// `(program name, instructions the verifier processed)` for every
    /// program of the object. The kernel refuses a program past 1,000,000,
    /// and small code changes can move the count a lot (LLVM's code shape
    /// decides how well the verifier prunes), so tests keep an eye on the
    /// headroom.
    pub fn verified_instructions(&self) -> Result<Vec<(String, u32)>, Error> {
        let mut out = Vec::new();
        for (name, program) in self.ebpf.programs() {
            let info = program
                .info()
                .map_err(|e| Error::kernel("read a program's info", e))?;
            let count = info
                .verified_instruction_count()
                .ok_or_else(|| Error::Unsupported {
                    feature: "verified instruction counts in program info (Linux 5.16+)",
                    source: std::io::ErrorKind::Unsupported.into(),
                })?;
            out.push((name.to_owned(), count));
        }
        out.sort();
        Ok(out)
    }

    /// Runs `frame` through the program `repeat` times (≥ 1) with `BPF_PROG_TEST_RUN`.
    ///
    /// Counters are updated as for real traffic. Frames shorter than an Ethernet
    /// header (14 bytes) are refused with [`Error::InvalidArgument`]: the kernel
    /// cannot run them.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutput, Error> {
        test_run_xdp(self.xdp()?, frame, repeat)
    }

    /// Runs `frame` through the bare `XDP_PASS` program of the same object: the
    /// harness floor that benchmarks subtract or divide by.
    pub fn test_run_floor(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutput, Error> {
        test_run_xdp(xdp_of(&self.ebpf, FLOOR_PROGRAM_NAME)?, frame, repeat)
    }

    pub(crate) fn xdp(&self) -> Result<&Xdp, Error> {
        xdp_of(&self.ebpf, PROGRAM_NAME)
    }

    pub(crate) fn xdp_mut(&mut self) -> Result<&mut Xdp, Error> {
        let prog = self
            .ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or_else(|| missing_program_named(PROGRAM_NAME))?;
        prog.try_into()
            .map_err(|e| Error::kernel("find the XDP program in the object", e))
    }

    pub(crate) fn map(&self, name: &'static str) -> Result<&Map, Error> {
        self.ebpf.map(name).ok_or_else(|| missing_map(name))
    }

    pub(crate) fn map_mut_named(&mut self, name: &'static str) -> Result<&mut Map, Error> {
        self.map_mut(name)
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, Error> {
        self.ebpf.map_mut(name).ok_or_else(|| missing_map(name))
    }
}

/// Program `name` of a loaded object, as XDP.
pub(crate) fn xdp_of<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp, Error> {
    ebpf.program(name)
        .ok_or_else(|| missing_program_named(name))?
        .try_into()
        .map_err(|e| Error::kernel("find the XDP program in the object", e))
}

/// Verifies and loads program `name` of `ebpf`.
pub(crate) fn load_xdp(ebpf: &mut Ebpf, name: &str) -> Result<(), Error> {
    let xdp: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| missing_program_named(name))?
        .try_into()
        .map_err(|e| Error::kernel("find the XDP program in the object", e))?;
    xdp.load().map_err(rejected)
}

/// A program load failure, with the end of the verifier log when there is one.
pub(crate) fn rejected(err: aya::programs::ProgramError) -> Error {
    match err {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            let log = verifier_log.to_string();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            Error::Rejected {
                source: io_error,
                log: tail,
            }
        }
        err => Error::kernel("verify the XDP program", err),
    }
}

fn missing_program_named(name: &str) -> Error {
    Error::Incompatible {
        path: "<object>".into(),
        reason: format!("no program named {name}"),
    }
}

fn missing_map(name: &str) -> Error {
    Error::Incompatible {
        path: "<embedded object>".into(),
        reason: format!("no map named {name}"),
    }
}

/// Runs `frame` through any loaded XDP program `repeat` times (≥ 1) with
/// `BPF_PROG_TEST_RUN`: fluxgate's own ([`Program::test_run`]) or another
/// (a benchmark's peer, reached with `Xdp::from_program_info` or
/// `Xdp::from_pin`).
///
/// Frames shorter than an Ethernet header (14 bytes) are refused with
/// [`Error::InvalidArgument`]: the kernel cannot run them.
///
/// ```no_run
/// use aya::programs::Xdp;
/// use aya_obj::programs::XdpAttachType;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let xdp = Xdp::from_pin("/sys/fs/bpf/some_xdp_prog", XdpAttachType::Interface)?;
/// let out = fluxgate_dataplane::test_run_xdp(&xdp, &[0u8; 64], 1000)?;
/// println!("verdict {} in {:?} per run", out.verdict, out.duration);
/// # Ok(()) }
/// ```
pub fn test_run_xdp(xdp: &Xdp, frame: &[u8], repeat: u32) -> Result<TestRunOutput, Error> {
    if frame.len() < ETH_HLEN {
        return Err(Error::InvalidArgument(format!(
            "BPF_PROG_TEST_RUN needs a frame of at least {ETH_HLEN} bytes, got {}; \
             shorter frames never reach XDP on Ethernet devices",
            frame.len()
        )));
    }
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.repeat = repeat.max(1);
    let out = xdp
        .test_run(opts)
        .map_err(|e| Error::kernel("run BPF_PROG_TEST_RUN", e))?;
    Ok(TestRunOutput {
        verdict: out.return_value,
        duration: out.duration,
    })
}
