//! Building Ethernet frames from a description, with correct lengths and
//! checksums: for `BPF_PROG_TEST_RUN` (preflight guards, tests, benches) and for
//! frames sent on real interfaces in tests.
//!
//! ```
//! use fluxgate_dataplane::frame::{FrameSpec, L4};
//! let frame = FrameSpec::new(
//!     "198.51.100.7".parse().unwrap(),
//!     "203.0.113.10".parse().unwrap(),
//!     L4::Tcp { sport: 40000, dport: 443, flags: 0x02 },
//! )
//! .build();
//! assert_eq!(frame.len(), 14 + 20 + 20);
//! ```

use std::net::IpAddr;

/// Ethertypes used by the builder.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// IPv6.
    pub const IPV6: u16 = 0x86DD;
    /// ARP.
    pub const ARP: u16 = 0x0806;
    /// 802.1Q VLAN tag.
    pub const VLAN: u16 = 0x8100;
    /// 802.1ad (QinQ) service tag.
    pub const QINQ: u16 = 0x88A8;
}

/// The transport part of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP with ports and flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    Tcp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
        /// Flags byte.
        flags: u8,
    },
    /// UDP.
    Udp {
        /// Source port.
        sport: u16,
        /// Destination port.
        dport: u16,
    },
    /// ICMP (over IPv4) or ICMPv6 (over IPv6), with an echo-style 8-byte header.
    Icmp {
        /// ICMP type.
        ty: u8,
        /// ICMP code.
        code: u8,
    },
    /// Another IP protocol; only the payload follows the IP header.
    Other(u8),
}

impl L4 {
    fn proto(&self, v6: bool) -> u8 {
        match self {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Icmp { .. } if v6 => 58,
            L4::Icmp { .. } => 1,
            L4::Other(p) => *p,
        }
    }
}

/// A frame to build: addresses, transport, optional VLAN tags, payload, and
/// optional IPv6 extension headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    /// Source MAC.
    pub src_mac: [u8; 6],
    /// Destination MAC.
    pub dst_mac: [u8; 6],
    /// VLAN tags, outermost first: (TPID, VLAN id).
    pub vlans: Vec<(u16, u16)>,
    /// Source address (both addresses must be the same family).
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport header.
    pub l4: L4,
    /// Payload bytes after the transport header.
    pub payload: Vec<u8>,
    /// IPv6 only: extension headers inserted before the transport header, each
    /// given by its protocol number (0 hop-by-hop, 43 routing, 60 destination
    /// options) as an 8-byte header of padding.
    pub ipv6_ext: Vec<u8>,
    /// IP TTL / hop limit.
    pub ttl: u8,
    /// Non-zero: a non-first fragment at this offset (in 8-byte units) that
    /// carries no transport header (IPv4 fragment field / IPv6 fragment header).
    pub fragment_offset: u16,
}

impl FrameSpec {
    /// A frame with locally administered MACs, no VLAN, no payload.
    pub fn new(src: IpAddr, dst: IpAddr, l4: L4) -> FrameSpec {
        FrameSpec {
            src_mac: [0x02, 0, 0, 0, 0, 0x01],
            dst_mac: [0x02, 0, 0, 0, 0, 0x02],
            vlans: Vec::new(),
            src,
            dst,
            l4,
            payload: Vec::new(),
            ipv6_ext: Vec::new(),
            ttl: 64,
            fragment_offset: 0,
        }
    }

