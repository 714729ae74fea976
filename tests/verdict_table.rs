//! Table test of the hot path's verdict (`pipeline::verdict`): every verdict rule (the seed's
//! Python semantics, `pipeline::verdict`) as literal payloads with the expected verdict and, for rejections, the
//! exact detail text. One Evaluator per field path is shared by all rows, every row is
//! evaluated twice in a row and the table is replayed interleaving valid and invalid rows, in
//! both orders, so a leak of state between calls through the reused buffers would show.

use std::collections::HashMap;

use edgefilter::pipeline::verdict::{
    Evaluator, FieldPath, RejectReason, Rejection, Verdict, MAX_DEPTH,
};

const MAX_PAYLOAD: usize = 16_384;
const MT: &str = "machine.temperature";

#[derive(Debug, Clone)]
struct Row {
    name: String,
    field: &'static str,
    payload: Vec<u8>,
    threshold: f64,
    expected: Verdict,
}

fn rejected(reason: RejectReason, detail: impl Into<String>) -> Verdict {
    Verdict::Rejected(Rejection {
        reason,
        detail: detail.into(),
    })
}

/// The sensor's message shape with `temp` as the machine temperature's JSON text.
fn sensor(temp: &str) -> String {
    format!(
        r#"{{"machine":{{"temperature":{temp},"pressure":1.15}},"ambient":{{"temperature":20.96,"humidity":25}},"timeCreated":"2026-11-26T07:00:00.1234567Z"}}"#
    )
}

/// Byte offset of the first occurrence of `needle` in `hay`.
fn at(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .unwrap_or_else(|| panic!("{needle:?} not in payload"))
}

struct Table(Vec<Row>);

impl Table {
    fn row(
        &mut self,
        name: &str,
        field: &'static str,
        payload: impl Into<Vec<u8>>,
        t: f64,
        v: Verdict,
    ) {
        self.0.push(Row {
            name: name.to_string(),
            field,
            payload: payload.into(),
            threshold: t,
            expected: v,
        });
    }

    fn mt(&mut self, name: &str, payload: impl Into<Vec<u8>>, t: f64, v: Verdict) {
        self.row(name, MT, payload, t, v);
    }

    /// `{"machine":{"temperature":<temp>}}` with the sensor's other fields.
    fn temp(&mut self, temp: &str, t: f64, v: Verdict) {
        self.mt(&format!("temperature {temp} vs {t}"), sensor(temp), t, v);
    }
}

fn not_a_number(what: &str) -> Verdict {
    rejected(
        RejectReason::NotANumber,
        format!("machine.temperature is {what}, not a number"),
    )
}

fn not_json(detail: impl Into<String>) -> Verdict {
    rejected(RejectReason::NotJson, detail)
}

