//! Conditions over several fields, the verdict's test when one is set (MQTT in → parse →
//! **verdict** → batch → MQTT out): `--condition` or the twin's `Condition` key, parsed once
//! ([`parse`](Condition::parse)) into a plan — the distinct fields it reads and a postfix
//! program of comparisons and connectives — that the verdict stage evaluates for every
//! message from the field values one walk over the document found
//! (`pipeline::verdict::Evaluator::evaluate_condition`), with no allocation.
//!
//! # Grammar
//! ```text
//! condition  := or
//! or         := and ("or" and)*
//! and        := unary ("and" unary)*
//! unary      := "not" unary | "(" or ")" | comparison
//! comparison := field op value | value op field
//! op         := ">" | ">=" | "<" | "<=" | "==" | "!="
//! value      := number | "threshold"
//! field      := key ("." key)*
//! key        := [A-Za-z_][A-Za-z0-9_-]*  (later keys may start with a digit)
//!             | a JSON string ("temp.1", "and", "threshold": any key, quoted)
//! number     := a JSON number: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
//! ```
//! `not` binds tighter than `and`, which binds tighter than `or`; `and`, `or`, `not` and
//! `threshold` are lowercase words (a field of that name is written quoted). `threshold` is the
//! threshold in force for the message's device (its per-device threshold, else
//! `TemperatureThreshold`). Example: `machine.temperature > threshold and machine.pressure >= 1.5`.
//! Limits: 4096 bytes (what edgeHub accepts as one reported value), 64 comparisons, 32
//! distinct fields, 32 levels of `not` and parentheses.
//!
//! # Meaning, as Python's `json.loads` output would give it
//! - Numbers in the condition are `f64` (like the threshold); a field's number compares with
//!   them exactly, as Python compares an `int` or a `float` with a `float`.
//! - A field that is **absent** (or behind a value that is not an object) makes its
//!   comparisons false — `not` of such a comparison is true — and the message is counted in
//!   `edgefilter_condition_fields_missing_total`.
//! - A field that is present but **not a number** (string, boolean, null, object, array)
//!   rejects the message as `not_a_number`, whatever the rest of the condition says: the same
//!   answer the seed gives for its one field, so `--condition 'machine.temperature > threshold'`
//!   decides every message exactly as the default does.
//! - Every comparison is evaluated (no short cut), so which fields count as missing does not
//!   depend on their order.

mod parse;

pub use parse::ConditionError;

use std::cmp::Ordering;

use crate::pipeline::verdict::{FieldPath, FieldValue};

/// Longest condition, in bytes: edgeHub's limit for one reported value, so the condition in
/// force can always be reported back.
pub const MAX_LEN: usize = 4096;
/// Most comparisons in one condition (the evaluator's stack is one `u64` of bits).
pub const MAX_COMPARISONS: usize = 64;
/// Most distinct fields in one condition.
pub const MAX_FIELDS: usize = 32;
/// Deepest nesting of `not` and parentheses (the parser recurses).
pub const MAX_DEPTH: usize = 32;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Gt,
    Ge,
    Lt,
    Le,
    Eq,
    Ne,
}

impl CmpOp {
    /// The same test with its operands swapped (`1.5 <= x` is `x >= 1.5`).
    pub fn flipped(self) -> CmpOp {
        match self {
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::Ge => CmpOp::Le,
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::Le => CmpOp::Ge,
            CmpOp::Eq | CmpOp::Ne => self,
        }
    }

    /// Whether a field ordered `ord` against the value passes.
    pub fn holds(self, ord: Ordering) -> bool {
        match self {
            CmpOp::Gt => ord == Ordering::Greater,
            CmpOp::Ge => ord != Ordering::Less,
            CmpOp::Lt => ord == Ordering::Less,
            CmpOp::Le => ord != Ordering::Greater,
            CmpOp::Eq => ord == Ordering::Equal,
            CmpOp::Ne => ord != Ordering::Equal,
        }
    }
}

/// The value side of a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rhs {
    Const(f64),
    /// The threshold in force for the message's device.
    Threshold,
}

/// One step of the postfix program.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Op {
    /// Push the comparison of field `slot` with `rhs`.
    Cmp {
        slot: u8,
        op: CmpOp,
        rhs: Rhs,
    },
    And,
    Or,
    Not,
}

