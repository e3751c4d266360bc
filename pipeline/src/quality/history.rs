//! The customer tables' history and relationship checks in one query: one sort of
//! `customer_activity` by `(idx, valid_from)` gives the overlap and current-row facts,
//! and one pass of joins with `customer_profiles` and `labels` the relationships. The
//! same results (names, severities, counts, sample columns) as running the five
//! separate checks of [`super::customer_checks`], which each scan the tables again.

use sqlx::{AssertSqlSafe, PgConnection};

use super::{CheckResult, SqlCheck};

/// (table, check) of the history and relationship checks a customer load answers
/// together (from the rows it streamed, or as one query), in the query's column order.
pub const HISTORY_CHECKS: [(&str, &str); 5] = [
    ("customer_activity", "no_overlapping_periods"),
    ("customer_activity", "at_most_one_current_row"),
    (
        "customer_activity",
        "relationships(idx -> customer_profiles)",
    ),
    ("customer_profiles", "has_current_activity"),
    ("labels", "relationships(idx -> customer_profiles)"),
];

/// The names of the three customer tables to read (the tables themselves, or the
/// tables a load has just filled before they replace them).
#[derive(Clone, Copy, Debug)]
pub struct CustomerTables<'a> {
    pub activity: &'a str,
    pub profiles: &'a str,
    pub labels: &'a str,
}

impl CustomerTables<'static> {
    pub const LIVE: CustomerTables<'static> = CustomerTables {
        activity: "customer_activity",
        profiles: "customer_profiles",
        labels: "labels",
    };
}

/// A failing count and a sample (a JSON array of rows) for one check.
pub(super) type Answer = (i64, serde_json::Value);

/// The checks of [`HISTORY_CHECKS`] taken out of a list, in its order (`None`: not asked for).
pub(super) struct Taken(Vec<Option<SqlCheck>>);

/// Takes the checks the combined query answers out of `checks`.
pub(super) fn take_combined(checks: &mut Vec<SqlCheck>) -> Taken {
    let mut taken: Vec<Option<SqlCheck>> = vec![None; HISTORY_CHECKS.len()];
    checks.retain(|c| {
        match HISTORY_CHECKS
            .iter()
            .position(|(t, n)| *t == c.table && *n == c.name)
        {
            Some(i) => {
                taken[i] = Some(c.clone());
                false
            }
            None => true,
        }
    });
    Taken(taken)
}

impl Taken {
    /// The results of the checks taken, from the answers in [`HISTORY_CHECKS`]'s order.
    pub(super) fn answer(self, answers: [Answer; HISTORY_CHECKS.len()]) -> Vec<CheckResult> {
        self.0
            .into_iter()
            .zip(answers)
            .filter_map(|(c, (failing, sample))| {
                let c = c?;
                Some(CheckResult {
                    table: c.table.to_string(),
                    check: c.name,
                    severity: c.severity,
                    passed: failing == 0,
                    failing_rows: failing,
                    sample,
                    detail: c.detail.to_string(),
                })
            })
            .collect()
    }
}

/// Takes the checks the combined query answers out of `checks` and runs them as one
/// query over `tables`. Fewer than two of them asked for: leaves `checks` as it was
/// (one alone is cheaper as its own query) and runs nothing.
pub async fn run_history_checks(
    conn: &mut PgConnection,
    checks: &mut Vec<SqlCheck>,
    tables: CustomerTables<'_>,
) -> Result<Vec<CheckResult>, sqlx::Error> {
    let taken = take_combined(checks);
    if taken.0.iter().flatten().count() < 2 {
        // One of them alone is cheaper as its own query.
        checks.extend(taken.0.into_iter().flatten());
        return Ok(Vec::new());
    }
    super::raise_work_mem(conn).await?;
    let started = std::time::Instant::now();
    let row: HistoryRow = sqlx::query_as(AssertSqlSafe(combined_sql(tables)))
        .fetch_one(&mut *conn)
        .await?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "history checks ran (one query)"
    );
    let json = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
    Ok(taken.answer([
        (row.0, json(&row.1)),
        (row.2, json(&row.3)),
        (row.4, json(&row.5)),
        (row.6, json(&row.7)),
        (row.8, json(&row.9)),
    ]))
}

type HistoryRow = (
    i64,
    String,
    i64,
    String,
    i64,
    String,
    i64,
    String,
    i64,
    String,
);

/// One sort of the activity rows per customer (window: the next period's start, the
/// row's rank, the customer's number of open rows), full-joined with the profiles and
/// the labels by `idx`; only the rows that fail some check are kept (materialised:
/// none, when the data is good), then counted and sampled per check.
fn combined_sql(t: CustomerTables<'_>) -> String {
    let CustomerTables {
        activity,
        profiles,
        labels,
    } = t;
    let sample = |flag: &str, obj: &str| {
        format!(
            "(SELECT coalesce(jsonb_agg(s.o), '[]'::jsonb) FROM \
               (SELECT {obj} AS o FROM f WHERE {flag} LIMIT 5) s)::text"
        )
    };
    format!(
        "WITH a AS ( \
           SELECT idx, valid_from, valid_to, \
                  lead(valid_from) OVER w AS next_from, \
                  row_number() OVER w AS rn, \
                  count(*) FILTER (WHERE valid_to IS NULL) \
                    OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) \
                    AS current_rows \
           FROM {activity} WINDOW w AS (PARTITION BY idx ORDER BY valid_from)), \
         j AS ( \
           SELECT a.idx AS a_idx, a.valid_from, a.valid_to, a.next_from, a.current_rows, \
                  p.idx AS p_idx, l.idx AS l_idx, \
                  (a.valid_to IS NOT NULL AND a.next_from IS NOT NULL \
                     AND a.valid_to > a.next_from) AS overlap, \
                  (a.rn = 1 AND a.current_rows > 1) AS multi, \
                  (a.rn = 1 AND p.idx IS NULL) AS orphan_activity, \
                  (p.idx IS NOT NULL AND (a.idx IS NULL OR (a.rn = 1 AND a.current_rows = 0))) \
                    AS no_current, \
                  (l.idx IS NOT NULL AND p.idx IS NULL AND (a.idx IS NULL OR a.rn = 1)) \
                    AS orphan_label \
           FROM a FULL JOIN {profiles} p ON p.idx = a.idx \
                  FULL JOIN {labels} l ON l.idx = coalesce(a.idx, p.idx)), \
         f AS MATERIALIZED ( \
           SELECT * FROM j WHERE overlap OR multi OR orphan_activity OR no_current \
                                 OR orphan_label) \
         SELECT count(*) FILTER (WHERE overlap), {s_overlap}, \
                count(*) FILTER (WHERE multi), {s_multi}, \
                count(*) FILTER (WHERE orphan_activity), {s_orphan}, \
                count(*) FILTER (WHERE no_current), {s_current}, \
                count(*) FILTER (WHERE orphan_label), {s_label} \
         FROM f",
        s_overlap = sample(
            "overlap",
            "jsonb_build_object('idx', a_idx, 'valid_from', valid_from, \
             'valid_to', valid_to, 'next_from', next_from)"
        ),
        s_multi = sample(
            "multi",
            "jsonb_build_object('idx', a_idx, 'current_rows', current_rows)"
        ),
        s_orphan = sample("orphan_activity", "jsonb_build_object('idx', a_idx)"),
        s_current = sample("no_current", "jsonb_build_object('idx', p_idx)"),
        s_label = sample("orphan_label", "jsonb_build_object('idx', l_idx)"),
    )
}
