//! `libctl borrow | return | renew | loans`: the desk.

use std::process::ExitCode;

use clap::Args;
use libcore::circulation::{self, LoanFilter, LoanRef};
use uuid::Uuid;

use crate::app::App;

#[derive(Debug, Args)]
pub struct BorrowArgs {
    /// Member id or email
    #[arg(long)]
    pub member: String,
    /// Book id or ISBN
    #[arg(long)]
    pub book: String,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["loan", "member"]))]
pub struct LoanArgs {
    /// Loan id
    #[arg(long, conflicts_with_all = ["member", "book"])]
    pub loan: Option<Uuid>,
    /// Member id or email (with --book)
    #[arg(long, requires = "book")]
    pub member: Option<String>,
    /// Book id or ISBN (with --member)
    #[arg(long, requires = "member")]
    pub book: Option<String>,
}

impl LoanArgs {
    fn loan_ref(self) -> LoanRef {
        match (self.loan, self.member, self.book) {
            (Some(id), _, _) => LoanRef::Id(id),
            (None, Some(member), Some(book)) => LoanRef::MemberBook { member, book },
            _ => unreachable!("clap requires --loan or --member with --book"),
        }
    }
}

#[derive(Debug, Args)]
pub struct LoansArgs {
    /// Member id or email
    #[arg(long)]
    pub member: Option<String>,
    /// Book id or ISBN
    #[arg(long)]
    pub book: Option<String>,
    /// Only loans not yet returned
    #[arg(long)]
    pub open: bool,
    #[command(flatten)]
    pub page: super::PageArgs,
}

pub fn borrow(app: &mut App, args: BorrowArgs) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    let loan = circulation::borrow(&mut client, &ctx, &args.member, &args.book)?;
    app.out.record(&loan)?;
    Ok(ExitCode::SUCCESS)
}

pub fn return_loan(app: &mut App, args: LoanArgs) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    let loan = circulation::return_loan(&mut client, &ctx, &args.loan_ref())?;
    app.out.record(&loan)?;
    Ok(ExitCode::SUCCESS)
}

pub fn renew(app: &mut App, args: LoanArgs) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    let loan = circulation::renew(&mut client, &ctx, &args.loan_ref())?;
    app.out.record(&loan)?;
    Ok(ExitCode::SUCCESS)
}

pub fn loans(app: &mut App, args: LoansArgs) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    let filter = LoanFilter {
        member: args.member,
        book: args.book,
        open_only: args.open,
    };
    let page = circulation::list_loans(
        &mut client,
        &ctx,
        &filter,
        args.page.limit,
        args.page.cursor.as_deref(),
    )?;
    app.out.page(&page)?;
    Ok(ExitCode::SUCCESS)
}
