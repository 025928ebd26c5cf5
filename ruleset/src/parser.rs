//! Parser for `.fg` files (grammar in the crate docs). Recovers at the end of each
//! statement so one run reports every syntax error; never panics.

use ipnet::IpNet;

mod limits;

use crate::error::{Diag, ErrorKind, SourceMap, excerpt};
use crate::lexer::{Tok, Token, lex};
pub(crate) use crate::literal::{
    FLAG_LETTERS, check_ident, parse_flags, parse_port_range, parse_prefix, parse_proto, parse_u32,
};
use crate::model::{
    Action, Allocation, FileId, Gateway, Guard, Match, NamedSet, PortItem, PortRange, PrefixItem,
    Quota, Rule, RuleId, RuleSpans, SetElems, Span, Tenant, TenantSpans, Verdict,
};

/// Most errors reported for one file; parsing stops there.
pub const MAX_ERRORS_PER_FILE: usize = 100;

/// Longest interface name Linux accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

/// Boxed: a `Diag` is large and errors are rare.
type PResult<T> = Result<T, Box<Diag>>;

pub(crate) struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
    file: FileId,
    map: &'a SourceMap,
    pub(crate) errors: Vec<Diag>,
    /// The file was not parsed to its end (it did not tokenize, or had too
    /// many errors); don't pile "missing X" errors on top.
    incomplete: bool,
}

/// What a statement list may contain.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FileKind {
    Gateway,
    Tenant,
}

impl<'a> Parser<'a> {
    pub(crate) fn new(map: &'a SourceMap, file: FileId) -> Self {
        let src: &str = map.file(file).map_or("", |f| &f.text);
        let mut p = Parser {
            src,
            toks: Vec::new(),
            pos: 0,
            file,
            map,
            errors: Vec::new(),
            incomplete: false,
        };
        match lex(src) {
            Ok(t) => p.toks = t,
            Err(e) => {
                let d = map.error(
                    ErrorKind::Syntax,
                    Span::new(file, e.start, e.end),
                    e.message,
                );
                p.errors.push(d);
                p.incomplete = true;
                p.toks = vec![Token::at(Tok::Eof, 0)];
            }
        }
        p
    }

    fn peek(&self) -> Token {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .copied()
            .unwrap_or(Token::at(Tok::Eof, 0))
    }

    fn bump(&mut self) -> Token {
        let t = self.peek();
        if t.tok != Tok::Eof {
            self.pos += 1;
        }
        t
    }

