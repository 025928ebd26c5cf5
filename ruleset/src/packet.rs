//! The packet fields classification looks at, and a one-line text form for them.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use crate::error::excerpt;
use crate::model::Proto;
use crate::parser::{parse_flags, parse_proto, parse_u32};
use crate::print::flag_letters;

/// What the classifier sees of a packet.
///
/// Fields a packet does not carry are `None`: ports and flags on a non-first fragment
/// or a protocol without them, ICMP type/code on non-ICMP, VLAN on untagged frames.
/// A rule constraining a field never matches a packet where it is `None`.
///
/// Text form ([`FromStr`] / [`Display`](fmt::Display)):
///
/// ```text
/// PROTO SRC -> DST [frag] [flags LETTERS] [type N] [code N] [hlim N] [iif NAME] [vlan N]
/// tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags S
/// udp [2001:db8::1]:53 -> [2001:db8:1::2]:5353 vlan 42 iif eth1
/// icmp 192.0.2.1 -> 203.0.113.10 type 8 code 0
/// udp 192.0.2.1 -> 203.0.113.10 frag   (a non-first fragment: no ports)
/// 47 192.0.2.1 -> 203.0.113.10 frag    (a non-first fragment of GRE)
/// icmpv6 fe80::1 -> ff02::1:ff00:10 type 135 code 0 hlim 255   (neighbour discovery)
/// ```
///
/// A TCP or UDP packet written without ports, or an ICMP one without a type,
/// is a non-first fragment (nothing else of those protocols lacks its header
/// on the wire), with or without `frag`.
///
/// A TCP packet with ports but without `flags` has no flag set (`tcp_flags == Some(0)`).
/// Only TCP and UDP endpoints take ports (`addr:port`, `[v6]:port`); the text
/// of any other packet with ports is refused, as no frame of it carries any;
/// likewise `type`/`code` only on ICMP over IPv4 and ICMPv6 over IPv6.
///
/// ```
/// use fluxgate_ruleset::PacketHeader;
/// let p: PacketHeader = "tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags SA".parse()?;
/// assert_eq!(p.dport, Some(443));
/// assert_eq!(p.tcp_flags, Some(0x12));
/// assert_eq!(p.to_string(), "tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags SA");
/// # Ok::<(), fluxgate_ruleset::PacketParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PacketHeader {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port (TCP/UDP first fragments only).
    pub sport: Option<u16>,
    /// Destination port.
    pub dport: Option<u16>,
    /// TCP flags byte (FIN = bit 0 … CWR = bit 7).
    pub tcp_flags: Option<u8>,
    /// ICMP / ICMPv6 type.
    pub icmp_type: Option<u8>,
    /// ICMP / ICMPv6 code.
    pub icmp_code: Option<u8>,
    /// Ingress interface name.
    pub iif: Option<String>,
    /// 802.1Q VLAN id.
    pub vlan: Option<u16>,
    /// A non-first fragment (IPv4 fragment offset ≠ 0, or an IPv6 fragment
    /// header with offset ≠ 0): no L4 header, so no ports, flags or ICMP
    /// type; only `fragment` rules and rules on addresses, protocol,
    /// interface and VLAN match it.
    pub fragment: bool,
    /// An ICMPv6 message whose hop limit is 255 (text `hlim 255`; other
    /// hop limits read as `false`): sent on this link, no router forwarded
    /// it, which is what makes neighbour discovery valid
    /// ([`PacketHeader::is_neighbor_discovery`]). Only ICMPv6 messages with
    /// a type carry it: it is the only hop limit classification looks at.
    pub hop_limit_255: bool,
}

/// Why a packet's text form did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad packet `{}`: {reason}", crate::error::excerpt(.text))]
pub struct PacketParseError {
    /// The input.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

fn endpoint(w: &str) -> Result<(IpAddr, Option<u16>), String> {
    let port = |p: &str| -> Result<u16, String> {
        parse_u32(p)
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| format!("bad port `{}`", excerpt(p)))
    };
    if let Some(rest) = w.strip_prefix('[') {
        let (a, tail) = rest.split_once(']').ok_or("missing `]`")?;
        let addr = a
            .parse::<IpAddr>()
            .map_err(|_| format!("bad address `{}`", excerpt(a)))?;
        return match tail {
            "" => Ok((addr, None)),
            t => Ok((
                addr,
                Some(port(
                    t.strip_prefix(':').ok_or("expected `:PORT` after `]`")?,
                )?),
            )),
        };
    }
    if let Ok(a) = w.parse::<IpAddr>() {
        return Ok((a, None));
    }
    let (a, p) = w
        .rsplit_once(':')
        .ok_or_else(|| format!("bad address `{}`", excerpt(w)))?;
    let addr = a.parse::<std::net::Ipv4Addr>().map_err(|_| {
        format!(
            "bad address `{}` (write IPv6 with a port as [addr]:port)",
            excerpt(a)
        )
    })?;
    Ok((IpAddr::V4(addr), Some(port(p)?)))
}

