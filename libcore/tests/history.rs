//! The audit log's seals: the chain is recomputed, and each kind of tampering is found and
//! named by its day.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use libcore::history::{self, Seal};
use libcore::Error;
use postgres::Client;

use crate::support::{admin, system, TestDb};

/// Three past days of audit rows, written with the real times they claim, then sealed.
fn sealed_log() -> (TestDb, Vec<Seal>) {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    for days_ago in [3i64, 2, 1] {
        for n in 0..4 {
            let t = Utc::now() - Duration::days(days_ago) + Duration::minutes(n);
            insert_row(&mut c, t, t, &format!("{{\"n\": {n}}}"));
        }
    }
    let run = history::seal(&mut c, &system(), None).unwrap();
    assert!(run.sealed.len() >= 3, "{run:?}");
    (tdb, run.sealed)
}

fn insert_row(c: &mut Client, at: DateTime<Utc>, recorded_at: DateTime<Utc>, details: &str) {
    c.execute(
        "INSERT INTO audit_log (id, at, recorded_at, actor, actor_role, action, entity_type, outcome, details)
         VALUES ($1, $2, $3, 'desk@example.org', 'librarian', 'loan.borrow', 'loan', 'ok', $4::text::jsonb)",
        &[&libcore::ids::new_id(at), &at, &recorded_at, &details],
    )
    .unwrap();
}

/// What only a superuser can do: change the log with its append-only trigger switched off.
fn as_superuser_past_the_trigger(c: &mut Client, statement: &str, recorded: DateTime<Utc>) {
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
        .unwrap();
    assert_eq!(
        tx.execute(statement, &[&recorded]).unwrap(),
        1,
        "{statement}"
    );
    tx.batch_execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete")
        .unwrap();
    tx.commit().unwrap();
}

fn day_of(c: &mut Client, t: DateTime<Utc>) -> NaiveDate {
    libcore::calendar::Calendar::load(c).unwrap().local_date(t)
}

/// Verify must fail with exit 8 and name `day` as the first that no longer matches.
fn assert_names_day(c: &mut Client, day: NaiveDate, outside: Option<&[Seal]>) {
    let err = history::verify(c, &system(), None, outside).unwrap_err();
    assert_eq!(err.exit_code(), 8, "{err}");
    match err {
        Error::Integrity { violations } => assert!(
            violations[0].ends_with(&day.to_string()),
            "expected {day} first: {violations:?}"
        ),
        other => panic!("not an integrity error: {other}"),
    }
}

#[test]
fn an_untouched_log_verifies_and_sealing_twice_adds_nothing() {
    let (tdb, sealed) = sealed_log();
    let mut c = tdb.client();
    let verified = history::verify(&mut c, &system(), None, Some(&sealed)).unwrap();
    assert_eq!(verified.days, sealed.len());
    assert_eq!(verified.compared_outside, sealed.len());
    let again = history::seal(&mut c, &system(), None).unwrap();
    assert!(again.sealed.is_empty(), "{again:?}");
    // Today is never sealed: it is still being written.
    let today = day_of(&mut c, Utc::now());
    assert!(sealed.iter().all(|s| s.day < today));
    // The chain links each seal to the one before.
    for pair in sealed.windows(2) {
        assert_eq!(pair[1].previous, pair[0].digest);
    }
    assert_eq!(sealed[0].previous, history::GENESIS);
}

#[test]
fn a_row_deleted_by_a_superuser_is_found_and_its_day_named() {
    let (tdb, _) = sealed_log();
    let mut c = tdb.client();
    let recorded: DateTime<Utc> = c
        .query_one(
            "SELECT recorded_at FROM audit_log WHERE action = 'loan.borrow' ORDER BY recorded_at OFFSET 5 LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    as_superuser_past_the_trigger(
        &mut c,
        "DELETE FROM audit_log WHERE recorded_at = $1",
        recorded,
    );
    let day = day_of(&mut c, recorded);
    assert_names_day(&mut c, day, None);
}

