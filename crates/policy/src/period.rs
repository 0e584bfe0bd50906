//! UTC calendar periods of budgets: where the current one starts and ends.

use chrono::{DateTime, Datelike, Days, Months, NaiveTime, Utc};

use crate::config::Period;

impl Period {
    /// The start of the period that holds `at`: 00:00 UTC of the day, of the week's Monday,
    /// or of the month's 1st.
    pub fn start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.date_naive();
        let first = match self {
            Period::Daily => day,
            Period::Weekly => day
                .checked_sub_days(Days::new(u64::from(day.weekday().num_days_from_monday())))
                .unwrap_or(day),
            Period::Monthly => day.with_day(1).unwrap_or(day),
        };
        first.and_time(NaiveTime::MIN).and_utc()
    }

    /// The end (exclusive) of the period that starts at `start`.
    pub fn end(self, start: DateTime<Utc>) -> DateTime<Utc> {
        let next = match self {
            Period::Daily => start.checked_add_days(Days::new(1)),
            Period::Weekly => start.checked_add_days(Days::new(7)),
            Period::Monthly => start.checked_add_months(Months::new(1)),
        };
        next.unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn periods_follow_the_utc_calendar() {
        let t = at("2026-12-31T23:59:59.999Z"); // a Thursday
        assert_eq!(Period::Daily.start(t), at("2026-12-31T00:00:00Z"));
        assert_eq!(Period::Weekly.start(t), at("2026-12-28T00:00:00Z"));
        assert_eq!(Period::Monthly.start(t), at("2026-12-01T00:00:00Z"));
        assert_eq!(
            Period::Monthly.end(Period::Monthly.start(t)),
            at("2027-01-01T00:00:00Z")
        );
        assert_eq!(
            Period::Weekly.end(at("2026-12-28T00:00:00Z")),
            at("2027-01-04T00:00:00Z")
        );
        let leap = at("2028-02-29T12:00:00Z");
        assert_eq!(
            Period::Monthly.end(Period::Monthly.start(leap)),
            at("2028-03-01T00:00:00Z")
        );
        assert_eq!(
            Period::Daily.end(Period::Daily.start(leap)),
            at("2028-03-01T00:00:00Z")
        );
    }
}
