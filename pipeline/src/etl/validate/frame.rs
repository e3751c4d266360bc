//! One chunk's lines through polars: every column read as text, cast to its type, the
//! row checks evaluated as expressions, the file's key checked within the chunk.

use super::*;

impl Validator {
    /// Parses the lines with polars, evaluates every check, returns the rows as CSV.
    pub(super) fn parse(&mut self, data: &[u8], first_line: u64) -> Result<DataFrame, EtlError> {
        let order = self.order.clone().unwrap_or_default();
        let names: Vec<&'static str> = order.iter().map(|&i| self.spec.columns[i].name).collect();
        let schema: Schema = names
            .iter()
            .map(|n| Field::new((*n).into(), DataType::String))
            .collect();
        let df = CsvReadOptions::default()
            .with_has_header(false)
            .with_schema(Some(Arc::new(schema)))
            .with_raise_if_empty(false)
            .map_parse_options(|o| o.with_quote_char(None).with_missing_is_null(true))
            .into_reader_with_file_handle(Cursor::new(data))
            .finish()?;

        // Raw text and typed value of every column.
        let mut exprs = Vec::new();
        for c in &self.spec.columns {
            exprs.push(col(c.name).alias(raw_name(c.name)));
            let typed = match c.kind {
                Kind::Int => col(c.name).cast(DataType::Int64),
                Kind::Float => col(c.name).cast(DataType::Float64),
                Kind::Date => col(c.name).str().to_date(StrptimeOptions {
                    format: Some("%Y-%m-%d".into()),
                    strict: false,
                    exact: true,
                    cache: false,
                }),
                Kind::Text => col(c.name),
            };
            exprs.push(typed.alias(c.name));
        }
        // One boolean mask per check, true where the row fails.
        let mut masks = Vec::new();
        let mut rule_iter = self.spec.rules.iter();
        for (i, s) in self.stats.iter().enumerate() {
            let e = match s.kind {
                RuleKind::NotNull => col(raw_name(s.column)).is_null(),
                RuleKind::Type(_) => col(raw_name(s.column))
                    .is_not_null()
                    .and(col(s.column).is_null()),
                RuleKind::Row => {
                    let r: &Rule = rule_iter.next().expect("one stat per rule");
                    r.fails.clone()
                }
            };
            masks.push(e.alias(mask_name(i)));
        }
        let checked = df.lazy().select(exprs).with_columns(masks).collect()?;

        // Tally the failures; the first error-level failure (lowest line, then column)
        // rejects the file.
        let mut first_error: Option<(usize, usize, usize)> = None; // (row, file column, stat)
        for i in 0..self.stats.len() {
            let mask = checked
                .column(&mask_name(i))?
                .as_materialized_series()
                .bool()?
                .clone();
            let failing = mask.sum().unwrap_or(0) as u64;
            if failing == 0 {
                continue;
            }
            let stat_column = self.stats[i].column;
            let file_col = 1 + order
                .iter()
                .position(|&ci| self.spec.columns[ci].name == stat_column)
                .unwrap_or(0);
            let raw = checked
                .column(&raw_name(stat_column))?
                .as_materialized_series()
                .str()?
                .clone();
            let stat = &mut self.stats[i];
            stat.failing += failing;
            for (row, v) in mask.iter().enumerate() {
                if v != Some(true) {
                    continue;
                }
                if stat.sample.len() < SAMPLE {
                    stat.sample.push(json!({
                        "line": first_line + row as u64,
                        "column": stat_column,
                        "value": raw.get(row),
                    }));
                }
                if stat.severity == Severity::Error {
                    let cand = (row, file_col, i);
                    if first_error.is_none_or(|f| (cand.0, cand.1) < (f.0, f.1)) {
                        first_error = Some(cand);
                    }
                    break;
                }
                if stat.sample.len() >= SAMPLE {
                    break;
                }
            }
        }
        if let Some((row, file_col, i)) = first_error {
            let stat = &self.stats[i];
            let raw = checked
                .column(&raw_name(stat.column))?
                .as_materialized_series()
                .str()?
                .get(row)
                .map(|s| s.to_string());
            let message = match (stat.kind, raw) {
                (RuleKind::NotNull, _) | (_, None) => format!("missing value ({})", stat.name),
                (_, Some(v)) => format!("{v:?} is {} ({})", stat.message, stat.name),
            };
            return Err(self.invalid(first_line + row as u64, file_col, message));
        }

        let typed: Vec<Expr> = self.spec.columns.iter().map(|c| col(c.name)).collect();
        let out_df = checked.lazy().select(typed).collect()?;
        self.check_key(&out_df, first_line)?;
        Ok(out_df)
    }

    /// The file's key is unique within the chunk (across chunks, the table's primary
    /// key catches a repeat, and COPY's line is mapped back to the file's).
    fn check_key(&self, df: &DataFrame, first_line: u64) -> Result<(), EtlError> {
        if self.spec.key.is_empty() {
            return Ok(());
        }
        let mut parts: Vec<Vec<Option<i64>>> = Vec::new();
        for k in &self.spec.key {
            let c = df.column(k)?.cast(&DataType::Int64)?;
            parts.push(c.as_materialized_series().i64()?.iter().collect());
        }
        let key = |row: usize| (parts[0][row], parts.get(1).and_then(|p| p[row]));
        // Files come sorted by their key as a rule: strictly increasing keys are unique
        // without a hash table (which would cost ~80 bytes a row, more than the chunk).
        if (1..df.height()).all(|row| key(row - 1) < key(row)) {
            return Ok(());
        }
        let mut seen: std::collections::HashMap<(Option<i64>, Option<i64>), usize> =
            std::collections::HashMap::with_capacity(df.height());
        for row in 0..df.height() {
            let key = key(row);
            if let Some(first) = seen.insert(key, row) {
                let names = self.spec.key.join(", ");
                let first_col = self
                    .order
                    .as_ref()
                    .and_then(|o| {
                        o.iter()
                            .position(|&i| self.spec.columns[i].name == self.spec.key[0])
                    })
                    .map_or(1, |p| p + 1);
                return Err(self.invalid(
                    first_line + row as u64,
                    first_col,
                    format!(
                        "duplicate key ({names}), first seen at line {} (unique({names}))",
                        first_line + first as u64
                    ),
                ));
            }
        }
        Ok(())
    }
}
