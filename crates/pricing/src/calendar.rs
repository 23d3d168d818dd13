//! The date of a moment where the seller is: a tax point is a calendar date, and a sale
//! at 00:30 in London on 1 April or at 02:00 in Mumbai is on the seller's day, not UTC's.
//! Pure arithmetic on the two countries' rules, so no time-zone database is needed.

use time::{Date, Duration, Month, OffsetDateTime, UtcOffset};

/// India Standard Time is UTC+05:30 all year (no daylight saving).
pub fn india_date(at: OffsetDateTime) -> Date {
    let ist = UtcOffset::from_hms(5, 30, 0).unwrap_or(UtcOffset::UTC);
    at.to_offset(ist).date()
}

/// The UK's date: GMT, or BST (UTC+1) from 01:00 UTC on the last Sunday of March to
/// 01:00 UTC on the last Sunday of October (the Summer Time Order 2002).
pub fn uk_date(at: OffsetDateTime) -> Date {
    let utc = at.to_offset(UtcOffset::UTC);
    let year = utc.year();
    let starts = last_sunday(year, Month::March).with_hms(1, 0, 0);
    let ends = last_sunday(year, Month::October).with_hms(1, 0, 0);
    match (starts, ends) {
        (Ok(starts), Ok(ends)) if utc >= starts.assume_utc() && utc < ends.assume_utc() => {
            utc.checked_add(Duration::HOUR).map_or(utc.date(), OffsetDateTime::date)
        }
        _ => utc.date(),
    }
}

fn last_sunday(year: i32, month: Month) -> Date {
    // Both months have 31 days; step back from the 31st to its Sunday.
    let last = Date::from_calendar_date(year, month, 31).unwrap_or(Date::MIN);
    let back = i64::from(last.weekday().number_days_from_sunday());
    last.checked_sub(Duration::days(back)).unwrap_or(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;
    use time::Weekday;

    #[test]
    fn the_uk_day_follows_summer_time() {
        // BST 2026: 29 Mar 01:00 UTC to 25 Oct 01:00 UTC.
        assert_eq!(last_sunday(2026, Month::March).weekday(), Weekday::Sunday);
        assert_eq!(last_sunday(2026, Month::March).day(), 29);
        assert_eq!(last_sunday(2026, Month::October).day(), 25);
        assert_eq!(uk_date(datetime!(2026-06-30 23:30 UTC)).day(), 1, "00:30 BST on 1 July");
        assert_eq!(uk_date(datetime!(2026-12-31 23:30 UTC)).day(), 31, "GMT in winter");
        assert_eq!(uk_date(datetime!(2026-03-29 00:59 UTC)).day(), 29, "an hour before BST: still GMT");
        assert_eq!(uk_date(datetime!(2026-03-31 23:00 UTC)).month(), Month::April, "BST's midnight");
        assert_eq!(uk_date(datetime!(2026-10-25 23:30 UTC)).day(), 25, "GMT again after 25 Oct");
    }

    #[test]
    fn the_indian_day_is_five_and_a_half_hours_ahead() {
        assert_eq!(india_date(datetime!(2026-03-31 18:29 UTC)).month(), Month::March);
        assert_eq!(india_date(datetime!(2026-03-31 18:30 UTC)).month(), Month::April, "a new financial year");
    }
}
