//! Members: accounts, roles, categories and status.

use std::io::Read;

use chrono::{DateTime, Months, Utc};
use postgres::{Client, GenericClient};
use serde_json::json;
use uuid::Uuid;

use crate::actor::{Capability, Ctx, Role};
use crate::audit::{self, Audited, Operation};
use crate::error::{Error, Refusal, Result, RowError};
use crate::import::{self, ImportSummary};
use crate::page::{Cursor, Page};
use crate::pg::is_unique_violation;
use crate::{ids, validate};

/// Member statuses.
pub const STATUSES: &[&str] = &["pending", "active", "suspended", "closed"];

/// A library member (patrons and staff alike).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// UUID v7.
    pub id: Uuid,
    /// Full name.
    pub name: String,
    /// Email, unique case-insensitively.
    pub email: String,
    /// Phone.
    pub phone: Option<String>,
    /// `member`, `librarian` or `admin`.
    pub role: String,
    /// Circulation category (`student`, `staff`, `public`).
    pub category: String,
    /// `pending`, `active`, `suspended` or `closed`.
    pub status: String,
    /// When the record was created.
    pub created_at: DateTime<Utc>,
    /// When the membership lapses.
    pub expires_at: Option<DateTime<Utc>>,
}

pub(crate) const MEMBER_COLUMNS: &str =
    "id, name, email, phone, role, category, status, created_at, expires_at";

pub(crate) fn member_from_row(r: &postgres::Row) -> Member {
    Member {
        id: r.get(0),
        name: r.get(1),
        email: r.get(2),
        phone: r.get(3),
        role: r.get(4),
        category: r.get(5),
        status: r.get(6),
        created_at: r.get(7),
        expires_at: r.get(8),
    }
}

/// A member to add, as typed or imported.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct NewMember {
    /// Full name.
    pub name: String,
    /// Email.
    pub email: String,
    /// Phone.
    pub phone: Option<String>,
    /// Role; `member` when `None`.
    pub role: Option<String>,
    /// Category; `public` when `None`.
    pub category: Option<String>,
}

#[derive(Debug, Clone)]
pub(crate) struct ValidMember {
    pub(crate) name: String,
    pub(crate) email: String,
    pub(crate) phone: Option<String>,
    pub(crate) role: Role,
    pub(crate) category: String,
}

/// Category names are short lowercase identifiers.
pub fn is_valid_category(c: &str) -> bool {
    let mut chars = c.chars();
    chars.next().is_some_and(|f| f.is_ascii_lowercase())
        && c.len() <= 32
        && chars.all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
}

/// Validates a member as typed or imported.
pub(crate) fn validate_member(new: &NewMember) -> Result<ValidMember> {
    let role = Role::parse_member_role(
        new.role
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .unwrap_or("member"),
    )?;
    let category = new
        .category
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or("public")
        .to_ascii_lowercase();
    if !is_valid_category(&category) {
        return Err(Error::invalid(
            "invalid_input",
            format!("invalid category {category:?}"),
        ));
    }
    Ok(ValidMember {
        name: validate::required_text("name", &new.name, 200)?,
        email: validate::normalize_email(&new.email)?,
        phone: validate::normalize_phone(new.phone.as_deref())?,
        role,
        category,
    })
}

/// Librarians add patrons; only admins create staff accounts.
fn require_may_grant(ctx: &Ctx, role: Role) -> Result<()> {
    ctx.require(Capability::ManageMembers)?;
    if role.is_staff() {
        ctx.require(Capability::Administer)?;
    }
    Ok(())
}

fn require_categories_exist(tx: &mut impl GenericClient, members: &[ValidMember]) -> Result<()> {
    let categories: Vec<&str> = members.iter().map(|m| m.category.as_str()).collect();
    let unknown: Vec<String> = tx
        .query(
            "SELECT DISTINCT c FROM unnest($1::text[]) c WHERE c NOT IN (SELECT category FROM circulation_rule)",
            &[&categories],
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(
            "invalid_input",
            format!(
                "unknown member category {}; see `libctl policy show`",
                unknown.join(", ")
            ),
        ))
    }
}

