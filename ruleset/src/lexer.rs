//! Tokenizer for `.fg` files.
//!
//! The lexer is deliberately dumb: a *word* is any run of characters that are not
//! ASCII whitespace or one of `{ } , ; # " @`, so `10.0.0.0/8`, `2001:db8::/32`, `1024-65535`
//! and `S/SA` are single words the parser interprets by context. Newlines (and `;`)
//! end statements. `#` starts a comment to the end of the line.

/// Kind of token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok {
    /// A bare word (keyword, number, address, range…).
    Word,
    /// A double-quoted string; the token text excludes the quotes.
    Str,
    /// `@name`; the token text excludes the `@`.
    SetRef,
    /// `{`
    LBrace,
    /// `}`
    RBrace,
    /// `,`
    Comma,
    /// End of statement: newline or `;`.
    End,
    /// End of input.
    Eof,
}

/// A token: kind and byte range in the source (12 bytes: a 100k-rule file has millions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    /// Kind.
    pub tok: Tok,
    /// Byte offset of the token's first byte (including a quote or `@`).
    pub start: u32,
    /// Byte offset one past the token's last byte.
    pub end: u32,
}

impl Token {
    /// Byte range of the token's text: without the quotes of a string or the `@`.
    pub fn text(&self) -> (usize, usize) {
        let (s, e) = (self.start as usize, self.end as usize);
        match self.tok {
            Tok::Str => (s + 1, e.saturating_sub(1).max(s + 1)),
            Tok::SetRef => (s + 1, e),
            _ => (s, e),
        }
    }

    /// An empty token of kind `tok` at `at`.
    pub fn at(tok: Tok, at: usize) -> Token {
        let at = u32::try_from(at).unwrap_or(u32::MAX);
        Token {
            tok,
            start: at,
            end: at,
        }
    }
}

/// A lexical error: message and byte range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LexError {
    /// What went wrong.
    pub message: String,
    /// Byte offset.
    pub start: usize,
    /// Byte offset one past.
    pub end: usize,
}

/// Word bytes: everything but ASCII whitespace and `{ } , ; # " @`. Bytes of non-ASCII
/// characters are word bytes, so token boundaries always fall on ASCII bytes (valid
/// char boundaries) and the scan can work on bytes.
fn is_word_byte(c: u8) -> bool {
    !c.is_ascii_whitespace() && !matches!(c, b'{' | b'}' | b',' | b';' | b'#' | b'"' | b'@')
}

/// Splits `src` into tokens, ending with [`Tok::Eof`].
pub fn lex(src: &str) -> Result<Vec<Token>, LexError> {
    if u32::try_from(src.len()).is_err() {
        return Err(LexError {
            message: "file larger than 4 GiB".into(),
            start: 0,
            end: 0,
        });
    }
    let b = src.as_bytes();
    // offsets fit in u32 (checked above)
    let tok = |tok, start: usize, end: usize| Token {
        tok,
        start: start as u32,
        end: end as u32,
    };
    let mut out = Vec::with_capacity(src.len() / 6);
    let single = |t, i: usize| tok(t, i, i + 1);
    let word_end = |mut j: usize| {
        while j < b.len() && is_word_byte(b[j]) {
            j += 1;
        }
        j
    };
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match c {
            b'\n' | b';' => out.push(single(Tok::End, i)),
            b'{' => out.push(single(Tok::LBrace, i)),
            b'}' => out.push(single(Tok::RBrace, i)),
            b',' => out.push(single(Tok::Comma, i)),
            b'#' => {
                while i + 1 < b.len() && b[i + 1] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                let close = b[i + 1..].iter().position(|&c| c == b'"' || c == b'\n');
                match close.map(|k| i + 1 + k) {
                    Some(j) if b[j] == b'"' => {
                        out.push(tok(Tok::Str, i, j + 1));
                        i = j;
                    }
                    _ => {
                        return Err(LexError {
                            message: "unterminated string: a closing `\"` is missing on this line"
                                .into(),
                            start: i,
                            end: i + 1,
                        });
                    }
                }
            }
            b'@' => {
                let end = word_end(i + 1);
                if end == i + 1 {
                    return Err(LexError {
                        message: "expected a set name after `@`".into(),
                        start: i,
                        end: i + 1,
                    });
                }
                out.push(tok(Tok::SetRef, i, end));
                i = end - 1;
            }
            c if c.is_ascii_whitespace() => {}
            _ => {
                let end = word_end(i + 1);
                out.push(tok(Tok::Word, i, end));
                i = end - 1;
            }
        }
        i += 1;
    }
    out.push(Token::at(Tok::Eof, src.len()));
    Ok(out)
}
