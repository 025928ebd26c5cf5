//! Token buckets, written once for every engine: the reference classifier, the
//! userspace classifier and the XDP program all decide with [`Bucket::take`].
//!
//! A bucket is kept as one `u64`, its *theoretical arrival time* (GCRA, the
//! virtual-scheduling form of a token bucket, as in ATM policing and
//! `tc police`): the time, in nanoseconds of the clock the engine uses
//! (`bpf_ktime_get_ns` in the kernel, the packet's timestamp in the reference),
//! at which the bucket would be full again. A packet costing `c` units takes
//! `c · period / amount` nanoseconds of credit; it conforms when the bucket,
//! after taking it, is no more than `burst` units behind:
//!
//! ```text
//! tat' = max(tat, now) + cost_ns
//! conforms  ⇔  tat' − now ≤ tau_ns        (tau_ns = burst · period / amount)
//! ```
//!
//! A conforming packet stores `tat'`; a packet over the limit leaves the state
//! as it was (it took no tokens). A new bucket (`tat = 0`) is full: `burst`
//! units conform at once. One word of state means the kernel updates it with a
//! single compare-and-exchange, so every CPU shares one bucket (see
//! [`Bucket::take`] for the arithmetic's bounds).

/// Nanoseconds per second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// Longest period a rate may be written per (a day), in nanoseconds.
pub const MAX_PERIOD_NS: u64 = 86_400 * NS_PER_SEC;

/// Most units (packets or bytes) a rate or burst may name: 2^40 (a terabyte,
/// or a trillion packets). With [`MAX_PERIOD_NS`] and packets of at most
/// [`MAX_COST_UNITS`] bytes every product below fits in 64 bits.
pub const MAX_UNITS: u64 = 1 << 40;

/// Most units one packet may cost (bytes of the largest frame counted).
pub const MAX_COST_UNITS: u64 = 65_535;

/// A bucket's parameters, precomputed for the packet path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// `amount` units refill every `period_ns` nanoseconds.
    pub amount: u64,
    /// See [`Bucket::amount`].
    pub period_ns: u64,
    /// The bucket holds at most this many nanoseconds of credit
    /// (`burst · period_ns / amount`).
    pub tau_ns: u64,
    /// 1 when a packet costs its length in bytes, 0 when it costs one packet.
    pub bytes: u32,
    /// Padding (zero).
    pub _pad: u32,
    /// Nanoseconds of credit one packet takes (`period_ns / amount`, at
    /// least 1), for a packet rate: precomputed, so the packet path divides
    /// only for byte rates.
    pub packet_ns: u64,
}

impl Bucket {
    /// A bucket refilling `amount` units every `period_ns` and holding `burst`
    /// units; `None` when a value is 0 or out of bounds ([`MAX_UNITS`],
    /// [`MAX_PERIOD_NS`]) or `burst` cannot hold one packet of the largest cost.
    pub const fn new(amount: u64, period_ns: u64, burst: u64, bytes: bool) -> Option<Bucket> {
        if amount == 0
            || amount > MAX_UNITS
            || period_ns == 0
            || period_ns > MAX_PERIOD_NS
            || burst == 0
            || burst > MAX_UNITS
        {
            return None;
        }
        // burst · period: ≤ 2^40 · 2^47 overflows 64 bits, so in 128.
        let tau = (burst as u128 * period_ns as u128) / amount as u128;
        if tau > u64::MAX as u128 / 4 {
            return None;
        }
        let per_packet = period_ns / amount;
        Some(Bucket {
            amount,
            period_ns,
            tau_ns: tau as u64,
            bytes: bytes as u32,
            _pad: 0,
            packet_ns: if per_packet == 0 { 1 } else { per_packet },
        })
    }

    /// Nanoseconds of credit a packet of `len` bytes takes: one unit, or
    /// `len` (at most [`MAX_COST_UNITS`]) for a byte rate. At least 1.
    #[inline(always)]
    pub const fn cost_ns(&self, len: u64) -> u64 {
        if self.bytes == 0 {
            return if self.packet_ns == 0 {
                1
            } else {
                self.packet_ns
            };
        }
        let units = if len > MAX_COST_UNITS {
            MAX_COST_UNITS
        } else {
            len
        };
        // units ≤ 2^16, period ≤ 2^47: the product fits. amount ≥ 1.
        let c = units * self.period_ns / if self.amount == 0 { 1 } else { self.amount };
        if c == 0 { 1 } else { c }
    }

    /// The decision for one packet of `len` bytes at `now_ns` against a bucket
    /// whose state is `tat`: `Some(new_tat)` when it conforms (store it),
    /// `None` when it is over the limit (leave the state).
    ///
    /// A clock that went backwards (`now < tat − tau`, never with a monotonic
    /// clock) is treated as `now`; `tat` past `now + tau` cannot be stored.
    #[inline(always)]
    pub const fn take(&self, tat: u64, now_ns: u64, len: u64) -> Option<u64> {
        let start = if tat > now_ns { tat } else { now_ns };
        let next = start.saturating_add(self.cost_ns(len));
        if next - now_ns <= self.tau_ns {
            Some(next)
        } else {
            None
        }
    }
}

/// One entry of the bucket map (`maps::BUCKETS`): the parameters of the
/// rule's bucket and its state, which every CPU updates with one
/// compare-and-exchange.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimitSlot {
    /// The bucket's parameters (all zero: no limit in this slot).
    pub bucket: Bucket,
    /// Theoretical arrival time, ns (0: full). Unused by a per-source limit
    /// (its states are in `maps::SOURCE_BUCKETS`).
    pub tat: u64,
    /// 0: one bucket for every source; else [`per_source`]`(v4, v6)`: a
    /// bucket per source prefix, in `maps::SOURCE_BUCKETS`.
    pub source: u32,
    /// Written with a fresh bucket (the apply generation): part of every
    /// per-source key of the slot, so a slot handed to a new rule never finds
    /// the source buckets an earlier rule left in the LRU map.
    pub epoch: u32,
}

