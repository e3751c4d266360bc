//! The table checks, as SQL returning the failing rows: unique keys, type-2 history
//! consistency, referential integrity, row counts, reconciliation of aggregates.

use super::{Severity, SqlCheck};
use crate::etl::Month;

pub(super) const ROW_COUNT: &str = "row_count(>0)";

const BY_FILE_RULES: Option<&str> = Some("the file's row rules");
const BY_PRIMARY_KEY: Option<&str> = Some("the primary key");

impl SqlCheck {
    fn guaranteed_by(mut self, by: Option<&'static str>) -> SqlCheck {
        self.guaranteed_by = by;
        self
    }
}

fn check(
    table: &'static str,
    name: impl Into<String>,
    severity: Severity,
    failing: impl Into<String>,
    detail: &'static str,
) -> SqlCheck {
    SqlCheck {
        table,
        name: name.into(),
        severity,
        failing: failing.into(),
        detail,
        guaranteed_by: None,
    }
}

fn row_count(table: &'static str, filter: &str) -> SqlCheck {
    check(
        table,
        ROW_COUNT,
        Severity::Error,
        format!("SELECT count(*) AS rows FROM {table} {filter} HAVING count(*) = 0"),
        "the table holds rows",
    )
}

fn unique(table: &'static str, key: &str, filter: &str) -> SqlCheck {
    check(
        table,
        format!("unique({key})"),
        Severity::Error,
        format!(
            "SELECT {key}, count(*) AS n FROM {table} {filter} GROUP BY {key} HAVING count(*) > 1"
        ),
        "the key is unique",
    )
    .guaranteed_by(BY_PRIMARY_KEY)
}

/// Checks of the three customer tables (`customer_activity`, `customer_profiles`,
/// `labels`).
pub fn customer_checks() -> Vec<SqlCheck> {
    use Severity::{Error, Warn};
    vec![
        row_count("customer_profiles", ""),
        unique("customer_profiles", "idx", ""),
        check(
            "customer_profiles",
            "range(attr_a)",
            Error,
            "SELECT idx, attr_a FROM customer_profiles WHERE attr_a NOT BETWEEN 1 AND 5",
            "attr_a in 1..=5",
        )
        .guaranteed_by(BY_FILE_RULES),
        check(
            "customer_profiles",
            "accepted_values(attr_b)",
            Error,
            "SELECT idx, attr_b FROM customer_profiles WHERE attr_b NOT IN ('a','b','c','d')",
            "attr_b in a, b, c, d",
        )
        .guaranteed_by(BY_FILE_RULES),
        check(
            "customer_profiles",
            "accepted_values(attr_c)",
            Error,
            "SELECT idx, attr_c FROM customer_profiles WHERE attr_c NOT IN ('yes','no')",
            "attr_c in yes, no",
        )
        .guaranteed_by(BY_FILE_RULES),
        row_count("labels", ""),
        unique("labels", "idx", ""),
        check(
            "labels",
            "accepted_values(label)",
            Error,
            "SELECT idx, label FROM labels WHERE label NOT IN (0, 1)",
            "label in 0, 1",
        )
        .guaranteed_by(BY_FILE_RULES),
        check(
            "labels",
            "relationships(idx -> customer_profiles)",
            Warn,
            "SELECT l.idx FROM labels l WHERE NOT EXISTS \
             (SELECT 1 FROM customer_profiles p WHERE p.idx = l.idx)",
            "every label belongs to a known customer",
        ),
        row_count("customer_activity", ""),
        unique("customer_activity", "idx, valid_from", ""),
        check(
            "customer_activity",
            "valid_from_before_valid_to",
            Error,
            "SELECT idx, valid_from, valid_to FROM customer_activity WHERE valid_to <= valid_from",
            "every closed period ends after it starts",
        )
        .guaranteed_by(BY_FILE_RULES),
        check(
            "customer_activity",
            "no_overlapping_periods",
            Error,
            "SELECT idx, valid_from, valid_to, next_from FROM (\
               SELECT idx, valid_from, valid_to, \
                      lead(valid_from) OVER (PARTITION BY idx ORDER BY valid_from) AS next_from \
               FROM customer_activity) s \
             WHERE valid_to IS NOT NULL AND next_from IS NOT NULL AND valid_to > next_from",
            "closed periods [valid_from, valid_to) of a customer do not overlap",
        ),
        check(
            "customer_activity",
            "at_most_one_current_row",
            Warn,
            "SELECT idx, count(*) AS current_rows FROM customer_activity \
             WHERE valid_to IS NULL GROUP BY idx HAVING count(*) > 1",
            "one open (valid_to empty) row per customer; build-features takes the latest",
        ),
        check(
            "customer_activity",
            "finite(scd_a)",
            Error,
            "SELECT idx, valid_from, scd_a FROM customer_activity \
             WHERE scd_a IN ('NaN'::float8, 'Infinity'::float8, '-Infinity'::float8)",
            "scd_a is a finite number",
        )
        .guaranteed_by(BY_FILE_RULES),
        check(
            "customer_activity",
            "relationships(idx -> customer_profiles)",
            Warn,
            "SELECT DISTINCT a.idx FROM customer_activity a WHERE NOT EXISTS \
             (SELECT 1 FROM customer_profiles p WHERE p.idx = a.idx)",
            "every activity row belongs to a known customer",
        ),
        check(
            "customer_profiles",
            "has_current_activity",
            Warn,
            "SELECT p.idx FROM customer_profiles p WHERE NOT EXISTS \
             (SELECT 1 FROM customer_activity a WHERE a.idx = p.idx AND a.valid_to IS NULL)",
            "every customer has a current activity row (else no features)",
        ),
    ]
}

