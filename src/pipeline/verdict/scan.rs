//! The verdict's slow path (hot path fallback inside `pipeline::verdict`): a small validating
//! scanner for the JSON grammar exactly as CPython's `json.loads` reads it, run only when
//! simd-json refuses a payload. It decides what Python would: either "not JSON" with the byte
//! offset of the first error, or the outcome for the field (last duplicate key wins), including
//! what simd-json cannot represent — integers of any length (compared exactly), exponents
//! beyond the `f64` range (`1e400` is +inf), and lone UTF-16 surrogate escapes (`"\ud800"`).
//!
//! It is iterative (no recursion: deep nesting cannot overflow the stack) and allocation-free:
//! the per-level outcomes live in a `Vec` the caller reuses.

use std::fmt;

use super::number::decimal_int_gt;

/// Deepest nesting accepted (arrays and objects). CPython's `json` raises `RecursionError`
/// near its recursion limit of 1000; we draw the line at exactly 1000 levels, on both paths.
pub(crate) const MAX_DEPTH: usize = 1000;

/// Longest integer literal accepted: CPython (3.11+, and the 3.7.14+/3.8.14+/3.9.14+/3.10.7+
/// security releases) refuses to convert decimal strings of more than 4300 digits to `int`,
/// so `json.loads` raises `ValueError` on them.
pub(crate) const MAX_INT_DIGITS: usize = 4300;

/// The JSON type of a value, as named in rejection details.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    String,
    Number,
    Bool,
    Null,
    Object,
    Array,
}

impl Kind {
    /// "a string", "null", …: reads after "is".
    pub(crate) fn described(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::Null => "null",
            Kind::Object => "an object",
            Kind::Array => "an array",
        }
    }
}

/// A number the scan found at the path: nearest `f64`, and its literal's bytes (`start..end`,
/// sign included; `float` when it has a fraction or an exponent).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Scanned {
    pub(crate) value: f64,
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) float: bool,
}

/// What a valid document holds at the configured path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// The top level is not an object.
    TopLevel(Kind),
    /// The path is absent, or crosses a value that is not an object.
    Absent,
    /// The field is a number; `alert` if it is strictly greater than the threshold.
    Number { alert: bool },
    /// The field is present but is not a number.
    NotNumber(Kind),
}

/// Why a document is not JSON (as Python reads it, minus NaN/Infinity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Problem {
    Bom,
    Empty,
    ExpectedValue,
    ExpectedKey,
    ExpectedColon,
    ExpectedCommaOrBrace,
    ExpectedCommaOrBracket,
    Trailing,
    Unterminated,
    ControlChar(u8),
    InvalidEscape,
    InvalidUnicodeEscape,
    NonFinite(&'static str),
    TooDeep,
    IntTooLong(usize),
}

/// The first syntax error of a document and its byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub(crate) at: usize,
    pub(crate) problem: Problem,
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = self.at;
        match self.problem {
            Problem::Bom => write!(f, "not JSON: UTF-8 byte order mark at byte {at}"),
            Problem::Empty => write!(f, "not JSON: empty body"),
            Problem::ExpectedValue => write!(f, "not JSON: expecting a value at byte {at}"),
            Problem::ExpectedKey => write!(
                f,
                "not JSON: expecting a property name in double quotes at byte {at}"
            ),
            Problem::ExpectedColon => write!(f, "not JSON: expecting ':' at byte {at}"),
            Problem::ExpectedCommaOrBrace => {
                write!(f, "not JSON: expecting ',' or '}}' at byte {at}")
            }
            Problem::ExpectedCommaOrBracket => {
                write!(f, "not JSON: expecting ',' or ']' at byte {at}")
            }
            Problem::Trailing => write!(f, "not JSON: trailing characters at byte {at}"),
            Problem::Unterminated => {
                write!(f, "not JSON: unterminated string starting at byte {at}")
            }
            Problem::ControlChar(c) => write!(
                f,
                "not JSON: unescaped control character U+{c:04X} in a string at byte {at}"
            ),
            Problem::InvalidEscape => write!(f, "not JSON: invalid escape at byte {at}"),
            Problem::InvalidUnicodeEscape => {
                write!(f, "not JSON: invalid \\uXXXX escape at byte {at}")
            }
            Problem::NonFinite(lit) => {
                write!(f, "not JSON: {lit} is not a JSON number at byte {at}")
            }
            Problem::TooDeep => write!(
                f,
                "not JSON: nested deeper than {MAX_DEPTH} levels at byte {at}"
            ),
            Problem::IntTooLong(digits) => write!(
                f,
                "not JSON: integer of {digits} digits at byte {at} exceeds Python's \
                 {MAX_INT_DIGITS}-digit limit"
            ),
        }
    }
}

