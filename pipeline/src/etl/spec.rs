//! The typed schema of every input file and its row-level checks, as polars
//! expressions over the typed columns. Every column is also checked for type (a value
//! that does not parse) and, unless nullable, for presence; those checks are derived
//! from the column list by the validator.

use polars::prelude::*;

use super::Month;
use crate::quality::Severity;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 64-bit integer.
    Int,
    /// 64-bit float.
    Float,
    /// `YYYY-MM-DD`.
    Date,
    Text,
}

/// A `Kind::Date` value as polars holds it (cast to `Int32`): days since 1970-01-01.
pub fn day_number(date: chrono::NaiveDate) -> i32 {
    (date - chrono::DateTime::UNIX_EPOCH.date_naive()).num_days() as i32
}

/// The date of a day number (`None` outside chrono's range).
pub fn date_of_day(days: i32) -> Option<chrono::NaiveDate> {
    chrono::DateTime::UNIX_EPOCH
        .date_naive()
        .checked_add_signed(chrono::Duration::days(i64::from(days)))
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Int => "an integer",
            Kind::Float => "a number",
            Kind::Date => "a date (YYYY-MM-DD)",
            Kind::Text => "text",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Column {
    pub name: &'static str,
    pub kind: Kind,
    pub nullable: bool,
}

const fn col_(name: &'static str, kind: Kind) -> Column {
    Column {
        name,
        kind,
        nullable: false,
    }
}

/// A row check: `fails` is true on the rows that break it.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Same names as the table-level checks of `pipeline check`.
    pub name: String,
    /// The column an error is reported against.
    pub column: &'static str,
    pub severity: Severity,
    pub fails: Expr,
    /// What a failing value breaks, for the error message.
    pub message: String,
}

/// One input file: its columns (header names, in the file's usual order) and checks.
#[derive(Clone, Debug)]
pub struct FileSpec {
    /// Relative path in the source.
    pub file: String,
    /// The table its rows go to.
    pub table: &'static str,
    pub columns: Vec<Column>,
    pub rules: Vec<Rule>,
    /// Integer or date columns (at most two) that identify a row in the file.
    pub key: Vec<&'static str>,
}

