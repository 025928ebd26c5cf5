//! Which table a slot of the kernel holds: the dispatch table, the global
//! rules, or one tenant's rules. Journals and pins name them as text
//! (`dispatch`, `global`, `tenant-<name>`); code passes this type.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// One table of a generation.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TableScope {
    /// The destination → tenant dispatch table.
    Dispatch,
    /// The gateway's global rules.
    Global,
    /// One tenant's rules.
    Tenant(String),
}

impl TableScope {
    /// The tenant, for a tenant's table.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            TableScope::Tenant(t) => Some(t),
            _ => None,
        }
    }

    /// The table a ruleset file compiles to: `gateway.fg` → the global
    /// rules, `<tenant>.fg` → that tenant's table.
    pub(crate) fn of_file(path: &str) -> TableScope {
        let name = std::path::Path::new(path)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(path);
        if name == fluxgate_ruleset::GATEWAY_FILE {
            return TableScope::Global;
        }
        TableScope::Tenant(name.strip_suffix(".fg").unwrap_or(name).to_owned())
    }

    /// The table holding a rule of `scope`.
    pub(crate) fn of_rule_scope(scope: &fluxgate_ruleset::Scope) -> TableScope {
        match scope {
            fluxgate_ruleset::Scope::Gateway => TableScope::Global,
            fluxgate_ruleset::Scope::Tenant(t) => TableScope::Tenant(t.clone()),
        }
    }

    /// Whether changing this table changes every tenant's traffic.
    pub fn is_gateway_wide(&self) -> bool {
        !matches!(self, TableScope::Tenant(_))
    }
}

impl fmt::Display for TableScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableScope::Dispatch => f.write_str("dispatch"),
            TableScope::Global => f.write_str("global"),
            TableScope::Tenant(t) => write!(f, "tenant-{t}"),
        }
    }
}

impl FromStr for TableScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dispatch" => Ok(TableScope::Dispatch),
            "global" => Ok(TableScope::Global),
            _ => s
                .strip_prefix("tenant-")
                .filter(|t| !t.is_empty())
                .map(|t| TableScope::Tenant(t.to_owned()))
                .ok_or_else(|| format!("not a table scope: {s:?}")),
        }
    }
}

impl Serialize for TableScope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TableScope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Serde for a rule [`fluxgate_ruleset::Scope`] as its text (`gateway` or
/// the tenant name), as journals store it.
pub(crate) mod rule_scope {
    use fluxgate_ruleset::Scope;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(scope: &Scope, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(scope.as_str())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Scope, D::Error> {
        Ok(of(String::deserialize(d)?))
    }

    /// `gateway` → the gateway, anything else → that tenant.
    pub(crate) fn of(name: String) -> Scope {
        if name == "gateway" {
            Scope::Gateway
        } else {
            Scope::Tenant(name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_read_back_as_written() {
        for s in [
            TableScope::Dispatch,
            TableScope::Global,
            TableScope::Tenant("acme".into()),
            TableScope::Tenant("tenant-x".into()),
        ] {
            assert_eq!(s.to_string().parse::<TableScope>(), Ok(s.clone()));
        }
        assert!("tenant-".parse::<TableScope>().is_err());
        assert!("acme".parse::<TableScope>().is_err());
    }
}
