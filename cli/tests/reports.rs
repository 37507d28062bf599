//! Reports, fines and the nightly job through the binary, checked against independent SQL on
//! a seeded library.

use crate::support::*;
use crate::util::*;

const AS_OF: &str = "2026-01-15";

fn seeded() -> TestDb {
    let db = TestDb::new();
    Libctl::new(&db)
        .args(["seed", "--scenario", "minimal", "--as-of", AS_OF])
        .run();
    db
}

fn report(db: &TestDb, args: &[&str]) -> serde_json::Value {
    Libctl::new(db)
        .args(["report"])
        .args(args)
        .args(["--as-of", "2026-01-14T23:00:00Z", "--format", "json"])
        // --quiet keeps the overdue tier summary off stderr, so stderr must stay empty.
        .args(["--quiet"])
        .run()
        .json()
}

#[test]
fn reports_agree_with_independent_sql() {
    let db = seeded();
    let now = "'2026-01-14T23:00:00Z'::timestamptz";
    let summary = report(&db, &["summary"]);
    // The summary reads the running totals (V26); the seed set them, the tables are the truth.
    assert_eq!(summary["books"], count(&db, "SELECT count(*) FROM book"));
    assert_eq!(
        summary["copies"],
        count(&db, "SELECT sum(total_copies)::bigint FROM book")
    );
    assert_eq!(
        summary["available_copies"],
        count(&db, "SELECT sum(available_copies)::bigint FROM book")
    );
    assert_eq!(
        summary["active_members"],
        count(&db, "SELECT count(*) FROM member WHERE status = 'active'")
    );
    assert_eq!(
        summary["open_loans"],
        count(&db, "SELECT count(*) FROM loan WHERE returned_at IS NULL")
    );
    assert_eq!(
        summary["overdue_loans"],
        count(
            &db,
            &format!("SELECT count(*) FROM loan WHERE returned_at IS NULL AND due_at < {now}")
        )
    );

    let overdue = report(&db, &["overdue"]);
    let rows = overdue.as_array().unwrap();
    let expected = count(
        &db,
        &format!("SELECT count(*) FROM loan WHERE returned_at IS NULL AND (due_at AT TIME ZONE 'UTC')::date < ({now} AT TIME ZONE 'UTC')::date"),
    );
    assert_eq!(rows.len() as i64, expected);
    assert!(!rows.is_empty(), "the seeded library has overdue loans");
    for row in rows {
        let days = row["days_overdue"].as_i64().unwrap();
        let tier = row["tier"].as_str().unwrap();
        assert_eq!(
            tier,
            match days {
                1..=3 => "1-3",
                4..=7 => "4-7",
                _ => "8+",
            }
        );
        // The fine shown is the Rust rule's fine for that loan.
        let loan_id: uuid::Uuid = row["loan_id"].as_str().unwrap().parse().unwrap();
        let mut c = db.client();
        let r = c.query_one("SELECT due_at, fine_cents_per_day, grace_days, max_fine_cents FROM loan WHERE id = $1", &[&loan_id]).unwrap();
        let policy = libcore::fines::FinePolicy {
            fine_cents_per_day: r.get(1),
            grace_days: r.get(2),
            max_fine_cents: r.get(3),
        };
        let calendar = libcore::calendar::Calendar::load(&mut c).unwrap();
        let at = chrono::DateTime::parse_from_rfc3339("2026-01-14T23:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            row["fine_cents"].as_i64().unwrap(),
            libcore::fines::fine_cents(&policy, r.get(0), at, &calendar)
        );
    }

    // Trends: the seeded rollup equals a live recount.
    let trends = report(
        &db,
        &["trends", "--from", "2025-02-01", "--to", "2025-12-31"],
    );
    let months = trends.as_array().unwrap();
    assert_eq!(months.len(), 11);
    let loans_2025: i64 = months.iter().map(|m| m["loans"].as_i64().unwrap()).sum();
    assert_eq!(
        loans_2025,
        count(&db, "SELECT count(*) FROM loan WHERE borrowed_at >= '2025-02-01' AND borrowed_at < '2026-01-01'")
    );
    let june = months.iter().find(|m| m["month"] == "2025-06-01").unwrap();
    assert_eq!(june["active_members"], count(&db, "SELECT count(DISTINCT member_id) FROM loan WHERE borrowed_at >= '2025-06-01' AND borrowed_at < '2025-07-01'"));
    assert_eq!(june["returns"], count(&db, "SELECT count(*) FROM loan WHERE returned_at >= '2025-06-01' AND returned_at < '2025-07-01'"));
    assert_eq!(june["late_returns"], count(&db, "SELECT count(*) FROM loan WHERE returned_at >= '2025-06-01' AND returned_at < '2025-07-01' AND returned_at > due_at"));

    let popular = report(
        &db,
        &[
            "popular",
            "--from",
            "2025-01-01",
            "--to",
            "2025-12-31",
            "--limit",
            "5",
        ],
    );
    let top = &popular.as_array().unwrap()[0];
    let top_count = count(&db, "SELECT max(n) FROM (SELECT count(*) AS n FROM loan WHERE borrowed_at >= '2025-01-01' AND borrowed_at < '2026-01-01' GROUP BY book_id) t");
    assert_eq!(top["loans"], top_count);
    assert_eq!(top["rank"], 1);
    // The whole ranking, ties by id, equals a recount: ranked before the join, nothing lost.
    let recount = |column: &str| -> Vec<(String, i64)> {
        db.client()
            .query(
                &format!(
                    "SELECT {column}::text, count(*) AS n FROM loan
                     WHERE borrowed_at >= '2025-01-01' AND borrowed_at < '2026-01-01'
                     GROUP BY {column} ORDER BY n DESC, {column} LIMIT 5"
                ),
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
    };
    let ranking = |rows: &serde_json::Value| -> Vec<(String, i64)> {
        rows.as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, r)| {
                assert_eq!(r["rank"], i as i64 + 1);
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["loans"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(ranking(&popular), recount("book_id"));
    let top_members = report(
        &db,
        &[
            "top-members",
            "--from",
            "2025-01-01",
            "--to",
            "2025-12-31",
            "--limit",
            "5",
        ],
    );
    assert_eq!(ranking(&top_members), recount("member_id"));

    let fines = report(&db, &["fines"]);
    let total = sum_of(&fines, "balance_cents");
    assert!(total > 0);
    assert_eq!(total, summary["outstanding_fines_cents"].as_i64().unwrap());

    let risk = report(&db, &["risk"]);
    for row in risk.as_array().unwrap() {
        let (loans, overdue) = (
            row["loans"].as_i64().unwrap(),
            row["overdue_loans"].as_i64().unwrap(),
        );
        assert_eq!(row["risk"], libcore::reports::risk_level(loans, overdue));
    }
    let inventory = report(&db, &["inventory"]);
    // Never-lent items, counted without the loan history where an item's times show it,
    // equal a recount against every loan.
    let never_lent = sum_of(&inventory, "never_borrowed_items");
    assert!(never_lent > 0);
    let flagged: Vec<String> = inventory
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["book_id"].as_str().unwrap().to_string())
        .collect();
    let recount: i64 = db
        .client()
        .query_one(
            "SELECT count(*) FROM item i WHERE i.book_id::text = ANY($1) AND i.status <> 'withdrawn'
               AND NOT EXISTS (SELECT 1 FROM loan_all l WHERE l.item_id = i.id)",
            &[&flagged],
        )
        .unwrap()
        .get(0);
    assert_eq!(never_lent, recount);
    let never = inventory
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "never_borrowed")
        .count() as i64;
    assert_eq!(
        never,
        count(&db, "SELECT count(*) FROM book b WHERE NOT EXISTS (SELECT 1 FROM loan l WHERE l.book_id = b.id) AND NOT (total_copies > 0 AND available_copies = 0) AND NOT (total_copies >= 2 AND available_copies = 1)")
    );
}

#[test]
fn csv_and_ndjson_reports_stream_and_members_are_denied() {
    let db = seeded();
    let csv = Libctl::new(&db)
        .args(["report", "overdue", "--format", "csv"])
        .stderr_contains("overdue per tier: 1-3 days ")
        .run();
    assert!(csv.stdout().starts_with(
        "loan_id,member_id,name,email,phone,title,due_at,days_overdue,tier,fine_cents"
    ));
    let nd = Libctl::new(&db)
        .args(["report", "risk", "--format", "ndjson", "--limit", "7"])
        .run();
    assert_eq!(nd.stdout().lines().count(), 7);
    let member: String = db.client().query_one("SELECT email FROM member WHERE role = 'member' AND status = 'active' AND expires_at > now() LIMIT 1", &[]).unwrap().get(0);
    Libctl::new(&db)
        .actor(&member)
        .args(["report", "summary"])
        .status(5)
        .run();
    Libctl::new(&db)
        .args([
            "report",
            "popular",
            "--from",
            "2025-05-01",
            "--to",
            "2025-04-01",
        ])
        .status(7)
        .run();
}

#[test]
fn nightly_in_cron_json_summary_metrics_and_exit_codes() {
    let db = seeded();
    let dir = tempfile::tempdir().unwrap();
    let metrics = dir.path().join("libctl.prom");
    let notices = dir.path().join("notices.csv");
    let run = Libctl::new(&db)
        .args([
            "nightly",
            "--as-of",
            "2026-01-14",
            "--summary-json",
            "--format",
            "csv",
            "--metrics-file",
        ])
        .arg_path(&metrics)
        .args(["--notices-out"])
        .arg_path(&notices)
        .run();
    assert_eq!(
        run.stdout().lines().count(),
        1,
        "one JSON line: {}",
        run.stdout()
    );
    let summary: serde_json::Value = serde_json::from_str(run.stdout().trim()).unwrap();
    let issued = summary["notices_issued"].as_u64().unwrap();
    assert!(issued > 0);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("libctl_nightly_success 1"));
    assert!(text.contains(&format!("libctl_nightly_notices_issued {issued}")));
    assert!(text.contains("libctl_nightly_last_success_timestamp_seconds"));
    assert_eq!(
        std::fs::read_to_string(&notices).unwrap().lines().count() as u64,
        issued + 1
    );

    let again = Libctl::new(&db)
        .args(["nightly", "--as-of", "2026-01-14", "--summary-json"])
        .run();
    let again: serde_json::Value = serde_json::from_str(again.stdout().trim()).unwrap();
    assert_eq!(again["notices_issued"], 0);

    // Another run holding the lock: exit 4, and the metrics file says the run failed.
    let mut holder = db.client();
    let mut tx = holder.transaction().unwrap();
    tx.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&libcore::fines::JOB_LOCK_KEY],
    )
    .unwrap();
    let busy = Libctl::new(&db)
        .args(["nightly", "--metrics-file"])
        .arg_path(&metrics)
        .status(4)
        .run();
    assert!(busy.stderr().contains("error[job_already_running]"));
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("libctl_nightly_success 0"));
    assert!(
        text.contains("libctl_nightly_last_success_timestamp_seconds"),
        "the last success is kept"
    );
    tx.rollback().unwrap();
    Libctl::new(&db).args(["db", "check"]).run();
}

