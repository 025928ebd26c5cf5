//! Diagnostics: every error and warning carries `file:line:col` and renders with a
//! caret under the offending token (through [`miette`]).

use std::fmt;
use std::sync::Arc;

use miette::{LabeledSpan, NamedSource, SourceSpan};

use crate::model::{FileId, Span};

/// Most errors one parse or one validation collects before it stops (each
/// holds memory; a ruleset with more has one problem many times over).
pub(crate) const MAX_ERRORS: usize = 1000;

/// Most characters of input an error message quotes.
pub(crate) const EXCERPT_CHARS: usize = 32;

/// `input` as an error message may quote it: at most [`EXCERPT_CHARS`] characters
/// (then `…`), control and other non-printable characters escaped (`\u{1b}`,
/// `\n`). Ruleset files come from customers and are read as root; a message that
/// quoted a whole token could copy a file's contents (or a terminal escape
/// sequence) into logs, `--json` output and CI.
pub(crate) fn excerpt(input: &str) -> String {
    match input.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => escaped(&input[..cut]) + "…",
        None => escaped(input),
    }
}

/// `input` with control and other non-printable characters escaped.
pub(crate) fn escaped(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars() {
        if printable(c) {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    out
}

/// True for a character that shows as itself: not a control, format or other
/// character `escape_debug` escapes (quotes and backslash are printable).
fn printable(c: char) -> bool {
    matches!(c, '"' | '\'' | '\\') || c.escape_debug().len() == 1
}

/// Longest source line a rendered diagnostic shows (characters).
const SNIPPET_LINE_CHARS: usize = 200;
/// Most source bytes a rendered diagnostic shows (the span's lines and one on
/// each side).
const SNIPPET_BYTES: usize = 2000;

/// Whether the lines a render of `span` in `text` shows (its own lines and one
/// line of context on each side) may be shown as they are: short, and nothing
/// a terminal would interpret (tabs excepted).
fn snippet_is_displayable(text: &str, span: SourceSpan) -> bool {
    let start = span.offset().min(text.len());
    let end = (span.offset() + span.len()).min(text.len());
    let line_before = |at: usize| text.get(..at).and_then(|t| t.rfind('\n'));
    // Start of the line before the span's first line.
    let from = line_before(start)
        .and_then(line_before)
        .map_or(0, |nl| nl + 1);
    let line_after = |at: usize| text.get(at..).and_then(|t| t.find('\n')).map(|i| at + i);
    // End of the line after the span's last line.
    let to = line_after(end)
        .and_then(|nl| line_after(nl + 1))
        .unwrap_or(text.len());
    let Some(window) = text.get(from..to) else {
        return false;
    };
    window.len() <= SNIPPET_BYTES
        && window.lines().all(|l| {
            l.chars().count() <= SNIPPET_LINE_CHARS && l.chars().all(|c| c == '\t' || printable(c))
        })
}

/// What went wrong. Stable names, usable in tests and tooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file could not be read.
    Io,
    /// The text does not follow the grammar (unexpected token, missing value, bad literal).
    Syntax,
    /// A prefix length longer than the address (`/33` on IPv4, `/129` on IPv6).
    PrefixTooLong,
    /// A number out of range (port > 65535, protocol > 255, …).
    NumberOutOfRange,
    /// A VLAN id above 4095.
    VlanOutOfRange,
    /// A port range whose low end is above its high end.
    PortRangeReversed,
    /// Ports on a rule whose protocol is not TCP or UDP (or has no protocol).
    PortsWithoutTcpUdp,
    /// TCP flags on a rule whose protocol is not TCP.
    FlagsWithoutTcp,
    /// ICMP type/code on a rule whose protocol is not ICMP / ICMPv6.
    IcmpWithoutIcmp,
    /// `fragment` with ports, TCP flags or an ICMP type/code: a non-first
    /// fragment carries no L4 header, so such a rule could never match.
    FragmentWithL4,
    /// The rule's address families cannot all hold at once (IPv4 source with IPv6
    /// destination, ICMP with IPv6 addresses, …).
    FamilyMismatch,
    /// `@name` where no set `name` is visible.
    UnknownSet,
    /// A set of prefixes used as ports or the reverse, or a set mixing both.
    SetTypeMismatch,
    /// Two sets with the same name in one scope.
    DuplicateSet,
    /// `default` given twice, or missing.
    Default,
    /// Tenant name not matching `[a-z0-9][a-z0-9_-]{0,62}`, or a file name that is not
    /// `<tenant>.fg`.
    TenantName,
    /// Two files declare the same tenant.
    DuplicateTenant,
    /// Two tenants own overlapping prefixes.
    TenantOverlap,
    /// A tenant rule matches destinations outside the tenant's prefixes.
    OutOfScope,
    /// A tenant without any prefix.
    NoPrefixes,
    /// A [`crate::Config`] limit was exceeded.
    Limit,
    /// A tenant claims prefixes outside its `allocate` in gateway.fg, has no
    /// allocation while gateway.fg declares some, or two allocations overlap.
    Allocation,
    /// A tenant exceeds its `quota` in gateway.fg (rules, table bytes, counters).
    Quota,
    /// A rate limit out of bounds: a rate of 0 or beyond what any link
    /// carries, a burst of 0, a `meter-size` of 0 or too large, or a tenant's
    /// `ceiling` above the one its operator set.
    RateLimit,
    /// A valid ruleset could not be compiled into tables (a [`crate::CompileError`]
    /// reported as a diagnostic, at its rule when it has one).
    Compile,
    /// Warning: a rule can never match because an earlier rule catches all its packets.
    Shadowed,
    /// Warning: a prefix with bits set beyond its length (`10.0.0.1/8`).
    HostBits,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Error or warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Stops validation from producing a [`crate::ValidRuleset`].
    Error,
    /// Reported, but the ruleset is usable.
    Warning,
}

/// A human position: `file:line:col`, 1-based, column counted in characters
/// (line 0: the whole file).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// File path as given.
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column (characters).
    pub col: u32,
}

