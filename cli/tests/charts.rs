//! Charts and the HTML report through the binary (issue 29): each chart parses as SVG, names
//! its series and axes, and carries the data it was drawn from, equal to the report's JSON;
//! the page holds every chart inline and fetches nothing; a real browser renders it.

use serde_json::Value;

use crate::support::*;
use crate::util::*;

const AS_OF: &str = "2026-01-14T23:00:00Z";

fn seeded() -> TestDb {
    let db = TestDb::new();
    Libctl::new(&db)
        .args(["seed", "--scenario", "minimal", "--as-of", "2026-01-15"])
        .run();
    db
}

/// Runs `report KIND --chart`, returning the report's JSON, the SVG's text content and the
/// data the chart embeds.
fn charted(db: &TestDb, kind: &str, extra: &[&str]) -> (Value, String, Value) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{kind}.svg"));
    let json = Libctl::new(db)
        .args([
            "report", kind, "--as-of", AS_OF, "--format", "json", "--quiet", "--chart",
        ])
        .arg_path(&path)
        .args(extra)
        .run()
        .json();
    let svg = std::fs::read_to_string(&path).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the chart is well-formed SVG");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    let texts: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .collect();
    let data = doc
        .descendants()
        .find(|n| n.has_tag_name("metadata"))
        .and_then(|n| n.text())
        .map(|t| serde_json::from_str(t).unwrap())
        .expect("the chart carries its data");
    (json, texts.join("\n"), data)
}

#[test]
fn each_chart_shows_its_reports_data() {
    let db = seeded();
    let (rows, text, data) = charted(&db, "trends", &[]);
    assert_eq!(data, rows, "the trend chart's data is the report's");
    for label in [
        "loans",
        "returns",
        "overdue rate (%)",
        "month",
        "Loans and returns per month",
    ] {
        assert!(text.contains(label), "{label} in {text}");
    }
    assert!(text.contains("as of 2026-01-14 23:00 UTC"), "{text}");

    let (rows, text, data) = charted(&db, "overdue", &[]);
    let tier = |t: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["tier"] == t)
            .count() as i64
    };
    assert_eq!(data["tier_1_3"], tier("1-3"));
    assert_eq!(data["tier_4_7"], tier("4-7"));
    assert_eq!(data["tier_8_plus"], tier("8+"));
    assert!(text.contains("days overdue") && text.contains("open overdue loans"));
    for t in ["1-3", "4-7", "8+"] {
        assert!(
            text.contains(&tier(t).to_string()),
            "the bar of {t} says its value"
        );
    }

    let (rows, text, data) = charted(
        &db,
        "popular",
        &["--from", "2025-01-01", "--to", "2026-01-14"],
    );
    assert_eq!(data, rows);
    let first = rows[0]["name"].as_str().unwrap();
    assert!(
        text.contains(&first.chars().take(20).collect::<String>()),
        "{text}"
    );
    assert!(text.contains("2025-01-01 to 2026-01-14"), "{text}");

    let (rows, _, data) = charted(&db, "holds", &[]);
    let n = rows.as_array().unwrap().len().min(20);
    assert_eq!(data.as_array().unwrap()[..], rows.as_array().unwrap()[..n]);

    let (rows, text, data) = charted(&db, "risk", &[]);
    let high = rows
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["risk"] == "HIGH")
        .count();
    assert_eq!(data["HIGH"], high);
    assert!(text.contains("members") && text.contains("risk level"));

    Libctl::new(&db)
        .args(["report", "summary", "--chart", "/tmp/never.svg"])
        .status(7)
        .stderr_contains("has no chart")
        .run();
}

#[test]
fn the_html_report_is_one_self_contained_page_a_browser_renders() {
    let db = seeded();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    Libctl::new(&db)
        .args(["report", "html", "--as-of", AS_OF, "--out"])
        .arg_path(&page)
        .stderr_contains("report written to")
        .run();
    let html = std::fs::read_to_string(&page).unwrap();
    assert_eq!(html.matches("<svg").count(), 5, "every chart inline");
    for fetched in ["<script", "src=", "href=", "@import", "url("] {
        assert!(
            !html.contains(fetched),
            "the page fetches nothing: {fetched}"
        );
    }
    let summary = Libctl::new(&db)
        .args(["report", "summary", "--as-of", AS_OF, "--format", "json"])
        .run()
        .json();
    let books = summary["books"].as_i64().unwrap();
    let shown = books
        .to_string()
        .as_bytes()
        .rchunks(3)
        .rev()
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(",");
    assert!(html.contains(&format!("Titles<b>{shown}</b>")), "{shown}");
    assert!(html.contains("from database <code>"));
    assert!(html.contains("@media print"));
    // A real browser draws it; where none is installed the check is skipped, saying why.
    match std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--window-size=1000,1400",
        ])
        .arg(format!(
            "--screenshot={}",
            dir.path().join("shot.png").display()
        ))
        .arg(format!("file://{}", page.display()))
        .output()
    {
        Ok(_) => {
            let png = std::fs::read(dir.path().join("shot.png")).expect("a screenshot");
            assert!(png.starts_with(b"\x89PNG"));
            // A blank page compresses to a few kilobytes; text and charts do not.
            assert!(
                png.len() > 40_000,
                "the screenshot looks blank: {} bytes",
                png.len()
            );
        }
        Err(e) => eprintln!("skipping the browser check: {e} (apt-get install chromium)"),
    }
}

#[test]
fn an_empty_library_gets_a_page_that_says_so() {
    let db = TestDb::new();
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("report.html");
    Libctl::new(&db)
        .args(["report", "html", "--quiet", "--out"])
        .arg_path(&page)
        .run();
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains("This library has no loans yet"));
    assert!(html.contains("No data in this window."));
}
