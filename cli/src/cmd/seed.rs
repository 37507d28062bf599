//! `libctl seed`: generate a scenario into the database (atomically) or into CSV files.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Mutex;

use chrono::NaiveDate;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use libcore::actor::Capability;
use seeder::{Observer, Scenario, SeedOptions, SeedSummary};

use crate::app::App;
use crate::cmd::db::InitArgs;

#[derive(Debug, Args)]
pub struct SeedArgs {
    #[command(flatten)]
    pub dataset: DatasetArgs,
    /// The simulated history ends at the start of this day [default: today, UTC]
    #[arg(long)]
    pub as_of: Option<NaiveDate>,
    /// Write <table>.csv files into DIR instead of loading the database
    #[arg(long, value_name = "DIR")]
    pub csv: Option<std::path::PathBuf>,
    /// Replace existing data (atomically) instead of refusing a non-empty database
    #[arg(long)]
    pub replace: bool,
    /// With --replace on a library (a database changed since it was seeded, or never seeded):
    /// replace it anyway. Admins only.
    #[arg(long, requires = "replace")]
    pub confirm: bool,
    /// Print the final summary as one JSON line (for cron)
    #[arg(long)]
    pub summary_json: bool,
}

/// What to generate: shared by `seed` and `bench seed`.
#[derive(Debug, Clone, Args)]
pub struct DatasetArgs {
    /// minimal, load_test, scaled_demo, high_scale, consortium (or tiny and tiny_consortium, for demos)
    #[arg(long, default_value = "minimal")]
    pub scenario: String,
    /// Put loans ended over 24 months ago and audit rows over 13 months old straight into
    /// their monthly history partitions (always on for consortium)
    #[arg(long)]
    pub history: bool,
    /// Seed of every random stream: the same seed gives the same rows
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Generator threads [default: all cores]
    #[arg(long)]
    pub jobs: Option<usize>,
}

impl DatasetArgs {
    /// Seed options for this dataset, the history ending at `as_of` (default today, UTC).
    pub fn options(
        &self,
        as_of: Option<NaiveDate>,
        replace: bool,
        confirm: bool,
    ) -> anyhow::Result<SeedOptions> {
        let mut scenario = Scenario::named(&self.scenario)?;
        scenario.history |= self.history;
        Ok(SeedOptions {
            scenario,
            seed: self.seed,
            as_of: as_of.unwrap_or_else(|| chrono::Utc::now().date_naive()),
            jobs: self
                .jobs
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
            replace,
            confirm,
        })
    }
}

/// indicatif bars per table on a terminal; one line per phase with --verbose elsewhere.
pub struct Progress {
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
    verbose: bool,
}

impl Progress {
    pub fn new(app: &App) -> Progress {
        Progress {
            multi: app.show_progress().then(MultiProgress::new),
            bars: Mutex::new(HashMap::new()),
            verbose: app.global.verbose,
        }
    }
}

impl Observer for Progress {
    fn table_started(&self, table: &str, expected: u64) {
        if let Some(multi) = &self.multi {
            let bar = multi.add(ProgressBar::new(expected.max(1)));
            bar.set_style(
                ProgressStyle::with_template(
                    "{prefix:>14} {bar:40} {pos:>10}/{len:10} {per_sec:>14} {elapsed}",
                )
                .expect("valid template"),
            );
            bar.set_prefix(table.to_string());
            self.bars
                .lock()
                .expect("progress lock")
                .insert(table.to_string(), bar);
        }
    }
    fn rows_written(&self, table: &str, rows: u64) {
        if let Some(bar) = self.bars.lock().expect("progress lock").get(table) {
            bar.inc(rows);
        }
    }
    fn table_finished(&self, table: &str, rows: u64) {
        if let Some(bar) = self.bars.lock().expect("progress lock").get(table) {
            bar.set_length(rows.max(1));
            bar.set_position(rows);
            bar.finish();
        }
        if self.multi.is_none() && self.verbose {
            eprintln!("libctl seed: {table}: {rows} rows");
        }
    }
    fn phase_finished(&self, phase: &str, seconds: f64) {
        if self.multi.is_none() && self.verbose {
            eprintln!("libctl seed: {phase}: {seconds:.2} s");
        }
    }
}

pub fn render_summary(app: &mut App, summary: &SeedSummary, json_line: bool) -> anyhow::Result<()> {
    if json_line {
        app.out.json_line(summary)?;
        return Ok(());
    }
    match app.out.format() {
        crate::render::Format::Json | crate::render::Format::Ndjson => app.out.record(summary)?,
        _ => {
            app.out.rows(&summary.tables)?;
            app.out.rows(&summary.phases)?;
            app.out.note(&format!(
                "{} rows in {:.2} s ({:.0} rows/s), peak RSS {:.0} MiB",
                summary.rows, summary.seconds, summary.rows_per_sec, summary.peak_rss_mib
            ))?;
        }
    }
    Ok(())
}

pub fn run(app: &mut App, args: SeedArgs) -> anyhow::Result<ExitCode> {
    let options = args
        .dataset
        .options(args.as_of, args.replace, args.confirm)?;
    let progress = Progress::new(app);
    let summary = match &args.csv {
        Some(dir) => seeder::write_csv(dir, &options, &progress)?,
        None => {
            let (mut client, ..) = crate::cmd::db::init(app, &InitArgs::default())?;
            let ctx = app.ctx(&mut client)?;
            ctx.require(Capability::Jobs)?;
            seeder::seed(&mut client, &ctx, &options, &progress)?
        }
    };
    render_summary(app, &summary, args.summary_json)?;
    Ok(ExitCode::SUCCESS)
}
