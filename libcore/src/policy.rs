//! Circulation rules per member category, and library-wide settings (the time zone).

use postgres::{Client, GenericClient};
use serde_json::json;

use crate::actor::{Capability, Ctx};
use crate::audit::{self, Audited, Operation};
use crate::calendar::parse_timezone;
use crate::error::{Error, Result};
use crate::fines::FinePolicy;

/// The circulation rule of one member category.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CirculationRule {
    /// Member category (`student`, `staff`, `public`, ...).
    pub category: String,
    /// Loan period in calendar days.
    pub loan_days: i32,
    /// Open loans allowed at once.
    pub max_active_loans: i32,
    /// Renewals allowed per loan.
    pub max_renewals: i32,
    /// Fine per overdue open day.
    pub fine_cents_per_day: i64,
    /// Overdue days that cost nothing.
    pub grace_days: i32,
    /// The most one loan can cost.
    pub max_fine_cents_per_loan: i64,
    /// Outstanding fines at or above this block borrowing.
    pub block_fine_cents: i64,
    /// Any loan overdue by more than this many days blocks borrowing.
    pub block_overdue_days: i32,
    /// Live (waiting or ready) holds allowed at once.
    pub max_holds: i32,
    /// Open days a ready hold waits on the hold shelf.
    pub hold_pickup_days: i32,
    /// A courtesy notice goes out when a loan falls due within this many days (0: none).
    pub courtesy_days: i32,
    /// A notice goes out when a membership lapses within this many days (0: none).
    pub expiry_notice_days: i32,
    /// A loan overdue by more than this many days is declared lost by the nightly (0: never).
    pub lost_after_days: i32,
    /// Charged with a lost item's replacement price.
    pub processing_fee_cents: i64,
    /// Whether a lost item that comes back refunds its replacement charge (never the fee).
    pub lost_refund_on_return: bool,
    /// Claims of a return a member may make before the next needs an override.
    pub max_claims_returned: i32,
    /// Whether the nightly renews loans falling due, when a desk renewal would be allowed.
    pub auto_renew: bool,
}

impl CirculationRule {
    /// The fine policy a new loan snapshots.
    pub fn fine_policy(&self) -> FinePolicy {
        FinePolicy {
            fine_cents_per_day: self.fine_cents_per_day,
            grace_days: self.grace_days,
            max_fine_cents: self.max_fine_cents_per_loan,
        }
    }
}

const RULE_COLUMNS: &str =
    "category, loan_days, max_active_loans, max_renewals, fine_cents_per_day, \
     grace_days, max_fine_cents_per_loan, block_fine_cents, block_overdue_days, \
     max_holds, hold_pickup_days, courtesy_days, expiry_notice_days, lost_after_days, \
     processing_fee_cents, lost_refund_on_return, max_claims_returned, auto_renew";

fn rule_from_row(r: &postgres::Row) -> CirculationRule {
    CirculationRule {
        category: r.get(0),
        loan_days: r.get(1),
        max_active_loans: r.get(2),
        max_renewals: r.get(3),
        fine_cents_per_day: r.get(4),
        grace_days: r.get(5),
        max_fine_cents_per_loan: r.get(6),
        block_fine_cents: r.get(7),
        block_overdue_days: r.get(8),
        max_holds: r.get(9),
        hold_pickup_days: r.get(10),
        courtesy_days: r.get(11),
        expiry_notice_days: r.get(12),
        lost_after_days: r.get(13),
        processing_fee_cents: r.get(14),
        lost_refund_on_return: r.get(15),
        max_claims_returned: r.get(16),
        auto_renew: r.get(17),
    }
}

/// The rule of one member category.
pub fn rule_for(client: &mut impl GenericClient, category: &str) -> Result<CirculationRule> {
    let row = client
        .query_opt(
            &format!("SELECT {RULE_COLUMNS} FROM circulation_rule WHERE category = $1"),
            &[&category],
        )?
        .ok_or_else(|| Error::not_found("circulation rule", category))?;
    Ok(rule_from_row(&row))
}

