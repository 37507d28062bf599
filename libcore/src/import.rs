//! All-or-nothing CSV imports: every row is parsed and validated before anything is written,
//! and every bad row is reported with its line number.

use std::collections::HashMap;
use std::io::Read;

use crate::error::{Result, RowError};

/// One data row of an import file, addressed by column name.
pub(crate) struct CsvRow<'a> {
    columns: &'a HashMap<String, usize>,
    record: &'a csv::StringRecord,
}

impl CsvRow<'_> {
    /// The trimmed value of `column`, `""` when the column is absent.
    pub(crate) fn get(&self, column: &str) -> &str {
        self.columns
            .get(column)
            .and_then(|&i| self.record.get(i))
            .map(str::trim)
            .unwrap_or("")
    }

    /// The value of `column`, or `None` when empty or absent.
    pub(crate) fn opt(&self, column: &str) -> Option<&str> {
        Some(self.get(column)).filter(|v| !v.is_empty())
    }
}

/// What reading an import file found: the good rows with their line numbers, and every
/// problem (header problems on line 1). Callers add their own checks before deciding.
#[derive(Debug, Clone)]
pub(crate) struct Parsed<T> {
    pub(crate) rows: Vec<(u64, T)>,
    pub(crate) errors: Vec<RowError>,
}

/// Reads every row, validating each with `parse`. Pure: no database.
pub(crate) fn read_rows<T>(
    input: impl Read,
    required: &[&str],
    optional: &[&str],
    mut parse: impl FnMut(&CsvRow<'_>) -> Result<T>,
) -> Parsed<T> {
    match read_all(input, required, optional, &mut parse) {
        Ok(parsed) => parsed,
        Err(errors) => Parsed {
            rows: Vec::new(),
            errors,
        },
    }
}

fn read_all<T>(
    input: impl Read,
    required: &[&str],
    optional: &[&str],
    parse: &mut impl FnMut(&CsvRow<'_>) -> Result<T>,
) -> std::result::Result<Parsed<T>, Vec<RowError>> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(input);
    let header_error = |reason: String| vec![RowError { line: 1, reason }];
    let headers = reader
        .headers()
        .map_err(|e| header_error(format!("cannot read the header: {e}")))?
        .clone();
    let names: Vec<String> = headers
        .iter()
        .map(|h| h.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
        .collect();
    let mut duplicated: Vec<&str> = names
        .iter()
        .enumerate()
        .filter(|(i, n)| names[..*i].contains(n))
        .map(|(_, n)| n.as_str())
        .collect();
    duplicated.dedup();
    if !duplicated.is_empty() {
        return Err(header_error(format!(
            "column(s) {} appear more than once in the header",
            duplicated.join(", ")
        )));
    }
    let columns: HashMap<String, usize> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    let missing: Vec<&str> = required
        .iter()
        .copied()
        .filter(|c| !columns.contains_key(*c))
        .collect();
    if !missing.is_empty() {
        return Err(header_error(format!(
            "missing column(s) {}; the header must be {}",
            missing.join(", "),
            required
                .iter()
                .chain(optional)
                .copied()
                .collect::<Vec<_>>()
                .join(",")
        )));
    }
    let unknown: Vec<&String> = columns
        .keys()
        .filter(|c| !required.contains(&c.as_str()) && !optional.contains(&c.as_str()))
        .collect();
    if !unknown.is_empty() {
        return Err(header_error(format!("unknown column(s) {unknown:?}")));
    }

    let mut good = Vec::new();
    let mut bad = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let line = reader.position().line() + 1;
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {
                let line = record.position().map_or(line, |p| p.line());
                if record.iter().all(|f| f.trim().is_empty()) {
                    continue;
                }
                if record.len() != headers.len() {
                    bad.push(RowError {
                        line,
                        reason: format!(
                            "expected {} fields, found {}",
                            headers.len(),
                            record.len()
                        ),
                    });
                    continue;
                }
                let row = CsvRow {
                    columns: &columns,
                    record: &record,
                };
                match parse(&row) {
                    Ok(value) => good.push((line, value)),
                    Err(e) => bad.push(RowError {
                        line,
                        reason: e.to_string(),
                    }),
                }
            }
            Err(e) => {
                bad.push(RowError {
                    line: e.position().map_or(line, |p| p.line()),
                    reason: format!("malformed CSV: {e}"),
                });
                if !matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                    break;
                }
            }
        }
    }
    Ok(Parsed {
        rows: good,
        errors: bad,
    })
}

/// Flags rows whose `key` repeats an earlier row's, as `duplicate of line N`.
pub(crate) fn duplicates_within<T>(
    rows: &[(u64, T)],
    key: impl Fn(&T) -> String,
    what: &str,
) -> Vec<RowError> {
    let mut first_seen: HashMap<String, u64> = HashMap::new();
    let mut errors = Vec::new();
    for (line, row) in rows {
        let k = key(row);
        if let Some(first) = first_seen.get(&k) {
            errors.push(RowError {
                line: *line,
                reason: format!("duplicate {what} {k} (first on line {first})"),
            });
        } else {
            first_seen.insert(k, *line);
        }
    }
    errors
}

/// Fails with every error, sorted by line, or passes the rows on.
pub(crate) fn all_or_nothing<T>(rows: Vec<(u64, T)>, mut errors: Vec<RowError>) -> Result<Vec<T>> {
    if errors.is_empty() {
        Ok(rows.into_iter().map(|(_, row)| row).collect())
    } else {
        errors.sort_by_key(|e| e.line);
        Err(crate::error::Error::InvalidRows { rows: errors })
    }
}

/// Summary of a successful import.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportSummary {
    /// What was imported (`book`, `member`).
    pub entity: &'static str,
    /// Rows written.
    pub imported: u64,
}
