//! The duration spellings found in client-go's TOML, and serde adapters for each.
//!
//! client-go types its timing knobs four different ways, and a file written for it spells each
//! one differently. Every Rust field is a [`Duration`]; the adapter on the field decides the TOML
//! form, so a client-go file loads unchanged:
//!
//! | adapter | Go field type | TOML form |
//! |---|---|---|
//! | [`secs`] | `uint` seconds | integer seconds (`600`) |
//! | [`millis`] | `uint64` milliseconds | integer milliseconds (`3600000`) |
//! | [`secs_f64`] | `float64` seconds | float or integer seconds (`3.0`, `0.05`, `3`) |
//! | [`go_string`] | `string` parsed as a Go duration | Go duration string (`"41s"`) |
//! | [`go_duration`] | `time.Duration` | Go duration string (`"2s"`) or integer nanoseconds |
//!
//! The last row follows BurntSushi/toml (the decoder TiDB uses for client-go's structs): it reads
//! a `time.Duration` from either a string or an integer of nanoseconds, and writes the string.

use std::fmt;
use std::time::Duration;

use crate::{Error, Result};

/// The largest value of Go's `time.Duration`, an `int64` count of nanoseconds.
pub(crate) const GO_DURATION_MAX: Duration = Duration::new(9_223_372_036, 854_775_807);

const NANOS_PER_SEC: u128 = 1_000_000_000;
const GO_DURATION_MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a Go duration string (`"1h30m"`, `"41s"`, `".5ms"`, `"0"`) as `time.ParseDuration`
/// does. Negative durations are refused: no knob in this crate has a meaning for them.
pub(crate) fn parse_go_duration(input: &str) -> std::result::Result<Duration, String> {
    let invalid = |why: &str| {
        format!(
            "invalid Go duration {input:?}: {why} (expected a sequence of number+unit such as \
             \"41s\", \"500ms\" or \"1h30m\"; units: ns, us, ms, s, m, h)"
        )
    };
    let (negative, mut rest) = match input.as_bytes().first() {
        Some(b'-') => (true, &input[1..]),
        Some(b'+') => (false, &input[1..]),
        _ => (false, input),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid("empty"));
    }

    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (int_digits, after_int) = rest.split_at(int_len);
        let (frac_digits, after_number) = match after_int.strip_prefix('.') {
            Some(after_dot) => {
                let frac_len = after_dot.bytes().take_while(u8::is_ascii_digit).count();
                after_dot.split_at(frac_len)
            }
            None => ("", after_int),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(invalid("a number is missing"));
        }
        let unit_len = after_number
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(after_number.len(), |(i, _)| i);
        let (unit, after_unit) = after_number.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            // Go accepts both the micro sign (U+00B5) and the Greek mu (U+03BC).
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS_PER_SEC,
            "m" => 60 * NANOS_PER_SEC,
            "h" => 3_600 * NANOS_PER_SEC,
            "" => return Err(invalid("a unit is missing")),
            _ => return Err(invalid(&format!("unknown unit {unit:?}"))),
        };

        let overflow = || invalid("larger than Go's maximum duration (about 292 years)");
        let mut whole: u128 = 0;
        for digit in int_digits.bytes() {
            whole = whole * 10 + u128::from(digit - b'0');
            if whole > GO_DURATION_MAX_NANOS {
                return Err(overflow());
            }
        }
        // Nineteen fractional digits already resolve below a nanosecond for the hour unit; the
        // rest cannot change the result and would only risk overflow.
        let mut frac: u128 = 0;
        let mut scale: u128 = 1;
        for digit in frac_digits.bytes().take(19) {
            frac = frac * 10 + u128::from(digit - b'0');
            scale *= 10;
        }
        total = whole
            .checked_mul(unit_nanos)
            .and_then(|v| v.checked_add(frac * unit_nanos / scale))
            .and_then(|v| v.checked_add(total))
            .filter(|&v| v <= GO_DURATION_MAX_NANOS)
            .ok_or_else(overflow)?;
        rest = after_unit;
    }
    if negative && total != 0 {
        return Err(invalid("negative durations are not accepted"));
    }
    Ok(nanos_to_duration(total))
}

/// Formats a duration the way Go's `Duration.String` does (`"41s"`, `"1m0s"`, `"1h0m0s"`,
/// `"500ms"`, `"1.5µs"`), so a file written by this crate reads the same as one from Go.
pub(crate) fn format_go_duration(duration: Duration) -> String {
    GoDuration(duration).to_string()
}

