//! Cron schedules as Kubernetes reads them (robfig/cron's standard parser),
//! and the schedule arithmetic of its CronJob controller. Pure: no clock,
//! no I/O.
//!
//! Syntax: five fields, `minute hour day-of-month month day-of-week`, each
//! `*` (or `?`), a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n`
//! (from `a` to the field's end), or a comma-separated list of these.
//! Months and weekdays also take three-letter English names, in any case;
//! weekdays run 0 (Sunday) to 6. The macros `@yearly` (`@annually`),
//! `@monthly`, `@weekly`, `@daily` (`@midnight`) and `@hourly` stand for
//! their five-field forms.
//!
//! Day-of-month and day-of-week combine as in cron: when either field is
//! unrestricted (starts with `*` or `?`), both must match; when both are
//! restricted, either may.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp, Zoned};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("expected exactly 5 fields, found {found}: {schedule:?}")]
    FieldCount { found: usize, schedule: String },
    #[error("unrecognized descriptor: {0}")]
    Descriptor(String),
    #[error("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")]
    TimeZoneInSchedule,
    #[error("failed to parse int from {text:?} in the {field} field")]
    Number { field: &'static str, text: String },
    #[error("{field} value {value} is out of range {min}-{max}")]
    OutOfRange {
        field: &'static str,
        value: u32,
        min: u32,
        max: u32,
    },
    #[error("beginning of range ({start}) beyond end of range ({end}) in the {field} field")]
    Backwards {
        field: &'static str,
        start: u32,
        end: u32,
    },
    #[error("step of range should be a positive number in the {field} field: {text:?}")]
    Step { field: &'static str, text: String },
    #[error("unknown time zone {0}")]
    UnknownTimeZone(String),
}

struct Bounds {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: Bounds = Bounds {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAYS_OF_MONTH: Bounds = Bounds {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DAYS_OF_WEEK: Bounds = Bounds {
    name: "day-of-week",
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// One field: a bit per allowed value, and whether it was unrestricted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Field {
    bits: u64,
    star: bool,
}

impl Field {
    fn has(self, value: u32) -> bool {
        self.bits & (1u64 << value) != 0
    }
}

/// A parsed cron schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minute: Field,
    hour: Field,
    day_of_month: Field,
    month: Field,
    day_of_week: Field,
}

fn value(text: &str, bounds: &Bounds) -> Result<u32, ScheduleError> {
    let lower = text.to_ascii_lowercase();
    if let Some(index) = bounds.names.iter().position(|name| *name == lower) {
        return Ok(index as u32 + bounds.min);
    }
    let number: u32 = text.parse().map_err(|_| ScheduleError::Number {
        field: bounds.name,
        text: text.to_owned(),
    })?;
    if number < bounds.min || number > bounds.max {
        return Err(ScheduleError::OutOfRange {
            field: bounds.name,
            value: number,
            min: bounds.min,
            max: bounds.max,
        });
    }
    Ok(number)
}

fn range(expression: &str, bounds: &Bounds) -> Result<Field, ScheduleError> {
    let (span, step) = match expression.split_once('/') {
        Some((span, step)) => {
            let step: u32 =
                step.parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| ScheduleError::Step {
                        field: bounds.name,
                        text: expression.to_owned(),
                    })?;
            (span, Some(step))
        }
        None => (expression, None),
    };
    let star = span == "*" || span == "?";
    let (start, end) = if star {
        (bounds.min, bounds.max)
    } else {
        match span.split_once('-') {
            Some((low, high)) => (value(low, bounds)?, value(high, bounds)?),
            None => {
                let single = value(span, bounds)?;
                // `a/n` runs from a to the end of the field.
                (single, if step.is_some() { bounds.max } else { single })
            }
        }
    };
    if start > end {
        return Err(ScheduleError::Backwards {
            field: bounds.name,
            start,
            end,
        });
    }
    let step = step.unwrap_or(1);
    let mut bits = 0u64;
    let mut current = start;
    while current <= end {
        bits |= 1u64 << current;
        current += step;
    }
    Ok(Field { bits, star })
}

fn field(text: &str, bounds: &Bounds) -> Result<Field, ScheduleError> {
    let mut result = Field {
        bits: 0,
        star: false,
    };
    for part in text.split(',') {
        let parsed = range(part, bounds)?;
        result.bits |= parsed.bits;
        result.star |= parsed.star;
    }
    Ok(result)
}

impl Schedule {
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let trimmed = text.trim();
        if trimmed.starts_with("TZ=") || trimmed.starts_with("CRON_TZ=") {
            return Err(ScheduleError::TimeZoneInSchedule);
        }
        let expanded = if let Some(name) = trimmed.strip_prefix('@') {
            match name {
                "yearly" | "annually" => "0 0 1 1 *",
                "monthly" => "0 0 1 * *",
                "weekly" => "0 0 * * 0",
                "daily" | "midnight" => "0 0 * * *",
                "hourly" => "0 * * * *",
                _ => return Err(ScheduleError::Descriptor(trimmed.to_owned())),
            }
        } else {
            trimmed
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day_of_month, month, day_of_week] = fields.as_slice() else {
            return Err(ScheduleError::FieldCount {
                found: fields.len(),
                schedule: text.to_owned(),
            });
        };
        Ok(Schedule {
            minute: field(minute, &MINUTES)?,
            hour: field(hour, &HOURS)?,
            day_of_month: field(day_of_month, &DAYS_OF_MONTH)?,
            month: field(month, &MONTHS)?,
            day_of_week: field(day_of_week, &DAYS_OF_WEEK)?,
        })
    }

    fn day_matches(&self, date: Date) -> bool {
        let dom = self.day_of_month.has(date.day() as u32);
        let dow = self
            .day_of_week
            .has(date.weekday().to_sunday_zero_offset() as u32);
        if self.day_of_month.star || self.day_of_week.star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first scheduled time strictly after `after`, in `zone`'s civil
    /// time; `None` if there is none within five years (say, 30 February).
    pub fn next_after(&self, after: Timestamp, zone: &TimeZone) -> Option<Timestamp> {
        let start = after.checked_add(SignedDuration::from_secs(60)).ok()?;
        let truncated =
            Timestamp::from_second(start.as_second() - start.as_second().rem_euclid(60)).ok()?;
        let mut current: Zoned = truncated.to_zoned(zone.clone());
        let horizon = after
            .checked_add(SignedDuration::from_hours(24 * 366 * 5))
            .ok()?;
        let midnight = |date: Date| -> Option<Zoned> {
            DateTime::from_parts(date, Time::midnight())
                .to_zoned(zone.clone())
                .ok()
        };
        while current.timestamp() <= horizon {
            let civil = current.datetime();
            if !self.month.has(civil.month() as u32) {
                let next_month = civil
                    .date()
                    .first_of_month()
                    .checked_add(Span::new().months(1))
                    .ok()?;
                current = midnight(next_month)?;
                continue;
            }
            if !self.day_matches(civil.date()) {
                current = midnight(civil.date().tomorrow().ok()?)?;
                continue;
            }
            if !self.hour.has(civil.hour() as u32) {
                // To the start of the next hour.
                let to_next_hour = 60 - i64::from(civil.minute());
                current = current
                    .checked_add(SignedDuration::from_mins(to_next_hour))
                    .ok()?;
                continue;
            }
            if !self.minute.has(civil.minute() as u32) {
                current = current.checked_add(SignedDuration::from_mins(1)).ok()?;
                continue;
            }
            return Some(current.timestamp());
        }
        None
    }
}

/// The zone a CronJob's `timeZone` names; none means UTC, as the control
/// plane runs in UTC.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, ScheduleError> {
    match name {
        None | Some("") => Ok(TimeZone::UTC),
        Some(name) => {
            TimeZone::get(name).map_err(|_| ScheduleError::UnknownTimeZone(name.to_owned()))
        }
    }
}

/// The schedule times a CronJob has to consider at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// The most recent scheduled time in `(earliest, now]`, if any.
    pub most_recent: Option<Timestamp>,
    /// How many scheduled times fell in that window.
    pub count: u64,
    /// The first scheduled time after `now`.
    pub next: Option<Timestamp>,
}

