//! Fuzz target for the hot path's verdict (`pipeline::verdict`): on any bytes, the simd-json
//! fast path and the byte-by-byte slow path (the Python-grammar scanner) must give the same
//! verdict, nothing may panic, and an Evaluator reused across inputs must not leak state.
//!
//! From the repository root (seeds in `fuzz/seeds/verdict`, first byte = path/threshold):
//! `mkdir -p fuzz/corpus/verdict && cargo +nightly fuzz run verdict fuzz/corpus/verdict fuzz/seeds/verdict`

#![no_main]

use std::sync::{Mutex, OnceLock};

use edgefilter::pipeline::verdict::{Evaluator, FieldPath};
use libfuzzer_sys::fuzz_target;

const PATHS: [&str; 3] = ["machine.temperature", "t", "a.b.c"];
const THRESHOLDS: [f64; 4] = [25.0, -0.5, 9_007_199_254_740_992.0, 1e300];

fn evaluators() -> &'static Mutex<Vec<Evaluator>> {
    static EVALUATORS: OnceLock<Mutex<Vec<Evaluator>>> = OnceLock::new();
    EVALUATORS.get_or_init(|| {
        Mutex::new(
            PATHS
                .iter()
                .map(|p| Evaluator::new(FieldPath::parse(p).expect("valid path"), 1 << 16))
                .collect(),
        )
    })
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the path and the threshold; the rest is the payload.
    let Some((&selector, payload)) = data.split_first() else {
        return;
    };
    let mut evaluators = evaluators().lock().expect("not poisoned");
    let ev = &mut evaluators[usize::from(selector) % PATHS.len()];
    let threshold = THRESHOLDS[usize::from(selector >> 4) % THRESHOLDS.len()];
    let fast = ev.evaluate(payload, threshold);
    let slow = ev.evaluate_slow(payload, threshold);
    assert_eq!(
        fast,
        slow,
        "fast and slow paths disagree on {:?}",
        String::from_utf8_lossy(payload)
    );
    let fresh = Evaluator::new(ev.field().clone(), 1 << 16).evaluate(payload, threshold);
    assert_eq!(fast, fresh, "state leaked between calls");
});
