//! A strict parser of the Prometheus text exposition, for tests and for
//! tools that read `/metrics`: every line must be a `# HELP`, a `# TYPE` or a
//! sample of the family last declared; names and labels must be valid;
//! histogram buckets must be cumulative and end in `+Inf` equal to `_count`.

use std::collections::{BTreeMap, HashMap, HashSet};

/// Why an exposition is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` for histograms).
    pub name: String,
    /// Labels, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// A parsed exposition.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    /// Every sample, in order.
    pub samples: Vec<Sample>,
    /// Family name → type.
    pub types: HashMap<String, String>,
    /// Family name → help text.
    pub help: HashMap<String, String>,
}

impl Scrape {
    /// The value of the sample `name` with exactly `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.samples.iter().find(|s| s.name == name && s.labels == want).map(|s| s.value)
    }

    /// The sum of every sample `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    /// The declared type of a family.
    pub fn kind(&self, family: &str) -> Option<&str> {
        self.types.get(family).map(String::as_str)
    }
}

fn valid_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// The family a sample name belongs to, given the declared families.
fn family_of<'a>(name: &'a str, types: &HashMap<String, String>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if types.get(base).is_some_and(|t| t == "histogram" || t == "summary") {
                return base;
            }
        }
    }
    name
}

/// Parses `text` strictly.
pub fn parse(text: &str) -> Result<Scrape, ParseError> {
    let mut scrape = Scrape::default();
    let mut current: Option<String> = None;
    let mut finished: HashSet<String> = HashSet::new();
    let mut seen: HashSet<(String, BTreeMap<String, String>)> = HashSet::new();
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(ParseError { line: text.lines().count(), message: "missing final newline".into() });
    }
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        let err = |m: String| ParseError { line: n, message: m };
        if line.is_empty() {
            return Err(err("empty line".into()));
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let (kw, rest) = rest.split_once(' ').ok_or_else(|| err("bad comment".into()))?;
            let (name, arg) = rest.split_once(' ').ok_or_else(|| err(format!("{kw} without text")))?;
            if !valid_name(name) {
                return Err(err(format!("bad metric name {name:?}")));
            }
            match kw {
                "HELP" => {
                    if scrape.help.insert(name.into(), arg.into()).is_some() {
                        return Err(err(format!("second HELP for {name}")));
                    }
                }
                "TYPE" => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&arg) {
                        return Err(err(format!("unknown type {arg:?}")));
                    }
                    if scrape.types.insert(name.into(), arg.into()).is_some() {
                        return Err(err(format!("second TYPE for {name}")));
                    }
                    if let Some(prev) = current.replace(name.into()) {
                        finished.insert(prev);
                    }
                }
                _ => return Err(err(format!("unknown comment keyword {kw:?}"))),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(err("comment must be '# HELP' or '# TYPE'".into()));
        }
        // name{labels} value
        let (name_part, rest) = match line.find('{') {
            Some(b) => (&line[..b], &line[b..]),
            None => line
                .split_once(' ')
                .map(|(a, _)| (a, &line[a.len()..]))
                .ok_or_else(|| err("no value".into()))?,
        };
        if !valid_name(name_part) {
            return Err(err(format!("bad metric name {name_part:?}")));
        }
        let mut labels = BTreeMap::new();
        let mut rest = rest;
        if let Some(after) = rest.strip_prefix('{') {
            let mut chars = after.char_indices().peekable();
            let mut end = None;
            loop {
                // label name
                let start = match chars.peek() {
                    Some((_, '}')) => {
                        end = chars.next().map(|(j, _)| j);
                        break;
                    }
                    Some((j, _)) => *j,
                    None => break,
                };
                let mut eq = None;
                for (j, c) in chars.by_ref() {
                    if c == '=' {
                        eq = Some(j);
                        break;
                    }
                }
                let eq = eq.ok_or_else(|| err("label without '='".into()))?;
                let lname = &after[start..eq];
                if !valid_label(lname) {
                    return Err(err(format!("bad label name {lname:?}")));
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(err("label value must be quoted".into()));
                }
                let mut value = String::new();
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    match c {
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            _ => return Err(err("bad escape in label value".into())),
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\n' => return Err(err("newline in label value".into())),
                        c => value.push(c),
                    }
                }
                if !closed {
                    return Err(err("unterminated label value".into()));
                }
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(err(format!("label {lname} twice")));
                }
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((j, '}')) => {
                        end = Some(j);
                        break;
                    }
                    _ => return Err(err("expected ',' or '}' after a label".into())),
                }
            }
            let end = end.ok_or_else(|| err("unterminated label set".into()))?;
            rest = &after[end + 1..];
        }
        let value =
            rest.strip_prefix(' ').ok_or_else(|| err("expected one space before the value".into()))?;
        if value.contains(' ') {
            return Err(err("timestamps are not expected".into()));
        }
        let value = parse_value(value).ok_or_else(|| err(format!("bad value {value:?}")))?;
        let family = family_of(name_part, &scrape.types);
        if current.as_deref() != Some(family) {
            return Err(err(format!("sample {name_part} outside its family's TYPE block")));
        }
        if finished.contains(family) {
            return Err(err(format!("family {family} is not contiguous")));
        }
        if !seen.insert((name_part.to_string(), labels.clone())) {
            return Err(err(format!("duplicate sample {name_part}{labels:?}")));
        }
        let kind = scrape.types.get(family).map(String::as_str);
        if kind == Some("counter") && (value.is_nan() || value < 0.0) {
            return Err(err(format!("counter {name_part} is negative or NaN")));
        }
        if kind == Some("histogram") && name_part == family {
            return Err(err(format!("histogram {family} has a bare sample")));
        }
        scrape.samples.push(Sample { name: name_part.to_string(), labels, value });
    }
    check_histograms(&scrape)?;
    Ok(scrape)
}