/// Every rule, by category.
pub fn rules(client: &mut impl GenericClient) -> Result<Vec<CirculationRule>> {
    Ok(client
        .query(
            &format!("SELECT {RULE_COLUMNS} FROM circulation_rule ORDER BY category"),
            &[],
        )?
        .iter()
        .map(rule_from_row)
        .collect())
}

/// The whole policy: rules and settings.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Policy {
    /// Library time zone.
    pub timezone: String,
    /// The prefix of generated item barcodes.
    pub item_barcode_prefix: String,
    /// The replacement price of a lost item without its own.
    pub default_replacement_cents: i64,
    /// Rules by category.
    pub rules: Vec<CirculationRule>,
}

/// Reads the whole policy.
pub fn show(client: &mut impl GenericClient) -> Result<Policy> {
    Ok(Policy {
        timezone: crate::calendar::library_timezone(client)?
            .name()
            .to_string(),
        item_barcode_prefix: item_barcode_prefix(client)?,
        default_replacement_cents: default_replacement_cents(client)?,
        rules: rules(client)?,
    })
}

/// A change to one category's rule; `None` leaves a field as it is. A category that does not
/// exist yet is created with the defaults, then changed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RuleChange {
    /// Category to change.
    pub category: String,
    /// New loan period.
    pub loan_days: Option<i32>,
    /// New loan limit.
    pub max_active_loans: Option<i32>,
    /// New renewal limit.
    pub max_renewals: Option<i32>,
    /// New daily fine.
    pub fine_cents_per_day: Option<i64>,
    /// New grace days.
    pub grace_days: Option<i32>,
    /// New cap per loan.
    pub max_fine_cents_per_loan: Option<i64>,
    /// New limit of live holds.
    pub max_holds: Option<i32>,
    /// New hold shelf time, in open days.
    pub hold_pickup_days: Option<i32>,
    /// New courtesy notice lead, in days.
    pub courtesy_days: Option<i32>,
    /// New membership expiry notice lead, in days.
    pub expiry_notice_days: Option<i32>,
    /// New days overdue before a loan is declared lost (0: never).
    pub lost_after_days: Option<i32>,
    /// New processing fee of a lost item.
    pub processing_fee_cents: Option<i64>,
    /// Whether a returned lost item refunds its replacement charge.
    pub lost_refund_on_return: Option<bool>,
    /// New limit of claims returned.
    pub max_claims_returned: Option<i32>,
    /// Whether the nightly renews loans falling due.
    pub auto_renew: Option<bool>,
}

/// The documented range of every rule value (README, "Policy and calendar"). Fines are
/// bounded so that a year of the largest daily fine on every loan of the largest loan limit
/// still fits a member's balance many times over in a 64-bit sum.
pub const RULE_RANGES: &[(&str, i64, i64)] = &[
    ("--loan-days", 1, 365),
    ("--max-loans", 0, 1_000),
    ("--max-renewals", 0, 100),
    ("--fine-cents-per-day", 0, 100_000),
    ("--grace-days", 0, 365),
    ("--max-fine-cents", 0, 10_000_000),
    ("--max-holds", 0, 1_000),
    ("--hold-pickup-days", 1, 365),
    ("--courtesy-days", 0, 30),
    ("--expiry-notice-days", 0, 365),
    ("--lost-after-days", 0, 3_650),
    ("--processing-fee-cents", 0, 10_000_000),
    ("--max-claims-returned", 0, 100),
];

impl RuleChange {
    /// Every given value within [`RULE_RANGES`] (exit 7 otherwise).
    pub fn check_ranges(&self) -> Result<()> {
        let given = [
            self.loan_days.map(i64::from),
            self.max_active_loans.map(i64::from),
            self.max_renewals.map(i64::from),
            self.fine_cents_per_day,
            self.grace_days.map(i64::from),
            self.max_fine_cents_per_loan,
            self.max_holds.map(i64::from),
            self.hold_pickup_days.map(i64::from),
            self.courtesy_days.map(i64::from),
            self.expiry_notice_days.map(i64::from),
            self.lost_after_days.map(i64::from),
            self.processing_fee_cents,
            self.max_claims_returned.map(i64::from),
        ];
        for ((name, min, max), value) in RULE_RANGES.iter().zip(given) {
            if let Some(value) = value {
                crate::validate::in_range(name, value, *min, *max)?;
            }
        }
        Ok(())
    }
}

