//! `libctl bench …`: measurements with their baselines taken in the same run.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use libcore::db;
use serde::Serialize;

use crate::app::App;
use crate::cmd::seed::Progress;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Seed a scenario into a scratch database and compare with the load limit
    Seed(SeedBenchArgs),
    /// Time every report kind on the current database
    Reports(ReportsBenchArgs),
    /// A mixed borrow/return/renew load on N connections; checks the invariants afterwards
    Borrow(BorrowBenchArgs),
}

#[derive(Debug, Args)]
pub struct BorrowBenchArgs {
    /// Threads, each with its own connection
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Seconds to run (1 to 600)
    #[arg(long)]
    pub duration: u64,
    /// Concentrate the load on the K most popular books
    #[arg(long)]
    pub hot_books: Option<usize>,
    /// Also run the same statements as bare SQL and print the ratio
    #[arg(long)]
    pub bare_sql: bool,
}

#[derive(Serialize)]
struct BorrowComparison {
    libcore: libcore::bench::BorrowBenchResult,
    bare_sql: libcore::bench::BorrowBenchResult,
    ratio_libcore_to_bare: f64,
}

#[derive(Debug, Args)]
pub struct ReportsBenchArgs {
    /// Runs per report; the median is reported
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

#[derive(Serialize)]
struct ReportTiming {
    report: &'static str,
    rows: u64,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
}

/// Runs one report to completion, counting its rows without rendering them.
fn run_report(
    client: &mut libcore::Client,
    ctx: &libcore::actor::Ctx,
    kind: &str,
) -> anyhow::Result<u64> {
    use libcore::reports::{self, ReportOptions};
    let options = ReportOptions::default();
    let mut rows = 0u64;
    let mut count = |_| -> libcore::Result<()> {
        rows += 1;
        Ok(())
    };
    match kind {
        "summary" => {
            reports::summary(client, ctx, &options)?;
            rows = 1;
        }
        "overdue" => {
            reports::overdue(client, ctx, &options, &mut |r| {
                count(serde_json::json!(r.loan_id))
            })?;
        }
        "fines" => {
            reports::fines(client, ctx, &options, &mut |r| {
                count(serde_json::json!(r.member_id))
            })?;
        }
        "inventory" => {
            reports::inventory(client, ctx, &options, &mut |r| {
                count(serde_json::json!(r.book_id))
            })?;
        }
        "risk" => {
            reports::risk(client, ctx, &options, &mut |r| {
                count(serde_json::json!(r.member_id))
            })?;
        }
        "popular" => rows = reports::ranked(client, ctx, &options, false)?.len() as u64,
        "top-members" => rows = reports::ranked(client, ctx, &options, true)?.len() as u64,
        "trends" => rows = reports::trends(client, ctx, &options)?.len() as u64,
        other => anyhow::bail!("unknown report {other}"),
    }
    Ok(rows)
}

#[derive(Debug, Args)]
pub struct SeedBenchArgs {
    #[command(flatten)]
    pub dataset: crate::cmd::seed::DatasetArgs,
    /// Keep the scratch databases afterwards
    #[arg(long)]
    pub keep: bool,
}

#[derive(Serialize)]
struct SeedBench {
    scenario: String,
    rows: u64,
    seed_seconds: f64,
    seed_rows_per_sec: f64,
    seed_phases: Vec<seeder::Phase>,
    peak_rss_mib: f64,
    load_limit_seconds: f64,
    load_limit_copy_seconds: f64,
    load_limit_index_seconds: f64,
    load_limit_rows_per_sec: f64,
    ratio_of_load_limit: f64,
}

/// Drops a scratch database when the bench is done with it, failed or not (unless kept).
struct Scratch {
    url: String,
    keep: bool,
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
pub fn scratch_database(app: &App, suffix: &str) -> anyhow::Result<(String, libcore::Client)> {
    let base = app.database_url()?;
    let config_db = base
        .rsplit_once('/')
        .map(|(_, d)| d.split('?').next().unwrap_or("library").to_string())
        .unwrap_or_else(|| "library".into());
    let url = db::url_with_database(&base, &format!("{config_db}_{suffix}"));
    db::drop_database_if_exists(&url)?;
    db::create_database_if_missing(&url)?;
    let mut client = db::connect(&url)?;
    db::migrate(&mut client)?;
    Ok((url, client))
}

pub fn run(app: &mut App, command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Borrow(args) => {
            use libcore::bench::{run_borrow_bench, BorrowBench};
            let url = app.database_url()?;
            let spec = BorrowBench {
                clients: args.clients,
                duration: std::time::Duration::from_secs(args.duration),
                hot_books: args.hot_books,
                bare_sql: false,
            };
            let core = run_borrow_bench(&url, &spec)?;
            let ok = core.invariants_ok;
            if args.bare_sql {
                let bare = run_borrow_bench(
                    &url,
                    &BorrowBench {
                        bare_sql: true,
                        ..spec
                    },
                )?;
                let ratio = (core.throughput_per_sec / bare.throughput_per_sec.max(1e-9) * 1000.0)
                    .round()
                    / 1000.0;
                let ok = ok && bare.invariants_ok;
                app.out.record(&BorrowComparison {
                    libcore: core,
                    bare_sql: bare,
                    ratio_libcore_to_bare: ratio,
                })?;
                if !ok {
                    return Err(libcore::Error::Integrity {
                        violations: vec!["db check failed after the run".into()],
                    }
                    .into());
                }
            } else {
                app.out.record(&core)?;
                if !ok {
                    return Err(libcore::Error::Integrity {
                        violations: vec!["db check failed after the run".into()],
                    }
                    .into());
                }
            }
        }
        BenchCommand::Reports(args) => {
            let (mut client, ctx) = app.session()?;
            let mut timings = Vec::new();
            for kind in libcore::reports::KINDS {
                let mut samples = Vec::new();
                let mut rows = 0;
                for _ in 0..args.runs.max(1) {
                    let started = Instant::now();
                    rows = run_report(&mut client, &ctx, kind)?;
                    samples.push(started.elapsed().as_secs_f64() * 1000.0);
                }
                samples.sort_by(f64::total_cmp);
                let ms = |v: f64| (v * 100.0).round() / 100.0;
                timings.push(ReportTiming {
                    report: kind,
                    rows,
                    median_ms: ms(samples[samples.len() / 2]),
                    min_ms: ms(samples[0]),
                    max_ms: ms(samples[samples.len() - 1]),
                });
            }
            app.out.rows(&timings)?;
        }
        BenchCommand::Seed(args) => {
            let options = args.dataset.options(None, true)?;
            // The seed first, so its peak RSS is not the load limit's pre-generated rows.
            let (seed_url, mut seed_client) = scratch_database(app, "bench_seed")?;
            let _seed_db = Scratch {
                url: seed_url,
                keep: args.keep,
            };
            let started = Instant::now();
            let summary = seeder::seed(&mut seed_client, &options, &Progress::new(app))?;
            let seconds = started.elapsed().as_secs_f64();
            drop(seed_client);
            let (limit_url, mut limit_client) = scratch_database(app, "bench_limit")?;
            let _limit_db = Scratch {
                url: limit_url,
                keep: args.keep,
            };
            let limit = seeder::measure_load_limit(&mut limit_client, &options)?;
            drop(limit_client);
            app.out.record(&SeedBench {
                scenario: options.scenario.name,
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
            })?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
