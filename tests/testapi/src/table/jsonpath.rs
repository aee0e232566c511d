//! The JSONPath subset that printer columns use (see [`jsonpath`]).

use serde_json::Value;

#[derive(Clone, Debug)]
enum Segment {
    Field(String),
    Wildcard,
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Filter(Box<Filter>),
}

#[derive(Clone, Debug)]
struct Filter {
    path: Vec<Segment>,
    /// None tests for existence (`[?(@.x)]`).
    cmp: Option<(CmpOp, Value)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Evaluates the JSONPath subset used by printer columns against an object and returns the matches:
/// `.a.b.c`, `.a[0]` (negative indexes count from the end), `.a[1:3]`, `.a[*].b`, `.a.*`,
/// `.a['dotted.key']`, `.a[?(@.type=="Ready")].status` (also single quotes, `!=`, `<`, `<=`, `>`,
/// `>=`, and bare `[?(@.x)]` existence tests), with optional `$` root and `{...}` wrapping.
/// Missing paths and unparsable expressions give an empty Vec.
pub fn jsonpath(obj: &Value, path: &str) -> Vec<Value> {
    select(obj, path).into_iter().cloned().collect()
}

pub(super) fn select<'a>(obj: &'a Value, path: &str) -> Vec<&'a Value> {
    match parse_path(path) {
        Some(segments) => eval(&segments, vec![obj]),
        None => Vec::new(),
    }
}

fn parse_path(path: &str) -> Option<Vec<Segment>> {
    let mut p = path.trim();
    if let Some(inner) = p.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
        p = inner.trim();
    }
    let p = p.strip_prefix('$').unwrap_or(p);
    let mut parser = PathParser {
        chars: p.chars().collect(),
        pos: 0,
        in_filter: false,
    };
    let segments = parser.segments()?;
    (parser.pos == parser.chars.len()).then_some(segments)
}

struct PathParser {
    chars: Vec<char>,
    pos: usize,
    /// Inside a filter the path ends at whitespace or an operator instead of running to the end.
    in_filter: bool,
}

impl PathParser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn segments(&mut self) -> Option<Vec<Segment>> {
        let mut segments = Vec::new();
        // Be lenient about a missing leading dot (`metadata.name`).
        if !self.in_filter && !matches!(self.peek(), None | Some('.' | '[')) {
            segments.push(Segment::Field(self.name()));
        }
        loop {
            match self.peek() {
                None => break,
                Some('.') => {
                    self.pos += 1;
                    match self.peek() {
                        // Recursive descent is not part of the supported subset.
                        Some('.') => return None,
                        Some('*') => {
                            self.pos += 1;
                            segments.push(Segment::Wildcard);
                        }
                        _ => {
                            // An empty name (`{.}`, `.[0]`) refers to the current node.
                            let name = self.name();
                            if !name.is_empty() {
                                segments.push(Segment::Field(name));
                            }
                        }
                    }
                }
                Some('[') => {
                    self.pos += 1;
                    let content = self.bracket_content()?;
                    segments.push(parse_bracket(&content)?);
                }
                Some(_) if self.in_filter => break,
                Some(_) => return None,
            }
        }
        Some(segments)
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if c == '.' || c == '[' {
                break;
            }
            if self.in_filter && (c.is_whitespace() || "=!<>)&|".contains(c)) {
                break;
            }
            self.pos += 1;
            if c == '\\' {
                // `\.` keeps a dot inside a key, e.g. `.metadata.labels.app\.kubernetes\.io/name`.
                if let Some(next) = self.peek() {
                    name.push(next);
                    self.pos += 1;
                }
            } else {
                name.push(c);
            }
        }
        name
    }

    /// Reads up to the `]` that closes the bracket just opened, skipping quoted text and nesting.
    fn bracket_content(&mut self) -> Option<String> {
        let start = self.pos;
        let mut depth = 0usize;
        let mut quote: Option<char> = None;
        while let Some(c) = self.peek() {
            self.pos += 1;
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {
                    if c == '\\' {
                        self.pos += 1;
                    }
                }
                None => match c {
                    '\'' | '"' => quote = Some(c),
                    '[' | '(' => depth += 1,
                    ')' => depth = depth.saturating_sub(1),
                    ']' if depth == 0 => {
                        return Some(self.chars[start..self.pos - 1].iter().collect());
                    }
                    ']' => depth -= 1,
                    _ => {}
                },
            }
        }
        None
    }
}

