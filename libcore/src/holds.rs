//! Holds (SPEC §16): a member asks to be next for a title whose copies are all out.
//!
//! The queue of a title is its waiting holds in `(placed_at, id)` order; no position is
//! stored, so none can collide, and a position is a count under that order. A copy that
//! comes free goes to the first waiting hold whose member is in good standing, inside the
//! transaction that frees it (`hold_queue`). Placing a hold locks the member, then the book,
//! exactly as a borrow does, so a hold and a return of the same title are ordered by the
//! book row: the return either sees the hold and traps for it, or the hold sees the copy on
//! the shelf and is refused with `copy_available`.

use chrono::{DateTime, Days, NaiveDate, Utc};
use postgres::{Client, GenericClient};
use serde_json::json;
use uuid::Uuid;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, Operation};
use crate::calendar::Calendar;
use crate::catalog;
use crate::circulation::{self, Whose};
use crate::error::{Error, Refusal, Result};
use crate::hold_queue::{self, Ending};
use crate::ids;
use crate::members;
use crate::page::{Cursor, Page};

/// Hold statuses.
pub const STATUSES: &[&str] = &["waiting", "ready", "fulfilled", "cancelled", "expired"];

/// One hold, with its place in the queue while it waits.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Hold {
    /// UUID v7.
    pub id: Uuid,
    /// The title held.
    pub book_id: Uuid,
    /// Its title.
    pub title: String,
    /// Who asked.
    pub member_id: Uuid,
    /// Their email.
    pub member_email: String,
    /// When.
    pub placed_at: DateTime<Utc>,
    /// `waiting`, `ready`, `fulfilled`, `cancelled` or `expired`.
    pub status: String,
    /// 1 for the next in line; only while waiting.
    pub queue_position: Option<i64>,
    /// The item trapped for it, or the item its borrow took.
    pub item_id: Option<Uuid>,
    /// That item's barcode.
    pub barcode: Option<String>,
    /// When its item was trapped.
    pub ready_at: Option<DateTime<Utc>>,
    /// The last day to collect it, library time.
    pub pickup_by: Option<NaiveDate>,
    /// When it was cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// When its borrow fulfilled it.
    pub fulfilled_at: Option<DateTime<Utc>>,
    /// When it expired on the hold shelf.
    pub expired_at: Option<DateTime<Utc>>,
}

/// The columns [`hold_from_row`] reads, over `hold h`.
const HOLD_SELECT: &str =
    "SELECT h.id, h.book_id, b.title, h.member_id, m.email, h.placed_at, h.status,
        CASE WHEN h.status = 'waiting' THEN
            (SELECT count(*) FROM hold w
             WHERE w.book_id = h.book_id AND w.status = 'waiting'
               AND (w.placed_at, w.id) <= (h.placed_at, h.id)) END,
        h.item_id, i.barcode, h.ready_at, h.pickup_by, h.cancelled_at, h.fulfilled_at, h.expired_at
 FROM hold h JOIN book b ON b.id = h.book_id JOIN member m ON m.id = h.member_id
 LEFT JOIN item i ON i.id = h.item_id";

fn hold_from_row(r: &postgres::Row) -> Hold {
    Hold {
        id: r.get(0),
        book_id: r.get(1),
        title: r.get(2),
        member_id: r.get(3),
        member_email: r.get(4),
        placed_at: r.get(5),
        status: r.get(6),
        queue_position: r.get(7),
        item_id: r.get(8),
        barcode: r.get(9),
        ready_at: r.get(10),
        pickup_by: r.get(11),
        cancelled_at: r.get(12),
        fulfilled_at: r.get(13),
        expired_at: r.get(14),
    }
}

/// One hold by id.
pub fn get(client: &mut impl GenericClient, id: Uuid) -> Result<Hold> {
    client
        .query_opt(&format!("{HOLD_SELECT} WHERE h.id = $1"), &[&id])?
        .map(|r| hold_from_row(&r))
        .ok_or_else(|| Error::not_found("hold", id.to_string()))
}

