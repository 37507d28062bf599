//! Items (SPEC §16): the physical copies of a title, each with a barcode, a status and a
//! shelving place. Circulation lends items ([`crate::circulation`]); this module adds them,
//! imports them, shows them and changes the statuses a librarian sets by hand.
//!
//! `book.total_copies` and `book.available_copies` count a book's items (total: not
//! `withdrawn` or `lost`; available: `available`), so every change of an item's status
//! updates them in the same transaction, under the book's row lock taken before the item's:
//! the order a borrow takes them in.

use std::collections::{HashMap, HashSet};
use std::io::Read;

use chrono::{DateTime, Utc};
use postgres::{Client, GenericClient, Transaction};
use serde_json::json;
use uuid::Uuid;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, Operation};
use crate::barcode;
use crate::catalog::{self, Book};
use crate::circulation::{Loan, LOAN_COLUMNS};
use crate::error::{Error, Refusal, Result, RowError};
use crate::import::{self, ImportSummary};
use crate::page::{Cursor, Page};
use crate::{ids, validate};

/// Every status an item can have. `on_loan` and `on_hold_shelf` are set by circulation only;
/// `lost` by the lost-item job.
pub const STATUSES: &[&str] = &[
    "available",
    "on_loan",
    "on_hold_shelf",
    "missing",
    "damaged",
    "lost",
    "withdrawn",
];

/// The statuses `item set-status` may set.
pub const SETTABLE_STATUSES: &[&str] = &["available", "missing", "damaged", "withdrawn"];

/// Statuses an item leaves only through circulation.
const IN_USE: &[&str] = &["on_loan", "on_hold_shelf"];

/// Whether an item in `status` counts in `book.total_copies`.
fn owned(status: &str) -> bool {
    !matches!(status, "withdrawn" | "lost")
}

/// The longest replacement price accepted: 100,000.00.
const MAX_PRICE_CENTS: i64 = 10_000_000;

/// One physical copy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Item {
    /// UUID v7.
    pub id: Uuid,
    /// The title it is a copy of.
    pub book_id: Uuid,
    /// The label on it.
    pub barcode: String,
    /// One of [`STATUSES`].
    pub status: String,
    /// Shelving location.
    pub location: Option<String>,
    /// Call number.
    pub call_number: Option<String>,
    /// Replacement price.
    pub price_cents: Option<i64>,
    /// When it was added.
    pub created_at: DateTime<Utc>,
    /// When its status last changed.
    pub status_changed_at: DateTime<Utc>,
}

const ITEM_COLUMNS: &str =
    "id, book_id, barcode, status, location, call_number, price_cents, created_at, status_changed_at";

fn item_from_row(r: &postgres::Row) -> Item {
    Item {
        id: r.get(0),
        book_id: r.get(1),
        barcode: r.get(2),
        status: r.get(3),
        location: r.get(4),
        call_number: r.get(5),
        price_cents: r.get(6),
        created_at: r.get(7),
        status_changed_at: r.get(8),
    }
}

/// An item to add, as typed or imported.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NewItem {
    /// Book id or ISBN.
    pub book: String,
    /// The label's barcode; generated when `None`.
    pub barcode: Option<String>,
    /// Shelving location.
    pub location: Option<String>,
    /// Call number.
    pub call_number: Option<String>,
    /// Replacement price.
    pub price_cents: Option<i64>,
}

/// A validated item, its book not yet resolved.
#[derive(Debug, Clone)]
struct ValidItem {
    barcode: Option<String>,
    location: Option<String>,
    call_number: Option<String>,
    price_cents: Option<i64>,
}

fn validate_item(new: &NewItem) -> Result<ValidItem> {
    let barcode = new
        .barcode
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|b| barcode::validate(b).map(str::to_string))
        .transpose()?;
    Ok(ValidItem {
        barcode,
        location: validate::optional_text("location", new.location.as_deref(), 100)?,
        call_number: validate::optional_text("call number", new.call_number.as_deref(), 100)?,
        price_cents: new
            .price_cents
            .map(|p| validate::in_range("price_cents", p, 0, MAX_PRICE_CENTS))
            .transpose()?,
    })
}