impl PacketHeader {
    /// Whether this is a non-first fragment: [`PacketHeader::fragment`], or
    /// a TCP / UDP packet without ports or an ICMP one without type and code
    /// (built in code, such as a ClassBench ICMP header): no such packet
    /// exists on the wire but as a later fragment, which is how every engine
    /// reads it.
    pub fn is_later_fragment(&self) -> bool {
        let proto = Proto::from_number(self.proto);
        let icmp = matches!((self.proto, self.dst.is_ipv6()), (1, false) | (58, true));
        self.fragment
            || (proto.has_ports() && (self.sport.is_none() || self.dport.is_none()))
            || (icmp && self.icmp_type.is_none() && self.icmp_code.is_none())
    }

    /// Whether this is an IPv6 neighbour discovery message as RFC 4861
    /// accepts one (ICMPv6 type 133–137, code 0, hop limit 255): passed
    /// before any rule, as the XDP dispatcher does
    /// (`fluxgate_common::table::neighbor_discovery` on the key).
    pub fn is_neighbor_discovery(&self) -> bool {
        self.dst.is_ipv6()
            && self.proto == 58
            && !self.is_later_fragment()
            && matches!(self.icmp_type, Some(133..=137))
            && self.icmp_code.unwrap_or(0) == 0
            && self.hop_limit_255
    }

    /// This header as a network can carry it: ports only on TCP and UDP, TCP
    /// flags only on TCP. ClassBench traces write port numbers for every
    /// protocol; a GRE or ICMP packet has none on the wire, so no engine that
    /// sees frames (the XDP program) could match them, and the others must
    /// not either for the engines to agree.
    ///
    /// ```
    /// use fluxgate_ruleset::classbench;
    /// // A ClassBench trace line `3221225985 3325256706 25 1136 47` (GRE).
    /// let gre = classbench::header(0xc000_0201, 0xc633_6402, 25, 1136, 47);
    /// assert_eq!(gre.on_the_wire().to_string(), "47 192.0.2.1 -> 198.51.100.2");
    /// ```
    pub fn on_the_wire(mut self) -> PacketHeader {
        let proto = Proto::from_number(self.proto);
        if !proto.has_ports() {
            self.sport = None;
            self.dport = None;
        }
        if proto != Proto::Tcp {
            self.tcp_flags = None;
        }
        self
    }
}

impl FromStr for PacketHeader {
    type Err = PacketParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| PacketParseError {
            text: s.to_owned(),
            reason,
        };
        let mut w = s.split_whitespace();
        let mut next = |what: &str| w.next().ok_or_else(|| fail(format!("missing {what}")));
        let proto = parse_proto(next("protocol")?).map_err(|e| fail(e.1))?;
        let (src, sport) = endpoint(next("source")?).map_err(fail)?;
        if next("`->`")? != "->" {
            return Err(fail("expected `->` between source and destination".into()));
        }
        let (dst, dport) = endpoint(next("destination")?).map_err(fail)?;
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(fail(
                "source and destination are of different IP families".into(),
            ));
        }
        if sport.is_some() != dport.is_some() {
            return Err(fail("give both ports or neither".into()));
        }
        if sport.is_some() && !proto.has_ports() {
            return Err(fail(
                "only tcp and udp packets have ports (an ICMP packet: `type N code M`)".into(),
            ));
        }
        let mut p = PacketHeader {
            src,
            dst,
            proto: proto.number(),
            sport,
            dport,
            tcp_flags: None,
            icmp_type: None,
            icmp_code: None,
            iif: None,
            vlan: None,
            fragment: false,
            hop_limit_255: false,
        };
        if proto == Proto::Tcp && sport.is_some() {
            p.tcp_flags = Some(0);
        }
        let num = |v: Option<&str>, max: u32| {
            v.and_then(parse_u32)
                .filter(|&n| n <= max)
                .ok_or_else(|| fail("bad number".into()))
        };
        let mut frag = false;
        while let Some(k) = w.next() {
            if k == "frag" {
                if sport.is_some() {
                    return Err(fail("a non-first fragment (`frag`) has no ports".into()));
                }
                frag = true;
                continue;
            }
            let v = w.next();
            match k {
                "flags" => {
                    let f = parse_flags(v.unwrap_or(""), false).map_err(fail)?;
                    if proto != Proto::Tcp || sport.is_none() {
                        return Err(fail("`flags` needs a TCP packet with ports".into()));
                    }
                    p.tcp_flags = Some(f.value);
                }
                "type" | "code" => {
                    if !proto.is_icmp() {
                        return Err(fail(format!("`{}` needs an ICMP packet", excerpt(k))));
                    }
                    // No frame carries ICMP over IPv6 or ICMPv6 over IPv4.
                    if (proto == Proto::Icmpv6) != dst.is_ipv6() {
                        return Err(fail(format!(
                            "`{}`: {proto} does not travel over {}",
                            excerpt(k),
                            if dst.is_ipv6() { "IPv6" } else { "IPv4" }
                        )));
                    }
                    let n = u8::try_from(num(v, 255)?).ok();
                    if k == "type" {
                        p.icmp_type = n
                    } else {
                        p.icmp_code = n
                    }
                }
                "hlim" => {
                    if proto != Proto::Icmpv6 || !dst.is_ipv6() {
                        return Err(fail("`hlim` is looked at on ICMPv6 messages only".into()));
                    }
                    p.hop_limit_255 = num(v, 255)? == 255;
                }
                "vlan" => p.vlan = u16::try_from(num(v, 4095)?).ok(),
                "iif" => {
                    p.iif = Some(
                        v.ok_or_else(|| fail("missing interface".into()))?
                            .to_owned(),
                    )
                }
                _ => return Err(fail(format!("unknown field `{}`", excerpt(k)))),
            }
        }
        let icmp_header = p.icmp_type.is_some() || p.icmp_code.is_some();
        if p.hop_limit_255 && p.icmp_type.is_none() {
            return Err(fail("`hlim` needs an ICMPv6 message with a `type`".into()));
        }
        if frag && icmp_header {
            return Err(fail(
                "a non-first fragment (`frag`) has no ICMP type or code".into(),
            ));
        }
        // Without its header, a TCP, UDP or ICMP packet can only be a later fragment.
        p.fragment =
            frag || (proto.has_ports() && sport.is_none()) || (proto.is_icmp() && !icmp_header);
        Ok(p)
    }
}