/// Changes a rule (admin only). Open loans keep the snapshot they were borrowed under.
pub fn set_rule(client: &mut Client, ctx: &Ctx, change: &RuleChange) -> Result<CirculationRule> {
    let op = Operation::new("policy.set", "circulation_rule", json!(change));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Administer)?;
        if !crate::members::is_valid_category(&change.category) {
            return Err(Error::invalid(
                "invalid_input",
                format!(
                    "category {:?} must be lowercase letters, digits, _",
                    change.category
                ),
            ));
        }
        change.check_ranges()?;
        tx.execute(
            "INSERT INTO circulation_rule (category) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&change.category],
        )?;
        let before = rule_for(tx, &change.category)?;
        let row = tx.query_one(
            &format!(
                "UPDATE circulation_rule SET
                    loan_days = coalesce($2, loan_days),
                    max_active_loans = coalesce($3, max_active_loans),
                    max_renewals = coalesce($4, max_renewals),
                    fine_cents_per_day = coalesce($5, fine_cents_per_day),
                    grace_days = coalesce($6, grace_days),
                    max_fine_cents_per_loan = coalesce($7, max_fine_cents_per_loan),
                    max_holds = coalesce($8, max_holds),
                    hold_pickup_days = coalesce($9, hold_pickup_days),
                    courtesy_days = coalesce($10, courtesy_days),
                    expiry_notice_days = coalesce($11, expiry_notice_days),
                    lost_after_days = coalesce($12, lost_after_days),
                    processing_fee_cents = coalesce($13, processing_fee_cents),
                    lost_refund_on_return = coalesce($14, lost_refund_on_return),
                    max_claims_returned = coalesce($15, max_claims_returned),
                    auto_renew = coalesce($16, auto_renew)
                 WHERE category = $1 RETURNING {RULE_COLUMNS}"
            ),
            &[
                &change.category,
                &change.loan_days,
                &change.max_active_loans,
                &change.max_renewals,
                &change.fine_cents_per_day,
                &change.grace_days,
                &change.max_fine_cents_per_loan,
                &change.max_holds,
                &change.hold_pickup_days,
                &change.courtesy_days,
                &change.expiry_notice_days,
                &change.lost_after_days,
                &change.processing_fee_cents,
                &change.lost_refund_on_return,
                &change.max_claims_returned,
                &change.auto_renew,
            ],
        )?;
        let after = rule_from_row(&row);
        // A higher block threshold may put members with waiting holds back in good standing.
        crate::hold_queue::retarget(tx, ctx, crate::hold_queue::Scope::Everywhere)?;
        Ok(Audited::new(
            after.clone(),
            &after.category,
            json!({ "before": before, "after": after }),
        ))
    })
}

/// Sets the library time zone (admin only).
pub fn set_timezone(client: &mut Client, ctx: &Ctx, name: &str) -> Result<String> {
    let op = Operation::new(
        "policy.set_timezone",
        "library_setting",
        json!({ "timezone": name }),
    );
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Administer)?;
        let tz = parse_timezone(name)?;
        let before = crate::calendar::library_timezone(tx)?;
        set_timezone_in(tx, tz)?;
        Ok(Audited::new(
            tz.name().to_string(),
            "timezone",
            json!({ "before": before.name(), "after": tz.name() }),
        ))
    })
}

/// A library setting's value, `None` when unset.
pub fn setting(client: &mut impl GenericClient, key: &str) -> Result<Option<String>> {
    Ok(client
        .query_opt("SELECT value FROM library_setting WHERE key = $1", &[&key])?
        .map(|r| r.get(0)))
}

