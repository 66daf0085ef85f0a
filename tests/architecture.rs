//! Keeps docs/ARCHITECTURE.md true: every file or folder it names exists,
//! and no module imports from a layer above its own (the table there).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

/// The layer of each top-level module of `src/`, bottom up. Modules of the
/// same rank may not import each other unless they are listed together in
/// `SIBLINGS_OK` (none are today: client and server, registry and etcd
/// stay apart).
const LAYERS: &[(&str, u32)] = &[
    ("error", 0),
    ("code", 0),
    ("util", 0),
    ("meta", 0),
    ("wire", 1),
    ("context", 2),
    ("client", 3),
    ("server", 3),
    ("xclient", 4),
    ("registration", 5),
    ("registry", 6),
    ("etcd", 6),
];
/// Same-rank pairs that may import each other: the shared vocabulary.
const SIBLINGS_OK: &[(&str, &str)] = &[
    ("error", "code"),
    ("error", "util"),
    ("code", "error"),
    ("util", "error"),
    ("meta", "error"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `pub use module::{A, B}` lines of lib.rs: which module a root name is from.
fn root_names() -> HashMap<String, String> {
    let lib = fs::read_to_string(root().join("src/lib.rs")).unwrap();
    let mut names = HashMap::new();
    let flat = lib.replace('\n', " ");
    for part in flat.split("pub use ").skip(1) {
        let stmt = part.split(';').next().unwrap();
        let Some((module, rest)) = stmt.split_once("::") else {
            continue;
        };
        for name in rest
            .trim_matches(|c| c == '{' || c == '}' || c == ' ')
            .split(',')
        {
            let name = name.trim();
            if !name.is_empty() {
                names.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    names.insert("duration".into(), "util".into());
    names
}

/// The top-level modules a source text refers to through `crate::`
/// (`crate::a::..` and `crate::{a, b}`), comments left out (doc links may
/// point anywhere) and unit tests too: a test module may use a higher
/// layer to drive the code under test (a real server for the client).
fn referenced(text: &str, roots: &HashMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]")
            || line.trim_start().starts_with("#[cfg(all(test")
        {
            break;
        }
        let code = line.split("//").next().unwrap();
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let names: Vec<String> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap()
                    .split(',')
                    .map(ident)
                    .collect(),
                None => vec![ident(rest)],
            };
            for name in names.into_iter().filter(|n| !n.is_empty()) {
                out.push(roots.get(&name).cloned().unwrap_or(name));
            }
        }
    }
    out
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let rank: HashMap<&str, u32> = LAYERS.iter().copied().collect();
    let roots = root_names();
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut upward = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = first.trim_end_matches(".rs").to_string();
        let Some(&mine) = rank.get(top.as_str()) else {
            continue; // lib.rs, the fuzz seam and the binary sit on top
        };
        for used in referenced(&fs::read_to_string(f).unwrap(), &roots) {
            let Some(&theirs) = rank.get(used.as_str()) else {
                continue;
            };
            let sibling = theirs == mine
                && used != top
                && !SIBLINGS_OK.contains(&(top.as_str(), used.as_str()));
            if theirs > mine || sibling {
                upward.push(format!("{} uses crate::{used}", rel.display()));
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(
        upward.is_empty(),
        "imports against the layers:\n{}",
        upward.join("\n")
    );
}

#[test]
fn every_path_the_architecture_page_names_exists() {
    let page = fs::read_to_string(root().join("docs/ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    let mut named = 0;
    for (i, token) in page.split('`').enumerate() {
        // Odd pieces are inside backticks; paths hold a slash or end in .rs.
        if i % 2 == 0 || token.contains(' ') || !(token.contains('/') || token.ends_with(".rs")) {
            continue;
        }
        let path = token.trim_end_matches('/');
        named += 1;
        if !(root().join(path).exists() || root().join("src").join(path).exists()) {
            missing.push(token.to_string());
        }
    }
    assert!(named > 20, "the page names only {named} paths");
    assert!(
        missing.is_empty(),
        "docs/ARCHITECTURE.md names paths that do not exist: {missing:?}"
    );
}

#[test]
fn the_layer_check_sees_an_upward_import() {
    // The checker itself: a wire file that used the client would be caught.
    let roots = root_names();
    let refs = referenced(
        "use crate::client::Client;\n// crate::server in a comment",
        &roots,
    );
    assert_eq!(refs, vec!["client".to_string()]);
    assert_eq!(
        referenced("let e: crate::Error;", &roots),
        vec!["error".to_string()]
    );
}
