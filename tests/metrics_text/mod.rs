//! A strict parser of the text the metrics endpoints serve (OpenMetrics 1.0
//! text, which Prometheus scrapes natively), for the metrics tests: any
//! line outside the grammar, a sample outside its declared family, a
//! family declared twice, a bad escape, a non-cumulative histogram or a
//! `_count` other than its `+Inf` bucket fails the parse with the line.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

/// Labels of one sample, by name.
pub type Labels = BTreeMap<String, String>;

#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Family {
    pub kind: String,
    pub help: Option<String>,
    pub unit: Option<String>,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub families: HashMap<String, Family>,
}

impl Metrics {
    /// The value of the sample `name` whose labels include `labels`: it
    /// must be the only such sample.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self
            .families
            .values()
            .flat_map(|f| &f.samples)
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(found.len() <= 1, "{name} {labels:?} matches {found:?}");
        found.first().map(|s| s.value)
    }

    /// Every sample called `name`.
    pub fn all(&self, name: &str) -> Vec<&Sample> {
        self.families
            .values()
            .flat_map(|f| &f.samples)
            .filter(|s| s.name == name)
            .collect()
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    is_name(s) && !s.contains(':')
}

fn number(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ if s.is_empty()
            || s.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            Err(format!("bad number {s:?}"))
        }
        _ => s.parse().map_err(|_| format!("bad number {s:?}")),
    }
}