/// Inserts items of already-locked books, generating the barcodes not given, and raises
/// each book's counters by its new items. Items are added `available`.
fn insert_items(
    tx: &mut Transaction<'_>,
    items: &[(Uuid, ValidItem)],
    at: DateTime<Utc>,
) -> Result<Vec<Item>> {
    let ids: Vec<Uuid> = items.iter().map(|_| ids::new_id(at)).collect();
    let books: Vec<Uuid> = items.iter().map(|(b, _)| *b).collect();
    let barcodes: Vec<Option<&str>> = items.iter().map(|(_, i)| i.barcode.as_deref()).collect();
    let locations: Vec<Option<&str>> = items.iter().map(|(_, i)| i.location.as_deref()).collect();
    let calls: Vec<Option<&str>> = items
        .iter()
        .map(|(_, i)| i.call_number.as_deref())
        .collect();
    let prices: Vec<Option<i64>> = items.iter().map(|(_, i)| i.price_cents).collect();
    let rows = tx.query(
        &format!(
            "WITH added AS (
                 INSERT INTO item (id, book_id, barcode, status, location, call_number, price_cents,
                                   created_at, status_changed_at)
                 SELECT id, book_id, coalesce(barcode, next_item_barcode()), 'available',
                        location, call_number, price_cents, $7, $7
                 FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::int8[])
                      WITH ORDINALITY AS t(id, book_id, barcode, location, call_number, price_cents, n)
                 ORDER BY n
                 RETURNING {ITEM_COLUMNS}
             ), counted AS (
                 UPDATE book b SET total_copies = b.total_copies + a.n,
                                   available_copies = b.available_copies + a.n
                 FROM (SELECT book_id, count(*)::int AS n FROM added GROUP BY book_id) a
                 WHERE b.id = a.book_id
             )
             SELECT {ITEM_COLUMNS} FROM added ORDER BY id"
        ),
        &[&ids, &books, &barcodes, &locations, &calls, &prices, &at],
    );
    rows.map(|rows| rows.iter().map(item_from_row).collect())
        .map_err(|e| {
            if crate::pg::is_unique_violation(&e, "item_barcode_key") {
                Error::refused(
                    Refusal::DuplicateBarcode,
                    "a barcode is already on another item",
                )
            } else {
                e.into()
            }
        })
}

/// Sets the running number of generated barcodes past the highest one in use, after a bulk
/// load (seed, restore) wrote items without drawing on it.
pub fn catch_up_barcodes(client: &mut impl GenericClient) -> Result<()> {
    client.execute("SELECT item_barcode_catch_up()", &[])?;
    Ok(())
}

/// Locks the books `ids` in id order (the order every multi-book writer takes them in).
fn lock_books(tx: &mut Transaction<'_>, ids: &[Uuid]) -> Result<()> {
    tx.execute(
        "SELECT 1 FROM book WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&ids],
    )?;
    Ok(())
}

fn reread(tx: &mut Transaction<'_>, id: Uuid) -> Result<Item> {
    Ok(tx
        .query_one(
            &format!("SELECT {ITEM_COLUMNS} FROM item WHERE id = $1"),
            &[&id],
        )
        .map(|r| item_from_row(&r))?)
}

/// Adds one item to a book (librarian or admin).
pub fn add(client: &mut Client, ctx: &Ctx, new: &NewItem) -> Result<Item> {
    let op = Operation::new("item.add", "item", json!(new));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Catalogue)?;
        let valid = validate_item(new)?;
        let book_id = catalog::book_id(tx, &new.book)?;
        lock_books(tx, &[book_id])?;
        let item = insert_items(tx, &[(book_id, valid)], ctx.now())?.remove(0);
        // A new copy of a title members wait for goes to the first of them.
        let item = if crate::hold_queue::retarget_titles(tx, ctx, &[book_id])? > 0 {
            reread(tx, item.id)?
        } else {
            item
        };
        Ok(Audited::new(
            item.clone(),
            item.id,
            json!({ "after": item }),
        ))
    })
}

