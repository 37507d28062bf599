//! How a command names a loan: by id, by member and book, or by the scanned item. Below
//! `circulation` and `lost`, which both resolve it.

use uuid::Uuid;

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
