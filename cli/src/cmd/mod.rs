//! One module per command group, each with its clap arguments and a `run()` that calls
//! libcore and hands the result to the renderer.

use std::process::ExitCode;

use clap::Subcommand;

use crate::app::App;

/// One page of a keyset listing: how many rows, and where the previous page stopped.
#[derive(Debug, clap::Args)]
pub struct PageArgs {
    /// Rows on this page (1–10,000)
    #[arg(long, default_value_t = 50)]
    pub limit: i64,
    /// The cursor printed by the previous page
    #[arg(long)]
    pub cursor: Option<String>,
}

/// An all-or-nothing CSV import: the file to read.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// CSV file
    pub file: std::path::PathBuf,
}

impl ImportArgs {
    /// Opens the file, hands it to `import` and prints the summary; every error names the file.
    pub fn run(
        &self,
        app: &mut App,
        client: &mut libcore::Client,
        ctx: &libcore::actor::Ctx,
        import: impl FnOnce(
            &mut libcore::Client,
            &libcore::actor::Ctx,
            std::io::BufReader<std::fs::File>,
        ) -> libcore::Result<libcore::ImportSummary>,
    ) -> anyhow::Result<()> {
        use anyhow::Context as _;
        let file = std::fs::File::open(&self.file)
            .map_err(|e| libcore::Error::io(format!("opening {}", self.file.display()), e))?;
        let summary = import(client, ctx, std::io::BufReader::new(file))
            .with_context(|| format!("importing {}", self.file.display()))?;
        app.out.record(&summary)?;
        Ok(())
    }
}

pub mod approvals;
pub mod archive;
pub mod audit;
pub mod backup;
pub mod bench;
pub mod book;
pub mod circulation;
pub mod db;
pub mod holds;
pub mod item;
pub mod jobs;
pub mod lost;
pub mod member;
pub mod misc;
pub mod policy;
pub mod report;
pub mod reviews;
pub mod seed;
pub mod staff;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create, migrate, inspect and check the database; run the embedded server
    #[command(subcommand)]
    Db(db::DbCommand),
    /// Catalogue: add, import, list and show books
    #[command(subcommand)]
    Book(book::BookCommand),
    /// Items (the physical copies): add, import, list, show, set status
    #[command(subcommand)]
    Item(item::ItemCommand),
    /// Members: add, import, list, show, change status
    #[command(subcommand)]
    Member(member::MemberCommand),
    /// Lend a copy of a book to a member
    Borrow(circulation::BorrowArgs),
    /// Take a loan back (by item barcode, loan id, or member and book)
    Return(circulation::LoanArgs),
    /// Extend a loan
    Renew(circulation::LoanArgs),
    /// Declare a loan's item lost (charging its replacement and fee), or `lost auto`
    Lost(lost::LostArgs),
    /// Close a loan the member says they returned: the item goes missing, the fine stops
    #[command(name = "claim-returned")]
    ClaimReturned(circulation::LoanArgs),
    /// Holds: place one on a title whose copies are all out, or cancel one
    #[command(subcommand)]
    Hold(holds::HoldCommand),
    /// List holds with queue positions; `holds shelf` for the morning list, `holds expire`
    Holds(holds::HoldsArgs),
    /// List loans
    Loans(circulation::LoansArgs),
    /// Fines: nightly accrual, payments, a member's account
    #[command(subcommand)]
    Fines(jobs::FinesCommand),
    /// Notices: generate, export, send by email, print as letters, the outbox
    #[command(subcommand)]
    Notices(jobs::NoticesCommand),
    /// The nightly pipeline (or one STEP of it), catching up missed nights, under one lock
    Nightly(jobs::NightlyArgs),
    /// Read-only reports: summary, overdue, fines, inventory, popular, top-members, trends, risk
    Report(report::ReportArgs),
    /// File a request for a second person to decide
    #[command(subcommand)]
    Request(approvals::RequestCommand),
    /// List requests, or expire stale membership applications
    Requests(approvals::RequestsArgs),
    /// Approve a request (performing its effect), or all pending of a kind
    Approve(approvals::ApproveArgs),
    /// Reject a request
    Reject(approvals::RejectArgs),
    /// The audit log: export and prune
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Rate limits: policies, an actor's status, and the audit of the log
    #[command(subcommand, name = "rate-limit")]
    RateLimit(audit::RateLimitCommand),
    /// Backups: create, verify, restore, list, prune
    #[command(subcommand)]
    Backup(backup::BackupCommand),
    /// History: move ended loans and old audit rows into monthly partitions, export and drop months
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    /// Reviews: add, update, delete
    #[command(subcommand)]
    Review(reviews::ReviewCommand),
    /// List reviews of a book or by a member
    Reviews(reviews::ListArgs),
    /// Recommendations for a member, or `recommend refresh`
    Recommend(reviews::RecommendArgs),
    /// Circulation rules and the library time zone
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Days the library is closed (skipped by due dates and fines)
    #[command(subcommand, name = "closed-day")]
    ClosedDay(policy::ClosedDayCommand),
    /// Database logins bound to members, and delegate logins for kiosks
    #[command(subcommand)]
    Staff(staff::StaffCommand),
    /// Generate a realistic library (atomically), or write it as CSV
    Seed(seed::SeedArgs),
    /// Measure seed, reports and circulation against baselines taken in the same run
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Print shell completions
    Completions(misc::CompletionsArgs),
    /// Print the man page
    Man,
}

