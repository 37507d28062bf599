//! Connections that keep the hot path's statements prepared.
//!
//! A statement sent as text is parsed and planned by the server on every call; prepared once on
//! a connection, it is only executed after that. For borrow, return and renew that is about a
//! third of the server's work. A one-shot `libctl` command gains nothing from preparing (it
//! would pay a round trip to prepare a statement it sends once), so a plain [`Client`] sends
//! typed, unnamed statements, and a [`Session`] — a connection that lives for many operations,
//! as in `bench borrow` or a long-running desk process — prepares each statement the first time
//! and keeps it. It keeps the library calendar too, with the `calendar_stamp` it was read at
//! (V15), so the hot path's read sends the calendar again only after it changed.

use std::collections::HashMap;
use std::sync::Arc;

use postgres::types::{ToSql, Type};
use postgres::{Client, GenericClient, Row, Statement};
use uuid::Uuid;

use crate::calendar::Calendar;
use crate::error::Result;

/// Typed parameters: the value and its PostgreSQL type.
pub type Params<'a> = [(&'a (dyn ToSql + Sync), Type)];

/// The statements prepared on one connection, by their text, and the library calendar as the
/// hot path's read last sent it to this connection.
#[derive(Default)]
pub struct Statements {
    by_sql: HashMap<String, Statement>,
    /// The calendar and the stamp it was sent with (`calendar_stamp`, V15): the read sends the
    /// calendar again only when the database's stamp is another.
    pub(crate) calendar: Option<StampedCalendar>,
}

/// A calendar as read, and the `calendar_stamp` it was read at.
#[derive(Clone)]
pub(crate) struct StampedCalendar {
    pub(crate) stamp: Uuid,
    pub(crate) calendar: Arc<Calendar>,
}

/// A connection, the statements prepared on it and the calendar it last read.
pub struct Session {
    client: Client,
    statements: Statements,
}

impl Session {
    /// Wraps a connection; nothing is prepared until a statement is first sent.
    pub fn new(client: Client) -> Session {
        Session {
            client,
            statements: Statements::default(),
        }
    }
}

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

/// What the hot path runs on: a plain client (statements sent unprepared) or a [`Session`].
pub trait Connection {
    /// The client, and the statement cache if this connection keeps one.
    fn parts(&mut self) -> (&mut Client, Option<&mut Statements>);
}

impl Connection for Client {
    fn parts(&mut self) -> (&mut Client, Option<&mut Statements>) {
        (self, None)
    }
}

impl Connection for Session {
    fn parts(&mut self) -> (&mut Client, Option<&mut Statements>) {
        (&mut self.client, Some(&mut self.statements))
    }
}

impl Statements {
    /// The statement prepared for `sql` on this connection, preparing it the first time.
    fn prepared(
        &mut self,
        client: &mut impl GenericClient,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Statement> {
        if let Some(statement) = self.by_sql.get(sql) {
            return Ok(statement.clone());
        }
        let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
        let statement = client.prepare_typed(sql, &types)?;
        self.by_sql.insert(sql.to_string(), statement.clone());
        Ok(statement)
    }
}

fn values<'a>(params: &Params<'a>) -> Vec<&'a (dyn ToSql + Sync)> {
    params.iter().map(|(v, _)| *v).collect()
}

/// Runs `sql`: prepared once and kept when there is a cache, else typed and unnamed (one round
/// trip either way, once prepared).
pub fn query(
    client: &mut impl GenericClient,
    statements: Option<&mut Statements>,
    sql: &str,
    params: &Params<'_>,
) -> Result<Vec<Row>> {
    Ok(match statements {
        Some(statements) => {
            let statement = statements.prepared(client, sql, params)?;
            client.query(&statement, &values(params))?
        }
        None => client.query_typed(sql, params)?,
    })
}

/// [`query`] for a statement that returns no rows: how many rows it touched.
pub fn execute(
    client: &mut impl GenericClient,
    statements: Option<&mut Statements>,
    sql: &str,
    params: &Params<'_>,
) -> Result<u64> {
    Ok(match statements {
        Some(statements) => {
            let statement = statements.prepared(client, sql, params)?;
            client.execute(&statement, &values(params))?
        }
        None => client.execute_typed(sql, params)?,
    })
}
