//! Items (SPEC §16): barcodes, the desk scanning a copy, the item invariants of `db check`,
//! and the migration that gives an existing library its items.

use libcore::circulation::{self, Copy, LoanRef};
use libcore::items::{self, NewItem};
use postgres::Client;

use crate::concurrency::{codes, race, Job};
use crate::support::*;

/// The barcodes of a book's items, in barcode order.
fn barcodes(c: &mut Client, isbn: &str) -> Vec<String> {
    c.query(
        "SELECT i.barcode FROM item i JOIN book b ON b.id = i.book_id WHERE b.isbn = $1 ORDER BY i.barcode",
        &[&isbn],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Adds an item to `book` as `ctx`, with `barcode` or a generated one.
fn add_item(
    c: &mut Client,
    ctx: &libcore::actor::Ctx,
    book: &str,
    barcode: Option<&str>,
) -> libcore::Result<items::Item> {
    items::add(
        c,
        ctx,
        &NewItem {
            book: book.to_string(),
            barcode: barcode.map(str::to_string),
            ..NewItem::default()
        },
    )
}

#[test]
fn two_members_scan_the_same_barcode_at_once_and_exactly_one_wins() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let book = add_book(&mut c, 1, 3);
    let barcode = barcodes(&mut c, &book)[1].clone();
    let ctx = admin(&mut c);
    let jobs = ["a@example.org", "b@example.org"]
        .into_iter()
        .map(|email| {
            let member = add_member(&mut c, email, "member");
            let (ctx, barcode) = (ctx.clone(), barcode.clone());
            Box::new(move |client: &mut Client| {
                circulation::borrow_copy(client, &ctx, &member, Copy::Item(&barcode))
            }) as Job<_>
        })
        .collect();
    let results = race(&tdb, jobs);
    let (ok, errs) = codes(&results);
    assert_eq!(ok, 1);
    assert_eq!(errs, ["item_not_available"]);
    let won = results.iter().find_map(|r| r.as_ref().ok()).unwrap();
    assert_eq!(won.barcode.as_deref(), Some(barcode.as_str()));
    let item = items::find(&mut c, &barcode).unwrap();
    assert_eq!(item.status, "on_loan");
    assert_eq!(won.item_id, Some(item.id));
    assert_invariants(&mut c);
}

#[test]
fn the_desk_returns_and_renews_by_barcode() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let m = add_member(&mut c, "reader@example.org", "member");
    let book = add_book(&mut c, 1, 2);
    let barcode = barcodes(&mut c, &book)[0].clone();
    let loan = circulation::borrow_copy(&mut c, &ctx, &m, Copy::Item(&barcode)).unwrap();
    let scanned = LoanRef::Item {
        item: barcode.clone(),
    };
    let renewed = circulation::renew(&mut c, &ctx, &scanned).unwrap();
    assert_eq!((renewed.id, renewed.renewals), (loan.id, 1));
    assert_eq!(renewed.barcode.as_deref(), Some(barcode.as_str()));
    let returned = circulation::return_loan(&mut c, &ctx, &scanned).unwrap();
    assert_eq!(returned.id, loan.id);
    assert!(returned.returned_at.is_some());
    assert_eq!(items::find(&mut c, &barcode).unwrap().status, "available");
    let again = circulation::return_loan(&mut c, &ctx, &scanned).unwrap_err();
    assert_eq!(again.code(), "already_returned");
    let unknown = circulation::return_loan(
        &mut c,
        &ctx,
        &LoanRef::Item {
            item: "NO-SUCH-ITEM".into(),
        },
    )
    .unwrap_err();
    assert_eq!((unknown.code(), unknown.exit_code()), ("not_found", 3));
    // The audit rows of the loan name its item.
    let named: Vec<serde_json::Value> = c
        .query(
            "SELECT details FROM audit_log WHERE entity_id = $1 AND outcome = 'ok' ORDER BY at",
            &[&loan.id.to_string()],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(named.len(), 3);
    assert_eq!(named[0]["after"]["barcode"], barcode.as_str());
    assert_eq!(named[1]["item"], barcode.as_str());
    assert_eq!(named[2]["item"], barcode.as_str());
    assert_invariants(&mut c);
}

#[test]
fn a_scanned_item_off_the_shelf_is_refused_with_its_status_and_set_status_guards_items_in_use() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let m = add_member(&mut c, "reader@example.org", "member");
    let n = add_member(&mut c, "other@example.org", "member");
    let book = add_book(&mut c, 1, 2);
    let codes = barcodes(&mut c, &book);
    items::set_status(&mut c, &ctx, &codes[0], "missing", Some("not on the shelf")).unwrap();
    let book_row = libcore::catalog::find_book(&mut c, &book).unwrap();
    assert_eq!((book_row.total_copies, book_row.available_copies), (2, 1));
    let err = circulation::borrow_copy(&mut c, &ctx, &m, Copy::Item(&codes[0])).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("item_not_available", 4));
    assert!(err.to_string().contains("missing"), "{err}");
    // By title, the one on the shelf goes out.
    let loan = circulation::borrow(&mut c, &ctx, &m, &book).unwrap();
    assert_eq!(loan.barcode.as_deref(), Some(codes[1].as_str()));
    let err = items::set_status(&mut c, &ctx, &codes[1], "withdrawn", None).unwrap_err();
    assert_eq!((err.code(), err.exit_code()), ("item_in_use", 4));
    let err = circulation::borrow(&mut c, &ctx, &n, &book).unwrap_err();
    assert_eq!(err.code(), "no_copy_available");
    // Withdrawn leaves the count of copies; found again, it is back on the shelf.
    items::set_status(&mut c, &ctx, &codes[0], "withdrawn", None).unwrap();
    let book_row = libcore::catalog::find_book(&mut c, &book).unwrap();
    assert_eq!((book_row.total_copies, book_row.available_copies), (1, 0));
    items::set_status(&mut c, &ctx, &codes[0], "available", None).unwrap();
    let book_row = libcore::catalog::find_book(&mut c, &book).unwrap();
    assert_eq!((book_row.total_copies, book_row.available_copies), (2, 1));
    let err = items::set_status(&mut c, &ctx, &codes[0], "on_loan", None).unwrap_err();
    assert_eq!(err.exit_code(), 7);
    let member = ctx_of(&mut c, &m);
    let err = items::set_status(&mut c, &member, &codes[0], "missing", None).unwrap_err();
    assert_eq!(err.code(), "permission_denied");
    let audited: serde_json::Value = c
        .query_one(
            "SELECT details FROM audit_log WHERE action = 'item.set_status' AND outcome = 'ok' ORDER BY at LIMIT 1",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(audited["before"]["status"], "available");
    assert_eq!(audited["after"]["status"], "missing");
    assert_eq!(audited["note"], "not on the shelf");
    assert_invariants(&mut c);
}

