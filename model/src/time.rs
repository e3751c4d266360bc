//! UTC timestamps without a date crate, for the artifact's manifest: RFC 3339
//! (`created_at`, `2026-11-24T17:00:00Z`) and the compact form used in version names
//! (`20261124T170000Z`). Private: the server formats its own log timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

/// Calendar parts of a UTC instant (seconds precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Utc {
    pub(crate) year: i64,
    pub(crate) month: u32,
    pub(crate) day: u32,
    pub(crate) hour: u32,
    pub(crate) minute: u32,
    pub(crate) second: u32,
}

impl Utc {
    /// Splits `t` (times before 1970 are clamped to the epoch).
    pub(crate) fn from_system_time(t: SystemTime) -> Utc {
        let secs = t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        Utc {
            year,
            month,
            day,
            hour: (rem / 3600) as u32,
            minute: (rem % 3600 / 60) as u32,
            second: (rem % 60) as u32,
        }
    }

    /// `2026-11-24T17:00:00Z`
    pub(crate) fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }

    /// `20261124T170000Z`
    pub(crate) fn compact(&self) -> String {
        format!(
            "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_instants() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_539_600); // 2026-11-24T17:00:00Z
        let u = Utc::from_system_time(t);
        assert_eq!(u.rfc3339(), "2026-11-24T17:00:00Z");
        assert_eq!(u.compact(), "20261124T170000Z");
        assert_eq!(
            Utc::from_system_time(UNIX_EPOCH).rfc3339(),
            "1970-01-01T00:00:00Z"
        );
        // a leap day
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(
            Utc::from_system_time(leap).rfc3339(),
            "2000-02-29T00:00:00Z"
        );
    }
}
