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
    /// Move history to its partitions and export it (SPEC §17).
    Archive,
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
            Role::System => matches!(self, Reports | Jobs | Backup | Archive),
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
            Archive => "archive history",
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

/// How the database login behind a connection relates to libctl's members (SPEC §10).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Binding {
    /// A superuser or the schema's owner: a single-login setup, where `--actor` is taken as
    /// declared and nothing binds it to the person at the keyboard.
    Unbound {
        /// The session's login.
        login: String,
    },
    /// A login mapped to one member (`staff grant-login`): the actor is that member.
    Member {
        /// The session's login.
        login: String,
        /// The member it acts as.
        member_id: Uuid,
    },
    /// A member of `libctl_delegate` (a kiosk, a service that authenticates readers itself):
    /// acts for members only, never for staff or `system`.
    Delegate {
        /// The session's login.
        login: String,
    },
    /// A member of `libctl_job` bound to no member: cron's login, acting as `system` only.
    Job {
        /// The session's login.
        login: String,
    },
    /// Any other login: it may not act.
    Unmapped {
        /// The session's login.
        login: String,
    },
}

impl Binding {
    /// One line for `db status`.
    pub fn describe(&self) -> String {
        match self {
            Binding::Unbound { login } => format!(
                "login {login} is a superuser or owns the schema: --actor is taken as declared, \
                 nothing binds it to a person (single-login setup)"
            ),
            Binding::Member { login, .. } => {
                format!("login {login} is bound to one member and acts only as them")
            }
            Binding::Delegate { login } => {
                format!("login {login} is a delegate: it acts for members, never for staff")
            }
            Binding::Job { login } => {
                format!("login {login} is cron's: it acts as system only")
            }
            Binding::Unmapped { login } => {
                format!("login {login} is bound to no member: it may not act")
            }
        }
    }

    /// The session's login.
    pub fn login(&self) -> &str {
        match self {
            Binding::Unbound { login }
            | Binding::Member { login, .. }
            | Binding::Delegate { login }
            | Binding::Job { login }
            | Binding::Unmapped { login } => login,
        }
    }
}

/// Reads how this connection's login is bound.
pub fn binding(client: &mut impl GenericClient) -> Result<Binding> {
    let row = client.query_one(
        "SELECT session_user::text,
                coalesce((SELECT rolsuper FROM pg_roles WHERE rolname = session_user), false)
                  OR pg_has_role(session_user,
                                 (SELECT relowner FROM pg_class WHERE oid = 'audit_log'::regclass),
                                 'MEMBER'),
                (SELECT member_id FROM member_login WHERE login = session_user),
                CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'libctl_delegate')
                     THEN pg_has_role(session_user, 'libctl_delegate', 'MEMBER')
                     ELSE false END,
                CASE WHEN EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'libctl_job')
                     THEN pg_has_role(session_user, 'libctl_job', 'MEMBER')
                     ELSE false END",
        &[],
    )?;
    let login: String = row.get(0);
    let owner: bool = row.get(1);
    let member: Option<Uuid> = row.get(2);
    let delegate: bool = row.get(3);
    let job: bool = row.get(4);
    Ok(match (owner, member, delegate, job) {
        (true, ..) => Binding::Unbound { login },
        (false, Some(member_id), ..) => Binding::Member { login, member_id },
        (false, None, true, _) => Binding::Delegate { login },
        (false, None, false, true) => Binding::Job { login },
        (false, None, false, false) => Binding::Unmapped { login },
    })
}

/// A login that named someone it may not act as.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// Who is really acting: the login's member, or for a delegate its login as an
    /// anonymous actor.
    pub acting: Actor,
    /// The actor that was asked for.
    pub requested: String,
    /// The session's login.
    pub login: String,
    /// Why it was refused.
    pub reason: String,
}

impl Mismatch {
    /// The `actor_mismatch` denial (exit 5).
    pub fn error(&self) -> Error {
        Error::Denied {
            code: "actor_mismatch",
            message: self.reason.clone(),
        }
    }
}

