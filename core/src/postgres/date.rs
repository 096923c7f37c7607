//! `date` as a value: days since PostgreSQL's epoch, 2000-01-01, so that every value
//! the server sends (infinities included) survives the round trip.

use std::fmt;

/// A calendar date (proleptic Gregorian), as PostgreSQL stores it: whole days since
/// 2000-01-01. `i32::MAX` and `i32::MIN` are PostgreSQL's `infinity` and `-infinity`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date(pub i32);

/// Days from 1970-01-01 to 2000-01-01.
const UNIX_TO_PG_DAYS: i64 = 10_957;

impl Date {
    /// `infinity`.
    pub const INFINITY: Date = Date(i32::MAX);
    /// `-infinity`.
    pub const NEG_INFINITY: Date = Date(i32::MIN);

    /// The date `year`-`month`-`day` (year 0 is 1 BC), or `None` if there is no such
    /// day or it is out of range.
    pub fn from_ymd(year: i32, month: u32, day: u32) -> Option<Date> {
        if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
            return None;
        }
        // Howard Hinnant's days_from_civil.
        let y = i64::from(year) - i64::from(month <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let m = i64::from(month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let unix_days = era * 146_097 + doe - 719_468;
        i32::try_from(unix_days - UNIX_TO_PG_DAYS)
            .ok()
            .filter(|d| *d != i32::MAX && *d != i32::MIN)
            .map(Date)
    }

    /// (year, month, day); year 0 is 1 BC. `None` for the infinities.
    pub fn ymd(self) -> Option<(i32, u32, u32)> {
        if self == Date::INFINITY || self == Date::NEG_INFINITY {
            return None;
        }
        // Howard Hinnant's civil_from_days.
        let z = i64::from(self.0) + UNIX_TO_PG_DAYS + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Some((i32::try_from(year).ok()?, month as u32, day as u32))
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 31,
    }
}

/// As PostgreSQL prints it with `DateStyle` ISO: `2024-02-29`, `0044-03-15 BC`,
/// `infinity`.
impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ymd() {
            None if *self == Date::INFINITY => f.write_str("infinity"),
            None => f.write_str("-infinity"),
            Some((year, month, day)) if year <= 0 => {
                write!(f, "{:04}-{month:02}-{day:02} BC", 1 - year)
            }
            Some((year, month, day)) => write!(f, "{year:04}-{month:02}-{day:02}"),
        }
    }
}

impl fmt::Debug for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Date({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_epoch_is_day_zero() {
        assert_eq!(Date::from_ymd(2000, 1, 1), Some(Date(0)));
        assert_eq!(Date(0).ymd(), Some((2000, 1, 1)));
        assert_eq!(Date::from_ymd(1970, 1, 1), Some(Date(-10_957)));
    }

    #[test]
    fn calendar_dates_round_trip_and_print_as_postgres_does() {
        for (y, m, d, printed) in [
            (2024, 2, 29, "2024-02-29"),
            (1999, 12, 31, "1999-12-31"),
            (1, 1, 1, "0001-01-01"),
            (-43, 3, 15, "0044-03-15 BC"),
            (9999, 12, 31, "9999-12-31"),
        ] {
            let date = Date::from_ymd(y, m, d).unwrap();
            assert_eq!(date.ymd(), Some((y, m, d)));
            assert_eq!(date.to_string(), printed);
        }
        assert_eq!(Date::INFINITY.to_string(), "infinity");
        assert_eq!(Date::NEG_INFINITY.to_string(), "-infinity");
    }

    #[test]
    fn impossible_dates_are_none() {
        assert_eq!(Date::from_ymd(2023, 2, 29), None);
        assert_eq!(Date::from_ymd(2023, 13, 1), None);
        assert_eq!(Date::from_ymd(2023, 4, 31), None);
    }
}