/// `{a="x",b="y"}` at the start of `s`: the labels and the rest.
fn labels(s: &str) -> Result<(Labels, &str), String> {
    let mut out = Labels::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((out, s));
    };
    if let Some(r) = rest.strip_prefix('}') {
        return Ok((out, r));
    }
    loop {
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_label_name(name) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value".into()),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) => return Err("newline in label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if out.insert(name.to_string(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        rest = rest.strip_prefix(',').ok_or("labels not separated by ,")?;
    }
}

/// The family a sample name belongs to, given the family being read.
fn belongs(sample: &str, family: &str, kind: &str) -> bool {
    let suffixes: &[&str] = match kind {
        "counter" => &["_total", "_created"],
        "gauge" | "unknown" => &[""],
        "info" => &["_info"],
        "histogram" => &["_bucket", "_count", "_sum", "_created"],
        _ => &[],
    };
    suffixes
        .iter()
        .any(|s| sample.strip_suffix(s) == Some(family))
}

/// Parses `text` strictly; `Err` names the line.
pub fn parse(text: &str) -> Result<Metrics, String> {
    let mut m = Metrics::default();
    let body = text
        .strip_suffix("# EOF\n")
        .ok_or("the text does not end with \"# EOF\\n\"")?;
    let mut current: Option<String> = None;
    for (n, line) in body.lines().enumerate() {
        let err = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(err("empty line".into()));
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (what, name, rest) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next(),
            );
            if !is_name(name) {
                return Err(err(format!("bad metric name {name:?}")));
            }
            if current.as_deref() != Some(name) {
                if m.families.contains_key(name) {
                    return Err(err(format!("family {name} declared twice")));
                }
                m.families.insert(name.to_string(), Family::default());
                current = Some(name.to_string());
            }
            let f = m.families.get_mut(name).unwrap();
            let rest = rest.ok_or_else(|| err("no value".into()))?;
            match what {
                "TYPE" => {
                    if ![
                        "counter",
                        "gauge",
                        "histogram",
                        "info",
                        "unknown",
                        "stateset",
                        "summary",
                        "gaugehistogram",
                    ]
                    .contains(&rest)
                    {
                        return Err(err(format!("unknown type {rest}")));
                    }
                    if !f.kind.is_empty() || !f.samples.is_empty() {
                        return Err(err("TYPE after samples or twice".into()));
                    }
                    f.kind = rest.to_string();
                }
                "HELP" => f.help = Some(rest.to_string()),
                "UNIT" => {
                    if !name.ends_with(&format!("_{rest}")) {
                        return Err(err("the name does not end with its unit".into()));
                    }
                    f.unit = Some(rest.to_string());
                }
                _ => return Err(err(format!("unknown comment {what}"))),
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .ok_or_else(|| err("no value".into()))?;
        let name = &line[..name_end];
        if !is_name(name) {
            return Err(err(format!("bad metric name {name:?}")));
        }
        let (labels, rest) = labels(&line[name_end..]).map_err(err)?;
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = number(fields.next().unwrap_or_default()).map_err(err)?;
        if fields.next().is_some() {
            return Err(err(
                "more than a value (timestamps and exemplars unexpected)".into(),
            ));
        }
        let fam = current
            .clone()
            .ok_or_else(|| err("sample before any TYPE".into()))?;
        let f = m.families.get_mut(&fam).unwrap();
        if f.kind.is_empty() {
            return Err(err("sample before its TYPE".into()));
        }
        if !belongs(name, &fam, &f.kind) {
            return Err(err(format!("sample outside its family {fam} ({})", f.kind)));
        }
        if f.kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(err("negative counter".into()));
        }
        f.samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    for (name, f) in &m.families {
        if f.kind == "histogram" {
            check_histogram(name, f)?;
        }
    }
    Ok(m)
}

/// Buckets in order of `le`, cumulative, ending at `+Inf` equal to
/// `_count`; one `_sum` and one `_count` per label set.
fn check_histogram(name: &str, f: &Family) -> Result<(), String> {
    /// Per label set: the buckets (le, value), `_count` and `_sum`.
    type Series = (Vec<(f64, f64)>, Option<f64>, Option<f64>);
    let mut series: BTreeMap<Labels, Series> = BTreeMap::new();
    for s in &f.samples {
        let mut key = s.labels.clone();
        let le = key.remove("le");
        let e = series.entry(key).or_default();
        if s.name.ends_with("_bucket") {
            let le = number(&le.ok_or(format!("{name}: bucket without le"))?)?;
            e.0.push((le, s.value));
        } else if le.is_some() {
            return Err(format!("{name}: le on {}", s.name));
        } else if s.name.ends_with("_count") {
            if e.1.replace(s.value).is_some() {
                return Err(format!("{name}: two _count"));
            }
        } else if s.name.ends_with("_sum") && e.2.replace(s.value).is_some() {
            return Err(format!("{name}: two _sum"));
        }
    }
    for (labels, (buckets, count, sum)) in series {
        let count = count.ok_or(format!("{name} {labels:?}: no _count"))?;
        sum.ok_or(format!("{name} {labels:?}: no _sum"))?;
        for w in buckets.windows(2) {
            if w[0].0.partial_cmp(&w[1].0) != Some(std::cmp::Ordering::Less) {
                return Err(format!("{name} {labels:?}: le not increasing: {w:?}"));
            }
            if w[0].1 > w[1].1 {
                return Err(format!("{name} {labels:?}: buckets not cumulative: {w:?}"));
            }
        }
        match buckets.last() {
            Some(&(le, n)) if le == f64::INFINITY && n == count => {}
            other => {
                return Err(format!(
                    "{name} {labels:?}: last bucket {other:?}, _count {count}"
                ))
            }
        }
    }
    Ok(())
}

#[test]
fn the_parser_refuses_what_it_must() {
    let good = "# TYPE a counter\na_total{x=\"1\"} 2\n# TYPE h histogram\n\
                h_sum 1.5\nh_count 2\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"+Inf\"} 2\n# EOF\n";
    parse(good).unwrap();
    for bad in [
        good.replace("# EOF\n", ""),
        good.replace("a_total", "b_total"),
        good.replace("x=\"1\"", "x=\"1\\q\""),
        good.replace("h_bucket{le=\"0.1\"} 1", "h_bucket{le=\"0.1\"} 3"),
        good.replace("h_count 2", "h_count 3"),
        good.replace("# TYPE h histogram\n", "# TYPE a counter\n"),
        good.replace(" 2\n# TYPE h", " -2\n# TYPE h"),
        good.replace("a_total{x=\"1\"} 2", "a_total{x=\"1\",x=\"2\"} 2"),
    ] {
        assert!(parse(&bad).is_err(), "accepted: {bad}");
    }
}
