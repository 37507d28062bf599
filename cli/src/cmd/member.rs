//! `libctl member …`: member accounts.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use libcore::members::{self, NewMember};

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// Add an active member (staff accounts need an admin)
    Add(AddArgs),
    /// Import members from CSV (header name,email,phone,role,category); all or nothing
    Import(super::ImportArgs),
    /// List members
    List(ListArgs),
    /// Show a member by id or email
    Show(ShowArgs),
    /// Set a member's status: active, suspended or closed
    SetStatus(SetStatusArgs),
    /// Extend a membership: by 12 months from the later of now and its expiry, or --until DATE
    Renew(RenewArgs),
    /// How a member receives notices: email (the default) or print (letters)
    Notices(NoticesArgs),
}

#[derive(Debug, Args)]
pub struct NoticesArgs {
    /// Member id or email
    pub member: String,
    /// email or print
    #[arg(long, value_parser = ["email", "print"])]
    pub channel: String,
}

#[derive(Debug, Args)]
pub struct RenewArgs {
    /// Member id or email
    pub member: String,
    /// Renew to the end of this day (library time) instead
    #[arg(long)]
    pub until: Option<chrono::NaiveDate>,
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[arg(long)]
    pub name: String,
    #[arg(long)]
    pub email: String,
    #[arg(long)]
    pub phone: Option<String>,
    /// member, librarian or admin
    #[arg(long, default_value = "member")]
    pub role: String,
    /// student, staff or public (or any category with a circulation rule)
    #[arg(long, default_value = "public")]
    pub category: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// pending, active, suspended or closed
    #[arg(long)]
    pub status: Option<String>,
    /// Part of the name or email
    #[arg(long)]
    pub search: Option<String>,
    #[command(flatten)]
    pub page: super::PageArgs,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Member id or email
    pub member: String,
}

#[derive(Debug, Args)]
pub struct SetStatusArgs {
    /// Member id or email
    pub member: String,
    /// active, suspended or closed
    pub status: String,
}

pub fn run(app: &mut App, command: MemberCommand) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    match command {
        MemberCommand::Add(a) => {
            let member = members::add_member(
                &mut client,
                &ctx,
                &NewMember {
                    name: a.name,
                    email: a.email,
                    phone: a.phone,
                    role: Some(a.role),
                    category: Some(a.category),
                },
            )?;
            app.out.record(&member)?;
        }
        MemberCommand::Import(a) => {
            a.run(app, &mut client, &ctx, |c, ctx, file| {
                members::import_members(c, ctx, file)
            })?;
        }
        MemberCommand::List(a) => {
            let page = members::list_members(
                &mut client,
                &ctx,
                a.status.as_deref(),
                a.search.as_deref(),
                a.page.limit,
                a.page.cursor.as_deref(),
            )?;
            app.out.page(&page)?;
        }
        MemberCommand::Show(a) => {
            app.out
                .record(&members::show_member(&mut client, &ctx, &a.member)?)?
        }
        MemberCommand::SetStatus(a) => app.out.record(&members::set_status(
            &mut client,
            &ctx,
            &a.member,
            &a.status,
        )?)?,
        MemberCommand::Renew(a) => {
            app.out
                .record(&members::renew(&mut client, &ctx, &a.member, a.until)?)?
        }
        MemberCommand::Notices(a) => {
            let channel = members::set_notice_channel(&mut client, &ctx, &a.member, &a.channel)?;
            app.out
                .record(&serde_json::json!({ "member": a.member, "notice_channel": channel }))?
        }
    }
    Ok(ExitCode::SUCCESS)
}
