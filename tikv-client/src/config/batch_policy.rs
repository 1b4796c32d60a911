//! The BatchCommands batching policy (`tikv-client.batch-policy`) and its string form.
//!
//! client-go stores the policy as one string: a preset name, or `custom` followed by a small JSON
//! object of trigger options (`custom {"v":1,"t":0.0001,...}`). The transport's batch loop reads
//! the resolved [`BatchTriggerOptions`]; this module only parses, prints and checks them.
//! Ports the policy half of client-go `config/client.go` and the option parsing of
//! `internal/client/client_batch.go` (`presetBatchPolicies`, `turboBatchOptions`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration::GO_DURATION_MAX;
use crate::{Error, Result};

/// How the BatchCommands sender decides whether to wait for more requests before it flushes a
/// batch to a store (client-go `TiKVClient.BatchPolicy`).
///
/// In TOML it is the string client-go uses: `"basic"`, `"standard"`, `"positive"`, or
/// `"custom {...}"` with JSON options (see [`BatchTriggerOptions`]). As in client-go, the
/// `custom` prefix may be left out before the JSON object.
///
/// ```
/// use tikv_client::config::{BatchPolicy, BatchTrigger};
///
/// let policy: BatchPolicy = r#"custom {"v":2,"t":0.001,"w":0.2,"p":0.5}"#.parse()?;
/// assert_eq!(policy.options().trigger, BatchTrigger::ProbabilityBased);
/// # Ok::<(), tikv_client::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Default)]
#[non_exhaustive]
pub enum BatchPolicy {
    /// Flush whatever is queued; never wait for more (the behaviour before client-go v8.3).
    Basic,
    /// Wait a little when recent requests arrived close together (client-go's default).
    #[default]
    Standard,
    /// Always wait a little for more requests.
    Positive,
    /// Explicit trigger options.
    Custom(BatchTriggerOptions),
}

/// The tuning behind a [`BatchPolicy`] (client-go `turboBatchOptions`). The JSON key of each
/// field in a `custom` policy string is given in its doc.
///
/// ```
/// use tikv_client::config::BatchPolicy;
/// let opts = BatchPolicy::Standard.options();
/// assert!(opts.max_wait > std::time::Duration::ZERO);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Default)]
#[non_exhaustive]
pub struct BatchTriggerOptions {
    /// When to wait for more requests (`"v"`: 0 always, 1 time-based, 2 probability-based).
    pub trigger: BatchTrigger,
    /// The longest extra wait for more requests (`"t"`, in float seconds).
    pub max_wait: Duration,
    /// Caps an observed arrival interval at `interval_cap_factor × max_wait` before it is averaged
    /// (`"n"`; time-based trigger only).
    pub interval_cap_factor: u32,
    /// Weight of the newest sample in the moving average of arrival intervals or fetch-more
    /// probability (`"w"`, 0 to 1).
    pub smoothing: f64,
    /// Time-based: wait when the averaged interval is below `threshold × max_wait`.
    /// Probability-based: wait when the averaged probability exceeds `threshold` (`"p"`).
    pub threshold: f64,
    /// Round the preferred batch wait size up when the fractional part of its running average is
    /// at least this (`"q"`).
    pub size_round_up: f64,
}

/// The trigger strategy of a [`BatchTriggerOptions`].
///
/// ```
/// use tikv_client::config::{BatchPolicy, BatchTrigger};
/// assert_eq!(BatchPolicy::Basic.options().trigger, BatchTrigger::default());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum BatchTrigger {
    /// Always fetch more requests (`"v":0`).
    #[default]
    Always,
    /// Fetch more when the averaged arrival interval is short (`"v":1`).
    TimeBased,
    /// Fetch more when the averaged chance of a quick next arrival is high (`"v":2`).
    ProbabilityBased,
}

impl BatchTrigger {
    fn code(self) -> u8 {
        match self {
            BatchTrigger::Always => 0,
            BatchTrigger::TimeBased => 1,
            BatchTrigger::ProbabilityBased => 2,
        }
    }
}

impl BatchPolicy {
    const BASIC: &'static str = "basic";
    const STANDARD: &'static str = "standard";
    const POSITIVE: &'static str = "positive";
    const CUSTOM: &'static str = "custom";

