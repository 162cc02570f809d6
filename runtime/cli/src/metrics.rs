//! Reads the Prometheus text exposition format (the lines the appliance writes: `# HELP`,
//! `# TYPE`, and `name{label="value",…} number`) into samples, for `sovereign metrics --json`.
//! Pure; refuses a line it cannot read rather than guessing.

use std::collections::BTreeMap;

use serde::Serialize;

/// One sample.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Metric name (with `_bucket`, `_sum`, `_count` for histograms).
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Value.
    pub value: f64,
}

/// Every sample in `text`, in order.
pub fn samples(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(sample(line).map_err(|e| format!("line {}: {e}: {line:?}", n + 1))?);
    }
    Ok(out)
}

fn sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
        return Err("bad metric name".into());
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        loop {
            let Some((i, c)) = chars.next() else { return Err("unterminated labels".into()) };
            match c {
                '}' if key.is_empty() => {
                    rest = &inner[i + 1..];
                    break;
                }
                ',' if key.is_empty() => {}
                '=' => {
                    if chars.next().map(|(_, c)| c) != Some('"') {
                        return Err("label value not quoted".into());
                    }
                    let mut value = String::new();
                    loop {
                        match chars.next().map(|(_, c)| c) {
                            Some('"') => break,
                            Some('\\') => match chars.next().map(|(_, c)| c) {
                                Some('n') => value.push('\n'),
                                Some(c @ ('\\' | '"')) => value.push(c),
                                _ => return Err("bad escape in a label value".into()),
                            },
                            Some(c) => value.push(c),
                            None => return Err("unterminated label value".into()),
                        }
                    }
                    labels.insert(std::mem::take(&mut key), value);
                }
                c if c.is_ascii_alphanumeric() || c == '_' => key.push(c),
                _ => return Err("bad label name".into()),
            }
        }
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| "value is not a number")?,
    };
    Ok(Sample { name: name.into(), labels, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_escapes_and_special_values() {
        let text =
            "# HELP a x\n# TYPE a counter\na 3\nb{k=\"v\",q=\"a\\\"b\\\\c\\nd\"} 1.5\nc_bucket{le=\"+Inf\"} +Inf\n";
        let s = samples(text).expect("parses");
        assert_eq!(s.len(), 3);
        assert_eq!((s[0].name.as_str(), s[0].value), ("a", 3.0));
        assert_eq!(s[1].labels["q"], "a\"b\\c\nd");
        assert_eq!(s[2].labels["le"], "+Inf");
        assert!(s[2].value.is_infinite());
        for bad in ["a", "a{b=c} 1", "a{b=\"c} 1", "1a x", "a{b=\"c\"} one"] {
            assert!(samples(bad).is_err(), "{bad}");
        }
    }
}
