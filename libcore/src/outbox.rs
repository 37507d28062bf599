//! The notice outbox (issue 28): one delivery per notice, queued by the transaction that
//! issues it (`notice_delivery`, V24), by email or as a printed letter, each at most once.
//!
//! Letters and emails are rendered from one template per notice kind (`minijinja`): built in,
//! or `<kind>.txt` in a template directory. A template's first line is `Subject: …`; the rest
//! is the body. Templates are checked when loaded, a syntax error or an unknown variable
//! (a trial render in strict mode) refusing the whole run before anything is delivered.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use minijinja::{context, Environment, UndefinedBehavior};
use postgres::{Client, GenericClient};
use uuid::Uuid;

use crate::actor::{Capability, Ctx};
use crate::error::{Error, Result};
use crate::page::{Cursor, Page};

/// Every notice kind, each with its template.
pub const KINDS: &[&str] = &[
    "overdue",
    "courtesy",
    "membership_expiring",
    "hold_ready",
    "auto_renewed",
    "auto_renew_failed",
    "lost_billed",
];

/// The built-in template of `kind`.
fn builtin(kind: &str) -> &'static str {
    match kind {
        "overdue" => include_str!("templates/overdue.txt"),
        "courtesy" => include_str!("templates/courtesy.txt"),
        "membership_expiring" => include_str!("templates/membership_expiring.txt"),
        "hold_ready" => include_str!("templates/hold_ready.txt"),
        "auto_renewed" => include_str!("templates/auto_renewed.txt"),
        "auto_renew_failed" => include_str!("templates/auto_renew_failed.txt"),
        _ => include_str!("templates/lost_billed.txt"),
    }
}

/// The templates of one run, checked.
pub struct Templates {
    env: Environment<'static>,
}

/// A delivery rendered: what the member reads.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Rendered {
    /// The subject line (or the letter's heading).
    pub subject: String,
    /// The text.
    pub body: String,
}

/// A context with every variable any template may use, for the trial render.
fn sample() -> minijinja::Value {
    context! {
        library => context! { name => "The Library", contact => "desk@library.test" },
        member => context! { name => "Ada Lovelace", email => "ada@example.org" },
        notice => context! {
            kind => "overdue", issued_on => "2026-01-01", level => 1, overdue_days => 3,
            amount => "3.00 EUR", reason => "renewal_limit_reached", expires_on => "2026-02-01",
        },
        loan => context! {
            title => "Middlemarch", isbn => "9780306406157", barcode => "30000000000013",
            due_on => "2025-12-29",
        },
        hold => context! { title => "Middlemarch", pickup_by => "2026-01-08" },
    }
}

impl Templates {
    /// Loads the templates: `dir/<kind>.txt` where present, else the built-in one; checks
    /// each (syntax, then a strict trial render). Errors are exit 7 naming the file and line.
    pub fn load(dir: Option<&Path>) -> Result<Templates> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        for kind in KINDS {
            let file: Option<PathBuf> = dir
                .map(|d| d.join(format!("{kind}.txt")))
                .filter(|p| p.is_file());
            let (name, source) = match &file {
                Some(path) => (
                    path.display().to_string(),
                    std::fs::read_to_string(path)
                        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?,
                ),
                None => (format!("built-in {kind}.txt"), builtin(kind).to_string()),
            };
            let invalid = |e: minijinja::Error| {
                Error::invalid(
                    "invalid_template",
                    format!(
                        "{name}, line {}: {}",
                        e.line().unwrap_or(0),
                        e.detail().unwrap_or(&e.to_string())
                    ),
                )
            };
            env.add_template_owned(kind.to_string(), source)
                .map_err(invalid)?;
            let rendered = env
                .get_template(kind)
                .and_then(|t| t.render(sample()))
                .map_err(invalid)?;
            if !rendered.starts_with("Subject:") {
                return Err(Error::invalid(
                    "invalid_template",
                    format!("{name}, line 1: a template starts with `Subject: …`"),
                ));
            }
        }
        Ok(Templates { env })
    }

    /// Renders one notice.
    fn render(&self, kind: &str, ctx: minijinja::Value) -> Result<Rendered> {
        let text = self
            .env
            .get_template(kind)
            .and_then(|t| t.render(ctx))
            .map_err(|e| Error::Internal(format!("rendering the {kind} template: {e}")))?;
        let (first, body) = text.split_once('\n').unwrap_or((&text, ""));
        Ok(Rendered {
            subject: first.trim_start_matches("Subject:").trim().to_string(),
            body: body.trim_start_matches('\n').trim_end().to_string(),
        })
    }
}

