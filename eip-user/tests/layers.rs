//! The layering the README's Layout section draws, checked on the source: each top-level
//! module of eip-user imports (through `crate::` paths, outside its tests) only the modules
//! it lists. A new import that points up a layer, or sideways where the map has no edge,
//! fails here with the file that made it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// Module -> the modules it may import. `model` is plain data and imports nothing; `testing`
/// is the test harness (feature `testing`) and may use anything, but nothing imports it.
const ALLOWED: &[(&str, &[&str])] = &[
    ("cli", &["api", "daemon", "model"]),
    (
        "daemon",
        &["api", "dhcp", "engine", "lifecycle", "store", "kernel", "model"],
    ),
    (
        "api",
        &["engine", "lifecycle", "store", "dhcp", "kernel", "model"],
    ),
    ("dhcp", &["engine", "lifecycle", "kernel", "model"]),
    ("engine", &["lifecycle", "store", "kernel", "model"]),
    ("lifecycle", &["model"]),
    ("store", &["model"]),
    ("kernel", &["model"]),
    ("model", &[]),
    (
        "testing",
        &[
            "daemon",
            "api",
            "dhcp",
            "engine",
            "lifecycle",
            "store",
            "kernel",
            "model",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read the source tree") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            // Unit tests may reach across layers (a verb's test checks the effects it plans).
            if path.file_name().is_some_and(|n| n == "tests") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

/// The source without its `#[cfg(test)] mod tests` block (always the file's last item here).
fn without_tests(src: &str) -> &str {
    src.find("#[cfg(test)]\nmod tests").map_or(src, |at| &src[..at])
}

/// The top-level modules a `crate::` path names: `crate::a::b` names `a`, and
/// `crate::{a::x, b}` names `a` and `b`.
fn named_modules(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item_start = true;
            let mut word = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    _ => {}
                }
                if depth == 1 && item_start {
                    if c.is_alphanumeric() || c == '_' {
                        word.push(c);
                        continue;
                    }
                    if !word.is_empty() {
                        out.insert(std::mem::take(&mut word));
                        item_start = false;
                    }
                }
            }
        } else {
            let word: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(word);
        }
    }
    out
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(&src).expect("under src");
        let top = rel
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|s| s.trim_end_matches(".rs").to_owned())
            .expect("a path");
        let Some(may) = allowed.get(top.as_str()) else {
            // lib.rs, main.rs, bin/: the crate's roots.
            continue;
        };
        seen.insert(top.clone());
        let text = fs::read_to_string(file).expect("read a source file");
        for m in named_modules(without_tests(&text)) {
            let is_module = allowed.contains_key(m.as_str());
            if is_module && m != top && !may.contains(&m.as_str()) {
                wrong.push(format!("{}: {top} imports {m}", rel.display()));
            }
            if m == "testing" && top != "testing" {
                wrong.push(format!("{}: {top} imports the test harness", rel.display()));
            }
        }
    }
    assert_eq!(wrong, Vec::<String>::new(), "imports against the layering");
    // The check saw every layer (a moved folder would otherwise pass unseen).
    assert_eq!(seen, allowed.keys().map(|k| k.to_string()).collect());
}

#[test]
fn crate_paths_name_their_modules() {
    let src = "use crate::{\n    kernel::{Kernel, plan::Effect},\n    model::Mac,\n};\nlet x = crate::store::excerpt(a);";
    let got: Vec<String> = named_modules(src).into_iter().collect();
    assert_eq!(got, ["kernel", "model", "store"]);
}
