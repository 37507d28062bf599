//! `libctl bench …`: measurements with their baselines taken in the same run.

use std::process::ExitCode;
use std::time::Instant;

use clap::{Args, Subcommand};
use libcore::bench::{run_borrow_bench, BenchActors, BorrowBench, BorrowBenchResult, BorrowMode};
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
    /// Seed a scenario into a scratch database, then run the seed, reports and borrow benches
    /// on it and print one table
    All(AllBenchArgs),
}

#[derive(Debug, Args)]
pub struct BorrowBenchArgs {
    /// Threads, each with its own connection (1 to 256)
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Seconds to run (1 to 600)
    #[arg(long)]
    pub duration: u64,
    /// Concentrate the load on the K most popular books
    #[arg(long)]
    pub hot_books: Option<usize>,
    /// Each member borrows, returns and renews for themselves (a self-service kiosk) instead
    /// of the seeded librarians serving them at the desk
    #[arg(long)]
    pub self_service: bool,
    /// Also run the same statements as bare SQL, sent as libcore sends its own (typed,
    /// unnamed) and prepared once per connection, and print both ratios
    #[arg(long)]
    pub bare_sql: bool,
    /// With --bare-sql: rounds of the three runs, each round starting with the next mode; each
    /// mode's median run is reported and the ratios are of the medians
    #[arg(long, default_value_t = 1, requires = "bare_sql",
          value_parser = clap::value_parser!(u32).range(1..=9))]
    pub rounds: u32,
    /// Run it on a library (a database changed since it was seeded, or never seeded): its
    /// loans and audit log will show the load. Admins only.
    #[arg(long)]
    pub confirm: bool,
}

#[derive(Debug, Args)]
pub struct AllBenchArgs {
    #[command(flatten)]
    pub dataset: crate::cmd::seed::DatasetArgs,
    /// Borrow bench: threads, each with its own connection
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Borrow bench: seconds for each of its three runs (1 to 600)
    #[arg(long, default_value_t = 20)]
    pub duration: u64,
    /// Borrow bench: rounds of its three runs (see `bench borrow --rounds`)
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub rounds: u32,
    /// Keep the scratch databases afterwards
    #[arg(long)]
    pub keep: bool,
}

/// libcore against both bare-SQL baselines: each mode's median run over the rounds.
#[derive(Serialize)]
struct BorrowComparison {
    libcore: BorrowBenchResult,
    bare_sql: BorrowBenchResult,
    bare_sql_prepared: BorrowBenchResult,
    ratio_libcore_to_bare: f64,
    ratio_libcore_to_bare_prepared: f64,
    /// Every run of every round, in the order they ran.
    rounds: Vec<Vec<RoundRun>>,
    /// Whether every invariant held after every run, not only the median ones.
    invariants_ok: bool,
}

/// One run of a round.
#[derive(Serialize)]
struct RoundRun {
    mode: &'static str,
    throughput_per_sec: f64,
    /// The machine's CPU over the run: how much work an operation took, and how much of the
    /// machine the hypervisor kept for others.
    host_cpu: Option<libcore::bench::HostCpu>,
}

/// `bench all`: everything, and one table of measures against their baselines.
#[derive(Serialize)]
struct AllBench {
    seed: SeedBench,
    reports: Vec<ReportTiming>,
    borrow: BorrowComparison,
    table: Vec<AllRow>,
}

/// One line of `bench all`'s table.
#[derive(Serialize)]
struct AllRow {
    measure: String,
    value: f64,
    unit: &'static str,
    baseline: &'static str,
    baseline_value: Option<f64>,
    ratio: Option<f64>,
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

/// Three decimals, for ratios.
fn ratio(numerator: f64, denominator: f64) -> f64 {
    (numerator / denominator.max(1e-9) * 1000.0).round() / 1000.0
}

/// libcore and the two bare-SQL baselines on the same database, `rounds` times. The database
/// drifts over a run (dead rows, the cache, the audit log grows), so each round starts with
/// the next mode: none always runs first or last.
fn borrow_comparison(
    url: &str,
    ctx: &libcore::actor::Ctx,
    confirm: bool,
    spec: &BorrowBench,
    rounds: u32,
) -> anyhow::Result<BorrowComparison> {
    const MODES: [BorrowMode; 3] = [
        BorrowMode::Libcore,
        BorrowMode::BareSql,
        BorrowMode::BareSqlPrepared,
    ];
    let mut runs: [Vec<BorrowBenchResult>; 3] = Default::default();
    let mut log = Vec::new();
    for round in 0..rounds as usize {
        let mut this_round = Vec::new();
        for m in (0..MODES.len()).map(|i| (round + i) % MODES.len()) {
            let result = run_borrow_bench(
                url,
                ctx,
                confirm,
                &BorrowBench {
                    mode: MODES[m],
                    ..spec.clone()
                },
            )?;
            this_round.push(RoundRun {
                mode: MODES[m].as_str(),
                throughput_per_sec: result.throughput_per_sec,
                host_cpu: result.host_cpu,
            });
            runs[m].push(result);
        }
        log.push(this_round);
    }
    let invariants_ok = runs.iter().flatten().all(|r| r.invariants_ok);
    let [libcore, bare_sql, bare_sql_prepared] = runs.map(|mut results| {
        results.sort_by(|a, b| a.throughput_per_sec.total_cmp(&b.throughput_per_sec));
        results.swap_remove(results.len() / 2)
    });
    Ok(BorrowComparison {
        ratio_libcore_to_bare: ratio(libcore.throughput_per_sec, bare_sql.throughput_per_sec),
        ratio_libcore_to_bare_prepared: ratio(
            libcore.throughput_per_sec,
            bare_sql_prepared.throughput_per_sec,
        ),
        libcore,
        bare_sql,
        bare_sql_prepared,
        rounds: log,
        invariants_ok,
    })
}

/// Exit 8 when `db check` found a violation after a borrow run.
fn require_invariants(ok: bool) -> anyhow::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(libcore::Error::Integrity {
            violations: vec!["db check failed after the run".into()],
        }
        .into())
    }
}

