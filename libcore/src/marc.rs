//! MARC 21 in and out (issue 27): catalogue records and their items, in ISO 2709 binary or
//! MARCXML, read and written with the `marctk` crate.
//!
//! `marctk` reads and writes both formats (and breaker text) with one record type; the `marc`
//! crate reads binary only. `marctk` trusts the byte counts of a binary record, so every
//! record is framed and its leader and directory checked here first (length, base address,
//! each entry inside the record and ending a field, subfield codes, UTF-8): a damaged file is
//! reported record by record and never reaches its slicing. Neither crate converts MARC-8, so
//! a MARC-8 record (leader/09 blank) is refused by number, never stored as mojibake.
//!
//! Imports stream: one record at a time, written in batches inside the import's one
//! transaction, which rolls back when any record is bad, so memory holds a batch and the
//! errors, never the file.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

use chrono::{DateTime, Utc};
use marctk::Record;
use postgres::{Client, GenericClient};
use serde_json::json;
use uuid::Uuid;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, Operation};
use crate::error::{Error, Result, RowError};
use crate::{barcode, ids, validate};

/// The two MARC serialisations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MarcFormat {
    /// ISO 2709 (`.mrc`).
    Marc,
    /// MARCXML (MARC 21 slim).
    Marcxml,
}

/// The longest record ISO 2709 can describe.
const MAX_RECORD_BYTES: usize = 99_999;
const LEADER: usize = 24;
const FIELD_END: u8 = 0x1E;
const RECORD_END: u8 = 0x1D;
const SUBFIELD: u8 = 0x1F;
/// Records written per batch of an import.
const BATCH: usize = 500;

/// One holdings item of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarcItem {
    /// 952 $p / 852 $p; generated when absent.
    pub barcode: Option<String>,
    /// 952 $o / 852 $h $i.
    pub call_number: Option<String>,
    /// 952 $c / 852 $b $c.
    pub location: Option<String>,
    /// 952 $v or $g, in cents.
    pub price_cents: Option<i64>,
}

/// A record mapped to a title and its items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarcBook {
    /// The first valid 020 $a, normalised.
    pub isbn: String,
    /// 245 $a $b, ISBD punctuation trimmed.
    pub title: String,
    /// 100/110/111 $a, else 245 $c.
    pub author: String,
    /// The first 650/655 $a.
    pub genre: Option<String>,
    /// From 952, else 852; empty when the record has no holdings.
    pub items: Vec<MarcItem>,
    /// Invalid 020 $a values passed over for the valid one.
    pub skipped_isbns: Vec<String>,
}

/// Checks the framing of one binary record: leader, length, directory, field and subfield
/// structure, encoding. Returns the reason it cannot be read.
fn check_binary(raw: &[u8]) -> std::result::Result<(), String> {
    if raw.len() < LEADER + 2 {
        return Err(format!("truncated record: {} bytes", raw.len()));
    }
    if raw[raw.len() - 1] != RECORD_END {
        return Err("truncated record: no record terminator".into());
    }
    let number = |bytes: &[u8], what: &str| -> std::result::Result<usize, String> {
        std::str::from_utf8(bytes)
            .ok()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                format!(
                    "broken leader: {what} {:?} is not a number",
                    String::from_utf8_lossy(bytes)
                )
            })
    };
    let declared = number(&raw[0..5], "record length")?;
    if declared != raw.len() {
        return Err(format!(
            "record length {declared} in the leader, {} bytes in the file",
            raw.len()
        ));
    }
    if raw[9] == b' ' {
        return Err(
            "MARC-8 record (leader/09 blank): convert it to UTF-8 first, e.g. \
             yaz-marcdump -f MARC-8 -t UTF-8 -o marc -l 9=97"
                .into(),
        );
    }
    if raw[9] != b'a' {
        return Err(format!(
            "unknown character coding {:?} at leader/09",
            raw[9] as char
        ));
    }
    let base = number(&raw[12..17], "base address")?;
    if base <= LEADER || base > raw.len() - 1 || raw[base - 1] != FIELD_END {
        return Err(format!("broken directory: base address {base}"));
    }
    let directory = &raw[LEADER..base - 1];
    if directory.is_empty() || !directory.len().is_multiple_of(12) {
        return Err(format!("broken directory: {} bytes", directory.len()));
    }
    for entry in directory.chunks(12) {
        let tag = &entry[0..3];
        if !tag.iter().all(|b| b.is_ascii_alphanumeric()) {
            return Err(format!(
                "broken directory: tag {:?}",
                String::from_utf8_lossy(tag)
            ));
        }
        let len = number(&entry[3..7], "field length")?;
        let start = number(&entry[7..12], "field start")?;
        let from = base + start;
        let to = from + len;
        if len == 0 || to > raw.len() - 1 || raw[to - 1] != FIELD_END {
            return Err(format!(
                "broken directory: field {} runs outside the record",
                String::from_utf8_lossy(tag)
            ));
        }
        let field = &raw[from..to - 1];
        if std::str::from_utf8(field).is_err() {
            return Err(format!(
                "field {} is not UTF-8 although leader/09 says so",
                String::from_utf8_lossy(tag)
            ));
        }
        if tag >= b"010".as_slice() {
            if field.len() < 2 || !field[..2].iter().all(u8::is_ascii) {
                return Err(format!(
                    "field {} has no indicators",
                    String::from_utf8_lossy(tag)
                ));
            }
            let mut parts = field.split(|&b| b == SUBFIELD).skip(1);
            if parts.any(|p| p.first().is_none_or(|c| !c.is_ascii_alphanumeric())) {
                return Err(format!(
                    "field {} has an empty or non-ASCII subfield code",
                    String::from_utf8_lossy(tag)
                ));
            }
        }
    }
    Ok(())
}

