//! The catalogue: books, the items they arrive with, and trigram search.

use std::io::Read;

use chrono::{DateTime, Utc};
use postgres::{Client, GenericClient};
use serde_json::json;
use uuid::Uuid;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, Operation};
use crate::error::{Error, Refusal, Result, RowError};
use crate::import::{self, ImportSummary};
use crate::page::{Cursor, Page};
use crate::{ids, validate};

/// Circulation categories of a book. `reference` never leaves the building.
pub const BOOK_CATEGORIES: &[&str] = &["standard", "reference", "short_loan"];

/// A title in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Book {
    /// UUID v7.
    pub id: Uuid,
    /// ISBN-13.
    pub isbn: String,
    /// Title.
    pub title: String,
    /// Author.
    pub author: String,
    /// Genre, if known.
    pub genre: Option<String>,
    /// `standard`, `reference` or `short_loan`.
    pub category: String,
    /// Copies owned.
    pub total_copies: i32,
    /// Copies on the shelf.
    pub available_copies: i32,
    /// When it was catalogued.
    pub created_at: DateTime<Utc>,
    /// Reviews.
    pub rating_count: i32,
    /// Sum of their ratings (average = sum / count).
    pub rating_sum: i64,
    /// Loans ever made of it.
    pub times_borrowed: i64,
}

pub(crate) const BOOK_COLUMNS: &str =
    "id, isbn, title, author, genre, category, total_copies, available_copies, created_at, rating_count, rating_sum, times_borrowed";

pub(crate) fn book_from_row(r: &postgres::Row) -> Book {
    Book {
        id: r.get(0),
        isbn: r.get(1),
        title: r.get(2),
        author: r.get(3),
        genre: r.get(4),
        category: r.get(5),
        total_copies: r.get(6),
        available_copies: r.get(7),
        created_at: r.get(8),
        rating_count: r.get(9),
        rating_sum: r.get(10),
        times_borrowed: r.get(11),
    }
}

/// A book to add, as typed or imported.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NewBook {
    /// ISBN-10 or ISBN-13, hyphens allowed.
    pub isbn: String,
    /// Title.
    pub title: String,
    /// Author.
    pub author: String,
    /// Genre.
    pub genre: Option<String>,
    /// Circulation category; `standard` when `None`.
    pub category: Option<String>,
    /// Copies owned; 1 when `None`.
    pub copies: Option<i64>,
}

/// A validated, normalised book ready to insert.
#[derive(Debug, Clone)]
struct ValidBook {
    isbn: String,
    title: String,
    author: String,
    genre: Option<String>,
    category: String,
    copies: i32,
}

fn validate_book(new: &NewBook) -> Result<ValidBook> {
    let category = new
        .category
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty());
    let category = category.unwrap_or("standard").to_ascii_lowercase();
    if !BOOK_CATEGORIES.contains(&category.as_str()) {
        return Err(Error::invalid(
            "invalid_input",
            format!(
                "category must be one of {}, not {category:?}",
                BOOK_CATEGORIES.join(", ")
            ),
        ));
    }
    Ok(ValidBook {
        isbn: validate::normalize_isbn(&new.isbn)?,
        title: validate::required_text("title", &new.title, 500)?,
        author: validate::required_text("author", &new.author, 300)?,
        genre: validate::optional_text("genre", new.genre.as_deref(), 100)?,
        category,
        copies: validate::copies(new.copies.unwrap_or(1))?,
    })
}