/// Imports items from CSV with header `barcode,isbn,location,call_number,price_cents`
/// (`barcode` may be empty: one is generated). All or nothing: every bad row is reported with
/// its line, and a row naming an unknown ISBN or a barcode already in use is a bad row.
pub fn import(client: &mut Client, ctx: &Ctx, input: impl Read) -> Result<ImportSummary> {
    let parsed = import::read_rows(
        input,
        &["isbn"],
        &["barcode", "location", "call_number", "price_cents"],
        |row| {
            let price_cents = row
                .opt("price_cents")
                .map(|p| {
                    p.parse::<i64>().map_err(|_| {
                        Error::invalid(
                            "invalid_input",
                            format!("price_cents {p:?} is not a whole number of cents"),
                        )
                    })
                })
                .transpose()?;
            let isbn = validate::normalize_isbn(row.get("isbn"))?;
            let valid = validate_item(&NewItem {
                book: isbn.clone(),
                barcode: row.opt("barcode").map(str::to_string),
                location: row.opt("location").map(str::to_string),
                call_number: row.opt("call_number").map(str::to_string),
                price_cents,
            })?;
            Ok((isbn, valid))
        },
    );
    let op = Operation::new("item.import", "item", json!({}));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Catalogue)?;
        let rows = parsed.rows.clone();
        let mut errors = parsed.errors.clone();
        let given: Vec<(u64, String)> = rows
            .iter()
            .filter_map(|(line, (_, i))| i.barcode.clone().map(|b| (*line, b)))
            .collect();
        errors.extend(import::duplicates_within(&given, |b| b.clone(), "barcode"));
        let isbns: Vec<&str> = rows.iter().map(|(_, (isbn, _))| isbn.as_str()).collect();
        let books: HashMap<String, Uuid> = tx
            .query("SELECT isbn, id FROM book WHERE isbn = ANY($1)", &[&isbns])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect();
        let barcodes: Vec<&str> = given.iter().map(|(_, b)| b.as_str()).collect();
        let taken: HashSet<String> = tx
            .query(
                "SELECT barcode FROM item WHERE barcode = ANY($1)",
                &[&barcodes],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (line, (isbn, item)) in &rows {
            if !books.contains_key(isbn) {
                errors.push(RowError {
                    line: *line,
                    reason: format!("no book with ISBN {isbn} is catalogued"),
                });
            }
            if let Some(b) = item.barcode.as_ref().filter(|b| taken.contains(*b)) {
                errors.push(RowError {
                    line: *line,
                    reason: format!("barcode {b} is already on another item"),
                });
            }
        }
        let valid = import::all_or_nothing(rows, errors)?;
        let items: Vec<(Uuid, ValidItem)> = valid
            .into_iter()
            .map(|(isbn, item)| (books[&isbn], item))
            .collect();
        let mut book_ids: Vec<Uuid> = items.iter().map(|(b, _)| *b).collect();
        book_ids.sort_unstable();
        book_ids.dedup();
        lock_books(tx, &book_ids)?;
        let inserted = insert_items(tx, &items, ctx.now())?;
        crate::hold_queue::retarget_titles(tx, ctx, &book_ids)?;
        let summary = ImportSummary {
            entity: "item",
            imported: inserted.len() as u64,
        };
        Ok(Audited::new(
            summary.clone(),
            "import",
            json!({ "imported": summary.imported }),
        ))
    })
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ItemFilter {
    /// Book id or ISBN.
    pub book: Option<String>,
    /// One of [`STATUSES`].
    pub status: Option<String>,
    /// Exact shelving location.
    pub location: Option<String>,
}

fn known_status(status: &str, allowed: &[&str]) -> Result<String> {
    let status = status.trim().to_ascii_lowercase();
    if allowed.contains(&status.as_str()) {
        Ok(status)
    } else {
        Err(Error::invalid(
            "invalid_input",
            format!(
                "status must be one of {}, not {status:?}",
                allowed.join(", ")
            ),
        ))
    }
}

/// Lists items in id order, one keyset page at a time.
pub fn list(
    client: &mut impl GenericClient,
    filter: &ItemFilter,
    limit: i64,
    cursor: Option<&str>,
) -> Result<Page<Item>> {
    let after = cursor.map(Cursor::decode).transpose()?.map(|c| c.0);
    let limit = validate::limit(limit, 10_000)?;
    let book_id = filter
        .book
        .as_deref()
        .map(|b| catalog::book_id(client, b))
        .transpose()?;
    let status = filter
        .status
        .as_deref()
        .map(|s| known_status(s, STATUSES))
        .transpose()?;
    let rows = client.query(
        &format!(
            "SELECT {ITEM_COLUMNS} FROM item
             WHERE ($1::uuid IS NULL OR book_id = $1)
               AND ($2::text IS NULL OR status = $2)
               AND ($3::text IS NULL OR location = $3)
               AND ($4::uuid IS NULL OR id > $4)
             ORDER BY id LIMIT $5"
        ),
        &[&book_id, &status, &filter.location, &after, &(limit + 1)],
    )?;
    Ok(Page::from_rows(
        rows.iter().map(item_from_row).collect(),
        limit,
        |i| i.id,
    ))
}

