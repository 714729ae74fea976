//! The crate's layers, checked from the source text: which module imports which, outside test
//! code. Every import points down the list in `src/lib.rs` (`cli` on top, `settings` at the
//! bottom); no circle of imports between the top-level modules, nor between the files of one
//! folder (a file and its folder's `mod.rs` aside: a child uses what its parent declares), nor
//! between loadgen's files.
//!
//! A crude reader, not a parser: it follows `crate::a::b` paths and `super::x` paths in the
//! text of each `.rs` file, skipping comments and everything from a `#[cfg(test)]` on (test
//! modules sit at the end of their files here) and test-only files. A circle it misses a
//! review can still find; one it reports is real.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top to bottom: a module may import those on its own line (without a circle) or below.
const LAYERS: &[&[&str]] = &[
    &["main"],
    &["cli"],
    &["demo", "run"],
    &["plan"],
    &["io"],
    &["flow"],
    &["twin"],
    &["metrics"],
    &["logging", "shutdown"],
    &["settings"],
    &["pipeline"],
    &["mqtt", "sensor"],
];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module `{module}` is in no layer of tests/it/layers.rs"))
}

/// Every `.rs` file below `dir`, test-only files left out.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if name != "tests" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" && !name.ends_with("_tests.rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The text of a file without its comments and without anything from `#[cfg(test)]` on.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths following `prefix` (e.g. `crate::`) in `code`: `crate::flow::dialect::{A, B}`
/// gives `["flow", "dialect"]` (lower-case segments only: modules, not items).
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().last();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `my_crate::` is not `crate::`
        }
        let mut segs = Vec::new();
        let mut s = rest;
        loop {
            let end = s
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            let seg = &s[..end];
            if seg.is_empty() || !seg.starts_with(|c: char| c.is_ascii_lowercase()) {
                break;
            }
            segs.push(seg.to_string());
            if !s[end..].starts_with("::") {
                break;
            }
            s = &s[end + 2..];
        }
        if !segs.is_empty() {
            out.push(segs);
        }
    }
    out
}

/// A module path (below `root`) as the file that holds it: `flow/dialect` is
/// `flow/dialect/mod.rs` or `flow/dialect.rs`; the deepest such prefix of `segs`.
fn file_of(root: &Path, segs: &[String]) -> Option<PathBuf> {
    for n in (1..=segs.len()).rev() {
        let p = segs[..n].join("/");
        for candidate in [root.join(format!("{p}.rs")), root.join(&p).join("mod.rs")] {
            if candidate.exists() {
                return Some(candidate);
            }
        }
    }
    None
}

/// The folder a file's `super::` refers to, as path segments below `root`.
fn parent_segments(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).unwrap();
    let mut segs: Vec<String> = rel
        .iter()
        .map(|s| s.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    segs.pop(); // the file itself (or `mod`)
    if rel.file_name().is_some_and(|n| n == "mod.rs") {
        segs.pop(); // `super` of a mod.rs is the folder above
    }
    segs
}

/// File-level imports of a source tree: file → files it names through `crate::` and `super::`.
fn file_graph(root: &Path) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut graph = BTreeMap::new();
    for file in sources(root) {
        let code = code(&file);
        let mut targets = BTreeSet::new();
        for segs in paths_after(&code, "crate::") {
            if let Some(t) = file_of(root, &segs) {
                targets.insert(t);
            }
        }
        let parent = parent_segments(root, &file);
        for segs in paths_after(&code, "super::") {
            let mut full = parent.clone();
            full.extend(segs);
            if let Some(t) = file_of(root, &full) {
                targets.insert(t);
            }
        }
        targets.remove(&file);
        graph.insert(file, targets);
    }
    graph
}