/// The role of the value about to be parsed, relative to the field path.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// The document's top-level value.
    Root,
    /// The value reached by the first `level` keys of the path (`level == keys.len()`: the
    /// field itself).
    Path(usize),
    /// Anything else: validated, not looked at.
    Other,
}

/// One bit per open container: set for an object, clear for an array.
struct Containers([u64; MAX_DEPTH.div_ceil(64)]);

impl Containers {
    fn set(&mut self, depth: usize, object: bool) {
        let (w, b) = (depth / 64, depth % 64);
        if object {
            self.0[w] |= 1 << b;
        } else {
            self.0[w] &= !(1 << b);
        }
    }

    fn is_object(&self, depth: usize) -> bool {
        self.0[depth / 64] & (1 << (depth % 64)) != 0
    }
}

/// Scans `s` (valid UTF-8) as Python's `json.loads` would and reports what it holds at the
/// path `keys` (not empty), comparing a numeric field with `threshold`.
///
/// `results` is scratch space reused across calls (one outcome per path level). When the
/// outcome is [`Found::Number`], `value` holds the number (correctly rounded to an `f64`) and
/// where its literal is.
pub(crate) fn scan(
    s: &[u8],
    keys: &[String],
    threshold: f64,
    results: &mut Vec<Found>,
    value: &mut Scanned,
) -> Result<Found, SyntaxError> {
    let n = keys.len();
    debug_assert!(n > 0, "a field path has at least one key");
    results.clear();
    results.resize(n, Found::Absent);
    if s.starts_with(b"\xEF\xBB\xBF") {
        return Err(SyntaxError {
            at: 0,
            problem: Problem::Bom,
        });
    }
    if s.is_empty() {
        return Err(SyntaxError {
            at: 0,
            problem: Problem::Empty,
        });
    }
    let mut p = Parser { s, i: 0 };
    p.skip_ws();

    let mut containers = Containers([0; MAX_DEPTH.div_ceil(64)]);
    // Open containers; the bottom `path_depth` of them are the objects on the path.
    let mut depth = 0usize;
    let mut path_depth = 0usize;
    let mut top = Kind::Object;
    let mut role = Role::Root;
    let mut want_value = true;

    loop {
        if want_value {
            let at = p.i;
            let kind = match p.peek() {
                Some(c @ (b'{' | b'[')) => {
                    let object = c == b'{';
                    if depth == MAX_DEPTH {
                        return Err(p.error(at, Problem::TooDeep));
                    }
                    let kind = if object { Kind::Object } else { Kind::Array };
                    match role {
                        Role::Root => {
                            top = kind;
                            if object {
                                path_depth = 1;
                            }
                        }
                        Role::Path(level) if level == n => {
                            results[n - 1] = Found::NotNumber(kind);
                        }
                        Role::Path(level) => {
                            if object {
                                results[level] = Found::Absent;
                                path_depth = depth + 1;
                            } else {
                                results[level - 1] = Found::Absent;
                            }
                        }
                        Role::Other => {}
                    }
                    containers.set(depth, object);
                    depth += 1;
                    p.i += 1;
                    p.skip_ws();
                    let close = if object { b'}' } else { b']' };
                    if p.peek() == Some(close) {
                        p.i += 1;
                        close_container(&mut depth, &mut path_depth, results);
                        want_value = false;
                    } else if object {
                        role = p.key(depth, path_depth, keys)?;
                    } else {
                        role = Role::Other;
                    }
                    continue;
                }
                Some(b'"') => {
                    p.string()?;
                    Kind::String
                }
                Some(b't') if p.rest().starts_with(b"true") => {
                    p.i += 4;
                    Kind::Bool
                }
                Some(b'f') if p.rest().starts_with(b"false") => {
                    p.i += 5;
                    Kind::Bool
                }
                Some(b'n') if p.rest().starts_with(b"null") => {
                    p.i += 4;
                    Kind::Null
                }
                Some(b'N') if p.rest().starts_with(b"NaN") => {
                    return Err(p.error(at, Problem::NonFinite("NaN")));
                }
                Some(b'I') if p.rest().starts_with(b"Infinity") => {
                    return Err(p.error(at, Problem::NonFinite("Infinity")));
                }
                Some(b'-') if p.rest().starts_with(b"-Infinity") => {
                    return Err(p.error(at, Problem::NonFinite("-Infinity")));
                }
                Some(b'-' | b'0'..=b'9') => {
                    let field = matches!(role, Role::Path(level) if level == n);
                    let start = p.i;
                    let (alert, v, float) = p.number(field, threshold)?;
                    if field {
                        results[n - 1] = Found::Number { alert };
                        *value = Scanned {
                            value: v,
                            start,
                            end: p.i,
                            float,
                        };
                    }
                    Kind::Number
                }
                _ => return Err(p.error(at, Problem::ExpectedValue)),
            };
            match role {
                Role::Root => top = kind,
                Role::Path(level) if level == n => {
                    if kind != Kind::Number {
                        results[n - 1] = Found::NotNumber(kind);
                    }
                }
                Role::Path(level) => results[level - 1] = Found::Absent,
                Role::Other => {}
            }
            want_value = false;
        } else {
            // A value just ended inside the container at `depth - 1` (or at the top level).
            p.skip_ws();
            if depth == 0 {
                if p.i != s.len() {
                    return Err(p.error(p.i, Problem::Trailing));
                }
                return Ok(if top == Kind::Object {
                    results[0]
                } else {
                    Found::TopLevel(top)
                });
            }
            let object = containers.is_object(depth - 1);
            match p.peek() {
                Some(b',') => {
                    p.i += 1;
                    p.skip_ws();
                    role = if object {
                        p.key(depth, path_depth, keys)?
                    } else {
                        Role::Other
                    };
                    want_value = true;
                }
                Some(b'}') if object => {
                    p.i += 1;
                    close_container(&mut depth, &mut path_depth, results);
                }
                Some(b']') if !object => {
                    p.i += 1;
                    close_container(&mut depth, &mut path_depth, results);
                }
                _ => {
                    let problem = if object {
                        Problem::ExpectedCommaOrBrace
                    } else {
                        Problem::ExpectedCommaOrBracket
                    };
                    return Err(p.error(p.i, problem));
                }
            }
        }
    }
}

