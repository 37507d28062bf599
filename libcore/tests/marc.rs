//! MARC 21 import and export (issue 27) against the fixtures in `fixtures/marc/`: holdings
//! into items, every bad record named by its number, all or nothing, a round trip, and random
//! bytes that never panic and never write.

use std::path::PathBuf;

use libcore::error::Error;
use libcore::marc::{self, MarcFormat};
use postgres::Client;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

use crate::support::*;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/marc")
        .join(name)
}

fn count(c: &mut Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).unwrap().get(0)
}

fn import(c: &mut Client, name: &str, copies: i64) -> libcore::Result<marc::MarcImport> {
    let ctx = admin(c);
    let format = if name.ends_with(".xml") {
        MarcFormat::Marcxml
    } else {
        MarcFormat::Marc
    };
    marc::import(c, &ctx, &fixture(name), format, copies)
}

/// The bad records of a refused import, as (number, reason).
fn refused(result: libcore::Result<marc::MarcImport>) -> Vec<(u64, String)> {
    match result {
        Err(Error::InvalidRows { rows }) => rows.into_iter().map(|r| (r.line, r.reason)).collect(),
        other => panic!("expected bad records, got {other:?}"),
    }
}

#[test]
fn koha_holdings_become_items_in_both_formats() {
    for name in ["koha.mrc", "koha.xml"] {
        let tdb = TestDb::new();
        let mut c = tdb.client();
        let done = import(&mut c, name, 1).unwrap();
        assert_eq!(
            (done.records, done.books, done.items),
            (12, 12, 18),
            "{name}"
        );
        assert_eq!(done.warnings.len(), 1, "{:?}", done.warnings);
        assert!(done.warnings[0].reason.contains("record 3 (001 lib1002)"));
        let item: (String, Option<String>, Option<String>, Option<i64>) = c
            .query_one(
                "SELECT barcode, call_number, location, price_cents FROM item WHERE barcode = 'K10011'",
                &[],
            )
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .unwrap();
        assert_eq!(
            item,
            (
                "K10011".into(),
                Some("FIC LE".into()),
                Some("Adult Fiction".into()),
                Some(1350)
            )
        );
        let book: (String, String, Option<String>, i32) = c
            .query_one(
                "SELECT title, author, genre, total_copies FROM book WHERE isbn = '9780000010018'",
                &[],
            )
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .unwrap();
        assert_eq!(
            book,
            (
                "A wizard of Earthsea".into(),
                "Le Guin, Ursula K".into(),
                Some("Fantasy fiction".into()),
                2
            )
        );
        assert_invariants(&mut c);
    }
}

#[test]
fn holdings_852_and_records_without_holdings() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let done = import(&mut c, "holdings852.mrc", 1).unwrap();
    assert_eq!((done.books, done.items), (6, 6));
    let (call, location): (Option<String>, Option<String>) = c
        .query_one(
            "SELECT call_number, location FROM item WHERE barcode = 'H1012'",
            &[],
        )
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(
        (call.as_deref(), location.as_deref()),
        (Some("823.914 CAR"), Some("Central Stacks"))
    );
    let done = import(&mut c, "noholdings.xml", 3).unwrap();
    assert_eq!((done.books, done.items), (6, 18), "--copies 3 each");
    assert_invariants(&mut c);
}

#[test]
fn every_bad_fixture_is_refused_by_record_number_and_writes_nothing() {
    let cases: [(&str, u64, &str); 7] = [
        ("marc8.mrc", 1, "MARC-8"),
        ("badisbn.mrc", 2, "no valid ISBN"),
        ("badisbn.xml", 2, "no valid ISBN"),
        ("notabook.mrc", 2, "not a book"),
        ("notabook.xml", 2, "not a book"),
        ("truncated.mrc", 2, "truncated"),
        ("wronglength.mrc", 2, "record length"),
    ];
    let tdb = TestDb::new();
    let mut c = tdb.client();
    for (name, number, reason) in cases {
        let bad = refused(import(&mut c, name, 1));
        assert_eq!(bad.len(), 1, "{name}: {bad:?}");
        assert_eq!(bad[0].0, number, "{name}: {bad:?}");
        assert!(
            bad[0].1.contains(&format!("record {number}")) && bad[0].1.contains(reason),
            "{name}: {bad:?}"
        );
        assert_eq!(count(&mut c, "SELECT count(*) FROM book"), 0, "{name}");
        assert_eq!(count(&mut c, "SELECT count(*) FROM item"), 0, "{name}");
    }
    // The record's 001 names it too.
    let bad = refused(import(&mut c, "badisbn.xml", 1));
    assert!(bad[0].1.contains("(001 lib1001)"), "{bad:?}");
}