/// Inserts validated members with the given status in one statement.
pub(crate) fn insert_members(
    tx: &mut impl GenericClient,
    members: &[ValidMember],
    status: &str,
    at: DateTime<Utc>,
) -> Result<Vec<Member>> {
    let ids: Vec<Uuid> = members.iter().map(|_| ids::new_id(at)).collect();
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let emails: Vec<&str> = members.iter().map(|m| m.email.as_str()).collect();
    let phones: Vec<Option<&str>> = members.iter().map(|m| m.phone.as_deref()).collect();
    let roles: Vec<&str> = members.iter().map(|m| m.role.as_str()).collect();
    let categories: Vec<&str> = members.iter().map(|m| m.category.as_str()).collect();
    let expires_at = (status == "active").then(|| at + Months::new(12));
    let rows = tx.query(
        &format!(
            "INSERT INTO member (id, name, email, phone, role, category, status, created_at, expires_at)
             SELECT id, name, email, phone, role, category, $7, $8, $9
             FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[])
                  AS t(id, name, email, phone, role, category)
             RETURNING {MEMBER_COLUMNS}"
        ),
        &[&ids, &names, &emails, &phones, &roles, &categories, &status, &at, &expires_at],
    );
    match rows {
        Ok(rows) => Ok(rows.iter().map(member_from_row).collect()),
        Err(e) if is_unique_violation(&e, "member_email_key") => Err(Error::refused(
            Refusal::DuplicateEmail,
            "a member with this email already exists",
        )),
        Err(e) => Err(e.into()),
    }
}

/// Adds an active member (librarian or admin; staff accounts need an admin).
pub fn add_member(client: &mut Client, ctx: &Ctx, new: &NewMember) -> Result<Member> {
    let op = Operation::new("member.add", "member", json!(new));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::ManageMembers)?;
        let valid = validate_member(new)?;
        require_may_grant(ctx, valid.role)?;
        require_categories_exist(tx, std::slice::from_ref(&valid))?;
        let member = insert_members(tx, &[valid], "active", ctx.now())?.remove(0);
        Ok(Audited::new(
            member.clone(),
            member.id,
            json!({ "after": member }),
        ))
    })
}

/// Imports members from CSV with header `name,email,phone,role,category`, all or nothing.
pub fn import_members(client: &mut Client, ctx: &Ctx, input: impl Read) -> Result<ImportSummary> {
    let parsed = import::read_rows(
        input,
        &["name", "email"],
        &["phone", "role", "category"],
        |row| {
            validate_member(&NewMember {
                name: row.get("name").to_string(),
                email: row.get("email").to_string(),
                phone: row.opt("phone").map(str::to_string),
                role: row.opt("role").map(str::to_string),
                category: row.opt("category").map(str::to_string),
            })
        },
    );
    let op = Operation::new("member.import", "member", json!({}));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::ManageMembers)?;
        let rows = parsed.rows.clone();
        if rows.iter().any(|(_, m)| m.role.is_staff()) {
            ctx.require(Capability::Administer)?;
        }
        let mut errors = parsed.errors.clone();
        errors.extend(import::duplicates_within(
            &rows,
            |m| m.email.to_lowercase(),
            "email",
        ));
        let emails: Vec<String> = rows.iter().map(|(_, m)| m.email.to_lowercase()).collect();
        let existing: std::collections::HashSet<String> = tx
            .query(
                "SELECT lower(email) FROM member WHERE lower(email) = ANY($1)",
                &[&emails],
            )?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let categories: std::collections::HashSet<String> = tx
            .query("SELECT category FROM circulation_rule", &[])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for (line, m) in &rows {
            if existing.contains(&m.email.to_lowercase()) {
                errors.push(RowError {
                    line: *line,
                    reason: format!("email {} already belongs to a member", m.email),
                });
            }
            if !categories.contains(&m.category) {
                errors.push(RowError {
                    line: *line,
                    reason: format!("unknown member category {:?}", m.category),
                });
            }
        }
        let members = import::all_or_nothing(rows, errors)?;
        let inserted = insert_members(tx, &members, "active", ctx.now())?;
        let summary = ImportSummary {
            entity: "member",
            imported: inserted.len() as u64,
        };
        Ok(Audited::new(
            summary.clone(),
            "import",
            json!({ "imported": summary.imported }),
        ))
    })
}

/// Finds a member by id or email (case-insensitive).
pub fn find_member(client: &mut impl GenericClient, key: &str) -> Result<Member> {
    let row = match Uuid::parse_str(key.trim()) {
        Ok(id) => client.query_opt(
            &format!("SELECT {MEMBER_COLUMNS} FROM member WHERE id = $1"),
            &[&id],
        )?,
        Err(_) => client.query_opt(
            &format!("SELECT {MEMBER_COLUMNS} FROM member WHERE lower(email) = lower($1)"),
            &[&key.trim()],
        )?,
    };
    row.map(|r| member_from_row(&r))
        .ok_or_else(|| Error::not_found("member", key))
}

/// Shows a member: their own record, or any record for staff.
pub fn show_member(client: &mut Client, ctx: &Ctx, key: &str) -> Result<Member> {
    let member = find_member(client, key)?;
    ctx.require_self_or(member.id, Capability::ManageMembers)?;
    Ok(member)
}

