//! Input validation shared by single adds and imports: ISBN, email, phone, names.
//!
//! Every function returns the normalised value, so what is stored is always canonical.

use crate::error::{Error, Result};

/// Validates an ISBN-10 or ISBN-13 (hyphens and spaces allowed) and returns its 13-digit form.
pub fn normalize_isbn(raw: &str) -> Result<String> {
    let compact: String = raw
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .collect::<String>()
        .to_ascii_uppercase();
    let bad = |why: &str| Error::invalid("invalid_isbn", format!("invalid ISBN {raw:?}: {why}"));
    match compact.len() {
        10 => {
            let bytes = compact.as_bytes();
            if !bytes[..9].iter().all(u8::is_ascii_digit)
                || !(bytes[9].is_ascii_digit() || bytes[9] == b'X')
            {
                return Err(bad("an ISBN-10 is 9 digits and a digit or X"));
            }
            let sum: u32 = bytes
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    let v = if b == b'X' { 10 } else { u32::from(b - b'0') };
                    v * (10 - i as u32)
                })
                .sum();
            if !sum.is_multiple_of(11) {
                return Err(bad("ISBN-10 checksum does not match"));
            }
            let body = format!("978{}", &compact[..9]);
            Ok(format!("{body}{}", isbn13_check_digit(&body)))
        }
        13 => {
            if !compact.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad("an ISBN-13 is 13 digits"));
            }
            if !(compact.starts_with("978") || compact.starts_with("979")) {
                return Err(bad("an ISBN-13 starts with 978 or 979"));
            }
            if isbn13_check_digit(&compact[..12]) != compact.as_bytes()[12] - b'0' {
                return Err(bad("ISBN-13 checksum does not match"));
            }
            Ok(compact)
        }
        _ => Err(bad("expected 10 or 13 digits")),
    }
}

/// The ISBN-13 check digit of the first 12 digits.
pub fn isbn13_check_digit(first12: &str) -> u8 {
    let sum: u32 = first12
        .bytes()
        .take(12)
        .enumerate()
        .map(|(i, b)| u32::from(b - b'0') * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// Validates an email address and returns it trimmed. Uniqueness (case-insensitive) is the
/// database's job.
pub fn normalize_email(raw: &str) -> Result<String> {
    let email = raw.trim();
    let bad = || Error::invalid("invalid_email", format!("invalid email address {raw:?}"));
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad());
    }
    let (local, domain) = email.split_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || domain.contains('@')
        || !domain.contains('.')
        || domain.starts_with('.')
        || domain.ends_with('.')
        || domain.contains("..")
    {
        return Err(bad());
    }
    Ok(email.to_string())
}

/// Validates a phone number: 7 to 15 digits, optionally with a leading `+`, spaces, dashes,
/// dots and parentheses. Returns it trimmed, or `None` when empty.
pub fn normalize_phone(raw: Option<&str>) -> Result<Option<String>> {
    let Some(phone) = raw.map(str::trim).filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let digits = phone.chars().filter(char::is_ascii_digit).count();
    let allowed = phone.char_indices().all(|(i, c)| {
        c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')') || (c == '+' && i == 0)
    });
    if !allowed || !(7..=15).contains(&digits) {
        return Err(Error::invalid(
            "invalid_phone",
            format!("invalid phone number {phone:?}: 7 to 15 digits, optionally +, spaces, dashes"),
        ));
    }
    Ok(Some(phone.to_string()))
}

/// A required free-text field: trimmed, non-empty, no control characters, bounded length.
pub fn required_text(field: &str, raw: &str, max_chars: usize) -> Result<String> {
    let value = raw.trim();
    if value.is_empty() {
        return Err(Error::invalid(
            "invalid_input",
            format!("{field} must not be empty"),
        ));
    }
    optional_text(field, Some(value), max_chars).map(|v| v.unwrap_or_default())
}

/// An optional free-text field: trimmed, `None` when empty, no control characters.
pub fn optional_text(field: &str, raw: Option<&str>, max_chars: usize) -> Result<Option<String>> {
    let Some(value) = raw.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(
            "invalid_input",
            format!("{field} contains control characters"),
        ));
    }
    if value.chars().count() > max_chars {
        return Err(Error::invalid(
            "invalid_input",
            format!("{field} is longer than {max_chars} characters"),
        ));
    }
    Ok(Some(value.to_string()))
}

