//! `libctl borrow | return | renew | loans`: the desk.

use std::process::ExitCode;

use clap::Args;
use libcore::circulation::{self, Copy, LoanFilter, LoanRef};
use uuid::Uuid;

use crate::app::App;

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("copy").required(true).args(["book", "item"]))]
pub struct BorrowArgs {
    /// Member id or email
    #[arg(long)]
    pub member: String,
    /// Book id or ISBN: any available copy
    #[arg(long)]
    pub book: Option<String>,
    /// The scanned item's barcode
    #[arg(long)]
    pub item: Option<String>,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["item", "loan", "member"]))]
pub struct LoanArgs {
    /// The scanned item's barcode
    #[arg(long, conflicts_with_all = ["loan", "member", "book"])]
    pub item: Option<String>,
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
    pub(crate) fn loan_ref(self) -> LoanRef {
        match (self.item, self.loan, self.member, self.book) {
            (Some(item), _, _, _) => LoanRef::Item { item },
            (None, Some(id), _, _) => LoanRef::Id(id),
            (None, None, Some(member), Some(book)) => LoanRef::MemberBook { member, book },
            _ => unreachable!("clap requires --item, --loan, or --member with --book"),
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
    let copy = match (&args.item, &args.book) {
        (Some(barcode), _) => Copy::Item(barcode),
        (None, Some(book)) => Copy::Title(book),
        (None, None) => unreachable!("clap requires --book or --item"),
    };
    let loan = circulation::borrow_copy(&mut client, &ctx, &args.member, copy)?;
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
