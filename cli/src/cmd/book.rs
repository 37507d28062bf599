//! `libctl book …`: the catalogue.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use libcore::catalog::{self, NewBook};

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum BookCommand {
    /// Catalogue one book
    Add(AddArgs),
    /// Import books from CSV (header isbn,title,author,genre,category,copies); all or nothing
    Import(super::ImportArgs),
    /// List books, optionally searching title, author and ISBN
    List(ListArgs),
    /// Show one book by id or ISBN
    Show(ShowArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// ISBN-10 or ISBN-13 (stored as ISBN-13)
    #[arg(long)]
    pub isbn: String,
    #[arg(long)]
    pub title: String,
    #[arg(long)]
    pub author: String,
    #[arg(long)]
    pub genre: Option<String>,
    /// standard, reference (not loanable) or short_loan
    #[arg(long, default_value = "standard")]
    pub category: String,
    /// Copies owned (0 to 10000)
    #[arg(long, default_value_t = 1)]
    pub copies: i64,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Words from the title, author or ISBN (typos tolerated)
    #[arg(long)]
    pub search: Option<String>,
    #[command(flatten)]
    pub page: super::PageArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Book id or ISBN
    pub book: String,
}

pub fn run(app: &mut App, command: BookCommand) -> anyhow::Result<ExitCode> {
    match command {
        BookCommand::Add(a) => {
            let (mut client, ctx) = app.session()?;
            let book = catalog::add_book(
                &mut client,
                &ctx,
                &NewBook {
                    isbn: a.isbn,
                    title: a.title,
                    author: a.author,
                    genre: a.genre,
                    category: Some(a.category),
                    copies: Some(a.copies),
                },
            )?;
            app.out.record(&book)?;
        }
        BookCommand::Import(a) => {
            let (mut client, ctx) = app.session()?;
            a.run(app, &mut client, &ctx, |c, ctx, file| {
                catalog::import_books(c, ctx, file)
            })?;
        }
        BookCommand::List(a) => {
            let mut client = app.client()?;
            let page = catalog::list_books(
                &mut client,
                a.search.as_deref(),
                a.page.limit,
                a.page.cursor.as_deref(),
            )?;
            app.out.page(&page)?;
        }
        BookCommand::Show(a) => {
            let mut client = app.client()?;
            app.out.record(&catalog::find_book(&mut client, &a.book)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