impl Location {
    /// `(line, col)`, or `None` when the location is the whole file (line 0:
    /// for example a file that could not be read).
    pub fn position(&self) -> Option<(u32, u32)> {
        (self.line > 0).then_some((self.line, self.col))
    }
}

impl fmt::Display for Location {
    /// `file:line:col`, or just `file` for an error about the whole file
    /// ([`Location::position`] is `None`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position() {
            Some((line, col)) => write!(f, "{}:{line}:{col}", self.file),
            None => write!(f, "{}", self.file),
        }
    }
}

/// One source file's text and line index.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path as given to the parser.
    pub path: String,
    /// Full text.
    pub text: Arc<str>,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// Indexes `text`.
    pub fn new(path: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        let text: Arc<str> = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        SourceFile {
            path: path.into(),
            text,
            line_starts,
        }
    }

    /// `file:line:col` of a byte offset.
    pub fn location(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self
            .line_starts
            .partition_point(|&s| s <= offset)
            .saturating_sub(1);
        let start = self.line_starts.get(line).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count());
        Location {
            file: self.path.clone(),
            line: u32::try_from(line + 1).unwrap_or(u32::MAX),
            col: u32::try_from(col + 1).unwrap_or(u32::MAX),
        }
    }
}

/// The files a ruleset was parsed from; turns [`Span`]s into [`Location`]s.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl PartialEq for SourceMap {
    fn eq(&self, _: &SourceMap) -> bool {
        true // provenance, not content
    }
}
impl Eq for SourceMap {}

impl SourceMap {
    /// Adds a file and returns its id.
    pub fn add(&mut self, path: impl Into<String>, text: impl Into<Arc<str>>) -> FileId {
        self.files.push(SourceFile::new(path, text));
        FileId::try_from(self.files.len() - 1).unwrap_or(FileId::MAX)
    }

    /// The file with id `id`.
    pub fn file(&self, id: FileId) -> Option<&SourceFile> {
        self.files.get(id as usize)
    }

    /// All files.
    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    /// Builds a diagnostic pointing at `span`.
    pub fn diag(
        &self,
        severity: Severity,
        kind: ErrorKind,
        span: Span,
        message: impl Into<String>,
    ) -> Diag {
        let (location, src) = match self.file(span.file) {
            Some(f) => (
                f.location(span.start as usize),
                Some(NamedSource::new(&f.path, Arc::clone(&f.text))),
            ),
            None => (Location::default(), None),
        };
        Diag {
            kind,
            severity,
            message: message.into(),
            location,
            span: (
                span.start as usize,
                (span.end.saturating_sub(span.start)) as usize,
            )
                .into(),
            src,
            related: None,
            help: None,
        }
    }

    /// An error at `span`.
    pub fn error(&self, kind: ErrorKind, span: Span, message: impl Into<String>) -> Diag {
        self.diag(Severity::Error, kind, span, message)
    }
}

