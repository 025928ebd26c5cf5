//! Limits and switches for [`crate::validate()`].

/// Validation limits. `Config::default()` suits a large hosting gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Most rules one tenant may have (default 100 000).
    pub max_rules_per_tenant: usize,
    /// Most tenants (default 10 000).
    pub max_tenants: usize,
    /// Most rules in total, gateway and tenants together (default 1 000 000).
    pub max_total_rules: usize,
    /// How many earlier pass/drop rules of the same scope each rule is compared with
    /// when looking for shadowed rules (default 32). The check is conservative (it never
    /// warns falsely) and bounded so validation stays linear in the number of rules; a
    /// rule shadowed by one further back is simply not reported. 0 disables the check.
    pub shadow_window: usize,
    /// Accept ports / TCP flags on rules without a `proto` (they then match any packet
    /// that carries ports, i.e. TCP or UDP). Off by default, because such a rule usually
    /// forgot its protocol; ClassBench filter sets need it on ([`Config::classbench`]).
    pub allow_ports_without_proto: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_rules_per_tenant: 100_000,
            max_tenants: 10_000,
            max_total_rules: 1_000_000,
            shadow_window: 32,
            allow_ports_without_proto: false,
        }
    }
}

impl Config {
    /// Defaults plus [`Config::allow_ports_without_proto`], as ClassBench rulesets need.
    pub fn classbench() -> Self {
        Config {
            allow_ports_without_proto: true,
            ..Config::default()
        }
    }
}
