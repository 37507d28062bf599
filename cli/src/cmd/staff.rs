//! `libctl staff …`: database logins bound to members, and delegate logins for kiosks.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use libcore::logins::{self, Group};

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum StaffCommand {
    /// Create a PostgreSQL login that acts as one member, a delegate login or cron's login
    /// (admin; needs a connection with CREATEROLE)
    GrantLogin(GrantArgs),
    /// Drop a login libctl created, by member email or --login (admin)
    RevokeLogin(RevokeArgs),
    /// List logins bound to members, and delegate logins
    Logins,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("who").required(true).args(["email", "delegate", "job"]))]
pub struct GrantArgs {
    /// The member the login acts as
    pub email: Option<String>,
    /// The PostgreSQL role name to create
    #[arg(long)]
    pub login: String,
    /// Read-only (libctl_reader): reports, replicas
    #[arg(long, conflicts_with = "delegate")]
    pub read_only: bool,
    /// A login that acts for members only, never for staff (libctl_delegate): kiosks
    #[arg(long)]
    pub delegate: bool,
    /// Cron's login: acts as system only (libctl_job)
    #[arg(long, conflicts_with_all = ["delegate", "read_only"])]
    pub job: bool,
    /// Read the password from the first line of stdin (otherwise it is prompted for)
    #[arg(long, conflicts_with = "no_password")]
    pub password_stdin: bool,
    /// No password: the login authenticates by peer or certificate (pg_hba.conf)
    #[arg(long)]
    pub no_password: bool,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["email", "login"]))]
pub struct RevokeArgs {
    /// The member whose login goes
    pub email: Option<String>,
    /// The login to drop (a delegate's, for instance)
    #[arg(long)]
    pub login: Option<String>,
}

/// The password, never from argv: stdin's first line, a prompt on a terminal, or none.
fn password(a: &GrantArgs) -> anyhow::Result<Option<String>> {
    if a.no_password {
        return Ok(None);
    }
    if a.password_stdin {
        let mut line = String::new();
        std::io::stdin().lock().read_line(&mut line)?;
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Err(libcore::Error::invalid("invalid_input", "stdin held no password").into());
        }
        return Ok(Some(line));
    }
    if !std::io::stdin().is_terminal() {
        return Err(libcore::Error::invalid(
            "invalid_input",
            "no terminal to prompt for the password: pass --password-stdin or --no-password",
        )
        .into());
    }
    let first = rpassword::prompt_password(format!("password for {}: ", a.login))?;
    let again = rpassword::prompt_password("again: ")?;
    if first != again || first.is_empty() {
        return Err(
            libcore::Error::invalid("invalid_input", "the passwords differ or are empty").into(),
        );
    }
    Ok(Some(first))
}

pub fn run(app: &mut App, command: StaffCommand) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    match command {
        StaffCommand::GrantLogin(a) => {
            let group = if a.job {
                Group::Job
            } else if a.delegate {
                Group::Delegate
            } else if a.read_only {
                Group::Reader
            } else {
                Group::Staff
            };
            let password = password(&a)?;
            let login = logins::grant(
                &mut client,
                &ctx,
                a.email.as_deref(),
                &a.login,
                password.as_deref(),
                group,
            )?;
            app.out.record(&login)?;
        }
        StaffCommand::RevokeLogin(a) => {
            let login = match (&a.login, &a.email) {
                (Some(login), _) => login.clone(),
                (None, Some(email)) => logins::of_member(&mut client, email)?
                    .ok_or_else(|| libcore::Error::not_found("login of member", email.clone()))?,
                (None, None) => unreachable!("clap requires one"),
            };
            logins::revoke(&mut client, &ctx, &login)?;
            app.out
                .record(&serde_json::json!({ "login": login, "revoked": true }))?;
        }
        StaffCommand::Logins => app.out.rows(logins::list(&mut client, &ctx)?)?,
    }
    Ok(ExitCode::SUCCESS)
}
