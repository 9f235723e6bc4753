//! A small YAML value, its emitter, and a strict reader.
//!
//! Manifests and kubeadm files are built as [`Y`] values and emitted in
//! block style (sequences under a key not indented, as kubectl prints
//! them). Strings are written plain only when YAML 1.1 readers (Go's
//! yaml.v2, which kubeadm and kubectl use) cannot take them for anything
//! else; otherwise double-quoted, or as a literal block when multi-line.
//!
//! [`parse`] reads a multi-document stream into [`Node`]s with go-yaml's
//! scalar typing, refusing duplicate keys, anchors and aliases, and non-
//! scalar keys. It is std plus `saphyr-parser` (an event parser with no
//! other dependency), so kubesim can use it.

use saphyr_parser::{Event, Parser, ScalarStyle};

/// A value to emit.
#[derive(Debug, Clone, PartialEq)]
pub enum Y {
    Str(String),
    Int(i64),
    Bool(bool),
    Seq(Vec<Y>),
    Map(Vec<(String, Y)>),
}

impl From<&str> for Y {
    fn from(s: &str) -> Y {
        Y::Str(s.to_owned())
    }
}

impl From<String> for Y {
    fn from(s: String) -> Y {
        Y::Str(s)
    }
}

impl From<&String> for Y {
    fn from(s: &String) -> Y {
        Y::Str(s.clone())
    }
}

impl From<i64> for Y {
    fn from(n: i64) -> Y {
        Y::Int(n)
    }
}

impl From<u16> for Y {
    fn from(n: u16) -> Y {
        Y::Int(i64::from(n))
    }
}

impl From<bool> for Y {
    fn from(b: bool) -> Y {
        Y::Bool(b)
    }
}

impl<T: Into<Y>> From<Vec<T>> for Y {
    fn from(items: Vec<T>) -> Y {
        Y::Seq(items.into_iter().map(Into::into).collect())
    }
}

/// A mapping from `(key, value)` pairs, in order.
#[macro_export]
macro_rules! ymap {
    ($($k:expr => $v:expr),* $(,)?) => {
        $crate::kube::yaml::Y::Map(vec![$(($k.to_string(), $crate::kube::yaml::Y::from($v))),*])
    };
}
pub use ymap;

impl Y {
    /// Adds `key: value` to a mapping (no-op on other values).
    pub fn push(&mut self, key: &str, value: impl Into<Y>) {
        if let Y::Map(pairs) = self {
            pairs.push((key.to_owned(), value.into()));
        }
    }
}

/// Emits documents separated by `---`.
pub fn emit_documents(docs: &[Y]) -> String {
    docs.iter().map(emit).collect::<Vec<_>>().join("---\n")
}

/// Emits one document (a mapping or sequence at the top level).
pub fn emit(doc: &Y) -> String {
    let mut out = String::new();
    emit_block(doc, 0, &mut out);
    out
}

fn emit_block(value: &Y, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Y::Map(pairs) => {
            for (key, v) in pairs {
                out.push_str(&pad);
                out.push_str(&scalar_text(key));
                out.push(':');
                emit_after_key(v, indent, out);
            }
        }
        Y::Seq(items) => {
            for item in items {
                let mut nested = String::new();
                match item {
                    Y::Map(p) if !p.is_empty() => emit_block(item, indent + 2, &mut nested),
                    Y::Seq(s) if !s.is_empty() => emit_block(item, indent + 2, &mut nested),
                    _ => {
                        nested.push_str(&" ".repeat(indent + 2));
                        nested.push_str(&inline(item, indent + 2));
                        nested.push('\n');
                    }
                }
                out.push_str(&pad);
                out.push_str("- ");
                out.push_str(&nested[indent + 2..]);
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&inline(other, indent));
            out.push('\n');
        }
    }
}

fn emit_after_key(v: &Y, indent: usize, out: &mut String) {
    match v {
        Y::Map(p) if !p.is_empty() => {
            out.push('\n');
            emit_block(v, indent + 2, out);
        }
        Y::Seq(s) if !s.is_empty() => {
            out.push('\n');
            emit_block(v, indent, out);
        }
        _ => {
            out.push(' ');
            out.push_str(&inline(v, indent + 2));
            out.push('\n');
        }
    }
}

/// A scalar or an empty collection on one line (a multi-line string as a
/// literal block indented by `indent`).
fn inline(v: &Y, indent: usize) -> String {
    match v {
        Y::Str(s) => string_text(s, indent),
        Y::Int(n) => n.to_string(),
        Y::Bool(b) => b.to_string(),
        Y::Seq(_) => "[]".to_owned(),
        Y::Map(_) => "{}".to_owned(),
    }
}

fn string_text(s: &str, indent: usize) -> String {
    let literal_ok = s.contains('\n')
        && !s.starts_with([' ', '\n'])
        && !s.ends_with("\n\n")
        && s.chars().all(|c| c == '\n' || !c.is_control());
    if !literal_ok {
        return scalar_text(s);
    }
    let pad = " ".repeat(indent);
    let (body, chomp) = match s.strip_suffix('\n') {
        Some(body) => (body, "|"),
        None => (s, "|-"),
    };
    let mut text = chomp.to_owned();
    for line in body.split('\n') {
        text.push('\n');
        if !line.is_empty() {
            text.push_str(&pad);
            text.push_str(line);
        }
    }
    text
}

