//! Reviews, ratings and recommendations.
//!
//! A review and its book's `rating_count`/`rating_sum` change in one transaction; the update
//! of the book row takes its row lock, so concurrent reviews of one book serialise on it and the
//! aggregate stays exact. One review per member and book is a unique key, so two racing first
//! reviews cannot both land.

use chrono::{DateTime, Utc};
use postgres::{Client, GenericClient};
use serde_json::json;
use uuid::Uuid;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, Operation};
use crate::catalog;
use crate::error::{Error, Refusal, Result};
use crate::members;
use crate::page::{Cursor, Page};
use crate::pg::is_unique_violation;

/// Longest review text, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;

/// A review.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Review {
    /// UUID v7.
    pub id: Uuid,
    /// Reviewer.
    pub member_id: Uuid,
    /// Book.
    pub book_id: Uuid,
    /// 1 to 5.
    pub rating: i16,
    /// Optional text.
    pub text: Option<String>,
    /// Written.
    pub created_at: DateTime<Utc>,
    /// Last edited.
    pub updated_at: DateTime<Utc>,
}

const REVIEW_COLUMNS: &str = "id, member_id, book_id, rating, text, created_at, updated_at";

fn review_from_row(r: &postgres::Row) -> Review {
    Review {
        id: r.get(0),
        member_id: r.get(1),
        book_id: r.get(2),
        rating: r.get(3),
        text: r.get(4),
        created_at: r.get(5),
        updated_at: r.get(6),
    }
}

fn valid_rating(rating: i64) -> Result<i16> {
    if (1..=5).contains(&rating) {
        Ok(rating as i16)
    } else {
        Err(Error::invalid(
            "invalid_input",
            format!("a rating is 1 to 5, not {rating}"),
        ))
    }
}