/// [`LimitSlot::source`] of a limit with a bucket per IPv4 `/v4` and per
/// IPv6 `/v6` source prefix (v4 1–32, v6 1–128; bit 16 marks it set).
pub const fn per_source(v4: u8, v6: u8) -> u32 {
    (1 << 16) | ((v6 as u32) << 8) | v4 as u32
}

/// The key of one per-source bucket (`maps::SOURCE_BUCKETS`, an LRU hash
/// whose values are the bucket's theoretical arrival time, a `u64`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceKey {
    /// The rule's counter slot.
    pub slot: u32,
    /// The slot's [`LimitSlot::epoch`].
    pub epoch: u32,
    /// 4 or 6.
    pub family: u32,
    /// The source address truncated to the limit's prefix length, in the
    /// classification key's layout (`table::word::SRC`: IPv4 in word 0, IPv6
    /// as four big-endian words, most significant first; host order).
    pub addr: [u32; 4],
}

/// The mask of word `i` (0–3) of an address truncated to `len` bits.
#[inline(always)]
const fn word_mask(len: u32, i: u32) -> u32 {
    let first = i * 32;
    if len <= first {
        0
    } else if len >= first + 32 {
        u32::MAX
    } else {
        u32::MAX << (32 - (len - first))
    }
}

impl SourceKey {
    /// The key of the bucket of source `src` (key words `SRC..SRC + 4`) of
    /// family `family` (4 or 6) for slot `slot` whose [`LimitSlot::source`]
    /// is `source` and epoch `epoch`: the address truncated to the prefix
    /// length of its family (as `ipnet`'s `trunc` does in userspace).
    #[inline(always)]
    pub const fn of(slot: u32, epoch: u32, source: u32, family: u32, src: [u32; 4]) -> SourceKey {
        let len = if family == 4 {
            source & 0xff
        } else {
            (source >> 8) & 0xff
        };
        SourceKey {
            slot,
            epoch,
            family,
            addr: [
                src[0] & word_mask(len, 0),
                src[1] & word_mask(len, 1),
                src[2] & word_mask(len, 2),
                src[3] & word_mask(len, 3),
            ],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_bucket_lets_its_burst_through_then_the_rate() {
        // 10 packets a second, burst 3.
        let b = Bucket::new(10, NS_PER_SEC, 3, false).unwrap();
        let mut tat = 0;
        let t0 = 5 * NS_PER_SEC;
        let mut passed = 0;
        for _ in 0..10 {
            if let Some(t) = b.take(tat, t0, 64) {
                tat = t;
                passed += 1;
            }
        }
        assert_eq!(passed, 3);
        // 100 ms later one more token.
        assert!(b.take(tat, t0 + NS_PER_SEC / 10 - 1, 64).is_none());
        assert!(b.take(tat, t0 + NS_PER_SEC / 10, 64).is_some());
    }

    #[test]
    fn a_steady_flood_gets_the_rate() {
        let b = Bucket::new(1000, NS_PER_SEC, 1, false).unwrap();
        let (mut tat, mut passed) = (0, 0u64);
        // one packet every 10 µs for 10 s: 1M packets.
        for i in 0..1_000_000u64 {
            if let Some(t) = b.take(tat, NS_PER_SEC + i * 10_000, 64) {
                tat = t;
                passed += 1;
            }
        }
        assert!((9_999..=10_001).contains(&passed), "{passed}");
    }

    #[test]
    fn byte_rates_count_bytes() {
        // 1500 bytes a second, burst 3000 bytes: two full frames at once.
        let b = Bucket::new(1500, NS_PER_SEC, 3000, true).unwrap();
        let t = b.take(0, NS_PER_SEC, 1500).unwrap();
        let t = b.take(t, NS_PER_SEC, 1500).unwrap();
        assert!(b.take(t, NS_PER_SEC, 1).is_none());
    }

    #[test]
    fn source_keys_truncate_like_prefixes() {
        let v4 = SourceKey::of(3, 7, per_source(24, 64), 4, [0x0a01_02ff, 0, 0, 0]);
        assert_eq!(v4.addr, [0x0a01_0200, 0, 0, 0]);
        let v6 = SourceKey::of(
            3,
            7,
            per_source(24, 48),
            6,
            [0x2001_0db8, 0x1234_5678, 9, 9],
        );
        assert_eq!(v6.addr, [0x2001_0db8, 0x1234_0000, 0, 0]);
        let all = SourceKey::of(0, 0, per_source(32, 128), 6, [1, 2, 3, 4]);
        assert_eq!(all.addr, [1, 2, 3, 4]);
    }

    #[test]
    fn bounds() {
        assert!(Bucket::new(0, NS_PER_SEC, 1, false).is_none());
        assert!(Bucket::new(1, NS_PER_SEC, 0, false).is_none());
        assert!(Bucket::new(MAX_UNITS + 1, NS_PER_SEC, 1, false).is_none());
        assert!(Bucket::new(1, MAX_PERIOD_NS + 1, 1, false).is_none());
        let b = Bucket::new(1, MAX_PERIOD_NS, MAX_UNITS, true);
        assert!(
            b.is_none(),
            "a day of credit per byte times 2^40 is refused"
        );
        let b = Bucket::new(MAX_UNITS, NS_PER_SEC, MAX_UNITS, true).unwrap();
        assert_eq!(b.cost_ns(1), 1, "at least one nanosecond a packet");
    }
}
