//! `libctl review …`, `libctl reviews`, `libctl recommend`.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use libcore::reviews;
use uuid::Uuid;

use crate::app::App;

#[derive(Debug, Subcommand)]
pub enum ReviewCommand {
    /// Rate (1-5) and review a book the member has borrowed
    Add(AddArgs),
    /// Edit your own review
    Update(UpdateArgs),
    /// Delete your own review (librarians may remove any)
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    #[arg(long)]
    pub member: String,
    #[arg(long)]
    pub book: String,
    #[arg(long)]
    pub rating: i64,
    /// Up to 2000 characters
    #[arg(long)]
    pub text: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Review id
    pub id: Uuid,
    #[arg(long)]
    pub rating: Option<i64>,
    #[arg(long)]
    pub text: Option<String>,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Review id
    pub id: Uuid,
}

#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("whose").required(true).args(["book", "member"]))]
pub struct ListArgs {
    #[arg(long)]
    pub book: Option<String>,
    #[arg(long)]
    pub member: Option<String>,
    #[command(flatten)]
    pub page: super::PageArgs,
}

#[derive(Debug, Args)]
pub struct RecommendArgs {
    #[command(subcommand)]
    pub command: Option<RecommendCommand>,
    /// The member to recommend for
    #[arg(long)]
    pub member: Option<String>,
    #[arg(long, default_value_t = 10)]
    pub limit: i64,
}

#[derive(Debug, Subcommand)]
pub enum RecommendCommand {
    /// Recompute every member's co-borrowing recommendations (set-based; nightly can run it)
    Refresh,
}

pub fn run_review(app: &mut App, command: ReviewCommand) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    let review = match command {
        ReviewCommand::Add(a) => reviews::add(
            &mut client,
            &ctx,
            &a.member,
            &a.book,
            a.rating,
            a.text.as_deref(),
        )?,
        ReviewCommand::Update(a) => {
            reviews::update(&mut client, &ctx, a.id, a.rating, a.text.as_deref())?
        }
        ReviewCommand::Delete(a) => reviews::delete(&mut client, &ctx, a.id)?,
    };
    app.out.record(&review)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_reviews(app: &mut App, a: ListArgs) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    let page = reviews::list(
        &mut client,
        &ctx,
        a.book.as_deref(),
        a.member.as_deref(),
        a.page.limit,
        a.page.cursor.as_deref(),
    )?;
    app.out.page(&page)?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_recommend(app: &mut App, a: RecommendArgs) -> anyhow::Result<ExitCode> {
    let (mut client, ctx) = app.session()?;
    match a.command {
        Some(RecommendCommand::Refresh) => {
            let n = reviews::refresh(&mut client, &ctx)?;
            app.out
                .record(&serde_json::json!({ "recommendations": n }))?;
        }
        None => {
            let member = a.member.ok_or_else(|| {
                libcore::Error::invalid("invalid_input", "give --member M, or `recommend refresh`")
            })?;
            app.out
                .rows(reviews::recommend(&mut client, &ctx, &member, a.limit)?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
