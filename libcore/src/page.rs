//! Keyset pagination with an opaque cursor: stable under concurrent inserts, and no OFFSET
//! scans on large tables.

use uuid::Uuid;

use crate::error::{Error, Result};

/// One page of results and the cursor of the next, if there is one.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Page<T> {
    /// The rows of this page.
    pub items: Vec<T>,
    /// Pass to `--cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row only proves there is more.
    pub fn from_rows(mut rows: Vec<T>, limit: i64, key: impl Fn(&T) -> Uuid) -> Page<T> {
        let more = rows.len() as i64 > limit;
        rows.truncate(limit.max(0) as usize);
        let next_cursor = if more {
            rows.last().map(|last| Cursor(key(last)).encode())
        } else {
            None
        };
        Page {
            items: rows,
            next_cursor,
        }
    }
}

/// The position after which the next page starts. Its text form is not a contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(pub Uuid);

impl Cursor {
    /// The opaque text form.
    pub fn encode(self) -> String {
        format!("k1{}", self.0.simple())
    }

    /// Parses the opaque text form.
    pub fn decode(text: &str) -> Result<Cursor> {
        text.strip_prefix("k1")
            .and_then(|hex| Uuid::try_parse(hex).ok())
            .map(Cursor)
            .ok_or_else(|| {
                Error::invalid(
                    "invalid_cursor",
                    format!("not a cursor from a previous page: {text:?}"),
                )
            })
    }
}
