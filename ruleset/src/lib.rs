//! # fluxgate-ruleset — what a rule means, defined once
//!
//! The sans-I/O heart of fluxgate: the rule model, the `.fg` text format and its
//! parser, validation with `file:line:col` diagnostics, the reference classifier that
//! *defines* the semantics, diff between generations, and ClassBench import. No kernel,
//! no network, no `unsafe`; the only I/O is reading files ([`Ruleset::load_dir`],
//! [`read_text_file`]).
//!
//! ```text
//! files ─parse_files/load_dir─▶ Ruleset ─validate─▶ ValidRuleset ─▶ (compiler, reference::classify, diff)
//! ```
//!
//! ## Why an nft-like text format
//!
//! The people who write and review these files run gateways; they read `nft list
//! ruleset` and `pf.conf` at a glance. One rule per line, keywords from nftables
//! (`saddr`, `daddr`, `dport`, `iif`, named sets with `@name`) and pf (`flags S/SA`)
//! make a rule readable without a manual, and a one-line rule makes `git diff` show
//! exactly which rule changed. TOML would need a table per rule (five lines for
//! `proto tcp dport 443 pass`), with ranges and prefixes as quoted strings, and its
//! errors would point at TOML, not at the rule.
//!
//! ## Layout
//!
//! A ruleset is one directory: `gateway.fg` (provider-wide default, global rules,
//! shared named sets) and one `<tenant>.fg` per tenant beside it. The file name must be
//! the tenant name, so a tenant's file is found by name and `ls` lists the tenants.
//!
//! ## Files customers write
//!
//! Tenant files may come from customers or their panels and are read as root, so
//! [`Ruleset::load_dir`] trusts nothing in the directory ([`read_dir_files`] has the
//! details and the reasons):
//!
//! - every `*.fg` entry must be a regular file: a symbolic link (wherever it points),
//!   a directory or a FIFO named `bob.fg` is an error naming it, never skipped — a
//!   skipped file would read as "tenant `bob` removed". Links are refused, not
//!   resolved: a check of a link's target races with whoever can rewrite the link.
//!   A name that is not printable UTF-8 is refused too, shown escaped;
//! - a file may hold at most [`MAX_FILE_BYTES`] (16 MiB), all of them together
//!   [`MAX_RULESET_BYTES`] (128 MiB), checked on the size and by a bounded read;
//! - a UTF-8 byte-order mark is skipped; other text that is not UTF-8 is an error
//!   at the line and column of the first bad byte;
//! - an error quotes at most 32 characters of input, non-printable characters
//!   escaped, and [`Diag::render`] leaves out long or non-printable source lines;
//! - the [`Config`] limits (rules, tenants, set sizes, and the table rules that
//!   rules expand into) are checked by [`validate()`] before any set is copied into
//!   a rule or any rule expanded, each error at the rule, set or tenant crossing it;
//! - after 100 errors in one file, or 1,000 in all, parsing and validation stop.
//!
//! ## A complete gateway file and tenant file
//!
//! ```
//! use fluxgate_ruleset::{Config, Ruleset, validate};
//!
//! let gateway = r#"
//! ## gateway.fg — evaluated before every tenant's rules
//! default drop                                   # destinations no tenant owns
//! set bogons { 0.0.0.0/8, 127.0.0.0/8, 2001:db8:dead::/48 }
//! set web { 80, 443, 8000-8099 }                 # ports: singles and ranges
//! saddr @bogons drop
//! iif "ext0" vlan 42 proto udp dport 11211 drop  # memcached amplification
//! proto icmp icmp-type 8 count                   # count pings, keep going
//! "#;
//!
//! let acme = r#"
//! ## acme.fg
//! tenant acme
//! prefixes { 203.0.113.0/24, 2001:db8:ac::/48 }    # destinations acme owns
//! default drop                                     # when no rule decides
//! set office { 198.51.100.0/28 }                   # private to acme
//! proto tcp dport @web pass                        # @web comes from gateway.fg
//! saddr @office proto tcp dport 22 pass
//! daddr 203.0.113.25 proto tcp dport { 25, 587 } pass
//! proto tcp dport 3306 flags S/SA drop             # new connections only
//! proto icmpv6 icmp-type 128 pass
//! proto icmp pass
//! proto udp fragment pass                          # later fragments carry no port
//! "#;
//!
//! let rs = Ruleset::parse_files(&[("gateway.fg", gateway), ("acme.fg", acme)])?;
//! let valid = validate(rs, &Config::default())?;
//! assert!(valid.warnings().is_empty());
//! assert_eq!(valid.tenants()[0].rules.len(), 7);
//! # Ok::<(), fluxgate_ruleset::Errors>(())
//! ```
//!
//! ## Grammar
//!
//! One statement per line (or separated by `;`); `#` comments to end of line; a
//! `{ … }` list may span lines.
//!
//! ```text
//! gateway file := ( "default" ("pass"|"drop") | allocate | quota | "meter-size" N | set | rule | guard )*
//! tenant file  := "tenant" NAME, then ( ("prefix"|"prefixes") PREFIXES | "default" … | ceiling
//!                 | set | rule | guard )*
//! guard        := "guard" "\"PACKET\"" ("pass"|"drop")   PACKET as in `PacketHeader`'s text form;
//!                                                        a tenant's guards go to its prefixes
//! set          := "set" NAME "{" elem ("," elem)* "}"      elems all prefixes or all ports
//! rule         := clause* [limit] ("pass" | "drop" | "count")   each clause at most once
//! limit        := "limit" "rate" "over" RATE ["burst" N UNIT] ["per" "saddr/"V4LEN["/"V6LEN]]
//! ceiling      := "ceiling" RATE ["burst" N UNIT] [RATE ["burst" N UNIT]]   a packet and/or a byte rate
//! RATE         := N"/"PER | N BYTES"/"PER                e.g. `2000/second`, `20 mbytes/second`
//! PER          := second | minute | hour | day;  BYTES := bytes | kbytes | mbytes | gbytes;
//! UNIT         := packets (packet rates) | BYTES (byte rates)
//! clause       := "iif" IFNAME | "vlan" 0-4095
//!               | "saddr" LIST | "daddr" LIST               prefixes, addresses, @set
//!               | "proto" (tcp|udp|icmp|icmpv6|0-255)
//!               | "sport" LIST | "dport" LIST               port, lo-hi, @set
//!               | "flags" VALUE[/MASK]                      letters FSRPAUEC (bare VALUE: MASK = VALUE)
//!               | "icmp-type" 0-255 | "icmp-code" 0-255
//!               | "fragment"                                non-first fragments only; not with
//!                                                         sport, dport, flags, icmp-type/-code
//! LIST         := item | "{" item ("," item)* "}"
//! NAME         := [a-z0-9][a-z0-9_-]{0,62}
//! allocate     := "allocate" NAME PREFIXES                what tenant NAME may claim
//! quota        := "quota" [NAME] ( "rules" N | "table-bytes" SIZE | "counters" N
//!                                  | "limits" N | "ceiling" RATE [RATE] )+
//!                                                        no NAME: every tenant's default
//! SIZE         := N | N"bytes" | N"kbytes" | N"mbytes"   (a space before the unit is allowed)
//! ```
//!
//! ## Rate limits
//!
//! `proto udp dport 53 limit rate over 2000/second burst 500 packets drop`
//! applies the rule only to packets over 2,000 a second (with a burst of 500);
//! the others go on to the next rule. `ceiling 1000/second 20 mbytes/second`
//! in a tenant file caps all of the tenant's traffic (after the gateway's
//! rules, before the tenant's; over it: drop). `per saddr/32` keeps one bucket
//! per source (IPv6 sources by /64 unless `per saddr/32/48`), in an LRU map
//! sized when the program is attached (`--source-buckets`); `meter-size N` in
//! gateway.fg says how many entries the ruleset needs (default 65,536, at
//! most 2^24; `apply` refuses more than the attachment has). In gateway.fg
//! `quota acme limits 10 ceiling 5000/second` caps how many rules of `acme`
//! may have a limit and its ceiling (its own `ceiling` may only be lower; with
//! none, the operator's applies). Details, defaults and bounds:
//! [`mod@limit`]; semantics with time: [`reference::classify_at`]. A zero or
//! absurd rate, a burst of 0, a `meter-size` of 0 or over 2^24, a ceiling
//! above the operator's: [`ErrorKind::RateLimit`] at `file:line:col`.
//!
//! ## What the operator grants each tenant
//!
//! `allocate` and `quota` are only allowed in gateway.fg (in a tenant file they
//! are an error): tenant files may be written by customers, so what a tenant may
//! claim and consume is the operator's to say.
//!
//! - `allocate acme { 203.0.113.0/24, 2001:db8:ac::/48 }`: every prefix in
//!   `acme.fg`'s `prefixes` must lie inside one of these, else an
//!   [`ErrorKind::Allocation`] error at that prefix, naming the allocation.
//!   Allocations of two tenants must not overlap (error at the one written
//!   second); a tenant is allocated at most once.
//! - With no `allocate` at all, tenants' prefixes are taken as written (only
//!   their overlap is checked), as before allocations existed. As soon as
//!   gateway.fg has one, every tenant needs one: a tenant without is an error at
//!   its `tenant NAME`. Required-once-declared needs no extra switch, keeps every
//!   ruleset written before it meaning what it meant, and an operator who starts
//!   allocating cannot forget a tenant.
//! - `quota rules 5000 table-bytes 4mbytes counters 5001` is every tenant's
//!   default; `quota acme rules 100000` overrides the limits it names for
//!   `acme` (the others stay the default's). `rules` counts table rules after
//!   expansion (as [`Config::max_table_rules_per_tenant`] does; error at the rule
//!   that crosses it), `counters` one per rule plus one for the default (error at
//!   the first rule past it), `table-bytes` the tenant's compiled table
//!   ([`check_table_quotas`], after compiling, before anything is staged; error
//!   at its `tenant NAME`). Each error is an [`ErrorKind::Quota`] in the
//!   tenant's file naming the tenant and the quota. No `quota`: only the
//!   [`Config`] limits apply.
//!
//! ```
//! use fluxgate_ruleset::{Config, ErrorKind, Ruleset, validate};
//! let gateway = "default drop\n\
//!                allocate acme { 203.0.113.0/24 }\n\
//!                quota rules 2 counters 10\n";
//! let acme = "tenant acme\nprefixes { 203.0.113.0/24, 192.0.2.1 }\ndefault drop\n\
//!             proto tcp dport { 80, 443, 8080 } pass\n";
//! let err = validate(
//!     Ruleset::parse_files(&[("gateway.fg", gateway), ("acme.fg", acme)])?,
//!     &Config::default(),
//! )
//! .unwrap_err();
//! let found: Vec<(ErrorKind, String)> =
//!     err.errors.iter().map(|d| (d.kind, d.location.to_string())).collect();
//! assert_eq!(found, [
//!     (ErrorKind::Allocation, "acme.fg:2:28".to_owned()), // 192.0.2.1 is not acme's
//!     (ErrorKind::Quota, "acme.fg:4:1".to_owned()),       // 6 table rules > 2
//! ]);
//! # Ok::<(), fluxgate_ruleset::Errors>(())
//! ```
//!
//! ## Semantics
//!
//! First match in file order wins (there is no `priority` keyword: order *is*
//! priority, which is what a reader sees). Gateway rules run first and a gateway
//! `pass`/`drop` ends classification; then the tenant owning the destination (longest
//! prefix; tenants never overlap) runs its rules; then its `default`. `count` counts
//! and continues. A clause on a field the packet lacks (ports of a fragment) does not
//! match.
//!
//! ### Fragments
//!
//! fluxgate does not reassemble. The first fragment of a packet carries its L4 header
//! and is classified like an unfragmented packet (ports, flags, ICMP type); every
//! later fragment (IPv4 fragment offset ≠ 0, or an IPv6 fragment header with offset
//! ≠ 0) has no L4 header, so no rule with `sport`, `dport`, `flags`, `icmp-type` or
//! `icmp-code` matches it. `fragment` matches exactly those later fragments, like
//! nft's `ip frag-off & 0x1fff != 0` (and `exthdr frag frag-off != 0` for IPv6) or
//! iptables' `-f`; combine it with `proto`, addresses, `iif` and `vlan`. A tenant
//! with `default drop` that serves large UDP (DNS answers with EDNS0, video) adds
//! `proto udp fragment pass`: the first fragment passes by its port rule, the rest
//! by this one (and die at the receiver's reassembly if their first was dropped).
//! The packet parser never reads an L4 header past the IP length (Ethernet padding is
//! not a header), and a TCP first fragment too short for the whole TCP header, or a
//! TCP fragment at offset 1 (RFC 1858), is malformed, never classified.
//!
//! The precise definition is [`mod@reference`]; the shared case table
//! `tests/cases.txt` (run by the workspace's test kit against every engine)
//! pins it down with examples.
//!
//! Every rule has a stable [`RuleId`] (hash of its scope and content, not its
//! position) so counters survive edits of other rules, and a 1-based `position`.
//!
//! ## Errors it can get
//!
//! Every [`Diag`] has a kind ([`ErrorKind`]), `file:line:col`, and renders with a caret
//! under the offending token:
//!
//! ```
//! use fluxgate_ruleset::{Config, ErrorKind, Ruleset, validate};
//!
//! let gateway = "default drop\nset web { 80, 443 }\n";
//! let acme = "\
//! tenant acme
//! prefixes { 203.0.113.0/24, 2001:db8:ac::/48 }
//! default drop
//! proto tcp dport @web pass
//! proto icmp dport 80 drop
//! daddr 198.51.100.1 pass
//! saddr 192.0.2.0/24 daddr 2001:db8:ac::1 pass
//! ";
//! let rs = Ruleset::parse_files(&[("gateway.fg", gateway), ("acme.fg", acme)])?;
//! let err = validate(rs, &Config::default()).unwrap_err();
//! let found: Vec<(ErrorKind, String)> =
//!     err.errors.iter().map(|d| (d.kind, d.location.to_string())).collect();
//! assert_eq!(found, [
//!     (ErrorKind::PortsWithoutTcpUdp, "acme.fg:5:12".to_owned()), // dport on icmp
//!     (ErrorKind::OutOfScope, "acme.fg:6:1".to_owned()),          // not acme's address
//!     (ErrorKind::FamilyMismatch, "acme.fg:7:20".to_owned()),     // v4 source, v6 destination
//! ]);
//! let text = err.errors[0].render();
//! assert!(text.contains("acme.fg:5:12: `dport` on a rule with `proto icmp`"));
//! assert!(text.contains("5 | proto icmp dport 80 drop"));
//!
//! // a rule that can never match is a warning naming both rules
//! let acme = "tenant acme\nprefix 203.0.113.0/24\ndefault drop\n\
//!             proto tcp dport @web pass\nproto tcp dport 443 drop\n";
//! let rs = Ruleset::parse_files(&[("gateway.fg", gateway), ("acme.fg", acme)])?;
//! let valid = validate(rs, &Config::default())?;
//! let w = &valid.warnings()[0];
//! assert_eq!((w.kind, w.location.to_string()), (ErrorKind::Shadowed, "acme.fg:5:1".to_owned()));
//! assert_eq!(w.related.as_ref().map(|r| r.location.to_string()).as_deref(), Some("acme.fg:4:1"));
//! # Ok::<(), fluxgate_ruleset::Errors>(())
//! ```
//!
//! Syntax errors come from [`Ruleset::parse_files`], all of them at once:
//!
//! ```
//! use fluxgate_ruleset::{ErrorKind, Ruleset};
//! let err = Ruleset::parse_files(&[(
//!     "gateway.fg",
//!     "default drop\nsaddr 10.0.0.0/33 drop\nproto tcp dport 70000 pass\nvlan 5000 drop\nproto tcp port 22 drop\n",
//! )])
//! .unwrap_err();
//! let kinds: Vec<_> = err.errors.iter().map(|d| (d.kind, d.location.line, d.location.col)).collect();
//! assert_eq!(kinds, [
//!     (ErrorKind::PrefixTooLong, 2, 16),
//!     (ErrorKind::NumberOutOfRange, 3, 17),
//!     (ErrorKind::VlanOutOfRange, 4, 6),
//!     (ErrorKind::Syntax, 5, 11),
//! ]);
//! ```
//!
//! The full list: [`ErrorKind`] — syntax, prefix too long, number out of range, VLAN
//! out of range, reversed port range, ports without TCP/UDP, flags without TCP, ICMP
//! fields without ICMP, address-family mismatch, unknown set, set type mismatch,
//! duplicate set, missing/duplicate `default`, unsafe or mismatched tenant name,
//! duplicate tenant, overlapping tenant prefixes, rule outside the tenant's prefixes,
//! tenant without prefixes, [`Config`] limits, claims outside an allocation,
//! quotas, rate limits out of bounds; warnings: shadowed rule, host bits set.
//!
//! ## Classify a packet
//!
//! ```
//! use fluxgate_ruleset::{Config, PacketHeader, Ruleset, Verdict, reference, validate};
//! let rs = validate(
//!     Ruleset::parse_files(&[
//!         ("gateway.fg", "default drop\nproto icmp count\n"),
//!         ("acme.fg", "tenant acme\nprefix 203.0.113.0/24\ndefault drop\nproto tcp dport 443 pass\n"),
//!     ])?,
//!     &Config::default(),
//! )?;
//! let p: PacketHeader = "tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags S".parse()?;
//! let d = reference::classify(&rs, &p);
//! assert_eq!((d.verdict, d.tenant_name.as_deref()), (Verdict::Pass, Some("acme")));
//! assert_eq!(d.reason, "tenant `acme` rule #1 matched: proto tcp dport 443 pass");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

