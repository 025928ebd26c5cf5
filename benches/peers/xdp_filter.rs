//! `xdp-filter` (Debian `xdp-tools`) loaded on a veth end in a private network
//! namespace, with its own bpffs in a private mount namespace (its pins never touch
//! the host's `/sys/fs/bpf/xdp-filter`), its program and maps reached by id
//! through aya, and run with the dataplane's `BPF_PROG_TEST_RUN`.

use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    process::{Child, ChildStdin, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use aya::{
    maps::{Map, MapData, MapType, PerCpuArray, PerCpuHashMap, PerCpuValues},
    programs::{ProgramInfo, Xdp, loaded_programs},
};
use aya_obj::programs::XdpAttachType;
use fluxgate::ruleset::classbench::Filter;
use fluxgate_testkit::{net::Netns, synth::Rng};

/// Runs inside the namespaces: load (native, else skb), report, wait for stdin to
/// close, unload.
const SCRIPT: &str = r#"
mount -t bpf bpf /sys/fs/bpf || exit 1
if xdp-filter load -m native "$1"; then echo "MODE native"
else xdp-filter load -m skb "$1" || exit 1; echo "MODE skb"; fi
echo READY
read _ignored
xdp-filter unload "$1" || echo "xdp-filter unload failed"
"#;

const IFACE: &str = "xf0";
// xdp-filter's map value bits (xdp-tools `common_kern_user.h`; checked against what
// its CLI writes): match as source, as destination, for TCP, for UDP.
const MAP_FLAG_SRC: u64 = 1;
const MAP_FLAG_DST: u64 = 2;
const MAP_FLAG_TCP: u64 = 4;
const MAP_FLAG_UDP: u64 = 8;

/// One loaded `xdp-filter`. Dropping it closes the helper shell's stdin, which makes
/// it run `xdp-filter unload`; then the namespace (and the veth pair) is deleted.
pub struct XdpFilter {
    prog: Xdp,
    ipv4: FilterMap,
    ports: FilterMap,
    /// `native` or `skb`: how it attached to the veth end.
    pub mode: String,
    _unloader: Unloader,
}

impl XdpFilter {
    /// Loads it on a fresh veth pair in a fresh namespace.
    pub fn load() -> XdpFilter {
        let ns = Netns::new();
        ns.ip(&["link", "add", IFACE, "type", "veth", "peer", "name", "xf1"]);
        ns.ip(&["link", "set", IFACE, "up"]);
        ns.ip(&["link", "set", "xf1", "up"]);
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", ns.name()))
            .args(["unshare", "--mount", "--propagation", "private"])
            .args(["sh", "-c", SCRIPT, "sh", IFACE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("nsenter/unshare/xdp-filter (xdp-tools installed?)");
        let stdin = child.stdin.take().expect("stdin");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut mode = String::new();
        loop {
            let mut line = String::new();
            let n = out.read_line(&mut line).expect("read helper");
            assert!(n > 0, "xdp-filter load failed (its stderr is above)");
            if let Some(m) = line.trim().strip_prefix("MODE ") {
                mode = m.to_owned();
            }
            if line.trim() == "READY" {
                break;
            }
        }
        thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                eprintln!("xdp-filter helper: {line}");
            }
        });
        let id = prog_id(ns.name(), IFACE);
        // From here on, a panic still unloads xdp-filter and deletes the namespace.
        let unloader = Unloader {
            helper: Some((child, stdin)),
            ns: Some(ns),
        };
        let id = id.expect("xdp-filter's program on the interface");
        let info: ProgramInfo = loaded_programs()
            .filter_map(Result::ok)
            .find(|p| p.id() == id)
            .expect("xdp-filter's program among the loaded programs");
        let (mut ipv4, mut ports) = (None, None);
        let map_ids = info.map_ids().expect("prog info").unwrap_or_default();
        for map_id in map_ids {
            let map = MapData::from_id(map_id).expect("BPF_MAP_GET_FD_BY_ID");
            let name = map
                .info()
                .expect("map info")
                .name_as_str()
                .map(str::to_owned);
            match name.as_deref() {
                Some("filter_ipv4") => ipv4 = Some(FilterMap::open(map)),
                Some("filter_ports") => ports = Some(FilterMap::open(map)),
                _ => {}
            }
        }
        let prog = Xdp::from_program_info(info, "xdp-filter".into(), XdpAttachType::Interface)
            .expect("xdp-filter's program as XDP");
        XdpFilter {
            prog,
            ipv4: ipv4.expect("xdp-filter has a filter_ipv4 map"),
            ports: ports.expect("xdp-filter has a filter_ports map"),
            mode,
            _unloader: unloader,
        }
    }

    /// Puts `addrs` in its IPv4 map and `ports` in its port map, each as source and
    /// destination (ports for TCP and UDP), the values its CLI writes.
    pub fn fill(&mut self, addrs: &[Ipv4Addr], ports: &[u16]) {
        for a in addrs {
            // Key: the address as it sits in the packet.
            let key = u32::from_ne_bytes(a.octets());
            self.ipv4.set(key, MAP_FLAG_SRC | MAP_FLAG_DST);
        }
        for &p in ports {
            // Key: the port as it sits in the packet (network order), in a u32.
            let key = u32::from(p.to_be());
            self.ports.set(
                key,
                MAP_FLAG_SRC | MAP_FLAG_DST | MAP_FLAG_TCP | MAP_FLAG_UDP,
            );
        }
    }

    /// BPF_PROG_TEST_RUN: `(verdict, kernel ns per run)`.
    pub fn test_run(&self, frame: &[u8], repeat: u32) -> (u32, u32) {
        let out = fluxgate::dataplane::test_run_xdp(&self.prog, frame, repeat)
            .expect("BPF_PROG_TEST_RUN on xdp-filter");
        (out.verdict, out.duration.as_nanos() as u32)
    }
}

