//! Approvals (SPEC §7): requests filed by one person and decided by another.
//!
//! A decision locks the request row (`FOR UPDATE`), so of two concurrent approvals exactly one
//! finds it pending; the loser gets `request_not_pending`. Status, reviewer, time, note and the
//! side effect (activation, borrow, waiver entry, correction) commit together or not at all: if
//! the side effect fails — no copy left, a waiver above the balance — the request stays pending.

use chrono::{DateTime, Months, Utc};
use postgres::{Client, GenericClient, Transaction};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::actor::{Capability, Ctx, Role};
use crate::audit::{self, Audited, Operation};
use crate::circulation::{self, Overrides};
use crate::error::{Error, Refusal, Result};
use crate::members::{self, NewMember};
use crate::{catalog, fines, ids, validate};

/// Waivers above this need an admin.
pub const WAIVER_ADMIN_THRESHOLD_CENTS: i64 = 5000;
/// Request kinds.
pub const KINDS: &[&str] = &["membership", "override", "waiver", "correction"];

/// A request and its decision.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Request {
    /// UUID v7.
    pub id: Uuid,
    /// `membership`, `override`, `waiver` or `correction`.
    pub kind: String,
    /// `pending`, `approved`, `rejected` or `expired`.
    pub status: String,
    /// The member it is about.
    pub member_id: Uuid,
    /// Override of a borrow: the book.
    pub book_id: Option<Uuid>,
    /// Override of a claim returned past `max_claims_returned`: the loan.
    pub loan_id: Option<Uuid>,
    /// Waiver: the amount.
    pub amount_cents: Option<i64>,
    /// Correction: `name`, `email` or `phone`.
    pub field: Option<String>,
    /// Correction: the new value.
    pub value: Option<String>,
    /// Why.
    pub reason: Option<String>,
    /// Who filed it (actor name).
    pub filed_by: String,
    /// When.
    pub filed_at: DateTime<Utc>,
    /// Who decided it.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<DateTime<Utc>>,
    /// Decision note or rejection reason.
    pub decision_note: Option<String>,
    /// What the approval did (loan id, ledger entry, before/after).
    pub result: Option<Value>,
}

const REQUEST_COLUMNS: &str =
    "id, kind, status, member_id, book_id, amount_cents, field, value, reason, \
     filed_by, filed_at, decided_by, decided_at, decision_note, result, loan_id";

fn request_from_row(r: &postgres::Row) -> Request {
    Request {
        id: r.get(0),
        kind: r.get(1),
        status: r.get(2),
        member_id: r.get(3),
        book_id: r.get(4),
        amount_cents: r.get(5),
        field: r.get(6),
        value: r.get(7),
        reason: r.get(8),
        filed_by: r.get(9),
        filed_at: r.get(10),
        decided_by: r.get(11),
        decided_at: r.get(12),
        decision_note: r.get(13),
        result: r.get(14),
        loan_id: r.get(15),
    }
}

/// What to file.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum NewRequest {
    /// An application: creates a pending member.
    Membership {
        /// Applicant.
        applicant: NewMember,
    },
    /// Borrow despite the loan limit or a block (a book), or claim a return past the member's
    /// limit of claims (a loan).
    Override {
        /// Member id or email.
        member: String,
        /// Book id or ISBN, to borrow.
        book: Option<String>,
        /// The loan to close as claimed returned.
        loan: Option<Uuid>,
        /// Why.
        reason: String,
    },
    /// Forgive part of a member's fines.
    Waiver {
        /// Member id or email.
        member: String,
        /// Amount.
        amount_cents: i64,
        /// Why.
        reason: String,
    },
    /// Change a member's name, email or phone.
    Correction {
        /// Member id or email.
        member: String,
        /// `name`, `email` or `phone`.
        field: String,
        /// The new value.
        value: String,
        /// Why.
        reason: String,
    },
}

fn required_reason(reason: &str) -> Result<String> {
    validate::required_text("reason", reason, 1000)
}