/// How many loans [`show`] lists.
pub const RECENT_LOANS: i64 = 10;

/// An item with its title and its loans.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemDetail {
    /// The item.
    pub item: Item,
    /// Its title.
    pub book: Book,
    /// Its open loan, if it is out.
    pub current_loan: Option<Loan>,
    /// Its last [`RECENT_LOANS`] loans, newest first (the open one included).
    pub recent_loans: Vec<Loan>,
}

/// Finds an item by barcode.
pub fn find(client: &mut impl GenericClient, barcode: &str) -> Result<Item> {
    client
        .query_opt(
            &format!("SELECT {ITEM_COLUMNS} FROM item WHERE barcode = $1"),
            &[&barcode.trim()],
        )?
        .map(|r| item_from_row(&r))
        .ok_or_else(|| Error::not_found("item", barcode))
}

/// The item with `barcode`, its title, and its loans. Loans name members, so only staff see
/// them.
pub fn show(client: &mut Client, ctx: &Ctx, barcode: &str) -> Result<ItemDetail> {
    ctx.require(Capability::Reports)?;
    let item = find(client, barcode)?;
    let book = catalog::find_book(client, &item.book_id.to_string())?;
    let recent_loans: Vec<Loan> = client
        .query(
            &format!(
                "SELECT {LOAN_COLUMNS} FROM loan_all WHERE item_id = $1
                 ORDER BY borrowed_at DESC LIMIT $2"
            ),
            &[&item.id, &RECENT_LOANS],
        )?
        .iter()
        .map(|r| Loan {
            barcode: Some(item.barcode.clone()),
            ..crate::circulation::loan_from_row(r)
        })
        .collect();
    let current_loan = recent_loans
        .iter()
        .find(|l| l.returned_at.is_none())
        .cloned();
    Ok(ItemDetail {
        item,
        book,
        current_loan,
        recent_loans,
    })
}

/// Sets an item's status by hand (librarian or admin): back on the shelf, missing, damaged
/// or withdrawn. An item on loan or on the hold shelf changes only through circulation
/// (`item_in_use`). The book's counters follow in the same transaction.
pub fn set_status(
    client: &mut Client,
    ctx: &Ctx,
    barcode: &str,
    status: &str,
    note: Option<&str>,
) -> Result<Item> {
    let op = Operation::new(
        "item.set_status",
        "item",
        json!({ "barcode": barcode, "status": status, "note": note }),
    );
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Catalogue)?;
        let status = known_status(status, SETTABLE_STATUSES)?;
        let note = validate::optional_text("note", note, 500)?;
        let before = find(tx, barcode)?;
        lock_books(tx, &[before.book_id])?;
        let before = tx
            .query_one(
                &format!("SELECT {ITEM_COLUMNS} FROM item WHERE id = $1 FOR UPDATE"),
                &[&before.id],
            )
            .map(|r| item_from_row(&r))?;
        if IN_USE.contains(&before.status.as_str()) {
            return Err(Error::refused(
                Refusal::ItemInUse,
                format!(
                    "item {} is {}; it changes status through circulation",
                    before.barcode, before.status
                ),
            ));
        }
        let total_delta = i32::from(owned(&status)) - i32::from(owned(&before.status));
        let available_delta =
            i32::from(status == "available") - i32::from(before.status == "available");
        let now = ctx.now();
        let after = tx
            .query_one(
                &format!(
                    "WITH counted AS (
                         UPDATE book SET total_copies = total_copies + $3,
                                         available_copies = available_copies + $4
                         WHERE id = $5)
                     UPDATE item SET status = $2,
                            status_changed_at = CASE WHEN status = $2 THEN status_changed_at ELSE $6 END
                     WHERE id = $1 RETURNING {ITEM_COLUMNS}"
                ),
                &[
                    &before.id,
                    &status,
                    &total_delta,
                    &available_delta,
                    &before.book_id,
                    &now,
                ],
            )
            .map(|r| item_from_row(&r))?;
        // Found again: a member waiting for the title gets it.
        let after = if after.status == "available"
            && crate::hold_queue::retarget_titles(tx, ctx, &[after.book_id])? > 0
        {
            reread(tx, after.id)?
        } else {
            after
        };
        Ok(Audited::new(
            after.clone(),
            after.id,
            json!({ "barcode": after.barcode, "note": note,
                    "before": { "status": before.status }, "after": { "status": after.status } }),
        ))
    })
}
