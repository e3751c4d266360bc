//! Chunked parsing and validation of one input file.
//!
//! Bytes are pushed in as they arrive; [`Validator::take_frame`] cuts the buffer at the
//! last complete line, checks the structure of every line (UTF-8, number of fields),
//! parses the lines with polars (every column read as text, then cast to its type, so a
//! value that does not parse is pinned to its row rather than failing the whole read),
//! evaluates the row checks as expressions, and returns the typed rows as a frame (which
//! [`super::pgcopy`] writes for `COPY ... (FORMAT binary)`). Rows map one to one to lines (quoting is off and blank
//! lines are rejected), so every failure is reported with its file line and column.
//!
//! Accepted variations: a UTF-8 byte order mark, CRLF line ends, a missing line end on
//! the last line, header columns in any order. Rejected, with line and column: an empty
//! file, a wrong, missing, extra or duplicated header column, a line with too few or
//! too many fields (a truncated last line is one), a blank line, invalid UTF-8, a
//! value that does not parse as its column's type, a missing value, and every failed
//! error-level row check.

use std::borrow::Cow;
use std::io::Cursor;
use std::sync::Arc;

use polars::prelude::*;
use serde_json::json;

use super::EtlError;
use super::spec::{FileSpec, Kind, Rule};
use crate::quality::{CheckResult, FileFacts, Severity};

mod frame;

/// A line longer than this (no line end in sight) is rejected, so a file without line
/// ends cannot make the buffer grow without bound.
const MAX_LINE: usize = 16 << 20;
/// Failing rows kept as a sample per check.
const SAMPLE: usize = 5;

const BOM: &[u8] = b"\xEF\xBB\xBF";

struct RuleStat {
    name: String,
    column: &'static str,
    severity: Severity,
    message: String,
    kind: RuleKind,
    failing: u64,
    sample: Vec<serde_json::Value>,
}

#[derive(Clone, Copy, PartialEq)]
enum RuleKind {
    NotNull,
    Type(Kind),
    Row,
}

/// Validates one file, chunk by chunk.
pub struct Validator {
    spec: FileSpec,
    location: String,
    /// Spec column index of each file position, once the header is read.
    order: Option<Vec<usize>>,
    pending: Vec<u8>,
    /// Line number of the first line in `pending`, once the header is read.
    next_line: u64,
    stats: Vec<RuleStat>,
    rows: u64,
    seen_bytes: u64,
    /// What the history and relationship checks need of this file's rows, when asked.
    facts: Option<FileFacts>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("location", &self.location)
            .field("rows", &self.rows)
            .finish()
    }
}

fn raw_name(c: &str) -> String {
    format!("__raw_{c}")
}

fn mask_name(i: usize) -> String {
    format!("__rule_{i}")
}

impl Validator {
    pub fn new(spec: FileSpec, location: impl Into<String>) -> Validator {
        let mut stats = Vec::new();
        for c in &spec.columns {
            if !c.nullable {
                stats.push(RuleStat {
                    name: format!("not_null({})", c.name),
                    column: c.name,
                    severity: Severity::Error,
                    message: "missing value".into(),
                    kind: RuleKind::NotNull,
                    failing: 0,
                    sample: Vec::new(),
                });
            }
            if c.kind != Kind::Text {
                stats.push(RuleStat {
                    name: format!("type({})", c.name),
                    column: c.name,
                    severity: Severity::Error,
                    message: format!("not {}", c.kind.describe()),
                    kind: RuleKind::Type(c.kind),
                    failing: 0,
                    sample: Vec::new(),
                });
            }
        }
        for r in &spec.rules {
            stats.push(RuleStat {
                name: r.name.clone(),
                column: r.column,
                severity: r.severity,
                message: r.message.clone(),
                kind: RuleKind::Row,
                failing: 0,
                sample: Vec::new(),
            });
        }
        Validator {
            spec,
            location: location.into(),
            order: None,
            pending: Vec::new(),
            next_line: 1,
            stats,
            rows: 0,
            seen_bytes: 0,
            facts: None,
        }
    }

