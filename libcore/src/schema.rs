//! The schema's own objects: every key, check, foreign key, index and trigger the migrations
//! create, read from the catalog in a stable order.
//!
//! Data can only be trusted while the schema that guards it is whole: a database whose keys
//! were lost accepts duplicates without a word. `db check` compares the live catalog with the
//! snapshot committed in `sql/current/objects.txt` (written from a freshly migrated database; a
//! test fails when it is stale and names the command that rewrites it), and a restore compares
//! the database it built with the catalog its own fresh migration produced. Beside it,
//! `sql/current/tables.sql` and `sql/current/functions.sql` are the schema to read: every
//! table with its keys, indexes and triggers, and every function's current body.

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
           AND NOT EXISTS (SELECT 1 FROM pg_class r WHERE r.oid = conrelid AND r.relispartition)
         UNION ALL
         SELECT format('index %s %s: %s%s', i.indrelid::regclass, c.relname, pg_get_indexdef(i.indexrelid),
                       CASE WHEN i.indisvalid AND i.indisready THEN '' ELSE ' INVALID' END)
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE c.relnamespace = current_schema()::regnamespace AND NOT c.relispartition
         UNION ALL
         SELECT format('trigger %s %s: %s', t.tgrelid::regclass, t.tgname, pg_get_triggerdef(t.oid))
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE NOT t.tgisinternal AND c.relnamespace = current_schema()::regnamespace
           AND NOT c.relispartition",
        &[],
    )?;
    let mut lines: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    lines.retain(|l| !l.contains(" refinery_schema_history "));
    lines.sort();
    Ok(lines)
}

/// The files of `sql/current/`, written from a freshly migrated database: the one place to read
/// the schema as it is today, without finding the highest `V` that restated each function.
/// Each is in a stable order, so a stale one shows as a diff.
pub fn snapshot(client: &mut impl GenericClient) -> Result<Vec<(&'static str, String)>> {
    let header = |what: &str| {
        format!(
            "-- {what} of the current schema, written from a fresh migration.\n\
             -- Generated: do not edit. Rewrite with `{REWRITE_COMMAND}`.\n\
             -- The history is the migrations in sql/V*.sql.\n"
        )
    };
    let mut tables = header("Tables, with their keys, checks, indexes and triggers,");
    let table_rows = client.query(
        "SELECT c.oid, format(E'CREATE TABLE %I (\\n%s\\n);', c.relname,
                string_agg(format('    %I %s%s%s', a.attname, format_type(a.atttypid, a.atttypmod),
                                  CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END,
                                  coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '')),
                           E',\\n' ORDER BY a.attnum))
         FROM pg_class c
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
         WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
           AND c.relname <> 'refinery_schema_history' AND NOT c.relispartition
         GROUP BY c.oid, c.relname ORDER BY c.relname",
        &[],
    )?;
    for row in table_rows {
        let oid: postgres::types::Oid = row.get(0);
        tables.push('\n');
        tables.push_str(row.get::<_, &str>(1));
        tables.push('\n');
        let parts = client.query(
            "SELECT format('ALTER TABLE %s ADD CONSTRAINT %I %s;', conrelid::regclass, conname,
                           pg_get_constraintdef(oid)) AS ddl, 1 AS kind, conname::text AS name
             FROM pg_constraint WHERE conrelid = $1 AND contype IN ('p', 'u', 'f', 'c', 'x')
             UNION ALL
             SELECT pg_get_indexdef(i.indexrelid) || ';', 2, c.relname::text
             FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
             WHERE i.indrelid = $1
               AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid
                               AND k.contype IN ('p', 'u', 'x'))
             UNION ALL
             SELECT pg_get_triggerdef(t.oid) || ';', 3, t.tgname::text
             FROM pg_trigger t WHERE t.tgrelid = $1 AND NOT t.tgisinternal
             ORDER BY 2, 3",
            &[&oid],
        )?;
        for part in parts {
            tables.push_str(part.get::<_, &str>(0));
            tables.push('\n');
        }
    }
    let mut functions = header("Types and functions");
    for row in client.query(
        "SELECT format(E'CREATE TYPE %I AS (\\n%s\\n);', t.typname,
                string_agg(format('    %I %s', a.attname, format_type(a.atttypid, a.atttypmod)),
                           E',\\n' ORDER BY a.attnum))
         FROM pg_type t JOIN pg_class c ON c.oid = t.typrelid
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE t.typnamespace = current_schema()::regnamespace AND c.relkind = 'c'
         GROUP BY t.typname ORDER BY t.typname",
        &[],
    )? {
        functions.push('\n');
        functions.push_str(row.get::<_, &str>(0));
        functions.push('\n');
    }
    for row in client.query(
        "SELECT pg_get_functiondef(p.oid) || ';'
         FROM pg_proc p
         WHERE p.pronamespace = current_schema()::regnamespace
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                           AND d.objid = p.oid AND d.deptype = 'e')
         ORDER BY p.proname, p.oid::regprocedure::text",
        &[],
    )? {
        functions.push('\n');
        functions.push_str(row.get::<_, &str>(0));
        functions.push('\n');
    }
    let mut objects = objects(client)?.join("\n");
    objects.push('\n');
    Ok(vec![
        ("tables.sql", tables),
        ("functions.sql", functions),
        ("objects.txt", objects),
    ])
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