/// The template directory: the argument, else the `notice_template_dir` setting.
pub fn template_dir(
    client: &mut impl GenericClient,
    given: Option<&Path>,
) -> Result<Option<PathBuf>> {
    if let Some(dir) = given {
        return Ok(Some(dir.to_path_buf()));
    }
    Ok(crate::policy::setting(client, "notice_template_dir")?.map(PathBuf::from))
}

/// What letters and emails say about the library (the V24 settings), read once per run.
pub(crate) struct Letterhead {
    name: String,
    contact: Option<String>,
    currency: String,
}

impl Letterhead {
    pub(crate) fn load(client: &mut impl GenericClient) -> Result<Letterhead> {
        use crate::policy::setting;
        Ok(Letterhead {
            name: setting(client, "library_name")?.unwrap_or_else(|| "The Library".into()),
            contact: setting(client, "library_contact")?,
            currency: setting(client, "currency")?.unwrap_or_else(|| "EUR".into()),
        })
    }
}

/// Deliveries with what their templates read.
const QUEUED_SELECT: &str = "
    SELECT d.notice_id, n.kind, m.name, m.email, n.issued_on, n.level, n.overdue_days,
           n.fine_cents, n.reason, n.key_date, b.title, b.isbn, i.barcode,
           (l.due_at AT TIME ZONE library_timezone())::date, hb.title, h.pickup_by
    FROM notice_delivery d
    JOIN notice n ON n.id = d.notice_id
    JOIN member m ON m.id = n.member_id
    LEFT JOIN loan l ON l.id = n.loan_id
    LEFT JOIN book b ON b.id = l.book_id
    LEFT JOIN item i ON i.id = l.item_id
    LEFT JOIN hold h ON h.id = n.hold_id
    LEFT JOIN book hb ON hb.id = h.book_id";

/// One queued delivery, rendered.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Letter {
    /// The notice.
    pub notice_id: Uuid,
    /// Its kind.
    pub kind: String,
    /// To whom.
    pub name: String,
    /// Their email.
    pub email: String,
    /// What it says.
    pub rendered: Rendered,
}

/// Reads and renders up to `limit` queued deliveries of `channel` issued by `as_of`, oldest
/// first, locked for the caller's transaction.
fn queued(
    tx: &mut impl GenericClient,
    templates: &Templates,
    head: &Letterhead,
    channel: &str,
    as_of: NaiveDate,
    limit: i64,
) -> Result<Vec<Letter>> {
    render_rows(
        tx,
        templates,
        head,
        &format!(
            "{QUEUED_SELECT}
             WHERE d.channel = $1 AND d.status = 'queued' AND n.issued_on <= $2
             ORDER BY d.queued_at, d.notice_id LIMIT $3
             FOR UPDATE OF d SKIP LOCKED"
        ),
        &[&channel, &as_of, &limit],
    )
}

/// Renders the deliveries `sql` (over [`QUEUED_SELECT`]) reads.
fn render_rows(
    tx: &mut impl GenericClient,
    templates: &Templates,
    head: &Letterhead,
    sql: &str,
    params: &[&(dyn postgres::types::ToSql + Sync)],
) -> Result<Vec<Letter>> {
    let rows = tx.query(sql, params)?;
    rows.iter()
        .map(|r| {
            let kind: String = r.get(1);
            let fine: Option<i64> = r.get(7);
            let ctx = context! {
                library => context! { name => head.name.clone(), contact => head.contact.clone() },
                member => context! { name => r.get::<_, String>(2), email => r.get::<_, String>(3) },
                notice => context! {
                    kind => kind.clone(),
                    issued_on => r.get::<_, NaiveDate>(4).to_string(),
                    level => r.get::<_, Option<i16>>(5),
                    overdue_days => r.get::<_, Option<i32>>(6),
                    amount => fine.map(|c| crate::ledger::format_cents(c, &head.currency)),
                    reason => r.get::<_, Option<String>>(8),
                    expires_on => r.get::<_, Option<NaiveDate>>(9).map(|d| d.to_string()),
                },
                loan => context! {
                    title => r.get::<_, Option<String>>(10),
                    isbn => r.get::<_, Option<String>>(11),
                    barcode => r.get::<_, Option<String>>(12),
                    due_on => r.get::<_, Option<NaiveDate>>(13).map(|d| d.to_string()),
                },
                hold => context! {
                    title => r.get::<_, Option<String>>(14),
                    pickup_by => r.get::<_, Option<NaiveDate>>(15).map(|d| d.to_string()),
                },
            };
            Ok(Letter {
                notice_id: r.get(0),
                rendered: templates.render(&kind, ctx)?,
                kind,
                name: r.get(2),
                email: r.get(3),
            })
        })
        .collect()
}

