//! Catalogue and member commands through the binary.

use crate::support::*;
use crate::util::*;

#[test]
fn import_list_search_and_show_books() {
    let tdb = TestDb::new();
    let imported = Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["book", "import", &fixture("books.csv"), "--format", "json"])
        .run()
        .json();
    let n = imported["imported"].as_u64().unwrap();
    assert!(n >= 200);
    let page = Libctl::new(&tdb)
        .args(["book", "list", "--limit", "100", "--format", "json"])
        .run()
        .json();
    assert_eq!(page["items"].as_array().unwrap().len(), 100);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a next cursor")
        .to_string();
    let page2 = Libctl::new(&tdb)
        .args([
            "book", "list", "--limit", "100", "--cursor", &cursor, "--format", "json",
        ])
        .run()
        .json();
    assert_ne!(page2["items"][0]["id"], page["items"][0]["id"]);
    let found = Libctl::new(&tdb)
        .args(["book", "list", "--search", "melville", "--format", "json"])
        .run()
        .json();
    assert_eq!(found["items"].as_array().unwrap().len(), 2);
    let show = Libctl::new(&tdb)
        .args(["book", "show", "0-306-40615-2", "--format", "json"])
        .run()
        .json();
    assert_eq!(show["title"], "Moby-Dick");
    let by_id = Libctl::new(&tdb)
        .args([
            "book",
            "show",
            show["id"].as_str().unwrap(),
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(by_id["isbn"], "9780306406157");
    Libctl::new(&tdb)
        .args(["book", "show", "9780000000002"])
        .status(3)
        .run();
    let csv = Libctl::new(&tdb)
        .args(["book", "list", "--limit", "3", "--format", "csv"])
        .stderr_contains("next cursor: ")
        .stdout_contains(
            "id,isbn,title,author,genre,category,total_copies,available_copies,created_at",
        )
        .run();
    assert_eq!(csv.stdout().lines().count(), 4);
    let ndjson = Libctl::new(&tdb)
        .args(["book", "list", "--limit", "3", "--format", "ndjson"])
        .stderr_contains("next cursor: ")
        .run();
    assert_eq!(ndjson.stdout().lines().count(), 3);
}

#[test]
fn a_bad_import_reports_every_line_exits_7_and_writes_nothing() {
    let tdb = TestDb::new();
    let run = Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["book", "import", &fixture("bad/several_errors.csv")])
        .status(7)
        .run();
    let err = run.stderr();
    assert!(err.contains("error[invalid_input]"), "{err}");
    for line in ["line 3:", "line 4:", "line 5:"] {
        assert!(err.contains(line), "{line} missing from {err}");
    }
    let json = Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "book",
            "import",
            &fixture("bad/missing_column.csv"),
            "--format",
            "json",
        ])
        .status(7)
        .run()
        .error_json();
    assert_eq!(json["error"]["code"], "invalid_input");
    assert_eq!(json["error"]["rows"][0]["line"], 1);
    let books: i64 = tdb
        .client()
        .query_one("SELECT count(*) FROM book", &[])
        .unwrap()
        .get(0);
    assert_eq!(books, 0);
}

