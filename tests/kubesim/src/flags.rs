//! A small cobra/pflag-compatible command-line parser: `--name value`,
//! `--name=value`, `-o value`, `-ovalue`, `-A`, boolean `--flag[=true|false]`,
//! `--` ends flags. Errors carry pflag's wording (`unknown flag: --foo`,
//! `flag needs an argument: --timeout`, `unknown shorthand flag: 'z' in -z`).

use std::collections::BTreeMap;

/// One accepted flag.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub long: &'static str,
    pub short: Option<char>,
    /// `true` when the flag takes a value.
    pub value: bool,
}

pub const fn val(long: &'static str) -> Spec {
    Spec {
        long,
        short: None,
        value: true,
    }
}

pub const fn val_s(long: &'static str, short: char) -> Spec {
    Spec {
        long,
        short: Some(short),
        value: true,
    }
}

pub const fn flag(long: &'static str) -> Spec {
    Spec {
        long,
        short: None,
        value: false,
    }
}

pub const fn flag_s(long: &'static str, short: char) -> Spec {
    Spec {
        long,
        short: Some(short),
        value: false,
    }
}

/// Parse result: positionals in order, flag values by long name (repeated
/// flags keep every value), and the words after `--`.
#[derive(Debug, Default)]
pub struct Parsed {
    pub args: Vec<String>,
    pub values: BTreeMap<String, Vec<String>>,
    pub rest: Vec<String>,
}

impl Parsed {
    pub fn get(&self, long: &str) -> Option<&str> {
        self.values.get(long).and_then(|v| v.last()).map(String::as_str)
    }

    pub fn all(&self, long: &str) -> Vec<String> {
        self.values.get(long).cloned().unwrap_or_default()
    }

    /// A boolean flag: present without value, or `=true`.
    pub fn on(&self, long: &str) -> bool {
        matches!(
            self.get(long),
            Some("true") | Some("1") | Some("t") | Some("T") | Some("TRUE") | Some("True")
        )
    }

    pub fn has(&self, long: &str) -> bool {
        self.values.contains_key(long)
    }
}

fn find_long<'a>(specs: &'a [Spec], name: &str) -> Option<&'a Spec> {
    specs.iter().find(|s| s.long == name)
}

fn find_short(specs: &[Spec], c: char) -> Option<&Spec> {
    specs.iter().find(|s| s.short == Some(c))
}

const BOOL_WORDS: [&str; 12] = [
    "1", "t", "T", "true", "TRUE", "True", "0", "f", "F", "false", "FALSE", "False",
];

/// Parses `argv` against `specs`. `stop_at_dash_dash`: words after `--` go
/// to `rest` (kubectl exec); otherwise they are positionals.
pub fn parse(argv: &[String], specs: &[Spec]) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        i += 1;
        if a == "--" {
            out.rest.extend(argv[i..].iter().cloned());
            break;
        }
        if let Some(body) = a.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(spec) = find_long(specs, name) else {
                return Err(format!("unknown flag: --{name}"));
            };
            let value = if spec.value {
                match inline {
                    Some(v) => v,
                    None => {
                        if i < argv.len() {
                            i += 1;
                            argv[i - 1].clone()
                        } else {
                            return Err(format!("flag needs an argument: --{name}"));
                        }
                    }
                }
            } else {
                let v = inline.unwrap_or_else(|| "true".to_string());
                if !BOOL_WORDS.contains(&v.as_str()) {
                    return Err(format!(
                        "invalid argument \"{v}\" for \"--{name}\" flag: strconv.ParseBool: parsing \"{v}\": invalid syntax"
                    ));
                }
                v
            };
            out.values.entry(spec.long.to_string()).or_default().push(value);
            continue;
        }
        if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                j += 1;
                let Some(spec) = find_short(specs, c) else {
                    return Err(format!("unknown shorthand flag: '{c}' in {a}"));
                };
                if spec.value {
                    let mut v: String = chars[j..].iter().collect();
                    if let Some(stripped) = v.strip_prefix('=') {
                        v = stripped.to_string();
                    }
                    if v.is_empty() {
                        if i < argv.len() {
                            v = argv[i].clone();
                            i += 1;
                        } else {
                            return Err(format!("flag needs an argument: '{c}' in -{c}"));
                        }
                    }
                    out.values.entry(spec.long.to_string()).or_default().push(v);
                    break;
                }
                out.values
                    .entry(spec.long.to_string())
                    .or_default()
                    .push("true".to_string());
            }
            continue;
        }
        out.args.push(a.clone());
    }
    Ok(out)
}

/// The first positional word, skipping flags in `specs` and their values
/// (unknown flags are skipped as booleans): finds the subcommand.
pub fn first_word(argv: &[String], specs: &[Spec]) -> Option<(usize, String)> {
    let mut i = 0;
    while i < argv.len() {
        let a = &argv[i];
        if a == "--" {
            return None;
        }
        if let Some(body) = a.strip_prefix("--") {
            if !body.contains('=') && find_long(specs, body).is_some_and(|s| s.value) {
                i += 1;
            }
        } else if a.len() > 1 && a.starts_with('-') {
            let last = a.chars().nth(1);
            if a.len() == 2 && last.and_then(|c| find_short(specs, c)).is_some_and(|s| s.value) {
                i += 1;
            }
        } else {
            return Some((i, a.clone()));
        }
        i += 1;
    }
    None
}

/// Parses a Go duration (`90s`, `1h30m`, `24h0m0s`, `0`, `1.5h`, `500ms`)
/// into seconds (fractions dropped). `Err` carries Go's message.
pub fn go_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("time: invalid duration \"{s}\"");
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(format!("time: missing unit in duration \"{s}\"")),
            u => return Err(format!("time: unknown unit \"{u}\" in duration \"{s}\"")),
        };
        rest = &rest[unit_len..];
        total += n * mult;
    }
    Ok(total as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_long_short_and_bools() {
        let specs = [
            val_s("output", 'o'),
            flag_s("all-namespaces", 'A'),
            val("timeout"),
        ];
        let p = parse(&v(&["get", "-A", "-ojson", "--timeout=5s", "pods"]), &specs).unwrap();
        assert_eq!(p.args, v(&["get", "pods"]));
        assert_eq!(p.get("output"), Some("json"));
        assert!(p.on("all-namespaces"));
        assert_eq!(p.get("timeout"), Some("5s"));
        assert_eq!(parse(&v(&["--foo"]), &specs).unwrap_err(), "unknown flag: --foo");
        assert_eq!(
            parse(&v(&["--timeout"]), &specs).unwrap_err(),
            "flag needs an argument: --timeout"
        );
        assert_eq!(
            parse(&v(&["-z"]), &specs).unwrap_err(),
            "unknown shorthand flag: 'z' in -z"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(go_duration("24h0m0s"), Ok(86400));
        assert_eq!(go_duration("90s"), Ok(90));
        assert_eq!(go_duration("1h30m"), Ok(5400));
        assert_eq!(go_duration("0"), Ok(0));
        assert!(go_duration("abc").is_err());
        assert!(go_duration("10").is_err());
    }
}