/// Inserts validated books in one statement.
fn insert_books(
    tx: &mut impl GenericClient,
    books: &[ValidBook],
    at: DateTime<Utc>,
) -> Result<Vec<Book>> {
    let ids: Vec<Uuid> = books.iter().map(|_| ids::new_id(at)).collect();
    let isbns: Vec<&str> = books.iter().map(|b| b.isbn.as_str()).collect();
    let titles: Vec<&str> = books.iter().map(|b| b.title.as_str()).collect();
    let authors: Vec<&str> = books.iter().map(|b| b.author.as_str()).collect();
    let genres: Vec<Option<&str>> = books.iter().map(|b| b.genre.as_deref()).collect();
    let categories: Vec<&str> = books.iter().map(|b| b.category.as_str()).collect();
    let copies: Vec<i32> = books.iter().map(|b| b.copies).collect();
    let rows = tx.query(
        &format!(
            "INSERT INTO book (id, isbn, title, author, genre, category, total_copies, available_copies, created_at)
             SELECT id, isbn, title, author, genre, category, copies, copies, $8
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::int[])
                  AS t(id, isbn, title, author, genre, category, copies)
             RETURNING {BOOK_COLUMNS}"
        ),
        &[&ids, &isbns, &titles, &authors, &genres, &categories, &copies, &at],
    );
    match rows {
        Ok(rows) => {
            let books: Vec<Book> = rows.iter().map(book_from_row).collect();
            let copies: Vec<(Uuid, i32)> = books.iter().map(|b| (b.id, b.total_copies)).collect();
            add_generated_items(tx, &copies, at)?;
            Ok(books)
        }
        Err(e) if crate::pg::is_unique_violation(&e, "book_isbn_key") => Err(Error::refused(
            Refusal::DuplicateIsbn,
            "a book with this ISBN is already catalogued",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Adds `copies` items (SPEC §16) with generated barcodes to each of `books`, just inserted
/// with their counters already at `copies`: a book arrives with its copies.
pub(crate) fn add_generated_items(
    tx: &mut impl GenericClient,
    books: &[(Uuid, i32)],
    at: DateTime<Utc>,
) -> Result<u64> {
    let ids: Vec<Uuid> = books.iter().map(|(b, _)| *b).collect();
    let copies: Vec<i32> = books.iter().map(|(_, n)| *n).collect();
    let added = tx.execute(
        "INSERT INTO item (id, book_id, barcode, status, created_at, status_changed_at)
         SELECT uuid_v7($3), t.book_id, next_item_barcode(), 'available', $3, $3
         FROM unnest($1::uuid[], $2::int[]) WITH ORDINALITY AS t(book_id, copies, n)
         CROSS JOIN LATERAL generate_series(1, t.copies) AS copy
         ORDER BY t.n, copy",
        &[&ids, &copies, &at],
    )?;
    Ok(added)
}

/// Catalogues one book (librarian or admin).
pub fn add_book(client: &mut Client, ctx: &Ctx, new: &NewBook) -> Result<Book> {
    let op = Operation::new("book.add", "book", json!(new));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Catalogue)?;
        let valid = validate_book(new)?;
        let book = insert_books(tx, &[valid], ctx.now())?.remove(0);
        Ok(Audited::new(
            book.clone(),
            book.id,
            json!({ "after": book }),
        ))
    })
}

/// Imports books from CSV with header `isbn,title,author,genre,category,copies`.
/// All or nothing: any bad row (including an ISBN already catalogued) fails the whole file.
pub fn import_books(client: &mut Client, ctx: &Ctx, input: impl Read) -> Result<ImportSummary> {
    let parsed = import::read_rows(
        input,
        &["isbn", "title", "author", "copies"],
        &["genre", "category"],
        |row| {
            let copies = row.get("copies").parse::<i64>().map_err(|_| {
                Error::invalid(
                    "invalid_input",
                    format!("copies {:?} is not a whole number", row.get("copies")),
                )
            })?;
            validate_book(&NewBook {
                isbn: row.get("isbn").to_string(),
                title: row.get("title").to_string(),
                author: row.get("author").to_string(),
                genre: row.opt("genre").map(str::to_string),
                category: row.opt("category").map(str::to_string),
                copies: Some(copies),
            })
        },
    );
    let op = Operation::new("book.import", "book", json!({}));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Catalogue)?;
        let rows = parsed.rows.clone();
        let mut errors = parsed.errors.clone();
        errors.extend(import::duplicates_within(&rows, |b| b.isbn.clone(), "ISBN"));
        let isbns: Vec<&str> = rows.iter().map(|(_, b)| b.isbn.as_str()).collect();
        let existing: std::collections::HashSet<String> = tx
            .query("SELECT isbn FROM book WHERE isbn = ANY($1)", &[&isbns])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        errors.extend(
            rows.iter()
                .filter(|(_, b)| existing.contains(&b.isbn))
                .map(|(line, b)| RowError {
                    line: *line,
                    reason: format!("ISBN {} is already catalogued", b.isbn),
                }),
        );
        let books = import::all_or_nothing(rows, errors)?;
        let inserted = insert_books(tx, &books, ctx.now())?;
        let summary = ImportSummary {
            entity: "book",
            imported: inserted.len() as u64,
        };
        Ok(Audited::new(
            summary.clone(),
            "import",
            json!({ "imported": summary.imported }),
        ))
    })
}

