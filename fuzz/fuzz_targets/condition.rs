//! Fuzz target for the condition parser and its evaluation (`pipeline::condition`,
//! `pipeline::verdict::fields`): any bytes split at the first NUL into a condition and a
//! document. Parsing never panics; an error names a column within the condition (1 to its
//! length in characters plus one) and what was expected; a parsed condition re-parses from its
//! text to the same plan, stays within its limits, and decides any document without panicking
//! — `not (C)` gives the opposite verdict of `C` (the same rejection), `C and C` and `C or C`
//! the same verdict as `C`, the fields it found missing the same.
//!
//! `cargo +nightly fuzz run condition fuzz/corpus/condition fuzz/seeds/condition`

#![no_main]

use edgefilter::pipeline::condition::{Condition, MAX_FIELDS};
use edgefilter::pipeline::verdict::{Evaluator, Extras, FieldPath, Verdict};
use libfuzzer_sys::fuzz_target;

fn decide(ev: &mut Evaluator, c: &Condition, doc: &[u8]) -> (Verdict, bool) {
    let r = ev.evaluate_condition(doc, c, 25.0, Extras::default());
    (r.verdict, r.missing)
}

fuzz_target!(|data: &[u8]| {
    let (text, doc) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{\"machine\":{\"temperature\":30,\"pressure\":2}}"[..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let c = match Condition::parse(text) {
        Err(e) => {
            assert!(e.column >= 1 && e.column <= text.chars().count() + 1, "{e}");
            assert!(!e.expected.is_empty());
            return;
        }
        Ok(c) => c,
    };
    assert!(c.fields().len() <= MAX_FIELDS);
    let again = Condition::parse(c.source()).expect("a parsed condition re-parses");
    assert_eq!(again.fields(), c.fields());
    let mut ev = Evaluator::new(FieldPath::parse("machine.temperature").unwrap(), 1 << 16);
    let (v, missing) = decide(&mut ev, &c, doc);
    let negated = Condition::parse(&format!("not ({})", c.source()));
    let twice = Condition::parse(&format!("({0}) and ({0})", c.source()));
    let either = Condition::parse(&format!("({0}) or ({0})", c.source()));
    if let Ok(n) = negated {
        let (nv, nmissing) = decide(&mut ev, &n, doc);
        assert_eq!(nmissing, missing);
        match (&v, &nv) {
            (Verdict::Alert, Verdict::Unmatched) | (Verdict::Unmatched, Verdict::Alert) => {}
            (Verdict::Rejected(a), Verdict::Rejected(b)) => assert_eq!(a, b),
            _ => panic!("not ({}) gave {nv:?} where it gave {v:?}", c.source()),
        }
    }
    for same in [twice, either].into_iter().flatten() {
        assert_eq!(decide(&mut ev, &same, doc), (v.clone(), missing));
    }
});