/// A second position a diagnostic refers to (e.g. the rule that shadows).
#[derive(Debug, Clone)]
pub struct Related {
    /// Where.
    pub location: Location,
    /// What it is.
    pub label: String,
    span: SourceSpan,
    same_file: bool,
}

/// One error or warning, with position and source for rendering.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{location}: {message}")]
pub struct Diag {
    /// What kind of problem.
    pub kind: ErrorKind,
    /// Error or warning.
    pub severity: Severity,
    /// What a person needs to know.
    pub message: String,
    /// Where (the caret).
    pub location: Location,
    span: SourceSpan,
    src: Option<NamedSource<Arc<str>>>,
    /// A second position, if any.
    pub related: Option<Related>,
    /// A hint on how to fix it.
    pub help: Option<String>,
}

impl Diag {
    /// A diagnostic without source position (limits over the whole ruleset, I/O).
    pub fn without_source(kind: ErrorKind, file: &str, message: impl Into<String>) -> Diag {
        Diag {
            kind,
            severity: Severity::Error,
            message: message.into(),
            location: Location {
                file: file.to_owned(),
                line: 0,
                col: 0,
            },
            span: (0, 0).into(),
            src: None,
            related: None,
            help: None,
        }
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Diag {
        self.help = Some(help.into());
        self
    }

    /// Adds a second position, resolved through `map`.
    pub fn with_related(mut self, map: &SourceMap, span: Span, label: impl Into<String>) -> Diag {
        let location = map.file(span.file).map(|f| f.location(span.start as usize));
        let same_file = location
            .as_ref()
            .is_some_and(|l| l.file == self.location.file);
        self.related = Some(Related {
            location: location.unwrap_or_default(),
            label: label.into(),
            span: (
                span.start as usize,
                (span.end.saturating_sub(span.start)) as usize,
            )
                .into(),
            same_file,
        });
        self
    }

    /// Renders like a compiler: message, `file:line:col`, the source line and a caret
    /// under the offending token. Plain ASCII, no colour, stable for tests and logs.
    ///
    /// The source lines are left out when they are long or hold characters a
    /// terminal would interpret (the message and position stay): the files come
    /// from customers, and an error must not copy a whole file into a log.
    pub fn render(&self) -> String {
        let handler = miette::GraphicalReportHandler::new_themed(miette::GraphicalTheme::none())
            .with_width(100);
        let plain;
        let shown = match &self.src {
            Some(src) if !snippet_is_displayable(src.inner(), self.span) => {
                plain = Diag {
                    src: None,
                    ..self.clone()
                };
                &plain
            }
            _ => self,
        };
        let mut out = String::new();
        if handler.render_report(&mut out, shown).is_err() {
            out = self.to_string();
        }
        out
    }
}

impl miette::Diagnostic for Diag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(format!("fluxgate::{}", self.kind)))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        let related = self.related.as_ref().filter(|r| !r.same_file);
        match (&self.help, related) {
            (None, None) => None,
            (Some(h), None) => Some(Box::new(h)),
            (h, Some(r)) => Some(Box::new(format!(
                "{}{}: {}",
                h.as_ref().map(|h| format!("{h}\n")).unwrap_or_default(),
                r.location,
                r.label
            ))),
        }
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.src.as_ref().map(|s| s as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        self.src.as_ref()?;
        let primary = LabeledSpan::new_primary_with_span(Some("here".to_owned()), self.span);
        let secondary = self
            .related
            .as_ref()
            .filter(|r| r.same_file)
            .map(|r| LabeledSpan::new_with_span(Some(r.label.clone()), r.span));
        Some(Box::new(std::iter::once(primary).chain(secondary)))
    }
}

/// All errors found (at least one), plus the warnings seen on the way.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} error(s) in ruleset; first: {}", .errors.len(), .errors.first().map(ToString::to_string).unwrap_or_default())]
pub struct Errors {
    /// Errors, in source order within each file.
    pub errors: Vec<Diag>,
    /// Warnings.
    pub warnings: Vec<Diag>,
}

impl Errors {
    /// Wraps one error.
    pub fn one(d: Diag) -> Errors {
        Errors {
            errors: vec![d],
            warnings: Vec::new(),
        }
    }

    /// Renders every error and warning (see [`Diag::render`]).
    pub fn render(&self) -> String {
        self.errors
            .iter()
            .chain(&self.warnings)
            .map(Diag::render)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl miette::Diagnostic for Errors {
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        Some(Box::new(
            self.errors
                .iter()
                .chain(&self.warnings)
                .map(|d| d as &dyn miette::Diagnostic),
        ))
    }
}
