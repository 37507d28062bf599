//! The library's running totals (V26), so `report summary` adds up a few rows instead of
//! scanning every title, member and loan.
//!
//! Statement triggers on `book`, `member`, `loan`, `member_archived_fines` and
//! `account_entry` append one row of differences to `library_tally` per statement that changes
//! a total. Appending never waits on another writer, where one counter row would queue every
//! desk behind it. The nightly rollup folds the rows into one; a bulk load (seed, restore)
//! drops the triggers with the other keys (`bulk::capture_and_drop`) and sets the tally
//! itself; `db check` compares the total with a recount.

use postgres::GenericClient;

use crate::error::Result;

/// The totals the tally keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Titles.
    pub titles: i64,
    /// Copies owned.
    pub copies: i64,
    /// Copies on the shelf.
    pub available_copies: i64,
    /// Members whose status is `active`.
    pub active_members: i64,
    /// Loans not yet ended.
    pub open_loans: i64,
    /// Fines stored on the loans of the hot table (frozen, assessed).
    pub loan_fine_cents: i64,
    /// Fines of the loans moved to history.
    pub archived_fine_cents: i64,
    /// The ledger: charges less payments, waivers and refunds.
    pub ledger_cents: i64,
}

fn from_row(row: &postgres::Row) -> Totals {
    Totals {
        titles: row.get(0),
        copies: row.get(1),
        available_copies: row.get(2),
        active_members: row.get(3),
        open_loans: row.get(4),
        loan_fine_cents: row.get(5),
        archived_fine_cents: row.get(6),
        ledger_cents: row.get(7),
    }
}

/// The totals as the tally keeps them: the sum of its rows.
pub fn totals(client: &mut impl GenericClient) -> Result<Totals> {
    Ok(from_row(
        &client.query_one("SELECT * FROM library_tally_total()", &[])?,
    ))
}

/// The totals counted from the tables themselves (a scan of each).
pub fn recount(client: &mut impl GenericClient) -> Result<Totals> {
    Ok(from_row(
        &client.query_one("SELECT * FROM library_tally_recount()", &[])?,
    ))
}

/// Folds the tally's rows into one; returns how many it folded. Safe beside writers: a row
/// appended by a transaction still open stays for the next fold.
pub fn fold_in(tx: &mut impl GenericClient) -> Result<i64> {
    Ok(tx.query_one("SELECT library_tally_fold()", &[])?.get(0))
}

/// Sets the tally to the recount, after a bulk load that ran without its triggers.
pub fn reset_in(tx: &mut impl GenericClient) -> Result<()> {
    tx.batch_execute("SELECT library_tally_reset()")?;
    Ok(())
}