/// Trims the text; rejects control characters (newlines and tabs are fine) and overlong text.
fn valid_text(text: Option<&str>) -> Result<Option<String>> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::invalid(
            "invalid_input",
            "review text contains control characters",
        ));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::invalid(
            "invalid_input",
            format!("review text is longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    Ok(Some(text.to_string()))
}

/// Adds a member's review of a book they have borrowed (the member themselves, or staff).
pub fn add(
    client: &mut Client,
    ctx: &Ctx,
    member: &str,
    book: &str,
    rating: i64,
    text: Option<&str>,
) -> Result<Review> {
    let op = Operation::new(
        "review.add",
        "review",
        json!({ "member": member, "book": book, "rating": rating }),
    );
    audit::run(client, ctx, &op, |tx| {
        let member_id = members::find_member(tx, member)?.id;
        ctx.require_self_or(member_id, Capability::ManageMembers)?;
        let book_id = catalog::book_id(tx, book)?;
        let rating = valid_rating(rating)?;
        let text = valid_text(text)?;
        let borrowed = tx
            .query_opt(
                "SELECT 1 FROM loan_all WHERE member_id = $1 AND book_id = $2 LIMIT 1",
                &[&member_id, &book_id],
            )?
            .is_some();
        if !borrowed {
            return Err(Error::refused(
                Refusal::NotBorrowed,
                "a member may review only a book they have borrowed",
            ));
        }
        let now = ctx.now();
        let inserted = tx.query_one(
            &format!(
                "INSERT INTO review (id, member_id, book_id, rating, text, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6) RETURNING {REVIEW_COLUMNS}"
            ),
            &[
                &crate::ids::new_id(now),
                &member_id,
                &book_id,
                &rating,
                &text,
                &now,
            ],
        );
        let review = match inserted {
            Ok(row) => review_from_row(&row),
            Err(e) if is_unique_violation(&e, "review_member_book_key") => {
                return Err(Error::refused(
                    Refusal::DuplicateReview,
                    "this member has already reviewed this book; use `review update`",
                ))
            }
            Err(e) => return Err(e.into()),
        };
        tx.execute(
            "UPDATE book SET rating_count = rating_count + 1, rating_sum = rating_sum + $2 WHERE id = $1",
            &[&book_id, &i64::from(rating)],
        )?;
        Ok(Audited::new(
            review.clone(),
            review.id,
            json!({ "after": review }),
        ))
    })
}

/// Locks a review for a change by its author (or, for deletion, a librarian).
fn lock_review(tx: &mut impl GenericClient, id: Uuid) -> Result<Review> {
    tx.query_opt(
        &format!("SELECT {REVIEW_COLUMNS} FROM review WHERE id = $1 FOR UPDATE"),
        &[&id],
    )?
    .map(|r| review_from_row(&r))
    .ok_or_else(|| Error::not_found("review", id.to_string()))
}

/// Edits one's own review.
pub fn update(
    client: &mut Client,
    ctx: &Ctx,
    id: Uuid,
    rating: Option<i64>,
    text: Option<&str>,
) -> Result<Review> {
    let op = Operation::new(
        "review.update",
        "review",
        json!({ "review": id, "rating": rating }),
    );
    audit::run(client, ctx, &op, |tx| {
        let before = lock_review(tx, id)?;
        if ctx.actor.member_id != Some(before.member_id) {
            return Err(Error::denied("members edit only their own reviews"));
        }
        let rating = rating
            .map(valid_rating)
            .transpose()?
            .unwrap_or(before.rating);
        let text = match text {
            Some(t) => valid_text(Some(t))?,
            None => before.text.clone(),
        };
        let row = tx.query_one(
            &format!("UPDATE review SET rating = $2, text = $3, updated_at = $4 WHERE id = $1 RETURNING {REVIEW_COLUMNS}"),
            &[&id, &rating, &text, &ctx.now()],
        )?;
        tx.execute(
            "UPDATE book SET rating_sum = rating_sum + $2 WHERE id = $1",
            &[
                &before.book_id,
                &(i64::from(rating) - i64::from(before.rating)),
            ],
        )?;
        let after = review_from_row(&row);
        Ok(Audited::new(
            after.clone(),
            id,
            json!({ "before": before, "after": after }),
        ))
    })
}

/// Deletes a review: its author, or a librarian or admin (audited with what was removed).
pub fn delete(client: &mut Client, ctx: &Ctx, id: Uuid) -> Result<Review> {
    let op = Operation::new("review.delete", "review", json!({ "review": id }));
    audit::run(client, ctx, &op, |tx| {
        let before = lock_review(tx, id)?;
        ctx.require_self_or(before.member_id, Capability::ManageMembers)?;
        tx.execute("DELETE FROM review WHERE id = $1", &[&id])?;
        tx.execute(
            "UPDATE book SET rating_count = rating_count - 1, rating_sum = rating_sum - $2 WHERE id = $1",
            &[&before.book_id, &i64::from(before.rating)],
        )?;
        Ok(Audited::new(
            before.clone(),
            id,
            json!({ "before": before }),
        ))
    })
}

/// Reviews of a book or by a member, newest id last, one page at a time. A book's reviews are
/// public; a member's list says what they have read, so only they and staff see it.
pub fn list(
    client: &mut Client,
    ctx: &Ctx,
    book: Option<&str>,
    member: Option<&str>,
    limit: i64,
    cursor: Option<&str>,
) -> Result<Page<Review>> {
    let book_id = book.map(|b| catalog::book_id(client, b)).transpose()?;
    let member_id = member
        .map(|m| members::find_member(client, m).map(|m| m.id))
        .transpose()?;
    if let Some(member_id) = member_id {
        ctx.require_self_or(member_id, Capability::ManageMembers)?;
    }
    if book_id.is_none() && member_id.is_none() {
        return Err(Error::invalid("invalid_input", "give --book or --member"));
    }
    let after = cursor.map(Cursor::decode).transpose()?.map(|c| c.0);
    let limit = crate::validate::limit(limit, 10_000)?;
    let rows = client.query(
        &format!(
            "SELECT {REVIEW_COLUMNS} FROM review
             WHERE ($1::uuid IS NULL OR book_id = $1) AND ($2::uuid IS NULL OR member_id = $2)
               AND ($3::uuid IS NULL OR id > $3)
             ORDER BY id LIMIT $4"
        ),
        &[&book_id, &member_id, &after, &(limit + 1)],
    )?;
    Ok(Page::from_rows(
        rows.iter().map(review_from_row).collect(),
        limit,
        |r| r.id,
    ))
}

/// A book ranked by rating.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TopRated {
    /// Rank.
    pub rank: i64,
    /// Book.
    pub book_id: Uuid,
    /// Title.
    pub title: String,
    /// Author.
    pub author: String,
    /// Reviews.
    pub reviews: i32,
    /// Average rating, two decimals.
    pub average: f64,
}

/// `report top-rated`: books with at least `min_reviews` reviews, best average first.
pub fn top_rated(
    client: &mut Client,
    ctx: &Ctx,
    min_reviews: i32,
    limit: i64,
) -> Result<Vec<TopRated>> {
    ctx.require(Capability::Reports)?;
    Ok(client
        .query(
            "SELECT row_number() OVER (ORDER BY rating_sum::float8 / rating_count DESC, rating_count DESC, id),
                    id, title, author, rating_count, round(rating_sum::numeric / rating_count, 2)::float8
             FROM book WHERE rating_count >= greatest($1, 1)
             ORDER BY rating_sum::float8 / rating_count DESC, rating_count DESC, id LIMIT $2",
            &[&min_reviews, &crate::validate::limit(limit, 10_000)?],
        )?
        .iter()
        .map(|r| TopRated { rank: r.get(0), book_id: r.get(1), title: r.get(2), author: r.get(3), reviews: r.get(4), average: r.get(5) })
        .collect())
}

/// A recommendation with its reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recommendation {
    /// Rank.
    pub rank: i32,
    /// Book.
    pub book_id: Uuid,
    /// Title.
    pub title: String,
    /// Why.
    pub reason: String,
}