/// Validates a corrected value for its field, returning the normalised value.
fn corrected_value(field: &str, value: &str) -> Result<Option<String>> {
    match field {
        "name" => validate::required_text("name", value, 200).map(Some),
        "email" => validate::normalize_email(value).map(Some),
        "phone" => validate::normalize_phone(Some(value)),
        other => Err(Error::invalid(
            "invalid_input",
            format!("field must be name, email or phone, not {other:?}"),
        )),
    }
}

/// Files a request. Membership applications may come from nobody (self-registration); the
/// others come from staff, or from the member the request is about.
pub fn file(client: &mut Client, ctx: &Ctx, new: &NewRequest) -> Result<Request> {
    let kind = match new {
        NewRequest::Membership { .. } => "membership",
        NewRequest::Override { .. } => "override",
        NewRequest::Waiver { .. } => "waiver",
        NewRequest::Correction { .. } => "correction",
    };
    let op = Operation::new("request.file", "request", json!(new));
    audit::run(client, ctx, &op, |tx| {
        let now = ctx.now();
        let mut loan_id = None;
        let (member_id, book_id, amount, field, value, reason) = match new {
            NewRequest::Membership { applicant } => {
                let valid = members::validate_member(&NewMember {
                    role: Some("member".into()),
                    ..applicant.clone()
                })?;
                let member =
                    members::insert_members(tx, std::slice::from_ref(&valid), "pending", now)?
                        .remove(0);
                (member.id, None, None, None, None, None)
            }
            NewRequest::Override {
                member,
                book,
                loan,
                reason,
            } => {
                let member_id = members::find_member(tx, member)?.id;
                ctx.require_self_or(member_id, Capability::CirculateForOthers)?;
                let book_id = match (book, loan) {
                    (Some(book), None) => Some(catalog::find_book(tx, book)?.id),
                    (None, Some(loan)) => {
                        let of_member = tx
                            .query_opt(
                                "SELECT 1 FROM loan WHERE id = $1 AND member_id = $2",
                                &[loan, &member_id],
                            )?
                            .is_some();
                        if !of_member {
                            return Err(Error::not_found("loan", format!("{loan} of {member}")));
                        }
                        loan_id = Some(*loan);
                        None
                    }
                    _ => {
                        return Err(Error::invalid(
                            "invalid_input",
                            "an override names a book (to borrow) or a loan (to claim returned)",
                        ))
                    }
                };
                (
                    member_id,
                    book_id,
                    None,
                    None,
                    None,
                    Some(required_reason(reason)?),
                )
            }
            NewRequest::Waiver {
                member,
                amount_cents,
                reason,
            } => {
                let member_id = members::find_member(tx, member)?.id;
                ctx.require_self_or(member_id, Capability::CirculateForOthers)?;
                crate::validate::amount_cents("--amount-cents", *amount_cents)?;
                (
                    member_id,
                    None,
                    Some(*amount_cents),
                    None,
                    None,
                    Some(required_reason(reason)?),
                )
            }
            NewRequest::Correction {
                member,
                field,
                value,
                reason,
            } => {
                let member_id = members::find_member(tx, member)?.id;
                ctx.require_self_or(member_id, Capability::ManageMembers)?;
                let value = corrected_value(field, value)?.unwrap_or_default();
                (
                    member_id,
                    None,
                    None,
                    Some(field.clone()),
                    Some(value),
                    Some(required_reason(reason)?),
                )
            }
        };
        let row = tx.query_one(
            &format!(
                "INSERT INTO request (id, kind, member_id, book_id, amount_cents, field, value, reason, filed_by, filed_at, loan_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {REQUEST_COLUMNS}"
            ),
            &[&ids::new_id(now), &kind, &member_id, &book_id, &amount, &field, &value, &reason, &ctx.actor.name, &now, &loan_id],
        )?;
        let request = request_from_row(&row);
        Ok(Audited::new(
            request.clone(),
            request.id,
            json!({ "after": request }),
        ))
    })
}

