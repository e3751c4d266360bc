//! A duplicate key found only when a staged table's unique index is built (the rows
//! went in without the index: see `Loader::stage`), traced back to the file's two
//! lines by reading the file again. Only this failure path pays for the second read.

use sqlx::postgres::PgDatabaseError;

use super::EtlError;
use super::ingest::fill;
use super::load::Loader;
use super::spec::{FileSpec, Kind, date_of_day};
use super::validate::Validator;

/// `unique_violation`.
const UNIQUE_VIOLATION: &str = "23505";

/// The column names and values of PostgreSQL's detail of a key error:
/// `Key (idx, valid_from)=(1, 2020-01-01) is duplicated.` (or `... already exists.`).
pub(super) fn key_detail(detail: &str) -> Option<(Vec<String>, Vec<String>)> {
    let rest = detail.strip_prefix("Key (")?;
    let (names, rest) = rest.split_once(")=(")?;
    let values = rest.rsplit_once(')')?.0;
    let split = |s: &str| s.split(", ").map(str::to_string).collect::<Vec<_>>();
    Some((split(names), split(values)))
}

/// A key value as PostgreSQL prints it in a key error (the key columns are integers
/// or dates; a date column arrives as its day number).
fn pg_text(kind: Kind, v: i64) -> String {
    match kind {
        Kind::Date => i32::try_from(v)
            .ok()
            .and_then(date_of_day)
            .map_or_else(|| v.to_string(), |d| d.format("%Y-%m-%d").to_string()),
        _ => v.to_string(),
    }
}

impl Loader {
    /// `e`, from building the unique indexes of a staged table loaded from `spec`'s
    /// file: a duplicate key becomes the file's error at the line that repeats it
    /// (as the validator reports one within a chunk); any other error stays as it is.
    pub(super) async fn duplicate_or(&self, e: sqlx::Error, spec: FileSpec) -> EtlError {
        let key = e
            .as_database_error()
            .and_then(|d| d.try_downcast_ref::<PgDatabaseError>())
            .filter(|pg| pg.code() == UNIQUE_VIOLATION)
            .and_then(|pg| pg.detail())
            .and_then(key_detail);
        let Some((names, values)) = key else {
            return EtlError::Db(e);
        };
        match self.find_duplicate(spec, &names, &values).await {
            Ok(Some(found)) => found,
            // Not traced (a key column the file does not have): PostgreSQL's own words.
            Ok(None) => EtlError::Db(e),
            Err(read) => read,
        }
    }

    /// Reads the file again, chunk by chunk, for the first two lines with this key.
    async fn find_duplicate(
        &self,
        spec: FileSpec,
        names: &[String],
        values: &[String],
    ) -> Result<Option<EtlError>, EtlError> {
        let kinds: Option<Vec<Kind>> = names
            .iter()
            .map(|n| spec.columns.iter().find(|c| c.name == n).map(|c| c.kind))
            .collect();
        let Some(kinds) = kinds.filter(|k| k.iter().all(|k| matches!(k, Kind::Int | Kind::Date)))
        else {
            return Ok(None);
        };
        let mut reader = self.source.open(&spec.file).await?;
        let mut v = Validator::new(spec, reader.location().to_string());
        let mut lines = Vec::new();
        loop {
            let more = fill(&mut reader, &mut v, self.chunk_bytes).await?;
            // Rows are lines: the header is line 1, and blank lines are rejected.
            let first_line = 2 + v.rows();
            if let Some(df) = v.take_frame(!more)? {
                let mut columns = Vec::new();
                for n in names {
                    let c = df.column(n)?.cast(&polars::prelude::DataType::Int64)?;
                    columns.push(c.as_materialized_series().i64()?.clone());
                }
                for row in 0..df.height() {
                    let same = columns
                        .iter()
                        .zip(&kinds)
                        .zip(values)
                        .all(|((c, k), want)| c.get(row).is_some_and(|x| pg_text(*k, x) == *want));
                    if same {
                        lines.push(first_line + row as u64);
                    }
                    if lines.len() == 2 {
                        let list = names.join(", ");
                        return Ok(Some(EtlError::Invalid {
                            location: v.location().to_string(),
                            line: lines[1],
                            column: v.column_label(&names[0]),
                            message: format!(
                                "duplicate key ({list}) = ({}), first seen at line {} \
                                 (unique({list}))",
                                values.join(", "),
                                lines[0]
                            ),
                        }));
                    }
                }
            }
            if !more {
                return Ok(None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_key_of_a_unique_violation() {
        let (n, v) =
            key_detail("Key (idx, valid_from)=(1, 2020-01-01) is duplicated.").expect("parsed");
        assert_eq!(n, ["idx", "valid_from"]);
        assert_eq!(v, ["1", "2020-01-01"]);
        assert_eq!(pg_text(Kind::Date, 18262), "2020-01-01");
        assert_eq!(pg_text(Kind::Int, -3), "-3");
        assert!(key_detail("something else").is_none());
    }
}
