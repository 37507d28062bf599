//! Every report kind, timed on the database it is given.

use std::time::Instant;

use libcore::actor::Ctx;
use libcore::reports::{self, Kind, ReportOptions};
use libcore::Result;
use serde::Serialize;

#[derive(Serialize)]
pub struct ReportTiming {
    pub report: &'static str,
    pub rows: u64,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
}

/// Every report kind, `runs` times each; the median, fastest and slowest.
pub fn time_reports(
    client: &mut libcore::Client,
    ctx: &Ctx,
    runs: usize,
) -> Result<Vec<ReportTiming>> {
    let mut timings = Vec::new();
    for kind in Kind::ALL {
        let mut samples = Vec::new();
        let mut rows = 0;
        for _ in 0..runs.max(1) {
            let started = Instant::now();
            rows = reports::count_rows(client, ctx, kind, &ReportOptions::default())?;
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        samples.sort_by(f64::total_cmp);
        let ms = |v: f64| (v * 100.0).round() / 100.0;
        timings.push(ReportTiming {
            report: kind.as_str(),
            rows,
            median_ms: ms(samples[samples.len() / 2]),
            min_ms: ms(samples[0]),
            max_ms: ms(samples[samples.len() - 1]),
        });
    }
    Ok(timings)
}
