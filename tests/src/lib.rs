//! Test support for Warren's end-to-end tests.
