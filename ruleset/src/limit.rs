//! Rate limits as written: a rule's `limit rate over …`, a tenant's `ceiling`,
//! and how each becomes the token bucket every engine shares
//! ([`fluxgate_common::limit::Bucket`]).
//!
//! ```text
//! limit   := "limit" "rate" "over" RATE [ "burst" N UNIT ] [ "per" "saddr/"V4LEN["/"V6LEN] ]
//! ceiling := "ceiling" RATE [ "burst" N UNIT ] [ RATE [ "burst" N UNIT ] ]   (one packet rate,
//!                                                                             one byte rate at most)
//! RATE    := N "/" PER                       packets: `2000/second`
//!          | N BYTES "/" PER                 bytes: `20 mbytes/second`, `512kbytes/second`
//! PER     := second | minute | hour | day
//! BYTES   := bytes | kbytes | mbytes | gbytes (×1024 each)
//! UNIT    := packets | BYTES                 the rate's kind: packets for a packet rate, bytes for a byte rate
//! ```
//!
//! `over` is required: the rule applies only to packets over the rate (as
//! nft's `limit rate over`); a packet within the rate takes a token and goes
//! on to the next rule, as if the rule were not there. The default burst is 5
//! packets (nft's), or one period's worth of bytes for a byte rate.

use core::fmt;

mod check;
pub(crate) use check::check_limits;

use fluxgate_common::limit::{Bucket, MAX_UNITS, NS_PER_SEC};

/// Most packets per second a rate may allow: more than any link carries.
pub const MAX_PACKETS_PER_SEC: u64 = 1_000_000_000;
/// Most bytes per second a rate may allow (1 TiB/s).
pub const MAX_BYTES_PER_SEC: u64 = 1 << 40;
/// Default burst of a packet rate (nft's).
pub const DEFAULT_BURST_PACKETS: u64 = 5;
/// Most rules with a limit in one scope (the gateway, or one tenant). The
/// XDP program goes on past a rule whose limit a packet is within by a tail
/// call, and the kernel allows 33 per packet: one for the dispatcher, at
/// most 15 for the gateway's limits and 15 for the tenant's.
pub const MAX_LIMITS_PER_SCOPE: usize = 15;
/// Entries of the per-source bucket map when gateway.fg sets no `meter-size`.
pub const DEFAULT_METER_SIZE: u64 = 65_536;
/// Most entries `meter-size` may ask for (each is about 100 bytes of kernel memory).
pub const MAX_METER_SIZE: u64 = 1 << 24;
/// Default IPv6 prefix length of a per-source limit (a host's usual allocation).
pub const DEFAULT_PER_SOURCE_V6: u8 = 64;

/// The period a rate is written per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Per {
    /// `/second`
    Second,
    /// `/minute`
    Minute,
    /// `/hour`
    Hour,
    /// `/day`
    Day,
}

impl Per {
    /// Nanoseconds in the period.
    pub const fn ns(self) -> u64 {
        NS_PER_SEC
            * match self {
                Per::Second => 1,
                Per::Minute => 60,
                Per::Hour => 3600,
                Per::Day => 86_400,
            }
    }

    fn name(self) -> &'static str {
        match self {
            Per::Second => "second",
            Per::Minute => "minute",
            Per::Hour => "hour",
            Per::Day => "day",
        }
    }

    fn parse(s: &str) -> Option<Per> {
        Some(match s {
            "second" => Per::Second,
            "minute" => Per::Minute,
            "hour" => Per::Hour,
            "day" => Per::Day,
            _ => return None,
        })
    }
}

/// A rate: `amount` packets, or bytes, per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Units per period (bytes already scaled: `20 mbytes` is 20 × 2^20).
    pub amount: u64,
    /// True for a byte rate.
    pub bytes: bool,
    /// The period.
    pub per: Per,
}

impl Rate {
    /// `amount · other.period ≤ other.amount · period` (128-bit): whether this
    /// rate allows at most what `other` allows (same kind assumed).
    pub fn at_most(&self, other: &Rate) -> bool {
        u128::from(self.amount) * u128::from(other.per.ns())
            <= u128::from(other.amount) * u128::from(self.per.ns())
    }

