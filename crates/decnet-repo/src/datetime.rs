//! [`DbTime`]: a datetime as DECNET stores it and as its API renders it.
//!
//! DECNET's `DateTime` columns are naive: writers pass UTC and the drivers drop
//! the zone (DECNET.md §2.4). A few values are written by raw SQL as aware ISO
//! strings (`...+00:00`), which SQLAlchemy reads back as aware. Pydantic's JSON
//! mode then renders a naive value as `YYYY-MM-DDTHH:MM:SS[.ffffff]` (the
//! fraction only when non-zero) and an aware UTC value with a trailing `Z`.
//! [`DbTime`] keeps the instant (UTC) and whether it was aware, so every
//! backend renders it the way DECNET's API does.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Serialize, Serializer};
use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};

/// A datetime read from DECNET's database: a UTC wall-clock time with
/// microsecond precision, and whether the stored value carried a zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DbTime {
    utc: PrimitiveDateTime,
    aware: bool,
}

/// A datetime text that [`DbTime::parse`] cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an ISO datetime: {0:?}")]
pub struct DbTimeError(pub String);

impl DbTime {
    /// A naive value (no zone), taken as UTC.
    pub fn naive(utc: PrimitiveDateTime) -> DbTime {
        DbTime { utc, aware: false }
    }

    /// An aware value, already converted to UTC.
    pub fn aware(utc: PrimitiveDateTime) -> DbTime {
        DbTime { utc, aware: true }
    }

    /// A naive value from seconds and microseconds since the Unix epoch.
    ///
    /// `None` outside the years 1-9999.
    pub fn from_unix_micros(micros: i64) -> Option<DbTime> {
        let seconds = micros.div_euclid(1_000_000);
        let sub = u32::try_from(micros.rem_euclid(1_000_000)).ok()?;
        let at = time::OffsetDateTime::from_unix_timestamp(seconds).ok()?;
        let at = at.replace_microsecond(sub).ok()?;
        let utc = PrimitiveDateTime::new(at.date(), at.time());
        in_python_range(utc).then_some(DbTime::naive(utc))
    }

    /// A naive value for a [`SystemTime`] (microseconds kept).
    ///
    /// `None` outside the years 1-9999.
    pub fn from_system_time(at: SystemTime) -> Option<DbTime> {
        let micros = match at.duration_since(UNIX_EPOCH) {
            Ok(after) => i64::try_from(after.as_micros()).ok()?,
            Err(before) => i64::try_from(before.duration().as_micros())
                .ok()?
                .checked_neg()?,
        };
        DbTime::from_unix_micros(micros)
    }

    /// Microseconds since the Unix epoch.
    pub fn unix_micros(self) -> i64 {
        let at = self.utc.assume_utc();
        at.unix_timestamp()
            .saturating_mul(1_000_000)
            .saturating_add(i64::from(at.microsecond()))
    }

    /// The instant as a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        let micros = self.unix_micros();
        let magnitude = Duration::from_micros(micros.unsigned_abs());
        if micros >= 0 {
            UNIX_EPOCH.checked_add(magnitude).unwrap_or(UNIX_EPOCH)
        } else {
            UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
        }
    }

    /// The UTC wall-clock value.
    pub fn utc(self) -> PrimitiveDateTime {
        self.utc
    }

    /// Whether the stored value carried a zone (rendered with `Z`).
    pub fn is_aware(self) -> bool {
        self.aware
    }

    /// Parse an ISO 8601 datetime as DECNET's drivers store it: `YYYY-MM-DD`,
    /// then `T` or a space, `HH:MM[:SS[.f..]]` (up to 9 fractional digits,
    /// kept to the microsecond, truncated), then optionally `Z` or `±HH:MM`
    /// (aware; converted to UTC). A date alone is midnight. Years 1-9999
    /// only, before and after the conversion (Python's `datetime`, so
    /// DECNET can neither store nor render anything else).
    ///
    /// # Errors
    ///
    /// [`DbTimeError`] for anything else.
    pub fn parse(text: &str) -> Result<DbTime, DbTimeError> {
        parse(text.trim())
            .filter(|at| in_python_range(at.utc))
            .ok_or_else(|| DbTimeError(text.to_owned()))
    }

    /// `YYYY-MM-DD HH:MM:SS` (space, no fraction, no zone): the form of
    /// DECNET's histogram bucket labels and the dashboard's `start_time`.
    pub fn to_sql_seconds(self) -> String {
        let (date, time) = (self.utc.date(), self.utc.time());
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            date.year(),
            u8::from(date.month()),
            date.day(),
            time.hour(),
            time.minute(),
            time.second()
        )
    }
}

impl fmt::Display for DbTime {
    /// Pydantic's JSON rendering: `YYYY-MM-DDTHH:MM:SS`, `.ffffff` when the
    /// microseconds are non-zero, `Z` when aware.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (date, time) = (self.utc.date(), self.utc.time());
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            date.year(),
            u8::from(date.month()),
            date.day(),
            time.hour(),
            time.minute(),
            time.second()
        )?;
        if time.microsecond() != 0 {
            write!(f, ".{:06}", time.microsecond())?;
        }
        if self.aware {
            f.write_str("Z")?;
        }
        Ok(())
    }
}

