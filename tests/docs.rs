//! The README's settings table is whole: every `AF_*` variable the node reads (each flag has
//! one) is in it, so a new setting cannot ship undocumented.

#[test]
fn every_setting_is_in_the_readme() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut missing = Vec::new();
    for file in ["src/config.rs", "src/main.rs"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        for (i, _) in text.match_indices("\"AF_") {
            let name = &text[i + 1..];
            let name = &name[..name.find('"').unwrap()];
            if !readme.contains(&format!("`{name}`")) {
                missing.push(format!("{file}: {name}"));
            }
        }
    }
    assert!(missing.is_empty(), "settings missing from README.md's table: {missing:?}");
}
