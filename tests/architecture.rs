//! The crate's layering, written at the top of src/lib.rs, checked on the
//! source: cli -> commands -> state -> kernel, each layer using only the
//! ones below it; the leaves (model, maps, testhooks, skel) use no layer.
use std::fs;
use std::path::{Path, PathBuf};

/// Top to bottom.
const LAYERS: [&str; 4] = ["cli", "commands", "state", "kernel"];
const LEAVES: [&str; 5] = ["model", "policy", "maps", "testhooks", "skel"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of src/ belongs to ("cli" for src/cli/screen.rs).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Every top-level module named by `crate::x` or `crate::{x, y::z}` in the text.
fn crate_references(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                found.push(name);
            }
        } else {
            found.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    found.retain(|n| !n.is_empty());
    found
}

#[test]
fn layers_use_only_the_layers_below_them_and_leaves_use_none() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    let mut checked = 0;
    for file in files {
        let from = module_of(&src, &file);
        if from == "lib" || from == "main" {
            continue;
        }
        let text = fs::read_to_string(&file).unwrap();
        for to in crate_references(&text) {
            checked += 1;
            let allowed = match (
                LAYERS.iter().position(|l| *l == from),
                LAYERS.iter().position(|l| *l == to),
            ) {
                (Some(f), Some(t)) => t >= f,
                (Some(_), None) => LEAVES.contains(&to.as_str()),
                (None, Some(_)) => false,
                (None, None) => LEAVES.contains(&to.as_str()),
            };
            if !allowed {
                violations.push(format!("{}: {from} uses {to}", file.display()));
            }
        }
    }
    assert!(
        checked > 20,
        "found only {checked} crate:: references; is the scan broken?"
    );
    assert!(
        violations.is_empty(),
        "upward or leaf-to-layer imports:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_scan_sees_plain_and_grouped_imports() {
    assert_eq!(crate_references("use crate::state::x;"), ["state"]);
    assert_eq!(
        crate_references("use crate::{maps, model::Mode};"),
        ["maps", "model"]
    );
    assert_eq!(crate_references("crate::kernel::iface::name_of(1)"), ["kernel"]);
}
