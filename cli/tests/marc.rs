//! MARC 21 through the binary (issue 27): `book import --format marc|marcxml`, `book export`
//! with items, a refused record's number and exit code, and `--format marc` elsewhere.

use crate::support::*;
use crate::util::*;

fn marc_fixture(name: &str) -> String {
    fixture(&format!("marc/{name}"))
}

#[test]
fn marc_in_and_out_through_the_binary() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let desk = add_member(&mut c, "desk@example.org", "librarian");
    let done = Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "book",
            "import",
            "--format",
            "marc",
            &marc_fixture("koha.mrc"),
        ])
        .stderr_contains("invalid ISBN \"0-00-000000-1\"")
        .run();
    assert!(done.stdout().contains("books"), "{}", done.stdout());
    Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "book",
            "import",
            "--format",
            "marcxml",
            "--copies",
            "2",
            &marc_fixture("noholdings.xml"),
        ])
        .run();
    let items: i64 = c
        .query_one("SELECT count(*) FROM item", &[])
        .unwrap()
        .get(0);
    assert_eq!(items, 18 + 12);
    // A bad record: its number and 001, exit 7, nothing written.
    Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "book",
            "import",
            "--format",
            "marc",
            &marc_fixture("wronglength.mrc"),
        ])
        .status(7)
        .stderr_contains("1 bad record(s); nothing was written")
        .stderr_contains("  record 2: record length 270 in the leader, 263 bytes")
        .run();
    let books: i64 = c
        .query_one("SELECT count(*) FROM book", &[])
        .unwrap()
        .get(0);
    assert_eq!(books, 18);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("catalogue.xml");
    Libctl::new(&tdb)
        .actor(&desk)
        .args([
            "book",
            "export",
            "--format",
            "marcxml",
            "--with-items",
            "--out",
        ])
        .arg_path(&out)
        .stderr_contains("18 record(s) written")
        .run();
    let xml = std::fs::read_to_string(&out).unwrap();
    assert_eq!(xml.matches("<record").count(), 18);
    assert!(xml.contains("<subfield code=\"p\">K10011</subfield>"));
    let binary = Libctl::new(&tdb)
        .actor(&desk)
        .args(["book", "export", "--format", "marc"])
        .run();
    assert_eq!(binary.0.stdout.iter().filter(|&&b| b == 0x1D).count(), 18);
    let csv = Libctl::new(&tdb)
        .actor(&desk)
        .args(["book", "export", "--format", "csv"])
        .run()
        .stdout();
    assert!(
        csv.starts_with("isbn,title,author,genre,category,copies"),
        "{csv}"
    );
    assert_eq!(csv.lines().count(), 19);
    // The MARC formats belong to the catalogue's import and export only.
    Libctl::new(&tdb)
        .args(["report", "summary", "--format", "marc"])
        .status(7)
        .stderr_contains("book import")
        .run();
}