#[test]
fn generated_barcodes_are_14_digits_with_the_prefix_and_a_luhn_digit_and_given_ones_are_kept() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let book = add_book(&mut c, 1, 3);
    for code in barcodes(&mut c, &book) {
        assert_eq!(code.len(), 14, "{code}");
        assert!(code.starts_with('3'), "{code}");
        assert!(libcore::barcode::luhn_valid(&code), "{code}");
    }
    // The database's rule is the seeder's (libcore::barcode::generate).
    for (prefix, n) in [("3", 1i64), ("3", 987_654_321), ("31234", 42), ("9", 0)] {
        let sql: String = c
            .query_one("SELECT item_barcode($1, $2)", &[&prefix, &n])
            .unwrap()
            .get(0);
        assert_eq!(
            sql,
            libcore::barcode::generate(prefix, n as u64).unwrap(),
            "{prefix} {n}"
        );
    }
    c.execute(
        "UPDATE library_setting SET value = '39' WHERE key = 'item_barcode_prefix'",
        &[],
    )
    .unwrap();
    let item = add_item(&mut c, &ctx, &book, None).unwrap();
    assert!(item.barcode.starts_with("39") && libcore::barcode::luhn_valid(&item.barcode));
    let given = items::add(
        &mut c,
        &ctx,
        &NewItem {
            book: book.clone(),
            barcode: Some("LIB-0042".into()),
            location: Some("Stack 4".into()),
            call_number: Some("823.914 SMI".into()),
            price_cents: Some(2599),
        },
    )
    .unwrap();
    assert_eq!(given.barcode, "LIB-0042");
    let dup = add_item(&mut c, &ctx, &book, Some("LIB-0042")).unwrap_err();
    assert_eq!((dup.code(), dup.exit_code()), ("duplicate_barcode", 4));
    let bad = add_item(&mut c, &ctx, &book, Some("has space")).unwrap_err();
    assert_eq!((bad.code(), bad.exit_code()), ("invalid_barcode", 7));
    let book_row = libcore::catalog::find_book(&mut c, &book).unwrap();
    assert_eq!((book_row.total_copies, book_row.available_copies), (5, 5));
    // A bulk load (seed, restore) writes items without drawing numbers: the next generated
    // barcode skips the ones in use, and catching up moves past them at once.
    let prefix_3 = |c: &mut Client| -> Vec<String> {
        c.query(
            "SELECT barcode FROM item WHERE barcode LIKE '3%' ORDER BY barcode",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let before = prefix_3(&mut c);
    c.batch_execute(
        "UPDATE library_setting SET value = '3' WHERE key = 'item_barcode_prefix';
         SELECT setval('item_barcode_seq', 1, false);",
    )
    .unwrap();
    let skipped = add_item(&mut c, &ctx, &book, None).unwrap();
    assert!(!before.contains(&skipped.barcode), "{}", skipped.barcode);
    items::catch_up_barcodes(&mut c).unwrap();
    let next: i64 = c
        .query_one("SELECT nextval('item_barcode_seq')", &[])
        .unwrap()
        .get(0);
    let highest = prefix_3(&mut c).last().unwrap()[1..13]
        .parse::<i64>()
        .unwrap();
    assert_eq!(next, highest + 1);
    assert_invariants(&mut c);
}

/// Breaks one invariant by hand (as the table owner, past the application) and expects
/// `db check` to name exactly that one.
fn broken_by(setup: impl FnOnce(&mut Client, &str), expected: &str) {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let m = add_member(&mut c, "reader@example.org", "member");
    let book = add_book(&mut c, 1, 2);
    circulation::borrow(&mut c, &ctx, &m, &book).unwrap();
    assert_invariants(&mut c);
    setup(&mut c, &book);
    let results = libcore::db::check(&mut c).unwrap();
    let broken: Vec<&str> = results
        .iter()
        .filter(|r| r.violations > 0)
        .map(|r| r.invariant.as_str())
        .collect();
    assert_eq!(broken, [expected]);
    let err = libcore::db::fail_on_violations(&results).unwrap_err();
    assert_eq!(err.exit_code(), 8);
}

#[test]
fn db_check_finds_an_item_on_loan_without_its_loan() {
    broken_by(
        |c, isbn| {
            c.execute(
                "UPDATE item SET status = 'on_loan'
                 WHERE status = 'available' AND book_id = (SELECT id FROM book WHERE isbn = $1)",
                &[&isbn],
            )
            .unwrap();
            // The counters agree with the items, so only the loan is missing.
            c.execute(
                "UPDATE book SET available_copies = 0 WHERE isbn = $1",
                &[&isbn],
            )
            .unwrap();
        },
        "an item is on_loan exactly when it has an open loan",
    );
}

#[test]
fn db_check_finds_overlapping_loans_of_one_item() {
    broken_by(
        |c, _| {
            // A returned loan of the item, inside the period of its open loan.
            c.execute(
                "INSERT INTO loan (id, book_id, member_id, borrowed_at, due_at, returned_at,
                                   fine_cents_per_day, grace_days, max_fine_cents, item_id, end_state)
                 SELECT gen_random_uuid(), book_id, member_id, borrowed_at + interval '1 minute',
                        due_at, borrowed_at + interval '2 minutes', 0, 0, 0, item_id, 'returned'
                 FROM loan WHERE returned_at IS NULL",
                &[],
            )
            .unwrap();
            c.execute("UPDATE book SET times_borrowed = times_borrowed + 1", &[])
                .unwrap();
        },
        "no item has two loans whose periods overlap",
    );
}

