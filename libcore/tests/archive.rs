//! History in monthly partitions (SPEC §17, issue 26): ended loans move with their notices and
//! leave the balance, the statement and the reports as they were; audit rows move and the seal
//! chain still verifies; a month exported and dropped leaves a verified copy and a schema whose
//! invariants hold; nothing in history changes, and its partitions go away only through the
//! sanctioned path.

use chrono::{DateTime, Duration, Months, Utc};
use libcore::actor::Ctx;
use libcore::archive::{self, Kind};
use libcore::circulation::{self, LoanRef};
use libcore::reports::{self, ReportOptions};
use libcore::{fines, history, notices};
use postgres::Client;

use crate::support::*;

const READER: &str = "reader@example.org";

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn at(ctx: &Ctx, when: DateTime<Utc>) -> Ctx {
    Ctx {
        at: Some(when),
        ..ctx.clone()
    }
}

/// A member with three loans of three titles: one borrowed 40 months ago, sent an overdue
/// notice and returned 6 days late (600 cents, under the block threshold); one borrowed 2 months ago and returned; one open.
struct Library {
    tdb: TestDb,
    c: Client,
    desk: Ctx,
    old_loan: uuid::Uuid,
    old_returned: DateTime<Utc>,
}

fn library() -> Library {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let desk = admin(&mut c);
    add_member(&mut c, READER, "member");
    c.execute(
        "UPDATE member SET created_at = now() - interval '5 years' WHERE email = $1",
        &[&READER],
    )
    .unwrap();
    let books: Vec<String> = (1..=3).map(|n| add_book(&mut c, n, 1)).collect();
    let borrowed = Utc::now() - Months::new(40);
    let old = circulation::borrow(&mut c, &at(&desk, borrowed), READER, &books[0]).unwrap();
    // Overdue on day 17 (due on day 14): a first notice, queued for delivery.
    let notice_day = (borrowed + Duration::days(17)).date_naive();
    let issued = notices::generate(
        &mut c,
        &at(&system(), borrowed + Duration::days(17)),
        notice_day,
        &mut |_| Ok(()),
    )
    .unwrap();
    assert_eq!(issued.len(), 1, "one overdue notice for the old loan");
    let old_returned = borrowed + Duration::days(20);
    circulation::return_loan(&mut c, &at(&desk, old_returned), &LoanRef::Id(old.id)).unwrap();
    let recent = Utc::now() - Months::new(2);
    let second = circulation::borrow(&mut c, &at(&desk, recent), READER, &books[1]).unwrap();
    circulation::return_loan(
        &mut c,
        &at(&desk, recent + Duration::days(3)),
        &LoanRef::Id(second.id),
    )
    .unwrap();
    circulation::borrow(&mut c, &desk, READER, &books[2]).unwrap();
    Library {
        tdb,
        c,
        desk,
        old_loan: old.id,
        old_returned,
    }
}

/// The member's balance, checked against the sum of their statement's entries.
fn balance(c: &mut Client, desk: &Ctx) -> i64 {
    let account = fines::show(c, desk, READER).unwrap();
    let summed: i64 = account.entries.iter().map(|e| e.signed_cents()).sum();
    assert_eq!(account.balance_cents, summed, "{:?}", account.entries);
    account.balance_cents
}

fn outstanding(c: &mut Client, desk: &Ctx) -> i64 {
    reports::summary(c, desk, &ReportOptions::default())
        .unwrap()
        .outstanding_fines_cents
}

fn archive_loans(c: &mut Client, ctx: &Ctx, confirm: bool) -> libcore::Result<archive::Run> {
    let before = archive::months_ago(Utc::now(), archive::LOAN_MONTHS);
    archive::run(c, ctx, Kind::Loans, before, confirm, 2, |_| {})
}