    /// The frame of a packet header as the classifier sees it: ports, flags,
    /// ICMP type/code, VLAN; a later fragment
    /// ([`fluxgate_ruleset::PacketHeader::is_later_fragment`]) becomes a
    /// non-first fragment at offset 185. `None` when the header cannot be put
    /// on the wire as is (an ingress interface, or mixed address families).
    pub fn from_header(p: &fluxgate_ruleset::PacketHeader) -> Option<FrameSpec> {
        if p.iif.is_some() || p.src.is_ipv6() != p.dst.is_ipv6() {
            return None;
        }
        let v6 = p.dst.is_ipv6();
        let icmp = (p.proto == 1 && !v6) || (p.proto == 58 && v6);
        let (l4, fragment_offset) = match (p.proto, p.sport, p.dport) {
            _ if p.is_later_fragment() => (L4::Other(p.proto), 185),
            (6, Some(sport), Some(dport)) => (
                L4::Tcp {
                    sport,
                    dport,
                    flags: p.tcp_flags.unwrap_or(0),
                },
                0,
            ),
            (17, Some(sport), Some(dport)) => (L4::Udp { sport, dport }, 0),
            _ if icmp && p.icmp_type.is_some() => (
                L4::Icmp {
                    ty: p.icmp_type.unwrap_or(0),
                    code: p.icmp_code.unwrap_or(0),
                },
                0,
            ),
            // An IPv6 extension header's number as the protocol: only a
            // non-first fragment ends the chain there (anywhere else the
            // parser walks on into the header the number announces).
            (0 | 43 | 44 | 51 | 60 | 135, _, _) if v6 => (L4::Other(p.proto), 185),
            (proto, _, _) => (L4::Other(proto), 0),
        };
        let mut spec = FrameSpec::new(p.src, p.dst, l4);
        spec.fragment_offset = fragment_offset;
        if p.hop_limit_255 {
            spec.ttl = 255;
        }
        spec.vlans = p.vlan.map(|v| (ethertype::VLAN, v)).into_iter().collect();
        spec.payload = vec![0; 8];
        Some(spec)
    }

