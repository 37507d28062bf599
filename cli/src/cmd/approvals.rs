//! `libctl request …`, `libctl requests …`, `libctl approve`, `libctl reject`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use libcore::actor::Ctx;
use libcore::approvals::{self, NewRequest};
use libcore::members::NewMember;
use uuid::Uuid;

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum RequestCommand {
    /// Apply for membership (may run with no actor: self-registration); creates a pending member
    Membership(MembershipArgs),
    /// Ask to borrow despite the loan limit or a block, or to claim a return past the limit
    Override(OverrideArgs),
    /// Ask to waive part of a member's fines
    Waiver(WaiverArgs),
    /// Ask to correct a member's name, email or phone
    Correction(CorrectionArgs),
}

#[derive(Debug, Args)]
pub struct MembershipArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub phone: Option<String>,
    #[arg(long, default_value = "public")]
    pub category: String,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["book", "loan"]))]
pub struct OverrideArgs {
    #[arg(long)]
    pub member: String,
    /// The book to borrow despite the loan limit or a block
    #[arg(long)]
    pub book: Option<String>,
    /// The loan to close as claimed returned despite the member's limit of claims
    #[arg(long)]
    pub loan: Option<uuid::Uuid>,
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct WaiverArgs {
    #[arg(long)]
    pub member: String,
    #[arg(long)]
    pub amount_cents: i64,
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct CorrectionArgs {
    #[arg(long)]
    pub member: String,
    /// name, email or phone
    #[arg(long, value_parser = ["name", "email", "phone"])]
    pub field: String,
    #[arg(long)]
    pub value: String,
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, Args)]
pub struct RequestsArgs {
    #[command(subcommand)]
    pub command: Option<RequestsCommand>,
    /// pending, approved, rejected or expired
    #[arg(long)]
    pub status: Option<String>,
    /// membership, override, waiver or correction
    #[arg(long)]
    pub kind: Option<String>,
    #[arg(long, default_value_t = 100)]
    pub limit: i64,
}

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// Expire membership applications pending for longer than --older-than (e.g. 30d)
    Expire(ExpireArgs),
    /// Show one request
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct ExpireArgs {
    /// Age such as 30d
    #[arg(long, value_parser = parse_days, default_value = "30d")]
    pub older_than: i64,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    pub id: Uuid,
}

fn parse_days(s: &str) -> Result<i64, String> {
    s.strip_suffix('d')
        .unwrap_or(s)
        .parse::<i64>()
        .ok()
        .filter(|d| *d >= 0)
        .ok_or_else(|| format!("{s:?} is not a number of days such as 30d"))
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["id", "all_pending"]))]
pub struct ApproveArgs {
    /// The request to approve
    pub id: Option<Uuid>,
    #[arg(long)]
    pub note: Option<String>,
    /// Approve every pending request of --kind, each on its own
    #[arg(long, requires = "kind", conflicts_with = "id")]
    pub all_pending: bool,
    #[arg(long)]
    pub kind: Option<String>,
    /// With --all-pending: decide each and roll it back, showing what would happen
    #[arg(long, requires = "all_pending")]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RejectArgs {
    pub id: Uuid,
    #[arg(long)]
    pub reason: String,
}

pub fn run_request(app: &mut App, command: RequestCommand) -> anyhow::Result<ExitCode> {
    let mut client = app.client()?;
    let new = match command {
        RequestCommand::Membership(a) => NewRequest::Membership {
            applicant: NewMember {
                name: a.name,
                email: a.email,
                phone: a.phone,
                role: None,
                category: Some(a.category),
            },
        },
        RequestCommand::Override(a) => NewRequest::Override {
            member: a.member,
            book: a.book,
            loan: a.loan,
            reason: a.reason,
        },
        RequestCommand::Waiver(a) => NewRequest::Waiver {
            member: a.member,
            amount_cents: a.amount_cents,
            reason: a.reason,
        },
        RequestCommand::Correction(a) => NewRequest::Correction {
            member: a.member,
            field: a.field,
            value: a.value,
            reason: a.reason,
        },
    };
    // With no actor at all, a membership application is a self-registration.
    let ctx = match (&new, &app.global.actor) {
        (NewRequest::Membership { .. }, None) => Ctx::new(libcore::actor::Actor::anonymous()),
        _ => app.ctx(&mut client)?,
    };
    app.out.record(&approvals::file(&mut client, &ctx, &new)?)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_requests(app: &mut App, a: RequestsArgs) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    match a.command {
        Some(RequestsCommand::Expire(e)) => {
            let n = approvals::expire(&mut client, &ctx, e.older_than)?;
            app.out.record(&serde_json::json!({ "expired": n }))?;
        }
        Some(RequestsCommand::Show(s)) => {
            app.out.record(&approvals::show(&mut client, &ctx, s.id)?)?
        }
        None => app.out.rows(approvals::list(
            &mut client,
            &ctx,
            a.status.as_deref(),
            a.kind.as_deref(),
            a.limit,
        )?)?,
    }
    Ok(ExitCode::SUCCESS)
}

pub fn run_approve(app: &mut App, a: ApproveArgs) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    if a.all_pending {
        let kind = a.kind.as_deref().unwrap_or_default();
        let outcomes = approvals::approve_all_pending(&mut client, &ctx, kind, a.dry_run)?;
        app.out.rows(&outcomes)?;
        return Ok(ExitCode::SUCCESS);
    }
    let id = a.id.expect("clap requires an id or --all-pending");
    app.out.record(&approvals::approve(
        &mut client,
        &ctx,
        id,
        a.note.as_deref(),
    )?)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_reject(app: &mut App, a: RejectArgs) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    app.out
        .record(&approvals::reject(&mut client, &ctx, a.id, &a.reason)?)?;
    Ok(ExitCode::SUCCESS)
}