/// Reads one binary record's bytes (up to and including its terminator); `None` at the end.
fn next_binary(reader: &mut impl BufRead) -> Result<Option<Vec<u8>>> {
    let mut raw = Vec::new();
    reader
        .take(MAX_RECORD_BYTES as u64 + 1)
        .read_until(RECORD_END, &mut raw)
        .map_err(|e| Error::io("reading the MARC file", e))?;
    // Blank lines or a trailing newline between records are not records.
    while raw.first().is_some_and(|b| b.is_ascii_whitespace()) {
        raw.remove(0);
    }
    Ok((!raw.is_empty()).then_some(raw))
}

/// Parses one binary record after checking its framing.
pub fn parse_binary(raw: &[u8]) -> std::result::Result<Record, String> {
    check_binary(raw)?;
    Record::from_binary(raw)
}

/// One record of a file: its number (from 1), and the record or the reason it cannot be read.
pub type NumberedRecord = (u64, std::result::Result<Record, String>);

/// The records of a file, one at a time.
pub fn read_records(
    path: &Path,
    format: MarcFormat,
) -> Result<Box<dyn Iterator<Item = NumberedRecord>>> {
    match format {
        MarcFormat::Marc => {
            let file = std::fs::File::open(path)
                .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
            let mut reader = BufReader::new(file);
            let mut number = 0;
            Ok(Box::new(std::iter::from_fn(move || {
                number += 1;
                match next_binary(&mut reader) {
                    Ok(Some(raw)) if raw.len() > MAX_RECORD_BYTES => {
                        Some((number, Err("record longer than 99,999 bytes".into())))
                    }
                    Ok(Some(raw)) => Some((number, parse_binary(&raw))),
                    Ok(None) => None,
                    Err(e) => Some((number, Err(e.to_string()))),
                }
            })))
        }
        MarcFormat::Marcxml => {
            let path = path
                .to_str()
                .ok_or_else(|| Error::invalid("invalid_input", "the file's path is not UTF-8"))?;
            let records = Record::from_xml_file(path)
                .map_err(|e| Error::invalid("invalid_input", format!("reading {path}: {e}")))?;
            Ok(Box::new(
                records.zip(1..).map(|(record, number)| (number, record)),
            ))
        }
    }
}

/// Trims the ISBD punctuation a cataloguer ends a subfield with (` /`, ` :`, ` ;`, `,`, `.`).
fn trim_isbd(s: &str) -> String {
    s.trim()
        .trim_end_matches([' ', '/', ':', ';', ',', '.', '='])
        .trim()
        .to_string()
}

fn first_value(record: &Record, tags: &[&str], code: &str) -> Option<String> {
    tags.iter()
        .flat_map(|tag| record.get_field_values(tag, code))
        .map(trim_isbd)
        .find(|v| !v.is_empty())
}

