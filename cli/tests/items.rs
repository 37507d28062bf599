//! Items through the binary: the desk scans barcodes; items are added, imported, listed,
//! shown and set missing or withdrawn; the inventory report counts them.

use crate::support::*;
use crate::util::*;

fn write_csv(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_desk_scans_barcodes_to_borrow_renew_and_return() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "reader@example.org", "member");
    let other = add_member(&mut c, "other@example.org", "member");
    let book = add_book(&mut c, 1, 2);
    let desk = add_member(&mut c, "desk@example.org", "librarian");
    let listed = Libctl::new(&tdb)
        .args(["item", "list", "--book", &book, "--format", "json"])
        .run()
        .json();
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "book add made one item per copy");
    let barcode = items[0]["barcode"].as_str().unwrap().to_string();
    let loan = Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "borrow", "--member", &m, "--item", &barcode, "--format", "json",
        ])
        .run()
        .json();
    assert_eq!(loan["barcode"], barcode.as_str());
    assert_eq!(loan["item_id"], items[0]["id"]);
    let taken = Libctl::new(&tdb)
        .actor(&desk)
        .args(["borrow", "--member", &other, "--item", &barcode])
        .status(4)
        .run();
    assert!(
        taken
            .stderr()
            .starts_with("error[item_not_available]: item "),
        "{}",
        taken.stderr()
    );
    assert!(taken.stderr().contains("on_loan"), "{}", taken.stderr());
    Libctl::new(&tdb)
        .actor(&desk)
        .args(["borrow", "--member", &other, "--item", "NOT-A-LABEL"])
        .status(3)
        .stderr_contains("error[not_found]")
        .run();
    Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "borrow", "--member", &other, "--item", &barcode, "--book", &book,
        ])
        .status(2)
        .run();
    let renewed = Libctl::new(&tdb)
        .actor(&desk)
        .args(["renew", "--item", &barcode, "--format", "json"])
        .run()
        .json();
    assert_eq!(
        (renewed["id"].clone(), renewed["renewals"].clone()),
        (loan["id"].clone(), 1.into())
    );
    let shown = Libctl::new(&tdb)
        .actor(&desk)
        .args(["item", "show", &barcode, "--format", "json"])
        .run()
        .json();
    assert_eq!(shown["item"]["status"], "on_loan");
    assert_eq!(shown["current_loan"]["id"], loan["id"]);
    assert_eq!(shown["book"]["isbn"], book.as_str());
    let returned = Libctl::new(&tdb)
        .actor(&desk)
        .args(["return", "--item", &barcode, "--format", "json"])
        .run()
        .json();
    assert_eq!(returned["id"], loan["id"]);
    assert!(returned["returned_at"].is_string());
    Libctl::new(&tdb)
        .actor(&desk)
        .args(["return", "--item", &barcode])
        .status(4)
        .stderr_contains("error[already_returned]")
        .run();
    let shown = Libctl::new(&tdb)
        .actor(&desk)
        .args(["item", "show", &barcode, "--format", "json"])
        .run()
        .json();
    assert_eq!(shown["item"]["status"], "available");
    assert_eq!(shown["current_loan"], serde_json::Value::Null);
    assert_eq!(shown["recent_loans"].as_array().unwrap().len(), 1);
    // A member may not read an item's loans (they name other members).
    Libctl::new(&tdb)
        .actor(&m)
        .args(["item", "show", &barcode])
        .status(5)
        .run();
    assert_invariants(&mut c);
}

