//! Exact number-versus-threshold comparisons for the verdict (part of the hot path's
//! `pipeline::verdict`). Python compares an `int` with a `float` exactly (no rounding of the
//! int to a float), so `9007199254740993 > 9007199254740992.0` is true although both round to
//! the same `f64`; these helpers reproduce that for machine integers and for decimal integer
//! literals of any length.

use std::cmp::Ordering;

/// 2^127 as an `f64` (exact): the first magnitude an `i128` cannot hold.
const TWO_POW_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

/// `v > t`, exactly, as Python compares an `int` with a `float`.
pub(crate) fn int_gt(v: i128, t: f64) -> bool {
    if t.is_nan() {
        return false;
    }
    // For an integer v: v > t  ⟺  v > floor(t).
    let f = t.floor();
    if f >= TWO_POW_127 {
        return false;
    }
    if f < -TWO_POW_127 {
        return true;
    }
    // |f| ≤ 2^127 and integral: the conversion is exact (-2^127 is i128::MIN).
    v > f as i128
}

/// `±digits > t`, exactly. `digits` are the ASCII decimal digits of a JSON integer literal
/// (no sign, no leading zeros unless the literal is `0`), of any length.
pub(crate) fn decimal_int_gt(negative: bool, digits: &[u8], t: f64) -> bool {
    if digits.len() <= 38 {
        // 10^38 - 1 < 2^127: fits an i128.
        let mut v: i128 = 0;
        for &d in digits {
            v = v * 10 + i128::from(d - b'0');
        }
        return int_gt(if negative { -v } else { v }, t);
    }
    // |v| ≥ 10^38 from here on, so v ≠ 0.
    if t.is_nan() {
        return false;
    }
    if t.is_infinite() {
        return t < 0.0;
    }
    let f = t.floor();
    let f_negative = f < 0.0;
    if negative != f_negative {
        return !negative;
    }
    // Same sign: compare magnitudes. |f| < 2^1024 has at most 309 decimal digits.
    let mut buf = DigitBuf::default();
    // Writing into a fixed buffer large enough for any finite f64 cannot fail; `{:.0}` prints
    // the exact decimal expansion of an integral f64.
    let _ = std::fmt::Write::write_fmt(&mut buf, format_args!("{:.0}", f.abs()));
    let ord = cmp_magnitude(digits, buf.as_bytes());
    if negative {
        ord == Ordering::Less
    } else {
        ord == Ordering::Greater
    }
}

/// Compares two decimal magnitudes without leading zeros.
fn cmp_magnitude(a: &[u8], b: &[u8]) -> Ordering {
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// A stack buffer for the digits of an integral `f64` (no heap allocation).
struct DigitBuf {
    bytes: [u8; 320],
    len: usize,
}

impl Default for DigitBuf {
    fn default() -> Self {
        DigitBuf {
            bytes: [0; 320],
            len: 0,
        }
    }
}

impl DigitBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl std::fmt::Write for DigitBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let dst = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        dst.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_vs_float_is_exact_beyond_2_pow_53() {
        let t = 9_007_199_254_740_992.0; // 2^53
        assert!(int_gt(9_007_199_254_740_993, t));
        assert!(!int_gt(9_007_199_254_740_992, t));
        // As f64 the two are equal: a float comparison would say "not greater".
        assert!(9_007_199_254_740_993_i64 as f64 <= t);
    }

    #[test]
    fn int_vs_fractional_threshold() {
        assert!(int_gt(26, 25.5));
        assert!(!int_gt(25, 25.5));
        assert!(!int_gt(25, 25.0));
        assert!(int_gt(-25, -25.5));
        assert!(!int_gt(-26, -25.5));
        assert!(!int_gt(0, -0.0) && int_gt(1, -0.0));
    }

    #[test]
    fn int_vs_extreme_thresholds() {
        assert!(!int_gt(i128::MAX, f64::MAX));
        assert!(int_gt(i128::MIN, f64::MIN));
        assert!(!int_gt(i128::MAX, f64::INFINITY));
        assert!(int_gt(i128::MIN, f64::NEG_INFINITY));
        assert!(!int_gt(0, f64::NAN));
        assert!(int_gt(i128::MIN + 1, -TWO_POW_127));
        assert!(!int_gt(i128::MIN, -TWO_POW_127));
        assert!(!int_gt(i128::MAX, TWO_POW_127));
    }

    #[test]
    fn u64_max_is_not_rounded() {
        // u64::MAX as f64 is 2^64; u64::MAX itself is one less.
        let t = 18_446_744_073_709_551_616.0;
        assert!(!int_gt(i128::from(u64::MAX), t));
        assert!(int_gt(i128::from(u64::MAX) + 2, t));
    }

    #[test]
    fn decimal_short_literals() {
        assert!(decimal_int_gt(false, b"26", 25.0));
        assert!(!decimal_int_gt(false, b"25", 25.0));
        assert!(!decimal_int_gt(true, b"0", 0.0));
        assert!(decimal_int_gt(true, b"0", -0.5));
        assert!(decimal_int_gt(
            false,
            b"9007199254740993",
            9_007_199_254_740_992.0
        ));
    }

    #[test]
    fn decimal_long_literals_against_huge_thresholds() {
        // 1e300 as an f64 is exactly this integer (Python: '%d' % 1e300).
        let exact = "1000000000000000052504760255204420248704468581108159154915854115511802457988908195786371375080447864043704443832883878176942523235360430575644792184786706982848387200926575803737830233794788090059368953234970799945081119038967640880074652742780142494579258788820056842838115669472196386865459400540160";
        assert!(exact.ends_with("160"));
        let above = format!("{}161", &exact[..exact.len() - 3]).into_bytes();
        let below = format!("{}159", &exact[..exact.len() - 3]).into_bytes();
        assert!(!decimal_int_gt(false, exact.as_bytes(), 1e300));
        assert!(decimal_int_gt(false, &above, 1e300));
        assert!(!decimal_int_gt(false, &below, 1e300));
        // Negative side: -exact > -1e300 is false, -below > -1e300 is true.
        assert!(!decimal_int_gt(true, exact.as_bytes(), -1e300));
        assert!(decimal_int_gt(true, &below, -1e300));
        assert!(!decimal_int_gt(true, &above, -1e300));
    }

    #[test]
    fn decimal_long_literals_signs_and_small_thresholds() {
        let big = "1".repeat(400);
        assert!(decimal_int_gt(false, big.as_bytes(), 25.0));
        assert!(decimal_int_gt(false, big.as_bytes(), f64::MAX));
        assert!(!decimal_int_gt(true, big.as_bytes(), 25.0));
        assert!(!decimal_int_gt(true, big.as_bytes(), f64::MIN));
        assert!(decimal_int_gt(false, big.as_bytes(), -1e308));
        assert!(!decimal_int_gt(false, big.as_bytes(), f64::INFINITY));
        assert!(decimal_int_gt(true, big.as_bytes(), f64::NEG_INFINITY));
        // 39 digits, just around 2^127 and 1e38.
        let d39 = b"170141183460469231731687303715884105729"; // 2^127 + 1
        assert!(decimal_int_gt(false, d39, TWO_POW_127));
        let d39 = b"170141183460469231731687303715884105728"; // 2^127
        assert!(!decimal_int_gt(false, d39, TWO_POW_127));
        assert!(decimal_int_gt(true, d39, -TWO_POW_127 * 2.0));
    }
}