#[test]
fn ended_loans_move_with_their_notices_and_every_figure_stays() {
    let mut l = library();
    let fine = count(&mut l.c, "SELECT fine_cents FROM loan WHERE fine_cents > 0");
    assert_eq!(fine, 600, "6 days late at 100 cents a day");
    let before = (balance(&mut l.c, &l.desk), outstanding(&mut l.c, &l.desk));
    assert_eq!(before, (600, 600));

    let dry = archive_loans(&mut l.c, &system(), false).unwrap();
    assert_eq!((dry.rows, dry.moved), (1, false));
    assert_eq!(
        count(&mut l.c, "SELECT count(*) FROM loan_history"),
        0,
        "a dry run moves nothing"
    );

    let run = archive_loans(&mut l.c, &system(), true).unwrap();
    assert_eq!((run.rows, run.moved), (1, true));
    let month = archive::month_of(l.old_returned);
    assert!(run
        .partitions_made
        .contains(&libcore::db::partition_name("loan_history", month)));
    let moved: (uuid::Uuid, i64) = {
        let r =
            l.c.query_one("SELECT id, fine_cents FROM loan_history", &[])
                .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(moved, (l.old_loan, 600));
    assert_eq!(
        count(&mut l.c, "SELECT count(*) FROM loan"),
        2,
        "the recent and the open loan stay"
    );
    // The notice went with its loan, carrying the delivery it had.
    assert_eq!(count(&mut l.c, "SELECT count(*) FROM notice"), 0);
    let delivery: serde_json::Value =
        l.c.query_one(
            "SELECT delivery FROM notice_history WHERE loan_id = $1 AND kind = 'overdue'",
            &[&l.old_loan],
        )
        .unwrap()
        .get(0);
    assert_eq!(delivery["status"], "queued");
    assert_eq!(count(&mut l.c, "SELECT count(*) FROM notice_delivery"), 0);
    // Balance, statement and reports read the history.
    assert_eq!(
        (balance(&mut l.c, &l.desk), outstanding(&mut l.c, &l.desk)),
        before
    );
    let statement = fines::show(&mut l.c, &l.desk, READER).unwrap();
    assert!(statement
        .entries
        .iter()
        .any(|e| e.loan_id == Some(l.old_loan) && e.title.as_deref() == Some("Book 1")));
    assert_eq!(
        count(
            &mut l.c,
            "SELECT count(*) FROM audit_log WHERE action = 'archive.loans' AND actor = 'system'"
        ),
        1,
        "the batch that moved a loan is audited"
    );
    assert_invariants(&mut l.c);
    // A ledger entry may still name the archived loan; one naming no loan at all is refused
    // (the trigger that stands in for the foreign key, which sees only `loan`).
    {
        let mut tx = l.c.transaction().unwrap();
        let insert = "INSERT INTO account_entry (id, member_id, kind, amount_cents, created_at, loan_id)
                      SELECT gen_random_uuid(), id, 'processing_fee', 100, now(), $1 FROM member WHERE email = $2";
        tx.execute(insert, &[&l.old_loan, &READER]).unwrap();
        let orphan = tx
            .execute(insert, &[&uuid::Uuid::now_v7(), &READER])
            .unwrap_err();
        assert_eq!(
            orphan.code(),
            Some(&postgres::error::SqlState::FOREIGN_KEY_VIOLATION),
            "{orphan}"
        );
        tx.rollback().unwrap();
    }
    // Idempotent: a second run finds nothing left to move.
    assert_eq!(archive_loans(&mut l.c, &system(), true).unwrap().rows, 0);
    // The member has borrowed that title: a review is still allowed.
    let reader = ctx_of(&mut l.c, READER);
    libcore::reviews::add(&mut l.c, &reader, READER, &isbn(1), 5, Some("still here")).unwrap();
}

#[test]
fn archiving_is_for_admins_and_system_only() {
    let mut l = library();
    let librarian = add_member(&mut l.c, "clerk@example.org", "librarian");
    let clerk = ctx_of(&mut l.c, &librarian);
    for confirm in [false, true] {
        let denied = archive_loans(&mut l.c, &clerk, confirm).unwrap_err();
        assert_eq!(denied.code(), "permission_denied");
    }
    assert_eq!(count(&mut l.c, "SELECT count(*) FROM loan_history"), 0);
    let future = archive::run(
        &mut l.c,
        &l.desk,
        Kind::Loans,
        Utc::now() + Duration::days(1),
        true,
        10,
        |_| {},
    )
    .unwrap_err();
    assert_eq!(future.code(), "invalid_date");
    assert_eq!(
        archive_loans(&mut l.c, &l.desk, true).unwrap().rows,
        1,
        "an admin may"
    );
}

#[test]
fn a_month_exported_and_dropped_leaves_a_verified_copy_and_the_balance() {
    let mut l = library();
    archive_loans(&mut l.c, &system(), true).unwrap();
    let month = archive::month_of(l.old_returned);
    let dir = tempfile::tempdir().unwrap();
    // system may export, not drop.
    let denied = archive::export(
        &l.tdb.url,
        &system(),
        "loan_history",
        month,
        dir.path(),
        true,
    )
    .unwrap_err();
    assert_eq!(denied.code(), "permission_denied");
    let bad = archive::export(&l.tdb.url, &l.desk, "loan", month, dir.path(), false).unwrap_err();
    assert_eq!(bad.code(), "invalid_input");
    let before = balance(&mut l.c, &l.desk);
    let export =
        archive::export(&l.tdb.url, &l.desk, "loan_history", month, dir.path(), true).unwrap();
    assert!(export.dropped);
    assert_eq!(export.rows, 2, "the loan and its notice");
    let leaf = libcore::db::partition_name("loan_history", month);
    assert!(export.path.join(format!("{leaf}.copy.zst")).exists());
    assert!(export.path.join("manifest.json").exists());
    let verified = archive::verify_export(&export.path).unwrap();
    assert_eq!(verified.tables, export.tables);
    // A flipped byte is found.
    let file = export.path.join(format!("{leaf}.copy.zst"));
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    assert_eq!(
        archive::verify_export(&export.path).unwrap_err().code(),
        "integrity_check_failed"
    );
    let gone: bool =
        l.c.query_one("SELECT to_regclass($1) IS NULL", &[&leaf])
            .unwrap()
            .get(0);
    assert!(gone, "the month's partition was dropped");
    assert_eq!(count(&mut l.c, "SELECT count(*) FROM loan_history"), 0);
    // The fine stays owed, and the statement says where it came from.
    assert_eq!(balance(&mut l.c, &l.desk), before);
    assert_eq!(outstanding(&mut l.c, &l.desk), before);
    assert_invariants(&mut l.c);
    // The same month again: nothing left to export.
    let again = archive::export(
        &l.tdb.url,
        &l.desk,
        "loan_history",
        month,
        dir.path(),
        false,
    )
    .unwrap_err();
    assert_eq!(again.code(), "not_found");
}

#[test]
fn audit_rows_move_and_the_seal_chain_still_verifies() {
    let mut l = library();
    let old = count(
        &mut l.c,
        "SELECT count(*) FROM audit_log WHERE at < now() - interval '13 months'",
    );
    assert!(
        old >= 4,
        "the old loan's borrow, notice run and return: {old}"
    );
    history::seal(&mut l.c, &system(), None).unwrap();
    let mut exported_before = 0;
    libcore::audit::export(&mut l.c, &l.desk, &Default::default(), &mut |_| {
        exported_before += 1;
        Ok(())
    })
    .unwrap();
    let before = archive::months_ago(Utc::now(), archive::AUDIT_MONTHS);
    let run = archive::run(&mut l.c, &system(), Kind::Audit, before, true, 2, |_| {}).unwrap();
    assert_eq!(run.rows, old);
    assert_eq!(count(&mut l.c, "SELECT count(*) FROM audit_history"), old);
    assert_eq!(
        count(
            &mut l.c,
            "SELECT count(*) FROM audit_log WHERE at < now() - interval '13 months'"
        ),
        0
    );
    // Moving rows changes none of them: the seals still verify, the export still has them.
    history::verify(&mut l.c, &l.desk, None, None).unwrap();
    let mut exported_after = 0;
    libcore::audit::export(&mut l.c, &l.desk, &Default::default(), &mut |_| {
        exported_after += 1;
        Ok(())
    })
    .unwrap();
    let batches = count(
        &mut l.c,
        "SELECT count(*) FROM audit_log WHERE action = 'archive.audit'",
    );
    assert!(batches >= 2, "batches of 2 rows, each audited");
    assert_eq!(exported_after, exported_before + batches);
    // History is append-only on every partition, and its partitions stay.
    archive_loans(&mut l.c, &system(), true).unwrap();
    let leaf: String =
        l.c.query_one(
            "SELECT tableoid::regclass::text FROM audit_history LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    for sql in [
        format!("DELETE FROM {leaf}"),
        format!("UPDATE {leaf} SET actor = 'someone else'"),
        format!("TRUNCATE {leaf}"),
        "DELETE FROM audit_history".to_string(),
        "TRUNCATE audit_history".to_string(),
        format!("DROP TABLE {leaf}"),
        format!("ALTER TABLE audit_history DETACH PARTITION {leaf}"),
        "UPDATE loan_history SET fine_cents = 0".to_string(),
    ] {
        let Err(refused) = l.c.batch_execute(&sql) else {
            panic!("{sql} was allowed");
        };
        assert_eq!(
            refused.code(),
            Some(&postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {refused}"
        );
    }
    // Pruning removes history through the partitions and reseals what it thinned.
    let cut = before - Months::new(1);
    let pruned = history::prune(&mut l.c, &l.desk, cut, true).unwrap();
    assert!(pruned.rows > 0);
    assert_eq!(
        count(
            &mut l.c,
            "SELECT count(*) FROM audit_all WHERE at < now() - interval '14 months'"
        ),
        0
    );
    history::verify(&mut l.c, &l.desk, None, None).unwrap();
}

#[test]
fn the_nightly_makes_the_coming_months_partitions() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let today = Utc::now().date_naive();
    let run = libcore::jobs::nightly(&mut c, &system(), today, false, &mut |_| Ok(())).unwrap();
    let this_month = archive::month_of(Utc::now());
    for table in libcore::db::PARTITIONED {
        for ahead in 0..=archive::MONTHS_AHEAD {
            let name = libcore::db::partition_name(table, this_month + Months::new(ahead));
            assert!(run.partitions_made.contains(&name), "{name}");
        }
    }
    // A second night makes none twice.
    let again = libcore::jobs::nightly(&mut c, &system(), today, false, &mut |_| Ok(())).unwrap();
    assert!(again.partitions_made.is_empty());
    assert_invariants(&mut c);
}
