//! The fuzz targets' inputs as ordinary tests: every file of `fuzz/corpus/TARGET/` (the seeds
//! and what fuzzing kept) and of `fuzz/regressions/TARGET/` (inputs that once crashed a
//! target, each fixed) goes through the target's entry point, which must not panic. Runs on
//! stable Rust without cargo-fuzz; a new crash becomes a regression by adding its file.

use std::path::PathBuf;

fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir).join(target)) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let bytes = std::fs::read(&path).expect("readable input");
            out.push((path, bytes));
        }
    }
    out
}

fn run(target: &str, entry: fn(&[u8])) {
    let inputs = inputs(target);
    assert!(
        !inputs.is_empty(),
        "{target}: no corpus under fuzz/corpus/{target}"
    );
    for (path, bytes) in inputs {
        let result = std::panic::catch_unwind(|| entry(&bytes));
        assert!(result.is_ok(), "{target}: {} panics", path.display());
    }
}

#[test]
fn frames() {
    run("frames", warren_broker::fuzz::frames);
}

#[test]
fn channels() {
    run("channels", warren_broker::fuzz::channels);
}

#[test]
fn content_header() {
    run("content_header", warren_broker::fuzz::content_header);
}

#[test]
fn field_table() {
    run("field_table", warren_broker::fuzz::field_table);
}

#[test]
fn definitions() {
    run("definitions", warren_broker::fuzz::definitions);
}

#[test]
fn mqtt_packet() {
    run("mqtt_packet", warren_broker::fuzz::mqtt_packet);
}

#[test]
fn stomp_frame() {
    run("stomp_frame", warren_broker::fuzz::stomp_frame);
}

#[test]
fn management_json() {
    run("management_json", warren_broker::fuzz::management_json);
}