fn lock_request(tx: &mut Transaction<'_>, id: Uuid) -> Result<Request> {
    let row = tx
        .query_opt(
            &format!("SELECT {REQUEST_COLUMNS} FROM request WHERE id = $1 FOR UPDATE"),
            &[&id],
        )?
        .ok_or_else(|| Error::not_found("request", id.to_string()))?;
    let request = request_from_row(&row);
    if request.status != "pending" {
        return Err(Error::refused(
            Refusal::RequestNotPending,
            format!("request {id} is already {}", request.status),
        ));
    }
    Ok(request)
}

/// The four-eyes rule: staff only, never on a request you filed or that is about you.
fn require_may_decide(ctx: &Ctx, request: &Request) -> Result<()> {
    ctx.require(Capability::Decide)?;
    if request.filed_by.eq_ignore_ascii_case(&ctx.actor.name)
        || ctx.actor.member_id == Some(request.member_id)
    {
        return Err(Error::Denied {
            code: "self_approval",
            message: format!(
                "{} may not decide a request they filed or that is about them",
                ctx.actor.name
            ),
        });
    }
    if request.kind == "waiver"
        && request.amount_cents.unwrap_or(0) > WAIVER_ADMIN_THRESHOLD_CENTS
        && ctx.actor.role != Role::Admin
    {
        return Err(Error::denied(format!(
            "a waiver above {WAIVER_ADMIN_THRESHOLD_CENTS} cents needs an admin; {} is a {}",
            ctx.actor.name,
            ctx.actor.role.as_str()
        )));
    }
    Ok(())
}

/// Applies an approved request's side effect; returns what it did.
fn apply(tx: &mut Transaction<'_>, ctx: &Ctx, request: &Request) -> Result<Value> {
    let now = ctx.now();
    match request.kind.as_str() {
        "membership" => {
            let expires_at = now + Months::new(12);
            tx.execute(
                "UPDATE member SET status = 'active', expires_at = $2 WHERE id = $1",
                &[&request.member_id, &expires_at],
            )?;
            Ok(
                json!({ "member_id": request.member_id, "status": "active", "expires_at": expires_at }),
            )
        }
        "override" if request.loan_id.is_some() => {
            let loan_id = request.loan_id.expect("checked by the guard");
            let claim = crate::lost::claim_returned_in(tx, loan_id, now, true)?;
            Ok(json!({ "claim": claim }))
        }
        "override" => {
            let book_id = request
                .book_id
                .ok_or_else(|| Error::Internal("override without a book".into()))?;
            let loan = circulation::borrow_in(
                tx,
                None,
                ctx,
                request.member_id,
                book_id,
                Overrides {
                    loan_limit: true,
                    block: true,
                },
            )?;
            Ok(json!({ "loan": loan }))
        }
        "waiver" => {
            tx.execute(
                "SELECT 1 FROM member WHERE id = $1 FOR UPDATE",
                &[&request.member_id],
            )?;
            let amount = request
                .amount_cents
                .ok_or_else(|| Error::Internal("waiver without an amount".into()))?;
            let entry = fines::credit_in(
                tx,
                ctx,
                request.member_id,
                "waiver",
                amount,
                request.reason.as_deref(),
                now,
            )?;
            Ok(json!({ "ledger_entry": entry }))
        }
        "correction" => {
            let field = request.field.as_deref().unwrap_or_default();
            let member = members::find_member(tx, &request.member_id.to_string())?;
            // Librarians manage members, not staff accounts: a correction to a librarian's
            // or an admin's record needs an admin to approve it.
            if member.role != "member" {
                ctx.require(Capability::Administer).map_err(|_| {
                    Error::denied(format!(
                        "{} is a {} account: only an admin may approve a correction to it",
                        member.email, member.role
                    ))
                })?;
            }
            let before = match field {
                "name" => Some(member.name.clone()),
                "email" => Some(member.email.clone()),
                _ => member.phone.clone(),
            };
            let after = corrected_value(field, request.value.as_deref().unwrap_or_default())?;
            // The column name comes from the validated field, never from raw input.
            let sql = match field {
                "name" => "UPDATE member SET name = $2 WHERE id = $1",
                "email" => "UPDATE member SET email = $2 WHERE id = $1",
                _ => "UPDATE member SET phone = $2 WHERE id = $1",
            };
            match tx.execute(sql, &[&request.member_id, &after]) {
                Ok(_) => Ok(json!({ "field": field, "before": before, "after": after })),
                Err(e) if crate::pg::is_unique_violation(&e, "member_email_key") => {
                    Err(Error::refused(
                        Refusal::DuplicateEmail,
                        "that email already belongs to another member",
                    ))
                }
                Err(e) => Err(e.into()),
            }
        }
        other => Err(Error::Internal(format!("unknown request kind {other}"))),
    }
}

