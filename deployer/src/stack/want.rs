//! What a resource's `wanted` says ([`Want`], [`Attr`]) and what its `read` returns
//! ([`Actual`]); one attribute to update ([`Change`]).

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Kind, Known};
use crate::aws::AwsError;

/// A wanted attribute value: known now, or only after its parent is created.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Known(Value),
    Unknown,
}

impl Attr {
    pub(super) fn text(v: &str) -> Attr {
        Attr::Known(Value::String(v.to_string()))
    }

    /// The id of `parent`, unknown until it exists.
    pub(super) fn id_of(known: &Known, parent: Kind) -> Attr {
        match known.get(&parent) {
            Some(Some(id)) => Attr::text(id),
            _ => Attr::Unknown,
        }
    }

    /// `value`, known once `parent` exists.
    pub(super) fn once_exists(known: &Known, parent: Kind, value: &str) -> Attr {
        match known.get(&parent) {
            Some(Some(_)) => Attr::text(value),
            _ => Attr::Unknown,
        }
    }
}

/// One wanted attribute.
#[derive(Debug, Clone)]
pub struct Want {
    pub name: &'static str,
    pub value: Attr,
    /// A change can only be made by replacing the resource.
    pub force_new: bool,
    /// Updated in place only when this holds of (the value read, the wanted value);
    /// any other change replaces the resource.
    in_place_when: Option<fn(&Value, &Attr) -> bool>,
}

impl Want {
    /// An attribute that only a replacement changes.
    pub(super) fn replace(name: &'static str, value: Attr) -> Want {
        Want {
            name,
            value,
            force_new: true,
            in_place_when: None,
        }
    }

    /// An attribute updated in place.
    pub(super) fn in_place(name: &'static str, value: Attr) -> Want {
        Want {
            name,
            value,
            force_new: false,
            in_place_when: None,
        }
    }

    /// An attribute updated in place for the changes `can` accepts (given the value
    /// read and the wanted one), replaced for any other.
    pub(super) fn in_place_when(
        name: &'static str,
        value: Attr,
        can: fn(&Value, &Attr) -> bool,
    ) -> Want {
        Want {
            name,
            value,
            force_new: false,
            in_place_when: Some(can),
        }
    }

    /// Whether changing this attribute from `before` (as read) replaces the resource.
    pub fn forces_new(&self, before: Option<&Value>) -> bool {
        self.force_new
            || match (self.in_place_when, before) {
                (Some(can), Some(b)) => !can(b, &self.value),
                _ => false,
            }
    }
}

/// Attributes as read from AWS.
pub type Actual = BTreeMap<String, Value>;

/// One attribute of a resource to bring to its wanted value.
pub(super) struct Change<'a> {
    /// The resource's address.
    pub(super) address: &'a str,
    pub(super) attr: &'static str,
    /// The wanted value.
    pub(super) value: &'a Value,
    /// All its attributes as read.
    pub(super) actual: &'a Actual,
}

impl Change<'_> {
    pub(super) fn not_in_place(&self) -> AwsError {
        AwsError::other(
            self.address,
            "Update",
            format!("attribute {} cannot be updated in place", self.attr),
        )
    }
}

/// A string attribute as read, `null` when absent.
pub(super) fn str_value(s: Option<&str>) -> Value {
    s.map(|s| Value::String(s.into())).unwrap_or(Value::Null)
}
