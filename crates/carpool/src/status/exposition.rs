//! Reads Prometheus' text format (what every component answers at
//! `/carpool-internal/metrics`) back into samples, for the admin's live
//! view. Only what the encoder writes: `name{label="value",...} number`,
//! label values with `\\`, `\"` and `\n` escapes; comments skipped.

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's name (`_bucket`, `_total`… included).
    pub name: String,
    /// Its labels, in the order written.
    pub labels: Vec<(String, String)>,
    /// Its value.
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, `""` when absent.
    pub fn label(&self, key: &str) -> &str {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// The samples of `text`; lines that do not parse are skipped.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(line)
        .collect()
}

fn line(l: &str) -> Option<Sample> {
    let name_end = l.find(['{', ' '])?;
    let name = l[..name_end].to_string();
    let mut rest = &l[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches(',');
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            let r = rest[eq + 1..].strip_prefix('"')?;
            let (value, used) = quoted(r)?;
            labels.push((key, value));
            rest = &r[used..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// A label value up to its closing quote: (unescaped, bytes used with the quote).
fn quoted(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, i + 1)),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let text = "# HELP a_total A.\n# TYPE a_total counter\na_total{component=\"fe\",parent=\"c\\\"1\\\\\"} 3\nb 2.5\nh_bucket{le=\"+Inf\"} 7\nnot a sample\n";
        let s = parse(text);
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].name, "a_total");
        assert_eq!(s[0].label("parent"), "c\"1\\");
        assert_eq!(s[0].label("component"), "fe");
        assert_eq!(s[0].value, 3.0);
        assert_eq!((s[1].name.as_str(), s[1].value), ("b", 2.5));
        assert_eq!(s[2].label("le"), "+Inf");
        assert_eq!(s[2].label("missing"), "");
    }

    #[test]
    fn what_the_encoder_writes_reads_back() {
        let mut f = proxy::metrics::Families::new("cache 1");
        f.counter(
            "x",
            "X.",
            vec![(vec![("tier".into(), "mem\nory".to_string())], 4.0)],
        );
        let s = parse(&f.encode());
        let x = s.iter().find(|s| s.name == "x_total").expect("x_total");
        assert_eq!(x.label("component"), "cache 1");
        assert_eq!(x.label("tier"), "mem\nory");
        assert_eq!(x.value, 4.0);
    }
}
