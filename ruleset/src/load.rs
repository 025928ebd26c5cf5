//! Turning files into a [`Ruleset`]: from memory ([`Ruleset::parse_files`]) or from a
//! directory ([`Ruleset::load_dir`]).
//!
//! Layout: a ruleset is one directory holding `gateway.fg` and one `<tenant>.fg` per
//! tenant, side by side (no sub-directories, so a tenant's file is found by its name
//! alone and `ls` shows every tenant). Files not ending in `.fg` are ignored.

use std::path::Path;

use crate::error::{Diag, ErrorKind, Errors, MAX_ERRORS, SourceMap, escaped};
use crate::model::{Ruleset, Scope, assign_ids};
use crate::parser::{Parser, check_ident};

/// Name of the gateway file.
pub const GATEWAY_FILE: &str = "gateway.fg";

fn file_name(path: &str) -> &str {
    path.rsplit(['/', '\\']).next().unwrap_or(path)
}

impl Ruleset {
    /// Parses a ruleset from `(path, text)` pairs. The file whose name is `gateway.fg`
    /// is the gateway file; every other file is a tenant file whose name must be
    /// `<tenant>.fg`. Returns every syntax error found, or the ruleset (which still has
    /// to go through [`crate::validate()`]).
    pub fn parse_files<P: AsRef<str>, T: AsRef<str>>(files: &[(P, T)]) -> Result<Ruleset, Errors> {
        let mut map = SourceMap::default();
        // A byte-order mark (which some Windows editors write) is not text: skip
        // it, so the first line's columns count from what a person sees.
        let ids: Vec<_> = files
            .iter()
            .map(|(p, t)| {
                let t = t.as_ref();
                map.add(p.as_ref(), t.strip_prefix('\u{feff}').unwrap_or(t))
            })
            .collect();
        let mut rs = Ruleset::default();
        let mut errors = Vec::new();
        let mut gateway_seen = false;
        let mut stopped = false;
        for (&id, (path, _)) in ids.iter().zip(files) {
            let path = path.as_ref();
            if errors.len() >= MAX_ERRORS {
                errors.push(Diag::without_source(
                    ErrorKind::Syntax,
                    path,
                    format!("too many errors; stopped after {MAX_ERRORS}, before this file"),
                ));
                stopped = true;
                break;
            }
            let mut p = Parser::new(&map, id);
            if file_name(path) == GATEWAY_FILE {
                if gateway_seen {
                    errors.push(Diag::without_source(
                        ErrorKind::Syntax,
                        path,
                        "a second gateway.fg was given",
                    ));
                }
                gateway_seen = true;
                rs.gateway = p.gateway();
            } else {
                let t = p.tenant();
                let stem = file_name(path)
                    .strip_suffix(".fg")
                    .unwrap_or(file_name(path));
                if p.errors.is_empty() {
                    if let Err(m) = check_ident(&t.name) {
                        errors.push(map.error(ErrorKind::TenantName, t.spans.name, m));
                    } else if stem != t.name {
                        errors.push(
                            map.error(
                                ErrorKind::TenantName,
                                t.spans.name,
                                format!("tenant `{}` is declared in file `{path}`", t.name),
                            )
                            .with_help(format!("rename the file to `{}.fg`", t.name)),
                        );
                    }
                }
                rs.tenants.push(t);
            }
            errors.append(&mut p.errors);
        }
        if !gateway_seen && !stopped {
            errors.push(Diag::without_source(
                ErrorKind::Syntax,
                GATEWAY_FILE,
                "no gateway.fg: every ruleset needs one (at least `default pass` or `default drop`)",
            ));
        }
        if !errors.is_empty() {
            return Err(Errors {
                errors,
                warnings: Vec::new(),
            });
        }
        rs.tenants.sort_by(|a, b| a.name.cmp(&b.name));
        assign_ids(&Scope::Gateway, &mut rs.gateway.rules);
        for t in &mut rs.tenants {
            assign_ids(&Scope::Tenant(t.name.clone()), &mut t.rules);
        }
        rs.sources = map;
        Ok(rs)
    }

    /// Reads `dir/gateway.fg` and every `dir/*.fg` (sorted by name) and parses them
    /// with [`Ruleset::parse_files`], under the rules of [`read_dir_files`].
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Ruleset, Errors> {
        Ruleset::parse_files(&read_dir_files(dir)?)
    }
}

