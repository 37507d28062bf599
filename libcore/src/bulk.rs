//! Bulk loading shared by the seeder and backup restore: drop the keys, indexes and foreign
//! keys of a set of tables, load, and rebuild them.
//!
//! Every DDL statement replayed comes from the catalog of the migrated schema
//! (`pg_get_constraintdef`, `pg_indexes`), so neither caller restates the schema and neither can
//! drift from the migrations.

use postgres::GenericClient;

use crate::error::Result;

/// DDL to replay after a load, in four phases: keys (primary and unique) first, then plain
/// indexes, then foreign keys (which need the keys they reference), then the statement
/// triggers that keep `library_tally` (a load sets the tally itself: with the triggers in
/// place, every COPY would also hold all its rows as a transition table).
#[derive(Debug, Clone, Default)]
pub struct Schema {
    /// `ADD CONSTRAINT … PRIMARY KEY / UNIQUE`.
    pub keys: Vec<String>,
    /// `CREATE INDEX …`.
    pub indexes: Vec<String>,
    /// `ADD CONSTRAINT … FOREIGN KEY`.
    pub foreign_keys: Vec<String>,
    /// `CREATE TRIGGER … REFERENCING … TABLE`.
    pub tally_triggers: Vec<String>,
}

impl Schema {
    /// Every statement, in a safe order for one connection.
    pub fn all(&self) -> impl Iterator<Item = &String> {
        self.keys
            .iter()
            .chain(&self.indexes)
            .chain(&self.foreign_keys)
            .chain(&self.tally_triggers)
    }
}

/// Records and drops every foreign key touching `tables`, their primary and unique keys, their
/// other indexes and their triggers with transition tables. Run inside a transaction.
///
/// A partitioned table and its partitions keep their keys and indexes: for a partitioned table
/// `pg_indexes` reads `CREATE INDEX … ON ONLY`, which replayed would index the parent alone and
/// leave the index invalid. Their partitions are loaded detached and attached instead (see
/// `libctl_history_partition` and `libctl_history_attach`).
pub fn capture_and_drop(tx: &mut impl GenericClient, tables: &[String]) -> Result<Schema> {
    let plain: Vec<String> = tx
        .query(
            "SELECT c.relname::text FROM pg_class c
             WHERE c.relnamespace = current_schema()::regnamespace AND c.relname = ANY($1)
               AND c.relkind = 'r' AND NOT c.relispartition",
            &[&tables],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let fks = tx.query(
        "SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname),
                format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
         FROM pg_constraint
         WHERE contype = 'f'
           AND (conrelid::regclass::text = ANY($1) OR confrelid::regclass::text = ANY($1))
         ORDER BY conname",
        &[&tables],
    )?;
    let keys = tx.query(
        "SELECT format('ALTER TABLE %s DROP CONSTRAINT %I', conrelid::regclass, conname),
                format('ALTER TABLE %s ADD CONSTRAINT %I %s', conrelid::regclass, conname, pg_get_constraintdef(oid))
         FROM pg_constraint
         WHERE contype IN ('p', 'u') AND conrelid::regclass::text = ANY($1)
         ORDER BY contype, conname",
        &[&plain],
    )?;
    let indexes = tx.query(
        "SELECT format('DROP INDEX %I.%I', i.schemaname, i.indexname), i.indexdef
         FROM pg_indexes i
         WHERE i.schemaname = current_schema() AND i.tablename = ANY($1)
           AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname AND c.contype IN ('p', 'u', 'x'))
         ORDER BY i.indexname",
        &[&plain],
    )?;
    let tally_triggers = tx.query(
        "SELECT format('DROP TRIGGER %I ON %s', t.tgname, t.tgrelid::regclass), pg_get_triggerdef(t.oid)
         FROM pg_trigger t
         WHERE NOT t.tgisinternal AND (t.tgoldtable IS NOT NULL OR t.tgnewtable IS NOT NULL)
           AND t.tgrelid::regclass::text = ANY($1)
         ORDER BY t.tgname",
        &[&plain],
    )?;
    for group in [&fks, &keys, &indexes, &tally_triggers] {
        for row in group.iter() {
            tx.batch_execute(row.get::<_, &str>(0))?;
        }
    }
    let second = |rows: &[postgres::Row]| rows.iter().map(|r| r.get::<_, String>(1)).collect();
    Ok(Schema {
        keys: second(&keys),
        indexes: second(&indexes),
        foreign_keys: second(&fks),
        tally_triggers: second(&tally_triggers),
    })
}

/// Replays the captured DDL on one connection.
pub fn rebuild(tx: &mut impl GenericClient, schema: &Schema) -> Result<()> {
    for ddl in schema.all() {
        tx.batch_execute(ddl)?;
    }
    Ok(())
}

/// Replays the captured DDL on `jobs` connections at once: keys first (in parallel), then
/// indexes and foreign keys (in parallel), each statement committed on its own.
pub fn rebuild_parallel(url: &str, schema: &Schema, jobs: usize) -> Result<()> {
    let phases: [Vec<String>; 2] = [
        schema.keys.clone(),
        schema
            .indexes
            .iter()
            .chain(&schema.foreign_keys)
            .chain(&schema.tally_triggers)
            .cloned()
            .collect(),
    ];
    for statements in phases {
        let queue = std::sync::Mutex::new(statements.into_iter());
        std::thread::scope(|scope| -> Result<()> {
            let workers: Vec<_> = (0..jobs.max(1))
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        let mut client = crate::db::connect(url)?;
                        client.batch_execute("SET maintenance_work_mem = '512MB'")?;
                        loop {
                            let next = queue.lock().expect("queue lock").next();
                            match next {
                                Some(ddl) => client.batch_execute(&ddl)?,
                                None => return Ok(()),
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join()
                    .map_err(|_| crate::Error::Internal("an index builder panicked".into()))??;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// ANALYZE of the tables a bulk load filled, and only those: a table analyzed while empty has
/// its foreign-key checks planned (and cached per session) as sequential scans, which turn
/// quadratic once it fills (a first nightly's notices); never analyzed, the planner assumes a
/// few pages and uses the key. Names come from the caller's own table lists.
pub fn analyze<'a>(
    client: &mut impl GenericClient,
    tables: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    let tables: Vec<&str> = tables.into_iter().collect();
    if !tables.is_empty() {
        client.batch_execute(&format!("ANALYZE {}", tables.join(", ")))?;
    }
    Ok(())
}
