//! The schema's own objects: every key, check, foreign key, index and trigger the migrations
//! create, read from the catalog in a stable order.
//!
//! Data can only be trusted while the schema that guards it is whole: a database whose keys
//! were lost accepts duplicates without a word. `db check` compares the live catalog with the
//! snapshot committed in `sql/current/objects.txt` (written from a freshly migrated database; a
//! test fails when it is stale and names the command that rewrites it), and a restore compares
//! the database it built with the catalog its own fresh migration produced.

use postgres::GenericClient;

use crate::error::Result;

/// The objects of the schema at this binary's version, one per line, as [`objects`] prints
/// them.
pub const EXPECTED: &str = include_str!("../../sql/current/objects.txt");

/// The command that rewrites `sql/current/` from the migrations.
pub const REWRITE_COMMAND: &str =
    "LIBCTL_WRITE_SCHEMA_SNAPSHOT=1 cargo test -p libcore --test tests schema_snapshot";

/// Every constraint (other than NOT NULL), index and user trigger of the current schema, one
/// line each (`kind table name: definition`), sorted. An index that a failed build left
/// invalid is listed with `INVALID`, so it never matches the snapshot.
pub fn objects(client: &mut impl GenericClient) -> Result<Vec<String>> {
    let rows = client.query(
        "SELECT format('constraint %s %s: %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
         FROM pg_constraint
         WHERE connamespace = current_schema()::regnamespace AND contype IN ('p', 'u', 'f', 'c', 'x')
         UNION ALL
         SELECT format('index %s %s: %s%s', i.indrelid::regclass, c.relname, pg_get_indexdef(i.indexrelid),
                       CASE WHEN i.indisvalid AND i.indisready THEN '' ELSE ' INVALID' END)
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relnamespace = current_schema()::regnamespace
         UNION ALL
         SELECT format('trigger %s %s: %s', t.tgrelid::regclass, t.tgname, pg_get_triggerdef(t.oid))
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace",
        &[],
    )?;
    let mut lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    lines.retain(|l| !l.contains(" refinery_schema_history "));
    lines.sort();
    Ok(lines)
}

/// The lines of [`EXPECTED`].
pub fn expected() -> Vec<String> {
    EXPECTED
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// What differs between the schema that should be there and the one that is: each object
/// that is missing (or whose definition changed), and each one that should not exist.
pub fn differences(expected: &[String], actual: &[String]) -> Vec<String> {
    let expected_set: std::collections::HashSet<&String> = expected.iter().collect();
    let actual_set: std::collections::HashSet<&String> = actual.iter().collect();
    let missing = expected
        .iter()
        .filter(|l| !actual_set.contains(l))
        .map(|l| format!("missing {l}"));
    let unexpected = actual
        .iter()
        .filter(|l| !expected_set.contains(l))
        .map(|l| format!("unexpected {l}"));
    missing.chain(unexpected).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn differences_name_both_directions() {
        let expected = vec!["a".to_string(), "b".to_string()];
        let actual = vec!["b".to_string(), "c".to_string()];
        assert_eq!(
            super::differences(&expected, &actual),
            vec!["missing a".to_string(), "unexpected c".to_string()]
        );
        assert!(super::differences(&expected, &expected).is_empty());
    }

    #[test]
    fn the_snapshot_is_sorted() {
        let lines = super::expected();
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
        assert!(!lines.is_empty());
    }
}
