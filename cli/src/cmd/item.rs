//! `libctl item …`: the physical copies, by barcode.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use libcore::items::{self, ItemFilter, NewItem};

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum ItemCommand {
    /// Add one item (copy) to a book; a barcode is generated unless given
    Add(AddArgs),
    /// Import items from CSV (header barcode,isbn,location,call_number,price_cents); all or nothing
    Import(super::ImportArgs),
    /// List items, one keyset page at a time
    List(ListArgs),
    /// Show an item, its book, its current loan and its last 10 loans
    Show(ShowArgs),
    /// Set an item's status by hand: available, missing, damaged or withdrawn
    SetStatus(SetStatusArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// Book id or ISBN
    #[arg(long)]
    pub book: String,
    /// The label's barcode (1–32 of A–Z, a–z, 0–9, -); generated when absent
    #[arg(long)]
    pub barcode: Option<String>,
    /// Shelving location
    #[arg(long)]
    pub location: Option<String>,
    /// Call number
    #[arg(long)]
    pub call_number: Option<String>,
    /// Replacement price in cents
    #[arg(long)]
    pub price_cents: Option<i64>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Book id or ISBN
    #[arg(long)]
    pub book: Option<String>,
    /// available, on_loan, on_hold_shelf, missing, damaged, lost or withdrawn
    #[arg(long)]
    pub status: Option<String>,
    /// Exact shelving location
    #[arg(long)]
    pub location: Option<String>,
    #[command(flatten)]
    pub page: super::PageArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Barcode
    pub barcode: String,
}

#[derive(Debug, Args)]
pub struct SetStatusArgs {
    /// Barcode
    pub barcode: String,
    /// available, missing, damaged or withdrawn
    pub status: String,
    /// Why (kept in the audit log)
    #[arg(long)]
    pub note: Option<String>,
}

pub fn run(app: &mut App, command: ItemCommand) -> anyhow::Result<ExitCode> {
    match command {
        ItemCommand::Add(a) => {
            let (mut client, ctx) = app.session()?;
            let item = items::add(
                &mut client,
                &ctx,
                &NewItem {
                    book: a.book,
                    barcode: a.barcode,
                    location: a.location,
                    call_number: a.call_number,
                    price_cents: a.price_cents,
                },
            )?;
            app.out.record(&item)?;
        }
        ItemCommand::Import(a) => {
            let (mut client, ctx) = app.session()?;
            a.run(app, &mut client, &ctx, |c, ctx, file| {
                items::import(c, ctx, file)
            })?;
        }
        ItemCommand::List(a) => {
            let mut client = app.client()?;
            let filter = ItemFilter {
                book: a.book,
                status: a.status,
                location: a.location,
            };
            let page = items::list(&mut client, &filter, a.page.limit, a.page.cursor.as_deref())?;
            app.out.page(&page)?;
        }
        ItemCommand::Show(a) => {
            let (mut client, ctx) = app.session()?;
            app.out
                .record(&items::show(&mut client, &ctx, &a.barcode)?)?;
        }
        ItemCommand::SetStatus(a) => {
            let (mut client, ctx) = app.session()?;
            let item =
                items::set_status(&mut client, &ctx, &a.barcode, &a.status, a.note.as_deref())?;
            app.out.record(&item)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