pub fn run(app: &mut App, command: Command) -> anyhow::Result<ExitCode> {
    let marc_command = matches!(
        command,
        Command::Book(book::BookCommand::Import(_) | book::BookCommand::Export(_))
    );
    if app.global.format.marc().is_some() && !marc_command {
        return Err(libcore::Error::invalid(
            "invalid_input",
            "--format marc and marcxml are for `book import` and `book export` only",
        )
        .into());
    }
    match command {
        Command::Db(c) => db::run(app, c),
        Command::Book(c) => book::run(app, c),
        Command::Item(c) => item::run(app, c),
        Command::Member(c) => member::run(app, c),
        Command::Borrow(a) => circulation::borrow(app, a),
        Command::Return(a) => circulation::return_loan(app, a),
        Command::Renew(a) => circulation::renew(app, a),
        Command::Lost(a) => lost::run_lost(app, a),
        Command::ClaimReturned(a) => lost::run_claim_returned(app, a),
        Command::Hold(c) => holds::run_hold(app, c),
        Command::Holds(a) => holds::run_holds(app, a),
        Command::Loans(a) => circulation::loans(app, a),
        Command::Fines(c) => jobs::run_fines(app, c),
        Command::Notices(c) => jobs::run_notices(app, c),
        Command::Nightly(a) => jobs::run_nightly(app, a),
        Command::Report(a) => report::run(app, a),
        Command::Request(c) => approvals::run_request(app, c),
        Command::Requests(a) => approvals::run_requests(app, a),
        Command::Approve(a) => approvals::run_approve(app, a),
        Command::Reject(a) => approvals::run_reject(app, a),
        Command::Audit(c) => audit::run_audit(app, c),
        Command::RateLimit(c) => audit::run_rate_limit(app, c),
        Command::Backup(c) => backup::run(app, c),
        Command::Archive(c) => archive::run(app, c).map(|()| ExitCode::SUCCESS),
        Command::Review(c) => reviews::run_review(app, c),
        Command::Reviews(a) => reviews::run_reviews(app, a),
        Command::Recommend(a) => reviews::run_recommend(app, a),
        Command::Policy(c) => policy::run(app, c),
        Command::ClosedDay(c) => policy::run_closed_day(app, c),
        Command::Staff(c) => staff::run(app, c),
        Command::Seed(a) => seed::run(app, a),
        Command::Bench(c) => bench::run(app, c),
        Command::Completions(a) => misc::completions(a),
        Command::Man => misc::man(),
    }
}
