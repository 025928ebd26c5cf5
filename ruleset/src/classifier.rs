//! The userspace classifier: walks the same [`Image`] cells the XDP program
//! walks, with the same flow (dispatch → global → tenant → defaults). Used by
//! `explain`, by tests without root, and by gateways that classify in userspace.
//! It is immutable after construction, so `&Classifier` can be shared by any
//! number of threads (`Classifier: Send + Sync`).

use std::net::IpAddr;

use fluxgate_common::table::{
    CheckKey, HOP_LIMIT_255, KEY_WORDS, LATER_FRAGMENT, LEAF_MAX, VLAN_NONE, action,
    neighbor_discovery, word,
};

use crate::{
    Limit, PacketHeader, Proto, Verdict,
    compile::{CounterSlot, Image},
    meter::{Arrival, BucketKey, Meter, source_key},
    table::{Walk, walk_after},
};

/// What the classifier decided for one packet, by counter slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classified {
    /// Pass or drop.
    pub verdict: Verdict,
    /// Tenant index (dispatch), if any tenant owns the destination.
    pub tenant: Option<u32>,
    /// Counter slot of the deciding rule or default (`None`: no table loaded).
    pub decided_by: Option<u32>,
    /// Counter slots of the count rules matched before the decision, in order.
    pub counted: Vec<u32>,
    /// IPv6 neighbour discovery, passed before any table
    /// (`fluxgate_common::table::neighbor_discovery`): no tenant, no rule.
    pub neighbor_discovery: bool,
    /// Over a limit: the deciding rule's, or the tenant's ceiling (then
    /// `decided_by` is the ceiling's slot, [`CounterSlot::is_ceiling`]).
    pub limited: bool,
}

/// A classifier over one compiled [`Image`].
#[derive(Clone, Debug)]
pub struct Classifier {
    image: Image,
    ifindex: ahash::AHashMap<String, u32>,
    /// Counter slot → (bucket, limit) of every rule with a limit and of
    /// each tenant's ceiling (a per-source bucket gets its source added).
    limits: ahash::AHashMap<u32, (BucketKey, Limit)>,
}

impl Classifier {
    /// Wraps `image`; `interfaces` maps `iif` names of packets to ifindexes (as
    /// given to the compiler).
    pub fn new(image: Image, interfaces: impl IntoIterator<Item = (String, u32)>) -> Classifier {
        let limits = image
            .counters
            .iter()
            .filter_map(|c| {
                let (rule, limit) = (c.rule?, c.limit?);
                let key = if c.is_ceiling() {
                    BucketKey::Ceiling {
                        tenant: c.scope.as_str().to_owned(),
                        bytes: limit.rate.bytes,
                    }
                } else {
                    BucketKey::Rule {
                        scope: c.scope.clone(),
                        rule,
                        source: None,
                    }
                };
                Some((c.slot, (key, limit)))
            })
            .collect();
        Classifier {
            image,
            ifindex: interfaces.into_iter().collect(),
            limits,
        }
    }

    /// The image.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// What counter slot `slot` counts.
    pub fn slot(&self, slot: u32) -> Option<&CounterSlot> {
        self.image.counter(slot)
    }

    /// Classifies a packet header (every bucket full: see
    /// [`Classifier::classify_at`]).
    pub fn classify(&self, p: &PacketHeader) -> Classified {
        self.classify_at(&mut Meter::new(), p, Arrival::default())
    }

    /// Classifies a packet header arriving at `at`, with the rate-limit state
    /// `meter` (as [`crate::reference::classify_at`]).
    pub fn classify_at(&self, meter: &mut Meter, p: &PacketHeader, at: Arrival) -> Classified {
        let ifindex = p
            .iif
            .as_deref()
            .and_then(|n| self.ifindex.get(n).copied())
            .unwrap_or(0);
        self.classify_key_at(meter, &key_of(p, ifindex), at)
    }