#[test]
fn duplicates_against_the_database_are_refused() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    import(&mut c, "koha.mrc", 1).unwrap();
    let bad = refused(import(&mut c, "koha.xml", 1));
    assert_eq!(bad.len(), 12);
    assert!(bad[0].1.contains("already catalogued"), "{bad:?}");
    assert_eq!(count(&mut c, "SELECT count(*) FROM book"), 12);
    // Repeated inside one file: the second copy of each record is refused, nothing written.
    let fresh = TestDb::new();
    let mut f = fresh.client();
    let ctx = admin(&mut f);
    let dir = tempfile::tempdir().unwrap();
    let twice = dir.path().join("twice.mrc");
    let once = std::fs::read(fixture("koha.mrc")).unwrap();
    std::fs::write(&twice, [once.clone(), once].concat()).unwrap();
    let bad = refused(marc::import(&mut f, &ctx, &twice, MarcFormat::Marc, 1));
    assert_eq!(bad.len(), 12, "{bad:?}");
    assert!(bad.iter().all(|(n, _)| *n > 12), "{bad:?}");
    assert_eq!(count(&mut f, "SELECT count(*) FROM book"), 0);
}

fn catalogue(c: &mut Client) -> Vec<String> {
    c.query(
        "SELECT format('%s|%s|%s|%s|%s', b.isbn, b.title, b.author, b.genre,
                       string_agg(format('%s,%s,%s,%s', i.barcode, i.call_number, i.location, i.price_cents), ';' ORDER BY i.barcode))
         FROM book b JOIN item i ON i.book_id = b.id
         GROUP BY b.isbn, b.title, b.author, b.genre ORDER BY b.isbn",
        &[],
    )
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

#[test]
fn an_export_imports_back_to_the_same_catalogue_and_yaz_reads_it() {
    let source = TestDb::new();
    let mut c = source.client();
    import(&mut c, "koha.mrc", 1).unwrap();
    import(&mut c, "holdings852.xml", 1).unwrap();
    let ctx = admin(&mut c);
    let dir = tempfile::tempdir().unwrap();
    for (format, file) in [
        (MarcFormat::Marc, "out.mrc"),
        (MarcFormat::Marcxml, "out.xml"),
    ] {
        let path = dir.path().join(file);
        let mut out = std::fs::File::create(&path).unwrap();
        let written = marc::export(&mut c, &ctx, format, true, &mut out).unwrap();
        assert_eq!(written, 18);
        let target = TestDb::new();
        let mut t = target.client();
        let admin_t = admin(&mut t);
        let done = marc::import(&mut t, &admin_t, &path, format, 1).unwrap();
        assert_eq!((done.books, done.items), (18, 24));
        assert_eq!(catalogue(&mut t), catalogue(&mut c), "{file}");
        match std::process::Command::new("yaz-marcdump")
            .args(if format == MarcFormat::Marcxml {
                vec!["-i", "marcxml", "-o", "line"]
            } else {
                vec!["-o", "line"]
            })
            .arg(&path)
            .output()
        {
            Ok(run) => {
                assert!(run.status.success(), "yaz-marcdump failed on {file}");
                let stderr = String::from_utf8_lossy(&run.stderr);
                assert!(
                    stderr.trim().is_empty(),
                    "yaz-marcdump warned on {file}: {stderr}"
                );
                let text = String::from_utf8_lossy(&run.stdout);
                assert_eq!(text.matches("\n245 ").count(), 18, "{file}");
            }
            Err(e) => eprintln!("skipping the yaz-marcdump check: {e} (apt-get install yaz)"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random bytes, and real records cut anywhere or with a byte changed, never panic.
    #[test]
    fn random_and_damaged_bytes_never_panic(
        random in proptest::collection::vec(any::<u8>(), 0..400),
        cut in 0usize..4277,
        flip in 0usize..4277,
        byte in any::<u8>(),
    ) {
        let mut damaged = std::fs::read(fixture("koha.mrc")).unwrap();
        damaged.truncate(cut.max(1));
        let len = damaged.len();
        damaged[flip % len] = byte;
        for bytes in [random, damaged] {
            for raw in bytes.split_inclusive(|&b| b == 0x1D) {
                if let Ok(record) = marc::parse_binary(raw) {
                    let _ = marc::map_record(&record);
                }
            }
        }
    }
}

#[test]
fn damaged_files_never_write() {
    let tdb = TestDb::new();
    let mut c = tdb.client();
    let ctx = admin(&mut c);
    let good = std::fs::read(fixture("koha.mrc")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.mrc");
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for _ in 0..24 {
        let (cut, flip, byte) = (0usize..good.len(), 0usize..good.len(), any::<u8>())
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let mut bytes = good.clone();
        bytes.truncate(cut.max(1));
        let len = bytes.len();
        bytes[flip % len] = byte;
        std::fs::write(&path, &bytes).unwrap();
        let result = marc::import(&mut c, &ctx, &path, MarcFormat::Marc, 1);
        let written = count(&mut c, "SELECT count(*) FROM book");
        if result.is_ok() {
            // A cut on a record boundary with an unchanged byte is a good, shorter file.
            c.batch_execute("DELETE FROM item; DELETE FROM book")
                .unwrap();
        } else {
            assert_eq!(written, 0, "a refused import wrote {written} books");
        }
    }
}
