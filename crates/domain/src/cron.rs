//! Cron expressions in Airbyte's Quartz form: `sec min hour day-of-month
//! month day-of-week [year]`, evaluated in a time zone.
//!
//! As in Quartz, exactly one of day-of-month and day-of-week is `?`, days of
//! the week run 1-7 from Sunday (or SUN-SAT), and `L` in day-of-month is the
//! month's last day. `W` and `#` are refused with an error that says so.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("a cron expression has 6 or 7 fields (seconds minutes hours day-of-month month day-of-week [year]), this one has {0}")]
    FieldCount(usize),
    #[error("{field} field `{text}`: {why}")]
    Field { field: &'static str, text: String, why: String },
    #[error("exactly one of day-of-month and day-of-week must be `?` (e.g. `0 0 12 * * ?`)")]
    DayQuestionMark,
    #[error("unknown time zone `{0}`: use an IANA name such as UTC or Europe/Paris")]
    TimeZone(String),
    #[error("seconds field `{0}`: on AWS a schedule fires on whole minutes (EventBridge's finest unit); use `0` for the seconds")]
    SubMinute(String),
}

/// A parsed Quartz cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1..=31.
    days_of_month: u64,
    last_day_of_month: bool,
    /// Bits 1..=12.
    months: u64,
    /// Bits 1..=7, Sunday = 1.
    days_of_week: u64,
    /// Which day field decides; the other is `?`.
    by_day_of_week: bool,
    years: Option<Vec<i16>>,
}

struct Spec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECONDS: Spec = Spec { name: "seconds", min: 0, max: 59, names: &[] };
const MINUTES: Spec = Spec { name: "minutes", min: 0, max: 59, names: &[] };
const HOURS: Spec = Spec { name: "hours", min: 0, max: 23, names: &[] };
const DAYS_OF_MONTH: Spec = Spec { name: "day-of-month", min: 1, max: 31, names: &[] };
const MONTHS: Spec = Spec {
    name: "month",
    min: 1,
    max: 12,
    names: &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
};
const DAYS_OF_WEEK: Spec = Spec { name: "day-of-week", min: 1, max: 7, names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"] };
const YEARS: Spec = Spec { name: "year", min: 1970, max: 2199, names: &[] };

impl Cron {
    pub fn parse(expression: &str) -> Result<Cron, CronError> {
        let fields: Vec<&str> = expression.split_whitespace().collect();
        if !(6..=7).contains(&fields.len()) {
            return Err(CronError::FieldCount(fields.len()));
        }
        let dom_unset = fields[3] == "?";
        let dow_unset = fields[5] == "?";
        if dom_unset == dow_unset {
            return Err(CronError::DayQuestionMark);
        }
        let (days_of_month, last_day_of_month) = if dom_unset {
            (0, false)
        } else if fields[3] == "L" {
            (0, true)
        } else {
            (parse_field(fields[3], &DAYS_OF_MONTH)?, false)
        };
        let years = match fields.get(6) {
            None | Some(&"*") => None,
            Some(text) => {
                let bits = parse_years(text)?;
                Some(bits)
            }
        };
        Ok(Cron {
            seconds: parse_field(fields[0], &SECONDS)?,
            minutes: parse_field(fields[1], &MINUTES)?,
            hours: parse_field(fields[2], &HOURS)?,
            days_of_month,
            last_day_of_month,
            months: parse_field(fields[4], &MONTHS)?,
            days_of_week: if dow_unset { 0 } else { parse_field(fields[5], &DAYS_OF_WEEK)? },
            by_day_of_week: dom_unset,
            years,
        })
    }

    /// The first firing strictly after `after`, in zone `tz`, or `None` if it never fires again.
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = tz.to_datetime(after);
        let mut date = start.date();
        // Bounded: the furthest a valid expression can wait is a leap day in an allowed year.
        for _ in 0..(366 * 9) {
            if self.day_matches(date) {
                let first_day = date == start.date();
                for hour in bits(self.hours, 0, 23) {
                    if first_day && hour < start.hour() as u32 {
                        continue;
                    }
                    for minute in bits(self.minutes, 0, 59) {
                        for second in bits(self.seconds, 0, 59) {
                            let local = DateTime::from_parts(date, jiff::civil::time(hour as i8, minute as i8, second as i8, 0));
                            // A local time skipped by a DST change fires at the first instant after the gap.
                            let Ok(instant) = tz.to_ambiguous_timestamp(local).compatible() else { continue };
                            if instant > after {
                                return Some(instant);
                            }
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
            if let Some(years) = &self.years {
                if years.iter().all(|&y| y < date.year()) {
                    return None;
                }
            }
        }
        None
    }

    fn day_matches(&self, date: Date) -> bool {
        if let Some(years) = &self.years {
            if !years.contains(&date.year()) {
                return false;
            }
        }
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        if self.by_day_of_week {
            let weekday = date.weekday().to_sunday_one_offset() as u32;
            self.days_of_week & (1 << weekday) != 0
        } else if self.last_day_of_month {
            date.day() == date.days_in_month()
        } else {
            self.days_of_month & (1 << date.day()) != 0
        }
    }
}

/// A cron expression with the time zone it runs in.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub expression: String,
    pub time_zone: String,
    cron: Cron,
    tz: TimeZone,
}

impl CronSchedule {
    pub fn new(expression: &str, time_zone: &str) -> Result<Self, CronError> {
        let cron = Cron::parse(expression)?;
        let tz = TimeZone::get(time_zone).map_err(|_| CronError::TimeZone(time_zone.to_owned()))?;
        Ok(CronSchedule { expression: expression.to_owned(), time_zone: time_zone.to_owned(), cron, tz })
    }

    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        self.cron.next_after(after, &self.tz)
    }

    /// Whether the finest unit is the minute: seconds fixed at 0.
    pub fn fires_on_whole_minutes(&self) -> bool {
        self.cron.seconds == 1
    }
}

fn bits(mask: u64, min: u32, max: u32) -> impl Iterator<Item = u32> {
    (min..=max).filter(move |b| mask & (1 << b) != 0)
}

fn parse_years(text: &str) -> Result<Vec<i16>, CronError> {
    let mut years = Vec::new();
    for item in text.split(',') {
        let (range, step) = split_step(item, &YEARS, text)?;
        let (from, to) = match range {
            "*" => (YEARS.min, YEARS.max),
            _ => parse_range(range, &YEARS, text)?,
        };
        years.extend((from..=to).step_by(step as usize).map(|y| y as i16));
    }
    years.sort_unstable();
    years.dedup();
    Ok(years)
}

fn parse_field(text: &str, spec: &Spec) -> Result<u64, CronError> {
    let error = |why: String| CronError::Field { field: spec.name, text: text.to_owned(), why };
    let mut mask = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(error("empty list item".into()));
        }
        if item.contains(['W', '#']) || (item.contains('L') && item != "L") {
            return Err(error("`L`, `W` and `#` are only supported as `L` in day-of-month".into()));
        }
        let (range, step) = split_step(item, spec, text)?;
        let (from, to) = match range {
            "*" => (spec.min, spec.max),
            _ if item.contains('/') && !range.contains('-') => (parse_value(range, spec, text)?, spec.max),
            _ => parse_range(range, spec, text)?,
        };
        let mut value = from;
        while value <= to {
            mask |= 1 << value;
            value += step;
        }
    }
    Ok(mask)
}

