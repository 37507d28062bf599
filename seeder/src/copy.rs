//! PostgreSQL binary COPY encoding, written by hand: one `Vec<u8>` per chunk, no per-field
//! boxing, so rayon workers can encode while the connection streams the previous chunk.
//!
//! Format: a 19-byte header, then per row an i16 field count and per field an i32 length
//! (−1 for NULL) followed by the value in network byte order, then an i16 −1 trailer.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

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
}