impl Serialize for DbTime {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Whether `at` is within Python's `datetime` (years 1-9999).
fn in_python_range(at: PrimitiveDateTime) -> bool {
    (1..=9999).contains(&at.year())
}

fn digits(text: &str, n: usize) -> Option<(u32, &str)> {
    let head = text.get(..n)?;
    if !head.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((head.parse().ok()?, &text[n..]))
}

fn expect(text: &str, c: char) -> Option<&str> {
    text.strip_prefix(c)
}

fn parse(text: &str) -> Option<DbTime> {
    let (year, rest) = digits(text, 4)?;
    if year == 0 {
        return None;
    }
    let (month, rest) = digits(expect(rest, '-')?, 2)?;
    let (day, rest) = digits(expect(rest, '-')?, 2)?;
    let date = Date::from_calendar_date(
        i32::try_from(year).ok()?,
        Month::try_from(u8::try_from(month).ok()?).ok()?,
        u8::try_from(day).ok()?,
    )
    .ok()?;
    if rest.is_empty() {
        return Some(DbTime::naive(PrimitiveDateTime::new(date, Time::MIDNIGHT)));
    }
    let rest = rest.strip_prefix(['T', ' '])?;
    let (hour, rest) = digits(rest, 2)?;
    let (minute, mut rest) = digits(expect(rest, ':')?, 2)?;
    let mut second = 0;
    let mut micro = 0;
    if let Some(after) = rest.strip_prefix(':') {
        let (s, after) = digits(after, 2)?;
        second = s;
        rest = after;
        if let Some(fraction) = rest.strip_prefix('.') {
            let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
            if len == 0 || len > 9 {
                return None;
            }
            let kept = &fraction[..len.min(6)];
            micro = kept.parse::<u32>().ok()? * 10u32.pow(6 - u32::try_from(kept.len()).ok()?);
            rest = &fraction[len..];
        }
    }
    let time = Time::from_hms_micro(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
        micro,
    )
    .ok()?;
    let local = PrimitiveDateTime::new(date, time);
    if rest.is_empty() {
        return Some(DbTime::naive(local));
    }
    let offset = if rest == "Z" || rest == "z" {
        UtcOffset::UTC
    } else {
        let sign: i8 = match rest.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (oh, after) = digits(&rest[1..], 2)?;
        let after = after.strip_prefix(':').unwrap_or(after);
        let (om, after) = digits(after, 2)?;
        if !after.is_empty() {
            return None;
        }
        let oh = i8::try_from(oh).ok()?;
        let om = i8::try_from(om).ok()?;
        UtcOffset::from_hms(sign * oh, sign * om, 0).ok()?
    };
    // Checked: `9999-12-31T23:59-01:00` is past the last representable date
    // in UTC (`to_offset` would panic).
    let utc = local
        .assume_offset(offset)
        .checked_to_offset(UtcOffset::UTC)?;
    Some(DbTime::aware(PrimitiveDateTime::new(
        utc.date(),
        utc.time(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str) -> String {
        DbTime::parse(text)
            .unwrap_or_else(|e| panic!("{e}"))
            .to_string()
    }

    #[test]
    fn sqlite_orm_form_is_naive() {
        assert_eq!(
            render("2026-06-20 12:00:00.123456"),
            "2026-06-20T12:00:00.123456"
        );
        assert_eq!(render("2026-06-20 12:00:00.000000"), "2026-06-20T12:00:00");
        assert_eq!(render("2026-06-20 12:00:00"), "2026-06-20T12:00:00");
        assert_eq!(render("2026-06-20T12:00"), "2026-06-20T12:00:00");
        assert_eq!(render("2026-06-20"), "2026-06-20T00:00:00");
    }

    #[test]
    fn raw_sql_iso_form_is_aware_utc() {
        assert_eq!(
            render("2026-06-20T12:00:05.654321+00:00"),
            "2026-06-20T12:00:05.654321Z"
        );
        assert_eq!(render("2026-06-20T14:00:05+02:00"), "2026-06-20T12:00:05Z");
        assert_eq!(render("2026-06-20T12:00:05Z"), "2026-06-20T12:00:05Z");
    }

    #[test]
    fn fractions_are_truncated_to_microseconds() {
        assert_eq!(
            render("2026-06-20 12:00:00.5"),
            "2026-06-20T12:00:00.500000"
        );
        assert_eq!(
            render("2026-06-20 12:00:00.123456789"),
            "2026-06-20T12:00:00.123456"
        );
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "",
            "2026-6-20",
            "2026-13-01 00:00:00",
            "2026-02-30",
            "2026-06-20 25:00:00",
            "2026-06-20 12:00:00.",
            "2026-06-20 12:00:00+5",
            "2026-06-20X12:00",
            "today",
            "9999-12-31T23:59:59-23:59",
            "9999-12-31 23:00-01:00",
            "0000-06-01",
            "0000-12-31T23:00-01:00",
            "0001-01-01T00:00+00:01",
        ] {
            assert!(DbTime::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn unix_round_trip() {
        let t = DbTime::parse("2026-06-20 12:00:00.000001").expect("parse");
        let back = DbTime::from_unix_micros(t.unix_micros()).expect("in range");
        assert_eq!(back, t);
        assert_eq!(t.to_sql_seconds(), "2026-06-20 12:00:00");
        let sys = t.to_system_time();
        assert_eq!(DbTime::from_system_time(sys), Some(t));
        assert_eq!(DbTime::from_unix_micros(i64::MAX), None);
        // Year 0 and before are outside Python's datetime.
        let first = DbTime::parse("0001-01-01").expect("year 1");
        assert_eq!(DbTime::from_unix_micros(first.unix_micros()), Some(first));
        assert_eq!(DbTime::from_unix_micros(first.unix_micros() - 1), None);
    }
}
