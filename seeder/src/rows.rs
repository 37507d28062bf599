//! How each generated row becomes a binary COPY row or a CSV record. One place per table, so
//! the database load and `--csv` can never disagree.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::copy::RowEncoder;
use crate::generate::{
    AccountRow, AuditRow, BookRow, BookText, HoldRow, ItemRow, LoanRow, MemberRow, MemberText,
    Plan, RequestRow, ReviewRow,
};

/// Column lists, in COPY order; also the CSV headers.
pub const BOOK_COLUMNS: &[&str] = &[
    "id",
    "isbn",
    "title",
    "author",
    "genre",
    "category",
    "total_copies",
    "available_copies",
    "created_at",
    "rating_count",
    "rating_sum",
    "times_borrowed",
];
/// Member columns.
pub const MEMBER_COLUMNS: &[&str] = &[
    "id",
    "name",
    "email",
    "phone",
    "role",
    "category",
    "status",
    "created_at",
    "expires_at",
];
/// Loan columns.
pub const LOAN_COLUMNS: &[&str] = &[
    "id",
    "book_id",
    "member_id",
    "borrowed_at",
    "due_at",
    "returned_at",
    "renewals",
    "fine_cents_per_day",
    "grace_days",
    "max_fine_cents",
    "fine_cents",
    "fine_assessed_on",
    "item_id",
    "end_state",
];
/// Item columns.
pub const ITEM_COLUMNS: &[&str] = &[
    "id",
    "book_id",
    "barcode",
    "status",
    "location",
    "call_number",
    "price_cents",
    "created_at",
    "status_changed_at",
];
/// Hold columns.
pub const HOLD_COLUMNS: &[&str] = &[
    "id",
    "book_id",
    "member_id",
    "placed_at",
    "status",
    "item_id",
    "ready_at",
    "pickup_by",
    "cancelled_at",
    "fulfilled_at",
    "expired_at",
];
/// Ledger columns.
pub const ACCOUNT_COLUMNS: &[&str] = &[
    "id",
    "member_id",
    "kind",
    "amount_cents",
    "created_at",
    "note",
    "loan_id",
];
/// Audit columns.
pub const AUDIT_COLUMNS: &[&str] = &[
    "id",
    "at",
    "recorded_at",
    "actor",
    "actor_role",
    "action",
    "entity_type",
    "entity_id",
    "outcome",
    "details",
];

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn opt_ts(t: Option<DateTime<Utc>>) -> String {
    t.map(ts).unwrap_or_default()
}

/// Appends one book.
pub fn encode_book(buf: &mut Vec<u8>, b: &BookRow, text: &BookText) {
    RowEncoder::new(buf, 12)
        .uuid(b.id)
        .text(&text.isbn)
        .text(&text.title)
        .text(&text.author)
        .text(b.genre())
        .text(b.category())
        .int4(b.total_copies)
        .int4(b.available_copies)
        .timestamptz(b.created_at)
        .int4(b.rating_count)
        .int8(b.rating_sum)
        .int8(b.times_borrowed);
}

/// One book as CSV.
pub fn book_record(b: &BookRow, text: BookText) -> Vec<String> {
    vec![
        b.id.to_string(),
        text.isbn,
        text.title,
        text.author,
        b.genre().to_string(),
        b.category().to_string(),
        b.total_copies.to_string(),
        b.available_copies.to_string(),
        ts(b.created_at),
        b.rating_count.to_string(),
        b.rating_sum.to_string(),
        b.times_borrowed.to_string(),
    ]
}

/// Appends one member.
pub fn encode_member(buf: &mut Vec<u8>, m: &MemberRow, text: &MemberText) {
    RowEncoder::new(buf, 9)
        .uuid(m.id)
        .text(&text.name)
        .text(&text.email)
        .opt_text(text.phone.as_deref())
        .text(m.role)
        .text(m.category)
        .text(m.status)
        .timestamptz(m.created_at)
        .opt_timestamptz(m.expires_at);
}

/// One member as CSV.
pub fn member_record(m: &MemberRow, text: MemberText) -> Vec<String> {
    vec![
        m.id.to_string(),
        text.name,
        text.email,
        text.phone.unwrap_or_default(),
        m.role.to_string(),
        m.category.to_string(),
        m.status.to_string(),
        ts(m.created_at),
        opt_ts(m.expires_at),
    ]
}