#[test]
fn db_check_finds_book_counters_that_do_not_count_the_items() {
    broken_by(
        |c, isbn| {
            c.execute(
                "UPDATE item SET status = 'damaged'
                 WHERE status = 'available' AND book_id = (SELECT id FROM book WHERE isbn = $1)",
                &[&isbn],
            )
            .unwrap();
        },
        "book counters equal the counts of its items",
    );
}

#[test]
fn db_check_finds_an_open_loan_whose_item_is_of_another_book() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let m = add_member(&mut c, "reader@example.org", "member");
    let book = add_book(&mut c, 1, 1);
    let other = add_book(&mut c, 2, 1);
    circulation::borrow(&mut c, &ctx, &m, &book).unwrap();
    // The (book, item) key holds this invariant; a repair script that drops it and moves the
    // loan onto the other title's item, keeping statuses and counters straight, breaks it.
    c.batch_execute("ALTER TABLE loan DROP CONSTRAINT loan_item_of_book")
        .unwrap();
    let (mine, theirs) = (barcodes(&mut c, &book), barcodes(&mut c, &other));
    c.execute(
        "WITH moved AS (UPDATE loan SET item_id = (SELECT id FROM item WHERE barcode = $2)
                        WHERE returned_at IS NULL)
         UPDATE item SET status = CASE WHEN barcode = $1 THEN 'available' ELSE 'on_loan' END
         WHERE barcode IN ($1, $2)",
        &[&mine[0], &theirs[0]],
    )
    .unwrap();
    c.execute(
        "UPDATE book SET available_copies = 1 - available_copies WHERE isbn IN ($1, $2)",
        &[&book, &other],
    )
    .unwrap();
    let results = libcore::db::check(&mut c).unwrap();
    let broken: Vec<&str> = results
        .iter()
        .filter(|r| r.violations > 0)
        .map(|r| r.invariant.as_str())
        .collect();
    assert_eq!(
        broken,
        [
            "the schema has every key, index and trigger its migrations create",
            "every open loan has an item of its book"
        ]
    );
}