    /// Classifies a packet key (the fast path: no allocation unless count
    /// rules or limits match; every bucket full).
    pub fn classify_key(&self, key: &[u32; KEY_WORDS]) -> Classified {
        self.classify_key_at(&mut Meter::new(), key, Arrival::default())
    }

    /// Walks `cells` as the XDP program does, going on past each rule with
    /// a limit whose bucket had the tokens; `(walk, limited)`.
    fn walk_limited(
        &self,
        cells: &[fluxgate_common::table::Cell],
        key_words: &[u32; KEY_WORDS],
        check: &CheckKey,
        meter: &mut Meter,
        at: Arrival,
        counted: &mut Vec<u32>,
    ) -> (Walk, bool) {
        let mut after = 0;
        loop {
            let w = walk_after(cells, key_words, check, after);
            counted.extend_from_slice(w.counters());
            let limit = w.decision.and_then(|(_, slot)| self.limits.get(&slot));
            let Some((bucket_key, l)) = limit else {
                return (w, false);
            };
            let mut key = bucket_key.clone();
            if let (BucketKey::Rule { source, .. }, Some(per)) = (&mut key, l.per_source) {
                *source = Some(source_key(per, key_src(key_words)));
            }
            if l.bucket().is_some_and(|b| !meter.take(key, &b, at)) {
                return (w, true);
            }
            after = w.index;
        }
    }

    /// Classifies a packet key arriving at `at` with the state `meter`.
    pub fn classify_key_at(
        &self,
        meter: &mut Meter,
        key: &[u32; KEY_WORDS],
        at: Arrival,
    ) -> Classified {
        // As the dispatcher: before tenant dispatch, by the same function.
        if neighbor_discovery(key) {
            return Classified {
                verdict: Verdict::Pass,
                tenant: None,
                decided_by: None,
                counted: Vec::new(),
                neighbor_discovery: true,
                limited: false,
            };
        }
        let check = CheckKey::of(key);
        let walk = |cells| walk_after(cells, key, &check, 0);
        // No tenants: the dispatch table cannot name one (skip its walk).
        let tenant = if self.image.tenants.is_empty() {
            None
        } else {
            match walk(&self.image.dispatch.cells).decision {
                Some((action::TENANT, t)) => Some(t),
                _ => None,
            }
        };
        let mut counted = Vec::new();
        let cells = &self.image.global.cells;
        let (global, mut limited) = self.walk_limited(cells, key, &check, meter, at, &mut counted);
        let decision = match global.decision {
            Some(d) => Some(d),
            None => match tenant.and_then(|t| self.image.tenant(t)) {
                Some(t) => {
                    // The tenant's ceiling is its first rules (`Ceiling::rules`).
                    let cells = &t.table.cells;
                    let (w, l) = self.walk_limited(cells, key, &check, meter, at, &mut counted);
                    limited = l;
                    w.resolve(cells)
                }
                None => global.resolve(&self.image.global.cells),
            },
        };
        debug_assert!(counted.len() <= 2 * LEAF_MAX);
        let verdict = match decision.map(|(a, s)| (action::unlimited(a), s)) {
            Some((action::DROP, _)) => Verdict::Drop,
            _ => Verdict::Pass,
        };
        Classified {
            verdict,
            tenant,
            decided_by: decision.map(|d| d.1),
            counted,
            neighbor_discovery: false,
            limited,
        }
    }
}

/// The source address of a key.
fn key_src(key: &[u32; KEY_WORDS]) -> IpAddr {
    let w = &key[word::SRC..word::SRC + 4];
    if key[word::FAMILY] == 4 {
        IpAddr::from(std::net::Ipv4Addr::from(w[0]))
    } else {
        let mut o = [0u8; 16];
        for (i, v) in w.iter().enumerate() {
            o[4 * i..4 * i + 4].copy_from_slice(&v.to_be_bytes());
        }
        IpAddr::from(o)
    }
}