/// Appends one loan.
pub fn encode_loan(buf: &mut Vec<u8>, plan: &Plan, l: &LoanRow) {
    RowEncoder::new(buf, 14)
        .uuid(l.id)
        .uuid(plan.books[l.book as usize].id)
        .uuid(plan.members[l.member as usize].id)
        .timestamptz(l.borrowed_at)
        .timestamptz(l.due_at)
        .opt_timestamptz(l.returned_at)
        .int4(l.renewals)
        .int8(l.policy.fine_cents_per_day)
        .int4(l.policy.grace_days)
        .int8(l.policy.max_fine_cents)
        .int8(l.fine_cents)
        .opt_date(l.fine_assessed_on)
        .uuid(plan.item_id(l.item))
        .opt_text(l.returned_at.map(|_| l.end_state));
}

/// Appends one item.
pub fn encode_item(buf: &mut Vec<u8>, plan: &Plan, i: &ItemRow) {
    RowEncoder::new(buf, 9)
        .uuid(i.id)
        .uuid(plan.books[i.book as usize].id)
        .text(&i.barcode)
        .text(i.status)
        .text(i.location)
        .text(&i.call_number)
        .int8(i.price_cents)
        .timestamptz(i.created_at)
        .timestamptz(i.status_changed_at);
}

/// One item as CSV.
pub fn item_record(plan: &Plan, i: &ItemRow) -> Vec<String> {
    vec![
        i.id.to_string(),
        plan.books[i.book as usize].id.to_string(),
        i.barcode.clone(),
        i.status.to_string(),
        i.location.to_string(),
        i.call_number.clone(),
        i.price_cents.to_string(),
        ts(i.created_at),
        ts(i.status_changed_at),
    ]
}

/// One loan as CSV.
pub fn loan_record(plan: &Plan, l: &LoanRow) -> Vec<String> {
    vec![
        l.id.to_string(),
        plan.books[l.book as usize].id.to_string(),
        plan.members[l.member as usize].id.to_string(),
        ts(l.borrowed_at),
        ts(l.due_at),
        opt_ts(l.returned_at),
        l.renewals.to_string(),
        l.policy.fine_cents_per_day.to_string(),
        l.policy.grace_days.to_string(),
        l.policy.max_fine_cents.to_string(),
        l.fine_cents.to_string(),
        l.fine_assessed_on
            .map(|d| d.to_string())
            .unwrap_or_default(),
        plan.item_id(l.item).to_string(),
        l.returned_at
            .map(|_| l.end_state.to_string())
            .unwrap_or_default(),
    ]
}

/// Appends one ledger entry.
pub fn encode_account(buf: &mut Vec<u8>, plan: &Plan, a: &AccountRow) {
    RowEncoder::new(buf, 7)
        .uuid(a.id)
        .uuid(plan.members[a.member as usize].id)
        .text(a.kind)
        .int8(a.amount_cents)
        .timestamptz(a.created_at)
        .null()
        .opt_uuid(a.loan);
}

/// One ledger entry as CSV.
pub fn account_record(plan: &Plan, a: &AccountRow) -> Vec<String> {
    vec![
        a.id.to_string(),
        plan.members[a.member as usize].id.to_string(),
        a.kind.to_string(),
        a.amount_cents.to_string(),
        ts(a.created_at),
        String::new(),
        a.loan.map(|l| l.to_string()).unwrap_or_default(),
    ]
}

/// Appends one audit row.
pub fn encode_audit(buf: &mut Vec<u8>, a: &AuditRow) {
    let entity_id = a.entity_id.map(|id| id.to_string());
    RowEncoder::new(buf, 10)
        .uuid(a.id)
        .timestamptz(a.at)
        .timestamptz(a.at)
        .text(&a.actor)
        .text(a.actor_role)
        .text(a.action)
        .text(a.entity_type)
        .opt_text(entity_id.as_deref())
        .text(a.outcome)
        .jsonb(&a.details);
}

/// One audit row as CSV.
pub fn audit_record(a: &AuditRow) -> Vec<String> {
    vec![
        a.id.to_string(),
        ts(a.at),
        ts(a.at),
        a.actor.clone(),
        a.actor_role.to_string(),
        a.action.to_string(),
        a.entity_type.to_string(),
        a.entity_id.map(|id| id.to_string()).unwrap_or_default(),
        a.outcome.to_string(),
        a.details.clone(),
    ]
}