/// How far back co-borrowing looks.
pub const RECOMMEND_WINDOW_DAYS: i64 = 365;
/// Recommendations kept per member.
pub const RECOMMENDATIONS_PER_MEMBER: i64 = 10;

/// `recommend refresh`: recomputes every member's co-borrowing recommendations, set-based,
/// in one transaction (idempotent). Looks at loans of the last year: books borrowed by members
/// who borrowed what this member borrowed, weighted by how many did, excluding books the member
/// ever had.
pub fn refresh(client: &mut Client, ctx: &Ctx) -> Result<i64> {
    let op = Operation::new("recommend.refresh", "recommendation", json!({}));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Jobs)?;
        let since =
            crate::ids::id_from_parts(ctx.now() - chrono::Duration::days(RECOMMEND_WINDOW_DAYS), 0);
        tx.execute("DELETE FROM recommendation", &[])?;
        let n = tx.execute(
            "WITH recent AS (
                 SELECT DISTINCT member_id, book_id FROM loan WHERE id >= $1
             ), pairs AS (
                 SELECT a.book_id AS a, b.book_id AS b, count(*) AS n
                 FROM recent a JOIN recent b ON a.member_id = b.member_id AND a.book_id <> b.book_id
                 GROUP BY 1, 2
             ), neighbours AS (
                 SELECT a, b, n FROM (
                     SELECT a, b, n, row_number() OVER (PARTITION BY a ORDER BY n DESC, b) AS r FROM pairs) t
                 WHERE r <= 20
             ), candidates AS (
                 SELECT r.member_id, p.b AS book_id, sum(p.n) AS score,
                        (array_agg(p.a ORDER BY p.n DESC, p.a))[1] AS because, max(p.n) AS because_n
                 FROM recent r JOIN neighbours p ON p.a = r.book_id
                 WHERE NOT EXISTS (SELECT 1 FROM loan_all x WHERE x.member_id = r.member_id AND x.book_id = p.b)
                 GROUP BY 1, 2
             ), ranked AS (
                 SELECT *, row_number() OVER (PARTITION BY member_id ORDER BY score DESC, book_id) AS rank FROM candidates
             )
             INSERT INTO recommendation (member_id, rank, book_id, score, reason)
             SELECT k.member_id, k.rank, k.book_id, k.score,
                    format('borrowed by %s readers of %s', k.because_n, b.title)
             FROM ranked k JOIN book b ON b.id = k.because
             WHERE k.rank <= $2",
            &[&since, &RECOMMENDATIONS_PER_MEMBER],
        )? as i64;
        Ok(Audited::new(n, "all", json!({ "recommendations": n })))
    })
}

/// `recommend --member M`: the precomputed co-borrowing list, topped up from the genres the
/// member reads most (or the most popular books, for a member with no history).
pub fn recommend(
    client: &mut Client,
    ctx: &Ctx,
    member: &str,
    limit: i64,
) -> Result<Vec<Recommendation>> {
    let member_id = members::find_member(client, member)?.id;
    ctx.require_self_or(member_id, Capability::Reports)?;
    let limit = crate::validate::limit(limit, 100)?;
    let mut out: Vec<Recommendation> = client
        .query(
            "SELECT r.rank, r.book_id, b.title, r.reason FROM recommendation r JOIN book b ON b.id = r.book_id
             WHERE r.member_id = $1 ORDER BY r.rank LIMIT $2",
            &[&member_id, &limit],
        )?
        .iter()
        .map(|r| Recommendation { rank: r.get(0), book_id: r.get(1), title: r.get(2), reason: r.get(3) })
        .collect();
    if (out.len() as i64) < limit {
        let have: Vec<Uuid> = out.iter().map(|r| r.book_id).collect();
        let fallback = client.query(
            "WITH favourite AS (
                 SELECT b.genre, count(*) AS n FROM loan_all l JOIN book b ON b.id = l.book_id
                 WHERE l.member_id = $1 AND b.genre IS NOT NULL GROUP BY b.genre ORDER BY n DESC, b.genre LIMIT 1
             )
             SELECT b.id, b.title,
                    CASE WHEN f.genre IS NULL THEN 'popular with readers here'
                         ELSE format('popular in %s, the genre you read most', f.genre) END
             FROM book b LEFT JOIN favourite f ON true
             WHERE (f.genre IS NULL OR b.genre = f.genre) AND b.category <> 'reference'
               AND NOT (b.id = ANY($2))
               AND NOT EXISTS (SELECT 1 FROM loan_all l WHERE l.member_id = $1 AND l.book_id = b.id)
             ORDER BY b.rating_count DESC, b.total_copies - b.available_copies DESC, b.id
             LIMIT $3",
            &[&member_id, &have, &(limit - out.len() as i64)],
        )?;
        for r in fallback {
            out.push(Recommendation {
                rank: out.len() as i32 + 1,
                book_id: r.get(0),
                title: r.get(1),
                reason: r.get(2),
            });
        }
    }
    Ok(out)
}
