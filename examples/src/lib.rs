//! Shared code of the Warren examples.