/// Request columns.
pub const REQUEST_COLUMNS: &[&str] = &[
    "id",
    "kind",
    "member_id",
    "amount_cents",
    "field",
    "value",
    "reason",
    "filed_by",
    "filed_at",
];

/// Appends one pending request.
pub fn encode_request(buf: &mut Vec<u8>, plan: &Plan, r: &RequestRow) {
    let mut e = RowEncoder::new(buf, 9);
    e.uuid(r.id)
        .text(r.kind)
        .uuid(plan.members[r.member as usize].id);
    match r.amount_cents {
        Some(a) => e.int8(a),
        None => e.null(),
    };
    e.opt_text(r.field)
        .opt_text(r.value.as_deref())
        .opt_text(r.reason.as_deref())
        .text(&r.filed_by)
        .timestamptz(r.filed_at);
}

/// One pending request as CSV.
pub fn request_record(plan: &Plan, r: &RequestRow) -> Vec<String> {
    vec![
        r.id.to_string(),
        r.kind.to_string(),
        plan.members[r.member as usize].id.to_string(),
        r.amount_cents.map(|a| a.to_string()).unwrap_or_default(),
        r.field.unwrap_or_default().to_string(),
        r.value.clone().unwrap_or_default(),
        r.reason.clone().unwrap_or_default(),
        r.filed_by.clone(),
        ts(r.filed_at),
    ]
}

/// Review columns.
pub const REVIEW_COLUMNS: &[&str] = &[
    "id",
    "member_id",
    "book_id",
    "rating",
    "text",
    "created_at",
    "updated_at",
];

/// Appends one review.
pub fn encode_review(buf: &mut Vec<u8>, plan: &Plan, r: &ReviewRow) {
    RowEncoder::new(buf, 7)
        .uuid(r.id)
        .uuid(plan.members[r.member as usize].id)
        .uuid(plan.books[r.book as usize].id)
        .int2(r.rating)
        .opt_text(r.text.as_deref())
        .timestamptz(r.created_at)
        .timestamptz(r.created_at);
}

/// One review as CSV.
pub fn review_record(plan: &Plan, r: &ReviewRow) -> Vec<String> {
    vec![
        r.id.to_string(),
        plan.members[r.member as usize].id.to_string(),
        plan.books[r.book as usize].id.to_string(),
        r.rating.to_string(),
        r.text.clone().unwrap_or_default(),
        ts(r.created_at),
        ts(r.created_at),
    ]
}

/// A hold's end time in the column its status names: cancelled, fulfilled, expired.
fn hold_ends(h: &HoldRow) -> [Option<DateTime<Utc>>; 3] {
    let at = |status| h.ended_at.filter(|_| h.status == status);
    [at("cancelled"), at("fulfilled"), at("expired")]
}

/// Appends one hold.
pub fn encode_hold(buf: &mut Vec<u8>, plan: &Plan, h: &HoldRow) {
    let [cancelled, fulfilled, expired] = hold_ends(h);
    let mut row = RowEncoder::new(buf, 11);
    row.uuid(h.id)
        .uuid(plan.books[h.book as usize].id)
        .uuid(plan.members[h.member as usize].id)
        .timestamptz(h.placed_at)
        .text(h.status);
    match h.item {
        Some(item) => row.uuid(plan.item_id(item)),
        None => row.null(),
    };
    row.opt_timestamptz(h.ready_at)
        .opt_date(h.pickup_by)
        .opt_timestamptz(cancelled)
        .opt_timestamptz(fulfilled)
        .opt_timestamptz(expired);
}

/// One hold as CSV.
pub fn hold_record(plan: &Plan, h: &HoldRow) -> Vec<String> {
    let [cancelled, fulfilled, expired] = hold_ends(h);
    vec![
        h.id.to_string(),
        plan.books[h.book as usize].id.to_string(),
        plan.members[h.member as usize].id.to_string(),
        ts(h.placed_at),
        h.status.to_string(),
        h.item
            .map(|i| plan.item_id(i).to_string())
            .unwrap_or_default(),
        opt_ts(h.ready_at),
        h.pickup_by.map(|d| d.to_string()).unwrap_or_default(),
        opt_ts(cancelled),
        opt_ts(fulfilled),
        opt_ts(expired),
    ]
}