/// A price such as `12.50`, `EUR 12,50` or `$12`, in cents.
fn price_cents(raw: &str) -> std::result::Result<i64, String> {
    let digits: String = raw
        .trim()
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .replace(',', ".");
    let (whole, cents) = match digits.split_once('.') {
        Some((w, c)) if c.len() <= 2 => (w, format!("{c:0<2}")),
        Some(_) => return Err(format!("price {raw:?} has more than two decimals")),
        None => (digits.as_str(), "00".to_string()),
    };
    match (whole.parse::<i64>(), cents.parse::<i64>()) {
        (Ok(w), Ok(c)) if !whole.is_empty() && w < 100_000 => Ok(w * 100 + c),
        _ => Err(format!("price {raw:?} is not an amount")),
    }
}

/// The record's holdings: Koha's 952 fields, else 852 fields.
fn holdings(record: &Record) -> std::result::Result<Vec<MarcItem>, String> {
    let join = |field: &marctk::Field, codes: &[&str]| -> Option<String> {
        let parts: Vec<String> = codes
            .iter()
            .flat_map(|c| field.get_subfields(c))
            .map(|s| s.content().trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    };
    let barcode_of = |field: &marctk::Field| -> std::result::Result<Option<String>, String> {
        match join(field, &["p"]) {
            Some(b) => barcode::validate(&b)
                .map(|b| Some(b.to_string()))
                .map_err(|e| e.to_string()),
            None => Ok(None),
        }
    };
    let koha = record.get_fields("952");
    if !koha.is_empty() {
        return koha
            .into_iter()
            .map(|f| {
                Ok(MarcItem {
                    barcode: barcode_of(f)?,
                    call_number: join(f, &["o"]),
                    location: join(f, &["c"]),
                    price_cents: join(f, &["v"])
                        .or_else(|| join(f, &["g"]))
                        .map(|p| price_cents(&p))
                        .transpose()?,
                })
            })
            .collect();
    }
    record
        .get_fields("852")
        .into_iter()
        .map(|f| {
            Ok(MarcItem {
                barcode: barcode_of(f)?,
                call_number: join(f, &["h", "i"]),
                location: join(f, &["b", "c"]),
                price_cents: None,
            })
        })
        .collect()
}

/// Maps one record to a title and its items, or says why it cannot be catalogued.
pub fn map_record(record: &Record) -> std::result::Result<MarcBook, String> {
    let leader = record.leader().as_bytes();
    if leader.len() == LEADER && !(matches!(leader[6], b'a' | b't') && leader[7] == b'm') {
        return Err(format!(
            "not a book: leader/06-07 {:?} (a book is language material, a monograph: am or tm)",
            String::from_utf8_lossy(&leader[6..8])
        ));
    }
    let mut skipped_isbns = Vec::new();
    let mut isbn = None;
    for raw in record.get_field_values("020", "a") {
        let candidate = raw.split_whitespace().next().unwrap_or("");
        match validate::normalize_isbn(candidate) {
            Ok(valid) if isbn.is_none() => isbn = Some(valid),
            Ok(_) => {}
            Err(_) => skipped_isbns.push(raw.trim().to_string()),
        }
    }
    let isbn = isbn.ok_or_else(|| match skipped_isbns.as_slice() {
        [] => "no ISBN (020 $a)".to_string(),
        bad => format!("no valid ISBN in 020 $a: {}", bad.join(", ")),
    })?;
    let title = record
        .get_fields("245")
        .first()
        .map(|f| {
            ["a", "b"]
                .iter()
                .flat_map(|c| f.get_subfields(c))
                .map(|s| trim_isbd(s.content()))
                .filter(|s| !s.is_empty())
                .collect::<Vec<_>>()
                .join(": ")
        })
        .filter(|t| !t.is_empty())
        .ok_or("no title (245 $a)")?;
    let author = first_value(record, &["100", "110", "111"], "a")
        .or_else(|| first_value(record, &["245"], "c"))
        .ok_or("no author (100/110/111 $a or 245 $c)")?;
    let genre = first_value(record, &["650", "655"], "a");
    Ok(MarcBook {
        isbn,
        title: validate::required_text("title", &title, 500).map_err(|e| e.to_string())?,
        author: validate::required_text("author", &author, 300).map_err(|e| e.to_string())?,
        genre: validate::optional_text("genre", genre.as_deref(), 100)
            .map_err(|e| e.to_string())?,
        items: holdings(record)?,
        skipped_isbns,
    })
}

/// What an import wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MarcImport {
    /// Records read.
    pub records: u64,
    /// Titles catalogued.
    pub books: u64,
    /// Items added: from holdings, or generated for records without any.
    pub items: u64,
    /// Invalid ISBNs passed over for a valid one in the same record.
    pub warnings: Vec<RowError>,
}

