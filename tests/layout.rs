//! The shape of the workspace, checked: in every library crate (the core
//! under `shared/src`, each adapter under `shared/adapters`, the functions'
//! wiring, the CLI) no module imports one that imports it back (at the level
//! of files, and of top-level modules), each crate's doc names its public
//! modules, and no production file grows past the size where it starts
//! mixing roles.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
/// Lines of production code (test modules not counted) a file may have.
const MAX_LINES: usize = 500;

/// The `src` folder of every library crate of the workspace, the core first.
fn crate_sources() -> Vec<PathBuf> {
    let root = Path::new(ROOT);
    let mut out = vec![root.join("shared/src"), root.join("infra/cli/src")];
    for parent in ["shared/adapters", "functions"] {
        let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join(parent))
            .expect(parent)
            .map(|e| e.expect("dir entry").path().join("src"))
            .filter(|src| src.is_dir())
            .collect();
        crates.sort();
        out.extend(crates);
    }
    out
}

/// Every `.rs` file under a crate's `src`, as a path relative to it.
fn files(src: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("a crate's src") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path.strip_prefix(base).expect("under src").to_path_buf());
            }
        }
    }
    let mut out = Vec::new();
    walk(src, src, &mut out);
    out.sort();
    out
}

/// Test-only files, and the test module that closes a production file.
fn is_test_file(file: &Path) -> bool {
    matches!(
        file.file_name().and_then(|n| n.to_str()),
        Some("tests.rs" | "testing.rs")
    )
}

fn production_text(text: &str) -> &str {
    match text.find("#[cfg(test)]\nmod tests {") {
        Some(at) => &text[..at],
        None => text,
    }
}

