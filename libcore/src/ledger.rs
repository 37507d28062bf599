//! The ledger (SPEC §16): what a member owes and pays, in integer cents, as typed entries.
//!
//! - `overdue_fine`: the fine stored on each loan (`loan.fine_cents`), which the nightly
//!   accrual recomputes in place; reported here as one entry per fined loan.
//! - `lost_item` and `processing_fee`: charged when a loan is declared lost, keyed by
//!   (loan, kind) so no re-run charges a loan twice.
//! - `payment`, `waiver` and `refund`: credits. A refund is keyed by (loan, kind) too.
//!
//! The balance is one rule, `member_balance_cents` in the schema (V23): fines on loans plus
//! the entries signed by `ledger_signed_cents`. The desk's block check, the hold queue's good
//! standing, `fines show`, payments and the reports all read it.

use chrono::{DateTime, Utc};
use postgres::GenericClient;
use uuid::Uuid;

use crate::error::Result;

/// Kinds that charge the member.
pub const CHARGES: &[&str] = &["overdue_fine", "lost_item", "processing_fee"];
/// Kinds that credit the member.
pub const CREDITS: &[&str] = &["payment", "waiver", "refund"];

/// One ledger entry, as `fines show` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Entry {
    /// `overdue_fine`, `lost_item`, `processing_fee`, `payment`, `waiver` or `refund`.
    pub kind: String,
    /// Always positive; [`Entry::signed_cents`] gives its effect on the balance.
    pub amount_cents: i64,
    /// The loan it belongs to, for fines, lost-item charges and refunds.
    pub loan_id: Option<Uuid>,
    /// The title of that loan.
    pub title: Option<String>,
    /// When it was written; a fine is dated by its loan's due date.
    pub at: DateTime<Utc>,
    /// A waiver's reason.
    pub note: Option<String>,
}

impl Entry {
    /// The entry's effect on the balance: charges add, credits subtract.
    pub fn signed_cents(&self) -> i64 {
        if CHARGES.contains(&self.kind.as_str()) {
            self.amount_cents
        } else {
            -self.amount_cents
        }
    }
}

/// A whole number with its thousands grouped: `1,234,567`.
pub fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Cents as the library shows money: `1,234.56 EUR`, `-0.50 EUR`.
pub fn format_cents(cents: i64, currency: &str) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = i64::try_from(cents.unsigned_abs()).unwrap_or(i64::MAX);
    format!("{sign}{}.{:02} {currency}", thousands(abs / 100), abs % 100)
}

/// The member's balance by the one rule (`member_balance_cents`).
pub fn balance(tx: &mut impl GenericClient, member_id: Uuid) -> Result<i64> {
    Ok(tx
        .query_one("SELECT member_balance_cents($1)", &[&member_id])?
        .get(0))
}

/// Every entry of a member's ledger, oldest first (fines by due date).
pub fn entries(tx: &mut impl GenericClient, member_id: Uuid) -> Result<Vec<Entry>> {
    let rows = tx.query(
        "SELECT 'overdue_fine', l.fine_cents, l.id, b.title, l.due_at, NULL::text
         FROM loan_all l JOIN book b ON b.id = l.book_id
         WHERE l.member_id = $1 AND l.fine_cents > 0
         UNION ALL
         -- Fines of loans whose history month was exported and dropped: the balance keeps them
         -- (member_archived_fines), so the statement does too, as one line.
         SELECT 'overdue_fine', (f.fine_cents - coalesce(h.cents, 0))::bigint, NULL, NULL, m.created_at,
                'fines of loans whose history was exported and dropped'
         FROM member_archived_fines f JOIN member m ON m.id = f.member_id
         LEFT JOIN (SELECT sum(fine_cents) AS cents FROM loan_history
                    WHERE member_id = $1 AND fine_cents > 0) h ON true
         WHERE f.member_id = $1 AND f.fine_cents > coalesce(h.cents, 0)
         UNION ALL
         SELECT a.kind, a.amount_cents, a.loan_id, b.title, a.created_at, a.note
         FROM account_entry a
         LEFT JOIN loan_all l ON l.id = a.loan_id LEFT JOIN book b ON b.id = l.book_id
         WHERE a.member_id = $1
         ORDER BY 5, 1",
        &[&member_id],
    )?;
    Ok(rows
        .iter()
        .map(|r| Entry {
            kind: r.get(0),
            amount_cents: r.get(1),
            loan_id: r.get(2),
            title: r.get(3),
            at: r.get(4),
            note: r.get(5),
        })
        .collect())
}

