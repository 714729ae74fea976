//! The condition's parser (command line and twin → compiled plan, beside the hot path, never
//! on it): a hand-written recursive descent over the grammar in the module documentation of
//! [`condition`](super). Every error names the 1-based character column where the condition
//! stops making sense and what was expected there.

use super::{CmpOp, Condition, Op, Rhs, MAX_COMPARISONS, MAX_DEPTH, MAX_FIELDS, MAX_LEN};
use crate::pipeline::verdict::FieldPath;

/// Why a condition does not parse: where (1-based character column) and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: expected {expected}, found {found}")]
pub struct ConditionError {
    pub column: usize,
    pub expected: &'static str,
    /// What stands there instead (`the end`, or the token quoted).
    pub found: String,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    LParen,
    RParen,
    Cmp(CmpOp),
    And,
    Or,
    Not,
    Threshold,
    Number(f64),
    Path(Vec<String>),
    /// A character no token starts with: the parser says what it expected there.
    Other,
    End,
}

/// A token and the byte offset where it starts.
struct Lexed {
    tok: Tok,
    at: usize,
    text: String,
}

const OPERAND: &str = "a field, a number or `threshold`";

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Lexed>,
    i: usize,
    program: Vec<Op>,
    fields: Vec<FieldPath>,
    comparisons: usize,
}

/// Parses and compiles `src` (see the module documentation for the grammar).
pub fn parse(src: &str) -> Result<Condition, ConditionError> {
    if src.len() > MAX_LEN {
        return Err(ConditionError {
            column: src[..floor_char(src, MAX_LEN)].chars().count() + 1,
            expected: "the end (a condition has at most 4096 bytes)",
            found: "more".into(),
        });
    }
    let toks = lex(src)?;
    let mut p = Parser {
        src,
        toks,
        i: 0,
        program: Vec::new(),
        fields: Vec::new(),
        comparisons: 0,
    };
    if p.peek() == &Tok::End {
        return Err(p.error("a comparison such as `machine.temperature > threshold`"));
    }
    p.or(0)?;
    if p.peek() != &Tok::End {
        return Err(p.error("`and`, `or`, `)` or the end"));
    }
    let uses_threshold = p.program.iter().any(|op| {
        matches!(
            op,
            Op::Cmp {
                rhs: Rhs::Threshold,
                ..
            }
        )
    });
    Ok(Condition::compiled(
        src.trim().to_string(),
        p.fields,
        p.program,
        uses_threshold,
    ))
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i].tok
    }

    fn error(&self, expected: &'static str) -> ConditionError {
        let t = &self.toks[self.i];
        ConditionError {
            column: self.src[..t.at].chars().count() + 1,
            expected,
            found: if t.tok == Tok::End {
                "the end".into()
            } else {
                format!("`{}`", t.text)
            },
        }
    }

    fn or(&mut self, depth: usize) -> Result<(), ConditionError> {
        self.chain(depth, Tok::Or, Op::Or, Self::and)
    }

    fn and(&mut self, depth: usize) -> Result<(), ConditionError> {
        self.chain(depth, Tok::And, Op::And, Self::unary)
    }

    /// `next (tok next)*`, each `tok` compiled to `op` after its operands (left-associative).
    fn chain(
        &mut self,
        depth: usize,
        tok: Tok,
        op: Op,
        next: fn(&mut Self, usize) -> Result<(), ConditionError>,
    ) -> Result<(), ConditionError> {
        next(self, depth)?;
        while *self.peek() == tok {
            self.i += 1;
            next(self, depth)?;
            self.program.push(op);
        }
        Ok(())
    }

    fn unary(&mut self, depth: usize) -> Result<(), ConditionError> {
        if depth >= MAX_DEPTH {
            return Err(self.error("less nesting (at most 32 levels of `not` and parentheses)"));
        }
        match self.peek() {
            Tok::Not => {
                self.i += 1;
                self.unary(depth + 1)?;
                self.program.push(Op::Not);
                Ok(())
            }
            Tok::LParen => {
                self.i += 1;
                self.or(depth + 1)?;
                if self.peek() != &Tok::RParen {
                    return Err(self.error("`)`, `and` or `or`"));
                }
                self.i += 1;
                Ok(())
            }
            _ => self.comparison(),
        }
    }

    fn comparison(&mut self) -> Result<(), ConditionError> {
        let left_at = self.i;
        let left = self.operand()?;
        let Tok::Cmp(op) = *self.peek() else {
            return Err(self.error("a comparison operator (> >= < <= == !=)"));
        };
        self.i += 1;
        let right_at = self.i;
        let right = self.operand()?;
        let (path, op, rhs) = match (left, right) {
            (Operand::Field(p), Operand::Value(v)) => (p, op, v),
            (Operand::Value(v), Operand::Field(p)) => (p, op.flipped(), v),
            (Operand::Field(_), Operand::Field(_)) => {
                self.i = right_at;
                return Err(self.error("a number or `threshold` (a field compares with a value, not with another field)"));
            }
            (Operand::Value(_), Operand::Value(_)) => {
                self.i = left_at;
                return Err(self.error("a field on one side of the comparison"));
            }
        };
        self.comparisons += 1;
        if self.comparisons > MAX_COMPARISONS {
            self.i = left_at;
            return Err(self.error("fewer comparisons (at most 64)"));
        }
        let slot = match self.fields.iter().position(|f| f.keys() == path.as_slice()) {
            Some(s) => s,
            None => {
                if self.fields.len() == MAX_FIELDS {
                    self.i = left_at;
                    return Err(self.error("fewer distinct fields (at most 32)"));
                }
                let joined = path.join(".");
                self.fields
                    .push(FieldPath::from_keys(path).map_err(|_| ConditionError {
                        column: 1,
                        expected: "a field path",
                        found: joined,
                    })?);
                self.fields.len() - 1
            }
        };
        self.program.push(Op::Cmp {
            slot: slot as u8,
            op,
            rhs,
        });
        Ok(())
    }

    fn operand(&mut self) -> Result<Operand, ConditionError> {
        let op = match self.peek() {
            Tok::Path(p) => Operand::Field(p.clone()),
            Tok::Number(n) => Operand::Value(Rhs::Const(*n)),
            Tok::Threshold => Operand::Value(Rhs::Threshold),
            _ => return Err(self.error(OPERAND)),
        };
        self.i += 1;
        Ok(op)
    }
}

