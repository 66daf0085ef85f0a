//! Durations as Go writes and reads them (`1.5s`, `200ms`, `2m0s`).
//!
//! Go peers compare error texts such as
//! `rpc server: request handle timeout: expect within 1s`, so the formatting
//! follows Go's `time.Duration.String` exactly.

use std::fmt;
use std::time::Duration;

/// Formats a [`Duration`] the way Go's `time.Duration.String` does.
///
/// ```
/// use geerpc::duration::GoDuration;
/// use std::time::Duration;
/// assert_eq!(GoDuration(Duration::from_secs(1)).to_string(), "1s");
/// assert_eq!(GoDuration(Duration::from_millis(200)).to_string(), "200ms");
/// assert_eq!(GoDuration(Duration::from_secs(120)).to_string(), "2m0s");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GoDuration(pub Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < 1_000 {
            return write!(f, "{nanos}ns");
        }
        if nanos < 1_000_000 {
            return write_fraction(f, nanos, 1_000, "µs");
        }
        if nanos < 1_000_000_000 {
            return write_fraction(f, nanos, 1_000_000, "ms");
        }
        let total_secs = nanos / 1_000_000_000;
        let frac = nanos % 1_000_000_000;
        let hours = total_secs / 3600;
        let minutes = (total_secs % 3600) / 60;
        let secs = total_secs % 60;
        if hours > 0 {
            write!(f, "{hours}h{minutes}m")?;
        } else if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write_fraction(f, secs * 1_000_000_000 + frac, 1_000_000_000, "s")
    }
}

/// Writes `value / unit` with the fraction's trailing zeros removed.
fn write_fraction(
    f: &mut fmt::Formatter<'_>,
    value: u128,
    unit: u128,
    suffix: &str,
) -> fmt::Result {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return write!(f, "{whole}{suffix}");
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    write!(f, "{whole}.{}{suffix}", digits.trim_end_matches('0'))
}

/// Parses a duration such as `2s`, `500ms`, `5m`, `1h30m` or `1.5s`.
///
/// Units: `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`. A bare `0` is zero.
///
/// ```
/// use geerpc::duration::parse_duration;
/// use std::time::Duration;
/// assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
/// assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
/// assert!(parse_duration("5 parsecs").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".to_string());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {text:?}"))?;
        if num_len == 0 {
            return Err(format!("invalid duration {text:?}"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("invalid number in duration {text:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per_unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            other => return Err(format!("unknown unit {other:?} in duration {text:?}")),
        };
        total += value * nanos_per_unit;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return Err(format!("duration {text:?} out of range"));
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(15), "15ns"),
            (Duration::from_nanos(1_500), "1.5µs"),
            (Duration::from_micros(1_234), "1.234ms"),
            (Duration::from_millis(100), "100ms"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(3_661), "1h1m1s"),
            (Duration::from_millis(61_250), "1m1.25s"),
        ];
        for (d, want) in cases {
            assert_eq!(GoDuration(d).to_string(), want, "{d:?}");
        }
    }

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        for bad in ["", "s", "5", "5x", "-1s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }
}
