//! UTC timestamps in RFC 3339, without a calendar library: the protocol's
//! cursors and our log lines need only the proleptic Gregorian calendar.

/// `YYYY-MM-DDTHH:MM:SS+00:00` for seconds since the Unix epoch.
pub fn format_utc(secs: i64) -> String {
    let (y, m, d, hh, mm, ss) = split(secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}+00:00")
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the Unix epoch.
pub fn format_utc_millis(ms: i64) -> String {
    let (y, m, d, hh, mm, ss) = split(ms.div_euclid(1000));
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{:03}Z", ms.rem_euclid(1000))
}

/// `YYYYMMDDTHHMMSSZ` (ISO 8601 basic format), as AWS's SigV4 dates it.
pub fn format_utc_basic(secs: i64) -> String {
    let (y, m, d, hh, mm, ss) = split(secs);
    format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z")
}

/// Seconds since the epoch of a `YYYY-MM-DDTHH:MM:SS` prefix (any zone suffix is taken as UTC).
pub fn parse_utc(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let days = days_from_civil(num(0..4)?, num(5..7)?, num(8..10)?);
    Some(days * 86_400 + num(11..13)? * 3600 + num(14..16)? * 60 + num(17..19)?)
}

fn split(secs: i64) -> (i64, i64, i64, i64, i64, i64) {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    (y, m, d, rem / 3600, rem % 3600 / 60, rem % 60)
}

// Howard Hinnant's civil-calendar algorithms.
pub(crate) fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip() {
        for secs in [0, 1_577_836_800, 1_577_836_800 + 86_399, 951_782_400 /* 2000-02-29 */, 4_102_444_800, -86_400] {
            assert_eq!(parse_utc(&format_utc(secs)), Some(secs), "{}", format_utc(secs));
        }
        assert_eq!(format_utc(1_577_836_800), "2020-01-01T00:00:00+00:00");
        assert_eq!(format_utc_millis(1_577_836_800_123), "2020-01-01T00:00:00.123Z");
        assert_eq!(parse_utc("2020-01-01"), None);
    }
}
