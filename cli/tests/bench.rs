//! `bench borrow` and `bench reports`: the shape of their output on a small seeded library
//! (never their speed).

use crate::support::*;
use crate::util::*;

#[test]
fn bench_borrow_reports_throughput_latency_outcomes_and_invariants() {
    let db = TestDb::new();
    Libctl::new(&db).args(["seed", "--scenario", "tiny"]).run();
    let report = Libctl::new(&db)
        .args([
            "bench",
            "borrow",
            "--clients",
            "3",
            "--duration",
            "1",
            "--hot-books",
            "3",
            "--bare-sql",
            "--rounds",
            "2",
            "--format",
            "json",
        ])
        .run()
        .json();
    // Each round runs the three modes, starting with the next one.
    let rounds = report["rounds"].as_array().unwrap();
    let order = |round: &serde_json::Value| -> Vec<String> {
        round
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["mode"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        order(&rounds[0]),
        ["libcore", "bare_sql", "bare_sql_prepared"]
    );
    assert_eq!(
        order(&rounds[1]),
        ["bare_sql", "bare_sql_prepared", "libcore"]
    );
    assert_eq!(report["invariants_ok"], true);
    for mode in ["libcore", "bare_sql", "bare_sql_prepared"] {
        let run = &report[mode];
        assert_eq!(run["mode"], mode);
        assert_eq!(run["actors"], "librarians", "the desk serves by default");
        // The run reported is one of the mode's runs (the median of two: the faster).
        let throughputs: Vec<f64> = rounds
            .iter()
            .flat_map(|r| r.as_array().unwrap())
            .filter(|r| r["mode"] == mode)
            .map(|r| r["throughput_per_sec"].as_f64().unwrap())
            .collect();
        assert_eq!(throughputs.len(), 2);
        assert_eq!(
            run["throughput_per_sec"].as_f64().unwrap(),
            throughputs.iter().copied().fold(f64::MIN, f64::max)
        );
        assert_eq!(
            run["checkpointed"], true,
            "the tests connect as a superuser"
        );
        assert!(run["throughput_per_sec"].as_f64().unwrap() > 0.0, "{run}");
        for p in ["p50", "p95", "p99", "max"] {
            assert!(run["latency_ms"][p].as_f64().is_some(), "{p}");
        }
        assert!(run["outcomes"]["ok"].as_u64().unwrap() > 0);
        assert_eq!(run["invariants_ok"], true);
        // The machine's CPU over the run (the tests run on Linux): shares of 100 %, and
        // some CPU time per operation, since the run did work.
        let cpu = &run["host_cpu"];
        for share in ["busy_percent", "steal_percent"] {
            let v = cpu[share].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&v), "{share} {v}");
        }
        assert!(cpu["cpu_ms_per_op"].as_f64().unwrap() > 0.0, "{cpu}");
    }
    // Each run of each round carries its CPU figures too.
    for run in rounds.iter().flat_map(|r| r.as_array().unwrap()) {
        assert!(run["host_cpu"]["busy_percent"].as_f64().is_some(), "{run}");
    }
    assert!(report["ratio_libcore_to_bare"].as_f64().unwrap() > 0.0);
    assert!(report["ratio_libcore_to_bare_prepared"].as_f64().unwrap() > 0.0);
    // The policies are back as they were.
    let policies = Libctl::new(&db)
        .args(["rate-limit", "policy", "list", "--format", "json"])
        .run()
        .json();
    assert!(policies
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["limit_count"].as_i64().unwrap() <= 120));
    Libctl::new(&db).args(["db", "check"]).run();
    Libctl::new(&db)
        .args(["bench", "borrow", "--duration", "601"])
        .status(7)
        .run();
}

#[test]
fn bench_borrow_self_service_acts_as_each_member_for_their_own_loans() {
    let db = TestDb::new();
    Libctl::new(&db).args(["seed", "--scenario", "tiny"]).run();
    let mut client = db.client();
    let before: chrono::DateTime<chrono::Utc> =
        client.query_one("SELECT now()", &[]).unwrap().get(0);
    let run = Libctl::new(&db)
        .args([
            "bench",
            "borrow",
            "--self-service",
            "--clients",
            "2",
            "--duration",
            "1",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(run["actors"], "members");
    assert_eq!(run["invariants_ok"], true);
    assert!(run["outcomes"]["ok"].as_u64().unwrap() > 0, "{run}");
    // Every loan the run made was borrowed by its own member, and no librarian acted (the
    // seeded history has librarians' rows; the run's rows are the ones recorded since).
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE a.actor = m.email AND a.actor_role = 'member'),
                    count(*) FILTER (WHERE a.actor <> m.email OR a.actor_role <> 'member'),
                    (SELECT count(*) FROM audit_log
                     WHERE recorded_at >= $1 AND actor_role = 'librarian' AND action LIKE 'loan.%')
             FROM audit_log a
             JOIN loan l ON l.id::text = a.entity_id
             JOIN member m ON m.id = l.member_id
             WHERE a.recorded_at >= $1 AND a.action = 'loan.borrow' AND a.outcome = 'ok'",
            &[&before],
        )
        .unwrap();
    let (own, other, librarians): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    assert!(own > 0);
    assert_eq!((other, librarians), (0, 0));
}