/// The queued delivery `id`, rendered and locked for the caller's transaction.
fn queued_one(
    tx: &mut impl GenericClient,
    templates: &Templates,
    head: &Letterhead,
    id: Uuid,
) -> Result<Option<Letter>> {
    Ok(render_rows(
        tx,
        templates,
        head,
        &format!("{QUEUED_SELECT} WHERE d.notice_id = $1 AND d.status = 'queued' FOR UPDATE OF d"),
        &[&id],
    )?
    .into_iter()
    .next())
}

/// Marks deliveries sent with what they said: a letter printed (its one attempt), or a message
/// the server accepted (its attempt already counted when it went in flight).
fn mark_sent(tx: &mut impl GenericClient, letters: &[Letter], at: DateTime<Utc>) -> Result<()> {
    let ids: Vec<Uuid> = letters.iter().map(|l| l.notice_id).collect();
    let subjects: Vec<&str> = letters
        .iter()
        .map(|l| l.rendered.subject.as_str())
        .collect();
    let bodies: Vec<&str> = letters.iter().map(|l| l.rendered.body.as_str()).collect();
    tx.execute(
        "UPDATE notice_delivery d SET status = 'sent', sent_at = $4,
                attempts = CASE WHEN d.in_flight_since IS NULL THEN d.attempts + 1 ELSE d.attempts END,
                subject = t.subject, body = t.body, last_error = NULL, in_flight_since = NULL,
                next_attempt_at = NULL
         FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(id, subject, body)
         WHERE d.notice_id = t.id",
        &[&ids, &subjects, &bodies, &at],
    )?;
    Ok(())
}

/// Escapes text for HTML.
fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The letters as one HTML document, one letter per printed page.
pub fn letters_html(letters: &[Letter], library: &str) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} – letters</title><style>\
         @page {{ margin: 2cm; }} body {{ font-family: Georgia, serif; font-size: 12pt; }}\
         .letter {{ break-after: page; page-break-after: always; max-width: 40em; }}\
         .letter:last-child {{ break-after: auto; page-break-after: auto; }}\
         .from {{ text-align: right; }} .body {{ white-space: pre-wrap; }}\
         </style></head><body>\n",
        html(library)
    );
    for l in letters {
        out.push_str(&format!(
            "<section class=\"letter\"><p class=\"from\">{}</p><p class=\"to\">{}</p>\
             <h1>{}</h1><div class=\"body\">{}</div></section>\n",
            html(library),
            html(&l.name),
            html(&l.rendered.subject),
            html(&l.rendered.body)
        ));
    }
    if letters.is_empty() {
        out.push_str("<p>No letters are waiting to be printed.</p>\n");
    }
    out.push_str("</body></html>\n");
    out
}

/// `libctl notices print --out FILE.html [--as-of D]`: renders every queued print letter
/// issued by `as_of` and hands the HTML to `deliver` (which stages the file) before marking
/// them sent in the same transaction: a file that cannot be written marks nothing.
pub fn print(
    client: &mut Client,
    ctx: &Ctx,
    as_of: NaiveDate,
    template_dir: Option<&Path>,
    deliver: &mut dyn FnMut(&str) -> Result<()>,
) -> Result<usize> {
    use crate::audit::{self, Audited, Operation};
    ctx.require(Capability::Jobs)?;
    let dir = self::template_dir(client, template_dir)?;
    let templates = Templates::load(dir.as_deref())?;
    let head = Letterhead::load(client)?;
    let op = Operation::new(
        "notices.print",
        "notice_delivery",
        serde_json::json!({ "as_of": as_of }),
    );
    audit::run(client, ctx, &op, |tx| {
        let letters = queued(tx, &templates, &head, "print", as_of, i64::MAX)?;
        deliver(&letters_html(&letters, &head.name))?;
        mark_sent(tx, &letters, ctx.now())?;
        Ok(Audited::without_entity(
            letters.len(),
            serde_json::json!({ "printed": letters.len() }),
        ))
    })
}

