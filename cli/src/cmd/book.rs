//! `libctl book …`: the catalogue.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use libcore::catalog::{self, NewBook};

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum BookCommand {
    /// Catalogue one book
    Add(AddArgs),
    /// Import books from CSV (header isbn,title,author,genre,category,copies), or MARC 21 with
    /// --format marc|marcxml (titles and their 952/852 items); all or nothing
    Import(BookImportArgs),
    /// Write the catalogue as MARC 21 (--format marc|marcxml) or CSV, optionally with items
    Export(ExportArgs),
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
pub struct BookImportArgs {
    #[command(flatten)]
    pub file: super::ImportArgs,
    /// MARC records without holdings get this many generated items
    #[arg(long, default_value_t = 1)]
    pub copies: i64,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to FILE (atomically) instead of stdout
    #[arg(long)]
    pub out: Option<std::path::PathBuf>,
    /// MARC: a 952 holdings field per item (barcode, call number, location, price)
    #[arg(long)]
    pub with_items: bool,
}

/// One title as `book import` reads CSV.
#[derive(serde::Serialize)]
struct CatalogueRow {
    isbn: String,
    title: String,
    author: String,
    genre: Option<String>,
    category: String,
    copies: i32,
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
            match app.global.format.marc() {
                Some(format) => {
                    let done =
                        libcore::marc::import(&mut client, &ctx, &a.file.file, format, a.copies)
                            .map_err(|e| {
                                anyhow::Error::new(e)
                                    .context(format!("importing {}", a.file.file.display()))
                            })?;
                    if !app.global.quiet {
                        for w in &done.warnings {
                            eprintln!("libctl: warning: {}", w.reason);
                        }
                    }
                    app.out.record(&serde_json::json!({
                        "records": done.records,
                        "books": done.books,
                        "items": done.items,
                        "warnings": done.warnings.len(),
                    }))?;
                }
                None => a.file.run(app, &mut client, &ctx, |c, ctx, file| {
                    catalog::import_books(c, ctx, file)
                })?,
            }
        }
        BookCommand::Export(a) => {
            let (mut client, ctx) = app.session()?;
            let marc = app.global.format.marc();
            let format = app.out.format();
            let mut write = |mut out: Box<dyn std::io::Write>| -> anyhow::Result<u64> {
                match marc {
                    Some(format) => Ok(libcore::marc::export(
                        &mut client,
                        &ctx,
                        format,
                        a.with_items,
                        &mut out,
                    )?),
                    None => {
                        let mut renderer = crate::render::Renderer::to_writer(format, out);
                        let mut n = 0;
                        crate::render::emit_rows(&mut renderer, |emit| {
                            n = catalog::export(&mut client, &ctx, &mut |b| {
                                emit(CatalogueRow {
                                    isbn: b.isbn,
                                    title: b.title,
                                    author: b.author,
                                    genre: b.genre,
                                    category: b.category,
                                    copies: b.total_copies,
                                })
                            })?;
                            Ok(())
                        })?;
                        Ok(n)
                    }
                }
            };
            match &a.out {
                Some(path) => {
                    let mut n = 0;
                    super::jobs::write_atomically(path, |f| {
                        let handle = f
                            .try_clone()
                            .map_err(|e| libcore::Error::io("writing the export", e))?;
                        n = write(Box::new(std::io::BufWriter::new(handle)))?;
                        Ok(())
                    })?;
                    if !app.global.quiet {
                        eprintln!("libctl: {n} record(s) written to {}", path.display());
                    }
                }
                None => {
                    write(Box::new(std::io::stdout()))?;
                }
            }
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