pub mod classbench;
pub mod classifier;
pub mod compile;
pub mod config;
pub mod diff;
pub mod error;
mod lexer;
pub mod limit;
mod literal;
mod load;
pub mod meter;
pub mod model;
mod owners;
pub mod packet;
mod parser;
pub mod preflight;
pub mod print;
pub mod reference;
mod shadow;
pub mod table;
mod tenancy;
pub mod validate;

pub use classifier::{Classified, Classifier};
pub use compile::{
    CompileError, CompileOptions, CounterSlot, Image, SlotPlan, TenantImage, compile, compile_with,
};
pub use config::Config;
pub use error::{Diag, ErrorKind, Errors, Location, Severity, SourceMap};
pub use limit::{Ceiling, Limit, Per, PerSource, Rate};
/// Whether a name (tenant, set) is one a ruleset accepts.
pub use literal::check_ident;
pub use load::{
    GATEWAY_FILE, MAX_FILE_BYTES, MAX_RULESET_BYTES, read_dir_files, read_dir_files_named,
    read_text_file,
};
pub use meter::{Arrival, BucketKey, Meter};
pub use model::*;
pub use packet::{PacketHeader, PacketParseError};
pub use reference::{Decision, RuleRef};
pub use shadow::covers;
pub use tenancy::check_table_quotas;
pub use validate::{ValidRuleset, validate};