    /// Units per second, rounded down.
    pub fn per_second(&self) -> u64 {
        let r = u128::from(self.amount) * u128::from(NS_PER_SEC) / u128::from(self.per.ns());
        u64::try_from(r).unwrap_or(u64::MAX)
    }

    /// Why the rate is refused (0, or more than [`MAX_PACKETS_PER_SEC`] /
    /// [`MAX_BYTES_PER_SEC`]).
    pub fn check(&self) -> Result<(), String> {
        let max = if self.bytes {
            MAX_BYTES_PER_SEC
        } else {
            MAX_PACKETS_PER_SEC
        };
        let kind = if self.bytes { "bytes" } else { "packets" };
        if self.amount == 0 {
            return Err("a rate of 0 would limit every packet; use `drop` instead".into());
        }
        // amount/period > max/second  ⇔  amount · 1s > max · period
        if u128::from(self.amount) * u128::from(NS_PER_SEC)
            > u128::from(max) * u128::from(self.per.ns())
        {
            return Err(format!("a rate may allow at most {max} {kind} a second"));
        }
        Ok(())
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.bytes {
            write!(f, "{}/{}", bytes_text(self.amount), self.per.name())
        } else {
            write!(f, "{}/{}", self.amount, self.per.name())
        }
    }
}

/// `N` in the largest unit that divides it: `20 mbytes`, `1536 bytes`.
fn bytes_text(n: u64) -> String {
    for (shift, unit) in [(30, "gbytes"), (20, "mbytes"), (10, "kbytes")] {
        if n >= 1 << shift && n.is_multiple_of(1 << shift) {
            return format!("{} {unit}", n >> shift);
        }
    }
    format!("{n} bytes")
}

/// What a per-source limit keys its buckets by: the source address's first
/// `v4` (IPv4) or `v6` (IPv6) bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PerSource {
    /// IPv4 prefix length, 1–32.
    pub v4: u8,
    /// IPv6 prefix length, 1–128.
    pub v6: u8,
}

/// A rate and the burst it allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    /// The rate.
    pub rate: Rate,
    /// Units the bucket holds (`burst N UNIT`); `None`: the default
    /// ([`Limit::burst_units`]).
    pub burst: Option<u64>,
    /// `per saddr/N`: one bucket per source (prefix) instead of one for the rule.
    pub per_source: Option<PerSource>,
}

impl Limit {
    /// The burst in units: as written, or 5 packets, or one period of bytes.
    pub fn burst_units(&self) -> u64 {
        self.burst.unwrap_or(if self.rate.bytes {
            self.rate.amount
        } else {
            DEFAULT_BURST_PACKETS
        })
    }

    /// The token bucket every engine runs; `None` when the values are out of
    /// the bounds [`Limit::check`] reports.
    pub fn bucket(&self) -> Option<Bucket> {
        Bucket::new(
            self.rate.amount,
            self.rate.per.ns(),
            self.burst_units(),
            self.rate.bytes,
        )
    }

    /// The kernel's entry for a counter slot a new rule with this limit
    /// takes (`maps::BUCKETS`): a full bucket, per source
    /// ([`fluxgate_common::limit::per_source`]) for `per saddr`, with `epoch`
    /// in the keys of its source buckets (a value the slot never had: the
    /// apply generation). `None` as for [`Limit::bucket`].
    pub fn slot(&self, epoch: u32) -> Option<fluxgate_common::limit::LimitSlot> {
        Some(fluxgate_common::limit::LimitSlot {
            bucket: self.bucket()?,
            tat: 0,
            source: self
                .per_source
                .map_or(0, |p| fluxgate_common::limit::per_source(p.v4, p.v6)),
            epoch,
        })
    }

    /// Why the limit is refused: its rate ([`Rate::check`]), a burst of 0 or
    /// over 2^40 units, or a bucket whose credit would not fit the clock.
    pub fn check(&self) -> Result<(), String> {
        self.rate.check()?;
        match self.burst {
            Some(0) => return Err("a burst of 0 would limit every packet".into()),
            Some(b) if b > MAX_UNITS => {
                return Err(format!("a burst may be at most {MAX_UNITS} units"));
            }
            _ => {}
        }
        if self.bucket().is_none() {
            return Err("this burst takes longer than a century to refill at this rate".into());
        }
        Ok(())
    }

