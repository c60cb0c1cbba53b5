//! The settings table and the routes are documented where operators look:
//! every entry of `SETTINGS` has its row in docs/OPERATIONS.md, with its
//! real default and help (the table is generated from `SETTINGS`; on a
//! mismatch this test prints the rows to paste).

use decnet_api::settings::SETTINGS;

fn docs(name: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/");
    std::fs::read_to_string(format!("{path}{name}")).unwrap_or_else(|e| panic!("docs/{name}: {e}"))
}

/// The Markdown row of one setting.
fn row(setting: &decnet_api::settings::Setting) -> String {
    let default = if setting.default.is_empty() {
        "none".to_owned()
    } else {
        format!("`{}`", setting.default)
    };
    format!(
        "| `{}` | `--{}` | {} | {} |",
        setting.env,
        setting.flag(),
        default,
        setting.help.replace('|', "\\|")
    )
}

#[test]
fn every_setting_is_documented_with_its_default() {
    let operations = docs("OPERATIONS.md");
    let missing: Vec<String> = SETTINGS
        .iter()
        .map(row)
        .filter(|row| !operations.contains(row.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/OPERATIONS.md lacks (or has stale) rows; the table should read:\n\n| variable | flag | default | meaning |\n| --- | --- | --- | --- |\n{}\n\nmissing or stale:\n{}",
        SETTINGS.iter().map(row).collect::<Vec<_>>().join("\n"),
        missing.join("\n")
    );
}

#[test]
fn every_route_is_documented() {
    let api = docs("API.md");
    for template in decnet_api::Route::templates() {
        if *template == "/" {
            continue;
        }
        assert!(
            api.contains(template),
            "docs/API.md does not mention {template}"
        );
    }
}
