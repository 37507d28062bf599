//! `libctl bench …`: measurements with their baselines taken in the same run.

use std::process::ExitCode;

use benches::all::{all_table, AllBench};
use benches::borrow::{run_borrow_bench, BenchActors, BorrowBench, BorrowMode};
use benches::compare::borrow_comparison;
use benches::reports::time_reports;
use benches::seed::seed_bench;
use clap::{Args, Subcommand};
use libcore::db;

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

#[derive(Debug, Args)]
pub struct ReportsBenchArgs {
    /// Runs per report; the median is reported
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

#[derive(Debug, Args)]
pub struct SeedBenchArgs {
    #[command(flatten)]
    pub dataset: crate::cmd::seed::DatasetArgs,
    /// Keep the scratch databases afterwards
    #[arg(long)]
    pub keep: bool,
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
            app.read(|out, client, ctx| {
                let timings = time_reports(client, ctx, args.runs)?;
                Ok(out.rows(&timings)?)
            })?;
        }
        BenchCommand::Seed(args) => {
            let options = args.dataset.options(None, true, false)?;
            let (bench, _seeded) = seed_bench(
                &app.database_url()?,
                &options,
                &Progress::new(app),
                args.keep,
            )?;
            app.out.record(&bench)?;
        }
        BenchCommand::All(args) => {
            let duration = std::time::Duration::from_secs(args.duration);
            benches::borrow::check_duration(duration)?;
            let options = args.dataset.options(None, true, false)?;
            let (seed, seeded) = seed_bench(
                &app.database_url()?,
                &options,
                &Progress::new(app),
                args.keep,
            )?;
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
