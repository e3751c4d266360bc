//! The checks `Config::parse` runs on each value, and where in the file a key is (for
//! errors that name the line).

use std::path::Path;

use super::ConfigError;

pub(super) fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Only ASCII letters, digits, `._-` and the characters in `extra` (values that go into
/// user data and the unit).
pub(super) fn tame(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c) || extra.contains(c))
}

pub(super) fn valid_bucket(s: &str) -> bool {
    (3..=63).contains(&s.len())
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
}

/// `a.b.c.d/n` as (address, prefix length).
pub fn parse_cidr(s: &str) -> Option<(u32, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: std::net::Ipv4Addr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some((u32::from(ip), len))
}

pub(super) fn cidr_contains(outer: (u32, u8), inner: (u32, u8)) -> bool {
    let mask = |l: u8| if l == 0 { 0 } else { u32::MAX << (32 - l) };
    inner.1 >= outer.1 && (inner.0 & mask(outer.1)) == (outer.0 & mask(outer.1))
}

pub(super) fn invalid(
    path: &Path,
    text: &str,
    offset: usize,
    key: Option<&str>,
    message: String,
) -> ConfigError {
    let offset = offset.min(text.len());
    let line = text[..offset].matches('\n').count() + 1;
    let key = key
        .map(str::to_string)
        .or_else(|| key_on_line(text.lines().nth(line - 1).unwrap_or("")));
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        key: key.map(|k| format!(", key `{k}`")).unwrap_or_default(),
        message,
    }
}

/// `name` from a line `name = value`.
pub(super) fn key_on_line(line: &str) -> Option<String> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim().trim_matches('"');
    (!k.is_empty() && !k.starts_with('#') && !k.starts_with('[')).then(|| k.to_string())
}

/// Byte offset of `key = ...` inside `[section]` (or at the top level).
pub(super) fn find_key(text: &str, section: Option<&str>, key: &str) -> Option<usize> {
    let mut current: Option<String> = None;
    let mut offset = 0;
    let mut section_start = None;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            current = Some(t.trim_matches(|c| c == '[' || c == ']').trim().to_string());
            if current.as_deref() == section {
                section_start = Some(offset);
            }
        } else if current.as_deref() == section && key_on_line(t).as_deref() == Some(key) {
            return Some(offset);
        }
        offset += line.len();
    }
    section_start
}
