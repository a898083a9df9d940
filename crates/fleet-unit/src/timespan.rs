//! systemd time spans (`systemd.time(7)`): `5`, `5s`, `1min 30s`, `1.5h`, `100ms`, `infinity`.

use std::fmt;
use std::time::Duration;

/// A parsed time span; `None` is `infinity`.
pub type Timespan = Option<Duration>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidTimespan(pub String);

impl fmt::Display for InvalidTimespan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid time span {:?}", self.0)
    }
}

impl std::error::Error for InvalidTimespan {}

/// Units and their length in nanoseconds, longest names first so `min` wins over `m`, `ms`
/// over `m`, and `months` over `m`.
const UNITS: &[(&str, u64)] = &[
    ("seconds", SEC),
    ("second", SEC),
    ("minutes", MIN),
    ("minute", MIN),
    ("months", MONTH),
    ("month", MONTH),
    ("hours", HOUR),
    ("hour", HOUR),
    ("weeks", WEEK),
    ("week", WEEK),
    ("years", YEAR),
    ("year", YEAR),
    ("days", DAY),
    ("day", DAY),
    ("usec", 1_000),
    ("msec", 1_000_000),
    ("nsec", 1),
    ("sec", SEC),
    ("min", MIN),
    ("hr", HOUR),
    ("us", 1_000),
    ("µs", 1_000),
    ("ms", 1_000_000),
    ("ns", 1),
    ("s", SEC),
    ("m", MIN),
    ("h", HOUR),
    ("d", DAY),
    ("w", WEEK),
    ("M", MONTH),
    ("y", YEAR),
];
const SEC: u64 = 1_000_000_000;
const MIN: u64 = 60 * SEC;
const HOUR: u64 = 60 * MIN;
const DAY: u64 = 24 * HOUR;
const WEEK: u64 = 7 * DAY;
/// systemd's month and year: 30.44 and 365.25 days.
const MONTH: u64 = 2_629_800 * SEC;
const YEAR: u64 = 31_557_600 * SEC;

/// Parses a time span; a bare number is in `default_unit` (seconds for most options).
pub fn parse_timespan(text: &str, default_unit: Duration) -> Result<Timespan, InvalidTimespan> {
    let invalid = || InvalidTimespan(text.to_owned());
    let trimmed = text.trim();
    if trimmed == "infinity" {
        return Ok(None);
    }
    if trimmed.is_empty() {
        return Err(invalid());
    }
    let mut rest = trimmed;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_end];
        if number.is_empty() || number.starts_with('.') && number.len() == 1 {
            return Err(invalid());
        }
        rest = rest[number_end..].trim_start();
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_end];
        let nanos = match unit {
            "" => default_unit.as_nanos(),
            _ => match UNITS.iter().find(|(name, _)| *name == unit) {
                Some((_, nanos)) => u128::from(*nanos),
                None => return Err(invalid()),
            },
        };
        rest = rest[unit_end..].trim_start();
        total += scaled(number, nanos).ok_or_else(invalid)?;
    }
    let nanos = u64::try_from(total).map_err(|_| invalid())?;
    Ok(Some(Duration::from_nanos(nanos)))
}

/// `number` (decimal, maybe with a fraction) times `nanos`, exactly.
fn scaled(number: &str, nanos: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if fraction.contains('.') || whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().ok()?
    };
    let mut value = whole.checked_mul(nanos)?;
    let mut scale = nanos;
    for digit in fraction.chars().take(9) {
        scale /= 10;
        value += u128::from(digit.to_digit(10)?) * scale;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, expected: Result<Option<u64>, ()>) {
        let parsed = parse_timespan(text, Duration::from_secs(1));
        let parsed = parsed
            .map(|t| t.map(|d| d.as_millis() as u64))
            .map_err(|_| ());
        assert_eq!(parsed, expected, "{text:?}");
    }

    #[test]
    fn time_spans() {
        let rows: &[(&str, Result<Option<u64>, ()>)] = &[
            ("5", Ok(Some(5_000))),
            ("5s", Ok(Some(5_000))),
            (" 90 ", Ok(Some(90_000))),
            ("1min 30s", Ok(Some(90_000))),
            ("1min30s", Ok(Some(90_000))),
            ("2m", Ok(Some(120_000))),
            ("100ms", Ok(Some(100))),
            ("1.5s", Ok(Some(1_500))),
            ("0.25h", Ok(Some(900_000))),
            ("1h 2min 3s 4ms", Ok(Some(3_723_004))),
            ("2 hours", Ok(Some(7_200_000))),
            ("1d", Ok(Some(86_400_000))),
            ("1w", Ok(Some(604_800_000))),
            ("0", Ok(Some(0))),
            ("infinity", Ok(None)),
            ("", Err(())),
            ("s", Err(())),
            ("5 parsecs", Err(())),
            ("-5s", Err(())),
            ("1..5s", Err(())),
            ("5s 3x", Err(())),
        ];
        for (text, expected) in rows {
            check(text, *expected);
        }
    }

    #[test]
    fn a_bare_number_takes_the_default_unit() {
        let parsed = parse_timespan("3", Duration::from_millis(1)).unwrap();
        assert_eq!(parsed, Some(Duration::from_millis(3)));
    }
}
