//! The Coder webhook samples (tests/fixtures/coder-webhook-samples): the one place they are
//! read, so every test, the bench and the load example agree on what a sample is.

use serde_json::Value;
use std::path::PathBuf;

/// How many samples the folder holds; a new or lost file should be noticed.
pub const SAMPLE_COUNT: usize = 68;

/// The samples folder.
pub fn samples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coder-webhook-samples")
}

/// The path of one sample, by file name.
pub fn sample_path(name: &str) -> PathBuf {
    samples_dir().join(name)
}

/// Every sample as (file name, raw bytes), sorted by name. Only golden files
/// (`*.json.golden`, `*.golden.json`) are webhook bodies; the folder also holds its README.
pub fn sample_bytes() -> Vec<(String, Vec<u8>)> {
    let dir = samples_dir();
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("a samples folder entry").path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            (name.ends_with(".json.golden") || name.ends_with(".golden.json")).then_some(name)
        })
        .map(|name| {
            let bytes = std::fs::read(sample_path(&name))
                .unwrap_or_else(|e| panic!("cannot read sample {name}: {e}"));
            (name, bytes)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every sample as (file name, body), sorted by name.
pub fn samples() -> Vec<(String, Value)> {
    sample_bytes()
        .into_iter()
        .map(|(name, bytes)| {
            let body = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("sample {name} is not JSON: {e}"));
            (name, body)
        })
        .collect()
}

/// One sample's body, by file name.
pub fn sample(name: &str) -> Value {
    let bytes =
        std::fs::read(sample_path(name)).unwrap_or_else(|e| panic!("cannot read {name}: {e}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("sample {name} is not JSON: {e}"))
}