/// Checks a numeric input against its documented range (exit 7 outside it, never a silent
/// clamp: a value the tool cannot honour is a mistake the caller should hear about).
pub fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    name: &str,
    value: T,
    min: T,
    max: T,
) -> Result<T> {
    if value < min || value > max {
        return Err(Error::invalid(
            "out_of_range",
            format!("{name} must be between {min} and {max}, not {value}"),
        ));
    }
    Ok(value)
}

/// The rows a listing may return at most: `--limit` between 1 and `max`.
pub fn limit(value: i64, max: i64) -> Result<i64> {
    in_range("--limit", value, 1, max)
}

/// The largest amount of money one payment, waiver or charge may carry: 1,000,000.00.
pub const MAX_AMOUNT_CENTS: i64 = 100_000_000;

/// An amount of money in cents: positive and at most [`MAX_AMOUNT_CENTS`].
pub fn amount_cents(name: &str, value: i64) -> Result<i64> {
    in_range(name, value, 1, MAX_AMOUNT_CENTS)
}

/// Copies of a title: 0 to 10,000.
pub fn copies(n: i64) -> Result<i32> {
    if (0..=10_000).contains(&n) {
        Ok(n as i32)
    } else {
        Err(Error::invalid(
            "invalid_input",
            format!("copies must be between 0 and 10000, not {n}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_isbns() {
        assert_eq!(normalize_isbn("0-306-40615-2").unwrap(), "9780306406157");
        assert_eq!(
            normalize_isbn("978-0-306-40615-7").unwrap(),
            "9780306406157"
        );
        assert_eq!(normalize_isbn("080442957X").unwrap(), "9780804429573");
        assert_eq!(normalize_isbn("080442957x").unwrap(), "9780804429573");
        assert!(normalize_isbn("0-306-40615-3").is_err());
        assert!(normalize_isbn("978-0-306-40615-8").is_err());
        assert!(normalize_isbn("1234567890123").is_err());
        assert!(normalize_isbn("12345").is_err());
        assert!(normalize_isbn("X123456789").is_err());
        assert_eq!(normalize_isbn("bad").unwrap_err().code(), "invalid_isbn");
    }

    #[test]
    fn emails_and_phones() {
        assert_eq!(
            normalize_email("  a.b@example.org ").unwrap(),
            "a.b@example.org"
        );
        for bad in [
            "",
            "a",
            "@x.org",
            "a@",
            "a@b",
            "a b@x.org",
            "a@@x.org",
            "a@x..org",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        assert_eq!(
            normalize_phone(Some("+1 (555) 123-4567"))
                .unwrap()
                .as_deref(),
            Some("+1 (555) 123-4567")
        );
        assert_eq!(normalize_phone(Some("  ")).unwrap(), None);
        assert!(normalize_phone(Some("123")).is_err());
        assert!(normalize_phone(Some("555-CALL-NOW")).is_err());
        assert!(normalize_phone(Some("1+5551234567")).is_err());
    }

    fn isbn13_from(body: &str) -> String {
        format!("{body}{}", isbn13_check_digit(body))
    }

    proptest! {
        #[test]
        fn every_valid_isbn13_round_trips(prefix in prop_oneof!["978", "979"], rest in "[0-9]{9}") {
            let isbn = isbn13_from(&format!("{prefix}{rest}"));
            prop_assert_eq!(normalize_isbn(&isbn).unwrap(), isbn.clone());
            let hyphenated = format!("{}-{}-{}", &isbn[..3], &isbn[3..8], &isbn[8..]);
            prop_assert_eq!(normalize_isbn(&hyphenated).unwrap(), isbn);
        }

        #[test]
        fn a_single_digit_change_is_always_caught(rest in "[0-9]{9}", pos in 0usize..13, delta in 1u8..10) {
            let isbn = isbn13_from(&format!("978{rest}"));
            let mut bytes = isbn.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(normalize_isbn(&changed).is_err());
        }

        #[test]
        fn isbn10_and_its_isbn13_agree(body in "[0-9]{9}") {
            let sum: u32 = body.bytes().enumerate().map(|(i, b)| u32::from(b - b'0') * (10 - i as u32)).sum();
            let check = (11 - sum % 11) % 11;
            let isbn10 = format!("{body}{}", if check == 10 { "X".to_string() } else { check.to_string() });
            let isbn13 = normalize_isbn(&isbn10).unwrap();
            prop_assert_eq!(&isbn13[3..12], &body[..]);
            prop_assert_eq!(normalize_isbn(&isbn13).unwrap(), isbn13.clone());
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,20}") {
            let _ = normalize_isbn(&s);
            let _ = normalize_email(&s);
            let _ = normalize_phone(Some(&s));
        }
    }
}
