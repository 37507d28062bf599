//! Notices (SPEC §6, §16), each kind issued at most once per its key:
//! - `overdue` levels 1, 2 and 3 at 1, 7 and 14 days overdue, once per (loan, level);
//! - `courtesy` when a loan falls due within the category's `courtesy_days`, once per (loan,
//!   due date);
//! - `membership_expiring` when a membership lapses within `expiry_notice_days`, once per
//!   (member, expiry date).
//!
//! A run issues every notice that has come due by its as-of date and is still relevant, so a
//! missed night is caught up by the next one. Other kinds are written by the transaction that
//! does what they tell: `hold_ready` by the one that traps a hold (`hold_queue`),
//! `auto_renewed` and `auto_renew_failed` (once per loan and due date) by the nightly's
//! auto-renewal, `lost_billed` (once per loan) by the one that declares a loan lost.

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
    /// `overdue`, `courtesy` or `membership_expiring`.
    pub kind: String,
    /// Member.
    pub member_id: Uuid,
    /// Member name.
    pub name: String,
    /// Member email.
    pub email: String,
    /// Member phone.
    pub phone: Option<String>,
    /// Loan (`overdue`, `courtesy`).
    pub loan_id: Option<Uuid>,
    /// Book title.
    pub title: Option<String>,
    /// ISBN.
    pub isbn: Option<String>,
    /// Due.
    pub due_at: Option<DateTime<Utc>>,
    /// 1, 2 or 3 (`overdue`).
    pub level: Option<i16>,
    /// Overdue days as of the run (`overdue`).
    pub overdue_days: Option<i32>,
    /// Fine accrued as of the run (`overdue`).
    pub fine_cents: Option<i64>,
    /// The day the membership lapses (`membership_expiring`).
    pub expires_on: Option<NaiveDate>,
    /// Why an auto-renewal failed (`auto_renew_failed`: a refusal code).
    pub reason: Option<String>,
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
    /// The kind.
    pub kind: String,
    /// Loan.
    pub loan_id: Option<Uuid>,
    /// Title.
    pub title: Option<String>,
    /// ISBN.
    pub isbn: Option<String>,
    /// Due.
    pub due_at: Option<DateTime<Utc>>,
    /// Level.
    pub level: Option<i16>,
    /// Overdue days.
    pub overdue_days: Option<i32>,
    /// Fine so far.
    pub fine_cents: Option<i64>,
    /// The day the membership lapses.
    pub expires_on: Option<NaiveDate>,
    /// Why an auto-renewal failed.
    pub reason: Option<String>,
}

/// The notices a run hands over, in the order of their letters.
const NOTICE_SELECT: &str =
    "SELECT n.kind, n.member_id, m.name, m.email, m.phone, n.loan_id, b.title, b.isbn, l.due_at,
        n.level, n.overdue_days, n.fine_cents,
        CASE WHEN n.kind = 'membership_expiring' THEN n.key_date END, n.issued_on, n.reason
 FROM notice n JOIN member m ON m.id = n.member_id
      LEFT JOIN loan l ON l.id = n.loan_id LEFT JOIN book b ON b.id = l.book_id";
const NOTICE_ORDER: &str = "ORDER BY m.email, n.loan_id NULLS LAST, n.kind, n.level";