    /// Builds the frame bytes (no FCS).
    ///
    /// # Panics
    /// If `src` and `dst` are of different families (a caller bug).
    pub fn build(&self) -> Vec<u8> {
        let v6 = self.dst.is_ipv6();
        assert_eq!(
            self.src.is_ipv6(),
            v6,
            "source and destination families differ"
        );
        let proto = self.l4.proto(v6);
        let l4 = self.transport(proto);
        let mut out = Vec::with_capacity(64 + l4.len());
        out.extend_from_slice(&self.dst_mac);
        out.extend_from_slice(&self.src_mac);
        for (tpid, vid) in &self.vlans {
            out.extend_from_slice(&tpid.to_be_bytes());
            out.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                out.extend_from_slice(&ethertype::IPV4.to_be_bytes());
                let mut ip = [0u8; 20];
                ip[0] = 0x45;
                ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
                let frag = if self.fragment_offset == 0 {
                    0x4000
                } else {
                    self.fragment_offset & 0x1fff
                };
                ip[6..8].copy_from_slice(&frag.to_be_bytes()); // DF, or a fragment offset
                ip[8] = self.ttl;
                ip[9] = proto;
                ip[12..16].copy_from_slice(&src.octets());
                ip[16..20].copy_from_slice(&dst.octets());
                let sum = checksum(&[&ip]);
                ip[10..12].copy_from_slice(&sum.to_be_bytes());
                out.extend_from_slice(&ip);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                out.extend_from_slice(&ethertype::IPV6.to_be_bytes());
                let mut ext_headers = self.ipv6_ext.clone();
                if self.fragment_offset != 0 {
                    ext_headers.push(44);
                }
                let ext_len = 8 * ext_headers.len();
                let mut ip = [0u8; 40];
                ip[0] = 0x60;
                ip[4..6].copy_from_slice(&((ext_len + l4.len()) as u16).to_be_bytes());
                ip[6] = ext_headers.first().copied().unwrap_or(proto);
                ip[7] = self.ttl;
                ip[8..24].copy_from_slice(&src.octets());
                ip[24..40].copy_from_slice(&dst.octets());
                out.extend_from_slice(&ip);
                for (i, kind) in ext_headers.iter().enumerate() {
                    let next = ext_headers.get(i + 1).copied().unwrap_or(proto);
                    if *kind == 44 {
                        let off = (self.fragment_offset << 3).to_be_bytes();
                        out.extend_from_slice(&[next, 0, off[0], off[1], 0, 0, 0, 1]);
                    } else {
                        // Next header, length 0 (8 bytes), then a PadN option of 4 bytes.
                        out.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
                    }
                }
            }
            _ => unreachable!("families checked above"),
        }
        out.extend_from_slice(&l4);
        out
    }

    fn transport(&self, proto: u8) -> Vec<u8> {
        if self.fragment_offset != 0 {
            return self.payload.clone();
        }
        let mut seg = match self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                let mut h = vec![0u8; 20];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..8].copy_from_slice(&1u32.to_be_bytes()); // sequence number
                h[12] = 5 << 4;
                h[13] = flags;
                h[14..16].copy_from_slice(&64240u16.to_be_bytes()); // window
                h
            }
            L4::Udp { sport, dport } => {
                let mut h = vec![0u8; 8];
                h[0..2].copy_from_slice(&sport.to_be_bytes());
                h[2..4].copy_from_slice(&dport.to_be_bytes());
                h[4..6].copy_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                h
            }
            L4::Icmp { ty, code } => vec![ty, code, 0, 0, 0, 1, 0, 1],
            L4::Other(_) => Vec::new(),
        };
        let header_len = seg.len();
        seg.extend_from_slice(&self.payload);
        let csum_at = match self.l4 {
            L4::Tcp { .. } => Some(16),
            L4::Udp { .. } => Some(6),
            L4::Icmp { .. } => Some(2),
            L4::Other(_) => None,
        };
        if let Some(at) = csum_at.filter(|_| header_len > 0) {
            let pseudo = self.pseudo_header(proto, seg.len());
            // ICMPv4 has no pseudo-header; ICMPv6, TCP and UDP do.
            let sum = if proto == 1 {
                checksum(&[&seg])
            } else {
                checksum(&[&pseudo, &seg])
            };
            let sum = if sum == 0 && proto == 17 { 0xffff } else { sum };
            seg[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        seg
    }

    fn pseudo_header(&self, proto: u8, len: usize) -> Vec<u8> {
        let mut p = Vec::with_capacity(40);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&[0, proto]);
                p.extend_from_slice(&(len as u16).to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                p.extend_from_slice(&(len as u32).to_be_bytes());
                p.extend_from_slice(&[0, 0, 0, proto]);
            }
            _ => {}
        }
        p
    }
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`.
pub fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for byte in parts.iter().flat_map(|p| p.iter().copied()) {
        match odd.take() {
            Some(hi) => sum += u32::from(u16::from_be_bytes([hi, byte])),
            None => odd = Some(byte),
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_checksum_verifies() {
        let f = FrameSpec::new(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            L4::Udp { sport: 1, dport: 2 },
        )
        .build();
        assert_eq!(checksum(&[&f[14..34]]), 0);
        assert_eq!(f.len(), 14 + 20 + 8);
    }

    #[test]
    fn udp_checksum_verifies_with_pseudo_header() {
        let mut spec = FrameSpec::new(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            L4::Udp {
                sport: 5353,
                dport: 53,
            },
        );
        spec.payload = b"hello".to_vec();
        spec.ipv6_ext = vec![60];
        let f = spec.build();
        let seg = &f[14 + 40 + 8..];
        let pseudo = spec.pseudo_header(17, seg.len());
        assert_eq!(checksum(&[&pseudo, seg]), 0);
        assert_eq!(f[14 + 6], 60);
        assert_eq!(f[14 + 40], 17);
    }

    #[test]
    fn vlan_tags_precede_the_ethertype() {
        let mut spec = FrameSpec::new(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            L4::Icmp { ty: 8, code: 0 },
        );
        spec.vlans = vec![(ethertype::QINQ, 100), (ethertype::VLAN, 200)];
        let f = spec.build();
        assert_eq!(&f[12..14], &ethertype::QINQ.to_be_bytes());
        assert_eq!(&f[14..16], &100u16.to_be_bytes());
        assert_eq!(&f[16..18], &ethertype::VLAN.to_be_bytes());
        assert_eq!(&f[20..22], &ethertype::IPV4.to_be_bytes());
    }
}

/// What the XDP parser (`fluxgate_parse`, the code the program runs, built
/// for the host: userspace reads frames — pcap files for `explain` — exactly
/// as the kernel does) makes of `frame`: `Ok(Some(header))` for IPv4 / IPv6,
/// `Ok(None)` for a well-formed frame that is not IP, `Err(reason)` for a
/// malformed one.
pub fn header_of(
    frame: &[u8],
) -> Result<Option<fluxgate_ruleset::PacketHeader>, fluxgate_common::Malformed> {
    use fluxgate_common::table::{HOP_LIMIT_255, LATER_FRAGMENT, VLAN_NONE, word};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let mut key = [0; fluxgate_common::table::KEY_WORDS];
    if !fluxgate_parse::parse_frame(frame, 0, &mut key)? {
        return Ok(None);
    }
    let addr = |at: usize| -> IpAddr {
        if key[word::FAMILY] == 6 {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&key[at + i].to_be_bytes());
            }
            IpAddr::V6(Ipv6Addr::from(b))
        } else {
            IpAddr::V4(Ipv4Addr::from(key[at]))
        }
    };
    let proto = key[word::PROTO] as u8;
    let l4 = key[word::L4] == 1;
    let fragment = !l4 && key[word::SPORT] == LATER_FRAGMENT;
    let ports = l4 && (proto == 6 || proto == 17);
    let icmp = l4 && (proto == 1 || proto == 58);
    Ok(Some(fluxgate_ruleset::PacketHeader {
        src: addr(word::SRC),
        dst: addr(word::DST),
        proto,
        sport: ports.then_some(key[word::SPORT] as u16),
        dport: ports.then_some(key[word::DPORT] as u16),
        tcp_flags: (l4 && proto == 6).then_some(key[word::TCP_FLAGS] as u8),
        icmp_type: icmp.then_some(key[word::SPORT] as u8),
        icmp_code: icmp.then_some(key[word::DPORT] as u8),
        iif: None,
        vlan: (key[word::VLAN] != VLAN_NONE).then_some(key[word::VLAN] as u16),
        fragment,
        hop_limit_255: icmp && key[word::TCP_FLAGS] & HOP_LIMIT_255 != 0,
    }))
}

#[cfg(test)]
mod parse_back {
    use super::*;

    #[test]
    fn a_built_frame_parses_back_to_its_header() {
        for text in [
            "tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags S",
            "udp 2001:db8::1:53 -> 2001:db8::2:5353",
            "icmp 192.0.2.1 -> 192.0.2.2 type 8 code 0",
            "udp 192.0.2.1 -> 192.0.2.2 frag",
            "tcp [2001:db8::1] -> [2001:db8::2] frag",
            "47 192.0.2.1 -> 192.0.2.2 frag",
            "47 192.0.2.1 -> 192.0.2.2",
            "icmpv6 fe80::1 -> ff02::1:ff00:2 type 135 code 0 hlim 255",
        ] {
            let p: fluxgate_ruleset::PacketHeader = text.parse().expect("packet");
            let frame = FrameSpec::from_header(&p).expect("frame").build();
            assert_eq!(header_of(&frame), Ok(Some(p)), "{text}");
        }
    }

    /// Found by the `packet_parser` fuzz target: a non-first IPv6 fragment
    /// whose next header is an extension header's number (hop-by-hop, 0)
    /// parses to a header with that protocol; the frame built from the header
    /// must be such a fragment again, not an unterminated extension chain.
    #[test]
    fn an_extension_header_number_as_protocol_rebuilds_as_a_fragment() {
        for proto in [0u8, 43, 44, 51, 60, 135] {
            let mut spec = FrameSpec::new(
                "2001:db8::1".parse().unwrap(),
                "2001:db8::2".parse().unwrap(),
                L4::Other(proto),
            );
            spec.ipv6_ext = vec![0];
            spec.fragment_offset = 249;
            spec.payload = vec![0; 8];
            let p = header_of(&spec.build()).expect("well-formed").expect("IP");
            assert_eq!((p.proto, p.sport, p.icmp_type), (proto, None, None));
            let rebuilt = FrameSpec::from_header(&p).expect("frame").build();
            assert_eq!(header_of(&rebuilt), Ok(Some(p)), "protocol {proto}");
        }
    }
}
