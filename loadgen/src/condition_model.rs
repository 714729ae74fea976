//! Tooling: loadgen's own model of edgefilter's conditions and per-device thresholds
//! (edgefilter's README, "Conditions and per-device thresholds"), written apart from the
//! filter's code so that a run checks the filter instead of repeating it: which of loadgen's
//! messages alert under `--condition` and `--device-threshold` (and, in edge mode, re-arm).
//! Pure; the publishers ask it per message, with the values they just wrote into the body.
//!
//! loadgen's bodies hold numbers at `machine.temperature`, `machine.pressure`,
//! `ambient.temperature`, `ambient.humidity`, `seq` and `sentUs`; `timeCreated` and `device`
//! are strings and `machine`/`ambient` objects, which a condition may not name here (the
//! filter would reject every message); every other field is absent, so its comparisons are
//! false. The numbers are written in their shortest round-trip form, so the filter compares
//! exactly the `f64`s compared here.

use edgefilter_sensor::Reading;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    /// `field op value`, the field on the left (a value on the left is flipped).
    Cmp {
        field: Field,
        op: &'static str,
        value: Option<f64>,
    },
}

/// The fields of loadgen's bodies a condition may read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    MachineTemperature,
    MachinePressure,
    AmbientTemperature,
    AmbientHumidity,
    Seq,
    SentUs,
    /// Not in loadgen's bodies: comparisons with it are false.
    Absent,
}

/// What a message holds, as the condition reads it.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub reading: &'a Reading,
    /// None for the readiness probe, which carries no `seq`.
    pub seq: Option<u64>,
    pub sent_us: u64,
}

impl Field {
    fn of(path: &[String]) -> Result<Field, String> {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        Ok(match p.as_slice() {
            ["machine", "temperature"] => Field::MachineTemperature,
            ["machine", "pressure"] => Field::MachinePressure,
            ["ambient", "temperature"] => Field::AmbientTemperature,
            ["ambient", "humidity"] => Field::AmbientHumidity,
            ["seq"] => Field::Seq,
            ["sentUs"] => Field::SentUs,
            ["timeCreated"] | ["device"] | ["machine"] | ["ambient"] => {
                return Err(format!(
                    "{} is not a number in loadgen's messages: the filter would reject every one",
                    p.join(".")
                ))
            }
            _ => Field::Absent,
        })
    }

    fn value(self, m: &Message<'_>) -> Option<f64> {
        Some(match self {
            Field::MachineTemperature => m.reading.machine_temperature,
            Field::MachinePressure => m.reading.machine_pressure,
            Field::AmbientTemperature => m.reading.ambient_temperature,
            Field::AmbientHumidity => m.reading.ambient_humidity as f64,
            Field::Seq => m.seq? as f64,
            Field::SentUs => m.sent_us as f64,
            Field::Absent => return None,
        })
    }
}

impl Expr {
    /// Whether the message passes with `threshold` for the name `threshold`.
    pub fn holds(&self, m: &Message<'_>, threshold: f64) -> bool {
        match self {
            Expr::Or(a, b) => a.holds(m, threshold) | b.holds(m, threshold),
            Expr::And(a, b) => a.holds(m, threshold) & b.holds(m, threshold),
            Expr::Not(a) => !a.holds(m, threshold),
            Expr::Cmp { field, op, value } => {
                let Some(x) = field.value(m) else {
                    return false;
                };
                let c = value.unwrap_or(threshold);
                match *op {
                    ">" => x > c,
                    ">=" => x >= c,
                    "<" => x < c,
                    "<=" => x <= c,
                    "==" => x == c,
                    _ => x != c,
                }
            }
        }
    }

