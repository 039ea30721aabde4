//! The configuration file's YAML, read into a small tree that keeps the line and column of
//! every key and value (yaml-rust2's event parser), so errors and provenance can point at them.

use std::collections::HashMap;

use serde_json::Value;
use yaml_rust2::{
    parser::{Event, MarkedEventReceiver, Parser},
    scanner::{Marker, TScalarStyle},
};

/// A position in the file, 1-based.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Self {
            line: m.line(),
            col: m.col() + 1,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    Scalar(Value, Pos),
    Seq(Vec<Node>, Pos),
    /// Entries in file order: key, the key's position, value.
    Map(Vec<(String, Pos, Node)>, Pos),
}

impl Node {
    pub fn pos(&self) -> Pos {
        match self {
            Node::Scalar(_, p) | Node::Seq(_, p) | Node::Map(_, p) => *p,
        }
    }

    /// The plain value (positions dropped).
    pub fn to_value(&self) -> Value {
        match self {
            Node::Scalar(v, _) => v.clone(),
            Node::Seq(items, _) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Map(entries, _) => Value::Object(
                entries
                    .iter()
                    .map(|(k, _, v)| (k.clone(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// A YAML error with its position.
#[derive(Clone, Debug, PartialEq)]
pub struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document. An empty file (or one with only comments) is `None`.
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut events = Events::default();
    Parser::new_from_str(text)
        .load(&mut events, false)
        .map_err(|e| YamlError {
            pos: (*e.marker()).into(),
            message: e.info().to_string(),
        })?;
    let mut builder = Builder {
        events: events.0.into_iter(),
        anchors: HashMap::new(),
    };
    builder.document()
}

#[derive(Default)]
struct Events(Vec<(Event, Marker)>);

impl MarkedEventReceiver for Events {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        self.0.push((ev, mark));
    }
}

struct Builder {
    events: std::vec::IntoIter<(Event, Marker)>,
    anchors: HashMap<usize, Node>,
}

impl Builder {
    fn document(&mut self) -> Result<Option<Node>, YamlError> {
        loop {
            match self.events.next() {
                None | Some((Event::StreamEnd, _)) => return Ok(None),
                Some((Event::StreamStart | Event::DocumentStart, _)) => continue,
                Some((ev, mark)) => return self.node(ev, mark).map(Some),
            }
        }
    }

    fn node(&mut self, ev: Event, mark: Marker) -> Result<Node, YamlError> {
        let pos = Pos::from(mark);
        let (node, anchor) = match ev {
            Event::Scalar(text, style, anchor, tag) => {
                let plain =
                    style == TScalarStyle::Plain && tag.as_ref().is_none_or(|t| t.suffix != "str");
                (Node::Scalar(scalar(text, plain), pos), anchor)
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().ok_or_else(|| YamlError {
                    pos,
                    message: "alias to an unknown anchor".into(),
                })?;
                return Ok(node);
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    match self.next(pos)? {
                        (Event::SequenceEnd, _) => break,
                        (ev, m) => items.push(self.node(ev, m)?),
                    }
                }
                (Node::Seq(items, pos), anchor)
            }
            Event::MappingStart(anchor, _) => {
                let mut entries: Vec<(String, Pos, Node)> = Vec::new();
                loop {
                    let (key, key_pos) = match self.next(pos)? {
                        (Event::MappingEnd, _) => break,
                        (ev, m) => match self.node(ev, m)? {
                            Node::Scalar(v, p) => (scalar_key(v), p),
                            other => {
                                return Err(YamlError {
                                    pos: other.pos(),
                                    message: "a key must be a plain name, not a list or mapping"
                                        .into(),
                                });
                            }
                        },
                    };
                    if entries.iter().any(|(k, _, _)| *k == key) {
                        return Err(YamlError {
                            pos: key_pos,
                            message: format!("duplicate key {key:?}"),
                        });
                    }
                    let (ev, m) = self.next(pos)?;
                    let value = self.node(ev, m)?;
                    entries.push((key, key_pos, value));
                }
                (Node::Map(entries, pos), anchor)
            }
            other => {
                return Err(YamlError {
                    pos,
                    message: format!("unexpected YAML event {other:?}"),
                });
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    fn next(&mut self, start: Pos) -> Result<(Event, Marker), YamlError> {
        self.events.next().ok_or(YamlError {
            pos: start,
            message: "unterminated list or mapping".into(),
        })
    }
}

fn scalar_key(v: Value) -> String {
    match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Resolves a scalar as YAML 1.2's core schema does: unquoted `null`/`~`/empty, booleans and
/// numbers are typed; everything else (and anything quoted) is a string.
fn scalar(text: String, plain: bool) -> Value {
    if !plain {
        return Value::String(text);
    }
    match text.as_str() {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    if let Ok(n) = text.parse::<u64>() {
        return Value::from(n);
    }
    if let Ok(n) = text.parse::<i64>() {
        return Value::from(n);
    }
    let looks_numeric = text
        .trim_start_matches(['-', '+'])
        .starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if looks_numeric
        && let Ok(f) = text.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    Value::String(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_and_positions() {
        let text = "a:\n  b: 1\n  c: \"1\"\n  d: [x, y]\n  e: ~\n  f: 4MiB\nflag: false\n";
        let node = parse(text).expect("parses").expect("not empty");
        assert_eq!(
            node.to_value(),
            json!({"a": {"b": 1, "c": "1", "d": ["x", "y"], "e": null, "f": "4MiB"}, "flag": false})
        );
        let Node::Map(top, _) = &node else {
            panic!("not a map")
        };
        assert_eq!(top[0].1, Pos { line: 1, col: 1 });
        let Node::Map(a, _) = &top[0].2 else {
            panic!("not a map")
        };
        assert_eq!(a[1].0, "c");
        assert_eq!(a[1].1, Pos { line: 3, col: 3 });
        assert_eq!(a[1].2.pos(), Pos { line: 3, col: 6 });
        assert_eq!(top[1].1, Pos { line: 7, col: 1 });
    }

    #[test]
    fn empty_and_comments_only() {
        assert_eq!(parse(""), Ok(None));
        assert_eq!(parse("# nothing\n"), Ok(None));
    }

    #[test]
    fn errors_have_positions() {
        let err = parse("a:\n  b: [1, 2\n").expect_err("unterminated");
        assert!(err.pos.line >= 2, "{err:?}");
        let err = parse("a: 1\na: 2\n").expect_err("duplicate");
        assert_eq!(err.pos, Pos { line: 2, col: 1 });
        assert!(err.message.contains("duplicate"), "{err:?}");
    }

    #[test]
    fn anchors_and_aliases() {
        let node = parse("a: &x [1, 2]\nb: *x\n")
            .expect("parses")
            .expect("doc");
        assert_eq!(node.to_value(), json!({"a": [1, 2], "b": [1, 2]}));
    }
}