struct GoDuration(Duration);

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        if nanos < NANOS_PER_SEC {
            let (scale, unit) = match nanos {
                0..1_000 => (1, "ns"),
                1_000..1_000_000 => (1_000, "\u{b5}s"),
                _ => (1_000_000, "ms"),
            };
            write_scaled(f, nanos, scale)?;
            return f.write_str(unit);
        }
        let hours = nanos / (3_600 * NANOS_PER_SEC);
        let minutes = nanos / (60 * NANOS_PER_SEC) % 60;
        let second_nanos = nanos % (60 * NANOS_PER_SEC);
        if hours > 0 {
            write!(f, "{hours}h")?;
        }
        if hours > 0 || minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        write_scaled(f, second_nanos, NANOS_PER_SEC)?;
        f.write_str("s")
    }
}

/// Writes `value / scale` in decimal with no trailing fractional zeros.
fn write_scaled(f: &mut fmt::Formatter<'_>, value: u128, scale: u128) -> fmt::Result {
    write!(f, "{}", value / scale)?;
    let mut frac = value % scale;
    if frac == 0 {
        return Ok(());
    }
    let mut width = scale.ilog10() as usize;
    while frac.is_multiple_of(10) {
        frac /= 10;
        width -= 1;
    }
    write!(f, ".{frac:0width$}")
}

fn nanos_to_duration(nanos: u128) -> Duration {
    // Callers cap `nanos` at Go's maximum, so the seconds always fit in a u64.
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
}

/// Fails unless `value` is a whole number of seconds that a TOML integer can hold.
pub(crate) fn check_whole_secs(field: &str, value: Duration) -> Result<()> {
    if value.subsec_nanos() != 0 || i64::try_from(value.as_secs()).is_err() {
        return Err(Error::config(format!(
            "{field}: must be a whole number of seconds up to {} (client-go stores it as \
             integer seconds), got {value:?}",
            i64::MAX
        )));
    }
    Ok(())
}

/// Fails unless `value` is a whole number of milliseconds that a TOML integer can hold.
pub(crate) fn check_whole_millis(field: &str, value: Duration) -> Result<()> {
    if !value.subsec_nanos().is_multiple_of(1_000_000) || i64::try_from(value.as_millis()).is_err()
    {
        return Err(Error::config(format!(
            "{field}: must be a whole number of milliseconds up to {} (client-go stores it as \
             integer milliseconds), got {value:?}",
            i64::MAX
        )));
    }
    Ok(())
}

/// Fails unless `value` fits in Go's `time.Duration`, as every duration string must.
pub(crate) fn check_go_range(field: &str, value: Duration) -> Result<()> {
    if value > GO_DURATION_MAX {
        return Err(Error::config(format!(
            "{field}: must be at most {GO_DURATION_MAX:?} (the range of Go's time.Duration), \
             got {value:?}"
        )));
    }
    Ok(())
}

/// Integer seconds (client-go `uint` seconds fields).
pub(crate) mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, ser::Error as _};

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if value.subsec_nanos() != 0 {
            return Err(S::Error::custom(format!(
                "{value:?} is not a whole number of seconds"
            )));
        }
        s.serialize_u64(value.as_secs())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_secs)
    }
}

/// Integer milliseconds (client-go `MaxTxnTTL`).
pub(crate) mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, ser::Error as _};

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        let millis = u64::try_from(value.as_millis())
            .ok()
            .filter(|_| value.subsec_nanos().is_multiple_of(1_000_000));
        match millis {
            Some(millis) => s.serialize_u64(millis),
            None => Err(S::Error::custom(format!(
                "{value:?} is not a whole number of milliseconds"
            ))),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Float seconds (client-go `GrpcKeepAliveTimeout`); integers are accepted as Go's decoder does.
pub(crate) mod secs_f64 {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(value.as_secs_f64())
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(SecsF64)
    }

    struct SecsF64;

    impl Visitor<'_> for SecsF64 {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative number of seconds, such as 3 or 0.05")
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            Duration::try_from_secs_f64(v).map_err(|_| {
                E::custom(format!(
                    "expected a non-negative number of seconds, got {v}"
                ))
            })
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v).map(Duration::from_secs).map_err(|_| {
                E::custom(format!(
                    "expected a non-negative number of seconds, got {v}"
                ))
            })
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            Ok(Duration::from_secs(v))
        }
    }
}

/// A Go duration string (client-go `string` fields such as `CommitTimeout`).
pub(crate) mod go_string {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer, ser::Error as _};

    use super::{GO_DURATION_MAX, format_go_duration, parse_go_duration};

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if *value > GO_DURATION_MAX {
            return Err(S::Error::custom(format!(
                "{value:?} exceeds the range of Go's time.Duration"
            )));
        }
        s.serialize_str(&format_go_duration(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_str(GoString)
    }

    struct GoString;

    impl Visitor<'_> for GoString {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a Go duration string such as \"41s\" or \"500ms\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_go_duration(v).map_err(E::custom)
        }
    }
}

