//! The condition's grammar, its errors, and its verdicts through the real evaluator (both
//! paths), without sockets.

use super::*;
use crate::pipeline::verdict::{Evaluator, Extras, RejectReason, Verdict};

fn ev() -> Evaluator {
    Evaluator::new(FieldPath::parse("machine.temperature").unwrap(), 1 << 16)
}

/// The verdict of `cond` on `doc` at `threshold`: "alert", "unmatched" or the reject reason.
fn verdict(cond: &str, doc: &str, threshold: f64) -> String {
    let c = Condition::parse(cond).unwrap();
    let r = ev().evaluate_condition(doc.as_bytes(), &c, threshold, Extras::default());
    match r.verdict {
        Verdict::Alert => "alert".into(),
        Verdict::Unmatched => "unmatched".into(),
        Verdict::Rejected(r) => r.reason.as_str().into(),
    }
}

fn err(cond: &str) -> String {
    Condition::parse(cond).unwrap_err().to_string()
}

#[test]
fn the_issue_example() {
    let c = "machine.temperature > threshold and machine.pressure >= 1.5";
    let doc = |t: f64, p: f64| format!(r#"{{"machine":{{"temperature":{t},"pressure":{p}}}}}"#);
    assert_eq!(verdict(c, &doc(30.0, 1.5), 25.0), "alert");
    assert_eq!(verdict(c, &doc(30.0, 1.4), 25.0), "unmatched");
    assert_eq!(verdict(c, &doc(25.0, 2.0), 25.0), "unmatched");
    assert_eq!(
        verdict(c, &doc(30.0, 2.0), 30.0),
        "unmatched",
        "threshold in force"
    );
}

#[test]
fn precedence_and_parentheses() {
    let doc = r#"{"a":1,"b":2,"c":3}"#;
    // not > and > or
    assert_eq!(verdict("a == 1 or b == 0 and c == 0", doc, 0.0), "alert");
    assert_eq!(
        verdict("(a == 1 or b == 0) and c == 0", doc, 0.0),
        "unmatched"
    );
    assert_eq!(verdict("not a == 1 or c == 3", doc, 0.0), "alert");
    assert_eq!(verdict("not (a == 1 or c == 3)", doc, 0.0), "unmatched");
    assert_eq!(verdict("not not a == 1", doc, 0.0), "alert");
    // Every operator, and the value on the left.
    for (c, want) in [
        ("b > 1", true),
        ("b > 2", false),
        ("b >= 2", true),
        ("b < 3", true),
        ("b <= 1", false),
        ("b == 2.0", true),
        ("b != 2", false),
        ("3 > b", true),
        ("2 >= b", true),
        ("1 < b", true),
        ("threshold < b", true),
        ("b <= threshold", false),
    ] {
        let want = if want { "alert" } else { "unmatched" };
        assert_eq!(verdict(c, doc, 1.5), want, "{c}");
    }
}

#[test]
fn missing_fields_make_their_comparison_false_and_are_counted() {
    let doc = r#"{"machine":{"temperature":30}}"#;
    assert_eq!(verdict("machine.pressure > 1", doc, 25.0), "unmatched");
    assert_eq!(verdict("not machine.pressure > 1", doc, 25.0), "alert");
    assert_eq!(
        verdict(
            "machine.temperature > threshold or machine.pressure > 1",
            doc,
            25.0
        ),
        "alert"
    );
    // A path through a value that is not an object is absent.
    assert_eq!(verdict("machine.temperature.x > 1", doc, 25.0), "unmatched");
    let c = Condition::parse("machine.temperature > 1 or x.y > 1").unwrap();
    let r = ev().evaluate_condition(doc.as_bytes(), &c, 25.0, Extras::default());
    assert!(r.missing && r.verdict == Verdict::Alert);
    let c = Condition::parse("machine.temperature > 1").unwrap();
    let r = ev().evaluate_condition(doc.as_bytes(), &c, 25.0, Extras::default());
    assert!(!r.missing);
}

#[test]
fn a_field_that_is_not_a_number_rejects_whatever_the_rest_says() {
    for doc in [
        r#"{"a":1,"b":"2"}"#,
        r#"{"a":1,"b":null}"#,
        r#"{"a":1,"b":true}"#,
        r#"{"a":1,"b":[2]}"#,
        r#"{"a":1,"b":{}}"#,
    ] {
        assert_eq!(
            verdict("a == 1 or b > 1", doc, 0.0),
            "not_a_number",
            "{doc}"
        );
    }
    let c = Condition::parse("a == 1 or b > 1").unwrap();
    let r = ev().evaluate_condition(br#"{"a":1,"b":"x"}"#, &c, 0.0, Extras::default());
    let Verdict::Rejected(r) = r.verdict else {
        panic!()
    };
    assert_eq!(r.detail, "b is a string, not a number");
}

#[test]
fn rejections_before_the_fields_are_the_seeds() {
    let c = "a > 1";
    assert_eq!(verdict(c, "[1]", 0.0), "not_object");
    assert_eq!(verdict(c, "{", 0.0), "not_json");
    assert_eq!(verdict(c, r#"{"a":NaN}"#, 0.0), "not_json");
    assert_eq!(verdict(c, "\u{feff}{}", 0.0), "not_json");
    let c = Condition::parse(c).unwrap();
    let r = Evaluator::new(FieldPath::parse("a").unwrap(), 4).evaluate_condition(
        b"{\"a\":2}",
        &c,
        0.0,
        Extras::default(),
    );
    assert!(matches!(r.verdict, Verdict::Rejected(ref r) if r.reason == RejectReason::TooLarge));
    let r = ev().evaluate_condition(b"{\"a\":\xff}", &c, 0.0, Extras::default());
    assert!(matches!(r.verdict, Verdict::Rejected(ref r) if r.reason == RejectReason::NotUtf8));
}

#[test]
fn numbers_compare_exactly_on_both_paths() {
    // simd-json's integers, and the slow path's (beyond 64 bits, 1e400, lone surrogates).
    for (doc, cond, want) in [
        (r#"{"a":9007199254740993}"#, "a > 9007199254740992", "alert"),
        (
            r#"{"a":9007199254740993}"#,
            "a == 9007199254740992",
            "unmatched",
        ),
        (
            r#"{"a":9007199254740992}"#,
            "a == 9007199254740992",
            "alert",
        ),
        (r#"{"a":-5}"#, "a < -4.5", "alert"),
        (
            r#"{"a":123456789012345678901234567890}"#,
            "a > 1.2e29",
            "alert",
        ),
        (
            r#"{"a":123456789012345678901234567890}"#,
            "a < 1.3e29",
            "alert",
        ),
        (
            r#"{"a":123456789012345678901234567890}"#,
            "a == 123456789012345678901234567890",
            "unmatched",
        ),
        (
            r#"{"a":-123456789012345678901234567890}"#,
            "a < -1e29",
            "alert",
        ),
        (r#"{"a":1e400}"#, "a > 1e308", "alert"),
        (r#"{"a":-1e400}"#, "a < -1e308", "alert"),
        (r#"{"a":1e-400}"#, "a == 0", "alert"),
        (r#"{"x":"\ud800","a":2}"#, "a == 2", "alert"),
        (r#"{"x":"\ud800","a":"2"}"#, "a == 2", "not_a_number"),
        (r#"{"x":"\ud800"}"#, "a == 2", "unmatched"),
        (r#"{"a":1,"a":3}"#, "a == 3", "alert"),
        (r#"{"m":{"a":1},"m":{"b":1}}"#, "m.a == 1", "unmatched"),
        (
            r#"{"m":{"b":1},"m":{"a":1}}"#,
            "m.a == 1 and not m.b == 1",
            "alert",
        ),
        (r#"{"temp\u0065rature":7}"#, "temperature == 7", "alert"),
        (r#"{"a.b":7}"#, r#""a.b" == 7"#, "alert"),
        (
            r#"{"and":{"threshold":7}}"#,
            r#""and".threshold > threshold"#,
            "alert",
        ),
    ] {
        assert_eq!(verdict(cond, doc, 5.0), want, "{cond} on {doc}");
    }
}

#[test]
fn shared_prefixes_are_read_in_one_walk() {
    let c = Condition::parse("m.a > 1 and m.b > 1 and m.c.d > 1 and m > 0 or n.a > 1").unwrap();
    assert_eq!(c.fields().len(), 5);
    // root → m → {a, b, c → d}, root → n → a: 7 keys.
    assert_eq!(c.trie().len(), 8);
    // Numbered level by level: each node's children are next to each other.
    let keys = |n: usize| -> Vec<&[u8]> {
        c.trie()[c.trie()[n].children()]
            .iter()
            .map(|k| &*k.key)
            .collect()
    };
    assert_eq!(keys(0), [&b"m"[..], b"n"]);
    assert_eq!(keys(1), [&b"a"[..], b"b", b"c"]);
    assert_eq!(c.trie()[1].slot, Some(3));
    assert_eq!(keys(5), [&b"d"[..]]);
    assert_eq!(
        verdict(
            "m.a > 1 and m.b > 1",
            r#"{"m":{"a":2,"x":[{"a":0}],"b":2}}"#,
            0.0
        ),
        "alert"
    );
    // `m` both a field and an object on a path: as a field it is not a number.
    assert_eq!(
        verdict("m > 0 or m.a > 1", r#"{"m":{"a":2}}"#, 0.0),
        "not_a_number"
    );
}

#[test]
fn errors_name_the_column_and_what_was_expected() {
    for (cond, want) in [
        ("", "at column 1: expected a comparison such as `machine.temperature > threshold`, found the end"),
        ("machine.temperature >", "at column 22: expected a field, a number or `threshold`, found the end"),
        ("machine.temperature => 3", "at column 21: expected a comparison operator (> >= < <= == !=), found `=`"),
        ("a > 1 and", "at column 10: expected a field, a number or `threshold`, found the end"),
        ("a > 1 b > 2", "at column 7: expected `and`, `or`, `)` or the end, found `b`"),
        ("(a > 1", "at column 7: expected `)`, `and` or `or`, found the end"),
        ("a > b", "at column 5: expected a number or `threshold` (a field compares with a value, not with another field), found `b`"),
        ("1 > 2", "at column 1: expected a field on one side of the comparison, found `1`"),
        ("a > 1e400", "at column 5: expected a number within the f64 range, found `1e400`"),
        ("a > 1.", "at column 5: expected a number such as 1.5, -3 or 2e3, found `1`"),
        ("a. > 1", "at column 3: expected a key after `.`, found ` `"),
        ("a > 1 && b > 2", "at column 7: expected `and`, `or`, `)` or the end, found `&`"),
        ("a = 1", "at column 3: expected a comparison operator (> >= < <= == !=), found `=`"),
        ("a > 2x", "at column 6: expected a space or an operator after the number, found `x`"),
        ("\"a > 1", "at column 1: expected a quoted key closed by `\"` (JSON escapes), found `\"`"),
        ("é > 1", "at column 1: expected a field, a number or `threshold`, found `é`"),
        ("a > threshold and", "at column 18: expected a field, a number or `threshold`, found the end"),
        ("threshold > 1", "at column 1: expected a field on one side of the comparison, found `threshold`"),
    ] {
        assert_eq!(err(cond), want, "{cond:?}");
    }
    let deep = format!("{}a > 1{}", "(".repeat(40), ")".repeat(40));
    assert!(err(&deep).contains("less nesting"));
    let many = vec!["a > 1"; 65].join(" or ");
    assert!(err(&many).contains("fewer comparisons"));
    let wide: Vec<String> = (0..33).map(|i| format!("f{i} > 1")).collect();
    assert!(err(&wide.join(" or ")).contains("fewer distinct fields"));
    assert!(err(&"a > 1 or ".repeat(600)).contains("at most 4096 bytes"));
}

#[test]
fn keywords_are_words_only_where_they_stand_alone() {
    let doc = r#"{"not":{"x":1},"orx":2,"and_":3,"thresholds":4}"#;
    assert_eq!(
        verdict(
            "not.x == 1 and orx == 2 and and_ == 3 and thresholds == 4",
            doc,
            0.0
        ),
        "alert"
    );
    assert_eq!(verdict("data.0 == 1", r#"{"data":{"0":1}}"#, 0.0), "alert");
    assert_eq!(verdict("temp-1 > 1", r#"{"temp-1":2}"#, 0.0), "alert");
}

#[test]
fn the_re_arm_test_reuses_the_parse() {
    let c = Condition::parse("t > threshold and p > 1").unwrap();
    let mut e = ev();
    let doc = br#"{"t":24,"p":2}"#;
    let r = e.evaluate_condition(doc, &c, 25.0, Extras::default());
    assert_eq!(r.verdict, Verdict::Unmatched);
    assert!(
        e.condition_again(doc, &c, 23.0),
        "above threshold − hysteresis"
    );
    assert!(!e.condition_again(doc, &c, 24.0));
}

#[test]
fn extras_read_the_field_and_the_time_from_the_same_parse() {
    let c = Condition::parse("machine.pressure > 1").unwrap();
    let x = Extras {
        value: true,
        time: None,
    };
    for doc in [
        r#"{"machine":{"temperature":30.5,"pressure":2}}"#,
        r#"{"machine":{"temperature":30.5,"pressure":2},"s":"\ud800"}"#,
    ] {
        let r = ev().evaluate_condition(doc.as_bytes(), &c, 25.0, x);
        assert_eq!((r.verdict, r.value), (Verdict::Alert, Some(30.5)), "{doc}");
    }
    let r = ev().evaluate_condition(br#"{"machine":{"pressure":2}}"#, &c, 25.0, x);
    assert_eq!(r.value, None);
}