/// Sets a library setting inside the caller's (audited) transaction.
fn put_setting(tx: &mut impl GenericClient, key: &str, value: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO library_setting (key, value) VALUES ($1, $2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[&key, &value],
    )?;
    Ok(())
}

/// The replacement price charged for a lost item without a price of its own (V23).
pub fn default_replacement_cents(client: &mut impl GenericClient) -> Result<i64> {
    setting(client, "default_replacement_cents")?
        .as_deref()
        .unwrap_or("2500")
        .parse()
        .map_err(|_| Error::Internal("default_replacement_cents is not a whole number".into()))
}

/// Sets the replacement price of items without one (admin only), 0 to 100,000.00.
pub fn set_default_replacement_cents(client: &mut Client, ctx: &Ctx, cents: i64) -> Result<i64> {
    let op = Operation::new(
        "policy.set_default_replacement_cents",
        "library_setting",
        json!({ "default_replacement_cents": cents }),
    );
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Administer)?;
        crate::validate::in_range("--default-replacement-cents", cents, 0, 10_000_000)?;
        let before = default_replacement_cents(tx)?;
        put_setting(tx, "default_replacement_cents", &cents.to_string())?;
        Ok(Audited::new(
            cents,
            "default_replacement_cents",
            json!({ "before": before, "after": cents }),
        ))
    })
}

/// The settings letters and emails read (V24), each set with `policy set`.
pub const NOTICE_SETTINGS: &[&str] = &[
    "library_name",
    "library_contact",
    "currency",
    "notice_template_dir",
];

/// Sets one of [`NOTICE_SETTINGS`] (admin only): 1–200 characters of text.
pub fn set_notice_setting(
    client: &mut Client,
    ctx: &Ctx,
    key: &str,
    value: &str,
) -> Result<String> {
    let op = Operation::new(
        "policy.set_notice_setting",
        "library_setting",
        json!({ "key": key, "value": value }),
    );
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Administer)?;
        if !NOTICE_SETTINGS.contains(&key) {
            return Err(Error::invalid(
                "invalid_input",
                format!("{key:?} is not one of {}", NOTICE_SETTINGS.join(", ")),
            ));
        }
        let value = crate::validate::required_text(key, value, 200)?;
        let before = setting(tx, key)?;
        put_setting(tx, key, &value)?;
        Ok(Audited::new(
            value.clone(),
            key,
            json!({ "before": before, "after": value }),
        ))
    })
}

/// The prefix generated item barcodes start with (V20).
pub fn item_barcode_prefix(client: &mut impl GenericClient) -> Result<String> {
    Ok(client
        .query_one("SELECT item_barcode_prefix()", &[])?
        .get(0))
}

/// Sets the prefix of generated item barcodes (admin only): 1–12 digits. Items already
/// labelled keep their barcodes; the running number continues.
pub fn set_item_barcode_prefix(client: &mut Client, ctx: &Ctx, prefix: &str) -> Result<String> {
    let op = Operation::new(
        "policy.set_item_barcode_prefix",
        "library_setting",
        json!({ "item_barcode_prefix": prefix }),
    );
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Administer)?;
        let prefix = prefix.trim();
        // The same rule generation applies: a prefix that cannot make a barcode is refused.
        crate::barcode::generate(prefix, 0)?;
        let before = item_barcode_prefix(tx)?;
        put_setting(tx, "item_barcode_prefix", prefix)?;
        Ok(Audited::new(
            prefix.to_string(),
            "item_barcode_prefix",
            json!({ "before": before, "after": prefix }),
        ))
    })
}

