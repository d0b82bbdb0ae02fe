//! Durations and sizes as people write them in policies and on the command
//! line: `30s`, `500ms`, `2m`, `1h`; `64MiB`, `1GiB`, `512KiB`, `4096`.

use std::time::Duration;

/// The longest duration medic takes anywhere: longer ones are refused by
/// the parser, so that no deadline or window computed from one can
/// overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parse `500ms`, `30s`, `2m`, `1h` (a bare number is seconds), at most
/// [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let too_long = || format!("`{text}` is longer than the longest duration medic takes, 366 days");
    let value: u64 = number.parse().map_err(|e: std::num::ParseIntError| {
        if number.is_empty() || !matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
            format!("`{text}` is not a duration; write e.g. 500ms, 30s, 2m or 1h")
        } else {
            too_long()
        }
    })?;
    let millis_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}`; use ms, s, m or h"
            ));
        }
    };
    let duration = value
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(too_long)?;
    Ok(duration)
}

/// The largest size medic takes anywhere (1 TiB): larger ones are refused
/// by the parser, whatever the caller's own, narrower limit, so that no
/// size can overflow what is computed from it.
pub const MAX_SIZE: u64 = 1 << 40;

/// Parse `64MiB`, `1GiB`, `512KiB`, `64MB` (taken as MiB) or a byte count,
/// at most [`MAX_SIZE`] (and what this machine can address).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let too_large = || format!("`{text}` is larger than the largest size medic takes, 1 TiB");
    let value: u64 = number.parse().map_err(|e: std::num::ParseIntError| {
        if number.is_empty() || !matches!(e.kind(), std::num::IntErrorKind::PosOverflow) {
            format!("`{text}` is not a size; write e.g. 64MiB or 1GiB")
        } else {
            too_large()
        }
    })?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "K" | "KB" | "KiB" => 10,
        "M" | "MB" | "MiB" => 20,
        "G" | "GB" | "GiB" => 30,
        other => {
            return Err(format!(
                "`{text}`: unknown unit `{other}`; use KiB, MiB or GiB"
            ));
        }
    };
    value
        .checked_mul(1 << shift)
        .filter(|bytes| *bytes <= MAX_SIZE)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(too_large)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").unwrap_err().contains("unknown unit"));
        assert_eq!(
            parse_duration("366d").unwrap_err(),
            "`366d`: unknown unit `d`; use ms, s, m or h"
        );
        for long in [
            "9999999999999999h",
            "18446744073709551615ms",
            "99999999999999999999999s",
            "8785h",
        ] {
            let error = parse_duration(long).unwrap_err();
            assert!(error.contains("366 days"), "{long}: {error}");
        }
        assert_eq!(parse_duration("8784h"), Ok(MAX_DURATION));
    }

    #[test]
    fn no_text_panics_the_parsers() {
        let pieces = [
            "",
            "0",
            "9",
            "18446744073709551615",
            "99999999999999999999",
            "ms",
            "s",
            "m",
            "h",
            "KiB",
            "GiB",
            " ",
            "-",
            "é",
            "\u{0}",
        ];
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let text = format!("{a}{b}{c}");
                    let _ = parse_duration(&text);
                    let _ = parse_size(&text);
                }
            }
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1TiB").is_err());
        assert_eq!(parse_size("1024GiB"), Ok(1 << 40));
        for large in [
            "1025GiB",
            "1099511627777",
            "18446744073709551615",
            "18446744073709551616",
            "17179869184GiB",
            "99999999999999999999999KiB",
        ] {
            let error = parse_size(large).unwrap_err();
            assert!(error.contains("1 TiB"), "{large}: {error}");
        }
        assert!(parse_size("").unwrap_err().contains("not a size"));
        assert!(parse_size("-1").unwrap_err().contains("not a size"));
    }
}
