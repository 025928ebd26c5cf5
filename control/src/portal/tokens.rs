//! Who may read which page: the operator's tokens file.
//!
//! One entry a line; `#` starts a comment:
//!
//! ```text
//! operator <sha256>
//! tenant acme <sha256> [webhook=https://hooks.example/acme]
//! ```
//!
//! `<sha256>` is the SHA-256 of the token, in hex (`printf %s "$TOKEN" |
//! sha256sum`): the file never holds a token. A plain hash suffices because
//! tokens must be random and high-entropy (at least 128 bits, e.g. `openssl
//! rand -hex 32`): nothing can be guessed from their hash. A presented token
//! is hashed and compared with every entry in constant time.
//!
//! The file is the operator's: one writable by its group or by others is
//! refused. It is read again when it changes (size, modification time or
//! inode), checked at each request; a file that no longer reads or parses
//! locks everyone out (a revoked token must never come back) until it is
//! fixed. Webhook URLs live here, and only here, so a tenant can never point
//! the gateway at an address of the operator's network.

use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    sync::Mutex,
};

use sha2::Digest;
use subtle::ConstantTimeEq;

use crate::ControlError;

/// Whom a token opens the pages of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// Every page.
    Operator,
    /// That tenant's pages only.
    Tenant(String),
}

/// One line of the file.
#[derive(Clone, Debug)]
struct Entry {
    hash: [u8; 32],
    principal: Principal,
}

/// A parsed tokens file.
#[derive(Clone, Debug, Default)]
pub struct TokenSet {
    entries: Vec<Entry>,
    webhooks: BTreeMap<String, String>,
}

/// Longest tokens file read.
const MAX_FILE: u64 = 4 << 20;
/// Longest token accepted from a client.
pub const MAX_TOKEN: usize = 512;

/// SHA-256 of `token`, hex: what the file holds.
pub fn hash_token(token: &str) -> String {
    crate::host::hex(&sha2::Sha256::digest(token.as_bytes()))
}