fn table() -> Vec<Row> {
    use Verdict::{Alert, Unmatched};
    let mut t = Table(Vec::new());

    // Plain numbers: integers, floats, exponent forms; equal is not greater.
    t.temp("30.5", 25.0, Alert);
    t.temp("21.87", 25.0, Unmatched);
    t.temp("26", 25.0, Alert);
    t.temp("25", 25.0, Unmatched);
    t.temp("25.0", 25.0, Unmatched);
    t.temp("25.000000000000004", 25.0, Alert);
    t.temp("2.5e1", 25.0, Unmatched);
    t.temp("2.6E1", 25.0, Alert);
    t.temp("26e0", 25.0, Alert);
    t.temp("0.26e+2", 25.0, Alert);
    t.temp("250E-1", 25.0, Unmatched);
    t.temp("2501e-2", 25.0, Alert);
    t.temp("-0", -0.5, Alert);
    t.temp("-0.0", 0.0, Unmatched);
    t.temp("0", -0.0, Unmatched);

    // Negative thresholds.
    t.temp("-5", -10.0, Alert);
    t.temp("-10", -10.0, Unmatched);
    t.temp("-10.5", -10.0, Unmatched);
    t.temp("-9.999", -10.0, Alert);
    t.temp("-1e400", -1e308, Unmatched);

    // Integers compare exactly with the float threshold, as in Python.
    let two53 = 9_007_199_254_740_992.0;
    t.temp("9007199254740993", two53, Alert);
    t.temp("9007199254740992", two53, Unmatched);
    t.temp("9007199254740993.0", two53, Unmatched); // a float: rounds to 2^53
    t.temp(
        "18446744073709551615",
        18_446_744_073_709_551_616.0,
        Unmatched,
    );
    t.temp(
        "-9223372036854775808",
        -9_223_372_036_854_775_808.0,
        Unmatched,
    );
    t.temp("-9223372036854775807", -9_223_372_036_854_775_808.0, Alert);

    // Beyond 64 bits and beyond the f64 range: valid for Python, decided by the slow path.
    t.temp("18446744073709551616", 25.0, Alert);
    t.temp("18446744073709551617", 18_446_744_073_709_551_616.0, Alert);
    t.temp("-18446744073709551616", 25.0, Unmatched);
    t.temp(
        "-9223372036854775809",
        -9_223_372_036_854_775_808.0,
        Unmatched,
    );
    t.temp(&"9".repeat(400), 1e300, Alert);
    t.temp(&format!("-{}", "9".repeat(400)), -1e300, Unmatched);
    t.temp(&"1".repeat(4300), f64::MAX, Alert);
    t.temp("1e400", 25.0, Alert);
    t.temp("1E+400", f64::MAX, Alert);
    t.temp("-1e400", 25.0, Unmatched);
    t.temp("1e-400", 25.0, Unmatched);
    t.temp("1e-400", -1.0, Alert);
    t.temp("123456789012345678901234567890.5", 1.2e29, Alert);
    t.temp(&format!("{}.5", "1".repeat(1000)), 1e300, Alert);
    let big = sensor(&"1".repeat(4301));
    let big_at = at(big.as_bytes(), b"1111");
    t.mt(
        "integer over Python's 4300-digit limit",
        big,
        25.0,
        not_json(format!(
            "not JSON: integer of 4301 digits at byte {big_at} exceeds Python's 4300-digit limit"
        )),
    );

    // The field is not a number.
    t.temp(r#""30""#, 25.0, not_a_number("a string"));
    t.temp("true", 0.5, not_a_number("a boolean"));
    t.temp("false", 25.0, not_a_number("a boolean"));
    t.temp("null", 25.0, not_a_number("null"));
    t.temp(r#"{"value":30}"#, 25.0, not_a_number("an object"));
    t.temp("[30]", 25.0, not_a_number("an array"));
    t.temp("[]", 25.0, not_a_number("an array"));

    // The path is absent.
    t.mt(
        "no machine",
        r#"{"ambient":{"temperature":99}}"#,
        25.0,
        Unmatched,
    );
    t.mt("empty object", "{}", 25.0, Unmatched);
    t.mt(
        "machine without temperature",
        r#"{"machine":{"pressure":9}}"#,
        25.0,
        Unmatched,
    );
    t.mt(
        "temperature at top level",
        r#"{"temperature":99}"#,
        25.0,
        Unmatched,
    );
    t.mt(
        "keys are case-sensitive",
        r#"{"machine":{"Temperature":99}}"#,
        25.0,
        Unmatched,
    );
    t.mt(
        "machine is a string",
        r#"{"machine":"temperature"}"#,
        25.0,
        Unmatched,
    );
    t.mt(
        "machine is an array",
        r#"{"machine":["temperature"]}"#,
        25.0,
        Unmatched,
    );
    t.mt(
        "machine is an array of objects",
        r#"{"machine":[{"temperature":30}]}"#,
        25.0,
        Unmatched,
    );
    t.mt("machine is null", r#"{"machine":null}"#, 25.0, Unmatched);
    t.mt("machine is a number", r#"{"machine":30}"#, 25.0, Unmatched);

    // Escaped keys match their decoded form.
    t.mt(
        "escaped key",
        r#"{"machine":{"temp\u0065rature":30}}"#,
        25.0,
        Alert,
    );
    t.mt(
        "escaped key, upper-case hex",
        r#"{"m\u0041chine":{"temperature":30}}"#,
        25.0,
        Unmatched,
    );
    t.mt(
        "escaped first level",
        r#"{"\u006dachine":{"temperature":30}}"#,
        25.0,
        Alert,
    );
    t.mt(
        "escaped solidus",
        r#"{"machine":{"temperature":30,"a\/b":1}}"#,
        25.0,
        Alert,
    );
    t.row(
        "surrogate pair key",
        "\u{1F600}",
        r#"{"\ud83d\ude00":30}"#,
        25.0,
        Alert,
    );
    t.row(
        "raw emoji key",
        "\u{1F600}",
        "{\"\u{1F600}\":30}",
        25.0,
        Alert,
    );

    // Lone surrogate escapes are valid strings for Python (simd-json refuses them).
    t.mt(
        "lone high surrogate elsewhere",
        r#"{"note":"\ud800","machine":{"temperature":30}}"#,
        25.0,
        Alert,
    );
    t.mt(
        "lone low surrogate key",
        r#"{"\udc00":1,"machine":{"temperature":20}}"#,
        25.0,
        Unmatched,
    );
    t.mt(
        "high surrogate then non-low",
        r#"{"x":"\ud83d\u0041","machine":{"temperature":26}}"#,
        25.0,
        Alert,
    );

    // Duplicate keys: the last one wins, at every level, both directions.
    t.mt(
        "duplicate field, high then low",
        r#"{"machine":{"temperature":30,"temperature":20}}"#,
        25.0,
        Unmatched,
    );
    t.mt(
        "duplicate field, low then high",
        r#"{"machine":{"temperature":20,"temperature":30}}"#,
        25.0,
        Alert,
    );
    t.mt(
        "duplicate machine, alerting one first",
        r#"{"machine":{"temperature":30},"machine":{"temperature":20}}"#,
        25.0,
        Unmatched,
    );
    t.mt(
        "duplicate machine, alerting one last",
        r#"{"machine":{"temperature":20},"machine":{"temperature":30}}"#,
        25.0,
        Alert,
    );
    t.mt(
        "duplicate machine, last lacks the field",
        r#"{"machine":{"temperature":30},"machine":{"pressure":1}}"#,
        25.0,
        Unmatched,
    );
    t.mt(
        "duplicate machine, last is not an object",
        r#"{"machine":{"temperature":30},"machine":7}"#,
        25.0,
        Unmatched,
    );
    t.mt(
        "duplicate field, string last",
        r#"{"machine":{"temperature":30,"temperature":"hot"}}"#,
        25.0,
        not_a_number("a string"),
    );
    t.mt(
        "duplicate field, string first",
        r#"{"machine":{"temperature":"hot","temperature":30}}"#,
        25.0,
        Alert,
    );
    t.mt(
        "escaped duplicate wins",
        r#"{"machine":{"temperature":30,"temp\u0065rature":20}}"#,
        25.0,
        Unmatched,
    );

    // Whitespace anywhere.
    t.mt(
        "pretty-printed with tabs and CRLF",
        "\r\n\t{\r\n\t\"machine\" :\t{\r\n\t\t\"temperature\" : 30 ,\n \"pressure\" : [ 1 , 2 ]\r\n\t} ,\n\t\"x\" : { }\n}\n \t",
        25.0,
        Alert,
    );

    // Top level not an object.
    t.mt(
        "top-level array",
        "[1,2]",
        25.0,
        rejected(
            RejectReason::NotObject,
            "top level is an array, not an object",
        ),
    );
    t.mt(
        "top-level string",
        r#""machine""#,
        25.0,
        rejected(
            RejectReason::NotObject,
            "top level is a string, not an object",
        ),
    );
    t.mt(
        "top-level number",
        " 42 ",
        25.0,
        rejected(
            RejectReason::NotObject,
            "top level is a number, not an object",
        ),
    );
    t.mt(
        "top-level big number",
        "1e400",
        25.0,
        rejected(
            RejectReason::NotObject,
            "top level is a number, not an object",
        ),
    );
    t.mt(
        "top-level null",
        "null",
        25.0,
        rejected(RejectReason::NotObject, "top level is null, not an object"),
    );
    t.mt(
        "top-level true",
        "true",
        25.0,
        rejected(
            RejectReason::NotObject,
            "top level is a boolean, not an object",
        ),
    );

    // Not UTF-8 (Python's strict decoder).
    let mut cases: Vec<(&str, &[u8])> = vec![
        ("invalid byte", b"\xff"),
        ("overlong slash", b"\xc0\xaf"),
        ("UTF-8-encoded surrogate", b"\xed\xa0\x80"),
        ("above U+10FFFF", b"\xf4\x90\x80\x80"),
        ("lone continuation byte", b"\x80"),
    ];
    for (name, bad) in cases.drain(..) {
        let mut p = br#"{"machine":{"temperature":30},"x":""#.to_vec();
        let offset = p.len();
        p.extend_from_slice(bad);
        p.extend_from_slice(br#""}"#);
        t.mt(
            name,
            p,
            25.0,
            rejected(
                RejectReason::NotUtf8,
                format!("invalid UTF-8 at byte {offset}"),
            ),
        );
    }
    let mut cut = sensor("30").into_bytes();
    cut.extend_from_slice(b"\xe2\x82");
    let offset = cut.len() - 2;
    t.mt(
        "truncated sequence at the end",
        cut,
        25.0,
        rejected(
            RejectReason::NotUtf8,
            format!("invalid UTF-8 at byte {offset}"),
        ),
    );
    t.mt(
        "invalid UTF-8 wins over invalid JSON",
        b"[\xff".to_vec(),
        25.0,
        rejected(RejectReason::NotUtf8, "invalid UTF-8 at byte 1"),
    );

    // Not JSON.
    let mut bom = b"\xef\xbb\xbf".to_vec();
    bom.extend_from_slice(sensor("30").as_bytes());
    t.mt(
        "UTF-8 BOM",
        bom,
        25.0,
        not_json("not JSON: UTF-8 byte order mark at byte 0"),
    );
    let body = sensor("30");
    t.mt(
        "trailing garbage",
        format!("{body}x"),
        25.0,
        not_json(format!(
            "not JSON: trailing characters at byte {}",
            body.len()
        )),
    );
    t.mt(
        "two documents",
        format!("{body} {{}}"),
        25.0,
        not_json(format!(
            "not JSON: trailing characters at byte {}",
            body.len() + 1
        )),
    );
    t.mt(
        "trailing NUL",
        format!("{body}\0"),
        25.0,
        not_json(format!(
            "not JSON: trailing characters at byte {}",
            body.len()
        )),
    );
    t.mt(
        "trailing form feed",
        format!("{body}\u{c}"),
        25.0,
        not_json(format!(
            "not JSON: trailing characters at byte {}",
            body.len()
        )),
    );
    for lit in ["NaN", "Infinity", "-Infinity"] {
        let p = sensor(lit);
        let offset = at(p.as_bytes(), lit.as_bytes());
        t.mt(
            lit,
            p,
            25.0,
            not_json(format!(
                "not JSON: {lit} is not a JSON number at byte {offset}"
            )),
        );
    }
    let p = r#"{"machine":{"temperature":30},"other":NaN}"#;
    t.mt(
        "NaN elsewhere",
        p,
        25.0,
        not_json(format!(
            "not JSON: NaN is not a JSON number at byte {}",
            at(p.as_bytes(), b"NaN")
        )),
    );
    t.mt("empty body", "", 25.0, not_json("not JSON: empty body"));
    t.mt(
        "only whitespace",
        " \n\t",
        25.0,
        not_json("not JSON: expecting a value at byte 3"),
    );
    let p = "{\"machine\":{\"temperature\":30,\"x\":\"a\u{1}b\"}}";
    t.mt(
        "raw control character in a string",
        p,
        25.0,
        not_json(format!(
            "not JSON: unescaped control character U+0001 in a string at byte {}",
            at(p.as_bytes(), b"\x01")
        )),
    );
    let p = "{\"machine\":{\"temperature\":30,\"x\":\"a\tb\"}}";
    t.mt(
        "raw tab in a string",
        p,
        25.0,
        not_json(format!(
            "not JSON: unescaped control character U+0009 in a string at byte {}",
            at(p.as_bytes(), b"\t")
        )),
    );
    t.mt(
        "DEL is allowed in a string",
        "{\"machine\":{\"temperature\":30,\"x\":\"\u{7f}\"}}",
        25.0,
        Alert,
    );
    let p = r#"{"machine":{"temperature":30,"x":"\q"}}"#;
    t.mt(
        "invalid escape",
        p,
        25.0,
        not_json(format!(
            "not JSON: invalid escape at byte {}",
            at(p.as_bytes(), b"\\q")
        )),
    );
    let p = r#"{"machine":{"temperature":30,"x":"\u12x4"}}"#;
    t.mt(
        "invalid \\u escape",
        p,
        25.0,
        not_json(format!(
            "not JSON: invalid \\uXXXX escape at byte {}",
            at(p.as_bytes(), b"\\u")
        )),
    );
    let p = &body[..body.len() - 20];
    t.mt(
        "truncated",
        p,
        25.0,
        not_json(format!(
            "not JSON: unterminated string starting at byte {}",
            at(p.as_bytes(), b"\"2026")
        )),
    );
    let p = r#"{"machine":{"temperature":30}"#;
    t.mt(
        "truncated after a value",
        p,
        25.0,
        not_json(format!(
            "not JSON: expecting ',' or '}}' at byte {}",
            p.len()
        )),
    );
    t.mt(
        "single quotes",
        "{'machine':{'temperature':30}}",
        25.0,
        not_json("not JSON: expecting a property name in double quotes at byte 1"),
    );
    let p = r#"{"machine":{"temperature":30},}"#;
    t.mt(
        "trailing comma",
        p,
        25.0,
        not_json(format!(
            "not JSON: expecting a property name in double quotes at byte {}",
            p.len() - 1
        )),
    );
    let p = r#"{"machine" {"temperature":30}}"#;
    t.mt(
        "missing colon",
        p,
        25.0,
        not_json(format!(
            "not JSON: expecting ':' at byte {}",
            at(p.as_bytes(), b" {") + 1
        )),
    );
    let p = r#"{"machine":{"temperature":30,"a":[1 2]}}"#;
    t.mt(
        "array missing comma",
        p,
        25.0,
        not_json(format!(
            "not JSON: expecting ',' or ']' at byte {}",
            at(p.as_bytes(), b"2]")
        )),
    );
    // Python's NUMBER_RE takes the longest valid prefix; what follows must be a delimiter.
    for (num, valid_prefix) in [
        ("01", 1),
        ("1.", 1),
        ("1e", 1),
        ("1e+", 1),
        ("0x1F", 1),
        ("1.5.2", 3),
        (".5", 0),
        ("+1", 0),
        ("-", 0),
        ("hot", 0),
    ] {
        let p = format!(r#"{{"machine":{{"temperature":{num}}}}}"#);
        let start = at(p.as_bytes(), num.as_bytes());
        let detail = if valid_prefix == 0 {
            format!("not JSON: expecting a value at byte {start}")
        } else {
            format!(
                "not JSON: expecting ',' or '}}' at byte {}",
                start + valid_prefix
            )
        };
        t.mt(&format!("bad number {num}"), p, 25.0, not_json(detail));
    }

    // Nesting depth: as deep as MAX_DEPTH, not deeper.
    let deep_ok = format!(
        r#"{{"machine":{{"temperature":30,"x":{}{}}}}}"#,
        "[".repeat(MAX_DEPTH - 2),
        "]".repeat(MAX_DEPTH - 2)
    );
    t.mt("nested 1000 levels", deep_ok, 25.0, Alert);
    let deep = format!(
        r#"{{"machine":{{"temperature":30,"x":{}{}}}}}"#,
        "[".repeat(MAX_DEPTH - 1),
        "]".repeat(MAX_DEPTH - 1)
    );
    let offset = at(deep.as_bytes(), b"[") + MAX_DEPTH - 2;
    t.mt(
        "nested 1001 levels",
        deep,
        25.0,
        not_json(format!(
            "not JSON: nested deeper than 1000 levels at byte {offset}"
        )),
    );

    // Size limit, checked before anything else.
    let pad = |len: usize| {
        let head = r#"{"machine":{"temperature":30},"pad":""#;
        let mut p = head.to_string();
        p.push_str(&"x".repeat(len - head.len() - 2));
        p.push_str("\"}");
        assert_eq!(p.len(), len);
        p
    };
    t.mt("exactly max-payload bytes", pad(MAX_PAYLOAD), 25.0, Alert);
    t.mt(
        "one byte over max-payload",
        pad(MAX_PAYLOAD + 1),
        25.0,
        rejected(
            RejectReason::TooLarge,
            format!(
                "{} bytes, more than --max-payload {MAX_PAYLOAD}",
                MAX_PAYLOAD + 1
            ),
        ),
    );
    t.mt(
        "oversize and not UTF-8",
        vec![0xff; MAX_PAYLOAD + 10],
        25.0,
        rejected(
            RejectReason::TooLarge,
            format!(
                "{} bytes, more than --max-payload {MAX_PAYLOAD}",
                MAX_PAYLOAD + 10
            ),
        ),
    );

    // Custom field paths: one key, three keys.
    t.row("one key", "t", r#"{"t":30}"#, 25.0, Alert);
    t.row("one key, below", "t", r#"{"t":3,"u":40}"#, 25.0, Unmatched);
    t.row(
        "one key, object",
        "t",
        r#"{"t":{"t":30}}"#,
        25.0,
        rejected(RejectReason::NotANumber, "t is an object, not a number"),
    );
    t.row(
        "one key, absent",
        "t",
        r#"{"machine":{"temperature":30}}"#,
        25.0,
        Unmatched,
    );
    t.row(
        "three keys",
        "a.b.c",
        r#"{"a":{"b":{"c":26}}}"#,
        25.0,
        Alert,
    );
    t.row(
        "three keys, equal",
        "a.b.c",
        r#"{"a":{"b":{"c":25}}}"#,
        25.0,
        Unmatched,
    );
    t.row(
        "three keys, middle not an object",
        "a.b.c",
        r#"{"a":{"b":[{"c":26}]}}"#,
        25.0,
        Unmatched,
    );
    t.row(
        "three keys, middle duplicate",
        "a.b.c",
        r#"{"a":{"b":{"c":26},"b":{"c":24}}}"#,
        25.0,
        Unmatched,
    );
    t.row(
        "three keys, outer duplicate",
        "a.b.c",
        r#"{"a":{"b":{"c":24}},"a":{"b":{"c":26}}}"#,
        25.0,
        Alert,
    );
    t.row(
        "three keys, decoy path",
        "a.b.c",
        r#"{"a":{"x":{"a":{"b":{"c":30}}}},"b":{"c":30}}"#,
        25.0,
        Unmatched,
    );
    t.row(
        "three keys, string",
        "a.b.c",
        r#"{"a":{"b":{"c":"26"}}}"#,
        25.0,
        rejected(RejectReason::NotANumber, "a.b.c is a string, not a number"),
    );
    t.row(
        "three keys, big integer",
        "a.b.c",
        r#"{"a":{"b":{"c":100000000000000000000000}}}"#,
        9.9e22,
        Alert,
    );

    t.0
}

fn evaluators() -> HashMap<&'static str, Evaluator> {
    ["machine.temperature", "t", "a.b.c", "\u{1F600}"]
        .into_iter()
        .map(|f| (f, Evaluator::new(FieldPath::parse(f).unwrap(), MAX_PAYLOAD)))
        .collect()
}

fn check(evaluators: &mut HashMap<&'static str, Evaluator>, row: &Row, pass: &str) {
    let ev = evaluators
        .get_mut(row.field)
        .expect("an evaluator per path");
    let got = ev.evaluate(&row.payload, row.threshold);
    assert_eq!(
        got,
        row.expected,
        "{pass}: {} ({:?})",
        row.name,
        String::from_utf8_lossy(&row.payload[..row.payload.len().min(120)])
    );
    let slow = ev.evaluate_slow(&row.payload, row.threshold);
    assert_eq!(slow, row.expected, "{pass} (slow path): {}", row.name);
}

#[test]
fn every_row_twice_in_a_row() {
    let mut evs = evaluators();
    for row in table() {
        check(&mut evs, &row, "first");
        check(&mut evs, &row, "second");
    }
}

#[test]
fn valid_and_invalid_rows_interleaved_both_orders() {
    let rows = table();
    let (valid, invalid): (Vec<&Row>, Vec<&Row>) = rows
        .iter()
        .partition(|r| !matches!(r.expected, Verdict::Rejected(_)));
    assert!(
        valid.len() > 40 && invalid.len() > 40,
        "{} valid, {} invalid",
        valid.len(),
        invalid.len()
    );
    let n = valid.len().max(invalid.len());
    let mut evs = evaluators();
    for i in 0..n {
        check(&mut evs, valid[i % valid.len()], "interleaved");
        check(&mut evs, invalid[i % invalid.len()], "interleaved");
    }
    for i in (0..n).rev() {
        check(
            &mut evs,
            invalid[i % invalid.len()],
            "interleaved, reversed",
        );
        check(&mut evs, valid[i % valid.len()], "interleaved, reversed");
    }
}

#[test]
fn labels_and_field_path() {
    let labels: Vec<&str> = RejectReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        labels,
        [
            "too_large",
            "not_utf8",
            "not_json",
            "not_object",
            "not_a_number"
        ]
    );
    let f = FieldPath::parse("a.b.c").unwrap();
    assert_eq!(f.keys(), ["a", "b", "c"]);
    assert_eq!(f.to_string(), "a.b.c");
    for bad in ["", ".", "a.", ".a", "a..b"] {
        assert!(FieldPath::parse(bad).is_err(), "{bad:?}");
    }
    let ev = Evaluator::new(f.clone(), 10);
    assert_eq!(ev.field(), &f);
}

#[test]
fn evaluator_moves_to_worker_threads() {
    fn send<T: Send>(_: &T) {}
    let mut ev = Evaluator::new(FieldPath::parse(MT).unwrap(), MAX_PAYLOAD);
    send(&ev);
    let v = std::thread::spawn(move || ev.evaluate(sensor("30").as_bytes(), 25.0))
        .join()
        .unwrap();
    assert_eq!(v, Verdict::Alert);
}

/// Counts heap allocations made by the current thread (the test harness runs tests on
/// several threads; only the measuring thread's count is read).
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

fn count_allocation() {
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        count_allocation();
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new: usize) -> *mut u8 {
        count_allocation();
        unsafe { std::alloc::System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

#[test]
fn accepted_input_does_not_allocate_once_warm() {
    let rows: Vec<Row> = table()
        .into_iter()
        .filter(|r| !matches!(r.expected, Verdict::Rejected(_)))
        .collect();
    assert!(rows.len() > 40);
    let mut evs = evaluators();
    // Warm-up: buffers grow to the largest payload once.
    for row in &rows {
        check(&mut evs, row, "warm-up");
    }
    let before = ALLOCATIONS.with(|n| n.get());
    let mut alerts = 0;
    for row in &rows {
        let ev = evs.get_mut(row.field).unwrap();
        alerts += usize::from(ev.evaluate(&row.payload, row.threshold).is_alert());
        alerts += usize::from(ev.evaluate_slow(&row.payload, row.threshold).is_alert());
    }
    let after = ALLOCATIONS.with(|n| n.get());
    assert!(alerts > 0);
    assert_eq!(
        after - before,
        0,
        "heap allocations while deciding accepted payloads"
    );
    // The counter does count: a rejection allocates its detail text.
    let ev = evs.get_mut(MT).unwrap();
    assert!(matches!(ev.evaluate(b"[]", 25.0), Verdict::Rejected(_)));
    assert!(ALLOCATIONS.with(|n| n.get()) > after);
}