#[test]
fn an_existing_library_migrates_to_items_with_its_open_loans_each_on_its_own_item() {
    let tdb = TestDb::empty();
    let mut c = tdb.client();
    libcore::db::migrate_to(&mut c, 19).unwrap();
    // A library at schema 19: two titles, three open loans and one returned.
    c.batch_execute(
        "INSERT INTO member (id, name, email, role, category, status, created_at)
         VALUES ('00000000-0000-7000-8000-000000000001', 'A', 'a@example.org', 'member', 'public', 'active', now() - interval '90 days'),
                ('00000000-0000-7000-8000-000000000002', 'B', 'b@example.org', 'member', 'public', 'active', now() - interval '90 days');
         INSERT INTO book (id, isbn, title, author, category, total_copies, available_copies, created_at, times_borrowed)
         VALUES ('00000000-0000-7000-8000-0000000000b1', '9780306406157', 'One', 'X', 'standard', 3, 1, now() - interval '1 year', 3),
                ('00000000-0000-7000-8000-0000000000b2', '9780140449136', 'Two', 'Y', 'standard', 1, 0, now() - interval '1 year', 1);
         INSERT INTO loan (id, book_id, member_id, borrowed_at, due_at, returned_at, fine_cents_per_day, grace_days, max_fine_cents)
         VALUES ('00000000-0000-7000-8000-0000000000c1', '00000000-0000-7000-8000-0000000000b1', '00000000-0000-7000-8000-000000000001', now() - interval '20 days', now() - interval '6 days', now() - interval '10 days', 100, 0, 2000),
                ('00000000-0000-7000-8000-0000000000c2', '00000000-0000-7000-8000-0000000000b1', '00000000-0000-7000-8000-000000000001', now() - interval '5 days', now() + interval '9 days', NULL, 100, 0, 2000),
                ('00000000-0000-7000-8000-0000000000c3', '00000000-0000-7000-8000-0000000000b1', '00000000-0000-7000-8000-000000000002', now() - interval '4 days', now() + interval '10 days', NULL, 100, 0, 2000),
                ('00000000-0000-7000-8000-0000000000c4', '00000000-0000-7000-8000-0000000000b2', '00000000-0000-7000-8000-000000000002', now() - interval '3 days', now() + interval '11 days', NULL, 100, 0, 2000);",
    )
    .unwrap();
    libcore::db::migrate(&mut c).unwrap();
    let items: Vec<(String, String, i64)> = c
        .query(
            "SELECT b.title, i.status, count(*) FROM item i JOIN book b ON b.id = i.book_id
             GROUP BY 1, 2 ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        items,
        [
            ("One".to_string(), "available".to_string(), 1),
            ("One".into(), "on_loan".into(), 2),
            ("Two".into(), "on_loan".into(), 1),
        ]
    );
    let open_items: i64 = c
        .query_one(
            "SELECT count(DISTINCT item_id) FROM loan WHERE returned_at IS NULL",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(open_items, 3);
    let returned_item: Option<uuid::Uuid> = c
        .query_one(
            "SELECT item_id FROM loan WHERE id = '00000000-0000-7000-8000-0000000000c1'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(returned_item, None, "history before items keeps no item");
    assert_invariants(&mut c);
    // The desk goes on from there: a new item gets the next generated barcode.
    libcore::members::bootstrap_admin(&mut c, ADMIN, "Admin").unwrap();
    let ctx = admin(&mut c);
    let added = add_item(&mut c, &ctx, "9780140449136", None).unwrap();
    assert!(libcore::barcode::luhn_valid(&added.barcode));
    let loan = circulation::borrow(&mut c, &ctx, "a@example.org", "9780140449136").unwrap();
    assert_eq!(loan.item_id, Some(added.id));
    assert_invariants(&mut c);
}