    /// Writes ` burst N UNIT` and ` per saddr/N[/M]` as given.
    fn write_tail(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(b) = self.burst {
            if self.rate.bytes {
                write!(f, " burst {}", bytes_text(b))?;
            } else {
                write!(f, " burst {b} packets")?;
            }
        }
        if let Some(p) = self.per_source {
            write!(f, " per saddr/{}", p.v4)?;
            if p.v6 != DEFAULT_PER_SOURCE_V6 {
                write!(f, "/{}", p.v6)?;
            }
        }
        Ok(())
    }
}

/// Prints `limit rate over RATE [burst …] [per …]`.
impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "limit rate over {}", self.rate)?;
        self.write_tail(f)
    }
}

/// A tenant's `ceiling`: the most packets and/or bytes all of its traffic may
/// use, checked before its rules (after the gateway's). Packets over it are
/// dropped and counted as `limited` on the tenant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Ceiling {
    /// Packets.
    pub packets: Option<Limit>,
    /// Bytes.
    pub bytes: Option<Limit>,
}

impl Ceiling {
    /// True when neither rate is set.
    pub fn is_empty(&self) -> bool {
        self.packets.is_none() && self.bytes.is_none()
    }

    /// The limits set, packets first.
    pub fn limits(&self) -> impl Iterator<Item = &Limit> {
        self.packets.iter().chain(self.bytes.iter())
    }

    /// The stricter of two ceilings, rate by rate (a rate set in only one is
    /// taken from it): what applies when the operator caps a tenant.
    pub fn min(&self, other: &Ceiling) -> Ceiling {
        let pick = |a: Option<Limit>, b: Option<Limit>| match (a, b) {
            (Some(a), Some(b)) => Some(if a.rate.at_most(&b.rate) { a } else { b }),
            (a, b) => a.or(b),
        };
        Ceiling {
            packets: pick(self.packets, other.packets),
            bytes: pick(self.bytes, other.bytes),
        }
    }
}

/// Occurrence numbers of the rules a ceiling compiles into (far past any
/// count of identical rules), packets then bytes.
const CEILING_OCCURRENCE: u32 = u32::MAX - 7;

impl Ceiling {
    /// The rules the ceiling of `tenant` compiles into, before the tenant's
    /// own: `limit rate over R drop` matching every packet of the tenant,
    /// packets first, at position 0 (a counter slot at position 0 with a
    /// rule is a ceiling, one without is the default). Their ids hash the
    /// rates, so an unchanged ceiling keeps its buckets across swaps and a
    /// changed one starts full, like any rule.
    pub fn rules(&self, tenant: &str) -> Vec<crate::Rule> {
        let m = crate::Match::default();
        self.limits()
            .zip(CEILING_OCCURRENCE..)
            .map(|(l, occurrence)| crate::Rule {
                id: crate::RuleId::of_limited(tenant, &m, Some(l), crate::Action::Drop, occurrence),
                position: 0,
                matches: m.clone(),
                action: crate::Action::Drop,
                limit: Some(*l),
                spans: crate::RuleSpans::default(),
            })
            .collect()
    }
}

/// Prints `ceiling RATE [burst …] [RATE [burst …]]` (nothing when empty).
impl fmt::Display for Ceiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return Ok(());
        }
        f.write_str("ceiling")?;
        for l in self.limits() {
            write!(f, " {}", l.rate)?;
            l.write_tail(f)?;
        }
        Ok(())
    }
}