/// Pops the top container; an object on the path hands its outcome to its parent (the latest
/// occurrence of a key overwrites earlier ones: last wins).
fn close_container(depth: &mut usize, path_depth: &mut usize, results: &mut [Found]) {
    *depth -= 1;
    let level = *depth;
    if level < *path_depth {
        *path_depth = level;
        if level > 0 {
            results[level - 1] = results[level];
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.s.get(self.i..).unwrap_or_default()
    }

    fn error(&self, at: usize, problem: Problem) -> SyntaxError {
        SyntaxError { at, problem }
    }

    /// JSON whitespace as Python's `json` has it: space, tab, LF, CR.
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// Parses `"key" :` and whitespace, inside the object at `depth - 1`; returns the role of
    /// the value that follows.
    fn key(
        &mut self,
        depth: usize,
        path_depth: usize,
        keys: &[String],
    ) -> Result<Role, SyntaxError> {
        if self.peek() != Some(b'"') {
            return Err(self.error(self.i, Problem::ExpectedKey));
        }
        let (raw, escaped) = self.string()?;
        // The innermost open object is on the path iff every open container is.
        let role = if depth == path_depth {
            let level = depth - 1;
            if key_eq(raw, escaped, &keys[level]) {
                Role::Path(level + 1)
            } else {
                Role::Other
            }
        } else {
            Role::Other
        };
        self.skip_ws();
        if self.peek() != Some(b':') {
            return Err(self.error(self.i, Problem::ExpectedColon));
        }
        self.i += 1;
        self.skip_ws();
        Ok(role)
    }

    /// Validates a string starting at the opening quote (strict mode: no raw control
    /// characters); returns its raw contents and whether it holds escapes.
    fn string(&mut self) -> Result<(&'a [u8], bool), SyntaxError> {
        let start = self.i;
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            match self.s.get(i).copied() {
                None => return Err(self.error(start, Problem::Unterminated)),
                Some(b'"') => {
                    self.i = i + 1;
                    return Ok((&self.s[start + 1..i], escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    match self.s.get(i + 1).copied() {
                        None => return Err(self.error(start, Problem::Unterminated)),
                        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => i += 2,
                        Some(b'u') => {
                            if hex4(self.s.get(i + 2..i + 6)).is_none() {
                                return Err(self.error(i, Problem::InvalidUnicodeEscape));
                            }
                            i += 6;
                        }
                        Some(_) => return Err(self.error(i, Problem::InvalidEscape)),
                    }
                }
                Some(c) if c < 0x20 => return Err(self.error(i, Problem::ControlChar(c))),
                Some(_) => i += 1,
            }
        }
    }

    /// Parses a number (`-?(0|[1-9]\d*)(\.\d+)?([eE][-+]?\d+)?`, Python's `NUMBER_RE`); when
    /// `field` is set, returns whether it is strictly greater than `threshold`, and its value
    /// as the nearest `f64`.
    fn number(&mut self, field: bool, threshold: f64) -> Result<(bool, f64, bool), SyntaxError> {
        let s = self.s;
        let digit = |i: usize| s.get(i).is_some_and(u8::is_ascii_digit);
        let start = self.i;
        let negative = s[start] == b'-';
        let int_start = start + usize::from(negative);
        let mut i = int_start;
        match s.get(i) {
            Some(b'0') => i += 1,
            Some(b'1'..=b'9') => {
                i += 1;
                while digit(i) {
                    i += 1;
                }
            }
            _ => return Err(self.error(start, Problem::ExpectedValue)),
        }
        let int_end = i;
        let mut float = false;
        if s.get(i) == Some(&b'.') && digit(i + 1) {
            float = true;
            i += 2;
            while digit(i) {
                i += 1;
            }
        }
        if let Some(b'e' | b'E') = s.get(i) {
            let mut j = i + 1;
            if let Some(b'+' | b'-') = s.get(j) {
                j += 1;
            }
            if digit(j) {
                float = true;
                while digit(j) {
                    j += 1;
                }
                i = j;
            }
        }
        let digits = &s[int_start..int_end];
        if !float && digits.len() > MAX_INT_DIGITS {
            return Err(self.error(start, Problem::IntTooLong(digits.len())));
        }
        self.i = i;
        if !field {
            return Ok((false, 0.0, float));
        }
        // Correctly rounded, like Python's float(); out of range gives ±inf or ±0.
        let text = std::str::from_utf8(&s[start..i]).unwrap_or_default();
        let v = text.parse::<f64>().unwrap_or(f64::NAN);
        Ok(if float {
            (v > threshold, v, true)
        } else {
            (decimal_int_gt(negative, digits, threshold), v, false)
        })
    }
}

/// The value of four hex digits.
fn hex4(digits: Option<&[u8]>) -> Option<u32> {
    let digits = digits?;
    if digits.len() != 4 {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &d| {
        let v = (d as char).to_digit(16)?;
        Some(acc * 16 + v)
    })
}

/// Whether the raw contents of a (validated) JSON string decode to `key`. A lone surrogate
/// escape decodes to a code point no Rust string holds, so it never matches.
fn key_eq(raw: &[u8], escaped: bool, key: &str) -> bool {
    let key = key.as_bytes();
    if !escaped {
        return raw == key;
    }
    let (mut i, mut j) = (0, 0);
    while i < raw.len() {
        if raw[i] != b'\\' {
            if key.get(j) != Some(&raw[i]) {
                return false;
            }
            i += 1;
            j += 1;
            continue;
        }
        let ch = match raw.get(i + 1) {
            Some(b'u') => {
                let Some(unit) = hex4(raw.get(i + 2..i + 6)) else {
                    return false;
                };
                i += 6;
                let code = if (0xD800..0xDC00).contains(&unit) {
                    let low = raw
                        .get(i..i + 2)
                        .filter(|u| *u == b"\\u")
                        .and_then(|_| hex4(raw.get(i + 2..i + 6)))
                        .filter(|low| (0xDC00..0xE000).contains(low));
                    match low {
                        Some(low) => {
                            i += 6;
                            0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00)
                        }
                        None => return false,
                    }
                } else {
                    unit
                };
                match char::from_u32(code) {
                    Some(c) => c,
                    None => return false, // a lone low surrogate
                }
            }
            Some(&e) => {
                i += 2;
                match e {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    _ => return false,
                }
            }
            None => return false,
        };
        let mut buf = [0u8; 4];
        let enc = ch.encode_utf8(&mut buf).as_bytes();
        if key.get(j..j + enc.len()) != Some(enc) {
            return false;
        }
        j += enc.len();
    }
    j == key.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(path: &str) -> Vec<String> {
        path.split('.').map(str::to_string).collect()
    }

    fn run(doc: &str, path: &str, t: f64) -> Result<Found, SyntaxError> {
        scan(
            doc.as_bytes(),
            &keys(path),
            t,
            &mut Vec::new(),
            &mut Scanned::default(),
        )
    }

    fn mt(doc: &str) -> Result<Found, SyntaxError> {
        run(doc, "machine.temperature", 25.0)
    }

    fn problem(doc: &str) -> (usize, Problem) {
        let e = mt(doc).expect_err(doc);
        (e.at, e.problem)
    }

    const ALERT: Result<Found, SyntaxError> = Ok(Found::Number { alert: true });
    const BELOW: Result<Found, SyntaxError> = Ok(Found::Number { alert: false });
    const ABSENT: Result<Found, SyntaxError> = Ok(Found::Absent);

    #[test]
    fn finds_the_field() {
        assert_eq!(mt(r#"{"machine":{"temperature":30}}"#), ALERT);
        assert_eq!(mt(r#"{"machine":{"temperature":25}}"#), BELOW);
        assert_eq!(mt(r#"{"machine":{"temperature":25.0001}}"#), ALERT);
        assert_eq!(mt(r#"{"machine":{"pressure":1}}"#), ABSENT);
        assert_eq!(mt(r#"{"ambient":{"temperature":99}}"#), ABSENT);
        assert_eq!(mt(r#"{}"#), ABSENT);
        assert_eq!(mt(r#"{"machine":{}}"#), ABSENT);
    }

    #[test]
    fn numbers_beyond_simd_json() {
        assert_eq!(mt(r#"{"machine":{"temperature":1e400}}"#), ALERT);
        assert_eq!(mt(r#"{"machine":{"temperature":-1e400}}"#), BELOW);
        assert_eq!(mt(r#"{"machine":{"temperature":1e-400}}"#), BELOW);
        let big = format!(r#"{{"machine":{{"temperature":{}}}}}"#, "9".repeat(400));
        assert_eq!(mt(&big), ALERT);
        let big_neg = format!(r#"{{"machine":{{"temperature":-{}}}}}"#, "9".repeat(400));
        assert_eq!(mt(&big_neg), BELOW);
        assert_eq!(
            run(
                r#"{"machine":{"temperature":18446744073709551617}}"#,
                "machine.temperature",
                18_446_744_073_709_551_616.0
            ),
            ALERT
        );
        assert_eq!(
            run(
                r#"{"machine":{"temperature":9007199254740993}}"#,
                "machine.temperature",
                9_007_199_254_740_992.0
            ),
            ALERT
        );
    }

    #[test]
    fn python_integer_digit_limit() {
        let ok = format!(r#"{{"x":{}}}"#, "1".repeat(4300));
        assert_eq!(mt(&ok), ABSENT);
        let too_long = format!(r#"{{"x":-{}}}"#, "1".repeat(4301));
        assert_eq!(problem(&too_long), (5, Problem::IntTooLong(4301)));
        // Floats have no such limit.
        let float = format!(r#"{{"x":{}.5}}"#, "1".repeat(5000));
        assert_eq!(mt(&float), ABSENT);
    }

    #[test]
    fn last_duplicate_wins_at_every_level() {
        assert_eq!(
            mt(r#"{"machine":{"temperature":30,"temperature":20}}"#),
            BELOW
        );
        assert_eq!(
            mt(r#"{"machine":{"temperature":20,"temperature":30}}"#),
            ALERT
        );
        assert_eq!(
            mt(r#"{"machine":{"temperature":30},"machine":{"pressure":1}}"#),
            ABSENT
        );
        assert_eq!(
            mt(r#"{"machine":{"pressure":1},"machine":{"temperature":30}}"#),
            ALERT
        );
        assert_eq!(mt(r#"{"machine":{"temperature":30},"machine":7}"#), ABSENT);
        assert_eq!(
            mt(r#"{"machine":{"temperature":30,"temperature":"hot"}}"#),
            Ok(Found::NotNumber(Kind::String))
        );
        assert_eq!(
            mt(r#"{"machine":{"temperature":{"a":1},"temperature":40}}"#),
            ALERT
        );
    }

    #[test]
    fn intermediate_non_objects_mean_absent() {
        assert_eq!(mt(r#"{"machine":"temperature"}"#), ABSENT);
        assert_eq!(mt(r#"{"machine":["temperature"]}"#), ABSENT);
        assert_eq!(mt(r#"{"machine":null}"#), ABSENT);
        assert_eq!(mt(r#"{"machine":[{"temperature":30}]}"#), ABSENT);
    }

    #[test]
    fn field_kinds() {
        for (v, k) in [
            (r#""30""#, Kind::String),
            ("true", Kind::Bool),
            ("false", Kind::Bool),
            ("null", Kind::Null),
            (r#"{"v":30}"#, Kind::Object),
            ("[30]", Kind::Array),
            ("[]", Kind::Array),
            ("{}", Kind::Object),
        ] {
            let doc = format!(r#"{{"machine":{{"temperature":{v}}}}}"#);
            assert_eq!(mt(&doc), Ok(Found::NotNumber(k)), "{doc}");
        }
    }

    #[test]
    fn top_level_kinds() {
        assert_eq!(mt("[]"), Ok(Found::TopLevel(Kind::Array)));
        assert_eq!(mt(r#" "x" "#), Ok(Found::TopLevel(Kind::String)));
        assert_eq!(mt("-0.5e3"), Ok(Found::TopLevel(Kind::Number)));
        assert_eq!(mt("null"), Ok(Found::TopLevel(Kind::Null)));
        assert_eq!(mt("true"), Ok(Found::TopLevel(Kind::Bool)));
    }

    #[test]
    fn escaped_keys_and_surrogates() {
        assert_eq!(mt(r#"{"machine":{"temp\u0065rature":30}}"#), ALERT);
        assert_eq!(mt(r#"{"m\u0061chine":{"temperature":30}}"#), ALERT);
        assert_eq!(mt(r#"{"machine":{"temperature\u0000":30}}"#), ABSENT);
        // Lone surrogates are valid for Python; they just never match a key.
        assert_eq!(mt(r#"{"x":"\ud800","machine":{"temperature":30}}"#), ALERT);
        assert_eq!(mt(r#"{"\udc00":1,"machine":{"temperature":30}}"#), ALERT);
        assert_eq!(run(r#"{"\ud83d\ude00":30}"#, "\u{1F600}", 25.0), ALERT);
        assert_eq!(run(r#"{"\ud83d\u0041":30}"#, "\u{1F600}", 25.0), ABSENT);
        assert_eq!(
            run(r#"{"\/\"\\\b\f\n\r\t":30}"#, "/\"\\\u{8}\u{c}\n\r\t", 25.0),
            ALERT
        );
        assert_eq!(run(r#"{"é":30}"#, "é", 25.0), ALERT);
        assert_eq!(run(r#"{"\u00e9":30}"#, "é", 25.0), ALERT);
        assert_eq!(run(r#"{"\u00E9":30}"#, "é", 25.0), ALERT);
    }

    #[test]
    fn custom_paths() {
        assert_eq!(run(r#"{"t":30}"#, "t", 25.0), ALERT);
        assert_eq!(
            run(r#"{"t":{"u":30}}"#, "t", 25.0),
            Ok(Found::NotNumber(Kind::Object))
        );
        assert_eq!(run(r#"{"a":{"b":{"c":26}}}"#, "a.b.c", 25.0), ALERT);
        assert_eq!(
            run(r#"{"a":{"b":{"c":26}},"a":{"b":1}}"#, "a.b.c", 25.0),
            ABSENT
        );
        assert_eq!(
            run(r#"{"a":{"b":{"c":26},"b":{"c":24}}}"#, "a.b.c", 25.0),
            BELOW
        );
        assert_eq!(
            run(
                r#"{"a":{"x":{"a":{"b":{"c":30}}},"b":{"d":1}}}"#,
                "a.b.c",
                25.0
            ),
            ABSENT
        );
    }

    #[test]
    fn whitespace_everywhere() {
        let doc =
            " \t\r\n{ \"machine\" \n:\t{\r\"temperature\" : 30 \n} , \"x\" : [ 1 , { } ] }\n\t ";
        assert_eq!(mt(doc), ALERT);
    }

    #[test]
    fn syntax_errors_with_offsets() {
        assert_eq!(problem(""), (0, Problem::Empty));
        assert_eq!(problem("  "), (2, Problem::ExpectedValue));
        assert_eq!(problem("\u{feff}{}"), (0, Problem::Bom));
        assert_eq!(problem(r#"{"a":1}x"#), (7, Problem::Trailing));
        assert_eq!(problem(r#"{"a":1} {}"#), (8, Problem::Trailing));
        assert_eq!(problem(r#"{"a":NaN}"#), (5, Problem::NonFinite("NaN")));
        assert_eq!(
            problem(r#"{"a":Infinity}"#),
            (5, Problem::NonFinite("Infinity"))
        );
        assert_eq!(
            problem(r#"{"a":-Infinity}"#),
            (5, Problem::NonFinite("-Infinity"))
        );
        assert_eq!(problem(r#"{"a":Nan}"#), (5, Problem::ExpectedValue));
        assert_eq!(problem("{\"a\":\"\u{1}\"}"), (6, Problem::ControlChar(1)));
        assert_eq!(problem(r#"{"a":"\x"}"#), (6, Problem::InvalidEscape));
        assert_eq!(
            problem(r#"{"a":"\u12g4"}"#),
            (6, Problem::InvalidUnicodeEscape)
        );
        assert_eq!(
            problem(r#"{"a":"\u12"}"#),
            (6, Problem::InvalidUnicodeEscape)
        );
        assert_eq!(problem(r#"{"a":"abc"#), (5, Problem::Unterminated));
        assert_eq!(problem(r#"{"a":"abc\"#), (5, Problem::Unterminated));
        assert_eq!(problem(r#"{"a":1."#), (6, Problem::ExpectedCommaOrBrace));
        assert_eq!(problem(r#"{"a":01}"#), (6, Problem::ExpectedCommaOrBrace));
        assert_eq!(problem(r#"{"a":1e}"#), (6, Problem::ExpectedCommaOrBrace));
        assert_eq!(problem(r#"{"a":-}"#), (5, Problem::ExpectedValue));
        assert_eq!(problem(r#"{"a":.5}"#), (5, Problem::ExpectedValue));
        assert_eq!(problem(r#"{"a":+1}"#), (5, Problem::ExpectedValue));
        assert_eq!(problem(r#"{"a":tru}"#), (5, Problem::ExpectedValue));
        assert_eq!(
            problem(r#"{"a":truex}"#),
            (9, Problem::ExpectedCommaOrBrace)
        );
        assert_eq!(problem(r#"{"a" 1}"#), (5, Problem::ExpectedColon));
        assert_eq!(problem(r#"{"a":1,}"#), (7, Problem::ExpectedKey));
        assert_eq!(problem(r#"{a:1}"#), (1, Problem::ExpectedKey));
        assert_eq!(problem(r#"[1,]"#), (3, Problem::ExpectedValue));
        assert_eq!(problem(r#"[1 2]"#), (3, Problem::ExpectedCommaOrBracket));
        assert_eq!(problem(r#"{"a":[1}"#), (7, Problem::ExpectedCommaOrBracket));
        assert_eq!(problem(r#"{"a":1"#), (6, Problem::ExpectedCommaOrBrace));
        assert_eq!(problem("{\"a\":1}\u{c}"), (7, Problem::Trailing));
        assert_eq!(problem("{\"a\":\u{a0}1}"), (5, Problem::ExpectedValue));
    }

    #[test]
    fn messages_name_the_byte() {
        let e = mt(r#"{"a":1}xyz"#).unwrap_err();
        assert_eq!(e.to_string(), "not JSON: trailing characters at byte 7");
        let e = mt(&format!("[{}]", "1".repeat(4301))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "not JSON: integer of 4301 digits at byte 1 exceeds Python's 4300-digit limit"
        );
        let e = mt("{\"a\":\"\u{1f}\"}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "not JSON: unescaped control character U+001F in a string at byte 6"
        );
    }

    #[test]
    fn nesting_limit_without_recursion() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(mt(&ok), Ok(Found::TopLevel(Kind::Array)));
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(problem(&deep), (MAX_DEPTH, Problem::TooDeep));
        // Far deeper than any call stack would survive with recursion.
        let very = "[".repeat(1_000_000);
        assert_eq!(problem(&very), (MAX_DEPTH, Problem::TooDeep));
        let mut objects = String::new();
        for _ in 0..MAX_DEPTH - 1 {
            objects.push_str(r#"{"a":"#);
        }
        objects.push_str(r#"{"machine":{"temperature":30}}"#);
        assert_eq!(
            problem(&(objects.clone() + &"}".repeat(MAX_DEPTH - 1))),
            (5 * (MAX_DEPTH - 1) + 11, Problem::TooDeep)
        );
    }

    #[test]
    fn results_buffer_is_reused_cleanly() {
        let mut results = Vec::new();
        let k = keys("machine.temperature");
        let a = br#"{"machine":{"temperature":30}}"#;
        let b = br#"{"machine":{}}"#;
        assert_eq!(
            scan(a, &k, 25.0, &mut results, &mut Scanned::default()),
            ALERT
        );
        assert_eq!(
            scan(b, &k, 25.0, &mut results, &mut Scanned::default()),
            ABSENT
        );
        assert_eq!(
            scan(a, &k, 25.0, &mut results, &mut Scanned::default()),
            ALERT
        );
        let one = keys("x");
        assert_eq!(
            scan(b, &one, 25.0, &mut results, &mut Scanned::default()),
            ABSENT
        );
    }
}
