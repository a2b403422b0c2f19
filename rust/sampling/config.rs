//! The `sampling` section: read from JSON (the component hands over the YAML section as it
//! was decoded) and validated into a [`Policy`]. Every error names the YAML key, e.g.
//! `sampling.rules[2].probabilistic.percentage must be between 0 and 100, got 120`.
//!
//! ```yaml
//! sampling:
//!   mode: consistent            # or hash_compatible
//!   hash_salt: ""               # hash_compatible only
//!   rules:
//!     - name: errors
//!       when: {error: true}
//!       action: keep
//!     - name: rest
//!       action: probabilistic
//!       probabilistic: {percentage: 10}
//!   default: {action: keep}
//! ```

use serde_json::{Map, Value};

use crate::config::ConfigError;
use crate::findings::{FindingKind, ReleaseReason};

use super::{Action, AttrScope, Condition, Match, Mode, Policy, Rule, DEFAULT_RULE};

type R<T> = Result<T, ConfigError>;

fn err<T>(msg: String) -> R<T> {
    Err(ConfigError(msg))
}

fn describe(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn object<'a>(v: &'a Value, key: &str) -> R<&'a Map<String, Value>> {
    v.as_object().map_or_else(|| err(format!("{key} must be a map, got {}", describe(v))), Ok)
}

fn known(m: &Map<String, Value>, key: &str, allowed: &[&str]) -> R<()> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => err(format!("{key} has unknown key {k:?} (known: {})", allowed.join(", "))),
        None => Ok(()),
    }
}

fn string<'a>(v: &'a Value, key: &str) -> R<&'a str> {
    v.as_str().map_or_else(|| err(format!("{key} must be a string, got {}", describe(v))), Ok)
}

fn number(v: &Value, key: &str) -> R<f64> {
    v.as_f64().map_or_else(|| err(format!("{key} must be a number, got {}", describe(v))), Ok)
}

fn boolean(v: &Value, key: &str) -> R<bool> {
    v.as_bool().map_or_else(|| err(format!("{key} must be true or false, got {}", describe(v))), Ok)
}

fn strings(v: &Value, key: &str) -> R<Vec<String>> {
    let Some(a) = v.as_array() else { return err(format!("{key} must be a list, got {}", describe(v))) };
    if a.is_empty() {
        return err(format!("{key} must not be empty"));
    }
    a.iter().enumerate().map(|(i, s)| string(s, &format!("{key}[{i}]")).map(str::to_string)).collect()
}

/// A duration as Go writes it (`300ms`, `1m30s`, `2h`), or a number of nanoseconds.
pub fn duration(v: &Value, key: &str) -> R<u64> {
    let bad = || err(format!("{key} must be a duration like 500ms or 2s, got {}", describe(v)));
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    let Some(s) = v.as_str() else { return bad() };
    if s == "0" {
        return Ok(0);
    }
    let b = s.as_bytes();
    let (mut i, mut total) = (0usize, 0f64);
    if b.is_empty() {
        return bad();
    }
    while i < b.len() {
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let Ok(n) = s[start..i].parse::<f64>() else { return bad() };
        let ustart = i;
        while i < b.len() && !(b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let unit = match &s[ustart..i] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return bad(),
        };
        total += n * unit;
    }
    if !total.is_finite() || total > u64::MAX as f64 {
        return bad();
    }
    Ok(total.round() as u64)
}

fn matcher(m: &Map<String, Value>, key: &str) -> R<Match> {
    let mut found = Vec::new();
    if let Some(v) = m.get("equals") {
        found.push(Match::Equals(string(v, &format!("{key}.equals"))?.to_string()));
    }
    if let Some(v) = m.get("in") {
        found.push(Match::In(strings(v, &format!("{key}.in"))?));
    }
    if let Some(v) = m.get("prefix") {
        found.push(Match::Prefix(string(v, &format!("{key}.prefix"))?.to_string()));
    }
    if let Some(v) = m.get("present") {
        if !boolean(v, &format!("{key}.present"))? {
            return err(format!("{key}.present must be true (omit the condition to not require the attribute)"));
        }
        found.push(Match::Present);
    }
    match found.len() {
        1 => Ok(found.pop().unwrap_or(Match::Present)),
        _ => err(format!("{key} must have exactly one of equals, in, prefix, present")),
    }
}

const WHEN_KEYS: &[&str] =
    &["error", "duration", "span_count", "service", "span_attribute", "resource_attribute", "root", "consistency", "release_reason"];