/// Places a hold on a title for a member: members for themselves, librarians for anyone.
/// Refused when a copy is on the shelf (borrow it), when the member already has the title or
/// a live hold on it, at the hold limit, and for a member who could not borrow.
pub fn place(client: &mut Client, ctx: &Ctx, member: &str, book: &str) -> Result<Hold> {
    let op = Operation::new(
        "hold.place",
        "hold",
        json!({ "member": member, "book": book }),
    );
    audit::run_on(client, ctx, &op, |tx, statements, gate| {
        let member_id = members::find_member(tx, member)?.id;
        ctx.require_self_or(member_id, Capability::CirculateForOthers)?;
        let book_id = catalog::book_id(tx, book)?;
        let locked = circulation::lock_member(
            tx,
            statements,
            Some(gate),
            Whose::Member(member_id),
            Some(book_id),
            None,
        )?;
        let now = ctx.now();
        if now < locked.created_at {
            return Err(Error::invalid(
                "invalid_input",
                format!("{} did not exist yet at {now}", locked.email),
            ));
        }
        circulation::require_active(&locked, now)?;
        circulation::require_not_blocked(&locked, &circulation::member_loans(&locked, now))?;
        let title = locked
            .book
            .as_ref()
            .ok_or_else(|| Error::not_found("book", book))?;
        if title.category == "reference" {
            return Err(Error::refused(
                Refusal::NotLoanable,
                format!("{:?} is a reference book and cannot be held", title.title),
            ));
        }
        if locked.loans.iter().any(|l| l.book_id == book_id) {
            return Err(Error::refused(
                Refusal::AlreadyOnLoan,
                format!("{} already has {:?} on loan", locked.email, title.title),
            ));
        }
        if let Some(own) = &title.own_hold {
            return Err(Error::refused(
                Refusal::DuplicateHold,
                format!(
                    "{} already has a {} hold on {:?} ({})",
                    locked.email, own.status, title.title, own.id
                ),
            ));
        }
        let live = locked.live_holds.unwrap_or(0);
        if live >= i64::from(locked.rule.max_holds) {
            return Err(Error::refused(
                Refusal::HoldLimitReached,
                format!(
                    "{} already has {live} live holds, the limit of the {} category",
                    locked.email, locked.rule.category
                ),
            ));
        }
        if title.item.as_ref().is_some_and(|i| i.status == "available") {
            return Err(Error::refused(
                Refusal::CopyAvailable,
                format!(
                    "a copy of {:?} is on the shelf: borrow it instead",
                    title.title
                ),
            ));
        }
        let id = ids::new_id(now);
        tx.execute(
            "INSERT INTO hold (id, book_id, member_id, placed_at) VALUES ($1, $2, $3, $4)",
            &[&id, &book_id, &member_id, &now],
        )?;
        let hold = get(tx, id)?;
        Ok(Audited::new(
            hold.clone(),
            id,
            json!({ "after": { "status": hold.status, "book": book_id, "member": member_id,
                               "queue_position": hold.queue_position } }),
        ))
    })
}

/// Cancels a live hold: its member, or a librarian. A ready hold's item passes to the next in
/// line, as at expiry.
pub fn cancel(client: &mut Client, ctx: &Ctx, hold: Uuid) -> Result<Hold> {
    let op = Operation::new("hold.cancel", "hold", json!({ "hold": hold }));
    audit::run(client, ctx, &op, |tx| {
        let member: Uuid = tx
            .query_opt("SELECT member_id FROM hold WHERE id = $1", &[&hold])?
            .ok_or_else(|| Error::not_found("hold", hold.to_string()))?
            .get(0);
        // The member first, as every circulation command locks.
        tx.execute("SELECT 1 FROM member WHERE id = $1 FOR UPDATE", &[&member])?;
        ctx.require_self_or(member, Capability::CirculateForOthers)?;
        let was = hold_queue::end(tx, ctx, hold, Ending::Cancelled("requested"), ctx.now())?;
        match was.as_deref() {
            Some("waiting" | "ready") => Ok(Audited::written(get(tx, hold)?)),
            other => Err(Error::refused(
                Refusal::HoldNotLive,
                format!(
                    "hold {hold} is {}, not waiting or ready",
                    other.unwrap_or("gone")
                ),
            )),
        }
    })
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct HoldFilter {
    /// Member id or email.
    pub member: Option<String>,
    /// Book id or ISBN.
    pub book: Option<String>,
    /// One of [`STATUSES`].
    pub status: Option<String>,
}

/// Lists holds, oldest first, with queue positions. Members see only their own.
pub fn list(
    client: &mut Client,
    ctx: &Ctx,
    filter: &HoldFilter,
    limit: i64,
    cursor: Option<&str>,
) -> Result<Page<Hold>> {
    let member_id = members::listing_scope(client, ctx, filter.member.as_deref())?;
    match member_id {
        Some(id) => ctx.require_self_or(id, Capability::CirculateForOthers)?,
        None => ctx.require(Capability::CirculateForOthers)?,
    }
    if let Some(status) = filter.status.as_deref() {
        if !STATUSES.contains(&status) {
            return Err(Error::invalid(
                "invalid_input",
                format!(
                    "status must be one of {}, not {status:?}",
                    STATUSES.join(", ")
                ),
            ));
        }
    }
    let book_id = filter
        .book
        .as_deref()
        .map(|b| catalog::book_id(client, b))
        .transpose()?;
    let after = cursor.map(Cursor::decode).transpose()?.map(|c| c.0);
    let limit = crate::validate::limit(limit, 10_000)?;
    let rows = client.query(
        &format!(
            "{HOLD_SELECT}
             WHERE ($1::uuid IS NULL OR h.member_id = $1)
               AND ($2::uuid IS NULL OR h.book_id = $2)
               AND ($3::text IS NULL OR h.status = $3)
               AND ($4::uuid IS NULL OR h.id > $4)
             ORDER BY h.id LIMIT $5"
        ),
        &[&member_id, &book_id, &filter.status, &after, &(limit + 1)],
    )?;
    Ok(Page::from_rows(
        rows.iter().map(hold_from_row).collect(),
        limit,
        |h| h.id,
    ))
}

/// One line of the staff's morning hold-shelf list.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ShelfLine {
    /// `shelve`: put the item on the hold shelf for the member; `clear`: its pickup day has
    /// passed, take it off.
    pub action: &'static str,
    /// The hold.
    pub hold_id: Uuid,
    /// The hold's status now.
    pub status: String,
    /// Title.
    pub title: String,
    /// Whose hold.
    pub member_email: String,
    /// The item.
    pub barcode: String,
    /// Where it is shelved.
    pub location: Option<String>,
    /// Its call number.
    pub call_number: Option<String>,
    /// The last day to collect it.
    pub pickup_by: NaiveDate,
    /// For `clear`: where the item goes now: `stacks`, `hold shelf` (the next member's hold),
    /// or `expire` (the hold awaits the nightly's expiry).
    pub next: Option<String>,
}