    /// Hands every validated chunk to `facts` as well (see [`FileFacts`]).
    pub fn gather(&mut self, facts: FileFacts) {
        self.facts = Some(facts);
    }

    /// The facts gathered, if [`Validator::gather`] asked for them.
    pub fn take_facts(&mut self) -> Option<FileFacts> {
        self.facts.take()
    }

    pub fn spec(&self) -> &FileSpec {
        &self.spec
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// Rows validated so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The buffer that new bytes are appended to.
    pub fn buffer(&mut self) -> &mut Vec<u8> {
        &mut self.pending
    }

    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    /// Convenience for tests and small inputs: push bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
    }

    fn invalid(&self, line: u64, column: usize, message: impl Into<String>) -> EtlError {
        let name = self
            .order
            .as_ref()
            .and_then(|o| o.get(column.wrapping_sub(1)))
            .map(|&i| self.spec.columns[i].name);
        let column = match name {
            Some(n) => format!("{column} ({n})"),
            None => column.to_string(),
        };
        EtlError::Invalid {
            location: self.location.clone(),
            line,
            column,
            message: message.into(),
        }
    }

    /// Validates the complete lines buffered so far (all of them when `eof`) and
    /// returns them as a typed frame (the spec's columns, in its order), or `None` when
    /// no complete line is buffered.
    pub fn take_frame(&mut self, eof: bool) -> Result<Option<DataFrame>, EtlError> {
        if self.order.is_none() && !self.read_header(eof)? {
            return Ok(None);
        }
        let cut = if eof {
            self.pending.len()
        } else {
            match self.pending.iter().rposition(|&b| b == b'\n') {
                Some(p) => p + 1,
                None => {
                    if self.pending.len() > MAX_LINE {
                        return Err(self.invalid(self.next_line, 1, "line too long"));
                    }
                    return Ok(None);
                }
            }
        };
        if cut == 0 {
            return Ok(None);
        }
        let data: Vec<u8> = self.pending.drain(..cut).collect();
        self.seen_bytes += data.len() as u64;
        let first_line = self.next_line;
        let (clean, lines) = self.check_structure(&data, first_line, eof)?;
        self.next_line += lines;
        if lines == 0 {
            return Ok(None);
        }
        let out = self.parse(&clean, first_line)?;
        if let Some(f) = self.facts.as_mut() {
            f.observe(&out)?;
        }
        self.rows += lines;
        Ok(Some(out))
    }

    /// Reads and checks the header line. `false` while it is not complete yet.
    fn read_header(&mut self, eof: bool) -> Result<bool, EtlError> {
        if self.pending.len() < BOM.len() && !eof && BOM.starts_with(&self.pending) {
            return Ok(false);
        }
        let skip = if self.pending.starts_with(BOM) {
            BOM.len()
        } else {
            0
        };
        let end = match self.pending[skip..].iter().position(|&b| b == b'\n') {
            Some(p) => skip + p,
            None if eof => self.pending.len(),
            None => {
                if self.pending.len() > MAX_LINE {
                    return Err(self.invalid(1, 1, "header line too long"));
                }
                return Ok(false);
            }
        };
        let mut line = &self.pending[skip..end];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let expected = self.spec.header();
        if line.is_empty() {
            let what = if self.pending.len() <= skip + 1 {
                "empty file"
            } else {
                "empty header line"
            };
            return Err(self.invalid(1, 1, format!("{what}: expected the header `{expected}`")));
        }
        let text = std::str::from_utf8(line)
            .map_err(|_| self.invalid(1, 1, "the header is not valid UTF-8"))?;
        let mut order = Vec::new();
        for (pos, name) in text.split(',').enumerate() {
            let found = self.spec.columns.iter().position(|c| c.name == name);
            match found {
                Some(i) if order.contains(&i) => {
                    return Err(self.invalid(
                        1,
                        pos + 1,
                        format!("duplicate column `{name}` in the header (expected `{expected}`)"),
                    ));
                }
                Some(i) => order.push(i),
                None => {
                    return Err(self.invalid(
                        1,
                        pos + 1,
                        format!("unexpected column `{name}` in the header (expected `{expected}`)"),
                    ));
                }
            }
        }
        if let Some(missing) = (0..self.spec.columns.len()).find(|i| !order.contains(i)) {
            return Err(self.invalid(
                1,
                order.len() + 1,
                format!(
                    "the header lacks column `{}` (expected `{expected}`)",
                    self.spec.columns[missing].name
                ),
            ));
        }
        self.order = Some(order);
        let consumed = (end + 1).min(self.pending.len());
        self.pending.drain(..consumed);
        self.next_line = 2;
        Ok(true)
    }