/// Streams every title in catalogue order to `emit`, a page at a time (`book export`).
pub fn export(
    client: &mut impl GenericClient,
    ctx: &Ctx,
    emit: &mut dyn FnMut(Book) -> Result<()>,
) -> Result<u64> {
    ctx.require(Capability::Catalogue)?;
    let mut after = Uuid::nil();
    let mut written = 0;
    loop {
        let rows = client.query(
            &format!("SELECT {BOOK_COLUMNS} FROM book WHERE id > $1 ORDER BY id LIMIT 5000"),
            &[&after],
        )?;
        let Some(last) = rows.last() else {
            return Ok(written);
        };
        after = last.get(0);
        for r in &rows {
            emit(book_from_row(r))?;
            written += 1;
        }
    }
}

/// Finds a book by id or ISBN (any form).
pub fn find_book(client: &mut impl GenericClient, key: &str) -> Result<Book> {
    let row = match Uuid::parse_str(key.trim()) {
        Ok(id) => client.query_opt(
            &format!("SELECT {BOOK_COLUMNS} FROM book WHERE id = $1"),
            &[&id],
        )?,
        Err(_) => {
            let isbn = validate::normalize_isbn(key).map_err(|_| Error::not_found("book", key))?;
            client.query_opt(
                &format!("SELECT {BOOK_COLUMNS} FROM book WHERE isbn = $1"),
                &[&isbn],
            )?
        }
    };
    row.map(|r| book_from_row(&r))
        .ok_or_else(|| Error::not_found("book", key))
}

/// Resolves a book reference (id or ISBN) to its id without reading the row.
pub(crate) fn book_id(client: &mut impl GenericClient, key: &str) -> Result<Uuid> {
    find_book(client, key).map(|b| b.id)
}

/// Lists books in catalogue order, optionally filtered by a search over title and author
/// (substring or trigram word similarity, so small typos still match) or an exact ISBN, one
/// page at a time.
pub fn list_books(
    client: &mut impl GenericClient,
    search: Option<&str>,
    limit: i64,
    cursor: Option<&str>,
) -> Result<Page<Book>> {
    let after = cursor.map(Cursor::decode).transpose()?.map(|c| c.0);
    let search = search.map(str::trim).filter(|s| !s.is_empty());
    let isbn = search.and_then(|s| validate::normalize_isbn(s).ok());
    let pattern = search.map(|s| format!("%{}%", crate::pg::escape_like(s)));
    // Part of an ISBN (digits, maybe hyphenated) matches ISBNs containing those digits.
    let isbn_part = search
        .map(|s| s.replace('-', ""))
        .filter(|s| s.len() >= 3 && s.chars().all(|c| c.is_ascii_digit()))
        .map(|digits| format!("%{digits}%"));
    let limit = crate::validate::limit(limit, 10_000)?;
    let rows = client.query(
        &format!(
            "SELECT {BOOK_COLUMNS} FROM book
             WHERE ($1::text IS NULL
                    OR isbn = $5
                    OR isbn LIKE $6
                    OR (title || ' ' || author) ILIKE $2
                    OR $1 <% (title || ' ' || author))
               AND ($3::uuid IS NULL OR id > $3)
             ORDER BY id LIMIT $4"
        ),
        &[&search, &pattern, &after, &(limit + 1), &isbn, &isbn_part],
    )?;
    Ok(Page::from_rows(
        rows.iter().map(book_from_row).collect(),
        limit,
        |b| b.id,
    ))
}
