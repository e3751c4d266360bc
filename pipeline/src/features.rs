//! `feature_store`: exactly one row per customer, built from the customer's current
//! activity row (`valid_to` empty), profile and label, replaced in one transaction.
//!
//! Decisions for the edge cases (each counted in the report and tested):
//! - **no current activity row** (history closed, or no history): the customer is left
//!   out; there is no current state to score. (Check `has_current_activity`, warn.)
//! - **two or more current rows** (broken history; check `at_most_one_current_row`,
//!   warn): the one with the latest `valid_from` wins, the most recent version.
//! - **no profile**: left out; `attr_a`/`attr_b` are required features.
//! - **no label**: kept with `label` NULL: the customer can be scored; training uses
//!   only labelled rows. (Check `not_null(label)`, warn.)

use serde::Serialize;
use sqlx::PgPool;

use crate::etl::EtlError;
use crate::etl::load::{LoadReport, Outcome, commit_unless_blocked};
use crate::quality;

/// What the build did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FeatureReport {
    pub rows: u64,
    pub customers_with_profile: u64,
    pub no_current_row: u64,
    pub multiple_current_rows: u64,
    pub current_row_without_profile: u64,
    pub without_label: u64,
}

/// Rebuilds `feature_store`; the report rides in the outcome's `LoadReport` as rows.
pub async fn build(pool: &PgPool) -> (Outcome, Option<FeatureReport>) {
    let mut checks = Vec::new();
    let result = build_inner(pool, &mut checks).await;
    match result {
        Ok(r) => (
            Outcome {
                result: Ok(LoadReport {
                    tables: vec![("feature_store".into(), r.rows)],
                    rows_loaded: r.rows,
                }),
                checks,
            },
            Some(r),
        ),
        Err(e) => (
            Outcome {
                result: Err(e),
                checks,
            },
            None,
        ),
    }
}

async fn build_inner(
    pool: &PgPool,
    checks: &mut Vec<quality::CheckResult>,
) -> Result<FeatureReport, EtlError> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pipeline.build-features'), 0)")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM feature_store")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "INSERT INTO feature_store (idx, attr_a, attr_b, scd_a, scd_b, label) \
         SELECT p.idx, p.attr_a, p.attr_b, c.scd_a, c.scd_b, l.label \
         FROM (SELECT DISTINCT ON (idx) idx, scd_a, scd_b FROM customer_activity \
               WHERE valid_to IS NULL ORDER BY idx, valid_from DESC) c \
         JOIN customer_profiles p ON p.idx = c.idx \
         LEFT JOIN labels l ON l.idx = c.idx",
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let (profiles, no_current, multi, orphan, no_label): (i64, i64, i64, i64, i64) =
        sqlx::query_as(
            "SELECT \
               (SELECT count(*) FROM customer_profiles), \
               (SELECT count(*) FROM customer_profiles p WHERE NOT EXISTS \
                  (SELECT 1 FROM customer_activity a WHERE a.idx = p.idx AND a.valid_to IS NULL)), \
               (SELECT count(*) FROM (SELECT idx FROM customer_activity WHERE valid_to IS NULL \
                  GROUP BY idx HAVING count(*) > 1) m), \
               (SELECT count(DISTINCT a.idx) FROM customer_activity a WHERE a.valid_to IS NULL \
                  AND NOT EXISTS (SELECT 1 FROM customer_profiles p WHERE p.idx = a.idx)), \
               (SELECT count(*) FROM feature_store WHERE label IS NULL)",
        )
        .fetch_one(&mut *tx)
        .await?;
    let results = quality::run_checks(&mut tx, &quality::feature_checks()).await?;
    commit_unless_blocked(tx, results, checks).await?;
    let report = FeatureReport {
        rows,
        customers_with_profile: profiles as u64,
        no_current_row: no_current as u64,
        multiple_current_rows: multi as u64,
        current_row_without_profile: orphan as u64,
        without_label: no_label as u64,
    };
    tracing::info!(?report, "feature_store built");
    Ok(report)
}
