//! How a command names a loan: by id, by member and book, or by the scanned item, and how
//! such a name is found. Below `circulation` and `lost`, which both resolve it.

use postgres::GenericClient;
use uuid::Uuid;

use crate::error::{Error, Result};

/// How a command names a loan.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum LoanRef {
    /// By loan id.
    Id(Uuid),
    /// The open loan of this book by this member.
    MemberBook {
        /// Member id or email.
        member: String,
        /// Book id or ISBN.
        book: String,
    },
    /// The open loan of the item with this barcode, as scanned at the desk.
    Item {
        /// The barcode.
        item: String,
    },
}

/// Finds a member's loan of a book, without locking it: `(member id, loan id)` of the open
/// loan if there is one, else of the latest, so a second return says `already_returned`
/// rather than `not_found`.
pub(crate) fn find_loan(
    tx: &mut impl GenericClient,
    member: &str,
    book: &str,
) -> Result<(Uuid, Uuid)> {
    let member_id = crate::members::find_member(tx, member)?.id;
    let book_id = crate::catalog::book_id(tx, book)?;
    let row = tx.query_opt(
        "SELECT id FROM loan WHERE member_id = $1 AND book_id = $2
         ORDER BY returned_at IS NULL DESC, borrowed_at DESC LIMIT 1",
        &[&member_id, &book_id],
    )?;
    let row = row.ok_or_else(|| Error::not_found("loan", format!("{member} / {book}")))?;
    Ok((member_id, row.get(0)))
}

/// Finds the loan of the item with `barcode` like [`find_loan`]: its open loan, else its latest.
pub(crate) fn find_item_loan(tx: &mut impl GenericClient, barcode: &str) -> Result<(Uuid, Uuid)> {
    let row = tx
        .query_opt(
            "SELECT l.member_id, l.id FROM item i
             LEFT JOIN LATERAL (SELECT member_id, id FROM loan
                                WHERE item_id = i.id
                                ORDER BY returned_at IS NULL DESC, borrowed_at DESC LIMIT 1) l ON true
             WHERE i.barcode = $1",
            &[&barcode.trim()],
        )?
        .ok_or_else(|| Error::not_found("item", barcode))?;
    match (row.get(0), row.get(1)) {
        (Some(member), Some(loan)) => Ok((member, loan)),
        _ => Err(Error::not_found("loan", format!("of item {barcode}"))),
    }
}