fn decide_in(
    tx: &mut Transaction<'_>,
    ctx: &Ctx,
    id: Uuid,
    approve: bool,
    note: Option<&str>,
) -> Result<Request> {
    let request = lock_request(tx, id)?;
    require_may_decide(ctx, &request)?;
    let note = validate::optional_text("note", note, 1000)?;
    let (status, result) = if approve {
        ("approved", Some(apply(tx, ctx, &request)?))
    } else {
        if request.kind == "membership" {
            tx.execute(
                "UPDATE member SET status = 'closed' WHERE id = $1 AND status = 'pending'",
                &[&request.member_id],
            )?;
        }
        ("rejected", None)
    };
    let row = tx.query_one(
        &format!(
            "UPDATE request SET status = $2, decided_by = $3, decided_at = $4, decision_note = $5, result = $6
             WHERE id = $1 RETURNING {REQUEST_COLUMNS}"
        ),
        &[&id, &status, &ctx.actor.name, &ctx.now(), &note, &result],
    )?;
    Ok(request_from_row(&row))
}

/// Approves a request and performs its effect, in one transaction.
pub fn approve(client: &mut Client, ctx: &Ctx, id: Uuid, note: Option<&str>) -> Result<Request> {
    let op = Operation::new(
        "request.approve",
        "request",
        json!({ "request": id, "note": note }),
    );
    audit::run(client, ctx, &op, |tx| {
        let decided = decide_in(tx, ctx, id, true, note)?;
        Ok(Audited::new(
            decided.clone(),
            id,
            json!({ "kind": decided.kind, "result": decided.result }),
        ))
    })
}

/// Rejects a request with a reason.
pub fn reject(client: &mut Client, ctx: &Ctx, id: Uuid, reason: &str) -> Result<Request> {
    let op = Operation::new(
        "request.reject",
        "request",
        json!({ "request": id, "reason": reason }),
    );
    audit::run(client, ctx, &op, |tx| {
        let reason = required_reason(reason)?;
        let decided = decide_in(tx, ctx, id, false, Some(&reason))?;
        Ok(Audited::new(
            decided.clone(),
            id,
            json!({ "kind": decided.kind, "reason": reason }),
        ))
    })
}

/// One decision of a batch.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchOutcome {
    /// Request.
    pub request_id: Uuid,
    /// Member it was about.
    pub member_id: Uuid,
    /// `approved`, `would_approve`, or the error code.
    pub outcome: String,
    /// The error message, if any.
    pub message: Option<String>,
}

