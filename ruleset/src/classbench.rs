//! ClassBench import: filter files and trace files, the standard packet-classification
//! benchmark format (acl / fw / ipc families).
//!
//! Filter line: `@SRC/LEN<TAB>DST/LEN<TAB>LO : HI<TAB>LO : HI<TAB>PROTO/MASK[<TAB>FLAGS/MASK]`,
//! e.g. `@192.168.0.0/16<TAB>10.0.0.0/8<TAB>0 : 65535<TAB>1024 : 1024<TAB>0x06/0xFF<TAB>0x0000/0x0000`.
//! Protocol mask `0x00` means any protocol, `0xFF` exactly that one. Filter *i* (1-based
//! line order) becomes global rule *i* with action `pass`; the gateway default is `drop`,
//! so "no filter matched" is a default decision.
//!
//! ClassBench rules put port ranges on rules of any protocol; validate them with
//! [`crate::Config::classbench`]. TCP flags are kept only on TCP filters. Ports
//! are matched as the wire carries them (see [`PacketHeader::on_the_wire`]): only
//! TCP and UDP packets have ports, so a filter with a port range and no protocol
//! matches TCP and UDP packets only, and a filter whose protocol has no ports
//! (ICMP, GRE — standard firewall sets have such filters) with a port range
//! matches no packet at all; it still imports, keeping its number. A full
//! `0 : 65535` range is no constraint: such a filter matches every packet of its
//! protocol. The reference, the userspace tables and the kernel agree on this;
//! [`Filter::matches`] (ClassBench's own semantics, ports on every packet) may
//! differ there. [`parse_ruleset`] keeps each filter's `file:line:col` for
//! validation errors.
//!
//! Trace line: `SRC DST SPORT DPORT PROTO [..] [FILTER]` with addresses as u32 decimal; with
//! six or more fields the last is the 1-based index of the filter expected to match.
//! ClassBench packets always carry ports, whatever the protocol.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use crate::error::{ErrorKind, Errors, SourceMap, excerpt};
use crate::model::{
    Action, Gateway, Match, PortItem, PortRange, PrefixItem, Proto, Rule, RuleId, RuleSpans,
    Ruleset, Scope, Span, TcpFlags, Verdict, assign_ids,
};
use crate::packet::PacketHeader;

/// One ClassBench filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Filter {
    /// Source prefix.
    pub src: Ipv4Net,
    /// Destination prefix.
    pub dst: Ipv4Net,
    /// Source ports.
    pub sport: PortRange,
    /// Destination ports.
    pub dport: PortRange,
    /// Protocol, `None` = any (mask 0x00).
    pub proto: Option<u8>,
    /// TCP flags `(value, mask)` as in the file (16 bits), `None` if absent or mask 0.
    pub flags: Option<(u16, u16)>,
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (p, pm) = self.proto.map_or((0, 0), |p| (p, 0xff));
        let (fv, fm) = self.flags.unwrap_or((0, 0));
        write!(
            f,
            "@{}\t{}\t{} : {}\t{} : {}\t0x{p:02X}/0x{pm:02X}\t0x{fv:04X}/0x{fm:04X}",
            self.src, self.dst, self.sport.lo, self.sport.hi, self.dport.lo, self.dport.hi
        )
    }
}

const ANY_PORT: PortRange = PortRange { lo: 0, hi: 65535 };

impl Filter {
    /// The rule's match (full wildcards become "any").
    pub fn to_match(&self) -> Match {
        let net = |n: Ipv4Net| {
            if n.prefix_len() == 0 {
                vec![]
            } else {
                vec![PrefixItem::Net(IpNet::V4(n))]
            }
        };
        let ports = |r: PortRange| {
            if r == ANY_PORT {
                vec![]
            } else {
                vec![PortItem::Range(r)]
            }
        };
        let proto = self.proto.map(Proto::from_number);
        let tcp_flags = match (proto, self.flags) {
            (Some(Proto::Tcp), Some((v, m))) if m & 0xff != 0 => {
                let (v, m) = ((v & 0xff) as u8, (m & 0xff) as u8);
                Some(TcpFlags {
                    mask: m,
                    value: v & m,
                })
            }
            _ => None,
        };
        Match {
            src: net(self.src),
            dst: net(self.dst),
            proto,
            sport: ports(self.sport),
            dport: ports(self.dport),
            tcp_flags,
            ..Match::default()
        }
    }