/// Issues every notice due by the end of `as_of` that was not issued before, and hands over
/// those the nightly's other steps wrote that are still pending. Returns them all, ordered by
/// member, loan, kind and level.
pub(crate) fn generate_in(
    tx: &mut impl GenericClient,
    as_of: NaiveDate,
    now: DateTime<Utc>,
) -> Result<Vec<Notice>> {
    let calendar = Calendar::load(tx)?;
    let end = calendar.end_of_day(as_of);
    let mut issued: Vec<Uuid> = tx
        .query(
            "WITH due AS (
                 SELECT l.id, l.member_id, overdue_days(l.due_at, $1, library_timezone()) AS od,
                        fine_cents(l.fine_cents_per_day, l.grace_days, l.max_fine_cents,
                                   overdue_days(l.due_at, $1, library_timezone())) AS fine
                 FROM loan l WHERE l.returned_at IS NULL AND l.due_at < $1
             )
             INSERT INTO notice (id, loan_id, level, member_id, issued_on, overdue_days, fine_cents, created_at)
             SELECT uuid_v7($3), d.id, lv.level, d.member_id, $2, d.od, d.fine, $3
             FROM due d JOIN unnest($4::smallint[], $5::int[]) AS lv(level, days) ON d.od >= lv.days
             ON CONFLICT (loan_id, level) DO NOTHING
             RETURNING id",
            &[
                &end,
                &as_of,
                &now,
                &LEVEL_DAYS.iter().map(|l| l.0).collect::<Vec<i16>>(),
                &LEVEL_DAYS.iter().map(|l| l.1).collect::<Vec<i32>>(),
            ],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Due within the category's courtesy days after the as-of date, not yet due.
    issued.extend(
        tx.query(
            "INSERT INTO notice (id, kind, loan_id, member_id, issued_on, key_date, created_at)
             SELECT uuid_v7($2), 'courtesy', l.id, l.member_id, $1, d.due_on, $2
             FROM loan l
             JOIN member m ON m.id = l.member_id
             JOIN circulation_rule r ON r.category = m.category
             CROSS JOIN LATERAL (SELECT (l.due_at AT TIME ZONE library_timezone())::date AS due_on) d
             WHERE l.returned_at IS NULL AND r.courtesy_days > 0
               AND d.due_on > $1 AND d.due_on <= $1 + r.courtesy_days
             ON CONFLICT (loan_id, key_date) WHERE kind = 'courtesy' DO NOTHING
             RETURNING id",
            &[&as_of, &now],
        )?
        .iter()
        .map(|r| r.get::<_, Uuid>(0)),
    );
    // Active memberships lapsing within the category's notice days after the as-of date.
    issued.extend(
        tx.query(
            "INSERT INTO notice (id, kind, member_id, issued_on, key_date, created_at)
             SELECT uuid_v7($2), 'membership_expiring', m.id, $1, d.expires_on, $2
             FROM member m
             JOIN circulation_rule r ON r.category = m.category
             CROSS JOIN LATERAL (SELECT (m.expires_at AT TIME ZONE library_timezone())::date AS expires_on) d
             WHERE m.status = 'active' AND r.expiry_notice_days > 0
               AND d.expires_on > $1 AND d.expires_on <= $1 + r.expiry_notice_days
             ON CONFLICT (member_id, key_date) WHERE kind = 'membership_expiring' DO NOTHING
             RETURNING id",
            &[&as_of, &now],
        )?
        .iter()
        .map(|r| r.get::<_, Uuid>(0)),
    );
    // The notices the nightly's other steps wrote (auto-renewal, lost bills), waiting to be
    // handed over with these.
    issued.extend(
        tx.query(
            "UPDATE notice SET pending_handover = false
             WHERE pending_handover AND issued_on <= $1 RETURNING id",
            &[&as_of],
        )?
        .iter()
        .map(|r| r.get::<_, Uuid>(0)),
    );
    let rows = tx.query(
        &format!("{NOTICE_SELECT} WHERE n.id = ANY($1) {NOTICE_ORDER}"),
        &[&issued],
    )?;
    Ok(rows.iter().map(notice_from_row).collect())
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
                kind: n.kind.clone(),
                loan_id: n.loan_id,
                title: n.title.clone(),
                isbn: n.isbn.clone(),
                due_at: n.due_at,
                level: n.level,
                overdue_days: n.overdue_days,
                fine_cents: n.fine_cents,
                expires_on: n.expires_on,
                reason: n.reason.clone(),
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
        crate::joblock::lock_jobs(tx, "notices generate")?;
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
        &format!(
            "{NOTICE_SELECT} WHERE n.issued_on = $1 AND n.kind <> 'hold_ready' {NOTICE_ORDER}"
        ),
        &[&issued_on],
    )?;
    Ok(rows.iter().map(notice_from_row).collect())
}

fn notice_from_row(r: &postgres::Row) -> Notice {
    Notice {
        kind: r.get(0),
        member_id: r.get(1),
        name: r.get(2),
        email: r.get(3),
        phone: r.get(4),
        loan_id: r.get(5),
        title: r.get(6),
        isbn: r.get(7),
        due_at: r.get(8),
        level: r.get(9),
        overdue_days: r.get(10),
        fine_cents: r.get(11),
        expires_on: r.get(12),
        issued_on: r.get(13),
        reason: r.get(14),
    }
}
