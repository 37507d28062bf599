//! The one place rows are rendered: table, csv, json or ndjson. Commands hand over
//! `Serialize` values; nothing else formats output.

use std::io::{self, Write};

use comfy_table::{presets, ContentArrangement, Table};
use serde::Serialize;
use serde_json::{Map, Value};

/// Output formats of SPEC §13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A human-readable table (the default).
    Table,
    /// CSV with a header, streamed.
    Csv,
    /// One JSON document.
    Json,
    /// One JSON object per line, streamed.
    Ndjson,
    /// MARC 21 ISO 2709 (`book import` and `book export` only).
    Marc,
    /// MARCXML (`book import` and `book export` only).
    Marcxml,
}

impl Format {
    /// The MARC serialisation this format names, if it is one.
    pub fn marc(self) -> Option<libcore::marc::MarcFormat> {
        match self {
            Format::Marc => Some(libcore::marc::MarcFormat::Marc),
            Format::Marcxml => Some(libcore::marc::MarcFormat::Marcxml),
            _ => None,
        }
    }
}

/// Writes command results to stdout in the chosen format.
pub struct Renderer {
    format: Format,
    out: io::BufWriter<Box<dyn Write>>,
}

fn to_object(value: &impl Serialize) -> io::Result<Map<String, Value>> {
    match serde_json::to_value(value).map_err(io::Error::from)? {
        Value::Object(map) => Ok(map),
        other => {
            let mut map = Map::new();
            map.insert("value".into(), other);
            Ok(map)
        }
    }
}

/// The writer's own error out of a csv error, so a closed pipe stays a `BrokenPipe` (which
/// the binary treats as a reader that stopped reading, exit 0).
fn from_csv(error: csv::Error) -> io::Error {
    if !error.is_io_error() {
        return io::Error::other(error);
    }
    match error.into_kind() {
        csv::ErrorKind::Io(io) => io,
        _ => io::Error::other("csv writer failed"),
    }
}

/// A cell's text: strings bare, null empty, anything nested as compact JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Renderer {
    /// A renderer writing to stdout.
    pub fn new(format: Format) -> Renderer {
        Renderer::to_writer(format, Box::new(io::stdout()))
    }

    /// A renderer writing somewhere else (a file for `--out`).
    pub fn to_writer(format: Format, out: Box<dyn Write>) -> Renderer {
        Renderer {
            format,
            out: io::BufWriter::new(out),
        }
    }

    /// The chosen format.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Renders one object: a two-column table, one CSV row, or one JSON document.
    pub fn record(&mut self, value: &impl Serialize) -> io::Result<()> {
        match self.format {
            Format::Json => {
                serde_json::to_writer_pretty(&mut self.out, value).map_err(io::Error::from)?;
                writeln!(self.out)?;
            }
            Format::Ndjson => {
                serde_json::to_writer(&mut self.out, value).map_err(io::Error::from)?;
                writeln!(self.out)?;
            }
            Format::Csv => return self.rows(std::iter::once(value)),
            Format::Table | Format::Marc | Format::Marcxml => {
                let mut table = Table::new();
                table.load_preset(presets::NOTHING);
                for (key, v) in to_object(value)? {
                    table.add_row(vec![key, cell(&v)]);
                }
                writeln!(self.out, "{table}")?;
            }
        }
        self.out.flush()
    }

    /// Renders a sequence of objects. csv and ndjson stream row by row; json streams an array;
    /// a table needs every row first to size its columns.
    pub fn rows<T: Serialize>(&mut self, rows: impl IntoIterator<Item = T>) -> io::Result<()> {
        let mut count = 0usize;
        match self.format {
            Format::Ndjson => {
                for row in rows {
                    serde_json::to_writer(&mut self.out, &row).map_err(io::Error::from)?;
                    writeln!(self.out)?;
                }
            }
            Format::Json => {
                write!(self.out, "[")?;
                for row in rows {
                    if count > 0 {
                        write!(self.out, ",")?;
                    }
                    write!(self.out, "\n  ")?;
                    serde_json::to_writer(&mut self.out, &row).map_err(io::Error::from)?;
                    count += 1;
                }
                writeln!(self.out, "{}]", if count > 0 { "\n" } else { "" })?;
            }
            Format::Csv => {
                let mut writer = csv::Writer::from_writer(&mut self.out);
                let mut headers: Option<Vec<String>> = None;
                for row in rows {
                    let object = to_object(&row)?;
                    if headers.is_none() {
                        let keys: Vec<String> = object.keys().cloned().collect();
                        writer.write_record(&keys).map_err(from_csv)?;
                        headers = Some(keys);
                    }
                    writer
                        .write_record(object.values().map(cell))
                        .map_err(from_csv)?;
                }
                writer.flush()?;
            }
            Format::Table | Format::Marc | Format::Marcxml => {
                let mut table = Table::new();
                table
                    .load_preset(presets::UTF8_FULL_CONDENSED)
                    .set_content_arrangement(ContentArrangement::Dynamic);
                for row in rows {
                    let object = to_object(&row)?;
                    if count == 0 {
                        table.set_header(object.keys().cloned().collect::<Vec<_>>());
                    }
                    table.add_row(object.values().map(cell).collect::<Vec<_>>());
                    count += 1;
                }
                if count == 0 {
                    writeln!(self.out, "(no rows)")?;
                } else {
                    writeln!(self.out, "{table}")?;
                }
            }
        }
        self.out.flush()
    }

    /// Starts streaming rows one at a time (csv writes its header with the first row).
    pub fn stream(&mut self) -> RowStream<'_> {
        RowStream {
            renderer: self,
            started: false,
        }
    }

    /// Renders one page of a keyset listing with its next cursor: inside the JSON document,
    /// after the table, or on stderr for the streaming formats (so stdout stays pure data).
    pub fn page<T: Serialize>(&mut self, page: &libcore::page::Page<T>) -> io::Result<()> {
        match self.format {
            Format::Json => self.record(page),
            Format::Table | Format::Marc | Format::Marcxml => {
                self.rows(&page.items)?;
                if let Some(next) = &page.next_cursor {
                    writeln!(self.out, "next cursor: {next}")?;
                }
                self.out.flush()
            }
            Format::Csv | Format::Ndjson => {
                self.rows(&page.items)?;
                if let Some(next) = &page.next_cursor {
                    eprintln!("next cursor: {next}");
                }
                Ok(())
            }
        }
    }

    /// One compact JSON object on its own line, whatever the format: the `--summary-json`
    /// line that cron logs collect.
    pub fn json_line(&mut self, value: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, value).map_err(io::Error::from)?;
        writeln!(self.out)?;
        self.out.flush()
    }

    /// A line of plain text, shown only in table format (a note for a person).
    pub fn note(&mut self, text: &str) -> io::Result<()> {
        if self.format == Format::Table {
            writeln!(self.out, "{text}")?;
            self.out.flush()?;
        }
        Ok(())
    }
}

