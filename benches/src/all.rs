//! `bench all`: the seed, the reports and the borrow comparison in one scratch database, and
//! one table of measures against their baselines.

use serde::Serialize;

use crate::compare::BorrowComparison;
use crate::ratio;
use crate::reports::ReportTiming;
use crate::seed::SeedBench;

/// `bench all`: everything, and one table of measures against their baselines.
#[derive(Serialize)]
pub struct AllBench {
    pub seed: SeedBench,
    pub reports: Vec<ReportTiming>,
    pub borrow: BorrowComparison,
    pub table: Vec<AllRow>,
}

/// One line of `bench all`'s table.
#[derive(Serialize)]
pub struct AllRow {
    pub measure: String,
    pub value: f64,
    pub unit: &'static str,
    pub baseline: &'static str,
    pub baseline_value: Option<f64>,
    pub ratio: Option<f64>,
}

/// The one table of `bench all`.
pub fn all_table(
    seed: &SeedBench,
    reports: &[ReportTiming],
    borrow: &BorrowComparison,
) -> Vec<AllRow> {
    let row =
        |measure: String, value: f64, unit, baseline, baseline_value: Option<f64>, ratio| AllRow {
            measure,
            value: (value * 1000.0).round() / 1000.0,
            unit,
            baseline,
            baseline_value: baseline_value.map(|v| (v * 1000.0).round() / 1000.0),
            ratio,
        };
    let mut table = vec![
        row(
            format!("seed {} ({} rows)", seed.scenario, seed.rows),
            seed.seed_seconds,
            "s",
            "load limit: raw COPY + same keys",
            Some(seed.load_limit_seconds),
            Some(ratio(seed.load_limit_seconds, seed.seed_seconds)),
        ),
        row(
            "seed peak RSS".into(),
            seed.peak_rss_mib,
            "MiB",
            "",
            None,
            None,
        ),
    ];
    table.extend(reports.iter().map(|r| {
        row(
            format!("report {} ({} rows), median", r.report, r.rows),
            r.median_ms,
            "ms",
            "",
            None,
            None,
        )
    }));
    let clients = borrow.libcore.clients;
    table.push(row(
        format!("borrow, {clients} clients"),
        borrow.libcore.throughput_per_sec,
        "ops/s",
        "bare SQL, typed unnamed statements",
        Some(borrow.bare_sql.throughput_per_sec),
        Some(borrow.ratio_libcore_to_bare),
    ));
    table.push(row(
        format!("borrow, {clients} clients"),
        borrow.libcore.throughput_per_sec,
        "ops/s",
        "bare SQL, prepared statements",
        Some(borrow.bare_sql_prepared.throughput_per_sec),
        Some(borrow.ratio_libcore_to_bare_prepared),
    ));
    table
}