/// A Go `time.Duration`: a duration string or an integer of nanoseconds; written as a string.
pub(crate) mod go_duration {
    use std::fmt;
    use std::time::Duration;

    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};

    use super::{GO_DURATION_MAX, parse_go_duration};

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        super::go_string::serialize(value, s)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(GoTimeDuration)
    }

    struct GoTimeDuration;

    impl Visitor<'_> for GoTimeDuration {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a Go duration string such as \"2s\", or an integer of nanoseconds")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_go_duration(v).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            u64::try_from(v).map(Duration::from_nanos).map_err(|_| {
                E::custom(format!(
                    "expected a non-negative number of nanoseconds, got {v}"
                ))
            })
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            let duration = Duration::from_nanos(v);
            if duration > GO_DURATION_MAX {
                return Err(E::custom(format!(
                    "{v} nanoseconds exceeds the range of Go's time.Duration"
                )));
            }
            Ok(duration)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Duration {
        parse_go_duration(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn parses_go_duration_strings() {
        assert_eq!(parse("0"), Duration::ZERO);
        assert_eq!(parse("+0"), Duration::ZERO);
        assert_eq!(parse("-0"), Duration::ZERO);
        assert_eq!(parse("0s"), Duration::ZERO);
        assert_eq!(parse("41s"), Duration::from_secs(41));
        assert_eq!(parse("500ms"), Duration::from_millis(500));
        assert_eq!(parse("1h30m"), Duration::from_secs(5_400));
        assert_eq!(parse("1h0m0s"), Duration::from_secs(3_600));
        assert_eq!(parse("1.5s"), Duration::from_millis(1_500));
        assert_eq!(parse(".5s"), Duration::from_millis(500));
        assert_eq!(parse("1.s"), Duration::from_secs(1));
        assert_eq!(parse("100us"), Duration::from_micros(100));
        assert_eq!(parse("100\u{b5}s"), Duration::from_micros(100));
        assert_eq!(parse("100\u{3bc}s"), Duration::from_micros(100));
        assert_eq!(parse("7ns"), Duration::from_nanos(7));
        assert_eq!(parse("1.5ns"), Duration::from_nanos(1));
        assert_eq!(parse("2h45m10.25s"), Duration::from_millis(9_910_250));
        assert_eq!(parse("2562047h47m16.854775807s"), GO_DURATION_MAX);
    }

    #[test]
    fn rejects_what_go_rejects() {
        for bad in [
            "", "+", "s", "1", "10", ".s", "1x", "1.2.3s", "3 s", " 3s", "-1s", "1d",
        ] {
            assert!(
                parse_go_duration(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
        let err = parse_go_duration("2562047h47m16.854775808s").unwrap_err();
        assert!(err.contains("maximum"), "{err}");
        let err = parse_go_duration("99999999999999999999999h").unwrap_err();
        assert!(err.contains("maximum"), "{err}");
    }

    #[test]
    fn formats_like_go() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(1), "1ns"),
            (Duration::from_nanos(1_100), "1.1\u{b5}s"),
            (Duration::from_micros(100), "100\u{b5}s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_micros(2_200), "2.2ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(1_500), "1.5s"),
            (Duration::from_secs(41), "41s"),
            (Duration::from_secs(60), "1m0s"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_secs(3_600), "1h0m0s"),
            (Duration::new(3_723, 4_000_000), "1h2m3.004s"),
            (GO_DURATION_MAX, "2562047h47m16.854775807s"),
        ];
        for (duration, text) in cases {
            assert_eq!(format_go_duration(duration), text);
            assert_eq!(parse(text), duration, "{text} must parse back");
        }
    }

    #[test]
    fn whole_unit_checks_name_the_field() {
        assert!(check_whole_secs("x", Duration::from_secs(3)).is_ok());
        let err = check_whole_secs("pd-client.pd-server-timeout", Duration::from_millis(1_500))
            .unwrap_err()
            .to_string();
        assert!(err.contains("pd-client.pd-server-timeout: must be a whole number of seconds"));
        assert!(check_whole_millis("x", Duration::from_millis(3)).is_ok());
        assert!(check_whole_millis("x", Duration::from_micros(3_500)).is_err());
        assert!(check_go_range("x", GO_DURATION_MAX).is_ok());
        assert!(check_go_range("x", GO_DURATION_MAX + Duration::from_nanos(1)).is_err());
    }
}