    /// Parses the filter's condition grammar (README): comparisons, `and`, `or`, `not`,
    /// parentheses; `threshold` is the device's threshold.
    pub fn parse(text: &str) -> Result<Expr, String> {
        let toks = tokens(text)?;
        let mut i = 0;
        let e = or(&toks, &mut i)?;
        if i != toks.len() {
            return Err(format!("unexpected {:?}", toks[i]));
        }
        Ok(e)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Path(Vec<String>),
    Num(f64),
    Op(&'static str),
    Open,
    Close,
}

fn tokens(text: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        if let Some(op) = [">=", "<=", "==", "!="].into_iter().find(|o| *o == two) {
            out.push(Tok::Op(op));
            i += 2;
        } else if c == '>' || c == '<' {
            out.push(Tok::Op(if c == '>' { ">" } else { "<" }));
            i += 1;
        } else if c == '(' || c == ')' {
            out.push(if c == '(' { Tok::Open } else { Tok::Close });
            i += 1;
        } else if c == '-' || c.is_ascii_digit() {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "+-.".contains(chars[i]))
            {
                if (chars[i] == '+' || chars[i] == '-') && !"eE".contains(chars[i - 1]) {
                    break;
                }
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            out.push(Tok::Num(s.parse().map_err(|_| format!("bad number {s}"))?));
        } else {
            let mut keys: Vec<String> = Vec::new();
            let mut quoted_first = false;
            loop {
                if chars.get(i) == Some(&'"') {
                    quoted_first |= keys.is_empty();
                    let start = i;
                    i += 1;
                    while i < chars.len() && chars[i] != '"' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                    let s: String = chars[start..i.min(chars.len())].iter().collect();
                    keys.push(serde_json::from_str(&s).map_err(|e| e.to_string())?);
                } else {
                    let start = i;
                    while i < chars.len()
                        && (chars[i].is_ascii_alphanumeric() || "_-".contains(chars[i]))
                    {
                        i += 1;
                    }
                    if start == i {
                        return Err(format!("unexpected {:?}", chars[i]));
                    }
                    keys.push(chars[start..i].iter().collect());
                }
                if chars.get(i) == Some(&'.') {
                    i += 1;
                } else {
                    break;
                }
            }
            let word = ["and", "or", "not", "threshold"].contains(&keys[0].as_str());
            out.push(if keys.len() == 1 && !quoted_first && word {
                Tok::Word(keys.remove(0))
            } else {
                Tok::Path(keys)
            });
        }
    }
    Ok(out)
}

fn or(t: &[Tok], i: &mut usize) -> Result<Expr, String> {
    let mut e = and(t, i)?;
    while t.get(*i) == Some(&Tok::Word("or".into())) {
        *i += 1;
        e = Expr::Or(Box::new(e), Box::new(and(t, i)?));
    }
    Ok(e)
}

fn and(t: &[Tok], i: &mut usize) -> Result<Expr, String> {
    let mut e = unary(t, i)?;
    while t.get(*i) == Some(&Tok::Word("and".into())) {
        *i += 1;
        e = Expr::And(Box::new(e), Box::new(unary(t, i)?));
    }
    Ok(e)
}

fn unary(t: &[Tok], i: &mut usize) -> Result<Expr, String> {
    match t.get(*i) {
        Some(Tok::Word(w)) if w == "not" => {
            *i += 1;
            Ok(Expr::Not(Box::new(unary(t, i)?)))
        }
        Some(Tok::Open) => {
            *i += 1;
            let e = or(t, i)?;
            if t.get(*i) != Some(&Tok::Close) {
                return Err("expected )".into());
            }
            *i += 1;
            Ok(e)
        }
        _ => {
            let (a, op, b) = (t.get(*i), t.get(*i + 1), t.get(*i + 2));
            *i += 3;
            let Some(Tok::Op(op)) = op else {
                return Err("expected a comparison operator".into());
            };
            let value = |v: Option<&Tok>| match v {
                Some(Tok::Num(n)) => Ok(Some(*n)),
                Some(Tok::Word(w)) if w == "threshold" => Ok(None),
                other => Err(format!("expected a number or threshold, got {other:?}")),
            };
            let flip = |op: &'static str| match op {
                ">" => "<",
                ">=" => "<=",
                "<" => ">",
                "<=" => ">=",
                o => o,
            };
            match (a, b) {
                (Some(Tok::Path(p)), v) => Ok(Expr::Cmp {
                    field: Field::of(p)?,
                    op,
                    value: value(v)?,
                }),
                (v, Some(Tok::Path(p))) => Ok(Expr::Cmp {
                    field: Field::of(p)?,
                    op: flip(op),
                    value: value(v)?,
                }),
                _ => Err("a comparison needs a field".into()),
            }
        }
    }
}