/// Lists members (staff only), optionally by status or a search over name and email.
pub fn list_members(
    client: &mut Client,
    ctx: &Ctx,
    status: Option<&str>,
    search: Option<&str>,
    limit: i64,
    cursor: Option<&str>,
) -> Result<Page<Member>> {
    ctx.require(Capability::ManageMembers)?;
    let after = cursor.map(Cursor::decode).transpose()?.map(|c| c.0);
    let pattern = search
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| format!("%{}%", crate::pg::escape_like(s)));
    let limit = crate::validate::limit(limit, 10_000)?;
    let rows = client.query(
        &format!(
            "SELECT {MEMBER_COLUMNS} FROM member
             WHERE ($1::text IS NULL OR status = $1)
               AND ($2::text IS NULL OR name ILIKE $2 OR email ILIKE $2)
               AND ($3::uuid IS NULL OR id > $3)
             ORDER BY id LIMIT $4"
        ),
        &[&status, &pattern, &after, &(limit + 1)],
    )?;
    Ok(Page::from_rows(
        rows.iter().map(member_from_row).collect(),
        limit,
        |m| m.id,
    ))
}

/// Changes a member's status (staff). Closing needs no open loans.
pub fn set_status(client: &mut Client, ctx: &Ctx, key: &str, status: &str) -> Result<Member> {
    let op = Operation::new(
        "member.set_status",
        "member",
        json!({ "member": key, "status": status }),
    );
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::ManageMembers)?;
        if !STATUSES.contains(&status) {
            return Err(Error::invalid(
                "invalid_input",
                format!(
                    "status must be one of {}, not {status:?}",
                    STATUSES.join(", ")
                ),
            ));
        }
        let before = find_member(tx, key)?;
        tx.execute(
            "SELECT 1 FROM member WHERE id = $1 FOR UPDATE",
            &[&before.id],
        )?;
        if before.role != "member" {
            require_may_grant(ctx, Role::Admin)?;
        }
        if status == "closed" {
            let open: i64 = tx
                .query_one(
                    "SELECT count(*) FROM loan WHERE member_id = $1 AND returned_at IS NULL",
                    &[&before.id],
                )?
                .get(0);
            if open > 0 {
                return Err(Error::refused(
                    Refusal::MemberHasLoans,
                    format!(
                        "{} still has {open} open loan(s); return them first",
                        before.email
                    ),
                ));
            }
        }
        let expires_at = if status == "active" && before.expires_at.is_none_or(|e| e <= ctx.now()) {
            Some(ctx.now() + Months::new(12))
        } else {
            before.expires_at
        };
        let row = tx.query_one(
            &format!("UPDATE member SET status = $2, expires_at = $3 WHERE id = $1 RETURNING {MEMBER_COLUMNS}"),
            &[&before.id, &status, &expires_at],
        )?;
        let after = member_from_row(&row);
        // A member who leaves gives up their place in every queue; one reinstated is served
        // any copy on the shelf they wait for (a suspended member keeps their holds, skipped).
        let holds_cancelled = if status == "closed" {
            crate::hold_queue::cancel_member_holds(tx, ctx, after.id, "member closed")?
        } else {
            0
        };
        if status == "active" {
            crate::hold_queue::retarget(tx, ctx, crate::hold_queue::Scope::Member(after.id))?;
        }
        Ok(Audited::new(
            after.clone(),
            after.id,
            json!({ "holds_cancelled": holds_cancelled,
                    "before": { "status": before.status, "expires_at": before.expires_at },
                    "after": { "status": after.status, "expires_at": after.expires_at } }),
        ))
    })
}

/// Whose rows a listing shows: the member named (id or email), or, when none is named, the
/// acting member if they are not staff (a member lists their own); `None` for the whole
/// library. The caller checks the permission for what it found.
pub(crate) fn listing_scope(
    client: &mut impl GenericClient,
    ctx: &Ctx,
    member: Option<&str>,
) -> Result<Option<Uuid>> {
    Ok(match member {
        Some(m) => Some(find_member(client, m)?.id),
        None if !ctx.actor.role.is_staff() => ctx.actor.member_id,
        None => None,
    })
}

/// How long a membership runs when it is granted or renewed.
pub const MEMBERSHIP_MONTHS: u32 = 12;

