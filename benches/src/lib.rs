//! # benches: what libctl measures, and against what
//!
//! Every figure in BENCHMARKS.md comes from here, each beside a baseline measured in the same
//! run, so a figure is a ratio and not a claim about a machine:
//!
//! - [`borrow`]: the desk's borrow/return/renew load through libcore, and the same work as
//!   bare SQL (typed and prepared), with the machine's CPU over each run;
//! - [`compare`]: rounds of the three borrow modes, rotated, with the medians' ratios;
//! - [`seed`]: a scenario's seed against its load limit (raw binary COPY and the same keys);
//! - [`reports`]: every report kind, timed;
//! - [`all`]: everything in one scratch database, and one table of measures.
//!
//! libcore decides circulation; nothing here decides anything but how to measure it. The
//! criterion benches of the pure hot paths are in `hot_paths.rs`.

pub mod all;
pub mod borrow;
pub mod compare;
pub mod reports;
pub mod seed;

/// Three decimals, for ratios.
pub fn ratio(numerator: f64, denominator: f64) -> f64 {
    (numerator / denominator.max(1e-9) * 1000.0).round() / 1000.0
}