/// A one-line scalar: plain when unambiguous, else double-quoted.
fn scalar_text(s: &str) -> String {
    if plain_ok(s) {
        return s.to_owned();
    }
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\t' => q.push_str("\\t"),
            c if c.is_control() => q.push_str(&format!("\\u{:04x}", c as u32)),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Words YAML 1.1 reads as booleans or null.
const RESERVED: [&str; 13] = [
    "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "none", "nan", "inf",
];

fn plain_ok(s: &str) -> bool {
    // A leading '-' is plain only before a letter or another '-' (a flag),
    // never before a digit (a number) or a space (a sequence entry).
    let flag = s.starts_with('-') && s[1..].starts_with(|c: char| c.is_ascii_alphabetic() || c == '-');
    let first_ok = flag || s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/');
    let chars_ok = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._/:@+=-".contains(c));
    first_ok && chars_ok && !s.ends_with(':') && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
}

/// A parsed value, typed as go-yaml types plain scalars.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

impl Node {
    /// The value of `key` in a mapping.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The items, if this is a sequence.
    pub fn items(&self) -> &[Node] {
        match self {
            Node::Seq(items) => items,
            _ => &[],
        }
    }

    /// The value at `path` of mapping keys.
    pub fn at(&self, path: &[&str]) -> Option<&Node> {
        path.iter().try_fold(self, |node, key| node.get(key))
    }

    /// A short name of the value's type, for errors.
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "boolean",
            Node::Int(_) => "integer",
            Node::Float(_) => "number",
            Node::Str(_) => "string",
            Node::Seq(_) => "list",
            Node::Map(_) => "mapping",
        }
    }
}

/// Largest nesting accepted (our documents are far shallower).
const DEPTH_MAX: usize = 64;

/// Parses every non-empty document of `text`.
pub fn parse(text: &str) -> Result<Vec<Node>, String> {
    enum Open {
        Seq(Vec<Node>),
        Map(Vec<(String, Node)>, Option<String>),
    }
    let mut docs = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Node> = None;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| format!("invalid YAML: {e}"))?;
        let line = span.start.line();
        let value = match event {
            Event::DocumentStart(_) => {
                root = None;
                continue;
            }
            Event::DocumentEnd => {
                if let Some(doc) = root.take()
                    && doc != Node::Null
                {
                    docs.push(doc);
                }
                continue;
            }
            Event::Alias(_) => return Err(format!("line {line}: aliases are not accepted")),
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) if anchor != 0 => {
                return Err(format!("line {line}: anchors are not accepted"));
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if stack.len() >= DEPTH_MAX => {
                return Err(format!("line {line}: nested deeper than {DEPTH_MAX} levels"));
            }
            Event::SequenceStart(..) => {
                stack.push(Open::Seq(Vec::new()));
                continue;
            }
            Event::MappingStart(..) => {
                stack.push(Open::Map(Vec::new(), None));
                continue;
            }
            Event::Scalar(_, _, anchor, _) if anchor != 0 => {
                return Err(format!("line {line}: anchors are not accepted"));
            }
            Event::Scalar(text, style, _, tag) => {
                if let Some(Open::Map(pairs, key @ None)) = stack.last_mut() {
                    if pairs.iter().any(|(k, _)| *k == text) {
                        return Err(format!("line {line}: duplicate key {text:?}"));
                    }
                    *key = Some(text.into_owned());
                    continue;
                }
                let plain = style == ScalarStyle::Plain && tag.is_none();
                if plain {
                    resolve_plain(&text)
                } else {
                    Node::Str(text.into_owned())
                }
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Open::Seq(items)) => Node::Seq(items),
                _ => return Err(format!("line {line}: unbalanced sequence")),
            },
            Event::MappingEnd => match stack.pop() {
                Some(Open::Map(pairs, None)) => Node::Map(pairs),
                _ => return Err(format!("line {line}: unbalanced mapping")),
            },
            _ => continue,
        };
        match stack.last_mut() {
            None => root = Some(value),
            Some(Open::Seq(items)) => items.push(value),
            Some(Open::Map(pairs, key)) => match key.take() {
                Some(k) => pairs.push((k, value)),
                None => return Err(format!("line {line}: a mapping key must be a string")),
            },
        }
    }
    Ok(docs)
}

