//! Bounds-checked packet parsing for the XDP path, producing the classification
//! key (see `fluxgate_common::table::word`).
//!
//! The eBPF program (`fluxgate-ebpf`) runs [`parse`] on every packet; userspace
//! (`fluxgate-dataplane`'s `frame::header_of`, the tests) runs the very same
//! code on the host through [`parse_frame`], so a frame means the same thing
//! on both sides. `no_std`, no allocation, every function inlined into the
//! caller (the verifier sees one program).
//!
//! Field offsets are named constants. Key words are numeric (host order): range
//! cuts and range checks need numeric order, and a byte swap per field costs
//! less than anything a lookup could save.
//!
//! ```
//! use fluxgate_common::table::{KEY_WORDS, word};
//!
//! // A 14-byte Ethernet header carrying ARP: well formed, not IP.
//! let mut frame = [0u8; 60];
//! frame[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
//! let mut key = [0; KEY_WORDS];
//! assert_eq!(fluxgate_parse::parse_frame(&frame, 3, &mut key), Ok(false));
//! assert_eq!(key[word::IFINDEX], 3);
//! ```
#![no_std]

use fluxgate_common::{
    MAX_IPV6_EXT_HEADERS, MAX_VLAN_TAGS, Malformed,
    table::{HOP_LIMIT_255, KEY_WORDS, LATER_FRAGMENT, VLAN_NONE, word},
};

const ETH_HLEN: usize = 14;
const ETH_TYPE_OFF: usize = 12;
const VLAN_HLEN: usize = 4;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
/// Pre-standard QinQ outer tag still seen on some switches.
const ETH_P_QINQ_LEGACY: u16 = 0x9100;

const IPV4_MIN_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;

const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_FRAGMENT: u8 = 44;
const IPPROTO_AH: u8 = 51;
const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_MH: u8 = 135;

const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// Every ICMP and ICMPv6 message starts with 8 bytes (type, code, checksum, 4 more).
const ICMP_HLEN: usize = 8;

/// A cursor over `[pos, end)` that only advances after a bounds check.
///
/// `end` is the end of the frame (what the verifier checks packet reads
/// against); `limit` the end of the IP packet once its length is known
/// (IPv4 total length, IPv6 payload length). Bytes between them are
/// Ethernet padding, never a header: reads after the IP header check both.
struct Cursor {
    pos: usize,
    end: usize,
    limit: usize,
    /// [`HOP_LIMIT_255`] when the IPv6 hop limit is 255, else 0: kept for
    /// an ICMPv6 header (neighbour discovery), the only one that needs it.
    hop_limit_255: u32,
}

impl Cursor {
    /// Returns a pointer to `len` readable bytes at the cursor and advances past them.
    #[inline(always)]
    fn take(&mut self, len: usize) -> Option<*const u8> {
        let at = self.pos;
        if at + len > self.end {
            return None;
        }
        self.pos = at + len;
        Some(at as *const u8)
    }

    /// Sets the end of the IP packet (checked `≤ end` by the caller).
    ///
    /// Through a volatile read, so LLVM cannot carry "limit ≤ end" into
    /// [`Cursor::take_ip`]: knowing it, LLVM dropped the frame check there as
    /// implied by the limit check, and the verifier, which only trusts
    /// comparisons with the packet's end, refused the read that followed
    /// ("invalid access to packet"). One stack round trip per packet.
    #[inline(always)]
    fn set_limit(&mut self, limit: usize) {
        // SAFETY: reading a local that is initialised and aligned.
        self.limit = unsafe { core::ptr::read_volatile(&limit) };
    }

    /// [`Cursor::take`] within the IP packet: `len` bytes that are in the
    /// frame (the check the verifier sees) and inside the IP length.
    #[inline(always)]
    fn take_ip(&mut self, len: usize) -> Option<*const u8> {
        if self.pos + len > self.limit {
            return None;
        }
        self.take(len)
    }
}

/// What follows the IP header (and IPv6 extension headers).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rest {
    /// An unfragmented packet's L4 header.
    Whole,
    /// The L4 header of a first fragment (more fragments follow): a TCP
    /// header that does not fit in it is a tiny fragment (RFC 1858).
    FirstFragment,
    /// Nothing to parse: a non-first fragment.
    Later,
}

#[inline(always)]
fn byte(p: *const u8, off: usize) -> u8 {
    // SAFETY: callers only pass offsets inside a range that `Cursor::take` checked.
    unsafe { *p.add(off) }
}

#[inline(always)]
fn be16(p: *const u8, off: usize) -> u16 {
    u16::from_be_bytes([byte(p, off), byte(p, off + 1)])
}

#[inline(always)]
fn be32(p: *const u8, off: usize) -> u32 {
    u32::from_be_bytes([
        byte(p, off),
        byte(p, off + 1),
        byte(p, off + 2),
        byte(p, off + 3),
    ])
}