/// Resolves `--actor` (an email or `system`) and `--at` into a context.
///
/// The actor must be an active, unexpired member record; `--at` needs a librarian or admin
/// and may not lie in the future. A login bound to a member acts as that member whatever
/// `--actor` says; naming anyone else is `actor_mismatch` (use
/// `audit::resolve_actor`, which also audits that attempt).
pub fn resolve(
    client: &mut impl GenericClient,
    actor: Option<&str>,
    at: Option<DateTime<Utc>>,
) -> Result<Ctx> {
    resolve_or_mismatch(client, actor, at)?.map_err(|m| m.error())
}

/// [`resolve`], with a mismatch handed back for the caller to audit.
pub fn resolve_or_mismatch(
    client: &mut impl GenericClient,
    actor: Option<&str>,
    at: Option<DateTime<Utc>>,
) -> Result<std::result::Result<Ctx, Mismatch>> {
    let requested = actor.map(str::trim).filter(|a| !a.is_empty());
    let actor = match binding(client)? {
        Binding::Unbound { .. } => declared(client, requested)?,
        Binding::Member { login, member_id } => {
            let row = client.query_one(
                "SELECT id, email, role, status, expires_at FROM member WHERE id = $1",
                &[&member_id],
            )?;
            let bound = active_member(&row)?;
            match requested {
                Some(name) if !name.eq_ignore_ascii_case(&bound.name) => {
                    return Ok(Err(Mismatch {
                        reason: format!(
                            "login {login} acts as {}; it may not act as {name}",
                            bound.name
                        ),
                        acting: bound,
                        requested: name.to_string(),
                        login,
                    }))
                }
                _ => bound,
            }
        }
        Binding::Delegate { login } => {
            let as_login = Actor {
                member_id: None,
                name: login.clone(),
                role: Role::Anonymous,
            };
            let Some(name) = requested else {
                return Ok(Err(Mismatch {
                    reason: format!(
                        "login {login} is a delegate: name the member it acts for with --actor"
                    ),
                    acting: as_login,
                    requested: String::new(),
                    login,
                }));
            };
            let declared = declared(client, Some(name))?;
            if declared.role != Role::Member {
                return Ok(Err(Mismatch {
                    reason: format!(
                        "login {login} is a delegate: it acts for members only, and {} is {}",
                        declared.name,
                        declared.role.as_str()
                    ),
                    acting: as_login,
                    requested: name.to_string(),
                    login,
                }));
            }
            declared
        }
        Binding::Job { login } => match requested {
            None => Actor::system(),
            Some(name) if name.eq_ignore_ascii_case(SYSTEM_ACTOR) => Actor::system(),
            Some(name) => {
                return Ok(Err(Mismatch {
                    reason: format!("login {login} is cron's: it acts as system, not as {name}"),
                    acting: Actor::system(),
                    requested: name.to_string(),
                    login,
                }))
            }
        },
        Binding::Unmapped { login } => {
            return Err(Error::Denied {
                code: "unbound_login",
                message: format!(
                    "login {login} is not bound to a member: an admin binds it with \
                     `libctl staff grant-login EMAIL --login {login}`"
                ),
            })
        }
    };
    with_at(actor, at).map(Ok)
}

/// Looks up an actor by name (an email, `system` or `anonymous`), whoever is connected: for
/// commands that look at an actor rather than act as one.
pub fn lookup(client: &mut impl GenericClient, name: &str) -> Result<Actor> {
    declared(client, Some(name))
}

/// The actor a command declares, taken as it says (a single-login setup, or a delegate's
/// member).
fn declared(client: &mut impl GenericClient, actor: Option<&str>) -> Result<Actor> {
    Ok(match actor {
        None => Actor::system(),
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
            active_member(&row)?
        }
    })
}

/// The actor of a member row (`id, email, role, status, expires_at`), if the member may act.
fn active_member(row: &postgres::Row) -> Result<Actor> {
    let email: &str = row.get("email");
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
    Ok(Actor {
        member_id: Some(row.get("id")),
        name: email.to_string(),
        role: Role::parse_member_role(row.get("role"))?,
    })
}

fn with_at(actor: Actor, at: Option<DateTime<Utc>>) -> Result<Ctx> {
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
