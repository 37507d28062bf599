//! All-or-nothing CSV imports against the fixtures.

use std::fs::File;
use std::path::PathBuf;

use libcore::{catalog, members, Error};

use crate::support::*;

fn fixture(name: &str) -> File {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(name);
    File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn count(c: &mut postgres::Client, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .unwrap()
        .get(0)
}

fn bad_lines(err: Error) -> Vec<u64> {
    assert_eq!(err.exit_code(), 7, "{err}");
    match err {
        Error::InvalidRows { rows } => rows.iter().map(|r| r.line).collect(),
        other => panic!("expected InvalidRows, got {other:?}"),
    }
}

#[test]
fn the_fixture_catalogue_and_members_import() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let books = catalog::import_books(&mut c, &ctx, fixture("books.csv")).unwrap();
    assert!(books.imported >= 200);
    assert_eq!(count(&mut c, "book"), books.imported as i64);
    let people = members::import_members(&mut c, &ctx, fixture("members.csv")).unwrap();
    assert!(people.imported >= 50);
    let librarians: i64 = c
        .query_one("SELECT count(*) FROM member WHERE role = 'librarian'", &[])
        .unwrap()
        .get(0);
    assert!(librarians >= 2);
    // ISBN-10 and hyphenated forms were normalised.
    let moby: String = c
        .query_one("SELECT isbn FROM book WHERE title = 'Moby-Dick'", &[])
        .unwrap()
        .get(0);
    assert_eq!(moby, "9780306406157");
    // A second import of the same file is refused whole: every row is already catalogued.
    let lines = bad_lines(catalog::import_books(&mut c, &ctx, fixture("books.csv")).unwrap_err());
    assert_eq!(lines.len() as u64, books.imported);
    assert_eq!(count(&mut c, "book"), books.imported as i64);
}

#[test]
fn every_bad_row_is_reported_with_its_line_and_nothing_is_written() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    for (file, lines) in [
        ("bad/bad_checksum.csv", vec![3]),
        ("bad/missing_column.csv", vec![1]),
        ("bad/duplicate_isbn.csv", vec![4]),
        ("bad/negative_copies.csv", vec![2]),
        ("bad/several_errors.csv", vec![3, 4, 5]),
    ] {
        let err = catalog::import_books(&mut c, &ctx, fixture(file)).unwrap_err();
        assert_eq!(bad_lines(err), lines, "{file}");
        assert_eq!(count(&mut c, "book"), 0, "{file}");
    }
    let err = members::import_members(&mut c, &ctx, fixture("bad/members_bad.csv")).unwrap_err();
    assert_eq!(bad_lines(err), vec![3, 4, 5, 6]);
    assert_eq!(count(&mut c, "member"), 1, "only the template's admin");
    let refused: i64 = c
        .query_one(
            "SELECT count(*) FROM audit_log WHERE action LIKE '%.import' AND outcome = 'refused'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(refused, 6);
}

#[test]
fn a_bom_and_quoted_commas_are_valid() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    catalog::import_books(&mut c, &ctx, fixture("bad/bom_valid.csv")).unwrap();
    let c2 = TestDb::new();
    let mut c2c = c2.client();
    let ctx2 = admin(&mut c2c);
    catalog::import_books(&mut c2c, &ctx2, fixture("bad/quoted_commas_valid.csv")).unwrap();
    let (title, author): (String, String) = c2c
        .query_one("SELECT title, author FROM book", &[])
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        (title.as_str(), author.as_str()),
        ("Eats, Shoots and Leaves", "Truss, Lynne")
    );
}

#[test]
fn only_staff_import_and_only_admins_create_staff() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let lib = add_member(&mut c, "desk@example.org", "librarian");
    let lib_ctx = ctx_of(&mut c, &lib);
    let err = members::import_members(&mut c, &lib_ctx, fixture("members.csv")).unwrap_err();
    assert_eq!(err.exit_code(), 5, "the fixture holds librarians");
    let reader = add_member(&mut c, "reader@example.org", "member");
    let reader_ctx = ctx_of(&mut c, &reader);
    let err = catalog::import_books(&mut c, &reader_ctx, fixture("books.csv")).unwrap_err();
    assert_eq!(err.exit_code(), 5);
    catalog::import_books(&mut c, &lib_ctx, fixture("books.csv")).unwrap();
}

#[test]
fn book_search_pages_with_a_cursor_and_tolerates_typos() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    catalog::import_books(&mut c, &ctx, fixture("books.csv")).unwrap();
    let hits = catalog::list_books(&mut c, Some("Austen"), 100, None).unwrap();
    assert_eq!(hits.items.len(), 6);
    let typo = catalog::list_books(&mut c, Some("Dostoevksy"), 100, None).unwrap();
    assert!(
        typo.items.iter().any(|b| b.author == "Fyodor Dostoevsky"),
        "{:?}",
        typo.items
    );
    let mut seen = 0;
    let mut cursor = None;
    loop {
        let page = catalog::list_books(&mut c, None, 100, cursor.as_deref()).unwrap();
        seen += page.items.len();
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(seen as i64, count(&mut c, "book"));
    let err = catalog::list_books(&mut c, None, 10, Some("garbage")).unwrap_err();
    assert_eq!(err.exit_code(), 7);
}
