//! Who is acting, and what their role lets them do (SPEC §10).
//!
//! Every command runs in a [`Ctx`]: the resolved actor plus the effective "now". `--at`
//! backdates that now for offline circulation; only staff may use it, and the audit row keeps
//! the real time beside it.

use chrono::{DateTime, SubsecRound, Utc};
use postgres::GenericClient;
use uuid::Uuid;

use crate::error::{Error, Result};

/// The built-in actor name for cron jobs.
pub const SYSTEM_ACTOR: &str = "system";

/// A role decides what an actor may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A library member: own loans and own data only.
    Member,
    /// Desk staff: circulation for anyone, catalogue, members, approvals, reports.
    Librarian,
    /// Everything, including policy, restore and reset.
    Admin,
    /// The cron actor: jobs, reports and backups; never approvals.
    System,
    /// Nobody signed in: only self-registration.
    Anonymous,
}

impl Role {
    /// The name stored in `member.role` and `audit_log.actor_role`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Librarian => "librarian",
            Role::Admin => "admin",
            Role::System => "system",
            Role::Anonymous => "anonymous",
        }
    }

    /// Parses a stored member role.
    pub fn parse_member_role(s: &str) -> Result<Role> {
        match s {
            "member" => Ok(Role::Member),
            "librarian" => Ok(Role::Librarian),
            "admin" => Ok(Role::Admin),
            other => Err(Error::invalid(
                "invalid_role",
                format!("role must be member, librarian or admin, not {other:?}"),
            )),
        }
    }

    /// Librarian or admin.
    pub fn is_staff(self) -> bool {
        matches!(self, Role::Librarian | Role::Admin)
    }
}

/// What an operation needs, checked by [`Ctx::require`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Borrow, return or renew for any member.
    CirculateForOthers,
    /// Add and import books.
    Catalogue,
    /// Add, import and change members; see any member's data.
    ManageMembers,
    /// Approve or reject requests.
    Decide,
    /// Run reports over the whole library.
    Reports,
    /// Run nightly jobs, fines accrual, notices and seeding.
    Jobs,
    /// Create and verify backups.
    Backup,
    /// Policy, restore, reset, audit prune.
    Administer,
}

impl Capability {
    fn allowed(self, role: Role) -> bool {
        use Capability::*;
        match role {
            Role::Admin => true,
            Role::Librarian => matches!(
                self,
                CirculateForOthers | Catalogue | ManageMembers | Decide | Reports
            ),
            Role::System => matches!(self, Reports | Jobs | Backup),
            Role::Member | Role::Anonymous => false,
        }
    }

    fn describe(self) -> &'static str {
        use Capability::*;
        match self {
            CirculateForOthers => "run circulation for other members",
            Catalogue => "manage the catalogue",
            ManageMembers => "manage members",
            Decide => "decide requests",
            Reports => "run library-wide reports",
            Jobs => "run batch jobs",
            Backup => "create backups",
            Administer => "change policy or restore",
        }
    }
}

/// The resolved actor of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The member record behind the actor; `None` for `system` and anonymous.
    pub member_id: Option<Uuid>,
    /// Email of the member, `system`, or `anonymous`.
    pub name: String,
    /// What they may do.
    pub role: Role,
}

impl Actor {
    /// The cron actor.
    pub fn system() -> Actor {
        Actor {
            member_id: None,
            name: SYSTEM_ACTOR.to_string(),
            role: Role::System,
        }
    }

    /// A self-registration with nobody signed in.
    pub fn anonymous() -> Actor {
        Actor {
            member_id: None,
            name: "anonymous".to_string(),
            role: Role::Anonymous,
        }
    }
}

/// The actor plus the effective time of one command.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Who is acting.
    pub actor: Actor,
    /// `--at`: the backdated "now", if any.
    pub at: Option<DateTime<Utc>>,
}

impl Ctx {
    /// A context for `actor` at the real time.
    pub fn new(actor: Actor) -> Ctx {
        Ctx { actor, at: None }
    }

    /// The system actor at the real time: what cron jobs run as.
    pub fn system() -> Ctx {
        Ctx::new(Actor::system())
    }

    /// The effective now of every rule check and every timestamp written, to the microsecond
    /// PostgreSQL keeps: a time read once is then the same in Rust and in the database, so a
    /// value built before it is written (a borrow's loan, its audit row) is what is stored.
    pub fn now(&self) -> DateTime<Utc> {
        self.at.unwrap_or_else(Utc::now).trunc_subsecs(6)
    }

    /// Fails with `permission_denied` unless the actor's role grants `cap`.
    pub fn require(&self, cap: Capability) -> Result<()> {
        if cap.allowed(self.actor.role) {
            Ok(())
        } else {
            Err(Error::denied(format!(
                "{} ({}) may not {}",
                self.actor.name,
                self.actor.role.as_str(),
                cap.describe()
            )))
        }
    }

    /// Members may act on their own record; otherwise `cap` is needed.
    pub fn require_self_or(&self, member_id: Uuid, cap: Capability) -> Result<()> {
        if self.actor.member_id == Some(member_id) && self.actor.role != Role::Anonymous {
            return Ok(());
        }
        self.require(cap)
    }
}

/// Resolves `--actor` (an email or `system`) and `--at` into a context.
///
/// The actor must be an active, unexpired member record; `--at` needs a librarian or admin
/// and may not lie in the future.
pub fn resolve(
    client: &mut impl GenericClient,
    actor: Option<&str>,
    at: Option<DateTime<Utc>>,
) -> Result<Ctx> {
    let actor = match actor.map(str::trim) {
        None | Some("") => Actor::system(),
        Some(name) if name.eq_ignore_ascii_case(SYSTEM_ACTOR) => Actor::system(),
        Some(name) if name.eq_ignore_ascii_case("anonymous") => Actor::anonymous(),
        Some(email) => {
            let row = client.query_opt(
                "SELECT id, email, role, status, expires_at FROM member WHERE lower(email) = lower($1)",
                &[&email],
            )?;
            let row = row.ok_or_else(|| Error::Denied {
                code: "unknown_actor",
                message: format!("actor {email} is not a member of this library"),
            })?;
            let status: String = row.get("status");
            let expires_at: Option<DateTime<Utc>> = row.get("expires_at");
            if status != "active" {
                return Err(Error::Denied {
                    code: "inactive_actor",
                    message: format!("actor {email} is not an active member (status {status})"),
                });
            }
            if let Some(expired) = expires_at.filter(|e| *e <= Utc::now()) {
                return Err(Error::Denied {
                    code: "inactive_actor",
                    message: format!("actor {email}'s membership expired at {expired}"),
                });
            }
            Actor {
                member_id: Some(row.get("id")),
                name: row.get("email"),
                role: Role::parse_member_role(row.get("role"))?,
            }
        }
    };
    if let Some(at) = at {
        if !actor.role.is_staff() {
            return Err(Error::denied(format!(
                "--at is for librarians and admins; {} is {}",
                actor.name,
                actor.role.as_str()
            )));
        }
        if at > Utc::now() + chrono::Duration::minutes(1) {
            return Err(Error::invalid(
                "invalid_input",
                "--at may not lie in the future",
            ));
        }
    }
    Ok(Ctx { actor, at })
}