/// The hold-shelf list as of the morning of `as_of`: items trapped since the day before, to
/// put on the hold shelf, and holds whose pickup day has passed, to clear: still ready (the
/// nightly has not expired them yet), or expired since the day before with their item still
/// where that expiry sent it.
pub fn shelf(client: &mut Client, ctx: &Ctx, as_of: NaiveDate) -> Result<Vec<ShelfLine>> {
    ctx.require(Capability::CirculateForOthers)?;
    let calendar = Calendar::load(client)?;
    let since = calendar.end_of_day(as_of - Days::new(2));
    let rows = client.query(
        "SELECT CASE WHEN h.status = 'ready' AND h.pickup_by >= $1 THEN 'shelve' ELSE 'clear' END,
                h.id, h.status, b.title, m.email, i.barcode, i.location, i.call_number, h.pickup_by,
                CASE WHEN h.status = 'ready' AND h.pickup_by >= $1 THEN NULL
                     WHEN h.status = 'ready' THEN 'expire'
                     WHEN i.status = 'available' THEN 'stacks'
                     ELSE 'hold shelf' END
         FROM hold h JOIN book b ON b.id = h.book_id JOIN member m ON m.id = h.member_id
              JOIN item i ON i.id = h.item_id
         WHERE (h.status = 'ready' AND (h.ready_at > $2 OR h.pickup_by < $1))
            OR (h.status = 'expired' AND h.expired_at > $2
                AND i.status_changed_at = h.expired_at AND i.status IN ('available', 'on_hold_shelf'))
         ORDER BY 1 DESC, i.location NULLS LAST, i.call_number NULLS LAST, i.barcode",
        &[&as_of, &since],
    )?;
    Ok(rows
        .iter()
        .map(|r| ShelfLine {
            action: if r.get::<_, &str>(0) == "shelve" {
                "shelve"
            } else {
                "clear"
            },
            hold_id: r.get(1),
            status: r.get(2),
            title: r.get(3),
            member_email: r.get(4),
            barcode: r.get(5),
            location: r.get(6),
            call_number: r.get(7),
            pickup_by: r.get(8),
            next: r.get(9),
        })
        .collect())
}

/// What an expiry run did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Expiry {
    /// The as-of date.
    pub as_of: NaiveDate,
    /// Ready holds past their pickup day that expired.
    pub expired: i32,
    /// Holds that became ready for the items passed on, or found on the shelf.
    pub made_ready: i32,
    /// True when nothing was kept.
    pub dry_run: bool,
}

/// `libctl holds expire --as-of D [--dry-run]`: under the job lock; a re-run changes nothing.
/// With `dry_run` everything runs and is rolled back.
pub fn expire(client: &mut Client, ctx: &Ctx, as_of: NaiveDate, dry_run: bool) -> Result<Expiry> {
    Calendar::load(client)?.require_not_future(as_of)?;
    if dry_run {
        ctx.require(Capability::Jobs)?;
        let mut tx = client.transaction()?;
        crate::joblock::lock_jobs(&mut tx, "holds expire")?;
        let done = expire_in(&mut tx, ctx, as_of);
        tx.rollback()?;
        return done.map(|d| Expiry { dry_run: true, ..d });
    }
    let op = Operation::new("holds.expire", "hold", json!({ "as_of": as_of }));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Jobs)?;
        crate::joblock::lock_jobs(tx, "holds expire")?;
        let done = expire_in(tx, ctx, as_of)?;
        Ok(Audited::without_entity(
            done,
            json!({ "as_of": as_of, "expired": done.expired, "made_ready": done.made_ready }),
        ))
    })
}

/// The expiry step, in the caller's transaction (the nightly's).
pub(crate) fn expire_in(
    tx: &mut impl GenericClient,
    ctx: &Ctx,
    as_of: NaiveDate,
) -> Result<Expiry> {
    let (expired, made_ready) = hold_queue::expire_in(tx, ctx, as_of)?;
    Ok(Expiry {
        as_of,
        expired,
        made_ready,
        dry_run: false,
    })
}