    /// Checks every line's encoding and field count; strips CR before LF. Returns the
    /// clean bytes and the number of lines.
    fn check_structure<'a>(
        &self,
        data: &'a [u8],
        first_line: u64,
        eof: bool,
    ) -> Result<(Cow<'a, [u8]>, u64), EtlError> {
        let n_cols = self.spec.columns.len();
        if let Err(e) = std::str::from_utf8(data) {
            let at = e.valid_up_to();
            let line = first_line + data[..at].iter().filter(|&&b| b == b'\n').count() as u64;
            let line_start = data[..at]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |p| p + 1);
            let column = 1 + data[line_start..at].iter().filter(|&&b| b == b',').count();
            return Err(self.invalid(line, column, "not valid UTF-8"));
        }
        let has_cr = data.contains(&b'\r');
        let mut clean: Vec<u8> = if has_cr {
            Vec::with_capacity(data.len())
        } else {
            Vec::new()
        };
        let mut lines = 0u64;
        let mut start = 0usize;
        while start < data.len() {
            let (end, next, terminated) = match data[start..].iter().position(|&b| b == b'\n') {
                Some(p) => (start + p, start + p + 1, true),
                None => (data.len(), data.len(), false),
            };
            let mut line = &data[start..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line_no = first_line + lines;
            if line.is_empty() {
                return Err(self.invalid(line_no, 1, "empty line"));
            }
            let fields = 1 + line.iter().filter(|&&b| b == b',').count();
            if fields != n_cols {
                let truncated = eof && !terminated;
                return Err(if fields < n_cols {
                    let what = if truncated {
                        "truncated last line"
                    } else {
                        "missing field"
                    };
                    self.invalid(
                        line_no,
                        fields + 1,
                        format!("{what}: {fields} of {n_cols} fields"),
                    )
                } else {
                    self.invalid(
                        line_no,
                        n_cols + 1,
                        format!("extra field: {fields} fields, expected {n_cols}"),
                    )
                });
            }
            if has_cr {
                clean.extend_from_slice(line);
                clean.push(b'\n');
            }
            lines += 1;
            start = next;
        }
        let out = if has_cr {
            Cow::Owned(clean)
        } else {
            Cow::Borrowed(data)
        };
        Ok((out, lines))
    }

    /// The row checks as data-quality results (every check, passed or not).
    pub fn results(&self) -> Vec<CheckResult> {
        self.stats
            .iter()
            .map(|s| CheckResult {
                table: self.spec.table.to_string(),
                check: format!("{}: {}", self.spec.file, s.name),
                severity: s.severity,
                passed: s.failing == 0,
                failing_rows: s.failing as i64,
                sample: serde_json::Value::Array(s.sample.clone()),
                detail: if s.failing == 0 {
                    format!("{} rows checked", self.rows)
                } else {
                    format!("{} of {} rows: {}", s.failing, self.rows, s.message)
                },
            })
            .collect()
    }

    /// `"3 (date)"` for a column name in this file's header order (just the name when
    /// it is not a column of the file, e.g. a generated one).
    pub fn column_label(&self, name: &str) -> String {
        let pos = self
            .order
            .as_ref()
            .and_then(|o| o.iter().position(|&i| self.spec.columns[i].name == name));
        match pos {
            Some(p) => format!("{} ({name})", p + 1),
            None => name.to_string(),
        }
    }

    /// Bytes consumed so far (for progress).
    pub fn consumed(&self) -> u64 {
        self.seen_bytes
    }
}