/// A circle in `graph`, if any (as the list of its nodes).
fn find_cycle<T: Ord + Clone>(graph: &BTreeMap<T, BTreeSet<T>>) -> Option<Vec<T>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit<T: Ord + Clone>(
        n: &T,
        graph: &BTreeMap<T, BTreeSet<T>>,
        marks: &mut BTreeMap<T, Mark>,
        stack: &mut Vec<T>,
    ) -> Option<Vec<T>> {
        match marks.get(n) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let i = stack.iter().position(|x| x == n).unwrap();
                return Some(stack[i..].to_vec());
            }
            None => {}
        }
        marks.insert(n.clone(), Mark::Open);
        stack.push(n.clone());
        for m in graph.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, graph, marks, stack) {
                return Some(c);
            }
        }
        stack.pop();
        marks.insert(n.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for n in graph.keys() {
        let mut stack = Vec::new();
        if let Some(c) = visit(n, graph, &mut marks, &mut stack) {
            return Some(c);
        }
    }
    None
}

/// The top-level module a file of `src/` belongs to.
fn top_module(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap();
    let first = rel.iter().next().unwrap().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

fn show(root: &Path, cycle: &[PathBuf]) -> String {
    cycle
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect::<Vec<_>>()
        .join(" -> ")
}

#[test]
fn every_import_points_down_the_layers_and_none_goes_round() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = file_graph(&root);
    // Top-level modules.
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut upward = Vec::new();
    for (file, targets) in &files {
        let from = top_module(&root, file);
        if from == "lib" {
            continue; // declares the modules
        }
        for t in targets {
            let to = top_module(&root, t);
            if to == from || to == "lib" {
                continue;
            }
            if layer_of(&to) < layer_of(&from) {
                upward.push(format!(
                    "{} imports {to} (a layer above {from})",
                    file.strip_prefix(&root).unwrap().display()
                ));
            }
            modules.entry(from.clone()).or_default().insert(to);
        }
    }
    assert!(upward.is_empty(), "{}", upward.join("\n"));
    assert_eq!(find_cycle(&modules), None, "a circle of top-level modules");
    if let Some(c) = find_cycle(&without_parents(&files)) {
        panic!("a circle of files: {}", show(&root, &c));
    }
}

#[test]
fn loadgens_files_import_each_other_without_a_circle() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("loadgen/src");
    if let Some(c) = find_cycle(&without_parents(&file_graph(&root))) {
        panic!("a circle of loadgen files: {}", show(&root, &c));
    }
}

/// Whether `parent` is the module file that declares `child` (`dir/mod.rs` or `dir.rs` for
/// a file in `dir/`), or the crate root.
fn is_parent(parent: &Path, child: &Path) -> bool {
    let name = parent.file_name().unwrap().to_string_lossy();
    if name == "lib.rs" || name == "main.rs" {
        return true;
    }
    let dir = if name == "mod.rs" {
        parent.parent().unwrap().to_path_buf()
    } else {
        parent.with_extension("")
    };
    child.parent() == Some(&dir)
}

/// The file graph without the edges between a module file and the files it declares (a
/// child uses what its parent declares and re-exports): the circles left are real.
fn without_parents(
    files: &BTreeMap<PathBuf, BTreeSet<PathBuf>>,
) -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    files
        .iter()
        .map(|(f, ts)| {
            let ts = ts
                .iter()
                .filter(|t| !is_parent(t, f) && !is_parent(f, t))
                .cloned()
                .collect();
            (f.clone(), ts)
        })
        .collect()
}

#[test]
fn the_reader_sees_a_circle_when_there_is_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("flow")).unwrap();
    std::fs::write(src.join("flow/mod.rs"), "mod a;\nmod b;\n").unwrap();
    std::fs::write(src.join("flow/a.rs"), "use super::b::thing;\n").unwrap();
    std::fs::write(
        src.join("flow/b.rs"),
        "// use super::a::nothing; (a comment)\nuse crate::flow::a::other;\n#[cfg(test)]\nmod tests { use crate::io::x; }\n",
    )
    .unwrap();
    let files = file_graph(src);
    assert_eq!(
        find_cycle(&files).map(|c| show(src, &c)),
        Some("flow/a.rs -> flow/b.rs".to_string())
    );
    let b = &files[&src.join("flow/b.rs")];
    assert_eq!(b.len(), 1, "comments and tests do not count: {b:?}");
}