/// Rows written as they arrive, for the streaming formats (csv, ndjson). Other formats
/// should collect and call [`Renderer::rows`].
pub struct RowStream<'a> {
    renderer: &'a mut Renderer,
    started: bool,
}

impl RowStream<'_> {
    /// Writes one row.
    pub fn push(&mut self, row: &impl Serialize) -> io::Result<()> {
        let out = &mut self.renderer.out;
        match self.renderer.format {
            Format::Csv => {
                let object = to_object(row)?;
                let mut writer = csv::WriterBuilder::new()
                    .has_headers(false)
                    .from_writer(&mut *out);
                if !self.started {
                    writer.write_record(object.keys()).map_err(from_csv)?;
                }
                writer
                    .write_record(object.values().map(cell))
                    .map_err(from_csv)?;
                writer.flush()?;
            }
            _ => {
                serde_json::to_writer(&mut *out, row).map_err(io::Error::from)?;
                writeln!(out)?;
            }
        }
        self.started = true;
        Ok(())
    }

    /// Flushes what is buffered.
    pub fn finish(self) -> io::Result<()> {
        self.renderer.out.flush()
    }
}

/// Hands `produce` a sink for rows: streamed straight out in csv and ndjson, collected and
/// rendered at the end for table and json.
pub fn emit_rows<T: Serialize>(
    out: &mut Renderer,
    produce: impl FnOnce(&mut dyn FnMut(T) -> libcore::Result<()>) -> libcore::Result<()>,
) -> anyhow::Result<()> {
    match out.format() {
        Format::Csv | Format::Ndjson => {
            let mut stream = out.stream();
            produce(&mut |row| {
                stream
                    .push(&row)
                    .map_err(|e| libcore::Error::io("writing rows", e))
            })?;
            stream.finish()?;
        }
        _ => {
            let mut rows = Vec::new();
            produce(&mut |row| {
                rows.push(row);
                Ok(())
            })?;
            out.rows(&rows)?;
        }
    }
    Ok(())
}