/// Renews a membership (staff): to the end of `until` in library time, or by
/// [`MEMBERSHIP_MONTHS`] from the later of now and the current expiry. A closed or pending
/// member is refused (`member_not_active`); a suspended one keeps their status. A member back
/// in good standing is served any copy on the shelf they wait for.
pub fn renew(
    client: &mut Client,
    ctx: &Ctx,
    key: &str,
    until: Option<chrono::NaiveDate>,
) -> Result<Member> {
    let op = Operation::new(
        "member.renew",
        "member",
        json!({ "member": key, "until": until }),
    );
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::ManageMembers)?;
        let before = find_member(tx, key)?;
        tx.execute(
            "SELECT 1 FROM member WHERE id = $1 FOR UPDATE",
            &[&before.id],
        )?;
        let before = find_member(tx, &before.id.to_string())?;
        if before.role != "member" {
            require_may_grant(ctx, Role::Admin)?;
        }
        if matches!(before.status.as_str(), "closed" | "pending") {
            return Err(Error::refused(
                Refusal::MemberNotActive,
                format!(
                    "{} is {}: only an active or suspended membership is renewed",
                    before.email, before.status
                ),
            ));
        }
        let now = ctx.now();
        let from = before.expires_at.map_or(now, |e| e.max(now));
        let expires_at = match until {
            Some(day) => {
                let end = crate::calendar::Calendar::load(tx)?.end_of_day(day);
                if end <= from {
                    return Err(Error::invalid(
                        "invalid_input",
                        format!(
                            "--until {day} does not extend the membership, which runs to {from}"
                        ),
                    ));
                }
                end
            }
            None => from + Months::new(MEMBERSHIP_MONTHS),
        };
        let row = tx.query_one(
            &format!("UPDATE member SET expires_at = $2 WHERE id = $1 RETURNING {MEMBER_COLUMNS}"),
            &[&before.id, &expires_at],
        )?;
        let after = member_from_row(&row);
        crate::hold_queue::retarget(tx, ctx, crate::hold_queue::Scope::Member(after.id))?;
        Ok(Audited::new(
            after.clone(),
            after.id,
            json!({ "before": { "expires_at": before.expires_at },
                    "after": { "expires_at": after.expires_at } }),
        ))
    })
}

/// Sets how a member receives notices (the member themselves, or staff): `email` or `print`
/// (letters). Deliveries already queued keep their channel.
pub fn set_notice_channel(
    client: &mut Client,
    ctx: &Ctx,
    key: &str,
    channel: &str,
) -> Result<String> {
    let op = Operation::new(
        "member.set_notice_channel",
        "member",
        json!({ "member": key, "channel": channel }),
    );
    audit::run(client, ctx, &op, |tx| {
        let member = find_member(tx, key)?;
        ctx.require_self_or(member.id, Capability::ManageMembers)?;
        if !matches!(channel, "email" | "print") {
            return Err(Error::invalid(
                "invalid_input",
                format!("the notice channel is email or print, not {channel:?}"),
            ));
        }
        let before: String = tx
            .query_one(
                "SELECT notice_channel FROM member WHERE id = $1 FOR UPDATE",
                &[&member.id],
            )?
            .get(0);
        tx.execute(
            "UPDATE member SET notice_channel = $2 WHERE id = $1",
            &[&member.id, &channel],
        )?;
        Ok(Audited::new(
            channel.to_string(),
            member.id,
            json!({ "before": { "notice_channel": before }, "after": { "notice_channel": channel } }),
        ))
    })
}

/// Creates the first admin if the library has none (`db init`). Returns it when created.
pub fn bootstrap_admin(client: &mut Client, email: &str, name: &str) -> Result<Option<Member>> {
    let ctx = Ctx::system();
    let op = Operation::new(
        "member.bootstrap_admin",
        "member",
        json!({ "email": email, "name": name }),
    );
    let valid = validate_member(&NewMember {
        name: name.to_string(),
        email: email.to_string(),
        phone: None,
        role: Some("admin".into()),
        category: Some("staff".into()),
    })?;
    // Nothing to do (and nothing to audit) once an admin exists.
    if client
        .query_opt("SELECT 1 FROM member WHERE role = 'admin' LIMIT 1", &[])?
        .is_some()
    {
        return Ok(None);
    }
    audit::run(client, &ctx, &op, |tx| {
        // Serialise concurrent `db init`s so exactly one creates the admin.
        tx.execute("LOCK TABLE member IN SHARE ROW EXCLUSIVE MODE", &[])?;
        let has_admin = tx
            .query_opt("SELECT 1 FROM member WHERE role = 'admin' LIMIT 1", &[])?
            .is_some();
        if has_admin {
            return Ok(Audited::without_entity(None, json!({ "created": false })));
        }
        let admin =
            insert_members(tx, std::slice::from_ref(&valid), "active", ctx.now())?.remove(0);
        Ok(Audited::new(
            Some(admin.clone()),
            admin.id,
            json!({ "after": admin }),
        ))
    })
}
