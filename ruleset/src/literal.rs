//! Literals shared by the rule parser, the packet text form and validation:
//! identifiers, numbers, prefixes, port ranges, protocols, TCP flags.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::error::{ErrorKind, excerpt};
use crate::model::{PortRange, Proto, TcpFlags};

/// Flag letters in bit order (bit 0 = FIN … bit 7 = CWR), as printed.
pub const FLAG_LETTERS: &[u8; 8] = b"FSRPAUEC";

/// Checks a set or tenant identifier: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn check_ident(name: &str) -> Result<(), String> {
    let b = name.as_bytes();
    let ok_first = b
        .first()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok_rest = b
        .iter()
        .all(|&c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
    if ok_first && ok_rest && b.len() <= 63 {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid name: use 1 to 63 characters from a-z, 0-9, `_`, `-`, \
             starting with a letter or digit",
            excerpt(name)
        ))
    }
}

/// Parses a decimal number (no sign, at most 10 digits).
pub(crate) fn parse_u32(w: &str) -> Option<u32> {
    if w.is_empty() || w.len() > 10 || !w.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    w.parse().ok()
}

/// Parses `addr` or `addr/len`. Errors carry a byte offset for the caret, if narrower.
pub(crate) fn parse_prefix(w: &str) -> Result<IpNet, (ErrorKind, String, Option<usize>)> {
    let (a, len) = match w.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (w, None),
    };
    let addr: IpAddr = a.parse().map_err(|_| {
        (
            ErrorKind::Syntax,
            format!("`{}` is not an IPv4 or IPv6 address", excerpt(a)),
            None,
        )
    })?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => {
            let off = Some(a.len() + 1);
            let n = parse_u32(l).ok_or_else(|| {
                (
                    ErrorKind::Syntax,
                    format!("`{}` is not a prefix length", excerpt(l)),
                    off,
                )
            })?;
            if n > max {
                return Err((
                    ErrorKind::PrefixTooLong,
                    format!("prefix length /{n} is longer than the address ({max} bits)"),
                    off,
                ));
            }
            n
        }
    };
    let len = u8::try_from(len).unwrap_or(u8::MAX);
    IpNet::new(addr, len).map_err(|_| (ErrorKind::PrefixTooLong, "bad prefix length".into(), None))
}

/// Parses `p` or `lo-hi`.
pub(crate) fn parse_port_range(w: &str) -> Result<PortRange, (ErrorKind, String)> {
    let one = |s: &str| -> Result<u16, (ErrorKind, String)> {
        let n = parse_u32(s).ok_or_else(|| {
            (
                ErrorKind::Syntax,
                format!("`{}` is not a port number", excerpt(s)),
            )
        })?;
        u16::try_from(n).map_err(|_| {
            (
                ErrorKind::NumberOutOfRange,
                format!("port {n} is above 65535"),
            )
        })
    };
    let r = match w.split_once('-') {
        Some((lo, hi)) => PortRange {
            lo: one(lo)?,
            hi: one(hi)?,
        },
        None => PortRange::single(one(w)?),
    };
    if r.lo > r.hi {
        return Err((
            ErrorKind::PortRangeReversed,
            format!(
                "port range {}-{} is empty: the first port must not exceed the last",
                r.lo, r.hi
            ),
        ));
    }
    Ok(r)
}

/// Parses a protocol name or number.
pub(crate) fn parse_proto(w: &str) -> Result<Proto, (ErrorKind, String)> {
    Ok(match w {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        "icmpv6" => Proto::Icmpv6,
        _ => {
            let n = parse_u32(w).ok_or_else(|| {
                (
                    ErrorKind::Syntax,
                    format!(
                        "unknown protocol `{}` (tcp, udp, icmp, icmpv6 or 0-255)",
                        excerpt(w)
                    ),
                )
            })?;
            Proto::from_number(u8::try_from(n).map_err(|_| {
                (
                    ErrorKind::NumberOutOfRange,
                    format!("protocol {n} is above 255"),
                )
            })?)
        }
    })
}

/// Parses flag letters `FSRPAUEC`; with `with_mask`, `VALUE/MASK` (a bare value means
/// "these flags set, others don't care"). Returns `(mask, value)`.
pub(crate) fn parse_flags(w: &str, with_mask: bool) -> Result<TcpFlags, String> {
    let bits = |s: &str| -> Result<u8, String> {
        let mut v = 0u8;
        for c in s.bytes() {
            let i = FLAG_LETTERS.iter().position(|&f| f == c).ok_or_else(|| {
                format!(
                    "`{}` is not a TCP flag (use F S R P A U E C)",
                    excerpt(&char::from(c).to_string())
                )
            })?;
            v |= 1 << i;
        }
        Ok(v)
    };
    let (value, mask) = match w.split_once('/') {
        Some((v, m)) if with_mask => (bits(v)?, bits(m)?),
        Some(_) => return Err("a packet's flags take no mask".into()),
        None => {
            let v = bits(w)?;
            (v, v)
        }
    };
    if value & !mask != 0 {
        return Err(format!(
            "flags `{}` require a flag outside the mask, so never match",
            excerpt(w)
        ));
    }
    if with_mask && mask == 0 {
        return Err("an empty flag mask matches everything; leave `flags` out instead".into());
    }
    Ok(TcpFlags { mask, value })
}