/// Buckets cumulative, `+Inf` present and equal to `_count`, `_sum` present.
fn check_histograms(scrape: &Scrape) -> Result<(), ParseError> {
    let err = |m: String| ParseError { line: 0, message: m };
    for (family, kind) in &scrape.types {
        if kind != "histogram" {
            continue;
        }
        // Group buckets by their labels without `le`.
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for s in scrape.samples.iter().filter(|s| s.name == format!("{family}_bucket")) {
            let mut labels = s.labels.clone();
            let le = labels.remove("le").ok_or_else(|| err(format!("{family}_bucket without le")))?;
            let le = parse_value(&le).ok_or_else(|| err(format!("{family}: bad le {le:?}")))?;
            series.entry(labels).or_default().push((le, s.value));
        }
        for (labels, buckets) in series {
            let mut prev = (f64::NEG_INFINITY, 0.0);
            for &(le, v) in &buckets {
                if le <= prev.0 || v < prev.1 {
                    return Err(err(format!("{family}{labels:?}: buckets not increasing")));
                }
                prev = (le, v);
            }
            if prev.0 != f64::INFINITY {
                return Err(err(format!("{family}{labels:?}: no +Inf bucket")));
            }
            let find = |suffix: &str| {
                scrape
                    .samples
                    .iter()
                    .find(|s| s.name == format!("{family}{suffix}") && s.labels == labels)
                    .map(|s| s.value)
            };
            match (find("_count"), find("_sum")) {
                (Some(c), Some(_)) if c == prev.1 => {}
                (Some(c), Some(_)) => {
                    return Err(err(format!("{family}{labels:?}: _count {c} != +Inf {}", prev.1)))
                }
                _ => return Err(err(format!("{family}{labels:?}: _sum or _count missing"))),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_and_rejects_broken_text() {
        let ok = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"\"} 3\n\
                  # HELP h_seconds H.\n# TYPE h_seconds histogram\nh_seconds_bucket{le=\"0.1\"} 1\n\
                  h_seconds_bucket{le=\"+Inf\"} 2\nh_seconds_sum 0.5\nh_seconds_count 2\n";
        let s = parse(ok).unwrap();
        assert_eq!(s.value("a_total", &[("x", "1"), ("y", "q\"")]), Some(3.0));
        for bad in [
            "a_total 1\n",                                    // no TYPE
            "# TYPE a_total counter\na_total  1\n",           // two spaces
            "# TYPE a_total counter\na_total{x=1} 1\n",       // unquoted
            "# TYPE a_total counter\na_total -1\n",           // negative counter
            "# TYPE a_total counter\na_total 1\na_total 2\n", // duplicate
            "# TYPE a_total counter\na_total 1",              // no final newline
            "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", // no +Inf
            "# TYPE a counter\n# TYPE b counter\na 1\n",                      // outside its block
        ] {
            assert!(parse(bad).is_err(), "accepted {bad:?}");
        }
    }
}
