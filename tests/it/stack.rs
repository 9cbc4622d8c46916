//! The stack the user chose (DESIGN.md, "The stack the user chose") is a contract: each
//! package on the design card is a direct dependency of the binary people run.

/// The names in Cargo.toml's `[dependencies]` table (not dev- or build-dependencies).
fn direct_dependencies() -> Vec<String> {
    let manifest = include_str!("../../Cargo.toml");
    let mut in_dependencies = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if in_dependencies && !line.starts_with('#') {
            if let Some((name, _)) = line.split_once('=') {
                names.push(name.trim().trim_matches('"').to_owned());
            }
        }
    }
    names
}

#[test]
fn every_package_on_the_design_card_is_a_direct_dependency() {
    let direct = direct_dependencies();
    let card = [
        "tokio",
        "tokio-tungstenite",
        "futures-util",
        "warp",
        "serde",
        "serde_json",
        "reqwest",
        "slack-morphism",
        "tracing",
        "dotenvy",
    ];
    let missing: Vec<&str> = card
        .into_iter()
        .filter(|p| !direct.iter().any(|d| d == p))
        .collect();
    assert!(missing.is_empty(), "not in [dependencies]: {missing:?}");
}

/// warp serves the webhook: its filters are in the HTTP layer's source, not only in the
/// tests' fakes.
#[test]
fn warp_serves_the_webhook() {
    let http = include_str!("../../src/http/mod.rs");
    let server = include_str!("../../src/server.rs");
    assert!(http.contains("warp::post()") && http.contains(".recover("));
    assert!(server.contains("warp::service(routes)"));
}