/// Advisory-lock key of the email sender: one `notices send` at a time.
pub const SEND_LOCK_KEY: i64 = 0x4C49_4253_4E44; // "LIBSND"

/// What `notices send` does.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// `smtp://[user:pass@]host:port`, `smtps://…`, `?tls=required` for STARTTLS.
    pub smtp_url: String,
    /// The sender address; the `library_contact` setting when `None`.
    pub from: Option<String>,
    /// At most this many messages a minute.
    pub per_minute: u32,
    /// At most this many messages this run.
    pub limit: Option<i64>,
    /// Render and count; send and change nothing.
    pub dry_run: bool,
    /// Attempts before a delivery is `failed`.
    pub max_attempts: i32,
    /// Templates overriding the built-in ones.
    pub template_dir: Option<PathBuf>,
}

/// What a send run did, by outcome.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SendRun {
    /// Accepted by the server.
    pub sent: u64,
    /// Failed for good: a permanent refusal, or the last attempt.
    pub failed: u64,
    /// Failed for now, to be retried after a backoff.
    pub retrying: u64,
    /// In flight when a previous sender stopped: marked failed, never sent again.
    pub unknown: u64,
    /// Still queued after this run (retries included).
    pub queued: i64,
    /// True when nothing was sent or changed.
    pub dry_run: bool,
}

/// The URL with its password hidden, for messages.
fn redact(url: &str) -> String {
    crate::db::redact_url(url)
}

/// The wait before retry number `attempts + 1`: 1, 2, 4, … minutes, at most a day.
fn backoff(attempts: i32) -> chrono::Duration {
    chrono::Duration::minutes(1_i64 << attempts.clamp(0, 10)).min(chrono::Duration::days(1))
}