impl TokenSet {
    /// Parses the text of a tokens file (`name` for errors).
    pub fn parse(name: &str, text: &str) -> Result<TokenSet, ControlError> {
        let mut set = TokenSet::default();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let at = |msg: String| ControlError::Usage(format!("{name}:{}: {msg}", n + 1));
            let words: Vec<&str> = line.split_whitespace().collect();
            let (principal, hash, rest) = match words.as_slice() {
                ["operator", hash, rest @ ..] => (Principal::Operator, *hash, rest),
                ["tenant", tenant, hash, rest @ ..] => {
                    if !super::view::valid_tenant_name(tenant) {
                        return Err(at(format!("`{tenant}` is not a valid tenant name")));
                    }
                    (Principal::Tenant((*tenant).to_owned()), *hash, rest)
                }
                _ => {
                    return Err(at(
                        "expected `operator <sha256>` or `tenant <name> <sha256> [webhook=<url>]`"
                            .into(),
                    ));
                }
            };
            let hash = parse_hash(hash).ok_or_else(|| {
                at("the token must be given as its SHA-256 in hex (64 characters)".into())
            })?;
            for option in rest {
                match (option.split_once('='), &principal) {
                    (Some(("webhook", url)), Principal::Tenant(t)) => {
                        check_url(url).map_err(at)?;
                        set.webhooks.insert(t.clone(), (*url).to_owned());
                    }
                    _ => return Err(at(format!("unknown option `{option}`"))),
                }
            }
            if set.entries.iter().any(|e| e.hash == hash) {
                return Err(at("this token is listed twice".into()));
            }
            set.entries.push(Entry { hash, principal });
        }
        Ok(set)
    }

    /// Whom `token` opens, if anyone. Every entry is compared, in constant
    /// time each: how long this takes tells nothing about the token.
    pub fn principal(&self, token: &str) -> Option<Principal> {
        let presented: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for e in &self.entries {
            if bool::from(e.hash.ct_eq(&presented)) {
                found = Some(e.principal.clone());
            }
        }
        found
    }

    /// Webhook URL per tenant.
    pub fn webhooks(&self) -> &BTreeMap<String, String> {
        &self.webhooks
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// A webhook URL: `http://` or `https://`, printable ASCII, bounded.
fn check_url(url: &str) -> Result<(), String> {
    let ok_scheme = url.starts_with("http://") || url.starts_with("https://");
    let printable = url.bytes().all(|b| b.is_ascii_graphic());
    if !ok_scheme || !printable || url.len() > 2048 {
        return Err(format!(
            "webhook `{}` must be an http:// or https:// URL",
            url.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

/// The tokens file, read again when it changes.
#[derive(Debug)]
pub struct TokensFile {
    path: PathBuf,
    cached: Mutex<Option<(Stamp, Result<TokenSet, String>)>>,
}

/// What tells that the file changed (its mode too: a chmod is a change).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_nsec: i64,
    ctime: i64,
    ctime_nsec: i64,
    mode: u32,
}

impl TokensFile {
    /// The file at `path`, read now (an error when it cannot be used).
    pub fn open(path: &Path) -> Result<TokensFile, ControlError> {
        let f = TokensFile {
            path: path.to_owned(),
            cached: Mutex::new(None),
        };
        f.current()?;
        Ok(f)
    }

    /// The tokens now: the cached set, or the file read again when it
    /// changed. An error (unreadable, unsafe permissions, a bad line) locks
    /// every request out.
    pub fn current(&self) -> Result<TokenSet, ControlError> {
        let fail = |e: std::io::Error| {
            ControlError::Io(format!("cannot read {}: {e}", self.path.display()))
        };
        let meta = std::fs::metadata(&self.path).map_err(fail)?;
        let stamp = Stamp {
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            ctime: meta.ctime(),
            ctime_nsec: meta.ctime_nsec(),
            mode: meta.mode(),
        };
        let mut cached = self
            .cached
            .lock()
            .map_err(|_| ControlError::State("tokens cache poisoned".into()))?;
        if let Some((s, set)) = cached.as_ref()
            && *s == stamp
        {
            return set.clone().map_err(ControlError::Usage);
        }
        let set = self.read(&meta).map_err(|e| e.to_string());
        if let Err(e) = &set {
            tracing::error!("status: tokens file unusable, every request refused: {e}");
        }
        *cached = Some((stamp, set.clone()));
        set.map_err(ControlError::Usage)
    }

    fn read(&self, meta: &std::fs::Metadata) -> Result<TokenSet, ControlError> {
        let name = self.path.display().to_string();
        if meta.mode() & 0o022 != 0 {
            return Err(ControlError::Usage(format!(
                "{name} is writable by its group or others: it must be the operator's alone (chmod 600)"
            )));
        }
        if meta.size() > MAX_FILE {
            return Err(ControlError::Usage(format!("{name} is larger than 4 MiB")));
        }
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| ControlError::Io(format!("cannot read {name}: {e}")))?;
        TokenSet::parse(&name, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_open_their_principal_only() {
        let text = format!(
            "# tokens\noperator {}\ntenant acme {} webhook=http://127.0.0.1:9/hook\ntenant globex {}\n",
            hash_token("op-secret"),
            hash_token("acme-secret"),
            hash_token("globex-secret")
        );
        let set = TokenSet::parse("tokens", &text).expect("parse");
        assert_eq!(set.principal("op-secret"), Some(Principal::Operator));
        assert_eq!(
            set.principal("acme-secret"),
            Some(Principal::Tenant("acme".into()))
        );
        assert_eq!(set.principal("acme-secret "), None);
        assert_eq!(set.principal(""), None);
        assert_eq!(
            set.webhooks().get("acme").map(String::as_str),
            Some("http://127.0.0.1:9/hook")
        );
        assert!(!text.contains("acme-secret"));
    }

    #[test]
    fn bad_lines_are_refused_with_their_line() {
        for (text, want) in [
            (
                "tenant acme deadbeef\n",
                "tokens:1: the token must be given",
            ),
            ("\noperator\n", "tokens:2: expected"),
            (
                &format!("tenant ACME {}\n", hash_token("x")),
                "not a valid tenant name",
            ),
            (
                &format!(
                    "tenant acme {} webhook=file:///etc/passwd\n",
                    hash_token("x")
                ),
                "must be an http",
            ),
            (
                &format!("operator {} webhook=http://x/\n", hash_token("x")),
                "unknown option",
            ),
            (
                &format!("operator {0}\ntenant a {0}\n", hash_token("x")),
                "listed twice",
            ),
        ] {
            let e = TokenSet::parse("tokens", text).expect_err(text).to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn the_file_is_read_again_when_it_changes_and_an_unsafe_one_locks_everyone_out() {
        use std::os::unix::fs::PermissionsExt;
        let path = std::env::temp_dir().join(format!("fg-tokens-{}", std::process::id()));
        std::fs::write(&path, format!("tenant acme {}\n", hash_token("one"))).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let f = TokensFile::open(&path).expect("open");
        assert!(f.current().expect("set").principal("one").is_some());
        std::fs::write(&path, format!("tenant acme {}\n", hash_token("two-longer")))
            .expect("write");
        let set = f.current().expect("set");
        assert!(set.principal("one").is_none(), "revoked");
        assert!(set.principal("two-longer").is_some());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(f.current().is_err(), "world-writable");
        let _ = std::fs::remove_file(&path);
    }
}