/// How many times to count before giving up on counting exactly; the most
/// recent time is still found.
const MISSED_COUNT_LIMIT: u64 = 1_000_000;

/// Kubernetes' `mostRecentScheduleTime`: the scheduled times after the
/// last one handled (`last_scheduled`, else the CronJob's creation) up to
/// `now`. With `starting_deadline_seconds`, times older than that before
/// `now` are not considered at all.
pub fn missed(
    schedule: &Schedule,
    zone: &TimeZone,
    created: Timestamp,
    last_scheduled: Option<Timestamp>,
    starting_deadline_seconds: Option<i64>,
    now: Timestamp,
) -> Missed {
    let mut earliest = last_scheduled.unwrap_or(created);
    if let Some(seconds) = starting_deadline_seconds {
        let deadline = now - SignedDuration::from_secs(seconds.max(0));
        if deadline > earliest {
            earliest = deadline;
        }
    }
    let mut result = Missed {
        most_recent: None,
        count: 0,
        next: None,
    };
    let mut cursor = earliest;
    while let Some(time) = schedule.next_after(cursor, zone) {
        if time > now {
            result.next = Some(time);
            return result;
        }
        result.most_recent = Some(time);
        result.count += 1;
        cursor = time;
        if result.count >= MISSED_COUNT_LIMIT {
            // Jump close to now and finish from there.
            let near = now - SignedDuration::from_hours(24 * 32);
            if near > cursor {
                cursor = near;
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn next(schedule: &str, after: &str) -> String {
        Schedule::parse(schedule)
            .expect("parses")
            .next_after(at(after), &TimeZone::UTC)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn standard_fields_ranges_steps_lists_and_names() {
        assert_eq!(
            next("*/1 * * * *", "2025-01-01T00:00:00Z"),
            "2025-01-01T00:01:00Z"
        );
        assert_eq!(
            next("*/15 * * * *", "2025-01-01T00:14:59Z"),
            "2025-01-01T00:15:00Z"
        );
        assert_eq!(
            next("5 4 * * *", "2025-01-01T04:05:00Z"),
            "2025-01-02T04:05:00Z"
        );
        assert_eq!(
            next("0 22 * * 1-5", "2025-01-03T22:00:00Z"),
            "2025-01-06T22:00:00Z"
        );
        assert_eq!(
            next("0 0,12 1 */2 *", "2025-01-01T12:00:00Z"),
            "2025-03-01T00:00:00Z"
        );
        assert_eq!(
            next("0 0 * JAN-mar SUN", "2025-03-30T00:00:00Z"),
            "2026-01-04T00:00:00Z"
        );
        assert_eq!(
            next("30 10/6 * * *", "2025-01-01T17:00:00Z"),
            "2025-01-01T22:30:00Z"
        );
        assert_eq!(
            next("0 9 ? * Mon", "2025-01-01T00:00:00Z"),
            "2025-01-06T09:00:00Z"
        );
    }

    #[test]
    fn macros_expand() {
        assert_eq!(
            next("@hourly", "2025-01-01T00:30:00Z"),
            "2025-01-01T01:00:00Z"
        );
        assert_eq!(
            next("@daily", "2025-01-01T00:30:00Z"),
            "2025-01-02T00:00:00Z"
        );
        assert_eq!(
            next("@midnight", "2025-01-01T00:30:00Z"),
            "2025-01-02T00:00:00Z"
        );
        assert_eq!(
            next("@weekly", "2025-01-01T00:30:00Z"),
            "2025-01-05T00:00:00Z"
        );
        assert_eq!(
            next("@monthly", "2025-01-01T00:30:00Z"),
            "2025-02-01T00:00:00Z"
        );
        assert_eq!(
            next("@yearly", "2025-01-01T00:30:00Z"),
            "2026-01-01T00:00:00Z"
        );
        assert_eq!(
            next("@annually", "2025-01-01T00:30:00Z"),
            "2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn day_of_month_and_day_of_week_or_when_both_are_restricted() {
        // The 13th, or any Friday.
        assert_eq!(
            next("0 0 13 * 5", "2025-01-01T00:00:00Z"),
            "2025-01-03T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * 5", "2025-01-10T00:00:00Z"),
            "2025-01-13T00:00:00Z"
        );
        // With day-of-week unrestricted only the 13th counts; with `*/1`
        // (a star) as well.
        assert_eq!(
            next("0 0 13 * *", "2025-01-01T00:00:00Z"),
            "2025-01-13T00:00:00Z"
        );
        assert_eq!(
            next("0 0 13 * */1", "2025-01-01T00:00:00Z"),
            "2025-01-13T00:00:00Z"
        );
        // Only Fridays when day-of-month is a star.
        assert_eq!(
            next("0 0 * * 5", "2025-01-04T00:00:00Z"),
            "2025-01-10T00:00:00Z"
        );
    }

    #[test]
    fn impossible_dates_have_no_next_time() {
        assert_eq!(next("0 0 30 2 *", "2025-01-01T00:00:00Z"), "");
        assert_eq!(
            next("0 0 29 2 *", "2025-03-01T00:00:00Z"),
            "2028-02-29T00:00:00Z"
        );
    }

    #[test]
    fn bad_schedules_say_what_is_wrong() {
        let error = |text: &str| Schedule::parse(text).expect_err(text).to_string();
        assert!(error("* * * *").contains("expected exactly 5 fields, found 4"));
        assert!(error("* * * * * *").contains("found 6"));
        assert!(error("60 * * * *").contains("minute value 60 is out of range 0-59"));
        assert!(error("* * * * 7").contains("day-of-week value 7 is out of range 0-6"));
        assert!(error("* * 0 * *").contains("day-of-month value 0"));
        assert!(error("5-1 * * * *").contains("beyond end of range"));
        assert!(error("*/0 * * * *").contains("positive number"));
        assert!(error("x * * * *").contains("failed to parse int from \"x\""));
        assert!(error("* * * foo *").contains("\"foo\""));
        assert!(error("@every 5m").contains("unrecognized descriptor"));
        assert_eq!(
            error("TZ=UTC * * * * *"),
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
        );
    }

    #[test]
    fn time_zones_shift_the_civil_fields() {
        let schedule = Schedule::parse("0 9 * * *").expect("parses");
        let tokyo = time_zone(Some("Asia/Tokyo")).expect("zone");
        assert_eq!(
            schedule.next_after(at("2025-01-01T00:00:00Z"), &tokyo),
            Some(at("2025-01-02T00:00:00Z"))
        );
        assert_eq!(time_zone(None), Ok(TimeZone::UTC));
        assert_eq!(
            time_zone(Some("Mars/Olympus")).map(|_| ()),
            Err(ScheduleError::UnknownTimeZone("Mars/Olympus".into()))
        );
    }

    #[test]
    fn missed_schedules_and_the_starting_deadline() {
        let every_minute = Schedule::parse("*/1 * * * *").expect("parses");
        let utc = TimeZone::UTC;
        let created = at("2025-01-01T00:00:30Z");
        // Nothing due yet: only the next time.
        let none = missed(
            &every_minute,
            &utc,
            created,
            None,
            None,
            at("2025-01-01T00:00:50Z"),
        );
        assert_eq!(none.most_recent, None);
        assert_eq!(none.next, Some(at("2025-01-01T00:01:00Z")));
        // Three times passed since creation; the latest one is run.
        let three = missed(
            &every_minute,
            &utc,
            created,
            None,
            None,
            at("2025-01-01T00:03:10Z"),
        );
        assert_eq!(three.count, 3);
        assert_eq!(three.most_recent, Some(at("2025-01-01T00:03:00Z")));
        assert_eq!(three.next, Some(at("2025-01-01T00:04:00Z")));
        // Counted from the last schedule time, not the creation.
        let since_last = missed(
            &every_minute,
            &utc,
            created,
            Some(at("2025-01-01T00:02:00Z")),
            None,
            at("2025-01-01T00:03:10Z"),
        );
        assert_eq!(since_last.count, 1);
        // A starting deadline hides the times older than it.
        let hourly = Schedule::parse("0 * * * *").expect("parses");
        let late = missed(
            &hourly,
            &utc,
            created,
            None,
            Some(60),
            at("2025-01-01T01:05:00Z"),
        );
        assert_eq!(late.most_recent, None, "01:00 is more than 60 s ago");
        let in_time = missed(
            &hourly,
            &utc,
            created,
            None,
            Some(600),
            at("2025-01-01T01:05:00Z"),
        );
        assert_eq!(in_time.most_recent, Some(at("2025-01-01T01:00:00Z")));
        assert_eq!(in_time.count, 1);
    }
}
