//! The rate-limit statements of the parser: a rule's `limit rate over …`, a
//! tenant's `ceiling`, the `ceiling` of a `quota` and gateway.fg's
//! `meter-size` (grammar in [`crate::limit`]).

use super::{PResult, Parser};
use crate::error::{ErrorKind, excerpt};
use crate::lexer::Tok;
use crate::limit::{Ceiling, Limit, MAX_METER_SIZE, byte_scale, parse_per_source, parse_rate};
use crate::model::Span;

impl<'a> Parser<'a> {
    /// True when the next token is a word starting with a digit (a rate).
    pub(super) fn next_is_number(&self) -> bool {
        let t = self.peek();
        t.tok == Tok::Word && self.text(t).starts_with(|c: char| c.is_ascii_digit())
    }

    /// `RATE [burst N UNIT]`, checked ([`Limit::check`]), with the span of the
    /// rate.
    fn rate_and_burst(&mut self) -> PResult<(Limit, Span)> {
        let (w, s) = self.word("a rate like `2000/second` or `20 mbytes/second`")?;
        let (rate, span) = if w.contains('/') {
            let r = parse_rate(w, None).map_err(|(m, _)| self.err(ErrorKind::Syntax, s, m))?;
            (r, s)
        } else {
            let (u, us) = self.word("a rate unit like `mbytes/second`")?;
            let r = parse_rate(w, Some(u)).map_err(|(m, on_unit)| {
                self.err(ErrorKind::Syntax, if on_unit { us } else { s }, m)
            })?;
            (r, s.to(us))
        };
        rate.check()
            .map_err(|m| self.err(ErrorKind::RateLimit, span, m))?;
        let mut limit = Limit {
            rate,
            burst: None,
            per_source: None,
        };
        let t = self.peek();
        if t.tok == Tok::Word && self.text(t) == "burst" {
            self.bump();
            let (n, ns) = self.word("a burst size")?;
            let (unit, us) = self.word(if rate.bytes {
                "`bytes`, `kbytes`, `mbytes` or `gbytes`"
            } else {
                "`packets`"
            })?;
            let scale = if rate.bytes {
                byte_scale(unit)
            } else {
                (unit == "packets").then_some(1)
            };
            let Some(scale) = scale else {
                let want = if rate.bytes {
                    "a byte unit (`bytes`, `kbytes`, `mbytes`, `gbytes`) for a byte rate"
                } else {
                    "`packets` for a packet rate"
                };
                return Err(self.err(
                    ErrorKind::Syntax,
                    us,
                    format!("expected {want}, found `{}`", excerpt(unit)),
                ));
            };
            let burst = n
                .parse::<u64>()
                .ok()
                .filter(|_| n.bytes().all(|c| c.is_ascii_digit()))
                .and_then(|n| n.checked_mul(scale))
                .ok_or_else(|| {
                    self.err(
                        ErrorKind::Syntax,
                        ns,
                        format!("expected a burst size, found `{}`", excerpt(n)),
                    )
                })?;
            limit.burst = Some(burst);
            limit
                .check()
                .map_err(|m| self.err(ErrorKind::RateLimit, ns.to(us), m))?;
        }
        Ok((limit, span))
    }

    /// `limit rate over RATE [burst N UNIT] [per saddr/N[/M]]` in a rule (the
    /// `limit` keyword not yet taken).
    pub(super) fn limit_clause(&mut self) -> PResult<Limit> {
        self.bump();
        for kw in ["rate", "over"] {
            let t = self.peek();
            if t.tok == Tok::Word && self.text(t) == kw {
                self.bump();
                continue;
            }
            let mut d = self.unexpected(t, &format!("`{kw}`"));
            if kw == "over" {
                d = Box::new(d.with_help(
                    "fluxgate limits apply to packets over the rate: \
                     `limit rate over 2000/second drop`",
                ));
            }
            return Err(d);
        }
        let (mut limit, _) = self.rate_and_burst()?;
        let t = self.peek();
        if t.tok == Tok::Word && self.text(t) == "per" {
            self.bump();
            let (w, s) = self.word("`saddr/N`")?;
            limit.per_source =
                Some(parse_per_source(w).map_err(|m| self.err(ErrorKind::Syntax, s, m))?);
        }
        Ok(limit)
    }

    /// `RATE [burst …] [RATE [burst …]]`: a packet rate, a byte rate, or both.
    pub(super) fn ceiling_rates(&mut self) -> PResult<Ceiling> {
        let mut c = Ceiling::default();
        loop {
            let (limit, span) = self.rate_and_burst()?;
            let slot = if limit.rate.bytes {
                &mut c.bytes
            } else {
                &mut c.packets
            };
            if slot.is_some() {
                let kind = if limit.rate.bytes { "byte" } else { "packet" };
                return Err(self.err(
                    ErrorKind::Syntax,
                    span,
                    format!("a ceiling has at most one {kind} rate"),
                ));
            }
            *slot = Some(limit);
            if !self.next_is_number() {
                return Ok(c);
            }
        }
    }

    /// `ceiling RATE …` in a tenant file.
    pub(super) fn ceiling_stmt(
        &mut self,
        out: &mut Ceiling,
        out_span: &mut Option<Span>,
        span: Span,
    ) -> PResult<()> {
        self.bump();
        if out_span.is_some() {
            return Err(self.err(ErrorKind::Syntax, span, "`ceiling` given twice"));
        }
        *out = self.ceiling_rates()?;
        *out_span = Some(span);
        self.end_of_statement()
    }

    /// `meter-size N` in gateway.fg.
    pub(super) fn meter_size_stmt(
        &mut self,
        out: &mut Option<(u64, Span)>,
        span: Span,
    ) -> PResult<()> {
        self.bump();
        if out.is_some() {
            return Err(self.err(ErrorKind::Syntax, span, "`meter-size` given twice"));
        }
        let (w, s) = self.word("a number of entries")?;
        let n = w
            .parse::<u64>()
            .ok()
            .filter(|_| w.bytes().all(|c| c.is_ascii_digit()))
            .ok_or_else(|| {
                self.err(
                    ErrorKind::Syntax,
                    s,
                    format!("expected a number of entries, found `{}`", excerpt(w)),
                )
            })?;
        if n == 0 || n > MAX_METER_SIZE {
            return Err(self.err(
                ErrorKind::RateLimit,
                s,
                format!("`meter-size` must be 1 to {MAX_METER_SIZE} entries, found {n}"),
            ));
        }
        *out = Some((n, s));
        self.end_of_statement()
    }
}