/// `libctl notices send --smtp-url URL`: drains the email outbox oldest first, at most
/// `per_minute` messages a minute, under the sender's lock (a second sender exits 4).
///
/// At most once: a delivery is marked in flight (committed) before its message goes out, and
/// sent (committed) once the server accepted it. A sender killed between the two leaves it in
/// flight, and the next run marks it `failed` with "outcome unknown" rather than send it
/// again: a reader may miss a reminder the mail log shows as delivered, but never gets one
/// twice, and the operator sees which ones to check.
pub fn send(client: &mut Client, ctx: &Ctx, options: &SendOptions) -> Result<SendRun> {
    use lettre::message::{header::ContentType, Mailbox, Message};
    use lettre::{SmtpTransport, Transport};
    ctx.require(Capability::Jobs)?;
    crate::validate::in_range("--rate", i64::from(options.per_minute), 1, 6000)?;
    crate::validate::in_range("--max-attempts", i64::from(options.max_attempts), 1, 100)?;
    let dir = self::template_dir(client, options.template_dir.as_deref())?;
    let templates = Templates::load(dir.as_deref())?;
    let head = Letterhead::load(client)?;
    let from = options
        .from
        .clone()
        .or_else(|| head.contact.clone())
        .unwrap_or_else(|| "library@localhost".into());
    let from: Mailbox = from
        .parse()
        .map_err(|e| Error::invalid("invalid_input", format!("--from {from:?}: {e}")))?;
    let transport = SmtpTransport::from_url(&options.smtp_url)
        .map_err(|e| {
            Error::invalid(
                "invalid_input",
                format!("--smtp-url {}: {e}", redact(&options.smtp_url)),
            )
        })?
        .timeout(Some(std::time::Duration::from_secs(30)))
        .build();
    let got: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&SEND_LOCK_KEY])?
        .get(0);
    if !got {
        return Err(Error::refused(
            crate::Refusal::JobAlreadyRunning,
            "another notices send holds the sender's lock; this one sent nothing",
        ));
    }
    let result = (|| -> Result<SendRun> {
        let mut run = SendRun {
            dry_run: options.dry_run,
            ..SendRun::default()
        };
        if !options.dry_run {
            run.unknown = client.execute(
                "UPDATE notice_delivery SET status = 'failed', in_flight_since = NULL,
                        last_error = 'outcome unknown: the sender stopped while this message was                                       in flight; check the mail log before queueing it again'
                 WHERE status = 'queued' AND in_flight_since IS NOT NULL",
                &[],
            )?;
        }
        let spacing = std::time::Duration::from_secs_f64(60.0 / f64::from(options.per_minute));
        let mut last_send: Option<std::time::Instant> = None;
        let limit = options.limit.unwrap_or(i64::MAX);
        if options.dry_run {
            // Render what would go out now, and change nothing.
            let mut tx = client.transaction()?;
            let due = queued(
                &mut tx,
                &templates,
                &head,
                "email",
                chrono::NaiveDate::MAX,
                limit,
            )?;
            let now = ctx.now();
            for letter in &due {
                let ready: bool = tx
                    .query_one(
                        "SELECT coalesce(next_attempt_at <= $2, true) FROM notice_delivery
                         WHERE notice_id = $1",
                        &[&letter.notice_id, &now],
                    )?
                    .get(0);
                run.sent += u64::from(ready);
            }
            tx.rollback()?;
            run.queued = queued_count(client)?;
            return Ok(run);
        }
        let mut done = 0i64;
        while done < limit {
            let now = ctx.now();
            let mut tx = client.transaction()?;
            let next: Option<Uuid> = tx
                .query_opt(
                    "SELECT notice_id FROM notice_delivery
                     WHERE channel = 'email' AND status = 'queued' AND in_flight_since IS NULL
                       AND coalesce(next_attempt_at <= $1, true)
                     ORDER BY queued_at, notice_id LIMIT 1",
                    &[&now],
                )?
                .map(|r| r.get(0));
            let Some(next) = next else { break };
            let Some(letter) = queued_one(&mut tx, &templates, &head, next)? else {
                break;
            };
            let attempts: i32 = tx
                .query_one(
                    "UPDATE notice_delivery SET in_flight_since = $2, attempts = attempts + 1
                     WHERE notice_id = $1 RETURNING attempts",
                    &[&letter.notice_id, &now],
                )?
                .get(0);
            tx.commit()?;
            if let Some(last) = last_send {
                let elapsed = last.elapsed();
                if elapsed < spacing {
                    std::thread::sleep(spacing - elapsed);
                }
            }
            last_send = Some(std::time::Instant::now());
            let to = letter
                .email
                .parse::<lettre::Address>()
                .map(|address| Mailbox::new(Some(letter.name.clone()), address))
                .map_err(|e| format!("address {:?}: {e}", letter.email));
            let message = to.and_then(|to| {
                Message::builder()
                    .from(from.clone())
                    .to(to)
                    .subject(letter.rendered.subject.clone())
                    .header(ContentType::TEXT_PLAIN)
                    .body(letter.rendered.body.clone())
                    .map_err(|e| e.to_string())
            });
            let outcome = match &message {
                Ok(message) => transport.send(message).map_err(|e| {
                    let permanent = e.is_permanent();
                    (permanent, e.to_string())
                }),
                Err(e) => Err((true, format!("cannot build the message: {e}"))),
            };
            match outcome {
                Ok(_) => {
                    mark_sent(client, std::slice::from_ref(&letter), ctx.now())?;
                    run.sent += 1;
                }
                Err((permanent, reason)) => {
                    let give_up = permanent || attempts >= options.max_attempts;
                    client.execute(
                        "UPDATE notice_delivery SET status = CASE WHEN $2 THEN 'failed' ELSE 'queued' END,
                                last_error = $3, in_flight_since = NULL, next_attempt_at = $4
                         WHERE notice_id = $1",
                        &[
                            &letter.notice_id,
                            &give_up,
                            &redact_in(&reason, &options.smtp_url),
                            &(ctx.now() + backoff(attempts - 1)),
                        ],
                    )?;
                    if give_up {
                        run.failed += 1;
                    } else {
                        run.retrying += 1;
                    }
                }
            }
            done += 1;
        }
        run.queued = queued_count(client)?;
        Ok(run)
    })();
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&SEND_LOCK_KEY]);
    let run = result?;
    if !options.dry_run {
        crate::audit::record(
            client,
            ctx,
            &crate::audit::Entry {
                action: "notices.send",
                entity_type: "notice_delivery",
                entity_id: None,
                outcome: "ok",
                details: serde_json::json!(run),
            },
        )?;
    }
    Ok(run)
}