    /// The trigger options this policy stands for; presets resolve to client-go's values.
    ///
    /// ```
    /// use tikv_client::config::BatchPolicy;
    /// let opts = BatchPolicy::Standard.options();
    /// ```
    pub fn options(&self) -> BatchTriggerOptions {
        const PRESET_WAIT: Duration = Duration::from_micros(100);
        match self {
            BatchPolicy::Basic => BatchTriggerOptions::default(),
            BatchPolicy::Standard => BatchTriggerOptions {
                trigger: BatchTrigger::TimeBased,
                max_wait: PRESET_WAIT,
                interval_cap_factor: 5,
                smoothing: 0.2,
                threshold: 0.8,
                size_round_up: 0.8,
            },
            BatchPolicy::Positive => BatchTriggerOptions {
                trigger: BatchTrigger::Always,
                max_wait: PRESET_WAIT,
                ..BatchTriggerOptions::default()
            },
            BatchPolicy::Custom(options) => *options,
        }
    }

    /// Checks the option ranges; the message names no field, the caller prefixes it.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let BatchPolicy::Custom(options) = self else {
            return Ok(());
        };
        if options.max_wait > GO_DURATION_MAX {
            return Err(format!(
                "custom option \"t\" must be at most {GO_DURATION_MAX:?}, got {:?}",
                options.max_wait
            ));
        }
        let ratios = [
            ("w", options.smoothing, 1.0),
            ("p", options.threshold, f64::INFINITY),
            ("q", options.size_round_up, f64::INFINITY),
        ];
        for (key, value, max) in ratios {
            if !value.is_finite() || value < 0.0 || value > max {
                let range = if max.is_finite() {
                    "between 0 and 1"
                } else {
                    "finite and >= 0"
                };
                return Err(format!(
                    "custom option {key:?} must be {range}, got {value}"
                ));
            }
        }
        Ok(())
    }

    /// Parses the policy string; the error message names the TOML key but has no error prefix,
    /// so serde can embed it in its own report.
    fn parse(s: &str) -> std::result::Result<BatchPolicy, String> {
        match s {
            Self::BASIC => return Ok(BatchPolicy::Basic),
            Self::STANDARD => return Ok(BatchPolicy::Standard),
            Self::POSITIVE => return Ok(BatchPolicy::Positive),
            _ => {}
        }
        let custom = s.strip_prefix(Self::CUSTOM);
        let json = custom.unwrap_or(s).trim();
        let policy = if custom.is_none() && !json.starts_with('{') {
            Err("not a policy name".to_owned())
        } else {
            parse_options(json)
                .map(BatchPolicy::Custom)
                .and_then(|policy| {
                    policy.check()?;
                    Ok(policy)
                })
        };
        policy.map_err(|why| {
            format!(
                "tikv-client.batch-policy: expected \"basic\", \"standard\", \"positive\" or \
                 \"custom {{...}}\" with JSON keys v, t, n, w, p, q; got {s:?}: {why}"
            )
        })
    }
}

impl fmt::Display for BatchPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let options = match self {
            BatchPolicy::Basic => return f.write_str(Self::BASIC),
            BatchPolicy::Standard => return f.write_str(Self::STANDARD),
            BatchPolicy::Positive => return f.write_str(Self::POSITIVE),
            BatchPolicy::Custom(options) => options,
        };
        // `{}` on f64 prints the shortest text that reads back to the same value.
        write!(
            f,
            "{} {{\"v\":{},\"t\":{},\"n\":{},\"w\":{},\"p\":{},\"q\":{}}}",
            Self::CUSTOM,
            options.trigger.code(),
            options.max_wait.as_secs_f64(),
            options.interval_cap_factor,
            options.smoothing,
            options.threshold,
            options.size_round_up,
        )
    }
}

impl FromStr for BatchPolicy {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        BatchPolicy::parse(s).map_err(Error::config)
    }
}

