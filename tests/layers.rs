//! The layer order of ARCHITECTURE.md, held: every `crate::<module>` a file of `src/` names must
//! be below its own module in the `layers` block there, and the files of one directory module
//! must not import each other in a circle. A failure names the file, the line and the rule.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Where a module sits: its layer (0 is the top) and its group inside the layer.
#[derive(Debug, Clone, Copy)]
struct Place {
    layer: usize,
    group: usize,
}

/// The `layers` block of ARCHITECTURE.md: one line a layer, top first, `name: groups`, where
/// groups are separated by `>` (a group may import the groups after it) and the modules of one
/// group by `|` (they may not import each other).
fn layers(text: &str) -> BTreeMap<String, (Place, String)> {
    let block = text.split("```layers\n").nth(1).and_then(|rest| rest.split("```").next()).expect("ARCHITECTURE.md has a ```layers block");
    let mut places = BTreeMap::new();
    for (layer, line) in block.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let (name, groups) = line.split_once(':').unwrap_or_else(|| panic!("a layer line is `name: groups`: {line:?}"));
        for (group, modules) in groups.split('>').enumerate() {
            for module in modules.split('|').map(str::trim) {
                let previous = places.insert(module.to_string(), (Place { layer, group }, name.trim().to_string()));
                assert!(previous.is_none(), "{module} has two places in the layers block");
            }
        }
    }
    places
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names `line` imports after `prefix` (`crate::a::…`, `crate::{a, b::c}`), outside comments.
fn named_after<'a>(line: &'a str, prefix: &str) -> Vec<&'a str> {
    let code = line.split("//").next().unwrap_or_default();
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        if code[..i].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let list = list.split('}').next().unwrap_or_default();
            out.extend(list.split(',').filter_map(|item| item.trim().split("::").next()).map(str::trim).filter(|s| !s.is_empty()));
        } else {
            let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            out.push(&rest[..end]);
        }
    }
    out
}

#[test]
fn every_import_goes_down_the_layers_of_architecture_md() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let places = layers(&std::fs::read_to_string(root.join("ARCHITECTURE.md")).unwrap());
    let src = root.join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            Some(name.strip_suffix(".rs").map(str::to_string).unwrap_or(name)).filter(|n| n != "lib" && n != "main")
        })
        .collect();
    for module in &modules {
        if !places.contains_key(module) {
            wrong.push(format!("src/{module}: a module with no place in ARCHITECTURE.md's layers block"));
        }
    }
    for file in &files {
        let rel = file.strip_prefix(root).unwrap().display().to_string();
        let Some(own) = rel.strip_prefix("src/").and_then(|r| r.split('/').next()).map(|m| m.trim_end_matches(".rs")) else { continue };
        let Some((from, from_layer)) = places.get(own) else { continue };
        for (n, line) in std::fs::read_to_string(file).unwrap().lines().enumerate() {
            for target in named_after(line, "crate::") {
                let Some((to, to_layer)) = places.get(target).filter(|_| target != own) else { continue };
                let down = to.layer > from.layer || (to.layer == from.layer && to.group > from.group);
                if !down {
                    wrong.push(format!("{rel}:{}: {own} ({from_layer}) imports {target} ({to_layer}), which is not below it", n + 1));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layer order:\n{}", wrong.join("\n"));
}

#[test]
fn the_files_of_a_module_import_each_other_without_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // Directory → file stem → the sibling stems it imports through `super::`.
    let mut graphs: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for file in &files {
        let (Some(dir), Some(stem)) = (file.parent(), file.file_stem().map(|s| s.to_string_lossy().into_owned())) else { continue };
        if stem == "mod" {
            continue;
        }
        let siblings: BTreeSet<String> = std::fs::read_to_string(file)
            .unwrap()
            .lines()
            .flat_map(|l| named_after(l, "super::").into_iter().map(str::to_string).collect::<Vec<_>>())
            .filter(|s| *s != stem && dir.join(format!("{s}.rs")).exists())
            .collect();
        graphs.entry(dir.to_path_buf()).or_default().insert(stem, siblings);
    }
    for (dir, graph) in &graphs {
        // Peel off files that import no remaining sibling; what is left holds a circle.
        let mut left = graph.clone();
        while let Some(leaf) = left.iter().find(|(_, uses)| uses.iter().all(|u| !left.contains_key(u))).map(|(k, _)| k.clone()) {
            left.remove(&leaf);
        }
        assert!(left.is_empty(), "{}: these files import each other in a circle: {:?}", dir.display(), left);
    }
}