/// Every report kind, `runs` times each; the median, fastest and slowest.
fn time_reports(
    client: &mut libcore::Client,
    ctx: &libcore::actor::Ctx,
    runs: usize,
) -> anyhow::Result<Vec<ReportTiming>> {
    let mut timings = Vec::new();
    for kind in libcore::reports::KINDS {
        let mut samples = Vec::new();
        let mut rows = 0;
        for _ in 0..runs.max(1) {
            let started = Instant::now();
            rows = run_report(client, ctx, kind)?;
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
    Ok(timings)
}

/// Seeds into one scratch database and measures the load limit in another. The seeded
/// database is handed back (dropped when its guard is, unless kept) for benches that follow.
fn seed_bench(
    app: &App,
    dataset: &crate::cmd::seed::DatasetArgs,
    keep: bool,
) -> anyhow::Result<(SeedBench, Scratch)> {
    let options = dataset.options(None, true, false)?;
    // The seed first, so its peak RSS is not the load limit's pre-generated rows.
    let (seed_url, mut seed_client) = scratch_database(app, "bench_seed")?;
    let seeded = Scratch {
        url: seed_url,
        keep,
    };
    let started = Instant::now();
    // A fresh scratch database: nothing there to replace, so the seed needs no authority.
    let summary = seeder::seed(
        &mut seed_client,
        &libcore::actor::Ctx::system(),
        &options,
        &Progress::new(app),
    )?;
    let seconds = started.elapsed().as_secs_f64();
    drop(seed_client);
    let (limit_url, mut limit_client) = scratch_database(app, "bench_limit")?;
    let _limit_db = Scratch {
        url: limit_url,
        keep,
    };
    let limit = seeder::measure_load_limit(&mut limit_client, &options)?;
    drop(limit_client);
    let bench = SeedBench {
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
    };
    Ok((bench, seeded))
}

/// The one table of `bench all`.
fn all_table(seed: &SeedBench, reports: &[ReportTiming], borrow: &BorrowComparison) -> Vec<AllRow> {
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

pub fn run(app: &mut App, command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Borrow(args) => {
            let url = app.database_url()?;
            let ctx = app.ctx(&mut db::connect_current(&url)?)?;
            let spec = BorrowBench {
                clients: args.clients,
                duration: std::time::Duration::from_secs(args.duration),
                hot_books: args.hot_books,
                mode: BorrowMode::Libcore,
                actors: if args.self_service {
                    BenchActors::Members
                } else {
                    BenchActors::Librarians
                },
            };
            if args.bare_sql {
                let comparison = borrow_comparison(&url, &ctx, args.confirm, &spec, args.rounds)?;
                app.out.record(&comparison)?;
                require_invariants(comparison.invariants_ok)?;
            } else {
                let core = run_borrow_bench(&url, &ctx, args.confirm, &spec)?;
                app.out.record(&core)?;
                require_invariants(core.invariants_ok)?;
            }
        }
        BenchCommand::Reports(args) => {
            let (mut client, ctx) = app.session()?;
            let timings = time_reports(&mut client, &ctx, args.runs)?;
            app.out.rows(&timings)?;
        }
        BenchCommand::Seed(args) => {
            let (bench, _seeded) = seed_bench(app, &args.dataset, args.keep)?;
            app.out.record(&bench)?;
        }
        BenchCommand::All(args) => {
            let duration = std::time::Duration::from_secs(args.duration);
            libcore::bench::check_duration(duration)?;
            let (seed, seeded) = seed_bench(app, &args.dataset, args.keep)?;
            let mut client = db::connect(&seeded.url)?;
            let reports = time_reports(&mut client, &libcore::actor::Ctx::system(), 3)?;
            drop(client);
            let spec = BorrowBench {
                clients: args.clients,
                duration,
                hot_books: None,
                mode: BorrowMode::Libcore,
                actors: BenchActors::Librarians,
            };
            // Its own freshly seeded scratch database: a playground by construction.
            let borrow = borrow_comparison(
                &seeded.url,
                &libcore::actor::Ctx::system(),
                false,
                &spec,
                args.rounds,
            )?;
            let ok = borrow.invariants_ok;
            let table = all_table(&seed, &reports, &borrow);
            if matches!(
                app.out.format(),
                crate::render::Format::Table | crate::render::Format::Csv
            ) {
                app.out.rows(&table)?;
            } else {
                app.out.record(&AllBench {
                    seed,
                    reports,
                    borrow,
                    table,
                })?;
            }
            require_invariants(ok)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