/// [`parse`] on a frame in memory: the host's way in, safe because a slice
/// is readable from its start to its end.
#[inline(always)]
pub fn parse_frame(
    frame: &[u8],
    ifindex: u32,
    key: &mut [u32; KEY_WORDS],
) -> Result<bool, Malformed> {
    let start = frame.as_ptr() as usize;
    // SAFETY: the bytes of a live slice are readable from its start to its end.
    unsafe { parse(start, start + frame.len(), ifindex, key) }
}

/// Parses the frame in `[start, end)` that arrived on `ifindex` into `key`,
/// which must come zeroed (only the words a packet has are written):
/// `Ok(true)` for an IPv4 or IPv6 packet, `Ok(false)` for a well-formed frame
/// whose payload is not IP (the key is then meaningless). Addresses, not a
/// slice, because that is what XDP hands a program (`data`, `data_end`) and
/// what the verifier tracks.
///
/// # Safety
///
/// Every byte of `[start, end)` must be readable for the duration of the
/// call (the parser reads within it only, after checking each header's
/// length against `end`). In the XDP program the kernel's packet bounds are
/// that range, and the verifier checks every access against them.
///
/// A plain `Result<bool, _>` on purpose: returning the key inside an enum
/// (`Ip([u32; 16])` / `NotIp`) let LLVM copy the payload's undefined bytes
/// on the non-IP path, a spill of an unset register the verifier refuses
/// ("R0 !read_ok") as soon as the code around it changes shape.
#[inline(always)]
pub unsafe fn parse(
    start: usize,
    end: usize,
    ifindex: u32,
    key: &mut [u32; KEY_WORDS],
) -> Result<bool, Malformed> {
    let mut cur = Cursor {
        pos: start,
        end,
        limit: end,
        hop_limit_255: 0,
    };
    let eth = cur.take(ETH_HLEN).ok_or(Malformed::EthernetTruncated)?;
    let mut ethertype = be16(eth, ETH_TYPE_OFF);
    key[word::VLAN] = VLAN_NONE;
    key[word::IFINDEX] = ifindex;
    let mut tags = 0;
    while tags < MAX_VLAN_TAGS + 1 {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD && ethertype != ETH_P_QINQ_LEGACY {
            break;
        }
        if tags == MAX_VLAN_TAGS {
            return Err(Malformed::VlanTag);
        }
        let tag = cur.take(VLAN_HLEN).ok_or(Malformed::VlanTag)?;
        if tags == 0 {
            key[word::VLAN] = u32::from(be16(tag, 0) & 0x0fff);
        }
        ethertype = be16(tag, 2);
        tags += 1;
    }
    let rest = match ethertype {
        ETH_P_IP => ipv4(&mut cur, key)?,
        ETH_P_IPV6 => ipv6(&mut cur, key)?,
        _ => return Ok(false),
    };
    if rest == Rest::Later {
        key[word::SPORT] = LATER_FRAGMENT;
    } else {
        l4(&mut cur, key, rest)?;
    }
    Ok(true)
}

/// The fragment a packet is, from its fragment offset (8-byte units) and
/// more-fragments flag; a TCP fragment at offset 1 is malformed: it can only
/// serve to overwrite the first fragment's flags (RFC 1858, section 3.2).
#[inline(always)]
fn fragment(offset: u16, more: bool, proto: u8) -> Result<Rest, Malformed> {
    if offset == 0 {
        return Ok(if more {
            Rest::FirstFragment
        } else {
            Rest::Whole
        });
    }
    if offset == 1 && proto == IPPROTO_TCP {
        return Err(Malformed::TcpFragmentOffset);
    }
    Ok(Rest::Later)
}

/// Parses an IPv4 header; returns what follows it.
#[inline(always)]
fn ipv4(cur: &mut Cursor, key: &mut [u32; KEY_WORDS]) -> Result<Rest, Malformed> {
    let ip_start = cur.pos;
    let ip = cur.take(IPV4_MIN_HLEN).ok_or(Malformed::Ipv4Header)?;
    let vihl = byte(ip, 0);
    if vihl >> 4 != 4 {
        return Err(Malformed::Ipv4Header);
    }
    let hlen = ((vihl & 0x0f) as usize) * 4;
    if hlen < IPV4_MIN_HLEN {
        return Err(Malformed::Ipv4Header);
    }
    // Options: only skipped, never interpreted.
    cur.take(hlen - IPV4_MIN_HLEN)
        .ok_or(Malformed::Ipv4Header)?;
    let total = be16(ip, 2) as usize;
    if total < hlen || ip_start + total > cur.end {
        return Err(Malformed::Ipv4Header);
    }
    cur.set_limit(ip_start + total);
    let proto = byte(ip, 9);
    key[word::FAMILY] = 4;
    key[word::PROTO] = u32::from(proto);
    key[word::SRC] = be32(ip, 12);
    key[word::DST] = be32(ip, 16);
    let frag = be16(ip, 6);
    fragment(frag & 0x1fff, frag & 0x2000 != 0, proto)
}