/// Checks of `store_locations`.
pub fn store_checks() -> Vec<SqlCheck> {
    vec![
        row_count("store_locations", ""),
        unique("store_locations", "idx", ""),
        check(
            "store_locations",
            "not_blank(location)",
            Severity::Error,
            "SELECT idx, location FROM store_locations WHERE btrim(location) = ''",
            "every store has a location",
        )
        .guaranteed_by(BY_FILE_RULES),
    ]
}

/// Checks of `sales` and `monthly_sales`, for one month or all.
pub fn sales_checks(month: Option<Month>) -> Vec<SqlCheck> {
    use Severity::{Error, Warn};
    let (filter, and) = match month {
        Some(m) => {
            let d = m.first_day().format("%Y-%m-%d");
            (
                format!("WHERE sale_month = DATE '{d}'"),
                format!("AND s.sale_month = DATE '{d}'"),
            )
        }
        None => (String::new(), String::new()),
    };
    vec![
        row_count("sales", &filter),
        unique("sales", "sale_month, idx", &filter),
        check(
            "sales",
            "range(value)",
            Warn,
            format!(
                "SELECT s.sale_month, s.idx, s.value FROM sales s \
                 WHERE (s.value < 0 OR s.value > 10) {and}"
            ),
            "value in 0..=10",
        )
        .guaranteed_by(BY_FILE_RULES),
        check(
            "sales",
            "relationships(store_idx -> store_locations)",
            Error,
            format!(
                "SELECT s.sale_month, s.idx, s.store_idx FROM sales s WHERE NOT EXISTS \
                 (SELECT 1 FROM store_locations l WHERE l.idx = s.store_idx) {and}"
            ),
            "every sale is in a known store",
        ),
        check(
            "monthly_sales",
            "reconciles_with(sales)",
            Error,
            format!(
                "SELECT coalesce(m.store_idx, s.store_idx) AS store_idx, \
                        coalesce(m.sale_month, s.sale_month) AS sale_month, \
                        m.value AS monthly, s.value AS summed \
                 FROM (SELECT * FROM monthly_sales {filter}) m \
                 FULL JOIN (SELECT store_idx, sale_month, sum(value) AS value \
                            FROM sales {filter} GROUP BY 1, 2) s \
                   ON m.store_idx = s.store_idx AND m.sale_month = s.sale_month \
                 WHERE m.value IS NULL OR s.value IS NULL OR abs(m.value - s.value) > 1e-6"
            ),
            "monthly_sales holds the sum of sales per store and month",
        ),
    ]
}

/// Checks of `feature_store`.
pub fn feature_checks() -> Vec<SqlCheck> {
    use Severity::{Error, Warn};
    vec![
        row_count("feature_store", ""),
        unique("feature_store", "idx", ""),
        check(
            "feature_store",
            "accepted_values(attr_b)",
            Error,
            "SELECT idx, attr_b FROM feature_store WHERE attr_b NOT IN ('a','b','c','d')",
            "attr_b in a, b, c, d",
        ),
        check(
            "feature_store",
            "accepted_values(label)",
            Error,
            "SELECT idx, label FROM feature_store WHERE label NOT IN (0, 1)",
            "label in 0, 1 (or empty)",
        ),
        check(
            "feature_store",
            "not_null(label)",
            Warn,
            "SELECT idx FROM feature_store WHERE label IS NULL",
            "customers without a label are kept for scoring, not for training",
        ),
    ]
}

/// Every table check.
pub fn all_checks() -> Vec<SqlCheck> {
    let mut v = customer_checks();
    v.extend(store_checks());
    v.extend(sales_checks(None));
    v.extend(feature_checks());
    v
}