/// Most bytes one ruleset file may have (16 MiB: a 100k-rule tenant file is
/// about 4 MiB). Files are read as root from a directory customers write to, so
/// a larger file is refused before it is read, and the read itself stops one
/// byte past the limit (a file that reports a wrong size cannot run it over).
pub const MAX_FILE_BYTES: u64 = 16 << 20;

/// Most bytes of all ruleset files together (128 MiB: a million rules, the
/// default [`crate::Config::max_total_rules`], take about 45 MiB). Bounds what
/// many tenants' files together hold in memory.
pub const MAX_RULESET_BYTES: u64 = 128 << 20;

/// The `.fg` files of `dir` as `(path, text)`, sorted by path, ready for
/// [`Ruleset::parse_files`]; an unreadable directory or file is an error naming it.
///
/// Every entry named `*.fg` must be a regular file of at most [`MAX_FILE_BYTES`]
/// (all of them together at most [`MAX_RULESET_BYTES`]) holding UTF-8 text: a
/// directory, a FIFO, a symbolic link (even one pointing to a regular file inside
/// `dir`) is an error naming the entry, never skipped — a skipped tenant file
/// would read as "tenant removed". Symbolic links are refused
/// outright rather than resolved: the files are read as root, a link adds nothing
/// the format needs (a tenant file is found by its own name, and a link to another
/// tenant's file declares the wrong tenant), and checking a link's target before
/// opening it leaves a window in which whoever can write the directory swaps the
/// target. Each file is opened without following a link (`O_NOFOLLOW`) and
/// checked again once open, so a swap between listing and reading is refused too.
/// Errors never quote a file's contents beyond a short excerpt.
pub fn read_dir_files(dir: impl AsRef<Path>) -> Result<Vec<(String, String)>, Errors> {
    let dir = dir.as_ref();
    let io = |p: &Path, e: std::io::Error| Errors::one(io_error(p, e.to_string()));
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let path = entry.map_err(|e| io(dir, e))?.path();
        if path.extension().is_some_and(|e| e == "fg") {
            paths.push(path);
        }
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    let mut errors = Vec::new();
    let mut total = 0u64;
    for p in paths {
        // A name is printed in every error about its file: one that is not
        // printable UTF-8 (a terminal escape, say) is refused, shown escaped.
        // No tenant could have such a name anyway.
        if let Some(n) = p.file_name()
            && let name = n.to_string_lossy()
            && (n.to_str().is_none() || escaped(&name) != name)
        {
            errors.push(Diag::without_source(
                ErrorKind::Io,
                &dir.join(escaped(&name)).display().to_string(),
                "a file name that is not printable UTF-8",
            ));
            continue;
        }
        match read_ruleset_file(&p) {
            Ok(text) => {
                total += text.len() as u64;
                if total > MAX_RULESET_BYTES {
                    errors.push(io_error(
                        &p,
                        format!(
                            "the ruleset files up to this one hold more than {MAX_RULESET_BYTES} \
                             bytes, the most a ruleset may have"
                        ),
                    ));
                    break;
                }
                files.push((p.display().to_string(), text));
            }
            Err(d) => errors.push(*d),
        }
        if errors.len() >= MAX_ERRORS {
            break; // a directory of a million dangling links: enough said
        }
    }
    collected(files, errors)
}

fn io_error(p: &Path, message: impl Into<String>) -> Diag {
    Diag::without_source(ErrorKind::Io, &p.display().to_string(), message)
}

/// What kind of entry `t` is, for an error message.
fn kind_of(t: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if t.is_symlink() {
        "a symbolic link"
    } else if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_block_device() || t.is_char_device() {
        "a device"
    } else {
        "an unknown kind of file"
    }
}

/// The files `names` (such as `acme.fg`) of ruleset directory `dir`, read
/// under the rules of [`read_dir_files`], sorted; a name with no entry is left
/// out (a tenant whose file was removed). What `apply --tenant T` reads, so
/// changing one tenant of 10,000 does not read the other 9,999 files.
pub fn read_dir_files_named(
    dir: impl AsRef<Path>,
    names: &[&str],
) -> Result<Vec<(String, String)>, Errors> {
    let dir = dir.as_ref();
    let mut names: Vec<&str> = names.to_vec();
    names.sort_unstable();
    names.dedup();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for name in names {
        let plain =
            name.ends_with(".fg") && !name.contains('/') && name != ".fg" && escaped(name) == name;
        if !plain {
            errors.push(Diag::without_source(
                ErrorKind::Io,
                &dir.join(escaped(name)).display().to_string(),
                "not a ruleset file name",
            ));
            continue;
        }
        let p = dir.join(name);
        match std::fs::symlink_metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => errors.push(io_error(&p, e.to_string())),
            Ok(_) => match read_ruleset_file(&p) {
                Ok(text) => files.push((p.display().to_string(), text)),
                Err(d) => errors.push(*d),
            },
        }
    }
    collected(files, errors)
}