/// The code of a file without its comments (a doc link is not an import).
fn code_only(text: &str) -> String {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of a file: `postgres/sink.rs` → [postgres, sink].
fn module_of(file: &Path) -> Vec<String> {
    let mut parts: Vec<String> = file
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

/// The file that holds the longest prefix of a module path.
fn file_of(path: &[String], known: &BTreeSet<PathBuf>) -> Option<PathBuf> {
    for len in (1..=path.len()).rev() {
        let joined = path[..len].join("/");
        for candidate in [format!("{joined}.rs"), format!("{joined}/mod.rs")] {
            let candidate = PathBuf::from(candidate);
            if known.contains(&candidate) {
                return Some(candidate);
            }
        }
    }
    None
}

/// Every `crate::…` and `super::…` path a file names, resolved to files.
fn imports(file: &Path, text: &str, known: &BTreeSet<PathBuf>) -> BTreeSet<PathBuf> {
    let here = module_of(file);
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let Some(rest) = text.get(i..) else {
            // Inside a multi-byte character: no path starts here.
            i += 1;
            continue;
        };
        let (prefix_len, base) = if rest.starts_with("crate::") {
            (7, Vec::new())
        } else if rest.starts_with("super::") {
            // super of a file's module; for mod.rs the module is the folder.
            let mut base = here.clone();
            base.pop();
            (7, base)
        } else {
            i += 1;
            continue;
        };
        let preceded_by_ident = i > 0
            && (bytes[i - 1].is_ascii_alphanumeric()
                || bytes[i - 1] == b'_'
                || bytes[i - 1] == b':');
        if preceded_by_ident {
            i += 1;
            continue;
        }
        let mut j = i + prefix_len;
        let mut segments = Vec::new();
        loop {
            let start = j;
            while j < bytes.len() && (bytes[j].is_ascii_alphanumeric() || bytes[j] == b'_') {
                j += 1;
            }
            if start == j {
                break;
            }
            segments.push(text[start..j].to_string());
            if text[j..].starts_with("::") {
                j += 2;
            } else {
                break;
            }
        }
        // `{a, b}` groups: each member may name a deeper module.
        let mut targets = vec![segments.clone()];
        if text[j..].starts_with('{') {
            if let Some(end) = text[j..].find('}') {
                for member in text[j + 1..j + end].split(',') {
                    let mut path = segments.clone();
                    path.extend(member.trim().split("::").map(|s| s.trim().to_string()));
                    targets.push(path);
                }
            }
        }
        for target in targets {
            let mut full = base.clone();
            full.extend(target.into_iter().filter(|s| !s.is_empty() && s != "self"));
            if let Some(target) = file_of(&full, known) {
                if target != file {
                    out.insert(target);
                }
            }
        }
        i = j.max(i + 1);
    }
    out
}

fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap_or(0);
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, graph, state, stack) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(node, graph, &mut state, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

fn graphs(
    src: &Path,
) -> (
    BTreeMap<String, BTreeSet<String>>,
    BTreeMap<String, BTreeSet<String>>,
) {
    let files = files(src);
    let known: BTreeSet<PathBuf> = files.iter().cloned().collect();
    let mut by_file = BTreeMap::new();
    let mut by_module: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files.iter().filter(|f| !is_test_file(f)) {
        let text = std::fs::read_to_string(src.join(file)).expect("source file");
        let targets = imports(file, &code_only(production_text(&text)), &known);
        let top = |f: &Path| module_of(f).first().cloned().unwrap_or_default();
        for target in &targets {
            if top(target) != top(file) && !top(target).is_empty() && !top(file).is_empty() {
                by_module.entry(top(file)).or_default().insert(top(target));
            }
        }
        by_file.insert(
            file.display().to_string(),
            targets.iter().map(|t| t.display().to_string()).collect(),
        );
    }
    (by_file, by_module)
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let sources = crate_sources();
    assert!(sources.len() >= 12, "crates not found: {sources:?}");
    let (by_file, _) = graphs(&sources[0]);
    assert!(
        by_file.values().map(BTreeSet::len).sum::<usize>() > 50,
        "the import scan found almost nothing: {by_file:?}"
    );
    assert!(
        by_file["case_run/write.rs"].contains("case_run/plan.rs"),
        "the scan misses a known import: {:?}",
        by_file["case_run/write.rs"]
    );
    for src in &sources {
        let (by_file, by_module) = graphs(src);
        if let Some(cycle) = find_cycle(&by_file) {
            panic!(
                "files of {} import each other: {}",
                src.display(),
                cycle.join(" → ")
            );
        }
        if let Some(cycle) = find_cycle(&by_module) {
            panic!(
                "modules of {} import each other: {}",
                src.display(),
                cycle.join(" → ")
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&graph), None);
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
}

#[test]
fn no_production_file_is_over_the_limit() {
    // Production code of every crate the functions and the operator link:
    // the core and its adapters, the functions, the CLI, the Snowflake fork.
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut over = Vec::new();
    for dir in [
        "shared",
        "functions",
        "infra/cli/src",
        "vendor/snowflake-api/src",
    ] {
        for file in workspace_files(&root.join(dir), &["rs"]) {
            if is_test_file(&file) {
                continue;
            }
            let text = std::fs::read_to_string(&file).expect("source file");
            let lines = production_text(&text).lines().count();
            if lines > MAX_LINES {
                over.push(format!("{} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(over.is_empty(), "split by role: {over:?}");
}

/// Every file below `dir` with one of `extensions` (build output and
/// environments left out).
fn workspace_files(dir: &Path, extensions: &[&str]) -> Vec<PathBuf> {
    fn walk(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !matches!(name, "target" | ".local" | "node_modules") {
                    walk(&path, extensions, out);
                }
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| extensions.contains(&e))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, extensions, &mut out);
    out.sort();
    out
}

/// `lib.rs`'s module doc names every public module, so a reader finds each
/// home from the top (a module added without a word there fails here).
#[test]
fn the_library_doc_names_every_public_module() {
    let mut checked = 0;
    for src in crate_sources() {
        let Ok(lib) = std::fs::read_to_string(src.join("lib.rs")) else {
            continue;
        };
        checked += 1;
        let doc: String = lib
            .lines()
            .filter(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        let missing: Vec<&str> = lib
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod "))
            .map(|m| m.trim_end_matches(';'))
            .filter(|m| !doc.contains(&format!("`{m}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "{}/lib.rs's doc does not name {missing:?}",
            src.display()
        );
    }
    assert!(checked >= 11, "only {checked} lib.rs found");
}

/// Code says what is there now; which issue asked for it belongs in the
/// history. No source file of the workspace names an issue number.
#[test]
fn no_source_file_names_an_issue_number() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let mut files = Vec::new();
    for dir in ["shared", "functions", "infra", "tests", "vendor"] {
        files.extend(workspace_files(&root.join(dir), &["rs", "py", "sh"]));
    }
    let mut found = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let lower = text.to_lowercase();
        for (at, _) in lower.match_indices("issue") {
            let rest = lower[at + "issue".len()..].trim_start_matches(['s', ' ', '#']);
            if rest.starts_with(|c: char| c.is_ascii_digit()) {
                let line = text[..at].lines().count();
                found.push(format!("{}:{line}", file.display()));
            }
        }
    }
    assert!(found.is_empty(), "issue numbers in code: {found:?}");
}
