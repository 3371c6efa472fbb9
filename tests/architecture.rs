//! The layers of `src/` (see "Architecture" in README.md), checked on the
//! source: which top-level modules each one refers to through `crate::…`.
//! Fails on an import that runs against the layering or closes a cycle.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Each layer and what it may refer to. Anything not listed is forbidden.
const ALLOWED: &[(&str, &[&str])] = &[
    ("config", &[]),
    ("domain", &[]),
    ("telemetry", &[]),
    ("tokens", &["config", "domain"]),
    ("persistence", &["config", "domain", "telemetry", "tokens"]),
    // Domain: a revocation's reason decides the refusal's message.
    ("error", &["domain", "persistence", "tokens"]),
    ("passwords", &["config", "domain", "error", "telemetry"]),
    (
        "accounts",
        &[
            "config",
            "domain",
            "error",
            "passwords",
            "persistence",
            "telemetry",
            "tokens",
        ],
    ),
    (
        "grpc",
        &[
            "accounts",
            "config",
            "domain",
            "error",
            "persistence",
            "telemetry",
            "tokens",
            "pb",
        ],
    ),
    // Transport too: the HTTP listener.
    ("web", &["accounts", "config", "grpc", "telemetry"]),
    (
        "startup",
        &[
            "accounts",
            "config",
            "grpc",
            "passwords",
            "persistence",
            "telemetry",
            "tokens",
            "web",
        ],
    ),
    (
        "commands",
        &[
            "accounts",
            "config",
            "domain",
            "error",
            "passwords",
            "persistence",
            "startup",
            "tokens",
        ],
    ),
];

/// Only the transport speaks gRPC (or HTTP): these names mean tonic, prost,
/// the generated code or the `http` crate, wherever they appear outside the
/// transport modules `grpc` and `web` (and startup's wiring).
const TRANSPORT_NAMES: &[&str] = &["tonic", "prost", "crate::pb", "crate::grpc", "http::"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("src is readable").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to (`persistence` for
/// `src/persistence/users.rs`, `tokens` for `src/tokens.rs`); `None` for
/// the crate root and binaries.
fn layer_of(path: &Path) -> Option<String> {
    let relative = path.strip_prefix(src()).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "bin")).then(|| name.to_owned())
}

/// The code of a file without comments, so prose does not count.
fn code(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules `text` refers to as `crate::name` or inside
/// `crate::{…}` groups.
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each comma-separated path at the top level.
            let mut depth = 1;
            let mut name = String::new();
            let mut expect_name = true;
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 {
                    break;
                }
                if expect_name && depth == 1 && (c.is_alphanumeric() || c == '_') {
                    name.push(c);
                    continue;
                }
                if !name.is_empty() {
                    found.insert(std::mem::take(&mut name));
                    expect_name = false;
                }
                if depth == 1 && c == ',' {
                    expect_name = true;
                }
            }
            if !name.is_empty() {
                found.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            found.insert(name);
        }
    }
    found.retain(|name| name != "self" && !name.is_empty());
    found
}

fn references_by_layer() -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for path in files {
        let Some(layer) = layer_of(&path) else {
            continue;
        };
        let text = code(&fs::read_to_string(&path).expect("a readable source file"));
        let references = crate_references(&text);
        let entry = graph.entry(layer.clone()).or_default();
        entry.extend(references.into_iter().filter(|r| *r != layer));
    }
    graph
}

#[test]
fn every_layer_imports_only_the_layers_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut violations = Vec::new();
    for (layer, references) in references_by_layer() {
        let Some(may) = allowed.get(layer.as_str()) else {
            violations.push(format!("{layer}: a module the layering does not know"));
            continue;
        };
        for reference in references {
            if !may.contains(&reference.as_str()) {
                violations.push(format!("{layer} imports {reference}"));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn the_allowed_imports_have_no_cycle() {
    // Depth-first search over the allowed edges; the references found are a
    // subset of them (checked above), so no cycle here means none in src.
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    fn visit<'a>(
        node: &'a str,
        allowed: &BTreeMap<&'a str, &'a [&'a str]>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) {
        assert!(!path.contains(&node), "import cycle: {path:?} -> {node}");
        if done.contains(node) {
            return;
        }
        path.push(node);
        for next in allowed.get(node).copied().unwrap_or_default() {
            visit(next, allowed, path, done);
        }
        path.pop();
        done.insert(node);
    }
    let mut done = BTreeSet::new();
    for layer in allowed.keys() {
        visit(layer, &allowed, &mut Vec::new(), &mut done);
    }
}

#[test]
fn only_the_transport_knows_grpc() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut violations = Vec::new();
    for path in files {
        let Some(layer) = layer_of(&path) else {
            continue;
        };
        if matches!(layer.as_str(), "grpc" | "web" | "startup" | "commands") {
            continue;
        }
        let text = code(&fs::read_to_string(&path).expect("a readable source file"));
        for name in TRANSPORT_NAMES {
            if text.contains(name) {
                violations.push(format!("{}: {name}", path.display()));
            }
        }
    }
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn the_checker_sees_grouped_and_plain_imports() {
    let text = "use crate::{a::X, b, c::{d::Y, e}};\nfn f() { crate::g::h(); }";
    let found: Vec<String> = crate_references(text).into_iter().collect();
    assert_eq!(found, ["a", "b", "c", "g"]);
    assert_eq!(
        layer_of(&src().join("persistence/users.rs")).as_deref(),
        Some("persistence")
    );
    assert_eq!(
        layer_of(&src().join("tokens.rs")).as_deref(),
        Some("tokens")
    );
    assert_eq!(layer_of(&src().join("lib.rs")), None);
}