/// Writes one batch; reports the records whose ISBN or barcodes are taken (in the file or the
/// database) instead of writing them.
fn write_batch(
    tx: &mut impl GenericClient,
    batch: &[(u64, MarcBook)],
    copies: i32,
    at: DateTime<Utc>,
    errors: &mut Vec<RowError>,
    done: &mut MarcImport,
    generated: &mut Vec<(Uuid, i32)>,
) -> Result<()> {
    let count = |b: &MarcBook| -> i32 {
        if b.items.is_empty() {
            copies
        } else {
            b.items.len() as i32
        }
    };
    let ids: Vec<Uuid> = batch.iter().map(|_| ids::new_id(at)).collect();
    let isbns: Vec<&str> = batch.iter().map(|(_, b)| b.isbn.as_str()).collect();
    let titles: Vec<&str> = batch.iter().map(|(_, b)| b.title.as_str()).collect();
    let authors: Vec<&str> = batch.iter().map(|(_, b)| b.author.as_str()).collect();
    let genres: Vec<Option<&str>> = batch.iter().map(|(_, b)| b.genre.as_deref()).collect();
    let counts: Vec<i32> = batch.iter().map(|(_, b)| count(b)).collect();
    let inserted: std::collections::HashSet<Uuid> = tx
        .query(
            "INSERT INTO book (id, isbn, title, author, genre, category, total_copies,
                               available_copies, created_at)
             SELECT id, isbn, title, author, genre, 'standard', copies, copies, $7
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[])
                  AS t(id, isbn, title, author, genre, copies)
             ON CONFLICT (isbn) DO NOTHING RETURNING id",
            &[&ids, &isbns, &titles, &authors, &genres, &counts, &at],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut item_book = Vec::new();
    let mut item_barcode = Vec::new();
    let mut item_call = Vec::new();
    let mut item_location = Vec::new();
    let mut item_price = Vec::new();
    let mut item_record = Vec::new();
    for ((number, book), id) in batch.iter().zip(&ids) {
        if !inserted.contains(id) {
            errors.push(RowError {
                line: *number,
                reason: format!(
                    "ISBN {} is already catalogued (in the database or earlier in the file)",
                    book.isbn
                ),
            });
            continue;
        }
        done.books += 1;
        if book.items.is_empty() {
            generated.push((*id, copies));
        }
        for item in &book.items {
            item_book.push(*id);
            item_barcode.push(item.barcode.clone());
            item_call.push(item.call_number.clone());
            item_location.push(item.location.clone());
            item_price.push(item.price_cents);
            item_record.push(*number);
        }
    }
    let written: Vec<(Option<String>, i64)> = tx
        .query(
            "INSERT INTO item (id, book_id, barcode, status, location, call_number, price_cents,
                               created_at, status_changed_at)
             SELECT uuid_v7($6), t.book_id, coalesce(t.barcode, next_item_barcode()), 'available',
                    t.location, t.call_number, t.price, $6, $6
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[])
                  WITH ORDINALITY AS t(book_id, barcode, call_number, location, price, n)
             ORDER BY t.n
             ON CONFLICT (barcode) DO NOTHING
             RETURNING barcode, 1::bigint",
            &[
                &item_book,
                &item_barcode,
                &item_call,
                &item_location,
                &item_price,
                &at,
            ],
        )?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    done.items += written.len() as u64;
    if written.len() < item_book.len() {
        let kept: std::collections::HashSet<String> =
            written.into_iter().filter_map(|(b, _)| b).collect();
        for (barcode, number) in item_barcode.iter().zip(&item_record) {
            if let Some(b) = barcode.as_ref().filter(|b| !kept.contains(*b)) {
                errors.push(RowError {
                    line: *number,
                    reason: format!(
                        "barcode {b} is already taken (in the database or earlier in the file)"
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Adds the generated items of the records without holdings, once every given barcode of the
/// file is in: `next_item_barcode` skips taken barcodes, so a generated one never collides
/// with a barcode further down the file.
fn write_generated(
    tx: &mut impl GenericClient,
    generated: &[(Uuid, i32)],
    at: DateTime<Utc>,
) -> Result<u64> {
    let mut added = 0;
    for chunk in generated.chunks(10_000) {
        added += crate::catalog::add_generated_items(tx, chunk, at)?;
    }
    Ok(added)
}

/// `libctl book import --format marc|marcxml FILE [--copies N]` (librarian or admin): all or
/// nothing, streamed. Every bad record is reported with its number in the file, its 001 and
/// the reason, and nothing is written when there is one.
pub fn import(
    client: &mut Client,
    ctx: &Ctx,
    path: &Path,
    format: MarcFormat,
    copies: i64,
) -> Result<MarcImport> {
    let op = Operation::new(
        "book.import",
        "book",
        json!({ "file": path.display().to_string(), "format": format, "copies": copies }),
    );
    let copies = validate::copies(copies)?;
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Catalogue)?;
        let at = ctx.now();
        let mut done = MarcImport {
            records: 0,
            books: 0,
            items: 0,
            warnings: Vec::new(),
        };
        let mut errors = Vec::new();
        let mut batch = Vec::with_capacity(BATCH);
        let mut generated = Vec::new();
        // Read inside the transaction: a retried transaction reads the file again.
        let mut records = read_records(path, format)?;
        for (number, parsed) in &mut records {
            done.records = number;
            let (record, mapped) = match parsed {
                Ok(record) => {
                    let mapped = map_record(&record);
                    (Some(record), mapped)
                }
                Err(reason) => (None, Err(reason)),
            };
            let named = |reason: String| {
                let id = record
                    .as_ref()
                    .and_then(|r| {
                        r.get_control_fields("001")
                            .first()
                            .map(|f| f.content().trim().to_string())
                    })
                    .filter(|s| !s.is_empty());
                RowError {
                    line: number,
                    reason: match id {
                        Some(id) => format!("record {number} (001 {id}): {reason}"),
                        None => format!("record {number}: {reason}"),
                    },
                }
            };
            match mapped {
                Ok(book) => {
                    for bad in &book.skipped_isbns {
                        done.warnings
                            .push(named(format!("invalid ISBN {bad:?} in 020 $a passed over")));
                    }
                    batch.push((number, book));
                }
                Err(reason) => errors.push(named(reason)),
            }
            if batch.len() == BATCH {
                if errors.is_empty() {
                    write_batch(
                        tx,
                        &batch,
                        copies,
                        at,
                        &mut errors,
                        &mut done,
                        &mut generated,
                    )?;
                }
                batch.clear();
            }
        }
        if errors.is_empty() && !batch.is_empty() {
            write_batch(
                tx,
                &batch,
                copies,
                at,
                &mut errors,
                &mut done,
                &mut generated,
            )?;
        }
        if errors.is_empty() {
            done.items += write_generated(tx, &generated, at)?;
        }
        if done.records == 0 {
            errors.push(RowError {
                line: 0,
                reason: "the file holds no MARC record".into(),
            });
        }
        if !errors.is_empty() {
            errors.sort_by_key(|e| e.line);
            return Err(Error::InvalidRows { rows: errors });
        }
        Ok(Audited::new(
            done.clone(),
            "import",
            json!({ "records": done.records, "books": done.books, "items": done.items }),
        ))
    })
}

/// One title of the catalogue as a MARC record: 001 (the book's id), 020, 100, 245, 650, and
/// with `items` a 952 per item ($p barcode, $o call number, $c location, $v price).
fn book_record(
    id: Uuid,
    isbn: &str,
    title: &str,
    author: &str,
    genre: Option<&str>,
    items: &[MarcItem],
) -> std::result::Result<Record, String> {
    let mut record = Record::new();
    record.set_leader("00000nam a2200000 a 4500")?;
    record.add_control_field("001", &id.to_string())?;
    // Built whole, then inserted: `add_data_field`'s returned field is not always the new one.
    let mut field = |tag: &str,
                     ind: (&str, &str),
                     subfields: &[(&str, &str)]|
     -> std::result::Result<(), String> {
        let mut f = marctk::Field::new(tag)?;
        f.set_ind1(ind.0)?;
        f.set_ind2(ind.1)?;
        for (code, value) in subfields {
            f.add_subfield(*code, *value)?;
        }
        record.insert_data_field(f);
        Ok(())
    };
    field("020", (" ", " "), &[("a", isbn)])?;
    field("100", ("1", " "), &[("a", author)])?;
    field("245", ("1", "0"), &[("a", title)])?;
    if let Some(genre) = genre {
        field("650", (" ", "0"), &[("a", genre)])?;
    }
    for item in items {
        let price = item
            .price_cents
            .map(|c| format!("{}.{:02}", c / 100, c % 100));
        let mut subfields: Vec<(&str, &str)> = Vec::new();
        if let Some(b) = &item.barcode {
            subfields.push(("p", b));
        }
        if let Some(c) = &item.call_number {
            subfields.push(("o", c));
        }
        if let Some(l) = &item.location {
            subfields.push(("c", l));
        }
        if let Some(p) = &price {
            subfields.push(("v", p));
        }
        field("952", (" ", " "), &subfields)?;
    }
    Ok(record)
}

/// `libctl book export --format marc|marcxml [--with-items]`: every title in catalogue order,
/// streamed page by page to `out`. Returns the records written.
pub fn export(
    client: &mut Client,
    ctx: &Ctx,
    format: MarcFormat,
    with_items: bool,
    out: &mut dyn Write,
) -> Result<u64> {
    ctx.require(Capability::Catalogue)?;
    let io = |e: std::io::Error| Error::io("writing the MARC export", e);
    let internal = |e: String| Error::Internal(format!("building a MARC record: {e}"));
    if format == MarcFormat::Marcxml {
        out.write_all(
            b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<collection xmlns=\"http://www.loc.gov/MARC21/slim\">\n",
        )
        .map_err(io)?;
    }
    let mut after = Uuid::nil();
    let mut written = 0u64;
    loop {
        let rows = client.query(
            "SELECT b.id, b.isbn, b.title, b.author, b.genre,
                    coalesce(array_agg(i.barcode ORDER BY i.id) FILTER (WHERE i.id IS NOT NULL), '{}'),
                    coalesce(array_agg(i.call_number ORDER BY i.id) FILTER (WHERE i.id IS NOT NULL), '{}'),
                    coalesce(array_agg(i.location ORDER BY i.id) FILTER (WHERE i.id IS NOT NULL), '{}'),
                    coalesce(array_agg(i.price_cents ORDER BY i.id) FILTER (WHERE i.id IS NOT NULL), '{}')
             FROM (SELECT * FROM book WHERE id > $1 ORDER BY id LIMIT 1000) b
             LEFT JOIN item i ON $2 AND i.book_id = b.id AND i.status NOT IN ('withdrawn', 'lost')
             GROUP BY b.id, b.isbn, b.title, b.author, b.genre
             ORDER BY b.id",
            &[&after, &with_items],
        )?;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        for r in &rows {
            let barcodes: Vec<String> = r.get(5);
            let calls: Vec<Option<String>> = r.get(6);
            let locations: Vec<Option<String>> = r.get(7);
            let prices: Vec<Option<i64>> = r.get(8);
            let items: Vec<MarcItem> = barcodes
                .into_iter()
                .zip(calls)
                .zip(locations)
                .zip(prices)
                .map(
                    |(((barcode, call_number), location), price_cents)| MarcItem {
                        barcode: Some(barcode),
                        call_number,
                        location,
                        price_cents,
                    },
                )
                .collect();
            let genre: Option<String> = r.get(4);
            let record = book_record(
                r.get(0),
                r.get(1),
                r.get(2),
                r.get(3),
                genre.as_deref(),
                &items,
            )
            .map_err(internal)?;
            match format {
                MarcFormat::Marc => out
                    .write_all(&record.to_binary().map_err(internal)?)
                    .map_err(io)?,
                MarcFormat::Marcxml => {
                    let xml = record.to_xml_string();
                    // One collection: each record without its own namespace declaration.
                    let xml = xml.replacen(
                        " xmlns=\"http://www.loc.gov/MARC21/slim\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:schemaLocation=\"http://www.loc.gov/MARC21/slim http://www.loc.gov/standards/marcxml/schema/MARC21slim.xsd\"",
                        "",
                        1,
                    );
                    out.write_all(xml.as_bytes()).map_err(io)?;
                    out.write_all(b"\n").map_err(io)?;
                }
            }
            written += 1;
        }
    }
    if format == MarcFormat::Marcxml {
        out.write_all(b"</collection>\n").map_err(io)?;
    }
    out.flush().map_err(io)?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_parse_to_cents_or_say_why() {
        assert_eq!(price_cents("12.50"), Ok(1250));
        assert_eq!(price_cents("EUR 12,5"), Ok(1250));
        assert_eq!(price_cents("$12"), Ok(1200));
        assert!(price_cents("12.505").is_err());
        assert!(price_cents("free").is_err());
    }

    #[test]
    fn isbd_punctuation_is_trimmed() {
        assert_eq!(trim_isbd("The hobbit /"), "The hobbit");
        assert_eq!(trim_isbd("Tolkien, J. R. R.,"), "Tolkien, J. R. R");
        assert_eq!(trim_isbd("  Fantasy fiction. "), "Fantasy fiction");
    }
}