enum Operand {
    Field(Vec<String>),
    Value(Rhs),
}

fn lex(src: &str) -> Result<Vec<Lexed>, ConditionError> {
    let b = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    let err = |at: usize, expected: &'static str, found: String| ConditionError {
        column: src[..at].chars().count() + 1,
        expected,
        found,
    };
    let found_at = |at: usize| match src[at..].chars().next() {
        Some(c) => format!("`{c}`"),
        None => "the end".into(),
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        let tok = match c {
            b'(' => {
                i += 1;
                Tok::LParen
            }
            b')' => {
                i += 1;
                Tok::RParen
            }
            b'>' | b'<' | b'=' | b'!' => {
                let two = b.get(i + 1) == Some(&b'=');
                let op = match (c, two) {
                    (b'>', false) => CmpOp::Gt,
                    (b'>', true) => CmpOp::Ge,
                    (b'<', false) => CmpOp::Lt,
                    (b'<', true) => CmpOp::Le,
                    (b'=', true) => CmpOp::Eq,
                    (b'!', true) => CmpOp::Ne,
                    _ => {
                        return Err(err(
                            start,
                            "a comparison operator (> >= < <= == !=)",
                            found_at(start),
                        ))
                    }
                };
                i += 1 + usize::from(two);
                Tok::Cmp(op)
            }
            b'-' | b'0'..=b'9' => {
                let end = number_end(b, i).ok_or_else(|| {
                    err(start, "a number such as 1.5, -3 or 2e3", found_at(start))
                })?;
                if b.get(end).is_some_and(|&c| is_word(c) || c == b'.') {
                    return Err(err(
                        end,
                        "a space or an operator after the number",
                        found_at(end),
                    ));
                }
                let text = &src[start..end];
                let v: f64 = text.parse().unwrap_or(f64::INFINITY);
                if !v.is_finite() {
                    return Err(err(
                        start,
                        "a number within the f64 range",
                        format!("`{text}`"),
                    ));
                }
                i = end;
                Tok::Number(v)
            }
            b'"' | b'A'..=b'Z' | b'a'..=b'z' | b'_' => {
                let mut keys = Vec::new();
                let mut first = true;
                loop {
                    let seg_at = i;
                    let key = match b.get(i) {
                        Some(b'"') => {
                            let (key, end) = quoted(src, i).ok_or_else(|| {
                                err(
                                    seg_at,
                                    "a quoted key closed by `\"` (JSON escapes)",
                                    found_at(seg_at),
                                )
                            })?;
                            i = end;
                            key
                        }
                        Some(&c) if is_word(c) && (!first || !c.is_ascii_digit()) => {
                            while b.get(i).is_some_and(|&c| is_word(c)) {
                                i += 1;
                            }
                            src[seg_at..i].to_string()
                        }
                        _ => return Err(err(seg_at, "a key after `.`", found_at(seg_at))),
                    };
                    keys.push(key);
                    first = false;
                    if b.get(i) == Some(&b'.') {
                        i += 1;
                    } else {
                        break;
                    }
                }
                let bare = b[start] != b'"' && keys.len() == 1;
                match keys[0].as_str() {
                    "and" if bare => Tok::And,
                    "or" if bare => Tok::Or,
                    "not" if bare => Tok::Not,
                    "threshold" if bare => Tok::Threshold,
                    _ => Tok::Path(keys),
                }
            }
            _ => {
                i += src[i..].chars().next().map_or(1, char::len_utf8);
                Tok::Other
            }
        };
        toks.push(Lexed {
            tok,
            at: start,
            text: src[start..i].to_string(),
        });
    }
    toks.push(Lexed {
        tok: Tok::End,
        at: src.len(),
        text: String::new(),
    });
    Ok(toks)
}

/// Letters, digits, `_` and `-`: what an unquoted key is made of.
fn is_word(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

/// The end of a JSON number starting at `i` (`-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?`).
fn number_end(b: &[u8], mut i: usize) -> Option<usize> {
    let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            while digit(i) {
                i += 1;
            }
        }
        _ => return None,
    }
    if b.get(i) == Some(&b'.') {
        if !digit(i + 1) {
            return None;
        }
        i += 1;
        while digit(i) {
            i += 1;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        if matches!(b.get(j), Some(b'+' | b'-')) {
            j += 1;
        }
        if !digit(j) {
            return None;
        }
        while digit(j) {
            j += 1;
        }
        i = j;
    }
    Some(i)
}

/// A JSON string starting at `i`: its decoded text and the offset after its closing quote.
fn quoted(src: &str, i: usize) -> Option<(String, usize)> {
    let b = src.as_bytes();
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'"' => {
                let key: String = serde_json::from_str(&src[i..=j]).ok()?;
                return (!key.is_empty()).then_some((key, j + 1));
            }
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
    None
}