/// Writes a loan's charge or refund once: a second call for the same (loan, kind) writes
/// nothing and returns false. Zero amounts write nothing.
pub(crate) fn write_keyed(
    tx: &mut impl GenericClient,
    member_id: Uuid,
    loan_id: Uuid,
    kind: &str,
    amount_cents: i64,
    at: DateTime<Utc>,
) -> Result<bool> {
    if amount_cents <= 0 {
        return Ok(false);
    }
    let written = tx.execute(
        "INSERT INTO account_entry (id, member_id, kind, amount_cents, created_at, loan_id)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (loan_id, kind) WHERE loan_id IS NOT NULL DO NOTHING",
        &[
            &crate::ids::new_id(at),
            &member_id,
            &kind,
            &amount_cents,
            &at,
            &loan_id,
        ],
    )?;
    Ok(written == 1)
}

/// How much of one charge was waived, by the ledger's settlement rule: payments and waivers
/// settle the member's charges oldest first (a fine dated by its loan's due date), each
/// credit first the charges already made when it was written; a refund cancels its own loan's
/// replacement charge.
///
/// A lost item that comes back refunds its replacement charge less the part of it that was
/// waived: never more than was charged, never less than was paid towards it.
pub fn waived_part(entries: &[Entry], loan_id: Uuid, kind: &str) -> i64 {
    struct Charge<'a> {
        entry: &'a Entry,
        open: i64,
        waived: i64,
    }
    let mut charges: Vec<Charge> = entries
        .iter()
        .filter(|e| CHARGES.contains(&e.kind.as_str()))
        .map(|e| Charge {
            entry: e,
            open: e.amount_cents,
            waived: 0,
        })
        .collect();
    charges.sort_by_key(|c| (c.entry.at, c.entry.kind.clone()));
    for refund in entries.iter().filter(|e| e.kind == "refund") {
        if let Some(c) = charges
            .iter_mut()
            .find(|c| c.entry.kind == "lost_item" && c.entry.loan_id == refund.loan_id)
        {
            c.open -= refund.amount_cents.min(c.open);
        }
    }
    let mut credits: Vec<&Entry> = entries
        .iter()
        .filter(|e| e.kind == "payment" || e.kind == "waiver")
        .collect();
    credits.sort_by_key(|e| e.at);
    for credit in credits {
        let mut left = credit.amount_cents;
        // Charges made by the credit's time first, then any later ones.
        for made_before in [true, false] {
            for c in charges
                .iter_mut()
                .filter(|c| (c.entry.at <= credit.at) == made_before)
            {
                let settled = left.min(c.open);
                c.open -= settled;
                if credit.kind == "waiver" {
                    c.waived += settled;
                }
                left -= settled;
            }
        }
    }
    charges
        .iter()
        .filter(|c| c.entry.loan_id == Some(loan_id) && c.entry.kind == kind)
        .map(|c| c.waived)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, cents: i64, loan: Option<Uuid>, minute: u32) -> Entry {
        Entry {
            kind: kind.into(),
            amount_cents: cents,
            loan_id: loan,
            title: None,
            at: DateTime::parse_from_rfc3339(&format!("2026-01-01T10:{minute:02}:00Z"))
                .unwrap()
                .with_timezone(&Utc),
            note: None,
        }
    }

    #[test]
    fn money_is_grouped_signed_and_in_the_library_currency() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(-1000), "-1,000");
        assert_eq!(format_cents(1250, "EUR"), "12.50 EUR");
        assert_eq!(format_cents(-300, "USD"), "-3.00 USD");
        assert_eq!(format_cents(-50, "EUR"), "-0.50 EUR");
        assert_eq!(format_cents(57_341_991, "EUR"), "573,419.91 EUR");
    }

    #[test]
    fn a_waiver_after_the_bill_waives_it_oldest_first() {
        let loan = Uuid::from_u128(1);
        let e = [
            entry("overdue_fine", 600, Some(loan), 0),
            entry("lost_item", 2500, Some(loan), 5),
            entry("processing_fee", 500, Some(loan), 5),
            entry("waiver", 1000, None, 10),
        ];
        // 600 settles the fine, the other 400 the replacement charge.
        assert_eq!(waived_part(&e, loan, "lost_item"), 400);
        assert_eq!(waived_part(&e, loan, "processing_fee"), 0);
    }

    #[test]
    fn payments_waive_nothing_and_an_earlier_waiver_settles_earlier_charges() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let e = [
            entry("overdue_fine", 300, Some(a), 0),
            entry("waiver", 300, None, 1),
            entry("lost_item", 2500, Some(b), 5),
            entry("payment", 2500, None, 10),
        ];
        assert_eq!(waived_part(&e, b, "lost_item"), 0);
        assert_eq!(waived_part(&e, a, "overdue_fine"), 300);
    }
}
