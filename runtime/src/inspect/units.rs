//! Sizes, durations and wall times for people, and durations from them.

use std::time::Duration;

/// `512 B`, `64.0 KiB`, `1.2 MiB`, `3.0 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `850 µs`, `12.3 ms`, `4.50 s`.
pub fn micros(us: u64) -> String {
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.1} ms", us as f64 / 1e3)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// `2026-11-23 04:36:59.123` (UTC), for tables.
pub fn wall_time(unix_ms: u64) -> String {
    timestamp(unix_ms, "%Y-%m-%d %H:%M:%S%.3f")
}

/// `2026-11-23T04:36:59.123Z` (RFC 3339, UTC), for JSON.
pub fn rfc3339(unix_ms: u64) -> String {
    timestamp(unix_ms, "%Y-%m-%dT%H:%M:%S%.3fZ")
}

fn timestamp(unix_ms: u64, format: &str) -> String {
    i64::try_from(unix_ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || format!("{unix_ms} ms after 1970"),
            |t| t.format(format).to_string(),
        )
}

/// Parses `90s`, `10m`, `2h`, `1d` or `0` (seconds without a unit are
/// refused, so `--grace 10` is not silently ten seconds).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let seconds: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "`{text}` is not a duration: write a number and a unit, s, m, h or d (e.g. 10m)"
            ));
        }
    };
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds))
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}` is not a duration: write a number and a unit (e.g. 10m)"))
}

/// `10m`, `90s`, `0s`: a duration as [`parse_duration`] reads it.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => "0s".to_owned(),
        _ if s.is_multiple_of(86400) => format!("{}d", s / 86400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_times_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(65536), "64.0 KiB");
        assert_eq!(bytes(1_179_648), "1.1 MiB");
        assert_eq!(micros(850), "850 µs");
        assert_eq!(micros(12_345), "12.3 ms");
        assert_eq!(micros(4_500_000), "4.50 s");
        assert_eq!(wall_time(1_763_856_000_123), "2025-11-23 00:00:00.123");
        assert_eq!(rfc3339(1_763_856_000_123), "2025-11-23T00:00:00.123Z");
    }

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("10").is_err_and(|e| e.contains("unit")));
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert_eq!(duration(Duration::from_secs(600)), "10m");
        assert_eq!(duration(Duration::from_secs(90)), "90s");
    }
}