#[test]
fn bench_reports_times_every_kind() {
    let db = TestDb::new();
    Libctl::new(&db).args(["seed", "--scenario", "tiny"]).run();
    let timings = Libctl::new(&db)
        .args(["bench", "reports", "--runs", "1", "--format", "json"])
        .run()
        .json();
    let kinds: Vec<&str> = timings
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["report"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, report_kinds());
}

#[test]
fn bench_all_seeds_a_scratch_database_and_prints_one_table_or_one_json_object() {
    let db = TestDb::new();
    let args = ["bench", "all", "--scenario", "tiny", "--duration", "1"];
    let report = Libctl::new(&db)
        .args(args)
        .args(["--format", "json"])
        .run()
        .json();
    assert_eq!(report["seed"]["scenario"], "tiny");
    assert!(report["seed"]["rows"].as_u64().unwrap() > 1000);
    assert!(report["seed"]["load_limit_seconds"].as_f64().unwrap() > 0.0);
    let kinds: Vec<&str> = report["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["report"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, report_kinds());
    for mode in ["libcore", "bare_sql", "bare_sql_prepared"] {
        assert_eq!(report["borrow"][mode]["invariants_ok"], true, "{mode}");
    }
    // One row per measure: seed, its peak RSS, each report, borrow against each baseline.
    let table = report["table"].as_array().unwrap();
    assert_eq!(table.len(), 2 + kinds.len() + 2);
    assert!(table.iter().all(|r| r["value"].as_f64().unwrap() > 0.0));
    // The table format prints that table; the scratch databases are gone afterwards.
    let text = Libctl::new(&db).args(args).run().stdout();
    assert!(text.contains("bare SQL, prepared statements"), "{text}");
    let mut client = db.client();
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname LIKE current_database() || '\\_bench\\_%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
    Libctl::new(&db)
        .args(["bench", "all", "--scenario", "tiny", "--duration", "0"])
        .status(7)
        .run();
}

fn report_kinds() -> Vec<&'static str> {
    libcore::reports::Kind::ALL
        .iter()
        .map(|k| k.as_str())
        .collect()
}

#[test]
fn limits_lifted_for_one_connection_reach_no_other_and_end_with_it() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let real = libcore::ratelimit::policies(&mut c).unwrap();
    let mut bench = tdb.client();
    benches::borrow::lift_for_this_connection(&mut bench).unwrap();
    let inside = libcore::ratelimit::policies(&mut bench).unwrap();
    assert_eq!(inside.len(), real.len());
    assert!(inside.iter().all(|p| p.limit_count > 1_000_000));
    // Nobody else sees them, and the shared rows never changed.
    assert_eq!(libcore::ratelimit::policies(&mut c).unwrap(), real);
    let mut other = tdb.client();
    assert_eq!(libcore::ratelimit::policies(&mut other).unwrap(), real);
    // A member limited to 1 borrow an hour is limited on every other connection while the
    // bench connection runs lifted.
    c.batch_execute("UPDATE rate_limit_policy SET limit_count = 1, burst = 1 WHERE role = 'member' AND action_group = 'borrow'")
        .unwrap();
    let m = add_member(&mut c, "keen@example.org", "member");
    let books: Vec<String> = (0..2).map(|n| add_book(&mut c, n, 1)).collect();
    let me = ctx_of(&mut c, &m);
    libcore::circulation::borrow(&mut other, &me, &m, &books[0]).unwrap();
    let err = libcore::circulation::borrow(&mut other, &me, &m, &books[1]).unwrap_err();
    assert_eq!(err.code(), "rate_limited");
    // Killed: the connection goes, and with it the lifted copy.
    drop(bench);
    let mut after = tdb.client();
    assert!(libcore::ratelimit::policies(&mut after)
        .unwrap()
        .iter()
        .any(|p| p.limit_count == 1));
}