/// Parses an IPv6 header and its extension chain; returns what follows.
#[inline(always)]
fn ipv6(cur: &mut Cursor, key: &mut [u32; KEY_WORDS]) -> Result<Rest, Malformed> {
    let ip = cur.take(IPV6_HLEN).ok_or(Malformed::Ipv6Header)?;
    if byte(ip, 0) >> 4 != 6 {
        return Err(Malformed::Ipv6Header);
    }
    let payload = be16(ip, 4) as usize;
    if cur.pos + payload > cur.end {
        return Err(Malformed::Ipv6Header);
    }
    cur.set_limit(cur.pos + payload);
    cur.hop_limit_255 = u32::from(byte(ip, 7) == 255) * HOP_LIMIT_255;
    key[word::FAMILY] = 6;
    let mut i = 0;
    while i < 4 {
        key[word::SRC + i] = be32(ip, 8 + 4 * i);
        key[word::DST + i] = be32(ip, 24 + 4 * i);
        i += 1;
    }
    let mut next = byte(ip, 6);
    // Whole unless a fragment header says otherwise.
    let mut rest = Rest::Whole;
    let mut i = 0;
    while i < MAX_IPV6_EXT_HEADERS + 1 {
        let len = match next {
            IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_DSTOPTS | IPPROTO_MH => {
                let h = cur.take_ip(2).ok_or(Malformed::Ipv6ExtensionChain)?;
                next = byte(h, 0);
                (byte(h, 1) as usize + 1) * 8
            }
            IPPROTO_AH => {
                let h = cur.take_ip(2).ok_or(Malformed::Ipv6ExtensionChain)?;
                next = byte(h, 0);
                (byte(h, 1) as usize + 2) * 4
            }
            IPPROTO_FRAGMENT => {
                let h = cur.take_ip(8).ok_or(Malformed::Ipv6ExtensionChain)?;
                next = byte(h, 0);
                let frag = be16(h, 2);
                rest = fragment(frag >> 3, frag & 1 != 0, next)?;
                if rest == Rest::Later {
                    // A non-first fragment: no upper-layer header to look at.
                    key[word::PROTO] = u32::from(next);
                    return Ok(rest);
                }
                0
            }
            upper => {
                key[word::PROTO] = u32::from(upper);
                return Ok(rest);
            }
        };
        if i == MAX_IPV6_EXT_HEADERS {
            return Err(Malformed::Ipv6ExtensionChain);
        }
        if len > 2 {
            cur.take_ip(len - 2).ok_or(Malformed::Ipv6ExtensionChain)?;
        }
        i += 1;
    }
    Err(Malformed::Ipv6ExtensionChain)
}

/// Parses the TCP / UDP / ICMP header of a first (or only) fragment, within
/// the IP packet (never from the Ethernet padding after it).
#[inline(always)]
fn l4(cur: &mut Cursor, key: &mut [u32; KEY_WORDS], rest: Rest) -> Result<(), Malformed> {
    let proto = key[word::PROTO] as u8;
    match (proto, key[word::FAMILY]) {
        (IPPROTO_TCP, _) => {
            // A first fragment too short for the whole TCP header (flags
            // included) is the tiny-fragment attack of RFC 1858: its flags
            // would come from the next fragment, which no rule sees.
            let short = if rest == Rest::FirstFragment {
                Malformed::TcpTinyFragment
            } else {
                Malformed::TcpHeader
            };
            let tcp = cur.take_ip(TCP_MIN_HLEN).ok_or(short)?;
            let doff = ((byte(tcp, 12) >> 4) as usize) * 4;
            if doff < TCP_MIN_HLEN {
                return Err(Malformed::TcpHeader);
            }
            cur.take_ip(doff - TCP_MIN_HLEN).ok_or(short)?;
            key[word::SPORT] = u32::from(be16(tcp, 0));
            key[word::DPORT] = u32::from(be16(tcp, 2));
            key[word::TCP_FLAGS] = u32::from(byte(tcp, 13));
        }
        (IPPROTO_UDP, _) => {
            let udp = cur.take_ip(UDP_HLEN).ok_or(Malformed::UdpHeader)?;
            key[word::SPORT] = u32::from(be16(udp, 0));
            key[word::DPORT] = u32::from(be16(udp, 2));
        }
        (IPPROTO_ICMP, 4) | (IPPROTO_ICMPV6, 6) => {
            let icmp = cur.take_ip(ICMP_HLEN).ok_or(Malformed::IcmpHeader)?;
            // Type and code take the place of the ports.
            key[word::SPORT] = u32::from(byte(icmp, 0));
            key[word::DPORT] = u32::from(byte(icmp, 1));
            key[word::TCP_FLAGS] = cur.hop_limit_255;
        }
        _ => return Ok(()),
    }
    key[word::L4] = 1;
    Ok(())
}
