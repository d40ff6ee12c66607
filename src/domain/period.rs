//! Durations as people write them in config and GraphQL: `90s`, `15M`, `1h`, `30D`, `1W`, or
//! ISO 8601 (`PT12H`, `P1DT6H`, `P2W`).
//!
//! Units are case-insensitive: `m` is always minutes (months and years have no fixed length, so
//! they are refused). Values are whole seconds, at least one, and at most 100 years so that every
//! `iat + period` fits comfortably in the 32-bit `exp` that constrained devices parse.

use std::fmt;
use std::str::FromStr;

/// The longest period accepted anywhere: 100 years.
pub const MAX_SECONDS: u64 = 100 * 365 * 86_400;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Period(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a duration: {reason}; write a number and a unit (s, m, h, d, w), like \"1h\" or \"30D\", or ISO 8601 like \"PT12H\""
)]
pub struct InvalidPeriod {
    input: String,
    reason: &'static str,
}

impl Period {
    pub const fn from_secs(secs: u64) -> Self {
        Period(secs)
    }

    pub fn as_secs(self) -> u64 {
        self.0
    }

    /// Seconds as the signed type used for Unix times; never overflows because of `MAX_SECONDS`.
    pub fn as_secs_i64(self) -> i64 {
        self.0 as i64
    }

    pub fn parse(input: &str) -> Result<Self, InvalidPeriod> {
        let fail = |reason| InvalidPeriod {
            input: input.chars().take(40).collect(),
            reason,
        };
        let trimmed = input.trim();
        let secs = if let Some(iso) = trimmed
            .strip_prefix('P')
            .or_else(|| trimmed.strip_prefix('p'))
        {
            parse_iso8601(iso).map_err(fail)?
        } else {
            parse_short(trimmed).map_err(fail)?
        };
        if secs == 0 {
            return Err(fail("it must be longer than zero"));
        }
        if secs > MAX_SECONDS {
            return Err(fail("it is longer than 100 years"));
        }
        Ok(Period(secs))
    }
}

fn unit_seconds(unit: char) -> Option<u64> {
    match unit.to_ascii_lowercase() {
        's' => Some(1),
        'm' => Some(60),
        'h' => Some(3_600),
        'd' => Some(86_400),
        'w' => Some(604_800),
        _ => None,
    }
}

fn parse_short(input: &str) -> Result<u64, &'static str> {
    let unit = input.chars().last().ok_or("it is empty")?;
    let number = &input[..input.len() - unit.len_utf8()];
    let per_unit = unit_seconds(unit).ok_or("the unit is missing or unknown")?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err("the amount must be a whole number");
    }
    let n: u64 = number.parse().map_err(|_| "the amount is too large")?;
    n.checked_mul(per_unit).ok_or("the amount is too large")
}

/// `P[nW][nD][T[nH][nM][nS]]` with whole numbers; at least one component.
fn parse_iso8601(rest: &str) -> Result<u64, &'static str> {
    let mut total: u64 = 0;
    let mut in_time = false;
    let mut digits = String::new();
    let mut components = 0;
    let mut components_before_time = 0;
    for c in rest.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        if c == 'T' || c == 't' {
            if in_time || !digits.is_empty() {
                return Err("the ISO 8601 form is malformed");
            }
            in_time = true;
            components_before_time = components;
            continue;
        }
        let per_unit = match (in_time, c.to_ascii_uppercase()) {
            (false, 'W') => 604_800,
            (false, 'D') => 86_400,
            (true, 'H') => 3_600,
            (true, 'M') => 60,
            (true, 'S') => 1,
            (false, 'Y' | 'M') => return Err("years and months have no fixed length"),
            _ => return Err("the ISO 8601 form is malformed"),
        };
        if digits.is_empty() {
            return Err("the ISO 8601 form is malformed");
        }
        let n: u64 = digits.parse().map_err(|_| "the amount is too large")?;
        digits.clear();
        total = n
            .checked_mul(per_unit)
            .and_then(|s| total.checked_add(s))
            .ok_or("the amount is too large")?;
        components += 1;
    }
    // A `T` must be followed by at least one time component.
    let empty_time = in_time && components == components_before_time;
    if !digits.is_empty() || components == 0 || empty_time {
        return Err("the ISO 8601 form is malformed");
    }
    Ok(total)
}

impl FromStr for Period {
    type Err = InvalidPeriod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Period::parse(s)
    }
}

impl fmt::Display for Period {
    /// The shortest exact short form: `90D`, `10m`, `1h`, `45s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.is_multiple_of(86_400) {
            write!(f, "{}D", s / 86_400)
        } else if s.is_multiple_of(3_600) {
            write!(f, "{}h", s / 3_600)
        } else if s.is_multiple_of(60) {
            write!(f, "{}m", s / 60)
        } else {
            write!(f, "{s}s")
        }
    }
}

impl serde::Serialize for Period {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Period {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Period::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_short_forms_case_insensitively() {
        assert_eq!(Period::parse("1h").unwrap().as_secs(), 3_600);
        assert_eq!(Period::parse("30D").unwrap().as_secs(), 30 * 86_400);
        assert_eq!(Period::parse("15M").unwrap().as_secs(), 900);
        assert_eq!(Period::parse("10m").unwrap().as_secs(), 600);
        assert_eq!(Period::parse("1W").unwrap().as_secs(), 604_800);
        assert_eq!(Period::parse("45s").unwrap().as_secs(), 45);
    }

    #[test]
    fn parses_iso8601() {
        assert_eq!(Period::parse("PT12H").unwrap().as_secs(), 43_200);
        assert_eq!(Period::parse("P1DT6H").unwrap().as_secs(), 108_000);
        assert_eq!(Period::parse("P2W").unwrap().as_secs(), 1_209_600);
        assert_eq!(Period::parse("PT1M30S").unwrap().as_secs(), 90);
    }

    #[test]
    fn refuses_nonsense_without_panicking() {
        for bad in [
            "",
            "h",
            "1",
            "1x",
            "-1h",
            "1.5h",
            "0s",
            "P",
            "PT",
            "P1M",
            "P1Y",
            "PT1D",
            "P1H",
            "99999999999999999999D",
            "18446744073709551615W",
            "101000D",
            "1ĥ",
            "P1DT",
            "PT5",
        ] {
            assert!(Period::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn displays_the_shortest_exact_form() {
        assert_eq!(Period::parse("PT24H").unwrap().to_string(), "1D");
        assert_eq!(Period::parse("90m").unwrap().to_string(), "90m");
        assert_eq!(Period::parse("120m").unwrap().to_string(), "2h");
    }
}