/// The classification key the XDP program computes for this packet
/// (`ifindex`: the ingress interface index, 0 if unknown).
pub fn key_of(p: &PacketHeader, ifindex: u32) -> [u32; KEY_WORDS] {
    let mut key = [0u32; KEY_WORDS];
    let words = |a: IpAddr| -> (u32, [u32; 4]) {
        match a {
            IpAddr::V4(a) => (4, [u32::from(a), 0, 0, 0]),
            IpAddr::V6(a) => {
                let o = a.octets();
                let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
                (6, [w(0), w(4), w(8), w(12)])
            }
        }
    };
    let (family, src) = words(p.src);
    let (_, dst) = words(p.dst);
    key[word::SRC..word::SRC + 4].copy_from_slice(&src);
    key[word::DST..word::DST + 4].copy_from_slice(&dst);
    key[word::FAMILY] = family;
    key[word::PROTO] = u32::from(p.proto);
    let proto = Proto::from_number(p.proto);
    let icmp = (family == 4 && p.proto == 1) || (family == 6 && p.proto == 58);
    if p.is_later_fragment() {
        // No L4 header: the parser marks the port word instead.
        key[word::SPORT] = LATER_FRAGMENT;
    } else if icmp {
        if let Some(t) = p.icmp_type {
            key[word::SPORT] = u32::from(t);
            key[word::DPORT] = u32::from(p.icmp_code.unwrap_or(0));
            key[word::L4] = 1;
            if family == 6 && p.hop_limit_255 {
                key[word::TCP_FLAGS] = HOP_LIMIT_255;
            }
        }
    } else if let (true, Some(s), Some(d)) = (proto.has_ports(), p.sport, p.dport) {
        // Only TCP and UDP headers carry ports (a header built from a
        // ClassBench trace line has them whatever its protocol: the parser
        // would find none in a GRE packet, nor TCP flags in a UDP one).
        key[word::SPORT] = u32::from(s);
        key[word::DPORT] = u32::from(d);
        key[word::L4] = 1;
        if proto == Proto::Tcp {
            key[word::TCP_FLAGS] = u32::from(p.tcp_flags.unwrap_or(0));
        }
    }
    key[word::VLAN] = p.vlan.map_or(VLAN_NONE, u32::from);
    key[word::IFINDEX] = ifindex;
    key
}

impl Classifier {
    /// Classifies `p` and reports it the way [`crate::reference::classify`] does,
    /// so the two can be compared field by field.
    pub fn decide(&self, p: &PacketHeader) -> crate::Decision {
        let c = self.classify(p);
        self.to_decision(&c)
    }

    /// A [`Classified`] in the reference's terms (rule ids, scopes, positions).
    pub fn to_decision(&self, c: &Classified) -> crate::Decision {
        let rule_ref = |slot: u32| {
            self.slot(slot).filter(|s| !s.is_ceiling()).and_then(|s| {
                s.rule.map(|id| crate::RuleRef {
                    id,
                    scope: s.scope.clone(),
                    position: s.position,
                })
            })
        };
        let rule = c.decided_by.and_then(rule_ref);
        let tenant_name = c
            .tenant
            .and_then(|t| self.image.tenant(t))
            .map(|t| t.name.clone());
        let reason = match (&rule, &tenant_name) {
            _ if c.neighbor_discovery => {
                "IPv6 neighbour discovery (hop limit 255): passed before any rule".to_owned()
            }
            (Some(r), _) => format!("rule {r} decided"),
            (None, Some(t)) if c.limited => format!("over the ceiling of tenant `{t}`: drop"),
            (None, Some(t)) if c.decided_by.is_some_and(|s| s != 0) => {
                format!("no rule decided: tenant `{t}` default")
            }
            _ => "no rule decided: gateway default".to_owned(),
        };
        crate::Decision {
            verdict: c.verdict,
            tenant: c.tenant.map(|t| t as usize),
            tenant_name,
            rule,
            counted: c.counted.iter().filter_map(|s| rule_ref(*s)).collect(),
            reason,
            neighbor_discovery: c.neighbor_discovery,
            limited: c.limited,
        }
    }
}