/// The files read, or every error met reading them.
fn collected(
    files: Vec<(String, String)>,
    errors: Vec<Diag>,
) -> Result<Vec<(String, String)>, Errors> {
    if errors.is_empty() {
        Ok(files)
    } else {
        Err(Errors {
            errors,
            warnings: Vec::new(),
        })
    }
}

/// Reads one ruleset file under the rules of [`read_dir_files`].
fn read_ruleset_file(p: &Path) -> Result<String, Box<Diag>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    let refuse = |what: &str| {
        let help = if what == "a symbolic link" {
            "symbolic links are refused (ruleset files are read as root); \
             copy the file into the ruleset directory instead"
        } else {
            "every `*.fg` entry must be a regular file; rename or remove it"
        };
        Box::new(io_error(p, format!("{what}, not a regular file")).with_help(help))
    };
    let fail = |e: std::io::Error| Box::new(io_error(p, e.to_string()));
    let meta = std::fs::symlink_metadata(p).map_err(fail)?;
    if !meta.file_type().is_file() {
        return Err(refuse(kind_of(meta.file_type())));
    }
    // O_NOFOLLOW: an entry swapped for a link since the check above is not
    // followed (open fails with ELOOP); O_NONBLOCK: one swapped for a FIFO
    // does not hang the open. Both are checked again on the open file.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(p)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse("a symbolic link"),
            _ => fail(e),
        })?;
    let meta = file.metadata().map_err(fail)?;
    if !meta.file_type().is_file() {
        return Err(refuse(kind_of(meta.file_type())));
    }
    let too_large = || {
        Box::new(io_error(
            p,
            format!("larger than {MAX_FILE_BYTES} bytes, the most a ruleset file may have"),
        ))
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(too_large());
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(too_large());
    }
    utf8_text(&p.display().to_string(), bytes)
}

/// Reads a text file named by the operator (a ClassBench filter file, say):
/// links are followed, but at most `max_bytes` are read (a file reporting a wrong
/// size included), and text that is not UTF-8 is an error at the line and column
/// of the first invalid byte. Errors name the file and quote none of it.
pub fn read_text_file(path: impl AsRef<Path>, max_bytes: u64) -> Result<String, Errors> {
    use std::io::Read;
    let p = path.as_ref();
    let fail = |e: std::io::Error| Errors::one(io_error(p, e.to_string()));
    let file = std::fs::File::open(p).map_err(fail)?;
    let too_large = || {
        Errors::one(io_error(
            p,
            format!("larger than {max_bytes} bytes, the most this file may have"),
        ))
    };
    if file.metadata().map_err(fail)?.len() > max_bytes {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    file.take(max_bytes.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(fail)?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large());
    }
    utf8_text(&p.display().to_string(), bytes).map_err(|d| Errors::one(*d))
}

/// `bytes` as text; not UTF-8 is an error at the line and column of the first
/// invalid byte (counted in characters of the valid text before it).
pub(crate) fn utf8_text(path: &str, bytes: Vec<u8>) -> Result<String, Box<Diag>> {
    String::from_utf8(bytes).map_err(|e| {
        let valid = e.utf8_error().valid_up_to();
        let bytes = e.into_bytes();
        let bad = bytes.get(valid).copied().unwrap_or(0);
        // The text before the bad byte is valid: it gives the line and column.
        let prefix = String::from_utf8_lossy(bytes.get(..valid).unwrap_or(&[]));
        let mut map = SourceMap::default();
        let id = map.add(path, &*prefix);
        let d = map.error(
            ErrorKind::Syntax,
            crate::model::Span::new(id, valid, valid),
            format!("not UTF-8 text: byte 0x{bad:02x} is not valid UTF-8 here"),
        );
        Box::new(d.with_help("fluxgate reads UTF-8 text (save the file as UTF-8)"))
    })
}