fn queued_count(client: &mut Client) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT count(*) FROM notice_delivery WHERE channel = 'email' AND status = 'queued'",
            &[],
        )?
        .get(0))
}

/// `text` with the password of `url` (`scheme://user:password@host…`) replaced.
fn redact_in(text: &str, url: &str) -> String {
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .filter(|p| !p.is_empty());
    match password {
        Some(password) => text.replace(password, "***"),
        None => text.to_string(),
    }
}

/// One row of `notices outbox`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delivery {
    /// The notice.
    pub notice_id: Uuid,
    /// Its kind.
    pub kind: String,
    /// The member's email.
    pub email: String,
    /// `email` or `print`.
    pub channel: String,
    /// `queued`, `sent`, `failed` or `skipped`.
    pub status: String,
    /// Attempts so far.
    pub attempts: i32,
    /// The last failure.
    pub last_error: Option<String>,
    /// Queued.
    pub queued_at: DateTime<Utc>,
    /// Sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// The subject as sent.
    pub subject: Option<String>,
}

/// `libctl notices outbox [--status S]`: deliveries, oldest first, a page at a time.
pub fn list(
    client: &mut impl GenericClient,
    ctx: &Ctx,
    status: Option<&str>,
    limit: i64,
    cursor: Option<&str>,
) -> Result<Page<Delivery>> {
    ctx.require(Capability::Jobs)?;
    if let Some(s) = status.filter(|s| !["queued", "sent", "failed", "skipped"].contains(s)) {
        return Err(Error::invalid(
            "invalid_input",
            format!("status must be queued, sent, failed or skipped, not {s:?}"),
        ));
    }
    let limit = crate::validate::limit(limit, 10_000)?;
    let after = cursor.map(Cursor::decode).transpose()?.map(|c| c.0);
    let rows = client.query(
        "SELECT d.notice_id, n.kind, m.email, d.channel, d.status, d.attempts, d.last_error,
                d.queued_at, d.sent_at, d.subject
         FROM notice_delivery d JOIN notice n ON n.id = d.notice_id
         JOIN member m ON m.id = n.member_id
         WHERE ($1::text IS NULL OR d.status = $1) AND ($2::uuid IS NULL OR d.notice_id > $2)
         ORDER BY d.notice_id LIMIT $3",
        &[&status, &after, &(limit + 1)],
    )?;
    Ok(Page::from_rows(
        rows.iter()
            .map(|r| Delivery {
                notice_id: r.get(0),
                kind: r.get(1),
                email: r.get(2),
                channel: r.get(3),
                status: r.get(4),
                attempts: r.get(5),
                last_error: r.get(6),
                queued_at: r.get(7),
                sent_at: r.get(8),
                subject: r.get(9),
            })
            .collect(),
        limit,
        |d| d.notice_id,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_templates_load_and_a_broken_one_is_refused_by_file_and_line() {
        Templates::load(None).unwrap();
        let dir = std::env::temp_dir().join(format!("libctl-tpl-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("overdue.txt"),
            "Subject: Overdue\n\nDear {{ member.name }},\n{{ member.shoe_size }}\n",
        )
        .unwrap();
        let unknown = Templates::load(Some(&dir)).err().unwrap();
        assert_eq!(unknown.exit_code(), 7);
        assert!(
            unknown.to_string().contains("overdue.txt, line 4"),
            "{unknown}"
        );
        std::fs::write(dir.join("overdue.txt"), "Subject: x\n{% if %}\n").unwrap();
        let syntax = Templates::load(Some(&dir)).err().unwrap();
        assert!(
            syntax.to_string().contains("overdue.txt, line 2"),
            "{syntax}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