    /// True if the packet matches this filter (ClassBench semantics; ports assumed present).
    pub fn matches(&self, p: &PacketHeader) -> bool {
        let IpAddr::V4(s) = p.src else { return false };
        let IpAddr::V4(d) = p.dst else { return false };
        self.src.contains(&s)
            && self.dst.contains(&d)
            && p.sport.is_some_and(|x| self.sport.contains(x))
            && p.dport.is_some_and(|x| self.dport.contains(x))
            && self.proto.is_none_or(|x| x == p.proto)
            && self
                .to_match()
                .tcp_flags
                .is_none_or(|f| p.tcp_flags.is_some_and(|b| b & f.mask == f.value))
    }
}

fn err(map: &SourceMap, line_start: usize, col: usize, len: usize, msg: String) -> Errors {
    Errors::one(map.error(
        ErrorKind::Syntax,
        Span::new(0, line_start + col, line_start + col + len),
        msg,
    ))
}

/// Offset of `field` inside `line` (fields are sub-slices of it).
fn offset(line: &str, field: &str) -> usize {
    (field.as_ptr() as usize).saturating_sub(line.as_ptr() as usize)
}

fn hex(s: &str) -> Option<u32> {
    u32::from_str_radix(
        s.trim().trim_start_matches("0x").trim_start_matches("0X"),
        16,
    )
    .ok()
}

/// The lines of `text` (each with its newline) and the byte offset each starts at.
fn lines_at(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.split_inclusive('\n').scan(0, |start, line| {
        let at = *start;
        *start += line.len();
        Some((at, line))
    })
}

/// Parses a filter file. Errors point at the offending field.
pub fn parse_filters(path: &str, text: &str) -> Result<Vec<Filter>, Errors> {
    Ok(parse_lines(path, text)?
        .1
        .into_iter()
        .map(|(f, _)| f)
        .collect())
}

/// Parses a filter file into the ruleset [`to_ruleset`] makes, with each rule's
/// position in the file, so validation errors (a [`crate::Config`] limit, a
/// port range on a protocol without ports under [`crate::Config::default`])
/// point at `file:line:col` of the filter and field. Validate it with
/// [`crate::Config::classbench`].
pub fn parse_ruleset(path: &str, text: &str) -> Result<Ruleset, Errors> {
    let (map, lines) = parse_lines(path, text)?;
    let mut rs = ruleset_of(lines.iter().map(|(f, spans)| (f, *spans)));
    rs.sources = map;
    Ok(rs)
}

/// The filters of a file with the spans of their fields in it (file 0 of the map).
fn parse_lines(path: &str, text: &str) -> Result<(SourceMap, Vec<(Filter, RuleSpans)>), Errors> {
    let mut map = SourceMap::default();
    map.add(path, text);
    let mut out = Vec::new();
    for (ls, line) in lines_at(text) {
        let body = line.trim_end();
        let Some(rest) = body.strip_prefix('@') else {
            if body.trim().is_empty() {
                continue;
            }
            return Err(err(
                &map,
                ls,
                0,
                1,
                "a ClassBench filter line starts with `@`".into(),
            ));
        };
        let fields: Vec<&str> = rest
            .split('\t')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        if fields.len() < 5 {
            return Err(err(
                &map,
                ls,
                0,
                body.len(),
                format!(
                    "expected at least 5 tab-separated fields, found {}",
                    fields.len()
                ),
            ));
        }
        let bad = |f: &str, what: &str| {
            err(
                &map,
                ls,
                offset(line, f),
                f.len(),
                format!("bad {what} `{}`", excerpt(f)),
            )
        };
        let net = |f: &str| f.parse::<Ipv4Net>().map_err(|_| bad(f, "IPv4 prefix"));
        let range = |f: &str| -> Result<PortRange, Errors> {
            let (lo, hi) = f.split_once(':').ok_or_else(|| bad(f, "port range"))?;
            let p = |x: &str| x.trim().parse::<u16>().map_err(|_| bad(f, "port range"));
            let r = PortRange {
                lo: p(lo)?,
                hi: p(hi)?,
            };
            if r.lo > r.hi {
                Err(bad(f, "port range (low above high)"))
            } else {
                Ok(r)
            }
        };
        let vm = |f: &str, what: &str| -> Result<(u32, u32), Errors> {
            let (v, m) = f.split_once('/').ok_or_else(|| bad(f, what))?;
            Ok((
                hex(v).ok_or_else(|| bad(f, what))?,
                hex(m).ok_or_else(|| bad(f, what))?,
            ))
        };
        let (pv, pm) = vm(fields[4], "protocol/mask")?;
        let proto = match (pm, u8::try_from(pv)) {
            (0, _) => None,
            (0xff, Ok(p)) => Some(p),
            _ => return Err(bad(fields[4], "protocol/mask (mask must be 0x00 or 0xFF)")),
        };
        let flags = match fields.get(5) {
            Some(f) => {
                let (v, m) = vm(f, "flags/mask")?;
                let (v, m) = (
                    u16::try_from(v).map_err(|_| bad(f, "flags"))?,
                    u16::try_from(m).map_err(|_| bad(f, "flags"))?,
                );
                (m != 0).then_some((v, m))
            }
            None => None,
        };
        let filter = Filter {
            src: net(fields[0])?,
            dst: net(fields[1])?,
            sport: range(fields[2])?,
            dport: range(fields[3])?,
            proto,
            flags,
        };
        let at = |f: &str| {
            let start = ls + offset(line, f);
            Some(Span::new(0, start, start + f.len()))
        };
        let spans = RuleSpans {
            rule: Span::new(0, ls, ls + body.len()),
            src: at(fields[0]),
            dst: at(fields[1]),
            sport: at(fields[2]),
            dport: at(fields[3]),
            proto: at(fields[4]),
            tcp_flags: fields.get(5).and_then(|f| at(f)),
            ..RuleSpans::default()
        };
        out.push((filter, spans));
    }
    Ok((map, out))
}

