//! Where generated rows go. Generation encodes chunks in parallel; a sink takes them in
//! order, one table at a time: into the seed's COPY stream, into CSV files, or into memory
//! for the load-limit baseline (which must not time generation).

use std::io::Write;
use std::path::{Path, PathBuf};

use libcore::{Error, Result};
use postgres::Transaction;

/// Whether rows go out as binary COPY or CSV.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Binary,
    Csv,
}

/// Encodes a slice of rows into one buffer in the chosen encoding.
pub(crate) fn encode<T>(
    encoding: Encoding,
    rows: &[T],
    binary: impl Fn(&mut Vec<u8>, &T),
    record: impl Fn(&T) -> Vec<String>,
) -> Vec<u8> {
    match encoding {
        Encoding::Binary => {
            let mut buf = Vec::with_capacity(rows.len() * 160);
            for row in rows {
                binary(&mut buf, row);
            }
            buf
        }
        Encoding::Csv => {
            let mut writer = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(Vec::new());
            for row in rows {
                writer
                    .write_record(record(row))
                    .expect("writing CSV to memory");
            }
            writer.into_inner().expect("CSV buffer")
        }
    }
}

/// Where one table's rows go: a COPY stream or a CSV file.
pub(crate) trait TableOut {
    /// Writes an encoded chunk.
    fn write_chunk(&mut self, bytes: &[u8]) -> Result<()>;
    /// Ends the table.
    fn finish(self: Box<Self>) -> Result<()>;
}

/// Opens tables for writing.
pub(crate) trait Sink {
    fn encoding(&self) -> Encoding;
    /// Records that the rollup holds every month before `month` (database sinks only).
    fn rollup_complete_before(&mut self, _month: chrono::NaiveDate) -> Result<()> {
        Ok(())
    }
    fn open<'a>(&'a mut self, table: &str, columns: &[&str]) -> Result<Box<dyn TableOut + 'a>>;
    /// True when history may go into monthly partitions (a database sink: a CSV file or the
    /// memory baseline holds each table whole).
    fn partitions(&self) -> bool {
        false
    }
}

/// COPY … FROM STDIN (FORMAT binary, FREEZE) into the open transaction.
pub(crate) struct CopySink<'t, 'c> {
    pub(crate) tx: &'t mut Transaction<'c>,
}

struct CopyTable<'a> {
    writer: postgres::CopyInWriter<'a>,
    table: String,
}

impl TableOut for CopyTable<'_> {
    fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        self.writer
            .write_all(bytes)
            .map_err(|e| Error::io(format!("COPY into {}", self.table), e))
    }
    fn finish(mut self: Box<Self>) -> Result<()> {
        self.writer
            .write_all(crate::copy::TRAILER)
            .map_err(|e| Error::io(format!("COPY into {}", self.table), e))?;
        self.writer.finish()?;
        Ok(())
    }
}

impl Sink for CopySink<'_, '_> {
    fn encoding(&self) -> Encoding {
        Encoding::Binary
    }
    fn rollup_complete_before(&mut self, month: chrono::NaiveDate) -> Result<()> {
        libcore::reports::set_rollup_complete_before(self.tx, month)
    }
    fn partitions(&self) -> bool {
        true
    }
    fn open<'a>(&'a mut self, table: &str, columns: &[&str]) -> Result<Box<dyn TableOut + 'a>> {
        // Table and column names come from the seeder's constants.
        let sql = format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary, FREEZE)",
            columns.join(", ")
        );
        let mut writer = self.tx.copy_in(&sql)?;
        writer
            .write_all(crate::copy::HEADER)
            .map_err(|e| Error::io(format!("COPY into {table}"), e))?;
        Ok(Box::new(CopyTable {
            writer,
            table: table.to_string(),
        }))
    }
}

/// One `<table>.csv` file (with a header) per table, in `dir`.
pub(crate) struct CsvSink<'d> {
    pub(crate) dir: &'d Path,
}

struct CsvTable {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
}

impl TableOut for CsvTable {
    fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }
    fn finish(mut self: Box<Self>) -> Result<()> {
        self.file
            .flush()
            .map_err(|e| Error::io(format!("writing {}", self.path.display()), e))
    }
}

impl Sink for CsvSink<'_> {
    fn encoding(&self) -> Encoding {
        Encoding::Csv
    }
    fn open<'a>(&'a mut self, table: &str, columns: &[&str]) -> Result<Box<dyn TableOut + 'a>> {
        let path = self.dir.join(format!("{table}.csv"));
        let file = std::fs::File::create(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        let mut file = std::io::BufWriter::new(file);
        writeln!(file, "{}", columns.join(","))
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(Box::new(CsvTable { file, path }))
    }
}

/// Encoded tables kept in memory, each with its columns, as the chunks they were written in
/// (one buffer per table would be copied whole each time it grew: gigabytes for `consortium`).
pub(crate) struct MemorySink {
    pub(crate) tables: Vec<(String, Vec<String>, Vec<Vec<u8>>)>,
}

struct MemoryTable<'a> {
    chunks: &'a mut Vec<Vec<u8>>,
}

impl TableOut for MemoryTable<'_> {
    fn write_chunk(&mut self, bytes: &[u8]) -> Result<()> {
        self.chunks.push(bytes.to_vec());
        Ok(())
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

impl Sink for MemorySink {
    fn encoding(&self) -> Encoding {
        Encoding::Binary
    }
    fn open<'a>(&'a mut self, table: &str, columns: &[&str]) -> Result<Box<dyn TableOut + 'a>> {
        self.tables.push((
            table.to_string(),
            columns.iter().map(|c| c.to_string()).collect(),
            Vec::new(),
        ));
        let chunks = &mut self.tables.last_mut().expect("just pushed").2;
        Ok(Box::new(MemoryTable { chunks }))
    }
}