#[test]
fn one_changed_byte_of_details_is_found_and_its_day_named() {
    let (tdb, _) = sealed_log();
    let mut c = tdb.client();
    let recorded: DateTime<Utc> = c
        .query_one(
            "SELECT recorded_at FROM audit_log WHERE details = '{\"n\": 2}'::jsonb ORDER BY recorded_at LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    as_superuser_past_the_trigger(
        &mut c,
        "UPDATE audit_log SET details = '{\"n\": 3}'::jsonb WHERE recorded_at = $1",
        recorded,
    );
    let day = day_of(&mut c, recorded);
    assert_names_day(&mut c, day, None);
}

#[test]
fn a_row_backdated_into_a_sealed_day_is_found_and_its_day_named() {
    let (tdb, sealed) = sealed_log();
    let mut c = tdb.client();
    let t = Utc::now() - Duration::days(2) + Duration::seconds(30);
    insert_row(&mut c, t, t, "{\"n\": 99}");
    let day = day_of(&mut c, t);
    assert!(sealed.iter().any(|s| s.day == day));
    assert_names_day(&mut c, day, None);
}

#[test]
fn a_log_rewritten_and_resealed_by_a_superuser_is_caught_by_the_seals_kept_outside() {
    let (tdb, kept) = sealed_log();
    let mut c = tdb.client();
    // The attacker changes the last day's rows and rebuilds its seal consistently.
    let last = kept.last().unwrap().clone();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute(
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete;
         ALTER TABLE audit_seal DISABLE TRIGGER audit_seal_no_update_delete;
         UPDATE audit_log SET actor = 'someone@example.org'
           WHERE recorded_at >= now() - interval '1 day 1 hour' AND action = 'loan.borrow';
         ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete;",
    )
    .unwrap();
    tx.execute("DELETE FROM audit_seal WHERE day = $1", &[&last.day])
        .unwrap();
    tx.batch_execute("ALTER TABLE audit_seal ENABLE TRIGGER audit_seal_no_update_delete")
        .unwrap();
    tx.commit().unwrap();
    history::seal(&mut c, &system(), None).unwrap();
    // The chain inside the database is consistent again...
    history::verify(&mut c, &system(), None, None).unwrap();
    // ...but not with the copy kept outside.
    assert_names_day(&mut c, last.day, Some(&kept));
}

#[test]
fn prune_seals_first_and_leaves_a_chain_that_verifies() {
    let (tdb, _) = sealed_log();
    let mut c = tdb.client();
    let admin = admin(&mut c);
    let cutoff = Utc::now() - Duration::days(2) - Duration::hours(1);
    let pruned = history::prune(&mut c, &admin, cutoff, true).unwrap();
    assert_eq!(pruned.rows, 4);
    let verified = history::verify(&mut c, &system(), None, None).unwrap();
    assert!(verified.days >= 2, "{verified:?}");
    // Rows appearing in a sealed day after the prune are still caught.
    let t = Utc::now() - Duration::days(1) + Duration::seconds(30);
    insert_row(&mut c, t, t, "{\"n\": 7}");
    let day = day_of(&mut c, t);
    assert_names_day(&mut c, day, None);
}

#[test]
fn a_sealed_day_emptied_by_a_superuser_is_found_and_named() {
    let (tdb, sealed) = sealed_log();
    let mut c = tdb.client();
    let t = Utc::now() - Duration::days(2);
    let day = day_of(&mut c, t);
    assert!(sealed.iter().any(|s| s.day == day));
    let tz = libcore::calendar::Calendar::load(&mut c)
        .unwrap()
        .tz
        .name()
        .to_string();
    let mut tx = c.transaction().unwrap();
    tx.batch_execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
        .unwrap();
    let removed = tx
        .execute(
            "DELETE FROM audit_log WHERE (recorded_at AT TIME ZONE $1)::date = $2",
            &[&tz, &day],
        )
        .unwrap();
    assert!(removed > 0);
    tx.batch_execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete")
        .unwrap();
    tx.commit().unwrap();
    assert_names_day(&mut c, day, None);
}