fn split_step<'a>(item: &'a str, spec: &Spec, text: &str) -> Result<(&'a str, u32), CronError> {
    match item.split_once('/') {
        None => Ok((item, 1)),
        Some((range, step)) => {
            let step: u32 = step.parse().ok().filter(|&s| s > 0).ok_or_else(|| CronError::Field {
                field: spec.name,
                text: text.to_owned(),
                why: format!("step `{step}` is not a positive number"),
            })?;
            Ok((range, step))
        }
    }
}

fn parse_range(range: &str, spec: &Spec, text: &str) -> Result<(u32, u32), CronError> {
    match range.split_once('-') {
        None => {
            let v = parse_value(range, spec, text)?;
            Ok((v, v))
        }
        Some((a, b)) => {
            let (a, b) = (parse_value(a, spec, text)?, parse_value(b, spec, text)?);
            if a > b {
                return Err(CronError::Field { field: spec.name, text: text.to_owned(), why: format!("range {a}-{b} runs backwards") });
            }
            Ok((a, b))
        }
    }
}

fn parse_value(value: &str, spec: &Spec, text: &str) -> Result<u32, CronError> {
    let upper = value.to_ascii_uppercase();
    let parsed = match spec.names.iter().position(|n| *n == upper) {
        Some(i) => Some(i as u32 + spec.min),
        None => value.parse::<u32>().ok(),
    };
    parsed.filter(|v| (spec.min..=spec.max).contains(v)).ok_or_else(|| CronError::Field {
        field: spec.name,
        text: text.to_owned(),
        why: format!("`{value}` is not in {}-{}", spec.min, spec.max),
    })
}