#[test]
fn items_are_added_imported_all_or_nothing_and_set_missing_or_withdrawn() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let book = add_book(&mut c, 1, 1);
    let other = add_book(&mut c, 2, 0);
    let added = Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "item",
            "add",
            "--book",
            &book,
            "--barcode",
            "LIB-0001",
            "--location",
            "Stack 2",
            "--call-number",
            "823.914 AUT",
            "--price-cents",
            "2599",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(added["barcode"], "LIB-0001");
    assert_eq!(added["status"], "available");
    assert!(added["id"].is_string());
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["item", "add", "--book", &book, "--barcode", "LIB-0001"])
        .status(4)
        .stderr_contains("error[duplicate_barcode]")
        .run();
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["item", "add", "--book", &book, "--price-cents=-5"])
        .status(7)
        .run();
    let dir = tempfile::tempdir().unwrap();
    let bad = write_csv(
        &dir,
        "bad.csv",
        &format!(
            "barcode,isbn,location,call_number,price_cents\n\
             LIB-0002,{book},Stack 2,,1999\n\
             LIB-0001,{book},,,\n\
             ,9780306406157,,,\n\
             bad code,{other},,,\n\
             LIB-0002,{other},,,abc\n"
        ),
    );
    let run = Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["item", "import"])
        .arg_path(&bad)
        .status(7)
        .run();
    for line in ["line 3:", "line 4:", "line 5:", "line 6:"] {
        assert!(run.stderr().contains(line), "{line}: {}", run.stderr());
    }
    assert!(!run.stderr().contains("line 2:"), "{}", run.stderr());
    let count = |c: &mut postgres::Client| -> i64 {
        c.query_one("SELECT count(*) FROM item", &[])
            .unwrap()
            .get(0)
    };
    assert_eq!(count(&mut c), 2, "a bad file writes nothing");
    let good = write_csv(
        &dir,
        "good.csv",
        &format!(
            "barcode,isbn,location,call_number,price_cents\n\
             LIB-0002,{book},Stack 2,823.914 AUT,1999\n\
             ,{other},Stack 3,,\n\
             LIB-0003,{other},Stack 3,,\n"
        ),
    );
    let imported = Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["item", "import", "--format", "json"])
        .arg_path(&good)
        .run()
        .json();
    assert_eq!(imported["imported"], 3);
    let page = Libctl::new(&tdb)
        .args([
            "item",
            "list",
            "--location",
            "Stack 3",
            "--limit",
            "1",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let rest = Libctl::new(&tdb)
        .args([
            "item",
            "list",
            "--location",
            "Stack 3",
            "--cursor",
            &cursor,
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(rest["items"].as_array().unwrap().len(), 1);
    assert_ne!(rest["items"][0]["id"], page["items"][0]["id"]);
    let set = Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "item",
            "set-status",
            "LIB-0003",
            "missing",
            "--note",
            "inventory 2026",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(set["status"], "missing");
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["item", "set-status", "LIB-0003", "lost"])
        .status(7)
        .run();
    let missing = Libctl::new(&tdb)
        .args(["item", "list", "--status", "missing", "--format", "json"])
        .run()
        .json();
    assert_eq!(missing["items"].as_array().unwrap().len(), 1);
    let other_row: (i32, i32) = c
        .query_one(
            "SELECT total_copies, available_copies FROM book WHERE isbn = $1",
            &[&other],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(other_row, (2, 1));
    // The inventory report counts items by status.
    let inventory = Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["report", "inventory", "--format", "json"])
        .run()
        .json();
    let row = inventory
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["isbn"] == other.as_str())
        .expect("the title with a missing item is listed");
    assert_eq!(row["missing_items"], 1);
    assert_eq!(row["never_borrowed_items"], 2);
    // On loan, an item's status is circulation's.
    let m = add_member(&mut c, "reader@example.org", "member");
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["borrow", "--member", &m, "--item", "LIB-0002"])
        .run();
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["item", "set-status", "LIB-0002", "withdrawn"])
        .status(4)
        .stderr_contains("error[item_in_use]")
        .run();
    assert_invariants(&mut c);
}

#[test]
fn the_barcode_prefix_is_a_policy_an_admin_sets() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let desk = add_member(&mut c, "desk@example.org", "librarian");
    let shown = Libctl::new(&tdb)
        .args(["policy", "show", "--format", "json"])
        .run()
        .json();
    assert_eq!(shown["item_barcode_prefix"], "3");
    Libctl::new(&tdb)
        .actor(&desk)
        .args(["policy", "set", "--item-barcode-prefix", "39"])
        .status(5)
        .run();
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["policy", "set", "--item-barcode-prefix", "3a"])
        .status(7)
        .stderr_contains("error[invalid_barcode]")
        .run();
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["policy", "set", "--item-barcode-prefix", "39"])
        .run();
    let book = add_book(&mut c, 1, 0);
    let item = Libctl::new(&tdb)
        .actor(&desk)
        .args(["item", "add", "--book", &book, "--format", "json"])
        .run()
        .json();
    let barcode = item["barcode"].as_str().unwrap();
    assert!(
        barcode.starts_with("39") && barcode.len() == 14,
        "{barcode}"
    );
    assert!(libcore::barcode::luhn_valid(barcode), "{barcode}");
}
