//! Limits and switches for [`crate::validate()`].
//!
//! Tenant files may be written by customers, so every limit that bounds the
//! memory and time of validating and compiling is checked by
//! [`crate::validate()`] on the parsed rules, *before* a set is copied into a
//! rule or a rule is expanded into table rules, and each error points at the
//! rule, set or tenant that crosses it.

/// Validation limits. `Config::default()` suits a large hosting gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Most rules one tenant may have (default 100 000).
    pub max_rules_per_tenant: usize,
    /// Most tenants (default 65 536, the default number of tenant slots of
    /// an attachment, `fluxgate_common::DEFAULT_TENANT_SLOTS`).
    pub max_tenants: usize,
    /// Most rules in total, gateway and tenants together (default 1 000 000).
    pub max_total_rules: usize,
    /// Most elements in one named set (default 4096, as
    /// [`Config::max_rule_expansion`]: every element of a set a rule uses is at
    /// least one table rule, so a larger set could not be used anyway).
    pub max_set_elems: usize,
    /// Most table rules one rule may expand into (default 4096). A rule is the
    /// cross product of its lists: `saddr`, `daddr`, `sport`, `dport` (a set
    /// counts with all its elements), times 2 when ports without `proto` mean
    /// TCP and UDP, times 2 when ICMP fields without addresses mean both
    /// families. Counted on the rule as written (duplicates count), before
    /// anything is expanded: `set p { 1, 3, 5, …, 65535 }` with
    /// `sport @p dport @p` is refused here, not after building 2^30 rules.
    pub max_rule_expansion: usize,
    /// Most table rules the rules of one tenant expand into, counted as for
    /// [`Config::max_rule_expansion`]; the gateway's rules count as one more
    /// tenant here (default 400 000: four per rule at
    /// [`Config::max_rules_per_tenant`]).
    pub max_table_rules_per_tenant: usize,
    /// Most table rules of the whole ruleset, gateway and tenants together
    /// (default 2 000 000: two per rule at [`Config::max_total_rules`]).
    pub max_table_rules: usize,
    /// How many earlier pass/drop rules of the same scope each rule is compared with
    /// when looking for shadowed rules (default 32). The check is conservative (it never
    /// warns falsely) and bounded so validation stays linear in the number of rules; a
    /// rule shadowed by one further back is simply not reported. 0 disables the check.
    pub shadow_window: usize,
    /// Accept ports / TCP flags on rules without a `proto` (they then match any packet
    /// that carries ports, i.e. TCP or UDP). Off by default, because such a rule usually
    /// forgot its protocol; ClassBench filter sets need it on ([`Config::classbench`]).
    pub allow_ports_without_proto: bool,
    /// Accept ports on rules whose `proto` has none (ICMP, GRE, …). Such a rule
    /// matches no packet: only TCP and UDP packets carry ports, and a port
    /// constraint never matches a packet without them (in every engine). Off by
    /// default, because in a hand-written rule it is a mistake; ClassBench
    /// firewall sets have such filters ([`Config::classbench`]), and each must
    /// keep its number.
    pub allow_ports_on_any_proto: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_rules_per_tenant: 100_000,
            max_tenants: 65_536,
            max_total_rules: 1_000_000,
            max_set_elems: 4096,
            max_rule_expansion: 4096,
            max_table_rules_per_tenant: 400_000,
            max_table_rules: 2_000_000,
            shadow_window: 32,
            allow_ports_without_proto: false,
            allow_ports_on_any_proto: false,
        }
    }
}

impl Config {
    /// Defaults plus [`Config::allow_ports_without_proto`] and
    /// [`Config::allow_ports_on_any_proto`], as ClassBench rulesets need.
    pub fn classbench() -> Self {
        Config {
            allow_ports_without_proto: true,
            allow_ports_on_any_proto: true,
            ..Config::default()
        }
    }
}