/// Writes whole rules, creating or replacing each category's, inside the caller's transaction.
/// For bulk loads (the seeder), which audit nothing row by row.
pub fn replace_rules_in(tx: &mut impl GenericClient, rules: &[CirculationRule]) -> Result<()> {
    for r in rules {
        tx.execute(
            "INSERT INTO circulation_rule (category, loan_days, max_active_loans, max_renewals, fine_cents_per_day,
                                           grace_days, max_fine_cents_per_loan, block_fine_cents, block_overdue_days,
                                           max_holds, hold_pickup_days, courtesy_days, expiry_notice_days,
                                           lost_after_days, processing_fee_cents, lost_refund_on_return,
                                           max_claims_returned, auto_renew)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
             ON CONFLICT (category) DO UPDATE SET loan_days = excluded.loan_days, max_active_loans = excluded.max_active_loans,
                 max_renewals = excluded.max_renewals, fine_cents_per_day = excluded.fine_cents_per_day,
                 grace_days = excluded.grace_days, max_fine_cents_per_loan = excluded.max_fine_cents_per_loan,
                 block_fine_cents = excluded.block_fine_cents, block_overdue_days = excluded.block_overdue_days,
                 max_holds = excluded.max_holds, hold_pickup_days = excluded.hold_pickup_days,
                 courtesy_days = excluded.courtesy_days, expiry_notice_days = excluded.expiry_notice_days,
                 lost_after_days = excluded.lost_after_days, processing_fee_cents = excluded.processing_fee_cents,
                 lost_refund_on_return = excluded.lost_refund_on_return,
                 max_claims_returned = excluded.max_claims_returned, auto_renew = excluded.auto_renew",
            &[
                &r.category,
                &r.loan_days,
                &r.max_active_loans,
                &r.max_renewals,
                &r.fine_cents_per_day,
                &r.grace_days,
                &r.max_fine_cents_per_loan,
                &r.block_fine_cents,
                &r.block_overdue_days,
                &r.max_holds,
                &r.hold_pickup_days,
                &r.courtesy_days,
                &r.expiry_notice_days,
                &r.lost_after_days,
                &r.processing_fee_cents,
                &r.lost_refund_on_return,
                &r.max_claims_returned,
                &r.auto_renew,
            ],
        )?;
    }
    Ok(())
}

/// Sets the library time zone inside the caller's transaction (bulk loads; no audit row).
pub fn set_timezone_in(tx: &mut impl GenericClient, tz: chrono_tz::Tz) -> Result<()> {
    tx.execute(
        "UPDATE library_setting SET value = $1 WHERE key = 'timezone'",
        &[&tz.name()],
    )?;
    Ok(())
}

/// Marks a day closed (admin). Loans already out keep their due dates; fines skip the day.
pub fn add_closed_day(
    client: &mut Client,
    ctx: &Ctx,
    day: chrono::NaiveDate,
    reason: Option<&str>,
) -> Result<crate::calendar::ClosedDay> {
    let op = Operation::new(
        "closed_day.add",
        "closed_day",
        json!({ "day": day, "reason": reason }),
    );
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Administer)?;
        let reason = crate::validate::optional_text("reason", reason, 200)?;
        tx.execute(
            "INSERT INTO closed_day (day, reason) VALUES ($1, $2)
             ON CONFLICT (day) DO UPDATE SET reason = excluded.reason",
            &[&day, &reason],
        )?;
        // A closed day shortens overdue spans: members may be back in good standing.
        crate::hold_queue::retarget(tx, ctx, crate::hold_queue::Scope::Everywhere)?;
        let closed = crate::calendar::ClosedDay { day, reason };
        Ok(Audited::new(
            closed.clone(),
            day,
            json!({ "after": closed }),
        ))
    })
}

/// Reopens a closed day (admin).
pub fn remove_closed_day(
    client: &mut Client,
    ctx: &Ctx,
    day: chrono::NaiveDate,
) -> Result<crate::calendar::ClosedDay> {
    let op = Operation::new("closed_day.remove", "closed_day", json!({ "day": day }));
    audit::run(client, ctx, &op, |tx| {
        ctx.require(Capability::Administer)?;
        let row = tx
            .query_opt(
                "DELETE FROM closed_day WHERE day = $1 RETURNING reason",
                &[&day],
            )?
            .ok_or_else(|| Error::not_found("closed day", day.to_string()))?;
        let removed = crate::calendar::ClosedDay {
            day,
            reason: row.get(0),
        };
        Ok(Audited::new(
            removed.clone(),
            day,
            json!({ "before": removed }),
        ))
    })
}
