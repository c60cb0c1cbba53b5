//! Repository-wide checks that run with the test suite (`cargo xtask test`).
//!
//! - `hermetic`: no source, manifest or script names a path outside the
//!   workspace. A user's clone has nothing beside it, so a test, bench or
//!   build step that reads `../something` above the workspace root passes
//!   here and fails for them.

use std::path::{Component, Path, PathBuf};
use std::process::Command;

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Every file git tracks or would track (untracked but not ignored included).
fn tracked_files(root: &Path) -> Vec<PathBuf> {
    let output = Command::new("git")
        .args(["ls-files", "--cached", "--others", "--exclude-standard"])
        .current_dir(root)
        .output()
        .expect("git ls-files runs");
    assert!(output.status.success(), "git ls-files failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| root.join(line))
        .filter(|path| path.is_file())
        .collect()
}

/// The directory of the package that owns `file`: the nearest ancestor with
/// a Cargo.toml (cargo runs tests and build scripts there).
fn package_dir(file: &Path, root: &Path) -> PathBuf {
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d.join("Cargo.toml").is_file() {
            return d.to_path_buf();
        }
        if d == root {
            break;
        }
        dir = d.parent();
    }
    root.to_path_buf()
}

/// `base` joined with `relative`, `..` resolved lexically; `None` when it
/// climbs above the filesystem root.
fn resolve(base: &Path, relative: &str) -> Option<PathBuf> {
    let mut out = base.to_path_buf();
    for component in Path::new(relative).components() {
        match component {
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// The absolute-path string literals on `line` that name a place beside
/// `root` (under its parent directory, outside `root` itself): a sibling
/// checkout a user's clone does not have.
fn absolute_paths_beside(line: &str, root: &Path) -> Vec<String> {
    let Some(parent) = root.parent().filter(|p| p.parent().is_some()) else {
        return Vec::new();
    };
    literals(line)
        .filter(|l| Path::new(l).starts_with(parent) && !Path::new(l).starts_with(root))
        .map(str::to_owned)
        .collect()
}

/// The double-quoted string literals on `line`.
fn literals(line: &str) -> impl Iterator<Item = &str> {
    line.split('"').skip(1).step_by(2)
}

/// The string literals on `line` that contain a `..` path component.
fn parent_paths(line: &str) -> Vec<String> {
    literals(line)
        .filter(|l| l.starts_with("../") || l.contains("/../") || *l == "..")
        .map(|l| l.trim_start_matches('/').to_owned())
        .collect()
}

#[test]
fn hermetic() {
    let root = workspace_root()
        .canonicalize()
        .expect("workspace root exists");
    let mut escapes = Vec::new();
    for file in tracked_files(&root) {
        let checked = matches!(
            file.extension().and_then(|e| e.to_str()),
            Some("rs" | "toml" | "sh" | "json" | "yaml" | "yml")
        ) || file.starts_with(root.join(".ci"));
        if !checked || file.ends_with("xtask/tests/tidy.rs") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let package = package_dir(&file, &root);
        let file_dir = file.parent().unwrap_or(&root).to_path_buf();
        for (n, line) in text.lines().enumerate() {
            for literal in absolute_paths_beside(line, &root) {
                escapes.push(format!(
                    "{}:{}: {literal:?} is beside the workspace, not in it",
                    file.display(),
                    n + 1
                ));
            }
            for literal in parent_paths(line) {
                // include_str!/include_bytes! resolve from the file; runtime
                // and CARGO_MANIFEST_DIR paths from the package directory.
                let base = if line.contains("include_str!") || line.contains("include_bytes!") {
                    &file_dir
                } else {
                    &package
                };
                let inside = resolve(base, &literal).is_some_and(|p| p.starts_with(&root));
                if !inside {
                    escapes.push(format!(
                        "{}:{}: {literal:?} leaves the workspace",
                        file.display(),
                        n + 1
                    ));
                }
            }
        }
    }
    assert!(
        escapes.is_empty(),
        "paths outside the workspace (a user's clone has nothing beside it; copy the file into testdata/):\n{}",
        escapes.join("\n")
    );
}

#[test]
fn the_checker_sees_an_escape() {
    let root = Path::new("/w/main");
    let package = root.join("crates/x");
    assert_eq!(
        parent_paths(r#"let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../outside/a.json");"#),
        ["../../../outside/a.json"]
    );
    assert!(
        !resolve(&package, "../../../outside/a.json").is_some_and(|p| p.starts_with(root)),
        "three levels up from crates/x leaves /w/main"
    );
    assert!(resolve(&package, "../../testdata/a.json").is_some_and(|p| p.starts_with(root)));
    assert!(parent_paths(r#"let s = "a/b"; let t = "c..d";"#).is_empty());
    assert_eq!(
        absolute_paths_beside(
            r#"read("/w/outside/a.json"); read("/w/main/testdata/b.json"); run("/usr/bin/x")"#,
            root
        ),
        ["/w/outside/a.json"]
    );
}
