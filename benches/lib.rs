//! criterion benches live in `hot_paths.rs`; this crate has no library code.
