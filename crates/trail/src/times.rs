//! The time formats of CloudTrail's files and paths (UTC).

use time::OffsetDateTime;

fn utc(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `2026-11-29T05:00:00Z`: event times, digest start and end times.
#[must_use]
pub fn iso(ms: i64) -> String {
    let t = utc(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// `2026/11/29`: the day folder of a file.
pub(crate) fn day_path(ms: i64) -> String {
    let t = utc(ms);
    format!("{:04}/{:02}/{:02}", t.year(), u8::from(t.month()), t.day())
}

/// `20261129T0500Z`: a log file's delivery minute.
pub(crate) fn compact_minute(ms: i64) -> String {
    let t = utc(ms);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// `20261129T050000Z`: a digest file's time.
pub(crate) fn compact_second(ms: i64) -> String {
    let t = utc(ms);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// The ms of an ISO 8601 UTC time as CloudTrail writes them (`2026-11-29T05:00:00Z`,
/// fractions ignored).
#[must_use]
pub fn parse_iso(s: &str) -> Option<i64> {
    let d: Vec<u32> = s
        .split(|c: char| !c.is_ascii_digit())
        .filter(|x| !x.is_empty())
        .take(6)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let [y, mo, da, h, mi, se] = d.as_slice() else {
        return None;
    };
    let month = time::Month::try_from(u8::try_from(*mo).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(*y).ok()?, month, u8::try_from(*da).ok()?)
            .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(*h).ok()?,
        u8::try_from(*mi).ok()?,
        u8::try_from(*se).ok()?,
    )
    .ok()?;
    Some(date.with_time(t).assume_utc().unix_timestamp() * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let ms = 1_795_928_405_000; // 2026-11-29T05:00:05Z
        assert_eq!(iso(ms), "2026-11-29T05:00:05Z");
        assert_eq!(day_path(ms), "2026/11/29");
        assert_eq!(compact_minute(ms), "20261129T0500Z");
        assert_eq!(compact_second(ms), "20261129T050005Z");
        assert_eq!(parse_iso("2026-11-29T05:00:05Z"), Some(ms));
        assert_eq!(parse_iso("2026-13-29T05:00:05Z"), None);
        assert_eq!(parse_iso("nonsense"), None);
    }
}