/// Approves every pending request of a kind, oldest first, each in its own transaction: one
/// failure does not undo the others. With `dry_run` each decision is made and rolled back.
pub fn approve_all_pending(
    client: &mut Client,
    ctx: &Ctx,
    kind: &str,
    dry_run: bool,
) -> Result<Vec<BatchOutcome>> {
    ctx.require(Capability::Decide)?;
    if !KINDS.contains(&kind) {
        return Err(Error::invalid(
            "invalid_input",
            format!("kind must be one of {}", KINDS.join(", ")),
        ));
    }
    let pending: Vec<(Uuid, Uuid)> = client
        .query(
            "SELECT id, member_id FROM request WHERE status = 'pending' AND kind = $1 ORDER BY filed_at, id",
            &[&kind],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut outcomes = Vec::with_capacity(pending.len());
    for (id, member_id) in pending {
        let result = if dry_run {
            let mut tx = client.transaction()?;
            let r = decide_in(&mut tx, ctx, id, true, None);
            tx.rollback()?;
            r
        } else {
            approve(client, ctx, id, None)
        };
        outcomes.push(match result {
            Ok(_) => BatchOutcome {
                request_id: id,
                member_id,
                outcome: if dry_run { "would_approve" } else { "approved" }.into(),
                message: None,
            },
            Err(e) => BatchOutcome {
                request_id: id,
                member_id,
                outcome: e.code().into(),
                message: Some(e.to_string()),
            },
        });
    }
    Ok(outcomes)
}

/// Lists requests (staff see all; members see those about them).
pub fn list(
    client: &mut Client,
    ctx: &Ctx,
    status: Option<&str>,
    kind: Option<&str>,
    limit: i64,
) -> Result<Vec<Request>> {
    let only_member = if ctx.actor.role.is_staff() || ctx.actor.role == Role::System {
        None
    } else {
        Some(
            ctx.actor
                .member_id
                .ok_or_else(|| Error::denied("sign in with --actor to see your requests"))?,
        )
    };
    Ok(client
        .query(
            &format!(
                "SELECT {REQUEST_COLUMNS} FROM request
                 WHERE ($1::text IS NULL OR status = $1) AND ($2::text IS NULL OR kind = $2)
                   AND ($3::uuid IS NULL OR member_id = $3)
                 ORDER BY filed_at, id LIMIT $4"
            ),
            &[
                &status,
                &kind,
                &only_member,
                &crate::validate::limit(limit, 100_000)?,
            ],
        )?
        .iter()
        .map(request_from_row)
        .collect())
}

/// Expires membership applications pending for longer than `older_than_days` as of `now`;
/// their pending member records are closed.
pub(crate) fn expire_in(
    tx: &mut impl GenericClient,
    now: DateTime<Utc>,
    older_than_days: i64,
    decided_by: &str,
) -> Result<u64> {
    let cutoff = now - chrono::Duration::days(older_than_days);
    let row = tx.query_one(
        "WITH expired AS (
             UPDATE request SET status = 'expired', decided_by = $3, decided_at = $2,
                    decision_note = 'pending for longer than the limit'
             WHERE kind = 'membership' AND status = 'pending' AND filed_at < $1
             RETURNING member_id),
         closed AS (
             UPDATE member SET status = 'closed' WHERE status = 'pending' AND id IN (SELECT member_id FROM expired)
             RETURNING id)
         SELECT (SELECT count(*) FROM expired), (SELECT count(*) FROM closed)",
        &[&cutoff, &now, &decided_by],
    )?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// `libctl requests expire --older-than 30d`.
pub fn expire(client: &mut Client, ctx: &Ctx, older_than_days: i64) -> Result<u64> {
    let op = Operation::new(
        "request.expire",
        "request",
        json!({ "older_than_days": older_than_days }),
    );
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Jobs)?;
        let n = expire_in(tx, ctx.now(), older_than_days, &ctx.actor.name)?;
        Ok(Audited::new(n, "membership", json!({ "expired": n })))
    })
}

/// Finds one request (staff, or the member it is about).
pub fn show(client: &mut Client, ctx: &Ctx, id: Uuid) -> Result<Request> {
    let row = client
        .query_opt(
            &format!("SELECT {REQUEST_COLUMNS} FROM request WHERE id = $1"),
            &[&id],
        )?
        .ok_or_else(|| Error::not_found("request", id.to_string()))?;
    let request = request_from_row(&row);
    ctx.require_self_or(request.member_id, Capability::Decide)?;
    Ok(request)
}