#[test]
fn add_books_and_members_with_validation_errors_as_exit_7() {
    let tdb = TestDb::new();
    let book = Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "book",
            "add",
            "--isbn",
            "978-0-306-40615-7",
            "--title",
            "T",
            "--author",
            "A",
            "--copies",
            "2",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert!(book["id"].as_str().is_some());
    assert_eq!(book["available_copies"], 2);
    let dup = Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "book",
            "add",
            "--isbn",
            "0306406152",
            "--title",
            "T",
            "--author",
            "A",
            "--format",
            "json",
        ])
        .status(4)
        .run();
    assert_eq!(dup.error_json()["error"]["code"], "duplicate_isbn");
    for (args, code) in [
        (
            vec![
                "--isbn",
                "978-0-306-40615-8",
                "--title",
                "T",
                "--author",
                "A",
            ],
            "invalid_isbn",
        ),
        (
            vec!["--isbn", "9781861972712", "--title", " ", "--author", "A"],
            "invalid_input",
        ),
        (
            vec![
                "--isbn",
                "9781861972712",
                "--title",
                "T",
                "--author",
                "A",
                "--copies",
                "10001",
            ],
            "invalid_input",
        ),
        (
            vec![
                "--isbn",
                "9781861972712",
                "--title",
                "T",
                "--author",
                "A",
                "--copies=-1",
            ],
            "invalid_input",
        ),
    ] {
        let run = Libctl::new(&tdb)
            .actor(ADMIN)
            .args(["book", "add"])
            .args(args)
            .status(7)
            .run();
        assert!(
            run.stderr().contains(&format!("error[{code}]")),
            "{}",
            run.stderr()
        );
    }
    let member = Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "member",
            "add",
            "--name",
            "Ada",
            "--email",
            "Ada@Example.org",
            "--phone",
            "+44 20 7946 0958",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(member["status"], "active");
    assert_eq!(member["role"], "member");
    assert_eq!(member["category"], "public");
    let dup = Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "member",
            "add",
            "--name",
            "Ada",
            "--email",
            "ada@example.ORG",
        ])
        .status(4)
        .run();
    assert!(dup.stderr().contains("error[duplicate_email]"));
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["member", "add", "--name", "X", "--email", "nope"])
        .status(7)
        .run();
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "member",
            "add",
            "--name",
            "X",
            "--email",
            "x@example.org",
            "--phone",
            "12",
        ])
        .status(7)
        .run();
    let shown = Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["member", "show", "ADA@example.org", "--format", "json"])
        .run()
        .json();
    assert_eq!(shown["id"], member["id"]);
    let suspended = Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "member",
            "set-status",
            "ada@example.org",
            "suspended",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(suspended["status"], "suspended");
    Libctl::new(&tdb)
        .actor(ADMIN)
        .args(["member", "set-status", "ada@example.org", "dormant"])
        .status(7)
        .run();
    let list = Libctl::new(&tdb)
        .actor(ADMIN)
        .args([
            "member",
            "list",
            "--status",
            "suspended",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
}

#[test]
fn members_cannot_manage_and_see_only_themselves() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let me = add_member(&mut c, "me@example.org", "member");
    add_member(&mut c, "you@example.org", "member");
    Libctl::new(&tdb)
        .actor(&me)
        .args(["member", "show", "me@example.org"])
        .run();
    let denied = Libctl::new(&tdb)
        .actor(&me)
        .args(["member", "show", "you@example.org"])
        .status(5)
        .run();
    assert!(denied.stderr().contains("error[permission_denied]"));
    Libctl::new(&tdb)
        .actor(&me)
        .args(["member", "list"])
        .status(5)
        .run();
    Libctl::new(&tdb)
        .actor(&me)
        .args([
            "book",
            "add",
            "--isbn",
            "0306406152",
            "--title",
            "T",
            "--author",
            "A",
        ])
        .status(5)
        .run();
    Libctl::new(&tdb)
        .actor("stranger@example.org")
        .args(["member", "list"])
        .status(5)
        .run();
    Libctl::new(&tdb)
        .args(["member", "import", &fixture("members.csv")])
        .status(5)
        .run();
}

#[test]
fn member_renew_extends_a_membership_and_refuses_a_closed_one() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let m = add_member(&mut c, "renew@example.org", "member");
    let desk = add_member(&mut c, "desk@example.org", "librarian");
    let before = Libctl::new(&tdb)
        .actor(&desk)
        .args(["member", "show", &m, "--format", "json"])
        .run()
        .json();
    let renewed = Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "member",
            "renew",
            &m,
            "--until",
            "2099-12-31",
            "--format",
            "json",
        ])
        .run()
        .json();
    assert_ne!(renewed["expires_at"], before["expires_at"]);
    assert!(renewed["expires_at"]
        .as_str()
        .unwrap()
        .starts_with("2099-12-31T23:59:59"));
    Libctl::new(&tdb)
        .actor(&m)
        .args(["member", "renew", &m])
        .status(5)
        .run();
    Libctl::new(&tdb)
        .actor(&desk)
        .args(["member", "set-status", &m, "closed"])
        .run();
    Libctl::new(&tdb)
        .actor(&desk)
        .args(["member", "renew", &m])
        .status(4)
        .stderr_contains("error[member_not_active]")
        .run();
}