/// The expression in EventBridge Scheduler's form, `cron(min hour dom
/// month dow year)`. Both forms number weekdays 1-7 from Sunday and need
/// one `?` among the day fields, so the fields carry over as written; the
/// seconds must be `0`, since EventBridge fires on whole minutes.
pub fn to_eventbridge(expression: &str) -> Result<String, CronError> {
    Cron::parse(expression)?;
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields[0] != "0" {
        return Err(CronError::SubMinute(fields[0].to_owned()));
    }
    let year = fields.get(6).copied().unwrap_or("*");
    Ok(format!("cron({} {} {} {} {} {year})", fields[1], fields[2], fields[3], fields[4], fields[5]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quartz_becomes_eventbridge_cron_on_whole_minutes() {
        assert_eq!(to_eventbridge("0 */15 * * * ?").unwrap(), "cron(*/15 * * * ? *)");
        assert_eq!(to_eventbridge("0 30 9 ? * MON-FRI 2027").unwrap(), "cron(30 9 ? * MON-FRI 2027)");
        assert_eq!(to_eventbridge("0 0 12 L * ?").unwrap(), "cron(0 12 L * ? *)");
        assert!(matches!(to_eventbridge("*/5 * * * * ?"), Err(CronError::SubMinute(s)) if s == "*/5"));
        assert!(to_eventbridge("30 0 12 * * ?").unwrap_err().to_string().contains("whole minutes"));
        assert!(matches!(to_eventbridge("0 0 12 * * *"), Err(CronError::DayQuestionMark)));
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn next(expression: &str, zone: &str, after: &str) -> String {
        CronSchedule::new(expression, zone).unwrap().next_after(at(after)).map(|t| t.to_string()).unwrap_or_default()
    }

    #[test]
    fn every_five_seconds() {
        assert_eq!(next("*/5 * * * * ?", "UTC", "2026-01-01T00:00:03Z"), "2026-01-01T00:00:05Z");
        assert_eq!(next("*/5 * * * * ?", "UTC", "2026-01-01T00:00:05Z"), "2026-01-01T00:00:10Z");
        assert_eq!(next("*/5 * * * * ?", "UTC", "2026-01-01T23:59:58Z"), "2026-01-02T00:00:00Z");
    }

    #[test]
    fn airbyte_style_daily_and_weekly_schedules() {
        // Every day at 12:00 in Paris (UTC+1 in winter).
        assert_eq!(next("0 0 12 * * ?", "Europe/Paris", "2026-01-15T12:00:00Z"), "2026-01-16T11:00:00Z");
        // Mondays to Fridays at 09:30 UTC; 2026-01-16 is a Friday.
        assert_eq!(next("0 30 9 ? * MON-FRI", "UTC", "2026-01-16T10:00:00Z"), "2026-01-19T09:30:00Z");
        // Quartz counts days of the week from Sunday = 1.
        assert_eq!(next("0 0 0 ? * 1", "UTC", "2026-01-15T00:00:00Z"), "2026-01-18T00:00:00Z");
        // The last day of the month, and a year field.
        assert_eq!(next("0 0 6 L * ?", "UTC", "2026-02-03T00:00:00Z"), "2026-02-28T06:00:00Z");
        assert_eq!(next("0 0 0 1 1 ? 2027", "UTC", "2026-05-01T00:00:00Z"), "2027-01-01T00:00:00Z");
        assert_eq!(next("0 0 0 1 1 ? 2025", "UTC", "2026-05-01T00:00:00Z"), "");
    }

    #[test]
    fn daylight_saving_gaps_fire_after_the_gap() {
        // 2026-03-29 02:30 does not exist in Paris; it fires at 03:30 local (01:30 UTC).
        assert_eq!(next("0 30 2 * * ?", "Europe/Paris", "2026-03-29T00:00:00Z"), "2026-03-29T01:30:00Z");
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        let err = |e: &str| Cron::parse(e).unwrap_err().to_string();
        assert!(err("* * * * *").contains("6 or 7 fields"));
        assert!(err("0 0 12 * * *").contains("exactly one of day-of-month and day-of-week"));
        assert_eq!(err("0 61 * * * ?"), "minutes field `61`: `61` is not in 0-59");
        assert_eq!(err("0 0 12 ? * MON#2"), "day-of-week field `MON#2`: `L`, `W` and `#` are only supported as `L` in day-of-month");
        assert_eq!(err("0 0 12 ? * FRI-MON"), "day-of-week field `FRI-MON`: range 6-2 runs backwards");
        assert_eq!(err("*/0 * * * * ?"), "seconds field `*/0`: step `0` is not a positive number");
        assert!(CronSchedule::new("0 0 12 * * ?", "Mars/Olympus").unwrap_err().to_string().contains("unknown time zone"));
    }

    #[test]
    fn whole_minute_schedules_are_recognised() {
        assert!(CronSchedule::new("0 */5 * * * ?", "UTC").unwrap().fires_on_whole_minutes());
        assert!(!CronSchedule::new("*/5 * * * * ?", "UTC").unwrap().fires_on_whole_minutes());
    }
}