/// go-yaml's (YAML 1.1) reading of a plain scalar.
fn resolve_plain(s: &str) -> Node {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => return Node::Null,
        _ => {}
    }
    for (words, value) in [
        (["y", "yes", "true", "on"], true),
        (["n", "no", "false", "off"], false),
    ] {
        // Each word in lower case, Capitalised or UPPER case, as go-yaml lists them.
        let matches = words.iter().any(|w| {
            let capital = w[..1].to_ascii_uppercase() + &w[1..];
            s == *w || s == capital || s == w.to_ascii_uppercase()
        });
        if matches {
            return Node::Bool(value);
        }
    }
    let digits = s.replace('_', "");
    let (neg, body) = match digits.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, digits.strip_prefix('+').unwrap_or(&digits)),
    };
    let parsed = if let Some(hex) = body.strip_prefix("0x") {
        i64::from_str_radix(hex, 16).ok()
    } else if let Some(bin) = body.strip_prefix("0b") {
        i64::from_str_radix(bin, 2).ok()
    } else if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(body, 8).ok()
    } else if !body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse().ok()
    } else {
        None
    };
    if let Some(n) = parsed {
        return Node::Int(if neg { -n } else { n });
    }
    let looks_numeric = s.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c));
    match s.parse::<f64>() {
        Ok(f) if looks_numeric => Node::Float(f),
        _ => Node::Str(s.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emitted_documents_read_back_as_the_same_values() {
        let doc = ymap! {
            "apiVersion" => "v1",
            "kind" => "ConfigMap",
            "count" => 3i64,
            "on" => true,
            "labels" => ymap! { "app.kubernetes.io/name" => "x", "tier" => "" },
            "args" => vec!["--ip-masq", "--kube-subnet-mgr"],
            "ports" => Y::Seq(vec![ymap! { "name" => "http", "port" => 80i64 }, ymap! {}]),
            "nested" => Y::Seq(vec![Y::Seq(vec!["a".into(), "b".into()])]),
            "empty" => Y::Seq(vec![]),
            "tricky" => vec!["yes", "No", "10.0.0.0/8", "0600", "1e3", "a: b", "#x", "ends:", "\"q\"", "tab\there", ".inf", "-"],
            "script" => "line one\n  indented\n\nlast\n",
            "noeol" => "a\nb",
        };
        let text = emit(&doc);
        assert!(
            text.contains("args:\n- --ip-masq\n- --kube-subnet-mgr\n"),
            "{text}"
        );
        assert!(
            text.contains("script: |\n  line one\n    indented\n\n  last\n"),
            "{text}"
        );
        let back = parse(&text).unwrap();
        assert_eq!(back.len(), 1);
        let tricky: Vec<&str> = back[0]
            .get("tricky")
            .unwrap()
            .items()
            .iter()
            .map(|n| n.as_str().unwrap())
            .collect();
        assert_eq!(
            tricky,
            [
                "yes",
                "No",
                "10.0.0.0/8",
                "0600",
                "1e3",
                "a: b",
                "#x",
                "ends:",
                "\"q\"",
                "tab\there",
                ".inf",
                "-"
            ]
        );
        assert_eq!(back[0].get("count"), Some(&Node::Int(3)));
        assert_eq!(back[0].get("on"), Some(&Node::Bool(true)));
        assert_eq!(back[0].at(&["labels", "tier"]).unwrap().as_str(), Some(""));
        assert_eq!(
            back[0].get("script").unwrap().as_str(),
            Some("line one\n  indented\n\nlast\n")
        );
        assert_eq!(back[0].get("noeol").unwrap().as_str(), Some("a\nb"));
        assert_eq!(back[0].get("empty"), Some(&Node::Seq(vec![])));
        assert_eq!(back[0].get("ports").unwrap().items()[1], Node::Map(vec![]));
        assert_eq!(back[0].get("nested").unwrap().items()[0].items().len(), 2);
    }

    #[test]
    fn plain_scalars_are_typed_as_go_yaml_types_them() {
        let docs = parse(
            "a: yes\nb: off\nc: 0x1f\nd: 010\ne: 1.5\nf: ~\ng: \"6443\"\nh: 6443\ni: v1.31.0\nj: 1_000\n",
        )
        .unwrap();
        let d = &docs[0];
        assert_eq!(d.get("a"), Some(&Node::Bool(true)));
        assert_eq!(d.get("b"), Some(&Node::Bool(false)));
        assert_eq!(d.get("c"), Some(&Node::Int(31)));
        assert_eq!(d.get("d"), Some(&Node::Int(8)));
        assert_eq!(d.get("e"), Some(&Node::Float(1.5)));
        assert_eq!(d.get("f"), Some(&Node::Null));
        assert_eq!(d.get("g"), Some(&Node::Str("6443".into())));
        assert_eq!(d.get("h"), Some(&Node::Int(6443)));
        assert_eq!(d.get("i"), Some(&Node::Str("v1.31.0".into())));
        assert_eq!(d.get("j"), Some(&Node::Int(1000)));
    }

    #[test]
    fn the_reader_refuses_what_strict_decoding_refuses() {
        assert_eq!(
            parse("a: 1\nb: 2\na: 3\n").unwrap_err(),
            "line 3: duplicate key \"a\""
        );
        assert!(parse("a: &x 1\nb: *x\n").unwrap_err().contains("not accepted"));
        assert!(parse("? [a]\n: 1\n").unwrap_err().contains("must be a string"));
        assert!(parse("a: [1, 2\n").unwrap_err().starts_with("invalid YAML"));
        let docs = parse("---\na: 1\n---\n---\nb: 2\n...\n").unwrap();
        assert_eq!(docs.len(), 2);
    }
}
