//! Item barcodes (SPEC §16): what a library's labels may say, and the ones libctl prints.
//!
//! Libraries already own printed labels in many schemes, so a barcode that is given is only
//! checked for length and characters. A barcode libctl generates has the common form of
//! library item labels: 14 digits, a prefix, a running number, and a Luhn mod-10 check digit,
//! so a scanner misread of one digit (or two swapped neighbours) is caught at the desk.

use crate::error::{Error, Result};

/// The longest barcode accepted.
pub const MAX_LEN: usize = 32;

/// Digits in a generated barcode, check digit included.
pub const GENERATED_LEN: usize = 14;

/// Checks a given barcode: 1–32 characters from `[A-Za-z0-9-]`, kept as given.
pub fn validate(raw: &str) -> Result<&str> {
    let ok = !raw.is_empty()
        && raw.len() <= MAX_LEN
        && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok {
        Ok(raw)
    } else {
        Err(Error::invalid(
            "invalid_barcode",
            format!("barcode {raw:?} must be 1–{MAX_LEN} characters of A–Z, a–z, 0–9 and -"),
        ))
    }
}

/// The Luhn mod-10 check digit of `digits` (ASCII digits only).
pub fn luhn_check_digit(digits: &str) -> u8 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 0 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    ((10 - sum % 10) % 10) as u8
}

/// True when a string of digits ends in its own Luhn check digit.
pub fn luhn_valid(code: &str) -> bool {
    code.len() >= 2
        && code.bytes().all(|b| b.is_ascii_digit())
        && luhn_check_digit(&code[..code.len() - 1]) == code.as_bytes()[code.len() - 1] - b'0'
}

/// The `n`-th generated barcode under `prefix` (digits, 1–12 of them): the prefix, `n`
/// zero-padded to fill 13 digits, and the check digit. Fails when `n` no longer fits.
pub fn generate(prefix: &str, n: u64) -> Result<String> {
    if prefix.is_empty()
        || prefix.len() >= GENERATED_LEN - 1
        || !prefix.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(Error::invalid(
            "invalid_barcode",
            format!("barcode prefix {prefix:?} must be 1–12 digits"),
        ));
    }
    let width = GENERATED_LEN - 1 - prefix.len();
    let body = format!("{prefix}{n:0width$}");
    if body.len() != GENERATED_LEN - 1 {
        return Err(Error::invalid(
            "out_of_range",
            format!("running number {n} does not fit in a barcode with prefix {prefix}"),
        ));
    }
    let check = luhn_check_digit(&body);
    Ok(format!("{body}{check}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_luhn_numbers() {
        // The classic examples: 79927398713 is valid, and a card-style number.
        assert!(luhn_valid("79927398713"));
        assert!(!luhn_valid("79927398710"));
        assert!(luhn_valid("4539578763621486"));
        assert_eq!(generate("3", 1).unwrap().len(), GENERATED_LEN);
        assert_eq!(&generate("3", 1).unwrap()[..13], "3000000000001");
    }

    #[test]
    fn given_barcodes_are_checked_for_form_only() {
        assert!(validate("ABC-123").is_ok());
        assert!(validate(&"9".repeat(32)).is_ok());
        for bad in ["", " 12", "12 3", "ä1", "1_2", &"9".repeat(33)] {
            assert_eq!(
                validate(bad).unwrap_err().code(),
                "invalid_barcode",
                "{bad:?}"
            );
        }
        assert!(generate("3", 10u64.pow(12)).is_err());
        assert!(generate("", 1).is_err());
        assert!(generate("3a", 1).is_err());
    }

    proptest! {
        #[test]
        fn every_generated_barcode_checks_and_is_unique_to_its_number(
            prefix in "[1-9][0-9]{0,3}", a in 0u64..1_000_000_000, b in 0u64..1_000_000_000,
        ) {
            let x = generate(&prefix, a).unwrap();
            prop_assert_eq!(x.len(), GENERATED_LEN);
            prop_assert!(x.starts_with(&prefix));
            prop_assert!(luhn_valid(&x));
            prop_assert!(validate(&x).is_ok());
            if a != b {
                prop_assert_ne!(x, generate(&prefix, b).unwrap());
            }
        }

        #[test]
        fn any_single_digit_misread_is_caught(n in 0u64..1_000_000_000, pos in 0usize..14, delta in 1u8..10) {
            let code = generate("3", n).unwrap();
            let mut bytes = code.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            prop_assert!(!luhn_valid(std::str::from_utf8(&bytes).unwrap()));
        }

        #[test]
        fn swapping_two_different_neighbours_is_caught(n in 0u64..1_000_000_000, pos in 0usize..13) {
            let code = generate("3", n).unwrap();
            let mut bytes = code.into_bytes();
            let (x, y) = (bytes[pos], bytes[pos + 1]);
            // Luhn misses only the 0↔9 swap.
            prop_assume!(x != y && !matches!((x, y), (b'0', b'9') | (b'9', b'0')));
            bytes.swap(pos, pos + 1);
            prop_assert!(!luhn_valid(std::str::from_utf8(&bytes).unwrap()));
        }
    }
}
