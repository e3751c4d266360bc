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

/// One pass over a well-formed request, for the common case.
///
/// The thorough path above reads a body three times (a syntax check of the whole
/// document, then each object's members as raw values) so that every error is
/// classified and names its field. A valid request needs none of that: this path
/// walks the document once, checking the same things with the same scalar checks
/// (`integer`, `number`, `string` on the same raw text), and gives up (`None`) at the
/// first thing it does not like (malformed JSON, an unknown, duplicate or missing
/// field, a mistyped value, too many instances). The caller then runs the thorough
/// path, which finds and names the error exactly as before. So errors are unchanged,
/// and a value this path returns is the one the thorough path would return (tested
/// below, also on arbitrary input).
mod fast {
    use serde::de::{DeserializeSeed, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    use serde_json::value::RawValue;

    use super::{Key, PredictRequest, integer, number, string};
    use model::Features;

    pub(super) fn predict(body: &[u8]) -> Option<PredictRequest> {
        let text = std::str::from_utf8(body).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let r = Instance.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(r)
    }

    pub(super) fn batch(body: &[u8], max: usize) -> Option<Vec<PredictRequest>> {
        let text = std::str::from_utf8(body).ok()?;
        let mut de = serde_json::Deserializer::from_str(text);
        let r = Batch { max }.deserialize(&mut de).ok()?;
        de.end().ok()?;
        Some(r)
    }

    /// The error only says "not the easy case"; it is never shown.
    fn no<E: Error>() -> E {
        E::custom("")
    }

    fn raw<'de, A: MapAccess<'de>>(map: &mut A) -> Result<&'de RawValue, A::Error> {
        map.next_value::<&'de RawValue>()
    }

    struct Instance;

