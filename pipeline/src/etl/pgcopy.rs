//! Validated frames written in PostgreSQL's binary `COPY` format.
//!
//! The validator has already parsed every value; sending them as text would make
//! PostgreSQL parse every number and date a second time (`float8in`, `date_in`), and
//! make this side format them (`CsvWriter`). The binary format carries each value in
//! its wire representation instead: both sides do less work per row.
//!
//! The encoder writes what the target table's columns are (read from the catalog,
//! [`column_types`]), so an integer column may be `smallint`, `integer` or `bigint`;
//! a value that does not fit is an error naming the file's line and column, as
//! PostgreSQL's own "out of range" would be in text mode.

use polars::prelude::{DataFrame, DataType};
use sqlx::PgConnection;

use super::EtlError;
use super::spec::{FileSpec, Kind};
use super::validate::Validator;

/// The 19-byte header: signature, flags (no OIDs), header-extension length.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The file trailer: a tuple field count of -1.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Days from 1970-01-01 (polars' date) to 2000-01-01 (PostgreSQL's).
const PG_EPOCH_DAYS: i32 = 10_957;

/// A column type the encoder writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PgType {
    Int2,
    Int4,
    Int8,
    Float8,
    Date,
    Text,
}

impl PgType {
    fn from_catalog(typname: &str) -> Option<PgType> {
        Some(match typname {
            "int2" => PgType::Int2,
            "int4" => PgType::Int4,
            "int8" => PgType::Int8,
            "float8" => PgType::Float8,
            "date" => PgType::Date,
            "text" | "varchar" | "bpchar" => PgType::Text,
            _ => return None,
        })
    }

    fn accepts(self, kind: Kind) -> bool {
        matches!(
            (kind, self),
            (Kind::Int, PgType::Int2 | PgType::Int4 | PgType::Int8)
                | (Kind::Float, PgType::Float8)
                | (Kind::Date, PgType::Date)
                | (Kind::Text, PgType::Text)
        )
    }
}

/// The types of `table`'s columns named by `spec`, in the spec's order. `table` may be a
/// temporary table. A column the encoder cannot write is a configuration error.
pub async fn column_types(
    conn: &mut PgConnection,
    table: &str,
    spec: &FileSpec,
) -> Result<Vec<PgType>, EtlError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT a.attname::text, t.typname::text FROM pg_attribute a \
         JOIN pg_type t ON t.oid = a.atttypid \
         WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    spec.columns
        .iter()
        .map(|c| {
            let typname = rows
                .iter()
                .find(|(name, _)| name == c.name)
                .map(|(_, t)| t.as_str())
                .ok_or_else(|| {
                    EtlError::Config(format!("table {table} has no column {}", c.name))
                })?;
            PgType::from_catalog(typname)
                .filter(|t| t.accepts(c.kind))
                .ok_or_else(|| {
                    EtlError::Config(format!(
                        "column {table}.{} is of type {typname}, which cannot hold {}",
                        c.name,
                        c.kind.describe()
                    ))
                })
        })
        .collect()
}