/// A global-only ruleset: filter *i* is gateway rule at position *i*, action `pass`,
/// gateway default `drop`.
///
/// The rules have no position in a file: [`parse_ruleset`] gives one ruleset
/// whose errors do.
pub fn to_ruleset(filters: &[Filter]) -> Ruleset {
    ruleset_of(filters.iter().map(|f| (f, RuleSpans::default())))
}

fn ruleset_of<'a>(filters: impl Iterator<Item = (&'a Filter, RuleSpans)>) -> Ruleset {
    let mut rules: Vec<Rule> = filters
        .map(|(f, spans)| Rule {
            id: RuleId(0),
            position: 0,
            matches: f.to_match(),
            action: Action::Pass,
            limit: None,
            spans,
        })
        .collect();
    assign_ids(&Scope::Gateway, &mut rules);
    Ruleset {
        gateway: Gateway {
            guards: Vec::new(),
            default_action: Verdict::Drop,
            rules,
            ..Gateway::default()
        },
        ..Ruleset::default()
    }
}

/// One trace packet and the filter expected to match it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// The packet.
    pub header: PacketHeader,
    /// 1-based index of the expected filter, if the trace says.
    pub expected: Option<u32>,
}

/// Builds the packet ClassBench means by a 5-tuple (ports always present).
pub fn header(src: u32, dst: u32, sport: u16, dport: u16, proto: u8) -> PacketHeader {
    PacketHeader {
        src: IpAddr::V4(Ipv4Addr::from(src)),
        dst: IpAddr::V4(Ipv4Addr::from(dst)),
        proto,
        sport: Some(sport),
        dport: Some(dport),
        tcp_flags: (proto == 6).then_some(0),
        icmp_type: None,
        icmp_code: None,
        iif: None,
        vlan: None,
        fragment: false,
        hop_limit_255: false,
    }
}

/// Parses a trace file.
pub fn parse_trace(path: &str, text: &str) -> Result<Vec<TraceEntry>, Errors> {
    let mut map = SourceMap::default();
    map.add(path, text);
    let mut out = Vec::new();
    for (ls, line) in lines_at(text) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        if fields.len() < 5 {
            return Err(err(
                &map,
                ls,
                0,
                line.trim_end().len(),
                "a trace line has at least 5 fields: src dst sport dport proto".into(),
            ));
        }
        let num = |i: usize, max: u64| -> Result<u64, Errors> {
            let f = fields[i];
            f.parse::<u64>().ok().filter(|&n| n <= max).ok_or_else(|| {
                err(
                    &map,
                    ls,
                    offset(line, f),
                    f.len(),
                    format!("bad number `{}`", excerpt(f)),
                )
            })
        };
        let n32 = |i| num(i, u64::from(u32::MAX)).map(|n| u32::try_from(n).unwrap_or(0));
        let n16 = |i| num(i, 65535).map(|n| u16::try_from(n).unwrap_or(0));
        let proto = u8::try_from(num(4, 255)?).unwrap_or(0);
        let expected = if fields.len() >= 6 {
            Some(n32(fields.len() - 1)?)
        } else {
            None
        };
        out.push(TraceEntry {
            header: header(n32(0)?, n32(1)?, n16(2)?, n16(3)?, proto),
            expected,
        });
    }
    Ok(out)
}