fn parse_bracket(content: &str) -> Option<Segment> {
    let c = content.trim();
    if c == "*" {
        return Some(Segment::Wildcard);
    }
    if let Some(rest) = c.strip_prefix('?') {
        let inner = rest.trim().strip_prefix('(')?.strip_suffix(')')?;
        return parse_filter(inner).map(|f| Segment::Filter(Box::new(f)));
    }
    if let Some(s) = unquote(c) {
        return Some(Segment::Field(s));
    }
    if let Some((start, rest)) = c.split_once(':') {
        // A step (`[a:b:c]`) is not supported.
        if rest.contains(':') {
            return None;
        }
        let bound = |s: &str| -> Option<Option<i64>> {
            let s = s.trim();
            if s.is_empty() {
                Some(None)
            } else {
                s.parse().ok().map(Some)
            }
        };
        return Some(Segment::Slice(bound(start)?, bound(rest)?));
    }
    c.parse().ok().map(Segment::Index)
}

fn unquote(s: &str) -> Option<String> {
    let q = s.chars().next().filter(|c| *c == '\'' || *c == '"')?;
    let inner = s.strip_prefix(q)?.strip_suffix(q)?;
    let mut out = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    Some(out)
}

fn parse_filter(expr: &str) -> Option<Filter> {
    let expr = expr.trim().strip_prefix('@')?;
    let mut parser = PathParser {
        chars: expr.chars().collect(),
        pos: 0,
        in_filter: true,
    };
    let path = parser.segments()?;
    let rest: String = parser.chars[parser.pos..].iter().collect();
    let rest = rest.trim();
    if rest.is_empty() {
        return Some(Filter { path, cmp: None });
    }
    let ops = [
        ("==", CmpOp::Eq),
        ("!=", CmpOp::Ne),
        ("<=", CmpOp::Le),
        (">=", CmpOp::Ge),
        ("<", CmpOp::Lt),
        (">", CmpOp::Gt),
    ];
    let (op, literal) = ops
        .iter()
        .find_map(|(text, op)| rest.strip_prefix(text).map(|lit| (*op, lit.trim())))?;
    Some(Filter {
        path,
        cmp: Some((op, parse_literal(literal)?)),
    })
}

fn parse_literal(s: &str) -> Option<Value> {
    if s.is_empty() {
        return None;
    }
    if let Some(text) = unquote(s) {
        return Some(Value::String(text));
    }
    match serde_json::from_str::<Value>(s) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => Some(v),
        // Tolerate unquoted words as strings.
        _ => Some(Value::String(s.to_string())),
    }
}