#[test]
fn fines_show_json_has_the_contract_fields() {
    let db = seeded();
    let email: String = db
        .client()
        .query_one(
            "SELECT m.email FROM member m JOIN loan l ON l.member_id = m.id WHERE l.fine_cents > 0 AND l.returned_at IS NOT NULL LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    let account = Libctl::new(&db)
        .actor(ADMIN)
        .args(["fines", "show", "--member", &email, "--format", "json"])
        .run()
        .json();
    for key in [
        "member",
        "loans",
        "payments_cents",
        "waivers_cents",
        "balance_cents",
    ] {
        assert!(account.get(key).is_some(), "{key} missing: {account}");
    }
    let loan = &account["loans"][0];
    assert!(loan["loan_id"].is_string() && loan["fine_cents"].is_i64());
    let balance = account["balance_cents"].as_i64().unwrap();
    if balance > 0 {
        let paid = Libctl::new(&db)
            .actor(ADMIN)
            .args([
                "fines",
                "pay",
                "--member",
                &email,
                "--amount-cents",
                &balance.to_string(),
                "--format",
                "json",
            ])
            .run()
            .json();
        assert_eq!(paid["balance_cents"], 0);
    }
    Libctl::new(&db)
        .actor(ADMIN)
        .args(["fines", "pay", "--member", &email, "--amount-cents", "1"])
        .status(4)
        .run();
    Libctl::new(&db).args(["db", "check"]).run();
}

/// The sum of an integer field over a JSON report's rows.
fn sum_of(rows: &serde_json::Value, field: &str) -> i64 {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|r| r[field].as_i64().unwrap())
        .sum()
}
