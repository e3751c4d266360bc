//! Request parsing and validation, and the response shapes.
//!
//! Parsing is done field by field on raw JSON values, so every problem names its field:
//!
//! * not UTF-8 or not JSON: [`ParseError::Malformed`] (400), with serde's line/column;
//! * valid JSON of the wrong shape: [`ParseError::Invalid`] (422) naming the field, as a
//!   path like `features.scd_a` or `instances[3].features.attr_b`: a missing field, an
//!   unknown (extra) field, a duplicate field, a mistyped value, an integer out of range,
//!   or a number that is not finite (`1e999`).
//!
//! Integers (`idx`, `attr_a`, `scd_b`) must be written as JSON integers (`3`, not `3.0`);
//! `scd_a` is any finite JSON number; `attr_b` any string (a category never seen in
//! training is scored with the model's documented "unknown" bucket).

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use model::Features;

/// One instance to score: the original request's shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictRequest {
    pub idx: i64,
    pub features: Features,
}

/// Why a request body was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON at all (400).
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// JSON, but not the expected shape (422).
    #[error("{field}: {reason}")]
    Invalid { field: String, reason: String },
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ParseError {
    ParseError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// The single form: `{"idx": 150000, "features": {...}}`.
pub fn parse_predict(body: &[u8]) -> Result<PredictRequest, ParseError> {
    match fast::predict(body) {
        Some(r) => Ok(r),
        None => thorough_predict(body),
    }
}

fn thorough_predict(body: &[u8]) -> Result<PredictRequest, ParseError> {
    let raw = syntax(body)?;
    instance(raw, "")
}

/// The batch form: `{"instances": [{"idx": ..., "features": {...}}, ...]}` with 1 to
/// `max` instances.
pub fn parse_batch(body: &[u8], max: usize) -> Result<Vec<PredictRequest>, ParseError> {
    match fast::batch(body, max) {
        Some(r) => Ok(r),
        None => thorough_batch(body, max),
    }
}

fn thorough_batch(body: &[u8], max: usize) -> Result<Vec<PredictRequest>, ParseError> {
    let raw = syntax(body)?;
    let [instances] = fields(raw, "", ["instances"])?;
    let items: Vec<&RawValue> = serde_json::from_str(instances.get()).map_err(|_| {
        invalid(
            "instances",
            format!("expected an array, got {}", kind(instances)),
        )
    })?;
    if items.is_empty() {
        return Err(invalid("instances", "must hold at least one instance"));
    }
    if items.len() > max {
        return Err(invalid(
            "instances",
            format!("holds {} instances, the limit is {max}", items.len()),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, raw)| instance(raw, &format!("instances[{i}]")))
        .collect()
}

fn syntax(body: &[u8]) -> Result<&RawValue, ParseError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| ParseError::Malformed(format!("body is not UTF-8: {e}")))?;
    if text.trim().is_empty() {
        return Err(ParseError::Malformed("empty body".into()));
    }
    serde_json::from_str::<&RawValue>(text).map_err(|e| ParseError::Malformed(e.to_string()))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn instance(raw: &RawValue, path: &str) -> Result<PredictRequest, ParseError> {
    let [idx, features] = fields(raw, path, ["idx", "features"])?;
    // Field paths are only built when there is an error to report.
    let at = |key: &str| join(path, key);
    let fat = |key: &str| join(&join(path, "features"), key);
    let [attr_a, attr_b, scd_a, scd_b] = fields(
        features,
        &at("features"),
        ["attr_a", "attr_b", "scd_a", "scd_b"],
    )?;
    Ok(PredictRequest {
        idx: integer(idx).map_err(|r| invalid(at("idx"), r))?,
        features: Features {
            attr_a: integer(attr_a).map_err(|r| invalid(fat("attr_a"), r))?,
            attr_b: string(attr_b).map_err(|r| invalid(fat("attr_b"), r))?,
            scd_a: number(scd_a).map_err(|r| invalid(fat("scd_a"), r))?,
            scd_b: integer(scd_b).map_err(|r| invalid(fat("scd_b"), r))?,
        },
    })
}

/// An object key, borrowed from the body unless it holds escapes.
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The object's members, in order, duplicates kept (to refuse them).
struct Members<'a>(Vec<(Key<'a>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Exactly the fields `names`, in that order: refuses a non-object, unknown, duplicate
/// or missing fields, naming the first one.
fn fields<'a, const N: usize>(
    raw: &'a RawValue,
    path: &str,
    names: [&str; N],
) -> Result<[&'a RawValue; N], ParseError> {
    let members: Members<'a> = serde_json::from_str(raw.get()).map_err(|_| {
        invalid(
            if path.is_empty() { "(body)" } else { path },
            format!("expected an object, got {}", kind(raw)),
        )
    })?;
    let mut found: [Option<&RawValue>; N] = [None; N];
    for (k, v) in members.0 {
        let k = k.0;
        match names.iter().position(|n| *n == k) {
            None => {
                return Err(invalid(
                    join(path, &k),
                    format!("unknown field (expected {})", names.join(", ")),
                ));
            }
            Some(i) if found[i].is_some() => {
                return Err(invalid(join(path, &k), "duplicate field"));
            }
            Some(i) => found[i] = Some(v),
        }
    }
    let mut out = [raw; N];
    for (i, v) in found.into_iter().enumerate() {
        out[i] = v.ok_or_else(|| invalid(join(path, names[i]), "missing field"))?;
    }
    Ok(out)
}