impl Filter {
    fn accepts(&self, item: &Value) -> bool {
        let found = eval(&self.path, vec![item]);
        // Items lacking the field never match, not even with `!=`.
        let Some(left) = found.first() else {
            return false;
        };
        let Some((op, right)) = &self.cmp else {
            return true;
        };
        match op {
            CmpOp::Eq => json_eq(left, right),
            CmpOp::Ne => !json_eq(left, right),
            _ => {
                let ord = match (left, right) {
                    (Value::Number(a), Value::Number(b)) => a
                        .as_f64()
                        .zip(b.as_f64())
                        .and_then(|(x, y)| x.partial_cmp(&y)),
                    (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
                    _ => None,
                };
                let Some(ord) = ord else { return false };
                match op {
                    CmpOp::Lt => ord.is_lt(),
                    CmpOp::Le => ord.is_le(),
                    CmpOp::Gt => ord.is_gt(),
                    _ => ord.is_ge(),
                }
            }
        }
    }
}

/// Numbers compare by value so that `1` matches `1.0`.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn eval<'a>(segments: &[Segment], mut current: Vec<&'a Value>) -> Vec<&'a Value> {
    for segment in segments {
        let mut next = Vec::new();
        for v in current {
            match segment {
                Segment::Field(name) => next.extend(v.as_object().and_then(|m| m.get(name))),
                Segment::Wildcard => match v {
                    Value::Object(m) => next.extend(m.values()),
                    Value::Array(a) => next.extend(a.iter()),
                    _ => {}
                },
                Segment::Index(i) => {
                    if let Some(a) = v.as_array() {
                        let idx = if *i < 0 { a.len() as i64 + i } else { *i };
                        if idx >= 0 {
                            next.extend(a.get(idx as usize));
                        }
                    }
                }
                Segment::Slice(start, end) => {
                    if let Some(a) = v.as_array() {
                        let len = a.len() as i64;
                        let clamp =
                            |b: i64| (if b < 0 { len + b } else { b }).clamp(0, len) as usize;
                        let s = clamp(start.unwrap_or(0));
                        let e = clamp(end.unwrap_or(len));
                        if s < e {
                            next.extend(a[s..e].iter());
                        }
                    }
                }
                Segment::Filter(f) => {
                    if let Some(a) = v.as_array() {
                        next.extend(a.iter().filter(|item| f.accepts(item)));
                    }
                }
            }
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80}, {"containerPort": 443}]}, {"name": "b"}]},
            "status": {
                "phase": "Running",
                "conditions": [
                    {"type": "Initialized", "status": "True"},
                    {"type": "Ready", "status": "False"},
                    {"type": "PodScheduled", "status": "True"}
                ],
                "replicas": 3
            }
        })
    }

    #[test]
    fn jsonpath_nested_and_missing() {
        let p = pod();
        assert_eq!(jsonpath(&p, ".metadata.name"), vec![json!("web")]);
        assert_eq!(jsonpath(&p, "$.metadata.name"), vec![json!("web")]);
        assert_eq!(jsonpath(&p, "metadata.name"), vec![json!("web")]);
        assert_eq!(jsonpath(&p, ".status.replicas"), vec![json!(3)]);
        assert!(jsonpath(&p, ".metadata.missing").is_empty());
        assert!(
            jsonpath(&p, ".spec.containers.name").is_empty(),
            "fields do not apply to arrays"
        );
        assert!(jsonpath(&p, ".metadata.name.deeper").is_empty());
        assert!(jsonpath(&p, ".a[").is_empty(), "unparsable");
        assert!(
            jsonpath(&p, "..name").is_empty(),
            "recursive descent unsupported"
        );
    }

    #[test]
    fn jsonpath_index_slice_and_wildcard() {
        let p = pod();
        assert_eq!(jsonpath(&p, ".spec.containers[0].name"), vec![json!("a")]);
        assert_eq!(jsonpath(&p, ".spec.containers[-1].name"), vec![json!("b")]);
        assert!(jsonpath(&p, ".spec.containers[5].name").is_empty());
        assert_eq!(
            jsonpath(&p, ".spec.containers[*].name"),
            vec![json!("a"), json!("b")]
        );
        assert_eq!(
            jsonpath(&p, ".spec.containers[*].ports[*].containerPort"),
            vec![json!(80), json!(443)]
        );
        assert_eq!(jsonpath(&p, ".spec.containers[1:].name"), vec![json!("b")]);
        assert_eq!(jsonpath(&p, ".spec.containers[0:1].name"), vec![json!("a")]);
        assert_eq!(jsonpath(&p, ".metadata.labels.*"), vec![json!("web")]);
    }

    #[test]
    fn jsonpath_filters() {
        let p = pod();
        assert_eq!(
            jsonpath(&p, r#".status.conditions[?(@.type=="Ready")].status"#),
            vec![json!("False")]
        );
        assert_eq!(
            jsonpath(&p, ".status.conditions[?(@.type == 'Ready')].status"),
            vec![json!("False")]
        );
        assert_eq!(
            jsonpath(&p, ".status.conditions[?(@.status!='True')].type"),
            vec![json!("Ready")]
        );
        assert_eq!(
            jsonpath(&p, r#".status.conditions[?(@.type!="Ready")].type"#),
            vec![json!("Initialized"), json!("PodScheduled")]
        );
        assert!(jsonpath(&p, r#".status.conditions[?(@.type=="Nope")].status"#).is_empty());
        assert_eq!(
            jsonpath(
                &p,
                ".spec.containers[0].ports[?(@.containerPort > 100)].containerPort"
            ),
            vec![json!(443)]
        );
        assert_eq!(
            jsonpath(&p, ".spec.containers[?(@.ports)].name"),
            vec![json!("a")]
        );
        // A missing field never satisfies a comparison, not even `!=`.
        assert_eq!(
            jsonpath(
                &p,
                ".spec.containers[?(@.ports[0].containerPort != 1)].name"
            ),
            vec![json!("a")]
        );
    }

    #[test]
    fn jsonpath_braces_and_quoted_keys() {
        let p = pod();
        assert_eq!(jsonpath(&p, "{.metadata.name}"), vec![json!("web")]);
        assert_eq!(
            jsonpath(&p, "{.status.conditions[?(@.type==\"Ready\")].status}"),
            vec![json!("False")]
        );
        assert_eq!(
            jsonpath(&p, ".metadata.labels['app.kubernetes.io/name']"),
            vec![json!("web")]
        );
        assert_eq!(
            jsonpath(&p, r".metadata.labels.app\.kubernetes\.io/name"),
            vec![json!("web")]
        );
        assert_eq!(jsonpath(&p, "{.}"), vec![p.clone()]);
    }
}