impl FileSpec {
    pub fn header(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn column_list(&self) -> String {
        self.header()
    }
}

/// `accepted_values(column)`: a value that is none of `values` (NULLs are left to
/// `not_null`).
fn accepted<T: Literal + Copy + std::fmt::Display>(
    column: &'static str,
    values: &[T],
    severity: Severity,
) -> Rule {
    let mut ok = lit(false);
    for v in values {
        ok = ok.or(col(column).eq(lit(*v)));
    }
    let list: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    Rule {
        name: format!("accepted_values({column})"),
        column,
        severity,
        fails: col(column).is_not_null().and(ok.not()),
        message: format!("not one of {}", list.join(", ")),
    }
}

/// `range(column)`: a value outside `min..=max` (NULLs are left to `not_null`).
fn range<T: Literal + Copy + std::fmt::Display>(
    column: &'static str,
    min: T,
    max: T,
    severity: Severity,
) -> Rule {
    Rule {
        name: format!("range({column})"),
        column,
        severity,
        fails: col(column)
            .lt(lit(min))
            .or(col(column).gt(lit(max)))
            .fill_null(lit(false)),
        message: format!("outside {min}..={max}"),
    }
}

fn int_range(column: &'static str, min: i64, max: i64, severity: Severity) -> Rule {
    range(column, min, max, severity)
}

fn float_range(column: &'static str, min: f64, max: f64, severity: Severity) -> Rule {
    range(column, min, max, severity)
}

fn finite(column: &'static str) -> Rule {
    Rule {
        name: format!("finite({column})"),
        column,
        severity: Severity::Error,
        fails: col(column).is_finite().not().fill_null(lit(false)),
        message: "not a finite number".into(),
    }
}

fn non_empty(column: &'static str) -> Rule {
    Rule {
        name: format!("not_blank({column})"),
        column,
        severity: Severity::Error,
        fails: col(column)
            .str()
            .strip_chars(lit(NULL))
            .str()
            .len_bytes()
            .eq(lit(0u32))
            .fill_null(lit(false)),
        message: "blank text".into(),
    }
}

const I32_MAX: i64 = i32::MAX as i64;

/// A file whose first column `idx` (a non-negative integer) identifies its rows,
/// followed by `columns`, checked by `rules` after `idx`'s range.
fn keyed_by_idx(
    file: impl Into<String>,
    table: &'static str,
    columns: Vec<Column>,
    rules: Vec<Rule>,
) -> FileSpec {
    FileSpec {
        file: file.into(),
        table,
        key: vec!["idx"],
        columns: [vec![col_("idx", Kind::Int)], columns].concat(),
        rules: [vec![int_range("idx", 0, i64::MAX, Severity::Error)], rules].concat(),
    }
}

/// `customer_profiles.csv`: `idx,attr_a,attr_b,attr_c`.
pub fn customer_profiles() -> FileSpec {
    keyed_by_idx(
        "customer_profiles.csv",
        "customer_profiles",
        vec![
            col_("attr_a", Kind::Int),
            col_("attr_b", Kind::Text),
            col_("attr_c", Kind::Text),
        ],
        vec![
            int_range("attr_a", 1, 5, Severity::Error),
            accepted("attr_b", &["a", "b", "c", "d"], Severity::Error),
            accepted("attr_c", &["yes", "no"], Severity::Error),
        ],
    )
}

/// `labels.csv`: `idx,label`.
pub fn labels() -> FileSpec {
    keyed_by_idx(
        "labels.csv",
        "labels",
        vec![col_("label", Kind::Int)],
        vec![accepted("label", &[0i64, 1], Severity::Error)],
    )
}

/// `customer_activity.csv`: `idx,valid_from,valid_to,scd_a,scd_b`, type-2 history; an
/// empty `valid_to` marks the current row. Periods are half-open:
/// `[valid_from, valid_to)`.
pub fn customer_activity() -> FileSpec {
    FileSpec {
        file: "customer_activity.csv".into(),
        table: "customer_activity",
        key: vec!["idx", "valid_from"],
        columns: vec![
            col_("idx", Kind::Int),
            col_("valid_from", Kind::Date),
            Column {
                name: "valid_to",
                kind: Kind::Date,
                nullable: true,
            },
            col_("scd_a", Kind::Float),
            col_("scd_b", Kind::Int),
        ],
        rules: vec![
            int_range("idx", 0, i64::MAX, Severity::Error),
            Rule {
                name: "valid_from_before_valid_to".into(),
                column: "valid_to",
                severity: Severity::Error,
                fails: col("valid_to")
                    .lt_eq(col("valid_from"))
                    .fill_null(lit(false)),
                message: "valid_to is not after valid_from".into(),
            },
            finite("scd_a"),
            int_range("scd_b", -I32_MAX, I32_MAX, Severity::Error),
        ],
    }
}

/// `stores.csv`: `idx,location`.
pub fn stores() -> FileSpec {
    FileSpec {
        file: "stores.csv".into(),
        table: "store_locations",
        key: vec!["idx"],
        columns: vec![col_("idx", Kind::Int), col_("location", Kind::Text)],
        rules: vec![
            int_range("idx", 1, I32_MAX, Severity::Error),
            non_empty("location"),
        ],
    }
}

/// `sales/YYYY-MM-01/sales.csv`: `idx,value,date,store_idx`; every date must fall in
/// the file's month (a row of another month would land in, and be replaced with,
/// that other month).
pub fn sales(month: Month) -> FileSpec {
    // Dates compare as days since 1970-01-01 (a date literal would need polars'
    // dtype-datetime feature).
    let first = day_number(month.first_day());
    let next = day_number(month.next().first_day());
    let day = || col("date").cast(DataType::Int32);
    keyed_by_idx(
        month.sales_file(),
        "sales",
        vec![
            col_("value", Kind::Float),
            col_("date", Kind::Date),
            col_("store_idx", Kind::Int),
        ],
        vec![
            finite("value"),
            float_range("value", 0.0, 10.0, Severity::Warn),
            Rule {
                name: "date_in_month(date)".into(),
                column: "date",
                severity: Severity::Error,
                fails: day()
                    .lt(lit(first))
                    .or(day().gt_eq(lit(next)))
                    .fill_null(lit(false)),
                message: format!("not in {month}"),
            },
            int_range("store_idx", 1, I32_MAX, Severity::Error),
        ],
    )
}
