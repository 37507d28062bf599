//! PostgreSQL's binary COPY format, in one place: the seeder writes it (by hand, one `Vec<u8>`
//! per chunk and no per-field boxing, so rayon workers can encode while the connection streams
//! the previous chunk), and backups count the rows of the streams they write and verify.
//!
//! Format: a 19-byte header, then per row an i16 field count and per field an i32 length
//! (−1 for NULL) followed by the value in network byte order, then an i16 −1 trailer.

use chrono::{DateTime, NaiveDate, Utc};

use crate::error::{Error, Result};
use uuid::Uuid;

/// The signature a binary COPY stream starts with.
pub const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";
/// The fixed header of a binary COPY stream (signature, flags, extension length).
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end-of-data marker.
pub const TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days between 1970-01-01 and 2000-01-01.
const PG_EPOCH_DAYS: i32 = 10_957;

/// Appends the fields of one row to a buffer.
pub struct RowEncoder<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> RowEncoder<'a> {
    /// Starts a row of `fields` fields.
    pub fn new(buf: &'a mut Vec<u8>, fields: i16) -> RowEncoder<'a> {
        buf.extend_from_slice(&fields.to_be_bytes());
        RowEncoder { buf }
    }

    fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf
            .extend_from_slice(&(bytes.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    /// A NULL.
    pub fn null(&mut self) -> &mut Self {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
        self
    }

    /// `uuid`.
    pub fn uuid(&mut self, v: Uuid) -> &mut Self {
        self.raw(v.as_bytes())
    }

    /// Nullable `uuid`.
    pub fn opt_uuid(&mut self, v: Option<Uuid>) -> &mut Self {
        match v {
            Some(v) => self.uuid(v),
            None => self.null(),
        }
    }

    /// `text`.
    pub fn text(&mut self, v: &str) -> &mut Self {
        self.raw(v.as_bytes())
    }

    /// Nullable `text`.
    pub fn opt_text(&mut self, v: Option<&str>) -> &mut Self {
        match v {
            Some(v) => self.text(v),
            None => self.null(),
        }
    }

    /// `smallint`.
    pub fn int2(&mut self, v: i16) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// `integer`.
    pub fn int4(&mut self, v: i32) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// `bigint`.
    pub fn int8(&mut self, v: i64) -> &mut Self {
        self.raw(&v.to_be_bytes())
    }

    /// `timestamptz`.
    pub fn timestamptz(&mut self, v: DateTime<Utc>) -> &mut Self {
        self.raw(&(v.timestamp_micros() - PG_EPOCH_MICROS).to_be_bytes())
    }

    /// Nullable `timestamptz`.
    pub fn opt_timestamptz(&mut self, v: Option<DateTime<Utc>>) -> &mut Self {
        match v {
            Some(v) => self.timestamptz(v),
            None => self.null(),
        }
    }

    /// `date`.
    pub fn date(&mut self, v: NaiveDate) -> &mut Self {
        let days = v
            .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch"))
            .num_days() as i32;
        self.raw(&(days - PG_EPOCH_DAYS).to_be_bytes())
    }

    /// Nullable `date`.
    pub fn opt_date(&mut self, v: Option<NaiveDate>) -> &mut Self {
        match v {
            Some(v) => self.date(v),
            None => self.null(),
        }
    }

    /// `jsonb` (format version 1, then the JSON text).
    pub fn jsonb(&mut self, json: &str) -> &mut Self {
        self.buf
            .extend_from_slice(&(json.len() as i32 + 1).to_be_bytes());
        self.buf.push(1);
        self.buf.extend_from_slice(json.as_bytes());
        self
    }
}

/// Counts the tuples of a binary COPY stream fed in arbitrary pieces.
#[derive(Debug, Default)]
pub struct CopyCounter {
    header_left: usize,
    started: bool,
    carry: Vec<u8>,
    state: State,
    rows: u64,
    done: bool,
}

#[derive(Debug, Default, Clone, Copy)]
enum State {
    #[default]
    TupleStart,
    FieldLength {
        fields_left: u16,
    },
    FieldData {
        bytes_left: usize,
        fields_left: u16,
    },
}

impl CopyCounter {
    /// A counter expecting the 19-byte header first.
    pub fn new() -> CopyCounter {
        CopyCounter {
            header_left: HEADER.len(),
            ..CopyCounter::default()
        }
    }

    /// Rows seen so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// True once the end-of-data marker was read.
    pub fn complete(&self) -> bool {
        self.done
    }

    /// Feeds the next piece of the stream.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        let bad = |why: &str| Error::Integrity {
            violations: vec![format!("malformed binary COPY stream: {why}")],
        };
        if !self.started {
            let take = self.header_left.min(data.len());
            self.carry.extend_from_slice(&data[..take]);
            self.header_left -= take;
            data = &data[take..];
            if self.header_left > 0 {
                return Ok(());
            }
            if &self.carry[..SIGNATURE.len()] != SIGNATURE {
                return Err(bad("bad signature"));
            }
            self.carry.clear();
            self.started = true;
        }
        while !data.is_empty() {
            if self.done {
                return Err(bad("data after the end marker"));
            }
            match self.state {
                State::TupleStart | State::FieldLength { .. } => {
                    let need = if matches!(self.state, State::TupleStart) {
                        2
                    } else {
                        4
                    };
                    let take = (need - self.carry.len()).min(data.len());
                    self.carry.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if self.carry.len() < need {
                        return Ok(());
                    }
                    match self.state {
                        State::TupleStart => {
                            let n = i16::from_be_bytes([self.carry[0], self.carry[1]]);
                            if n == -1 {
                                self.done = true;
                            } else if n < 0 {
                                return Err(bad("negative field count"));
                            } else {
                                self.rows += 1;
                                self.state = if n == 0 {
                                    State::TupleStart
                                } else {
                                    State::FieldLength {
                                        fields_left: n as u16,
                                    }
                                };
                            }
                        }
                        State::FieldLength { fields_left } => {
                            let len = i32::from_be_bytes([
                                self.carry[0],
                                self.carry[1],
                                self.carry[2],
                                self.carry[3],
                            ]);
                            let fields_left = fields_left - 1;
                            self.state = if len > 0 {
                                State::FieldData {
                                    bytes_left: len as usize,
                                    fields_left,
                                }
                            } else if fields_left == 0 {
                                State::TupleStart
                            } else {
                                State::FieldLength { fields_left }
                            };
                        }
                        State::FieldData { .. } => unreachable!("handled below"),
                    }
                    self.carry.clear();
                }
                State::FieldData {
                    bytes_left,
                    fields_left,
                } => {
                    let take = bytes_left.min(data.len());
                    data = &data[take..];
                    let bytes_left = bytes_left - take;
                    self.state = if bytes_left > 0 {
                        State::FieldData {
                            bytes_left,
                            fields_left,
                        }
                    } else if fields_left == 0 {
                        State::TupleStart
                    } else {
                        State::FieldLength { fields_left }
                    };
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_postgres_epochs_and_nulls() {
        let mut buf = Vec::new();
        let t = DateTime::parse_from_rfc3339("2000-01-01T00:00:01Z")
            .unwrap()
            .with_timezone(&Utc);
        RowEncoder::new(&mut buf, 3)
            .timestamptz(t)
            .date(NaiveDate::from_ymd_opt(2000, 1, 2).unwrap())
            .null();
        assert_eq!(&buf[..2], &3i16.to_be_bytes());
        assert_eq!(&buf[2..6], &8i32.to_be_bytes());
        assert_eq!(&buf[6..14], &1_000_000i64.to_be_bytes());
        assert_eq!(&buf[14..18], &4i32.to_be_bytes());
        assert_eq!(&buf[18..22], &1i32.to_be_bytes());
        assert_eq!(&buf[22..26], &(-1i32).to_be_bytes());
        assert_eq!(HEADER.len(), 19);
    }
    #[test]
    fn the_counter_handles_any_split() {
        let mut stream = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        for i in 0..3i32 {
            stream.extend_from_slice(&2i16.to_be_bytes());
            stream.extend_from_slice(&4i32.to_be_bytes());
            stream.extend_from_slice(&i.to_be_bytes());
            stream.extend_from_slice(&(-1i32).to_be_bytes());
        }
        stream.extend_from_slice(&(-1i16).to_be_bytes());
        for piece in [1usize, 2, 3, 7, 64] {
            let mut c = CopyCounter::new();
            for chunk in stream.chunks(piece) {
                c.feed(chunk).unwrap();
            }
            assert_eq!((c.rows(), c.complete()), (3, true), "pieces of {piece}");
        }
        let mut truncated = CopyCounter::new();
        truncated.feed(&stream[..stream.len() - 2]).unwrap();
        assert!(!truncated.complete());
    }
}