/// The threshold of `device` under the per-device map: the most specific matching MQTT
/// filter (level by level, a literal beats `+`, `+` beats the filter's end, which beats `#`).
/// A scan of the map: loadgen asks once per device, not per message.
pub fn device_threshold(map: &[(String, f64)], device: &str) -> Option<f64> {
    let levels: Vec<&str> = device.split('/').collect();
    let rank = |filter: &str| -> Option<Vec<u8>> {
        if device.starts_with('$') && filter.starts_with(['+', '#']) {
            return None;
        }
        let f: Vec<&str> = filter.split('/').collect();
        let mut key = Vec::new();
        for (i, l) in levels.iter().enumerate() {
            match f.get(i) {
                Some(&"#") => {
                    key.push(0);
                    return Some(key);
                }
                Some(&"+") => key.push(2),
                Some(x) if x == l => key.push(3),
                _ => return None,
            }
        }
        match f.get(levels.len()) {
            None => key.push(1),
            Some(&"#") if f.len() == levels.len() + 1 => key.push(0),
            Some(_) => return None,
        }
        Some(key)
    };
    map.iter()
        .filter_map(|(f, v)| rank(f).map(|r| (r, *v)))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: f64, p: f64) -> Reading {
        Reading {
            machine_temperature: t,
            machine_pressure: p,
            ambient_temperature: 21.0,
            ambient_humidity: 25,
        }
    }

    #[test]
    fn conditions_as_the_readme_says() {
        let c = Expr::parse("machine.temperature > threshold and machine.pressure >= 1.5").unwrap();
        fn m(r: &Reading) -> Message<'_> {
            Message {
                reading: r,
                seq: Some(1),
                sent_us: 2,
            }
        }
        assert!(c.holds(&m(&msg(30.0, 1.5)), 25.0));
        assert!(!c.holds(&m(&msg(30.0, 1.4)), 25.0));
        assert!(!c.holds(&m(&msg(30.0, 2.0)), 30.0));
        let c = Expr::parse("not (1.5 < machine.pressure) or x.y > 1 or ambient.humidity == 25")
            .unwrap();
        assert!(c.holds(&m(&msg(30.0, 2.0)), 25.0));
        let c = Expr::parse("not x.y > 1").unwrap();
        assert!(
            c.holds(&m(&msg(30.0, 2.0)), 25.0),
            "absent: the comparison is false"
        );
        assert!(Expr::parse("timeCreated > 1")
            .unwrap_err()
            .contains("not a number"));
    }

    #[test]
    fn the_most_specific_filter_wins() {
        let map: Vec<(String, f64)> = [
            ("telemetry/dev-1", 300.0),
            ("telemetry/+", 80.0),
            ("telemetry/#", 70.0),
            ("#", 1.0),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
        assert_eq!(device_threshold(&map, "telemetry/dev-1"), Some(300.0));
        assert_eq!(device_threshold(&map, "telemetry/dev-2"), Some(80.0));
        assert_eq!(device_threshold(&map, "telemetry"), Some(70.0));
        assert_eq!(device_threshold(&map, "telemetry/a/b"), Some(70.0));
        assert_eq!(device_threshold(&map, "x"), Some(1.0));
        assert_eq!(device_threshold(&map, "$SYS/x"), None);
    }
}