    fn text(&self, t: Token) -> &'a str {
        {
            let (a, b) = t.text();
            self.src.get(a..b).unwrap_or("")
        }
    }

    fn span(&self, t: Token) -> Span {
        Span {
            file: self.file,
            start: t.start,
            end: t.end,
        }
    }

    fn err(&self, kind: ErrorKind, span: Span, msg: impl Into<String>) -> Box<Diag> {
        Box::new(self.map.error(kind, span, msg))
    }

    fn unexpected(&self, t: Token, wanted: &str) -> Box<Diag> {
        let found = match t.tok {
            Tok::Eof => "end of file".to_owned(),
            Tok::End => "end of line".to_owned(),
            _ => format!(
                "`{}`",
                excerpt(self.src.get(t.start as usize..t.end as usize).unwrap_or(""))
            ),
        };
        self.err(
            ErrorKind::Syntax,
            self.span(t),
            format!("expected {wanted}, found {found}"),
        )
    }

    fn word(&mut self, wanted: &str) -> PResult<(&'a str, Span)> {
        let t = self.bump();
        if t.tok == Tok::Word {
            Ok((self.text(t), self.span(t)))
        } else {
            Err(self.unexpected(t, wanted))
        }
    }

    fn end_of_statement(&mut self) -> PResult<()> {
        let t = self.peek();
        match t.tok {
            Tok::End | Tok::Eof => {
                self.bump();
                Ok(())
            }
            _ => Err(self.unexpected(t, "end of line")),
        }
    }

    /// Skips to the end of the statement that began at token `start`, past any `{ … }`
    /// it opened (a set may span lines), so one error does not cascade.
    fn skip_statement(&mut self, start: usize) {
        let opened = self.toks.get(start..self.pos).unwrap_or(&[]).iter();
        let mut depth = opened.fold(0u32, |d, t| match t.tok {
            Tok::LBrace => d + 1,
            Tok::RBrace => d.saturating_sub(1),
            _ => d,
        });
        loop {
            let t = self.bump();
            match t.tok {
                Tok::Eof => return,
                Tok::LBrace => depth += 1,
                Tok::RBrace => depth = depth.saturating_sub(1),
                Tok::End if depth == 0 => return,
                _ => {}
            }
        }
    }

    fn skip_ends(&mut self) {
        while self.peek().tok == Tok::End {
            self.bump();
        }
    }

    /// Parses the gateway file.
    pub(crate) fn gateway(&mut self) -> Gateway {
        let mut gw = Gateway::default();
        let mut default = None;
        let mut rules = Vec::new();
        self.statements(FileKind::Gateway, &mut |p, kw, span| match kw {
            "default" => p.default_stmt(&mut default, span),
            "set" => p.set_stmt(&mut gw.sets),
            "guard" => p.guard_stmt(&mut gw.guards),
            "allocate" => p.allocate_stmt(&mut gw.allocations),
            "quota" => p.quota_stmt(&mut gw.quotas, span),
            "meter-size" => p.meter_size_stmt(&mut gw.meter_size, span),
            _ => p.rule(&mut rules),
        });
        self.finish_default(
            default,
            &mut gw.default_action,
            &mut gw.default_span,
            "gateway",
        );
        gw.rules = rules;
        gw
    }

    /// Parses a tenant file.
    pub(crate) fn tenant(&mut self) -> Tenant {
        let mut t = Tenant {
            name: String::new(),
            prefixes: Vec::new(),
            default_action: Verdict::Drop,
            sets: Vec::new(),
            rules: Vec::new(),
            guards: Vec::new(),
            ceiling: Default::default(),
            spans: TenantSpans::default(),
        };
        let mut default = None;
        let mut named = false;
        self.statements(FileKind::Tenant, &mut |p, kw, span| match kw {
            "tenant" => {
                p.bump();
                let (name, nspan) = p.word("a tenant name")?;
                if named {
                    return Err(p.err(ErrorKind::Syntax, span, "`tenant` given twice"));
                }
                named = true;
                t.name = name.to_owned();
                t.spans.name = nspan;
                p.end_of_statement()
            }
            "prefix" | "prefixes" => {
                p.bump();
                let mut items = Vec::new();
                p.prefix_list(false, &mut items, Some(&mut t.spans.prefixes))?;
                t.prefixes.extend(Match::nets(&items).copied());
                p.end_of_statement()
            }
            "default" => p.default_stmt(&mut default, span),
            "set" => p.set_stmt(&mut t.sets),
            "guard" => p.guard_stmt(&mut t.guards),
            "ceiling" => p.ceiling_stmt(&mut t.ceiling, &mut t.spans.ceiling, span),
            _ => p.rule(&mut t.rules),
        });
        if !named && !self.incomplete {
            let s = Span::new(self.file, 0, 0);
            self.errors.push(*self.err(
                ErrorKind::Syntax,
                s,
                "a tenant file must start with `tenant NAME`",
            ));
        }
        let mut span = t.spans.default;
        self.finish_default(default, &mut t.default_action, &mut span, "tenant");
        t.spans.default = span;
        t
    }

    fn finish_default(
        &mut self,
        default: Option<(Verdict, Span)>,
        out: &mut Verdict,
        out_span: &mut Span,
        what: &str,
    ) {
        match default {
            Some((v, s)) => {
                *out = v;
                *out_span = s;
            }
            None if self.incomplete => {}
            None => {
                let s = Span::new(self.file, 0, 0);
                self.errors.push(
                    self.map
                        .error(
                            ErrorKind::Default,
                            s,
                            format!("the {what} file has no `default`"),
                        )
                        .with_help("add a line `default pass` or `default drop`"),
                );
            }
        }
    }

    fn statements(
        &mut self,
        kind: FileKind,
        each: &mut dyn FnMut(&mut Self, &str, Span) -> PResult<()>,
    ) {
        loop {
            self.skip_ends();
            let t = self.peek();
            if t.tok == Tok::Eof {
                return;
            }
            if self.errors.len() >= MAX_ERRORS_PER_FILE {
                // A file of garbage has an error per line: millions of them,
                // each holding memory, would be no more use than the first ones.
                self.errors.push(*self.err(
                    ErrorKind::Syntax,
                    self.span(t),
                    format!("too many errors in this file; stopped after {MAX_ERRORS_PER_FILE}"),
                ));
                self.incomplete = true;
                return;
            }
            let kw = if t.tok == Tok::Word { self.text(t) } else { "" };
            let span = self.span(t);
            let start = self.pos;
            let res = if kind == FileKind::Gateway
                && matches!(kw, "tenant" | "prefix" | "prefixes" | "ceiling")
            {
                Err(self.err(
                    ErrorKind::Syntax,
                    span,
                    format!("`{kw}` belongs in a tenant file, not in gateway.fg"),
                ))
            } else if kind == FileKind::Tenant && matches!(kw, "allocate" | "quota" | "meter-size")
            {
                // What a tenant may claim and consume is the operator's to say.
                Err(self.err(
                    ErrorKind::Syntax,
                    span,
                    format!(
                        "`{kw}` belongs in gateway.fg (the operator's file), not in a tenant file"
                    ),
                ))
            } else {
                each(self, kw, span)
            };
            if let Err(d) = res {
                self.errors.push(*d);
                // resume after the statement that failed (unless the error was at its end)
                let at_end = self.pos > start
                    && self
                        .toks
                        .get(self.pos - 1)
                        .is_some_and(|t| t.tok == Tok::End);
                if !at_end {
                    self.skip_statement(start);
                }
            }
        }
    }

    fn default_stmt(&mut self, slot: &mut Option<(Verdict, Span)>, span: Span) -> PResult<()> {
        self.bump();
        let (w, s) = self.word("`pass` or `drop`")?;
        let v = match w {
            "pass" => Verdict::Pass,
            "drop" => Verdict::Drop,
            _ => {
                return Err(self.err(
                    ErrorKind::Syntax,
                    s,
                    format!(
                        "expected `pass` or `drop` after `default`, found `{}`",
                        excerpt(w)
                    ),
                ));
            }
        };
        if slot.is_some() {
            return Err(self.err(ErrorKind::Default, span, "`default` given twice"));
        }
        *slot = Some((v, span.to(s)));
        self.end_of_statement()
    }

    /// `guard "PACKET" pass|drop`.
    fn guard_stmt(&mut self, guards: &mut Vec<Guard>) -> PResult<()> {
        let kw = self.bump();
        let t = self.bump();
        if t.tok != Tok::Str {
            return Err(self.unexpected(
                t,
                "a quoted packet, e.g. \"tcp 198.51.100.7:40000 -> 203.0.113.10:443 flags S\"",
            ));
        }
        let pspan = self.span(t);
        let packet: crate::PacketHeader =
            self.text(t)
                .parse()
                .map_err(|e: crate::packet::PacketParseError| {
                    self.err(ErrorKind::Syntax, pspan, e.to_string())
                })?;
        let (w, s) = self.word("`pass` or `drop`")?;
        let verdict = match w {
            "pass" => Verdict::Pass,
            "drop" => Verdict::Drop,
            _ => {
                return Err(self.err(
                    ErrorKind::Syntax,
                    s,
                    format!(
                        "expected `pass` or `drop` after the guard packet, found `{}`",
                        excerpt(w)
                    ),
                ));
            }
        };
        guards.push(Guard {
            packet,
            verdict,
            span: self.span(kw).to(s),
        });
        self.end_of_statement()
    }

    /// `allocate NAME PREFIXES`.
    fn allocate_stmt(&mut self, out: &mut Vec<Allocation>) -> PResult<()> {
        self.bump();
        let (name, span) = self.word("a tenant name")?;
        check_ident(name).map_err(|m| self.err(ErrorKind::TenantName, span, m))?;
        let mut items = Vec::new();
        let mut prefix_spans = Vec::new();
        self.prefix_list(false, &mut items, Some(&mut prefix_spans))?;
        out.push(Allocation {
            tenant: name.to_owned(),
            prefixes: Match::nets(&items).copied().collect(),
            span,
            prefix_spans,
        });
        self.end_of_statement()
    }

    /// `quota [NAME] (rules N | table-bytes SIZE | counters N)+`. A first
    /// word that is a key followed by a number starts the default quota;
    /// any other first word is a tenant name (so a tenant may be called
    /// `rules`: `quota rules rules 10`).
    fn quota_stmt(&mut self, out: &mut Vec<Quota>, span: Span) -> PResult<()> {
        const KEYS: [&str; 5] = ["rules", "table-bytes", "counters", "limits", "ceiling"];
        self.bump();
        let first = self.peek();
        let second = self.toks.get(self.pos + 1).copied();
        let starts_number = |t: Option<Token>| {
            t.is_some_and(|t| {
                t.tok == Tok::Word && self.text(t).starts_with(|c: char| c.is_ascii_digit())
            })
        };
        let mut q = Quota {
            tenant: None,
            rules: None,
            table_bytes: None,
            counters: None,
            limits: None,
            ceiling: Default::default(),
            span,
        };
        let is_default =
            first.tok == Tok::Word && KEYS.contains(&self.text(first)) && starts_number(second);
        if !is_default {
            let (name, nspan) = self.word("a tenant name or `rules`, `table-bytes`, `counters`")?;
            check_ident(name).map_err(|m| self.err(ErrorKind::TenantName, nspan, m))?;
            q.tenant = Some(name.to_owned());
        }
        loop {
            let t = self.peek();
            if matches!(t.tok, Tok::End | Tok::Eof)
                && ((q.rules, q.table_bytes, q.counters, q.limits) != (None, None, None, None)
                    || !q.ceiling.is_empty())
            {
                break;
            }
            let (key, kspan) =
                self.word("`rules`, `table-bytes`, `counters`, `limits` or `ceiling`")?;
            if key == "ceiling" {
                if !q.ceiling.is_empty() {
                    return Err(self.err(ErrorKind::Syntax, kspan, "`ceiling` given twice"));
                }
                q.ceiling = self.ceiling_rates()?;
                continue;
            }
            let (w, vspan) = self.word("a number")?;
            let slot = match key {
                "rules" => &mut q.rules,
                "table-bytes" => &mut q.table_bytes,
                "counters" => &mut q.counters,
                "limits" => &mut q.limits,
                _ => {
                    return Err(self.err(
                        ErrorKind::Syntax,
                        kspan,
                        format!(
                            "expected `rules`, `table-bytes`, `counters`, `limits` or `ceiling`, \
                             found `{}`",
                            excerpt(key)
                        ),
                    ));
                }
            };
            if slot.is_some() {
                return Err(self.err(ErrorKind::Syntax, kspan, format!("`{key}` given twice")));
            }
            let value = if key == "table-bytes" {
                // `4mbytes` or `4 mbytes`, as nft writes quotas.
                let unit_word = self.peek();
                let separate_unit = unit_word.tok == Tok::Word
                    && matches!(self.text(unit_word), "bytes" | "kbytes" | "mbytes")
                    && w.bytes().all(|c| c.is_ascii_digit());
                let text = if separate_unit {
                    self.bump();
                    format!("{w}{}", self.text(unit_word))
                } else {
                    w.to_owned()
                };
                size(&text)
            } else {
                w.parse::<u64>()
                    .ok()
                    .filter(|_| w.bytes().all(|c| c.is_ascii_digit()))
            };
            *slot = Some(value.ok_or_else(|| {
                let what = if key == "table-bytes" {
                    "a size like `4mbytes`, `512kbytes` or `65536`"
                } else {
                    "a number"
                };
                self.err(
                    ErrorKind::Syntax,
                    vspan,
                    format!("expected {what}, found `{}`", excerpt(w)),
                )
            })?);
        }
        out.push(q);
        self.end_of_statement()
    }

    fn set_stmt(&mut self, sets: &mut Vec<NamedSet>) -> PResult<()> {
        self.bump();
        let (name, nspan) = self.word("a set name")?;
        check_ident(name).map_err(|m| self.err(ErrorKind::Syntax, nspan, m))?;
        let t = self.peek();
        if t.tok != Tok::LBrace {
            return Err(self.unexpected(t, "`{` starting the set's elements"));
        }
        let mut nets = Vec::new();
        let mut ports = Vec::new();
        let mut first_kind: Option<(bool, Span)> = None;
        for (w, s) in self.braced_words()? {
            let is_net = w.contains('.') || w.contains(':');
            match first_kind {
                None => first_kind = Some((is_net, s)),
                Some((k, _)) if k != is_net => {
                    return Err(self.err(
                        ErrorKind::SetTypeMismatch,
                        s,
                        "a set holds either prefixes or ports, not both",
                    ));
                }
                _ => {}
            }
            if is_net {
                nets.push(self.prefix(w, s)?);
            } else {
                ports.push(self.port_range(w, s)?);
            }
        }
        let elems = match first_kind {
            None => {
                return Err(self.err(ErrorKind::Syntax, nspan, "a set needs at least one element"));
            }
            Some((true, _)) => SetElems::Prefixes(nets),
            Some((false, _)) => SetElems::Ports(ports),
        };
        sets.push(NamedSet {
            name: name.to_owned(),
            elems,
            span: nspan,
        });
        self.end_of_statement()
    }

    /// `{ w, w, … }` (newlines allowed inside), literal words only.
    fn braced_words(&mut self) -> PResult<Vec<(&'a str, Span)>> {
        let mut out = Vec::new();
        self.list(true, false, &mut |p, t, s| {
            out.push((p.text(t), s));
            Ok(())
        })?;
        Ok(out)
    }

    /// A single item, or `{ item, … }`; calls `each` per item. Items are words, or
    /// `@set` when `refs`. Calls back instead of returning a list: no allocation per
    /// list on the hot path of 100k-rule files.
    fn list(
        &mut self,
        require_braces: bool,
        refs: bool,
        each: &mut dyn FnMut(&Self, Token, Span) -> PResult<()>,
    ) -> PResult<()> {
        let t = self.peek();
        let wanted = if refs {
            "a value, `@set` or `{`"
        } else {
            "a value or `{`"
        };
        if t.tok != Tok::LBrace {
            if require_braces {
                return Err(self.unexpected(t, "`{`"));
            }
            return match t.tok {
                Tok::Word | Tok::SetRef if t.tok == Tok::Word || refs => {
                    self.bump();
                    each(self, t, self.span(t))
                }
                _ => Err(self.unexpected(t, wanted)),
            };
        }
        self.bump();
        let mut n = 0usize;
        loop {
            self.skip_ends();
            let t = self.bump();
            match t.tok {
                Tok::RBrace if n > 0 || require_braces => return Ok(()),
                Tok::Word => each(self, t, self.span(t))?,
                Tok::SetRef if refs => each(self, t, self.span(t))?,
                _ => return Err(self.unexpected(t, wanted)),
            }
            n += 1;
            self.skip_ends();
            let sep = self.bump();
            match sep.tok {
                Tok::Comma => {}
                Tok::RBrace => return Ok(()),
                _ => return Err(self.unexpected(sep, "`,` or `}`")),
            }
        }
    }

    fn prefix_list(
        &mut self,
        refs: bool,
        out: &mut Vec<PrefixItem>,
        spans: Option<&mut Vec<Span>>,
    ) -> PResult<()> {
        let mut spans = spans;
        self.list(false, refs, &mut |p, t, s| {
            let w = p.text(t);
            if t.tok == Tok::SetRef {
                out.push(PrefixItem::Set(w.to_owned()));
            } else {
                out.push(PrefixItem::Net(p.prefix(w, s)?));
            }
            if let Some(sp) = spans.as_deref_mut() {
                sp.push(s);
            }
            Ok(())
        })
    }

    fn port_list(&mut self, out: &mut Vec<PortItem>) -> PResult<()> {
        self.list(false, true, &mut |p, t, s| {
            let w = p.text(t);
            if t.tok == Tok::SetRef {
                out.push(PortItem::Set(w.to_owned()));
            } else {
                out.push(PortItem::Range(p.port_range(w, s)?));
            }
            Ok(())
        })
    }

    fn prefix(&self, w: &str, s: Span) -> PResult<IpNet> {
        parse_prefix(w).map_err(|(kind, msg, off)| {
            let s = match off {
                Some(o) => Span::new(self.file, s.start as usize + o, s.end as usize),
                None => s,
            };
            self.err(kind, s, msg)
        })
    }

    fn port_range(&self, w: &str, s: Span) -> PResult<PortRange> {
        parse_port_range(w).map_err(|(kind, msg)| self.err(kind, s, msg))
    }

    fn number<T: TryFrom<u32>>(&mut self, what: &str, max: u32) -> PResult<(T, Span)> {
        let (w, s) = self.word(what)?;
        let n = parse_u32(w).ok_or_else(|| {
            self.err(
                ErrorKind::Syntax,
                s,
                format!("expected {what}, found `{}`", excerpt(w)),
            )
        })?;
        if n > max {
            let kind = if what.contains("VLAN") {
                ErrorKind::VlanOutOfRange
            } else {
                ErrorKind::NumberOutOfRange
            };
            return Err(self.err(kind, s, format!("{what} must be at most {max}, found {n}")));
        }
        T::try_from(n)
            .map(|v| (v, s))
            .map_err(|_| self.err(ErrorKind::NumberOutOfRange, s, "number out of range"))
    }

    fn rule(&mut self, rules: &mut Vec<Rule>) -> PResult<()> {
        let first = self.peek();
        let mut m = Match::default();
        let mut limit = None;
        let mut sp = RuleSpans {
            rule: self.span(first),
            ..RuleSpans::default()
        };
        loop {
            let t = self.peek();
            if t.tok != Tok::Word {
                return Err(self.unexpected(t, "a match (`saddr`, `dport`, …) or an action"));
            }
            let kw = self.text(t);
            let kspan = self.span(t);
            let action = match kw {
                "pass" => Some(Action::Pass),
                "drop" => Some(Action::Drop),
                "count" => Some(Action::Count),
                _ => None,
            };
            if let Some(action) = action {
                self.bump();
                sp.rule = sp.rule.to(kspan);
                self.end_of_statement()?;
                rules.push(Rule {
                    id: RuleId(0),
                    position: 0,
                    matches: m,
                    action,
                    limit,
                    spans: sp,
                });
                return Ok(());
            }
            let slot: &mut Option<Span> = match kw {
                "iif" => &mut sp.iif,
                "vlan" => &mut sp.vlan,
                "saddr" => &mut sp.src,
                "daddr" => &mut sp.dst,
                "proto" => &mut sp.proto,
                "sport" => &mut sp.sport,
                "dport" => &mut sp.dport,
                "flags" => &mut sp.tcp_flags,
                "icmp-type" => &mut sp.icmp_type,
                "icmp-code" => &mut sp.icmp_code,
                "fragment" => &mut sp.fragment,
                "limit" => &mut sp.limit,
                _ => {
                    return Err(self.err(
                        ErrorKind::Syntax,
                        kspan,
                        format!(
                            "unknown keyword `{}`; a rule is made of iif, vlan, saddr, daddr, \
                             proto, fragment, sport, dport, flags, icmp-type, icmp-code, limit, \
                             then pass, drop or count",
                            excerpt(kw)
                        ),
                    ));
                }
            };
            if slot.is_some() {
                return Err(self.err(ErrorKind::Syntax, kspan, format!("`{kw}` given twice")));
            }
            *slot = Some(kspan);
            if kw == "limit" {
                limit = Some(self.limit_clause()?);
                sp.rule = sp.rule.to(self.span(self.toks[self.pos.saturating_sub(1)]));
                continue;
            }
            self.bump();
            match kw {
                "iif" => {
                    let t = self.bump();
                    if !matches!(t.tok, Tok::Word | Tok::Str) {
                        return Err(self.unexpected(t, "an interface name"));
                    }
                    let name = self.text(t);
                    if name.is_empty() || name.len() > MAX_IFNAME {
                        return Err(self.err(
                            ErrorKind::Syntax,
                            self.span(t),
                            format!("an interface name has 1 to {MAX_IFNAME} bytes"),
                        ));
                    }
                    m.iif = Some(name.to_owned());
                }
                "vlan" => m.vlan = Some(self.number("a VLAN id", 4095)?.0),
                "saddr" => self.prefix_list(true, &mut m.src, None)?,
                "daddr" => self.prefix_list(true, &mut m.dst, None)?,
                "proto" => {
                    let (w, s) = self.word("a protocol (tcp, udp, icmp, icmpv6 or a number)")?;
                    m.proto = Some(parse_proto(w).map_err(|(k, msg)| self.err(k, s, msg))?);
                }
                "sport" => self.port_list(&mut m.sport)?,
                "dport" => self.port_list(&mut m.dport)?,
                "flags" => {
                    let (w, s) = self.word("TCP flags like `S/SA`")?;
                    m.tcp_flags = Some(
                        parse_flags(w, true).map_err(|msg| self.err(ErrorKind::Syntax, s, msg))?,
                    );
                }
                "icmp-type" => m.icmp_type = Some(self.number("an ICMP type", 255)?.0),
                "fragment" => m.fragment = true,
                _ => m.icmp_code = Some(self.number("an ICMP code", 255)?.0),
            }
            sp.rule = sp.rule.to(self.span(self.toks[self.pos.saturating_sub(1)]));
        }
    }
}

/// `N`, `Nbytes`, `Nkbytes` (×1024) or `Nmbytes` (×1024²), as nft's quotas.
fn size(text: &str) -> Option<u64> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (n, unit) = text.split_at(digits);
    let scale: u64 = match unit {
        "" | "bytes" => 1,
        "kbytes" => 1 << 10,
        "mbytes" => 1 << 20,
        _ => return None,
    };
    n.parse::<u64>().ok()?.checked_mul(scale)
}