impl fmt::Display for PacketHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ep = |a: IpAddr, p: Option<u16>| match (a, p) {
            (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (a, Some(p)) => format!("{a}:{p}"),
            (a, None) => a.to_string(),
        };
        write!(
            f,
            "{} {} -> {}",
            Proto::from_number(self.proto),
            ep(self.src, self.sport),
            ep(self.dst, self.dport)
        )?;
        // Written only where the text would not say it already (a TCP or
        // UDP packet without ports, an ICMP one without a type).
        let proto = Proto::from_number(self.proto);
        let implied = (proto.has_ports() && self.sport.is_none())
            || (proto.is_icmp() && self.icmp_type.is_none() && self.icmp_code.is_none());
        if self.fragment && !implied {
            f.write_str(" frag")?;
        }
        if let Some(fl) = self.tcp_flags.filter(|&b| b != 0) {
            f.write_str(" flags ")?;
            flag_letters(f, fl)?;
        }
        if let Some(t) = self.icmp_type {
            write!(f, " type {t}")?;
        }
        if let Some(c) = self.icmp_code {
            write!(f, " code {c}")?;
        }
        if self.hop_limit_255 {
            f.write_str(" hlim 255")?;
        }
        if let Some(i) = &self.iif {
            write!(f, " iif {i}")?;
        }
        if let Some(v) = self.vlan {
            write!(f, " vlan {v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::PacketHeader;

    /// Each malformed packet text is refused with the reason.
    #[test]
    fn bad_packets_say_what_is_wrong() {
        for (text, reason) in [
            ("tcp 192.0.2.1:1", "missing `->`"),
            ("tcp 192.0.2.1:1 -> 2001:db8::1:2", "different IP families"),
            (
                "tcp 192.0.2.1:1 -> 198.51.100.1",
                "give both ports or neither",
            ),
            (
                "47 192.0.2.1:25 -> 198.51.100.2:1136",
                "only tcp and udp packets have ports",
            ),
            (
                "icmp 192.0.2.1:8 -> 198.51.100.2:0",
                "only tcp and udp packets have ports",
            ),
            (
                "udp 192.0.2.1:1 -> 198.51.100.1:2 flags S",
                "needs a TCP packet",
            ),
            (
                "tcp 192.0.2.1:1 -> 198.51.100.1:2 type 8",
                "needs an ICMP packet",
            ),
            ("udp 192.0.2.1:1 -> 198.51.100.1:2 vlan 4096", "bad number"),
            (
                "udp 192.0.2.1:1 -> 198.51.100.1:2 colour red",
                "unknown field `colour`",
            ),
        ] {
            let err = text.parse::<PacketHeader>().expect_err(text);
            assert!(err.reason.contains(reason), "{text}: {err}");
            assert_eq!(err.text, text);
        }
        // What the ports check lets through.
        for text in [
            "udp 192.0.2.1:1 -> 198.51.100.1:2",
            "icmp 192.0.2.1 -> 198.51.100.2 type 8 code 0",
            "47 192.0.2.1 -> 198.51.100.2",
        ] {
            let p: PacketHeader = text.parse().expect(text);
            assert_eq!(p.to_string(), text);
        }
    }
}
