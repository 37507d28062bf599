//! Database logins for people and kiosks (SPEC §10): a login mapped to a member acts as that
//! member and no one else; a delegate login acts for members only.
//!
//! Logins are PostgreSQL roles, so PostgreSQL checks the password (or peer or certificate
//! authentication) and its privileges bound what the login can touch, whatever the binary
//! does. Creating one needs CREATEROLE, which only an administrator's own connection has.

use postgres::Client;
use serde::Serialize;
use serde_json::json;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, Operation};
use crate::error::{Error, Result};

/// The group role a new login joins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Group {
    /// Reads and writes what circulation and administration need (`libctl_staff`).
    Staff,
    /// Reads only (`libctl_reader`): reports, replicas.
    Reader,
    /// Acts for members only, never for staff (`libctl_delegate`): kiosks.
    Delegate,
    /// Acts as `system` only (`libctl_job`): cron.
    Job,
}

impl Group {
    /// The PostgreSQL group role.
    pub fn role(self) -> &'static str {
        match self {
            Group::Staff => "libctl_staff",
            Group::Reader => "libctl_reader",
            Group::Delegate => "libctl_delegate",
            Group::Job => "libctl_job",
        }
    }
}

/// One login libctl knows.
#[derive(Debug, Clone, Serialize)]
pub struct Login {
    /// The PostgreSQL role name.
    pub login: String,
    /// The member it acts as; none for a delegate.
    pub email: Option<String>,
    /// Its group role.
    pub group: String,
}

/// A login name PostgreSQL takes unquoted, so people can type it in a connection URL.
fn check_login_name(login: &str) -> Result<()> {
    let ok = !login.is_empty()
        && login.len() <= 63
        && login
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && login
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok || login.starts_with("pg_") || login.starts_with("libctl_") {
        return Err(Error::invalid(
            "invalid_login",
            format!(
                "{login:?} is not a login name libctl creates: lower-case letters, digits and \
                 _, starting with a letter, at most 63, not pg_* or libctl_*"
            ),
        ));
    }
    Ok(())
}

/// Creates `login` and binds it: to the member `email` (staff or reader), or as a delegate
/// (`email` none). `password` none means peer or certificate authentication.
pub fn grant(
    client: &mut Client,
    ctx: &Ctx,
    email: Option<&str>,
    login: &str,
    password: Option<&str>,
    group: Group,
) -> Result<Login> {
    check_login_name(login)?;
    let unbound = matches!(group, Group::Delegate | Group::Job);
    if unbound != email.is_none() {
        return Err(Error::invalid(
            "invalid_input",
            "a delegate or job login is bound to no member; a staff or reader login to exactly one",
        ));
    }
    let op = Operation::new(
        "login.grant",
        "member_login",
        json!({ "login": login, "email": email, "group": group.role() }),
    );
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Administer)?;
        let member = match email {
            Some(email) => Some(
                tx.query_opt(
                    "SELECT id, email FROM member WHERE lower(email) = lower($1)",
                    &[&email],
                )?
                .ok_or_else(|| Error::not_found("member", email))?,
            ),
            None => None,
        };
        tx.execute(
            "SELECT libctl_create_login($1::text::name, $2, $3)",
            &[&login, &password, &group.role()],
        )
        .map_err(|e| match e.code() {
            Some(c) if *c == postgres::error::SqlState::DUPLICATE_OBJECT => Error::invalid(
                "login_exists",
                format!(
                    "a PostgreSQL role named {login} already exists; libctl never takes one over"
                ),
            ),
            Some(c) if *c == postgres::error::SqlState::INSUFFICIENT_PRIVILEGE => Error::denied(
                "creating logins needs a connection with CREATEROLE (the administrator's own)",
            ),
            _ => e.into(),
        })?;
        if let Some(member) = &member {
            let member_id: uuid::Uuid = member.get("id");
            tx.execute(
                "INSERT INTO member_login (login, member_id, grp) VALUES ($1::text::name, $2, $3)",
                &[&login, &member_id, &group.role()],
            )?;
        }
        let granted = Login {
            login: login.to_string(),
            email: member.map(|m| m.get("email")),
            group: group.role().to_string(),
        };
        Ok(Audited::new(
            granted.clone(),
            login,
            json!({ "email": granted.email, "group": granted.group }),
        ))
    })
}

/// Drops a login libctl created, and its binding.
pub fn revoke(client: &mut Client, ctx: &Ctx, login: &str) -> Result<()> {
    let op = Operation::new("login.revoke", "member_login", json!({ "login": login }));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Administer)?;
        tx.execute(
            "DELETE FROM member_login WHERE login = $1::text::name",
            &[&login],
        )?;
        tx.execute("SELECT libctl_drop_login($1::text::name)", &[&login])
            .map_err(|e| match e.code() {
                Some(c) if *c == postgres::error::SqlState::UNDEFINED_OBJECT => {
                    Error::not_found("login", login)
                }
                _ => e.into(),
            })?;
        Ok(Audited::new((), login, json!({})))
    })
}

/// The login bound to a member, if any.
pub fn of_member(client: &mut Client, email: &str) -> Result<Option<String>> {
    Ok(client
        .query_opt(
            "SELECT l.login::text FROM member_login l JOIN member m ON m.id = l.member_id
             WHERE lower(m.email) = lower($1)",
            &[&email],
        )?
        .map(|r| r.get(0)))
}

/// Every login bound to a member, and every delegate login.
pub fn list(client: &mut Client, ctx: &Ctx) -> Result<Vec<Login>> {
    ctx.require(Capability::ManageMembers)?;
    let rows = client.query(
        "SELECT l.login::text, m.email, l.grp FROM member_login l JOIN member m ON m.id = l.member_id
         UNION ALL
         SELECT r.rolname::text, NULL, g.rolname::text
         FROM pg_roles r
         JOIN pg_auth_members am ON am.member = r.oid
         JOIN pg_roles g ON g.oid = am.roleid
         WHERE r.rolcanlogin AND NOT r.rolsuper
           AND g.rolname IN ('libctl_delegate', 'libctl_job')
           AND NOT EXISTS (SELECT 1 FROM member_login l WHERE l.login = r.rolname)
         ORDER BY 1",
        &[],
    )?;
    Ok(rows
        .iter()
        .map(|r| Login {
            login: r.get(0),
            email: r.get(1),
            group: r.get(2),
        })
        .collect())
}
