//! Compile-fail tests pinning the messages `#[service]` gives for unsupported input.
//!
//! Regenerate the expected output after a deliberate change with
//! `TRYBUILD=overwrite cargo test -p warren-rpc --test ui`.

#[test]
fn unsupported_input_is_a_clear_compile_error() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
