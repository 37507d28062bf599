//! A scenario's seed against its load limit, each in a scratch database of its own.

use std::time::Instant;

use libcore::db;
use libcore::Result;
use serde::Serialize;

#[derive(Serialize)]
pub struct SeedBench {
    pub scenario: String,
    pub rows: u64,
    pub seed_seconds: f64,
    pub seed_rows_per_sec: f64,
    pub seed_phases: Vec<seeder::Phase>,
    pub peak_rss_mib: f64,
    pub load_limit_seconds: f64,
    pub load_limit_copy_seconds: f64,
    pub load_limit_index_seconds: f64,
    pub load_limit_rows_per_sec: f64,
    pub ratio_of_load_limit: f64,
}

/// Drops a scratch database when the bench is done with it, failed or not (unless kept).
pub struct Scratch {
    /// Its URL.
    pub url: String,
    /// Keep it afterwards.
    pub keep: bool,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !self.keep {
            if let Err(e) = db::drop_database_if_exists(&self.url) {
                tracing::warn!(error = %e, "could not drop a scratch database");
            }
        }
    }
}

/// A scratch database beside the configured one: created and migrated now, dropped later.
pub fn scratch_database(base: &str, suffix: &str) -> Result<(String, libcore::Client)> {
    let config_db = base
        .rsplit_once('/')
        .map(|(_, d)| d.split('?').next().unwrap_or("library").to_string())
        .unwrap_or_else(|| "library".into());
    let url = db::url_with_database(base, &format!("{config_db}_{suffix}"));
    db::drop_database_if_exists(&url)?;
    db::create_database_if_missing(&url)?;
    let mut client = db::connect(&url)?;
    db::migrate(&mut client)?;
    Ok((url, client))
}

/// Seeds into one scratch database and measures the load limit in another. The seeded
/// database is handed back (dropped when its guard is, unless kept) for benches that follow.
pub fn seed_bench(
    base_url: &str,
    options: &seeder::SeedOptions,
    observer: &dyn seeder::Observer,
    keep: bool,
) -> Result<(SeedBench, Scratch)> {
    // The seed first, so its peak RSS is not the load limit's pre-generated rows.
    let (seed_url, mut seed_client) = scratch_database(base_url, "bench_seed")?;
    let seeded = Scratch {
        url: seed_url,
        keep,
    };
    let started = Instant::now();
    // A fresh scratch database: nothing there to replace, so the seed needs no authority.
    let summary = seeder::seed(
        &mut seed_client,
        &libcore::actor::Ctx::system(),
        options,
        observer,
    )?;
    let seconds = started.elapsed().as_secs_f64();
    drop(seed_client);
    let (limit_url, mut limit_client) = scratch_database(base_url, "bench_limit")?;
    let _limit_db = Scratch {
        url: limit_url,
        keep,
    };
    let limit = seeder::measure_load_limit(&mut limit_client, options)?;
    drop(limit_client);
    let bench = SeedBench {
        scenario: options.scenario.name.clone(),
        rows: summary.rows,
        seed_seconds: seconds,
        seed_rows_per_sec: summary.rows as f64 / seconds,
        seed_phases: summary.phases,
        peak_rss_mib: summary.peak_rss_mib,
        load_limit_seconds: limit.seconds,
        load_limit_copy_seconds: limit.copy_seconds,
        load_limit_index_seconds: limit.index_seconds,
        load_limit_rows_per_sec: limit.rows_per_sec,
        ratio_of_load_limit: limit.seconds / seconds,
    };
    Ok((bench, seeded))
}