/// One of xdp-filter's per-CPU maps of u32 keys and u64 flag values (its
/// IPv4 map is a hash, its port map an array in the xdp-tools versions seen).
enum FilterMap {
    Hash(PerCpuHashMap<MapData, u32, u64>),
    Array(PerCpuArray<MapData, u64>),
}

impl FilterMap {
    fn open(map: MapData) -> FilterMap {
        let map_type = map.info().expect("map info").map_type().expect("map type");
        match map_type {
            MapType::PerCpuHash => FilterMap::Hash(
                PerCpuHashMap::try_from(Map::PerCpuHashMap(map)).expect("u32 keys, u64 values"),
            ),
            MapType::PerCpuArray => {
                FilterMap::Array(PerCpuArray::try_from(Map::PerCpuArray(map)).expect("u64 values"))
            }
            other => panic!("xdp-filter map of unexpected type {other:?}"),
        }
    }

    /// Writes `flags` at `key` on every CPU (BPF_ANY), as xdp-filter's CLI does.
    fn set(&mut self, key: u32, flags: u64) {
        let cpus = aya::util::nr_cpus().expect("possible CPUs");
        let values = PerCpuValues::try_from(vec![flags; cpus]).expect("one value per CPU");
        match self {
            FilterMap::Hash(m) => m.insert(key, values, 0),
            FilterMap::Array(m) => m.set(key, values, 0),
        }
        .expect("update an xdp-filter map");
    }
}

/// Unloads (helper's stdin closed, waited for up to 10 s, killed after), then deletes
/// the namespace.
struct Unloader {
    helper: Option<(Child, ChildStdin)>,
    ns: Option<Netns>,
}

impl Drop for Unloader {
    fn drop(&mut self) {
        if let Some((mut child, stdin)) = self.helper.take() {
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        drop(self.ns.take());
    }
}

/// The id of the XDP program attached to `iface` in namespace `ns`.
fn prog_id(ns: &str, iface: &str) -> Option<u32> {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "link", "show", "dev", iface])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let key = "\"prog\":{\"id\":";
    let rest = &text[text.find(key)? + key.len()..];
    rest[..rest.find(|c: char| !c.is_ascii_digit())?]
        .parse()
        .ok()
}

/// `n` distinct IPv4 addresses (the rules' prefixes first, then pseudo-random ones)
/// and `n` distinct ports, none of them in `avoid_addrs` / `avoid_ports`.
pub fn entries(
    n: usize,
    rules: &[Filter],
    avoid_addrs: &[Ipv4Addr],
    avoid_ports: &[u16],
) -> (Vec<Ipv4Addr>, Vec<u16>) {
    let mut seen: HashSet<Ipv4Addr> = avoid_addrs.iter().copied().collect();
    let mut addrs = Vec::new();
    for f in rules {
        for a in [f.src.network(), f.dst.network()] {
            if addrs.len() < n && seen.insert(a) {
                addrs.push(a);
            }
        }
    }
    let mut rng = Rng::new(4);
    while addrs.len() < n {
        let a = Ipv4Addr::from(rng.next_u64() as u32);
        if seen.insert(a) {
            addrs.push(a);
        }
    }
    let mut seen: HashSet<u16> = avoid_ports.iter().copied().collect();
    let mut ports = Vec::new();
    while ports.len() < n {
        let p = (rng.next_u64() % 65_536) as u16;
        if seen.insert(p) {
            ports.push(p);
        }
    }
    (addrs, ports)
}