impl Serialize for BatchPolicy {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BatchPolicy {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        BatchPolicy::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Reads the JSON object of a custom policy. Keys match case-insensitively and `null` keeps the
/// zero value, as Go's `encoding/json` does; unknown keys are refused (Go ignores them) so that
/// a misspelt option is reported rather than silently dropped.
fn parse_options(json: &str) -> std::result::Result<BatchTriggerOptions, String> {
    let mut reader = JsonReader {
        text: json.as_bytes(),
        pos: 0,
    };
    let mut options = BatchTriggerOptions::default();
    reader.expect(b'{')?;
    if !reader.eat(b'}') {
        loop {
            let key = reader.string()?.to_ascii_lowercase();
            reader.expect(b':')?;
            let value = reader.number_or_null()?;
            apply_option(&mut options, &key, value)?;
            if reader.eat(b'}') {
                break;
            }
            reader.expect(b',')?;
        }
    }
    reader.skip_whitespace();
    if reader.pos != reader.text.len() {
        return Err(format!(
            "unexpected text after the JSON object at byte {}",
            reader.pos
        ));
    }
    Ok(options)
}

fn apply_option(
    options: &mut BatchTriggerOptions,
    key: &str,
    value: Option<&str>,
) -> std::result::Result<(), String> {
    let Some(value) = value else {
        return Ok(());
    };
    let float = || {
        value
            .parse::<f64>()
            .map_err(|_| format!("option {key:?}: {value} is not a number"))
    };
    let integer = || {
        value
            .parse::<u32>()
            .map_err(|_| format!("option {key:?} must be a non-negative integer, got {value}"))
    };
    match key {
        "v" => {
            options.trigger = match integer()? {
                0 => BatchTrigger::Always,
                1 => BatchTrigger::TimeBased,
                2 => BatchTrigger::ProbabilityBased,
                other => {
                    return Err(format!(
                        "option \"v\" must be 0 (always), 1 (time-based) or 2 \
                         (probability-based), got {other}"
                    ));
                }
            }
        }
        "t" => {
            let secs = float()?;
            options.max_wait = Duration::try_from_secs_f64(secs).map_err(|_| {
                format!("option \"t\" must be a non-negative number of seconds, got {value}")
            })?;
        }
        "n" => options.interval_cap_factor = integer()?,
        "w" => options.smoothing = float()?,
        "p" => options.threshold = float()?,
        "q" => options.size_round_up = float()?,
        _ => return Err(format!("unknown option {key:?}")),
    }
    Ok(())
}

/// Just enough of a JSON reader for one flat object of numbers.
struct JsonReader<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> JsonReader<'a> {
    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.text.get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, byte: u8) -> bool {
        self.skip_whitespace();
        if self.text.get(self.pos) == Some(&byte) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, byte: u8) -> std::result::Result<(), String> {
        if self.eat(byte) {
            Ok(())
        } else {
            Err(format!(
                "expected '{}' at byte {}",
                char::from(byte),
                self.pos
            ))
        }
    }

    fn take_while(&mut self, keep: impl Fn(u8) -> bool) -> &'a str {
        let start = self.pos;
        while self.text.get(self.pos).is_some_and(|&b| keep(b)) {
            self.pos += 1;
        }
        // Only ASCII bytes are ever kept, so the slice is valid UTF-8.
        std::str::from_utf8(&self.text[start..self.pos]).unwrap_or_default()
    }

    fn string(&mut self) -> std::result::Result<&'a str, String> {
        self.expect(b'"')?;
        let key = self.take_while(|b| b != b'"' && b != b'\\' && b.is_ascii() && b >= b' ');
        if self.text.get(self.pos) != Some(&b'"') {
            return Err(format!(
                "unsupported or unterminated key at byte {}",
                self.pos
            ));
        }
        self.pos += 1;
        Ok(key)
    }

    /// Returns the number's text, checked against JSON's number grammar, or `None` for `null`.
    fn number_or_null(&mut self) -> std::result::Result<Option<&'a str>, String> {
        self.skip_whitespace();
        if self.text[self.pos..].starts_with(b"null") {
            self.pos += 4;
            return Ok(None);
        }
        let start = self.pos;
        let token = self
            .take_while(|b| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E'));
        if is_json_number(token) {
            Ok(Some(token))
        } else {
            Err(format!("expected a number at byte {start}"))
        }
    }
}