    impl<'de> DeserializeSeed<'de> for Instance {
        type Value = PredictRequest;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<PredictRequest, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Instance {
        type Value = PredictRequest;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an instance")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PredictRequest, A::Error> {
            let mut idx = None;
            let mut features = None;
            while let Some(k) = map.next_key::<Key<'de>>()? {
                match &*k.0 {
                    "idx" if idx.is_none() => {
                        idx = Some(integer(raw(&mut map)?).map_err(|_| no::<A::Error>())?)
                    }
                    "features" if features.is_none() => {
                        features = Some(map.next_value_seed(FeaturesSeed)?)
                    }
                    _ => return Err(no()),
                }
            }
            match (idx, features) {
                (Some(idx), Some(features)) => Ok(PredictRequest { idx, features }),
                _ => Err(no()),
            }
        }
    }

    struct FeaturesSeed;

    impl<'de> DeserializeSeed<'de> for FeaturesSeed {
        type Value = Features;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Features, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for FeaturesSeed {
        type Value = Features;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("the features")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Features, A::Error> {
            let (mut attr_a, mut attr_b, mut scd_a, mut scd_b) = (None, None, None, None);
            while let Some(k) = map.next_key::<Key<'de>>()? {
                match &*k.0 {
                    "attr_a" if attr_a.is_none() => {
                        attr_a = Some(integer(raw(&mut map)?).map_err(|_| no::<A::Error>())?)
                    }
                    "attr_b" if attr_b.is_none() => {
                        attr_b = Some(string(raw(&mut map)?).map_err(|_| no::<A::Error>())?)
                    }
                    "scd_a" if scd_a.is_none() => {
                        scd_a = Some(number(raw(&mut map)?).map_err(|_| no::<A::Error>())?)
                    }
                    "scd_b" if scd_b.is_none() => {
                        scd_b = Some(integer(raw(&mut map)?).map_err(|_| no::<A::Error>())?)
                    }
                    _ => return Err(no()),
                }
            }
            match (attr_a, attr_b, scd_a, scd_b) {
                (Some(attr_a), Some(attr_b), Some(scd_a), Some(scd_b)) => Ok(Features {
                    attr_a,
                    attr_b,
                    scd_a,
                    scd_b,
                }),
                _ => Err(no()),
            }
        }
    }

    struct Batch {
        max: usize,
    }

    impl<'de> DeserializeSeed<'de> for Batch {
        type Value = Vec<PredictRequest>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }

    impl<'de> Visitor<'de> for Batch {
        type Value = Vec<PredictRequest>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a batch")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = None;
            while let Some(k) = map.next_key::<Key<'de>>()? {
                match &*k.0 {
                    "instances" if out.is_none() => {
                        out = Some(map.next_value_seed(Instances { max: self.max })?)
                    }
                    _ => return Err(no()),
                }
            }
            out.ok_or_else(no)
        }
    }

    struct Instances {
        max: usize,
    }

    impl<'de> DeserializeSeed<'de> for Instances {
        type Value = Vec<PredictRequest>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_seq(self)
        }
    }

    impl<'de> Visitor<'de> for Instances {
        type Value = Vec<PredictRequest>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("instances")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
            while let Some(r) = seq.next_element_seed(Instance)? {
                if out.len() == self.max {
                    return Err(no());
                }
                out.push(r);
            }
            if out.is_empty() {
                return Err(no());
            }
            Ok(out)
        }
    }
}

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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn field_of(body: &str) -> String {
        match parse_predict(body.as_bytes()) {
            Err(ParseError::Invalid { field, .. }) => field,
            other => panic!("expected Invalid for {body}, got {other:?}"),
        }
    }

    #[test]
    fn the_original_request_parses() {
        let r = parse_predict(
            br#"{"idx": 150000, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3}}"#,
        )
        .unwrap();
        assert_eq!(r.idx, 150000);
        assert_eq!(r.features.attr_b, "c");
        assert_eq!(r.features.scd_a, 0.55);
    }

    #[test]
    fn errors_name_the_field() {
        let ok = r#""attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3"#;
        assert_eq!(field_of(&format!(r#"{{"features": {{{ok}}}}}"#)), "idx");
        assert_eq!(
            field_of(&format!(r#"{{"idx": 1, "x": 2, "features": {{{ok}}}}}"#)),
            "x"
        );
        assert_eq!(
            field_of(r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.5}}"#),
            "features.scd_b"
        );
        assert_eq!(
            field_of(&format!(
                r#"{{"idx": 1, "features": {{{ok}, "extra": 1}}}}"#
            )),
            "features.extra"
        );
        assert_eq!(
            field_of(
                r#"{"idx": 1, "features": {"attr_a": "1", "attr_b": "c", "scd_a": 0.5, "scd_b": 3}}"#
            ),
            "features.attr_a"
        );
        assert_eq!(
            field_of(
                r#"{"idx": 1, "features": {"attr_a": 1.5, "attr_b": "c", "scd_a": 0.5, "scd_b": 3}}"#
            ),
            "features.attr_a"
        );
        assert_eq!(
            field_of(
                r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": 3, "scd_a": 0.5, "scd_b": 3}}"#
            ),
            "features.attr_b"
        );
        assert_eq!(
            field_of(
                r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 1e999, "scd_b": 3}}"#
            ),
            "features.scd_a"
        );
        assert_eq!(
            field_of(
                r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.5, "scd_b": 99999999999999999999}}"#
            ),
            "features.scd_b"
        );
        assert_eq!(
            field_of(&format!(r#"{{"idx": 1, "idx": 2, "features": {{{ok}}}}}"#)),
            "idx"
        );
        assert_eq!(field_of(r#"{"idx": 1, "features": []}"#), "features");
        assert_eq!(field_of("[1, 2]"), "(body)");
        assert_eq!(
            field_of(r#"{"idx": null, "features": {}}"#),
            "features.attr_a"
        );
    }

    #[test]
    fn malformed_is_not_invalid() {
        for b in [
            &b"{"[..],
            b"",
            b"   ",
            b"{\"idx\": NaN}",
            b"\xff\xfe",
            b"{} x",
        ] {
            assert!(
                matches!(parse_predict(b), Err(ParseError::Malformed(_))),
                "{b:?}"
            );
        }
    }

    #[test]
    fn batch() {
        let one =
            r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 0.5, "scd_b": 3}}"#;
        let body = format!(r#"{{"instances": [{one}, {one}]}}"#);
        assert_eq!(parse_batch(body.as_bytes(), 10).unwrap().len(), 2);
        let bad = format!(
            r#"{{"instances": [{one}, {{"idx": 2, "features": {{"attr_a": 1, "attr_b": "c", "scd_a": "x", "scd_b": 3}}}}]}}"#
        );
        assert_eq!(
            parse_batch(bad.as_bytes(), 10),
            Err(invalid(
                "instances[1].features.scd_a",
                "expected a number, got a string"
            ))
        );
        assert!(matches!(
            parse_batch(body.as_bytes(), 1),
            Err(ParseError::Invalid { field, .. }) if field == "instances"
        ));
        assert!(parse_batch(br#"{"instances": []}"#, 10).is_err());
    }

    /// The one-pass path never accepts what the thorough path refuses, and returns the
    /// same value when it accepts.
    fn agree(body: &[u8]) {
        if let Some(r) = fast::predict(body) {
            assert_eq!(
                Ok(r),
                thorough_predict(body),
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        for max in [1, 2, 10] {
            if let Some(r) = fast::batch(body, max) {
                assert_eq!(
                    Ok(r),
                    thorough_batch(body, max),
                    "{:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
    }

    #[test]
    fn fast_path_agrees_with_the_thorough_one() {
        let ok = r#""attr_a": 1, "attr_b": "c", "scd_a": 0.55, "scd_b": 3"#;
        let cases = [
            format!(r#"{{"idx": 150000, "features": {{{ok}}}}}"#),
            format!(r#" {{ "features" : {{{ok}}} , "idx" : -3 }} "#),
            format!(r#"{{"id\u0078": 1, "features": {{{ok}}}}}"#),
            r#"{"idx": 1, "features": {"scd_b": 3, "scd_a": -1e-3, "attr_b": "\u00e9\n", "attr_a": 0}}"#.into(),
            format!(r#"{{"idx": 1, "features": {{{ok}}}}} x"#),
            format!(r#"{{"idx": 1, "idx": 1, "features": {{{ok}}}}}"#),
            format!(r#"{{"idx": 1.0, "features": {{{ok}}}}}"#),
            format!(r#"{{"idx": 1, "features": {{{ok}, "attr_a": 1}}}}"#),
            r#"{"idx": 1, "features": {"attr_a": 1, "attr_b": "c", "scd_a": 1e999, "scd_b": 3}}"#.into(),
            format!(r#"{{"instances": [{{"idx": 1, "features": {{{ok}}}}}]}}"#),
            format!(r#"{{"instances": [{{"idx": 1, "features": {{{ok}}}}}, {{"idx": 2, "features": {{{ok}}}}}]}}"#),
            r#"{"instances": []}"#.into(),
            r#"{"instances": {}}"#.into(),
        ];
        for c in &cases {
            agree(c.as_bytes());
        }
        assert!(fast::predict(cases[0].as_bytes()).is_some());
        assert!(fast::predict(cases[1].as_bytes()).is_some());
        assert!(fast::predict(cases[3].as_bytes()).is_some());
        assert!(fast::batch(cases[10].as_bytes(), 2).is_some());
        assert!(fast::batch(cases[10].as_bytes(), 1).is_none());
    }

    proptest::proptest! {
        #[test]
        fn fast_path_agrees_on_arbitrary_input(
            idx in proptest::sample::select(vec!["1", "-7", "1.5", "1e3", "\"1\"", "null", "99999999999999999999"]),
            a in proptest::sample::select(vec!["0", "2", "1.0", "[]", "true"]),
            b in proptest::sample::select(vec!["\"c\"", "\"\\u0041\"", "3", "{}"]),
            sa in proptest::sample::select(vec!["0.55", "-3", "1e999", "1E2", "\"x\"", "-0"]),
            sb in proptest::sample::select(vec!["3", "3.0", "-1", "18446744073709551616"]),
            extra in proptest::sample::select(vec!["", ", \"attr_a\": 1", ", \"x\": 1"]),
            top in proptest::sample::select(vec!["", ", \"idx\": 2", ", \"y\": {}"]),
            noise in proptest::collection::vec(proptest::num::u8::ANY, 0..4),
            cut in proptest::num::usize::ANY,
        ) {
            let one = format!(
                r#"{{"idx": {idx}{top}, "features": {{"attr_a": {a}, "attr_b": {b}, "scd_a": {sa}, "scd_b": {sb}{extra}}}}}"#
            );
            let batch = format!(r#"{{"instances": [{one}, {one}]}}"#);
            for body in [one.into_bytes(), batch.into_bytes()] {
                agree(&body);
                let mut cut_body = body[..cut % (body.len() + 1)].to_vec();
                agree(&cut_body);
                cut_body.extend_from_slice(&noise);
                agree(&cut_body);
            }
        }
    }
}
