//! Overdue notices (SPEC §6): levels 1, 2 and 3 at 1, 7 and 14 days overdue, each issued at
//! most once per loan by the unique key `notice(loan_id, level)`. A run issues every level that
//! has come due by its as-of date, so a missed night is caught up by the next one.

use chrono::{DateTime, NaiveDate, Utc};
use postgres::GenericClient;
use uuid::Uuid;

use crate::calendar::Calendar;
use crate::error::Result;

/// Overdue days at which each level is due.
pub const LEVEL_DAYS: [(i16, i32); 3] = [(1, 1), (2, 7), (3, 14)];

/// One notice issued by a run.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Notice {
    /// Member.
    pub member_id: Uuid,
    /// Member name.
    pub name: String,
    /// Member email.
    pub email: String,
    /// Member phone.
    pub phone: Option<String>,
    /// Loan.
    pub loan_id: Uuid,
    /// Book title.
    pub title: String,
    /// ISBN.
    pub isbn: String,
    /// Due.
    pub due_at: DateTime<Utc>,
    /// 1, 2 or 3.
    pub level: i16,
    /// Overdue days as of the run.
    pub overdue_days: i32,
    /// Fine accrued as of the run.
    pub fine_cents: i64,
    /// The run's as-of date.
    pub issued_on: NaiveDate,
}

/// One member's notices, ready for a mail merge.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberNotices {
    /// Member.
    pub member_id: Uuid,
    /// Name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Phone.
    pub phone: Option<String>,
    /// Their new notices.
    pub notices: Vec<NoticeLine>,
}

/// A notice line within a member's letter.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NoticeLine {
    /// Loan.
    pub loan_id: Uuid,
    /// Title.
    pub title: String,
    /// ISBN.
    pub isbn: String,
    /// Due.
    pub due_at: DateTime<Utc>,
    /// Level.
    pub level: i16,
    /// Overdue days.
    pub overdue_days: i32,
    /// Fine so far.
    pub fine_cents: i64,
}

/// Issues every notice due by the end of `as_of` that was not issued before. Returns the new
/// ones, ordered by member, loan and level.
pub(crate) fn generate_in(
    tx: &mut impl GenericClient,
    as_of: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<Notice>> {
    let calendar = Calendar::load(tx)?;
    let end = calendar.end_of_day(as_of);
    let rows = tx.query(
        "WITH due AS (
             SELECT l.id, l.member_id, overdue_days(l.due_at, $1, library_timezone()) AS od,
                    fine_cents(l.fine_cents_per_day, l.grace_days, l.max_fine_cents,
                               overdue_days(l.due_at, $1, library_timezone())) AS fine
             FROM loan l WHERE l.returned_at IS NULL AND l.due_at < $1
         ), issued AS (
             INSERT INTO notice (id, loan_id, level, member_id, issued_on, overdue_days, fine_cents, created_at)
             SELECT uuid_v7($3), d.id, lv.level, d.member_id, $2, d.od, d.fine, $3
             FROM due d JOIN unnest($4::smallint[], $5::int[]) AS lv(level, days) ON d.od >= lv.days
             ON CONFLICT (loan_id, level) DO NOTHING
             RETURNING loan_id, level, member_id, overdue_days, fine_cents
         )
         SELECT i.member_id, m.name, m.email, m.phone, i.loan_id, b.title, b.isbn, l.due_at,
                i.level, i.overdue_days, i.fine_cents
         FROM issued i JOIN loan l ON l.id = i.loan_id JOIN book b ON b.id = l.book_id
              JOIN member m ON m.id = i.member_id
         ORDER BY m.email, i.loan_id, i.level",
        &[
            &end,
            &as_of,
            &now,
            &LEVEL_DAYS.iter().map(|l| l.0).collect::<Vec<i16>>(),
            &LEVEL_DAYS.iter().map(|l| l.1).collect::<Vec<i32>>(),
        ],
    )?;
    Ok(rows.iter().map(|r| notice_from_row(r, as_of)).collect())
}

/// Groups notices (already ordered by member) into one letter per member.
pub fn group_by_member(notices: &[Notice]) -> Vec<MemberNotices> {
    let mut letters: Vec<MemberNotices> = Vec::new();
    for n in notices {
        if letters.last().is_none_or(|l| l.member_id != n.member_id) {
            letters.push(MemberNotices {
                member_id: n.member_id,
                name: n.name.clone(),
                email: n.email.clone(),
                phone: n.phone.clone(),
                notices: Vec::new(),
            });
        }
        letters
            .last_mut()
            .expect("just pushed")
            .notices
            .push(NoticeLine {
                loan_id: n.loan_id,
                title: n.title.clone(),
                isbn: n.isbn.clone(),
                due_at: n.due_at,
                level: n.level,
                overdue_days: n.overdue_days,
                fine_cents: n.fine_cents,
            });
    }
    letters
}

/// `libctl notices generate --as-of DATE`, under the job lock.
pub fn generate(
    client: &mut postgres::Client,
    ctx: &crate::actor::Ctx,
    as_of: NaiveDate,
    deliver: &mut dyn FnMut(&[Notice]) -> Result<()>,
) -> Result<Vec<Notice>> {
    use crate::audit::{self, Audited, Operation};
    let op = Operation::new(
        "notices.generate",
        "notice",
        serde_json::json!({ "as_of": as_of }),
    );
    crate::calendar::Calendar::load(client)?.require_not_future(as_of)?;
    audit::run(client, ctx, &op, |tx| {
        ctx.require(crate::actor::Capability::Jobs)?;
        crate::fines::lock_jobs(tx, "notices generate")?;
        let notices = generate_in(tx, as_of, ctx.now())?;
        // Handed over before the commit: a notice that cannot be delivered is not issued.
        deliver(&notices)?;
        let count = notices.len();
        Ok(Audited::new(
            notices,
            as_of,
            serde_json::json!({ "issued": count }),
        ))
    })
}

/// The notices issued on `issued_on` (by `notices generate` or `nightly` as of that day), in
/// the order they were generated: the way to hand them over again when their file was lost
/// (a full disk, a kill between the commit and the file's rename).
pub fn export(
    client: &mut impl GenericClient,
    ctx: &crate::actor::Ctx,
    issued_on: NaiveDate,
) -> Result<Vec<Notice>> {
    ctx.require(crate::actor::Capability::Jobs)?;
    Calendar::load(client)?.require_not_future(issued_on)?;
    let rows = client.query(
        "SELECT n.member_id, m.name, m.email, m.phone, n.loan_id, b.title, b.isbn, l.due_at,
                n.level, n.overdue_days, n.fine_cents
         FROM notice n JOIN loan l ON l.id = n.loan_id JOIN book b ON b.id = l.book_id
              JOIN member m ON m.id = n.member_id
         WHERE n.issued_on = $1
         ORDER BY m.email, n.loan_id, n.level",
        &[&issued_on],
    )?;
    Ok(rows.iter().map(|r| notice_from_row(r, issued_on)).collect())
}

fn notice_from_row(r: &postgres::Row, issued_on: NaiveDate) -> Notice {
    Notice {
        member_id: r.get(0),
        name: r.get(1),
        email: r.get(2),
        phone: r.get(3),
        loan_id: r.get(4),
        title: r.get(5),
        isbn: r.get(6),
        due_at: r.get(7),
        level: r.get(8),
        overdue_days: r.get(9),
        fine_cents: r.get(10),
        issued_on,
    }
}