/// The JSON type of a (valid) raw value, for messages.
fn kind(raw: &RawValue) -> &'static str {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn integer(raw: &RawValue) -> Result<i64, String> {
    let text = raw.get().trim();
    let k = kind(raw);
    if k != "a number" {
        return Err(format!("expected an integer, got {k}"));
    }
    if text.contains(['.', 'e', 'E']) {
        return Err(format!("expected an integer, got the number {text}"));
    }
    text.parse::<i64>()
        .map_err(|_| format!("integer {text} is out of range"))
}

fn number(raw: &RawValue) -> Result<f64, String> {
    let text = raw.get().trim();
    let k = kind(raw);
    if k != "a number" {
        return Err(format!("expected a number, got {k}"));
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(format!("{text} is not a finite number")),
    }
}

fn string(raw: &RawValue) -> Result<String, String> {
    let k = kind(raw);
    if k != "a string" {
        return Err(format!("expected a string, got {k}"));
    }
    serde_json::from_str::<String>(raw.get()).map_err(|e| e.to_string())
}

/// One pass over a well-formed request (the common case); `None` sends the caller to
/// the thorough path, which names the error.
mod fast;

/// The answer to `POST /predict`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PredictResponse {
    pub idx: i64,
    /// 0 or 1, an integer (the original API sent `"0"`, a string).
    pub label: u8,
    /// P(label = 1).
    pub probability: f64,
    pub model_version: String,
}

/// [`PredictResponse`] borrowing the model version: what the handler serialises.
#[derive(Debug, Clone, Serialize)]
pub struct PredictResponseRef<'a> {
    pub idx: i64,
    pub label: u8,
    pub probability: f64,
    pub model_version: &'a str,
}

/// One prediction of a batch.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchItem {
    pub idx: i64,
    pub label: u8,
    pub probability: f64,
}

/// The answer to `POST /predict/batch`: predictions in request order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BatchResponse {
    pub model_version: String,
    pub predictions: Vec<BatchItem>,
}

/// `GET /version`: what the deployer's health gate reads.
///
/// `{"release": "<RELEASE or --release>", "model_version": "<version>" | null}`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionInfo {
    pub release: String,
    pub model_version: Option<String>,
}

#[cfg(test)]
mod tests;