/// One column's values, in row order.
enum Values<'a> {
    Int(Box<dyn Iterator<Item = Option<i64>> + 'a>),
    Float(Box<dyn Iterator<Item = Option<f64>> + 'a>),
    Text(Box<dyn Iterator<Item = Option<&'a str>> + 'a>),
}

/// Appends `df`, the frame `v` has just validated, to `out` as binary COPY tuples, one
/// per line of the file (the rows are in file order, so row `i` of the frame is line
/// `v.rows() - height + i + 2`, counting the header).
pub fn encode(
    v: &Validator,
    df: &DataFrame,
    types: &[PgType],
    out: &mut Vec<u8>,
) -> Result<(), EtlError> {
    let spec = v.spec();
    let rows_before = v.rows() - df.height() as u64;
    let invalid = |row: u64, i: usize, message: String| EtlError::Invalid {
        location: v.location().to_string(),
        line: rows_before + row + 2,
        column: v.column_label(spec.columns[i].name),
        message,
    };
    // Dates travel as their day number; keep the casts alive while iterating.
    let mut owned = Vec::with_capacity(spec.columns.len());
    for c in &spec.columns {
        let column = df.column(c.name)?;
        owned.push(match c.kind {
            Kind::Date => column.cast(&DataType::Int32)?,
            _ => column.clone(),
        });
    }
    let mut values = Vec::with_capacity(owned.len());
    for (c, column) in spec.columns.iter().zip(&owned) {
        let s = column.as_materialized_series();
        values.push(match c.kind {
            Kind::Int => Values::Int(Box::new(s.i64()?.iter())),
            Kind::Date => Values::Int(Box::new(s.i32()?.iter().map(|d| d.map(i64::from)))),
            Kind::Float => Values::Float(Box::new(s.f64()?.iter())),
            Kind::Text => Values::Text(Box::new(s.str()?.iter())),
        });
    }
    let fields = (spec.columns.len() as i16).to_be_bytes();
    out.reserve(df.height() * (2 + spec.columns.len() * 12));
    for row in 0..df.height() as u64 {
        out.extend_from_slice(&fields);
        for (i, v) in values.iter_mut().enumerate() {
            let out_of_range = |value: i64| {
                invalid(
                    row,
                    i,
                    format!("{value} is out of range for the table's column"),
                )
            };
            match v {
                Values::Int(it) => match (it.next().flatten(), types[i]) {
                    (None, _) => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    (Some(x), PgType::Int2) => {
                        let x = i16::try_from(x).map_err(|_| out_of_range(x))?;
                        out.extend_from_slice(&2i32.to_be_bytes());
                        out.extend_from_slice(&x.to_be_bytes());
                    }
                    (Some(x), PgType::Int4) => {
                        let x = i32::try_from(x).map_err(|_| out_of_range(x))?;
                        out.extend_from_slice(&4i32.to_be_bytes());
                        out.extend_from_slice(&x.to_be_bytes());
                    }
                    (Some(x), PgType::Date) => {
                        // From an i32 day number: cannot overflow after the shift.
                        let x = x - i64::from(PG_EPOCH_DAYS);
                        let x = i32::try_from(x).map_err(|_| out_of_range(x))?;
                        out.extend_from_slice(&4i32.to_be_bytes());
                        out.extend_from_slice(&x.to_be_bytes());
                    }
                    (Some(x), _) => {
                        out.extend_from_slice(&8i32.to_be_bytes());
                        out.extend_from_slice(&x.to_be_bytes());
                    }
                },
                Values::Float(it) => match it.next().flatten() {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(x) => {
                        out.extend_from_slice(&8i32.to_be_bytes());
                        out.extend_from_slice(&x.to_bits().to_be_bytes());
                    }
                },
                Values::Text(it) => match it.next().flatten() {
                    None => out.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(x) => {
                        let len = i32::try_from(x.len())
                            .map_err(|_| invalid(row, i, "text value too long".into()))?;
                        out.extend_from_slice(&len.to_be_bytes());
                        out.extend_from_slice(x.as_bytes());
                    }
                },
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::etl::spec;

    /// Validates `csv` (header included) as `spec` and encodes it.
    fn encoded(spec: FileSpec, csv: &str, types: &[PgType]) -> Result<Vec<u8>, EtlError> {
        let mut v = Validator::new(spec, "f.csv");
        v.buffer().extend_from_slice(csv.as_bytes());
        let df = v.take_frame(true)?.expect("rows");
        let mut out = Vec::new();
        encode(&v, &df, types, &mut out)?;
        Ok(out)
    }

    #[test]
    fn writes_tuples_in_the_wire_format() {
        let types = [
            PgType::Int8,
            PgType::Date,
            PgType::Date,
            PgType::Float8,
            PgType::Int4,
        ];
        let out = encoded(
            spec::customer_activity(),
            "idx,valid_from,valid_to,scd_a,scd_b\n7,2000-01-02,,0.5,-3\n",
            &types,
        )
        .expect("encode");
        let mut want = vec![0, 5];
        want.extend([0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        want.extend([0, 0, 0, 4, 0, 0, 0, 1]); // 2000-01-02: day 1 of PostgreSQL's epoch
        want.extend([0xff, 0xff, 0xff, 0xff]); // NULL
        want.extend([0, 0, 0, 8]);
        want.extend(0.5f64.to_bits().to_be_bytes());
        want.extend([0, 0, 0, 4, 0xff, 0xff, 0xff, 0xfd]);
        assert_eq!(out, want);
    }

    #[test]
    fn a_value_too_wide_for_the_column_names_its_line_and_column() {
        let types = [
            PgType::Int8,
            PgType::Date,
            PgType::Date,
            PgType::Float8,
            PgType::Int2,
        ];
        let e = encoded(
            spec::customer_activity(),
            "idx,valid_from,valid_to,scd_a,scd_b\n1,2020-01-01,,0.1,1\n2,2020-01-01,,0.1,70000\n",
            &types,
        )
        .expect_err("out of range");
        assert_eq!(
            e.to_string(),
            "f.csv, line 3, column 5 (scd_b): 70000 is out of range for the table's column"
        );
        // The file's columns in another order: the error names the file's position.
        let e = encoded(
            spec::customer_activity(),
            "scd_b,idx,valid_from,valid_to,scd_a\n-40000,1,2020-01-01,,0.1\n",
            &types,
        )
        .expect_err("out of range");
        assert_eq!(
            e.to_string(),
            "f.csv, line 2, column 1 (scd_b): -40000 is out of range for the table's column"
        );
    }
}
