//! Label and field selectors as accepted by the list/watch query parameters
//! `labelSelector` and `fieldSelector`.
//!
//! The label selector parser follows the real apiserver's lexer/parser structure
//! so that clients see the same acceptance rules and the same error messages.

use serde_json::{Map, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Operator {
    Equals,
    DoubleEquals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    GreaterThan,
    LessThan,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    key: String,
    op: Operator,
    /// Sorted and de-duplicated, because the selector semantics are set-based.
    values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &Map<String, Value>) -> bool {
        let value = labels.get(&self.key).map(label_text);
        match self.op {
            Operator::Equals | Operator::DoubleEquals | Operator::In => {
                value.is_some_and(|v| self.values.contains(&v))
            }
            // An absent label satisfies a negative requirement.
            Operator::NotEquals | Operator::NotIn => {
                value.is_none_or(|v| !self.values.contains(&v))
            }
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let Some(have) = value.and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                let Some(want) = self.values.first().and_then(|v| v.parse::<i64>().ok()) else {
                    return false;
                };
                if self.op == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

/// Label values ought to be strings; anything else is compared by its JSON text
/// rather than silently treated as absent.
fn label_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A parsed Kubernetes label selector (query parameter labelSelector):
/// `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a` (exists), `!a` (does not exist),
/// `a>1`, `a<1` (integer comparisons), comma-separated (AND); whitespace tolerant; the empty
/// string selects everything. Keys may carry a DNS-subdomain prefix with `/`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses a selector string. Errors carry the apiserver's wording, e.g.
    /// `unable to parse requirement: found '', expected: ',' or ')'`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut p = Parser::new(s);
        let mut requirements = Vec::new();
        loop {
            let (tok, lit) = p.lookahead(Ctx::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = p
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(r);
                    let (t, l) = p.consume(Ctx::Values);
                    match t {
                        Token::End => break,
                        Token::Comma => {
                            let (t2, l2) = p.lookahead(Ctx::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Token::End => break,
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
        // Sorted like the apiserver does, which keeps Debug/equality output stable.
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(LabelSelector { requirements })
    }

    /// True when every requirement holds for `labels` (the object's metadata.labels, possibly empty).
    pub fn matches(&self, labels: &Map<String, Value>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// True for the select-everything selector.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

/// In value position the keywords `in`/`notin` are ordinary identifiers
/// (`a=in` is valid), so lookups take the context into account.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ctx {
    KeyAndOperator,
    Values,
}

fn is_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn is_special(c: char) -> bool {
    matches!(c, '=' | '!' | '(' | ')' | ',' | '>' | '<')
}

fn lex(s: &str) -> Vec<(Token, String)> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    loop {
        while i < chars.len() && is_whitespace(chars[i]) {
            i += 1;
        }
        if i >= chars.len() {
            out.push((Token::End, String::new()));
            return out;
        }
        let c = chars[i];
        if is_special(c) {
            // Longest match: only `==` and `!=` are two characters long.
            let next = chars.get(i + 1).copied();
            let (tok, len) = match (c, next) {
                ('=', Some('=')) => (Token::DoubleEquals, 2),
                ('!', Some('=')) => (Token::NotEquals, 2),
                ('=', _) => (Token::Equals, 1),
                ('!', _) => (Token::DoesNotExist, 1),
                ('(', _) => (Token::OpenPar, 1),
                (')', _) => (Token::ClosedPar, 1),
                (',', _) => (Token::Comma, 1),
                ('>', _) => (Token::GreaterThan, 1),
                _ => (Token::LessThan, 1),
            };
            out.push((tok, chars[i..i + len].iter().collect()));
            i += len;
        } else {
            let start = i;
            while i < chars.len() && !is_whitespace(chars[i]) && !is_special(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let tok = match word.as_str() {
                "in" => Token::In,
                "notin" => Token::NotIn,
                _ => Token::Identifier,
            };
            out.push((tok, word));
        }
    }
}

struct Parser {
    items: Vec<(Token, String)>,
    pos: usize,
}

impl Parser {
    fn new(s: &str) -> Self {
        Parser {
            items: lex(s),
            pos: 0,
        }
    }

    fn item(&self, idx: usize, ctx: Ctx) -> (Token, String) {
        // The token list always ends with End; reading past it keeps yielding End.
        let (tok, lit) = self.items[idx.min(self.items.len() - 1)].clone();
        let tok = match (ctx, tok) {
            (Ctx::Values, Token::In | Token::NotIn) => Token::Identifier,
            (_, t) => t,
        };
        (tok, lit)
    }

    fn lookahead(&self, ctx: Ctx) -> (Token, String) {
        self.item(self.pos, ctx)
    }

    fn consume(&mut self, ctx: Ctx) -> (Token, String) {
        let r = self.item(self.pos, ctx);
        self.pos += 1;
        r
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op @ (Operator::Exists | Operator::DoesNotExist)) = op {
            return new_requirement(key, op, Vec::new());
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        new_requirement(key, op, values)
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Ctx::Values);
        if tok == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Ctx::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        if let Err(detail) = validate_qualified_name(&lit) {
            return Err(invalid("<nil>", &lit, &detail));
        }
        let (next, _) = self.lookahead(Ctx::Values);
        if (next == Token::End || next == Token::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Ctx::KeyAndOperator);
        Ok(match tok {
            Token::In => Operator::In,
            Token::Equals => Operator::Equals,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{lit}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.consume(Ctx::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Ctx::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let values = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Ctx::Values);
                if tok != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(values)
            }
            // `()` means the single empty value, i.e. the label is present and empty.
            Token::ClosedPar => {
                self.consume(Ctx::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut values: Vec<String> = Vec::new();
        loop {
            let (tok, lit) = self.consume(Ctx::Values);
            match tok {
                Token::Identifier => {
                    values.push(lit);
                    let (tok2, lit2) = self.lookahead(Ctx::Values);
                    match tok2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(values),
                        _ => return Err(format!("found '{lit2}', expected: ',' or ')'")),
                    }
                }
                // Empty list elements (`(,a)`, `(a,)`, `(a,,b)`) stand for the empty value.
                Token::Comma => {
                    if values.is_empty() {
                        values.push(String::new());
                    }
                    let (tok2, _) = self.lookahead(Ctx::Values);
                    if tok2 == Token::ClosedPar {
                        values.push(String::new());
                        return Ok(values);
                    }
                    if tok2 == Token::Comma {
                        self.consume(Ctx::Values);
                        values.push(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (tok, _) = self.lookahead(Ctx::Values);
        if tok == Token::End || tok == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Ctx::Values);
        if tok == Token::Identifier {
            Ok(vec![lit])
        } else {
            Err(format!("found '{lit}', expected: identifier"))
        }
    }
}

/// Formats a validation failure the way the apiserver's field errors read.
fn invalid(field: &str, value: &str, detail: &str) -> String {
    format!("{field}: Invalid value: {value:?}: {detail}")
}

fn new_requirement(
    key: String,
    op: Operator,
    mut values: Vec<String>,
) -> Result<Requirement, String> {
    values.sort();
    values.dedup();
    let mut errs = Vec::new();
    if matches!(op, Operator::GreaterThan | Operator::LessThan) {
        for (i, v) in values.iter().enumerate() {
            if v.parse::<i64>().is_err() {
                errs.push(invalid(
                    &format!("values[{i}]"),
                    v,
                    "for 'Gt', 'Lt' operators, the value must be an integer",
                ));
            }
        }
    }
    for (i, v) in values.iter().enumerate() {
        if let Err(detail) = validate_label_value(v) {
            errs.push(invalid(&format!("values[{i}][{key}]"), v, &detail));
        }
    }
    match errs.len() {
        0 => Ok(Requirement { key, op, values }),
        1 => Err(errs.remove(0)),
        _ => Err(format!("[{}]", errs.join(", "))),
    }
}

const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, the shape shared by label keys' name part and label values.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn is_dns1123_subdomain(s: &str) -> bool {
    s.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && is_lower_alnum(b[0])
            && is_lower_alnum(b[b.len() - 1])
            && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
    })
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn validate_qualified_name(key: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('/').collect();
    let mut errs = Vec::new();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                if prefix.len() > 253 {
                    errs.push("prefix part must be no more than 253 characters".to_string());
                }
                if !is_dns1123_subdomain(prefix) {
                    errs.push("prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')".to_string());
                }
            }
            *name
        }
        _ => {
            return Err(format!(
                "a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        errs.push(format!("name part {QUALIFIED_NAME_MSG}"));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

fn validate_label_value(v: &str) -> Result<(), String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !is_qualified_name_part(v) {
        errs.push("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_string());
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("; "))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldRequirement {
    field: String,
    value: String,
    negated: bool,
}

/// Field selector: `metadata.name=x`, `metadata.name==x`, `metadata.name!=x`,
/// `metadata.namespace=...`, comma-separated (AND). Values may escape `\`, `,` and `=` with a backslash.
/// Supported fields: metadata.name and metadata.namespace for every kind, and the ones
/// kubectl uses for Events and Pods (involvedObject.*, regarding.*, reason, type, source,
/// reportingComponent, reportingController, spec.nodeName, status.phase). A test double:
/// the fields are not checked per kind. Any other field gives
/// `Err("field label not supported: <f>")`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for part in split_unescaped_commas(s) {
            // Whitespace cannot occur in names or namespaces, so trimming only forgives sloppy input.
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let Some((field, negated, raw)) = split_term(part) else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let field = field.trim();
            let value = unescape_value(raw.trim())?;
            if !field_supported(field) {
                return Err(format!("field label not supported: {field}"));
            }
            requirements.push(FieldRequirement {
                field: field.to_string(),
                value,
                negated,
            });
        }
        Ok(FieldSelector { requirements })
    }

    /// Absent name/namespace compare as the empty string, so `metadata.namespace=` selects
    /// cluster-scoped objects.
    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| {
            // `source` on core Events means its component.
            let path = if r.field == "source" {
                "source.component"
            } else {
                r.field.as_str()
            };
            let have = path
                .split('.')
                .try_fold(obj, |v, k| v.get(k))
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            (have == r.value) != r.negated
        })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

fn field_supported(field: &str) -> bool {
    matches!(
        field,
        "metadata.name"
            | "metadata.namespace"
            | "reason"
            | "type"
            | "source"
            | "reportingComponent"
            | "reportingController"
            | "spec.nodeName"
            | "status.phase"
    ) || field
        .strip_prefix("involvedObject.")
        .or_else(|| field.strip_prefix("regarding."))
        .is_some_and(|f| {
            matches!(
                f,
                "kind"
                    | "namespace"
                    | "name"
                    | "uid"
                    | "apiVersion"
                    | "resourceVersion"
                    | "fieldPath"
            )
        })
}

fn split_unescaped_commas(s: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits at the first operator; returns (field, negated, raw value).
fn split_term(term: &str) -> Option<(&str, bool, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        if let Some(v) = rest.strip_prefix("!=") {
            return Some((&term[..i], true, v));
        }
        if let Some(v) = rest.strip_prefix("==") {
            return Some((&term[..i], false, v));
        }
        if let Some(v) = rest.strip_prefix('=') {
            return Some((&term[..i], false, v));
        }
    }
    None
}

fn unescape_value(s: &str) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                ));
            }
            out.push(c);
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' || c == '=' {
            return Err(format!("invalid field selector: unescaped character {c}"));
        } else {
            out.push(c);
        }
    }
    if in_slash {
        return Err("invalid field selector: invalid escape sequence: \\".to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    #[test]
    fn empty_selects_everything() {
        for s in ["", "   "] {
            let l = sel(s);
            assert!(l.is_empty());
            assert!(l.matches(&Map::new()));
            assert!(l.matches(&labels(json!({"a": "b"}))));
        }
    }

    #[test]
    fn equality_operators() {
        let ab = labels(json!({"a": "b"}));
        let ac = labels(json!({"a": "c"}));
        let none = Map::new();
        for s in ["a=b", "a==b", " a = b ", "a ==b"] {
            let l = sel(s);
            assert!(!l.is_empty());
            assert!(l.matches(&ab), "{s}");
            assert!(!l.matches(&ac), "{s}");
            assert!(!l.matches(&none), "{s}");
        }
        let l = sel("a!=b");
        assert!(!l.matches(&ab));
        assert!(l.matches(&ac));
        assert!(l.matches(&none), "absent label satisfies !=");
    }

    #[test]
    fn empty_value() {
        let l = sel("a=");
        assert!(l.matches(&labels(json!({"a": ""}))));
        assert!(!l.matches(&labels(json!({"a": "x"}))));
        assert!(!l.matches(&Map::new()));
    }

    #[test]
    fn set_operators() {
        let l = sel("env in (prod, staging)");
        assert!(l.matches(&labels(json!({"env": "prod"}))));
        assert!(l.matches(&labels(json!({"env": "staging"}))));
        assert!(!l.matches(&labels(json!({"env": "dev"}))));
        assert!(!l.matches(&Map::new()));

        let l = sel("env notin (prod,staging)");
        assert!(!l.matches(&labels(json!({"env": "prod"}))));
        assert!(l.matches(&labels(json!({"env": "dev"}))));
        assert!(l.matches(&Map::new()), "absent label satisfies notin");

        // `in` is a keyword only in operator position.
        let l = sel("a in (in,notin)");
        assert!(l.matches(&labels(json!({"a": "notin"}))));
        let l = sel("a=in");
        assert!(l.matches(&labels(json!({"a": "in"}))));

        // Empty list elements mean the empty value.
        let l = sel("a in ()");
        assert!(l.matches(&labels(json!({"a": ""}))));
        let l = sel("a in (x,)");
        assert!(l.matches(&labels(json!({"a": ""}))));
        assert!(l.matches(&labels(json!({"a": "x"}))));
    }

    #[test]
    fn existence_operators() {
        let l = sel("a");
        assert!(l.matches(&labels(json!({"a": ""}))));
        assert!(!l.matches(&labels(json!({"b": "x"}))));
        let l = sel("!a");
        assert!(!l.matches(&labels(json!({"a": "x"}))));
        assert!(l.matches(&Map::new()));
        let l = sel(" ! a ");
        assert!(l.matches(&Map::new()));
    }

    #[test]
    fn numeric_comparisons() {
        let l = sel("n>5");
        assert!(l.matches(&labels(json!({"n": "6"}))));
        assert!(!l.matches(&labels(json!({"n": "5"}))));
        assert!(!l.matches(&labels(json!({"n": "x"}))));
        assert!(!l.matches(&Map::new()));
        let l = sel("n < 5");
        assert!(l.matches(&labels(json!({"n": "-1"}))));
        assert!(
            LabelSelector::parse("n>x")
                .unwrap_err()
                .contains("the value must be an integer")
        );
    }

    #[test]
    fn conjunction_and_prefixed_keys() {
        let l = sel("app.kubernetes.io/name=web, tier in (front), !legacy,team");
        let good = labels(json!({"app.kubernetes.io/name": "web", "tier": "front", "team": "x"}));
        assert!(l.matches(&good));
        let mut bad = good.clone();
        bad.insert("legacy".into(), json!("true"));
        assert!(!l.matches(&bad));
        let mut bad = good.clone();
        bad.remove("team");
        assert!(!l.matches(&bad));
        assert!(
            sel("my_key.with-dash=v_1.2-3")
                .matches(&labels(json!({"my_key.with-dash": "v_1.2-3"})))
        );
    }

    #[test]
    fn parse_errors() {
        let cases = [
            (
                "a in (x",
                "unable to parse requirement: found '', expected: ',' or ')'",
            ),
            (
                "a in x",
                "unable to parse requirement: found 'x' expected: '('",
            ),
            (
                "a b",
                "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt",
            ),
            ("a=b c", "found 'c', expected: ',' or 'end of string'"),
            ("a=b,", "found '', expected: identifier after ','"),
            ("a,,b", "found ',', expected: identifier after ','"),
            (
                "=b",
                "found '=', expected: !, identifier, or 'end of string'",
            ),
            (
                "a==(",
                "unable to parse requirement: found '(', expected: identifier",
            ),
            ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ];
        for (s, want) in cases {
            assert_eq!(LabelSelector::parse(s).unwrap_err(), want, "{s:?}");
        }
        let e = LabelSelector::parse("a=-b").unwrap_err();
        assert!(
            e.starts_with(
                "unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label"
            ),
            "{e}"
        );
        let e = LabelSelector::parse("Bad.Prefix/x=y").unwrap_err();
        assert!(
            e.starts_with(
                "unable to parse requirement: <nil>: Invalid value: \"Bad.Prefix/x\": prefix part"
            ),
            "{e}"
        );
        let e = LabelSelector::parse("a/b/c").unwrap_err();
        assert!(e.contains("a qualified name must consist"), "{e}");
        assert!(LabelSelector::parse(&format!("{}=x", "k".repeat(64))).is_err());
        assert!(LabelSelector::parse(&format!("k={}", "v".repeat(64))).is_err());
    }

    #[test]
    fn non_string_label_values_compare_as_text() {
        assert!(sel("n=5").matches(&labels(json!({"n": 5}))));
    }

    #[test]
    fn field_selector_operators() {
        let obj = json!({"metadata": {"name": "web", "namespace": "prod"}});
        let cluster = json!({"metadata": {"name": "node-1"}});
        for s in [
            "metadata.name=web",
            "metadata.name==web",
            " metadata.name = web ",
        ] {
            let f = FieldSelector::parse(s).unwrap();
            assert!(!f.is_empty());
            assert!(f.matches(&obj), "{s}");
            assert!(!f.matches(&cluster), "{s}");
        }
        let f = FieldSelector::parse("metadata.name!=web").unwrap();
        assert!(!f.matches(&obj));
        assert!(f.matches(&cluster));

        let f = FieldSelector::parse("metadata.namespace=prod,metadata.name!=api").unwrap();
        assert!(f.matches(&obj));
        assert!(!f.matches(&json!({"metadata": {"name": "api", "namespace": "prod"}})));
        assert!(!f.matches(&json!({"metadata": {"name": "web", "namespace": "dev"}})));

        let f = FieldSelector::parse("metadata.namespace=").unwrap();
        assert!(f.matches(&cluster));
        assert!(!f.matches(&obj));
    }

    #[test]
    fn field_selector_empty_and_errors() {
        for s in ["", " ", ","] {
            let f = FieldSelector::parse(s).unwrap();
            assert!(f.is_empty());
            assert!(f.matches(&json!({})));
        }
        assert_eq!(
            FieldSelector::parse("spec.replicas=1").unwrap_err(),
            "field label not supported: spec.replicas"
        );
        assert_eq!(
            FieldSelector::parse("metadata.name").unwrap_err(),
            "invalid selector: 'metadata.name'; can't understand 'metadata.name'"
        );
        assert_eq!(
            FieldSelector::parse("metadata.name=a=b").unwrap_err(),
            "invalid field selector: unescaped character ="
        );
        assert_eq!(
            FieldSelector::parse(r"metadata.name=a\x").unwrap_err(),
            r"invalid field selector: invalid escape sequence: \x"
        );
    }

    #[test]
    fn field_selector_on_event_fields() {
        let ev = json!({"metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Cluster", "name": "sim-gpu", "uid": "u1"},
            "source": {"component": "kelp"}, "count": 2});
        let f = FieldSelector::parse(
            "involvedObject.kind=Cluster,involvedObject.name=sim-gpu,involvedObject.uid=u1,source=kelp",
        )
        .unwrap();
        assert!(f.matches(&ev));
        assert!(
            !FieldSelector::parse("involvedObject.name=other")
                .unwrap()
                .matches(&ev)
        );
    }

    #[test]
    fn field_selector_escapes() {
        let f = FieldSelector::parse(r"metadata.name=a\,b\=c\\d").unwrap();
        assert!(f.matches(&json!({"metadata": {"name": r"a,b=c\d"}})));
    }
}