/// A compiled condition. Equal when their text is (the plan follows from it).
#[derive(Debug, Clone)]
pub struct Condition {
    source: String,
    fields: Vec<FieldPath>,
    program: Vec<Op>,
    uses_threshold: bool,
    /// The fields as a tree of keys from the top level (node 0 is the document), so one walk
    /// over the document finds them all.
    trie: Vec<PathNode>,
}

/// A key of the fields' tree: its children (nodes `first..end`: the nodes are numbered level
/// by level, so a node's children are next to each other), and the slot of the field that
/// ends here.
#[derive(Debug, Clone)]
pub(crate) struct PathNode {
    pub(crate) key: Box<[u8]>,
    pub(crate) first: u16,
    pub(crate) end: u16,
    pub(crate) slot: Option<u8>,
}

impl PathNode {
    /// The indices of its children in the tree.
    #[inline]
    pub(crate) fn children(&self) -> std::ops::Range<usize> {
        usize::from(self.first)..usize::from(self.end)
    }
}

impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Condition {
    /// Parses and compiles a condition (see the module documentation for the grammar).
    pub fn parse(src: &str) -> Result<Condition, ConditionError> {
        parse::parse(src)
    }

    fn compiled(
        source: String,
        fields: Vec<FieldPath>,
        program: Vec<Op>,
        uses_threshold: bool,
    ) -> Condition {
        // The tree as built (children in any order), then numbered level by level.
        struct Building<'a> {
            key: &'a str,
            children: Vec<usize>,
            slot: Option<u8>,
        }
        let mut built = vec![Building {
            key: "",
            children: Vec::new(),
            slot: None,
        }];
        for (slot, field) in fields.iter().enumerate() {
            let mut n = 0;
            for key in field.keys() {
                let found = built[n]
                    .children
                    .iter()
                    .find(|&&c| built[c].key == key.as_str());
                n = match found {
                    Some(&c) => c,
                    None => {
                        built.push(Building {
                            key: key.as_str(),
                            children: Vec::new(),
                            slot: None,
                        });
                        let c = built.len() - 1;
                        built[n].children.push(c);
                        c
                    }
                };
            }
            built[n].slot = Some(slot as u8);
        }
        // At most MAX_FIELDS × (the keys of a field) nodes, under 4096 by MAX_LEN: u16.
        let mut order = vec![0];
        let mut trie = Vec::with_capacity(built.len());
        while let Some(&b) = order.get(trie.len()) {
            let first = order.len() as u16;
            order.extend_from_slice(&built[b].children);
            trie.push(PathNode {
                key: built[b].key.as_bytes().into(),
                first,
                end: order.len() as u16,
                slot: built[b].slot,
            });
        }
        Condition {
            source,
            fields,
            program,
            uses_threshold,
            trie,
        }
    }

    pub(crate) fn trie(&self) -> &[PathNode] {
        &self.trie
    }

    /// The condition as written (trimmed).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The distinct fields it reads, in order of first use (slot order).
    pub fn fields(&self) -> &[FieldPath] {
        &self.fields
    }

    /// Whether it names `threshold` (else per-device thresholds and hysteresis change nothing).
    pub fn uses_threshold(&self) -> bool {
        self.uses_threshold
    }

    /// Evaluates the program over the message's field values (`values[slot]`) with `threshold`
    /// for the name `threshold`. Allocation-free: the stack is the bits of a `u64`.
    pub(crate) fn eval(&self, values: &[FieldValue], threshold: f64, payload: &[u8]) -> bool {
        let mut stack: u64 = 0;
        for op in &self.program {
            match *op {
                Op::Cmp { slot, op, rhs } => {
                    let v = match rhs {
                        Rhs::Const(c) => c,
                        Rhs::Threshold => threshold,
                    };
                    let b = values
                        .get(usize::from(slot))
                        .and_then(|f| f.cmp(v, payload))
                        .is_some_and(|ord| op.holds(ord));
                    stack = (stack << 1) | u64::from(b);
                }
                Op::Not => stack ^= 1,
                Op::And => stack = (stack >> 1) & (stack | !1),
                Op::Or => stack = (stack >> 1) | (stack & 1),
            }
        }
        stack & 1 == 1
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests;
