//! The state of rate limits in userspace: one token bucket per limited rule
//! (per source for `per saddr`), and per tenant ceiling, each advanced by
//! [`fluxgate_common::limit::Bucket::take`] — the function the XDP program
//! runs. The reference classifier ([`crate::reference::classify_at`]) and the
//! userspace classifier ([`crate::Classifier::classify_at`]) both decide with
//! a [`Meter`], so a timed trace gets the same decisions from both.

use std::collections::HashMap;
use std::net::IpAddr;

use fluxgate_common::limit::Bucket;
use ipnet::IpNet;

use crate::limit::PerSource;
use crate::model::{RuleId, Scope};

/// When a packet arrives and how long it is: what a limit decision needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Arrival {
    /// Nanoseconds on a monotonic clock (the kernel uses `bpf_ktime_get_ns`).
    pub at_ns: u64,
    /// Bytes of the frame, as the kernel counts them (Ethernet header to
    /// the end of the data; what byte rates count).
    pub len: u32,
}

/// Which bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BucketKey {
    /// A rule's bucket; `source` is the packet's source truncated to the
    /// rule's `per saddr/N` (`None` without `per`).
    Rule {
        /// The rule's scope.
        scope: Scope,
        /// The rule.
        rule: RuleId,
        /// The source prefix of a per-source bucket.
        source: Option<IpNet>,
    },
    /// A tenant's ceiling, of packets or of bytes.
    Ceiling {
        /// The tenant.
        tenant: String,
        /// True for the byte rate.
        bytes: bool,
    },
}

/// The source prefix a per-source bucket is kept for.
pub fn source_key(per: PerSource, src: IpAddr) -> IpNet {
    let len = if src.is_ipv4() { per.v4 } else { per.v6 };
    IpNet::new(src, len).map_or_else(|_| IpNet::from(src), |n| n.trunc())
}

/// Bucket states (theoretical arrival times; absent: full). A new `Meter`
/// has every bucket full. Per-source buckets are never evicted here (the
/// kernel's map is an LRU of `--source-buckets` entries: under churn it forgets
/// the least recently seen sources, which then start full).
#[derive(Debug, Clone, Default)]
pub struct Meter {
    tat: HashMap<BucketKey, u64>,
}

impl Meter {
    /// An empty meter: every bucket full.
    pub fn new() -> Meter {
        Meter::default()
    }

    /// Takes `arrival`'s packet from bucket `key` with parameters `bucket`:
    /// true when it conforms (tokens taken), false when it is over the limit.
    pub fn take(&mut self, key: BucketKey, bucket: &Bucket, arrival: Arrival) -> bool {
        let tat = self.tat.get(&key).copied().unwrap_or(0);
        match bucket.take(tat, arrival.at_ns, u64::from(arrival.len)) {
            Some(next) => {
                self.tat.insert(key, next);
                true
            }
            None => false,
        }
    }

    /// Buckets that are not full (have been taken from).
    pub fn len(&self) -> usize {
        self.tat.len()
    }

    /// True when every bucket is full.
    pub fn is_empty(&self) -> bool {
        self.tat.is_empty()
    }
}
