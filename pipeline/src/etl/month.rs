//! A calendar month, the period of the monthly sales load (`YYYY-MM`).

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    /// 1..=12
    month: u32,
}

impl Month {
    pub fn new(year: i32, month: u32) -> Option<Month> {
        ((1..=12).contains(&month) && (1..=9999).contains(&year)).then_some(Month { year, month })
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    pub fn of(date: NaiveDate) -> Month {
        Month {
            year: date.year(),
            month: date.month(),
        }
    }

    pub fn first_day(self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("a valid month")
    }

    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn prev(self) -> Month {
        if self.month == 1 {
            Month {
                year: self.year - 1,
                month: 12,
            }
        } else {
            Month {
                year: self.year,
                month: self.month - 1,
            }
        }
    }

    /// Days in the month.
    pub fn days(self) -> u32 {
        let next = self.next().first_day();
        (next - self.first_day()).num_days() as u32
    }

    /// Every month from `self` to `last`, both included.
    pub fn through(self, last: Month) -> Vec<Month> {
        let mut out = Vec::new();
        let mut m = self;
        while m <= last {
            out.push(m);
            m = m.next();
        }
        out
    }

    /// The last month that is over, today (UTC).
    pub fn last_complete() -> Month {
        Month::of(chrono::Utc::now().date_naive()).prev()
    }

    /// The file of this month's sales, relative to the source root.
    pub fn sales_file(self) -> String {
        format!("sales/{}/sales.csv", self.first_day().format("%Y-%m-%d"))
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Why a `YYYY-MM` did not parse.
#[derive(Debug, thiserror::Error)]
#[error("not a month {0:?}: expected YYYY-MM, e.g. 2020-01")]
pub struct MonthParseError(String);

impl FromStr for Month {
    type Err = MonthParseError;

    fn from_str(s: &str) -> Result<Month, MonthParseError> {
        let err = || MonthParseError(s.to_string());
        let (y, m) = s.trim().split_once('-').ok_or_else(err)?;
        if y.len() != 4 || m.len() != 2 {
            return Err(err());
        }
        let year = y.parse().map_err(|_| err())?;
        let month = m.parse().map_err(|_| err())?;
        Month::new(year, month).ok_or_else(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_walks() {
        let m: Month = "2020-12".parse().expect("valid");
        assert_eq!(m.next().to_string(), "2021-01");
        assert_eq!(m.next().prev(), m);
        assert_eq!(m.days(), 31);
        assert_eq!("2020-02".parse::<Month>().expect("valid").days(), 29);
        assert_eq!(m.sales_file(), "sales/2020-12-01/sales.csv");
        assert!("2020-13".parse::<Month>().is_err());
        assert!("2020-1".parse::<Month>().is_err());
        assert_eq!(
            "2020-01"
                .parse::<Month>()
                .expect("valid")
                .through("2022-12".parse().expect("valid"))
                .len(),
            36
        );
    }
}