fn is_json_number(token: &str) -> bool {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let rest = token.strip_prefix('-').unwrap_or(token);
    let int_len = digits(rest);
    if int_len == 0 || (int_len > 1 && rest.starts_with('0')) {
        return false;
    }
    let mut rest = &rest[int_len..];
    if let Some(frac) = rest.strip_prefix('.') {
        let frac_len = digits(frac);
        if frac_len == 0 {
            return false;
        }
        rest = &frac[frac_len..];
    }
    if let Some(exp) = rest.strip_prefix(['e', 'E']) {
        let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        let exp_len = digits(exp);
        if exp_len == 0 {
            return false;
        }
        rest = &exp[exp_len..];
    }
    rest.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> BatchPolicy {
        s.parse().unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn presets_parse_and_print() {
        for (text, policy) in [
            ("basic", BatchPolicy::Basic),
            ("standard", BatchPolicy::Standard),
            ("positive", BatchPolicy::Positive),
        ] {
            assert_eq!(parse(text), policy);
            assert_eq!(policy.to_string(), text);
        }
        assert_eq!(BatchPolicy::default(), BatchPolicy::Standard);
    }

    #[test]
    fn preset_options_match_client_go() {
        // client-go presetBatchPolicies.
        assert_eq!(BatchPolicy::Basic.options(), BatchTriggerOptions::default());
        let standard = BatchPolicy::Standard.options();
        assert_eq!(standard.trigger, BatchTrigger::TimeBased);
        assert_eq!(standard.max_wait, Duration::from_micros(100));
        assert_eq!(standard.interval_cap_factor, 5);
        assert_eq!(
            (
                standard.smoothing,
                standard.threshold,
                standard.size_round_up
            ),
            (0.2, 0.8, 0.8)
        );
        let positive = BatchPolicy::Positive.options();
        assert_eq!(positive.trigger, BatchTrigger::Always);
        assert_eq!(positive.max_wait, Duration::from_micros(100));
    }

    // Ported from client-go internal/client/client_test.go TestBatchPolicy ("custom", "invalid");
    // the trigger behaviour cases belong to the transport.
    #[test]
    fn custom_policies_from_client_go_tests() {
        assert_eq!(parse("custom {} ").options(), BatchPolicy::Basic.options());
        assert_eq!(
            parse(r#"{"t":0.0001}"#).options(),
            BatchPolicy::Positive.options()
        );
        assert_eq!(
            parse(r#"{"v":1,"t":0.0001,"n":5,"w":0.2,"p":0.8,"q":0.8}"#).options(),
            BatchPolicy::Standard.options()
        );
        let prob = parse(r#"{"v":2,"t":0.001,"w":0.2,"p":0.5}"#).options();
        assert_eq!(prob.trigger, BatchTrigger::ProbabilityBased);
        assert_eq!(prob.max_wait, Duration::from_millis(1));
        assert_eq!((prob.smoothing, prob.threshold), (0.2, 0.5));

        for bad in ["", "invalid", "custom", "custom {x:1}"] {
            assert!(
                bad.parse::<BatchPolicy>().is_err(),
                "{bad:?} should be rejected"
            );
        }
        let err = "invalid".parse::<BatchPolicy>().unwrap_err().to_string();
        assert!(err.ends_with("got \"invalid\": not a policy name"), "{err}");
    }

    #[test]
    fn custom_json_details() {
        // Case-insensitive keys, null, exponents and whitespace, as Go's encoding/json allows.
        let options = parse("custom{ \"V\" : 1 ,\n\"T\":1e-4, \"n\": null }").options();
        assert_eq!(options.trigger, BatchTrigger::TimeBased);
        assert_eq!(options.max_wait, Duration::from_micros(100));
        assert_eq!(options.interval_cap_factor, 0);

        for bad in [
            r#"custom {"v":3}"#,
            r#"custom {"v":1.0}"#,
            r#"custom {"n":-1}"#,
            r#"custom {"t":-0.1}"#,
            r#"custom {"w":1.5}"#,
            r#"custom {"p":01}"#,
            r#"custom {"tt":0.1}"#,
            r#"custom {"v":1,}"#,
            r#"custom {"v":1} x"#,
            r#"custom {"v":"1"}"#,
            r#"custom {"v":1"#,
            r#" custom {}"#,
        ] {
            let err = bad.parse::<BatchPolicy>().unwrap_err().to_string();
            assert!(err.contains("tikv-client.batch-policy"), "{bad:?}: {err}");
        }
        let err = r#"custom {"tt":0.1}"#.parse::<BatchPolicy>().unwrap_err().to_string();
        assert!(err.contains("unknown option \"tt\""), "{err}");
    }

    #[test]
    fn custom_round_trips_through_its_string() {
        let policies = [
            parse(r#"{"v":1,"t":0.0001,"n":5,"w":0.2,"p":0.8,"q":0.8}"#),
            parse(r#"{"v":2,"t":0.00123456789,"w":0.33,"p":0.5}"#),
            parse("custom {}"),
        ];
        for policy in policies {
            let text = policy.to_string();
            assert!(text.starts_with("custom {"), "{text}");
            assert_eq!(parse(&text), policy, "{text}");
        }
    }
}
