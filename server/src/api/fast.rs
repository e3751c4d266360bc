//! One pass over a well-formed request, for the common case.
//!
//! The thorough path (`super`) reads a body three times (a syntax check of the whole
//! document, then each object's members as raw values) so that every error is
//! classified and names its field. A valid request needs none of that: this path
//! walks the document once, checking the same things with the same scalar checks
//! (`integer`, `number`, `string` on the same raw text), and gives up (`None`) at the
//! first thing it does not like (malformed JSON, an unknown, duplicate or missing
//! field, a mistyped value, too many instances). The caller then runs the thorough
//! path, which finds and names the error exactly as before. So errors are unchanged,
//! and a value this path returns is the one the thorough path would return (tested in
//! `tests.rs`, also on arbitrary input).

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