/// Parses a rate from one word (`2000/second`, `20mbytes/second`) or two
/// (`20`, `mbytes/second`: give the second as `unit`). `Err((message, on_unit))`.
pub(crate) fn parse_rate(number: &str, unit: Option<&str>) -> Result<Rate, (String, bool)> {
    let joined;
    let text = match unit {
        Some(u) => {
            joined = format!("{number}{u}");
            joined.as_str()
        }
        None => number,
    };
    let bad = |on_unit| {
        Err((
            format!(
                "expected a rate like `2000/second` or `20 mbytes/second`, found `{}`",
                crate::error::excerpt(text)
            ),
            on_unit,
        ))
    };
    let Some((count, per)) = text.split_once('/') else {
        return bad(false);
    };
    let Some(per) = Per::parse(per) else {
        return bad(unit.is_some());
    };
    let digits = count.bytes().take_while(u8::is_ascii_digit).count();
    let (n, scale) = count.split_at(digits);
    let (scale, bytes) = match scale {
        "" => (1, false),
        s => match byte_scale(s) {
            Some(k) => (k, true),
            None => return bad(unit.is_some()),
        },
    };
    let Some(amount) = n.parse::<u64>().ok().and_then(|n| n.checked_mul(scale)) else {
        return Err((
            format!("the rate `{}` is out of range", crate::error::excerpt(text)),
            false,
        ));
    };
    Ok(Rate { amount, bytes, per })
}

/// `bytes` 1, `kbytes` 2^10, `mbytes` 2^20, `gbytes` 2^30.
pub(crate) fn byte_scale(unit: &str) -> Option<u64> {
    Some(match unit {
        "bytes" => 1,
        "kbytes" => 1 << 10,
        "mbytes" => 1 << 20,
        "gbytes" => 1 << 30,
        _ => return None,
    })
}

/// Parses `saddr/N` or `saddr/N/M` after `per`.
pub(crate) fn parse_per_source(w: &str) -> Result<PerSource, String> {
    let err = || {
        format!(
            "expected `saddr/N` (N: IPv4 prefix length 1–32) or `saddr/N/M` (M: IPv6 length \
             1–128, default {DEFAULT_PER_SOURCE_V6}), found `{}`",
            crate::error::excerpt(w)
        )
    };
    let rest = w.strip_prefix("saddr/").ok_or_else(err)?;
    let mut parts = rest.split('/');
    let num = |s: Option<&str>, max: u8| -> Result<Option<u8>, String> {
        match s {
            None => Ok(None),
            Some(s) => match s.parse::<u8>() {
                Ok(n) if (1..=max).contains(&n) && s.bytes().all(|c| c.is_ascii_digit()) => {
                    Ok(Some(n))
                }
                _ => Err(err()),
            },
        }
    };
    let v4 = num(parts.next(), 32)?.ok_or_else(err)?;
    let v6 = num(parts.next(), 128)?.unwrap_or(DEFAULT_PER_SOURCE_V6);
    if parts.next().is_some() {
        return Err(err());
    }
    Ok(PerSource { v4, v6 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        let r = parse_rate("2000/second", None).unwrap();
        assert_eq!((r.amount, r.bytes, r.per), (2000, false, Per::Second));
        let r = parse_rate("20", Some("mbytes/second")).unwrap();
        assert_eq!((r.amount, r.bytes), (20 << 20, true));
        assert_eq!(r.to_string(), "20 mbytes/second");
        assert!(parse_rate("20/fortnight", None).is_err());
        assert!(parse_rate("20", Some("furlongs/second")).unwrap_err().1);
        assert!(parse_rate("0/second", None).unwrap().check().is_err());
        assert!(
            parse_rate("2000000000/second", None)
                .unwrap()
                .check()
                .is_err()
        );
        assert!(
            parse_rate("2000000000/minute", None)
                .unwrap()
                .check()
                .is_ok()
        );
        let small = parse_rate("59/minute", None).unwrap();
        assert!(small.at_most(&parse_rate("1/second", None).unwrap()));
        assert!(
            !parse_rate("61/minute", None)
                .unwrap()
                .at_most(&parse_rate("1/second", None).unwrap())
        );
    }

    #[test]
    fn per_source() {
        assert_eq!(
            parse_per_source("saddr/32").unwrap(),
            PerSource { v4: 32, v6: 64 }
        );
        assert_eq!(
            parse_per_source("saddr/24/48").unwrap(),
            PerSource { v4: 24, v6: 48 }
        );
        for bad in [
            "saddr/0",
            "saddr/33",
            "daddr/32",
            "saddr/32/129",
            "saddr/+3",
            "saddr/1/2/3",
        ] {
            assert!(parse_per_source(bad).is_err(), "{bad}");
        }
    }
}