fn conditions(v: &Value, key: &str) -> R<Vec<Condition>> {
    let m = object(v, key)?;
    known(m, key, WHEN_KEYS)?;
    let mut out = Vec::new();
    // In a fixed order (cheap conditions first), whatever order the YAML has.
    for &k in WHEN_KEYS {
        let Some(v) = m.get(k) else { continue };
        let key = format!("{key}.{k}");
        match k {
            "error" => {
                if !boolean(v, &key)? {
                    return err(format!("{key} must be true (omit it to not require an error span)"));
                }
                out.push(Condition::Error);
            }
            "duration" => {
                let d = object(v, &key)?;
                known(d, &key, &["at_least", "at_most"])?;
                let lo = d.get("at_least").map(|x| duration(x, &format!("{key}.at_least"))).transpose()?;
                let hi = d.get("at_most").map(|x| duration(x, &format!("{key}.at_most"))).transpose()?;
                match (lo, hi) {
                    (None, None) => return err(format!("{key} must have at_least or at_most")),
                    (Some(l), Some(h)) if l > h => return err(format!("{key}.at_least must not be above {key}.at_most")),
                    _ => {}
                }
                out.extend(lo.map(Condition::DurationAtLeast));
                out.extend(hi.map(Condition::DurationAtMost));
            }
            "span_count" => {
                let d = object(v, &key)?;
                known(d, &key, &["min", "max"])?;
                let int = |n: &str| -> R<Option<u64>> {
                    d.get(n)
                        .map(|x| x.as_u64().map_or_else(|| err(format!("{key}.{n} must be a whole number ≥ 0, got {}", describe(x))), Ok))
                        .transpose()
                };
                let (min, max) = (int("min")?, int("max")?);
                if min.is_none() && max.is_none() {
                    return err(format!("{key} must have min or max"));
                }
                let (min, max) = (min.unwrap_or(0), max.unwrap_or(u64::MAX));
                if min > max {
                    return err(format!("{key}.min must not be above {key}.max, got {min} > {max}"));
                }
                out.push(Condition::SpanCount { min, max });
            }
            "service" => {
                let d = object(v, &key)?;
                known(d, &key, &["in", "root_only"])?;
                let names = strings(d.get("in").unwrap_or(&Value::Null), &format!("{key}.in"))?;
                let root_only = d.get("root_only").map(|x| boolean(x, &format!("{key}.root_only"))).transpose()?.unwrap_or(false);
                out.push(Condition::Service { names, root_only });
            }
            "span_attribute" | "resource_attribute" => {
                let d = object(v, &key)?;
                known(d, &key, &["key", "equals", "in", "prefix", "present"])?;
                let attr = string(d.get("key").unwrap_or(&Value::Null), &format!("{key}.key"))?;
                if attr.is_empty() {
                    return err(format!("{key}.key must not be empty"));
                }
                let scope = if k == "span_attribute" { AttrScope::Span } else { AttrScope::Resource };
                out.push(Condition::Attribute { scope, key: attr.to_string(), matches: matcher(d, &key)? });
            }
            "root" => match string(v, &key)? {
                "present" => out.push(Condition::Root(true)),
                "absent" => out.push(Condition::Root(false)),
                other => return err(format!("{key} must be present or absent, got {other:?}")),
            },
            "consistency" => {
                let d = object(v, &key)?;
                known(d, &key, &["status", "findings"])?;
                match (d.get("status"), d.get("findings")) {
                    (Some(s), None) => match string(s, &format!("{key}.status"))? {
                        "inconsistent" => out.push(Condition::Findings(FindingKind::ALL_MASK)),
                        other => return err(format!("{key}.status must be inconsistent, got {other:?}")),
                    },
                    (None, Some(f)) => {
                        let names = strings(f, &format!("{key}.findings"))?;
                        let mut mask = 0;
                        for (i, n) in names.iter().enumerate() {
                            let Some(kind) = FindingKind::from_name(n) else {
                                let all: Vec<&str> = FindingKind::ALL.iter().map(|k| k.name()).collect();
                                return err(format!("{key}.findings[{i}] must be one of {}, got {n:?}", all.join(", ")));
                            };
                            mask |= kind.bit();
                        }
                        out.push(Condition::Findings(mask));
                    }
                    _ => return err(format!("{key} must have exactly one of status, findings")),
                }
            }
            "release_reason" => {
                let names = strings(v, &key)?;
                let reasons: Vec<ReleaseReason> = ReleaseReason::ALL.iter().copied().filter(|r| r.is_trace_release()).collect();
                let mut mask = 0u32;
                for (i, n) in names.iter().enumerate() {
                    let Some(r) = reasons.iter().find(|r| r.name() == n) else {
                        let all: Vec<&str> = reasons.iter().map(|r| r.name()).collect();
                        return err(format!("{key}[{i}] must be one of {}, got {n:?}", all.join(", ")));
                    };
                    mask |= 1 << *r as u32;
                }
                out.push(Condition::ReleaseReason(mask));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The action of a rule or of the default (`m` holds `action` and its section).
fn action(m: &Map<String, Value>, key: &str) -> R<Action> {
    let Some(a) = m.get("action") else { return err(format!("{key}.action is required (keep, drop, probabilistic, rate_limit)")) };
    let name = string(a, &format!("{key}.action"))?;
    for section in ["probabilistic", "rate_limit"] {
        if section != name && m.contains_key(section) {
            return err(format!("{key}.{section} is set but {key}.action is {name:?}"));
        }
    }
    let section = |s: &str, field: &str| -> R<f64> {
        let k = format!("{key}.{s}");
        let Some(v) = m.get(s) else { return err(format!("{k}.{field} is required with action {s}")) };
        let d = object(v, &k)?;
        known(d, &k, &[field])?;
        number(d.get(field).unwrap_or(&Value::Null), &format!("{k}.{field}"))
    };
    match name {
        "keep" => Ok(Action::Keep),
        "drop" => Ok(Action::Drop),
        "probabilistic" => {
            let p = section("probabilistic", "percentage")?;
            if !(0.0..=100.0).contains(&p) {
                return err(format!("{key}.probabilistic.percentage must be between 0 and 100, got {p}"));
            }
            Ok(Action::Probabilistic(p))
        }
        "rate_limit" => {
            let r = section("rate_limit", "spans_per_second")?;
            if !(r > 0.0 && r.is_finite()) {
                return err(format!("{key}.rate_limit.spans_per_second must be greater than 0, got {r}"));
            }
            Ok(Action::RateLimit(r))
        }
        other => err(format!("{key}.action must be keep, drop, probabilistic or rate_limit, got {other:?}")),
    }
}

/// The policy of a `sampling` section given as JSON; `None` for an absent section (`null`,
/// or empty input).
pub fn parse_policy(json: &str) -> R<Option<Policy>> {
    if json.trim().is_empty() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(json).map_err(|e| ConfigError(format!("sampling is not valid: {e}")))?;
    if v.is_null() {
        return Ok(None);
    }
    let m = object(&v, "sampling")?;
    known(m, "sampling", &["mode", "hash_salt", "rules", "default"])?;
    let mode = match m.get("mode").map(|x| string(x, "sampling.mode")).transpose()? {
        None | Some("consistent") => Mode::Consistent,
        Some("hash_compatible") => Mode::HashCompatible,
        Some(other) => return err(format!("sampling.mode must be consistent or hash_compatible, got {other:?}")),
    };
    let hash_salt = m.get("hash_salt").map(|x| string(x, "sampling.hash_salt")).transpose()?.unwrap_or("").to_string();
    if !hash_salt.is_empty() && mode != Mode::HashCompatible {
        return err("sampling.hash_salt is only used with sampling.mode hash_compatible".into());
    }
    let mut rules: Vec<Rule> = Vec::new();
    if let Some(list) = m.get("rules").filter(|x| !x.is_null()) {
        let Some(list) = list.as_array() else { return err(format!("sampling.rules must be a list, got {}", describe(list))) };
        for (i, r) in list.iter().enumerate() {
            let key = format!("sampling.rules[{i}]");
            let rm = object(r, &key)?;
            known(rm, &key, &["name", "when", "action", "probabilistic", "rate_limit"])?;
            let name = string(rm.get("name").unwrap_or(&Value::Null), &format!("{key}.name"))?;
            if name.is_empty() {
                return err(format!("{key}.name must not be empty"));
            }
            if name == DEFAULT_RULE {
                return err(format!("{key}.name must not be {DEFAULT_RULE:?} (the name of sampling.default)"));
            }
            if let Some(j) = rules.iter().position(|o| o.name == name) {
                return err(format!("{key}.name must be unique, {name:?} is also the name of sampling.rules[{j}]"));
            }
            let when = match rm.get("when") {
                Some(w) if !w.is_null() => conditions(w, &format!("{key}.when"))?,
                _ => Vec::new(),
            };
            rules.push(Rule { name: name.to_string(), when, action: action(rm, &key)? });
        }
    }
    let default = match m.get("default").filter(|x| !x.is_null()) {
        Some(d) => {
            let dm = object(d, "sampling.default")?;
            known(dm, "sampling.default", &["action", "probabilistic", "rate_limit"])?;
            action(dm, "sampling.default")?
        }
        None => Action::Keep,
    };
    Ok(Some(Policy { rules, default, mode, hash_salt }))
}
