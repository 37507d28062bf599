//! The hold queue's moves, shared by every capability that frees a copy or changes who may
//! be served: a return, a hold that ends, an item added or found, a member reinstated, a
//! payment, a policy or calendar change.
//!
//! The moves themselves are server functions (`sql/V21__holds.sql`): `hold_trap` gives a
//! free copy to the first waiting hold of its title whose member is in good standing,
//! `hold_end` cancels or fulfils a hold and passes its item on, `holds_retarget` gives copies
//! on the shelf to waiting holds, `holds_expire` clears the hold shelf. Each takes the book
//! row before the title's holds and items, and audits every hold it changes as the acting
//! person, in the caller's transaction.

use chrono::{DateTime, NaiveDate, Utc};
use postgres::GenericClient;
use uuid::Uuid;

use crate::actor::Ctx;
use crate::error::Result;

/// A hold that became ready for pickup: the desk shelves its item for the member.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Trapped {
    /// The hold.
    pub id: Uuid,
    /// Whose it is.
    pub member_id: Uuid,
    /// When its item was trapped.
    pub ready_at: DateTime<Utc>,
    /// The last day to collect it, library time.
    pub pickup_by: NaiveDate,
}

impl Trapped {
    /// The `hold_trapped` composite's columns from `first` on, `None` when its hold is NULL.
    pub(crate) fn from_row(row: &postgres::Row, first: usize) -> Option<Trapped> {
        Some(Trapped {
            id: row.get::<_, Option<Uuid>>(first)?,
            member_id: row.get(first + 1),
            ready_at: row.get(first + 2),
            pickup_by: row.get(first + 3),
        })
    }
}

/// Where [`retarget`] looks for copies on the shelf that a waiting hold could take.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// One title.
    Title(Uuid),
    /// The titles one member is waiting for.
    Member(Uuid),
    /// Every title with a waiting hold.
    Everywhere,
}

/// Gives copies on the shelf to waiting holds whose members are (again) in good standing;
/// returns how many holds became ready.
pub fn retarget(tx: &mut impl GenericClient, ctx: &Ctx, scope: Scope) -> Result<i32> {
    let (book, member) = match scope {
        Scope::Title(id) => (Some(id), None),
        Scope::Member(id) => (None, Some(id)),
        Scope::Everywhere => (None, None),
    };
    Ok(tx
        .query_one(
            "SELECT holds_retarget($1, $2, $3, $4, $5)",
            &[
                &book,
                &member,
                &ctx.now(),
                &ctx.actor.name,
                &ctx.actor.role.as_str(),
            ],
        )?
        .get(0))
}

/// [`retarget`] over several titles in one round trip, in id order (the order titles are
/// locked in everywhere).
pub fn retarget_titles(tx: &mut impl GenericClient, ctx: &Ctx, books: &[Uuid]) -> Result<i64> {
    let mut books = books.to_vec();
    books.sort_unstable();
    books.dedup();
    Ok(tx
        .query_one(
            "SELECT coalesce(sum(holds_retarget(b, NULL, $2, $3, $4)), 0)::bigint
             FROM unnest($1::uuid[]) AS b",
            &[
                &books,
                &ctx.now(),
                &ctx.actor.name,
                &ctx.actor.role.as_str(),
            ],
        )?
        .get(0))
}

/// How a live hold ends through [`end`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending<'a> {
    /// Cancelled, for this reason.
    Cancelled(&'a str),
    /// Fulfilled by the borrow of this item.
    Fulfilled(Uuid),
}

/// Ends a live hold at `at` and passes a ready hold's item on (unless its borrow took it). Returns the
/// status the hold had: `None` when there is no such hold, and a status other than
/// `waiting` or `ready` when it had already ended (nothing changed).
pub fn end(
    tx: &mut impl GenericClient,
    ctx: &Ctx,
    hold: Uuid,
    ending: Ending<'_>,
    at: DateTime<Utc>,
) -> Result<Option<String>> {
    let (status, item, reason) = match ending {
        Ending::Cancelled(reason) => ("cancelled", None, Some(reason)),
        Ending::Fulfilled(item) => ("fulfilled", Some(item), None),
    };
    Ok(tx
        .query_one(
            "SELECT hold_end($1, $2, $3, $4, $5, $6, $7)",
            &[
                &hold,
                &status,
                &item,
                &at,
                &reason,
                &ctx.actor.name,
                &ctx.actor.role.as_str(),
            ],
        )?
        .get(0))
}

/// Cancels every live hold of a member (who is leaving), title by title in id order.
pub fn cancel_member_holds(
    tx: &mut impl GenericClient,
    ctx: &Ctx,
    member: Uuid,
    reason: &str,
) -> Result<u64> {
    let rows = tx.query(
        "SELECT hold_end(h.id, 'cancelled', NULL, $2, $3, $4, $5)
         FROM (SELECT id FROM hold
               WHERE member_id = $1 AND status IN ('waiting', 'ready')
               ORDER BY book_id) h",
        &[
            &member,
            &ctx.now(),
            &reason,
            &ctx.actor.name,
            &ctx.actor.role.as_str(),
        ],
    )?;
    Ok(rows.len() as u64)
}

/// Expires every ready hold whose last pickup day is before `as_of` (catching up missed
/// nights in date order), then gives any copy left on the shelf to a waiting hold in good
/// standing. Returns (holds expired, holds made ready).
pub fn expire_in(tx: &mut impl GenericClient, ctx: &Ctx, as_of: NaiveDate) -> Result<(i32, i32)> {
    let row = tx.query_one(
        "SELECT expired, passed_on FROM holds_expire($1, $2, $3)",
        &[&as_of, &ctx.actor.name, &ctx.actor.role.as_str()],
    )?;
    let (expired, passed_on): (i32, i32) = (row.get(0), row.get(1));
    let retargeted = retarget(tx, ctx, Scope::Everywhere)?;
    Ok((expired, passed_on + retargeted))
}
