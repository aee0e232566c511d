//! Handlebars helpers. They exist so that templates never splice raw values into YAML:
//! `json` turns any value into JSON text, which is also a valid YAML flow scalar, with
//! every character YAML parsers treat as a line break or refuse escaped.

use base64::Engine as _;
use handlebars::{
    Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext, RenderError,
    RenderErrorReason, Renderable, ScopedJson,
};
use serde_json::{Map, Value};

/// Registers every helper of this module on `hbs`.
pub(crate) fn register(hbs: &mut Handlebars<'static>) {
    hbs.register_helper("json", Box::new(Json));
    hbs.register_helper("b64", Box::new(B64));
    hbs.register_helper("indent", Box::new(Indent));
    hbs.register_helper("yaml", Box::new(Yaml));
    hbs.register_helper("concat", Box::new(Concat));
    hbs.register_helper("upper", Box::new(Upper));
    hbs.register_helper("lower", Box::new(Lower));
    hbs.register_helper("shq", Box::new(ShellQuote));
    hbs.register_helper("oneline", Box::new(OneLine));
    hbs.register_helper("object", Box::new(Object));
    hbs.register_helper("div", Box::new(Div));
}

/// Whether a character may appear raw inside a YAML scalar without being a line break
/// or a parse error (YAML 1.1 printable set, as libyaml and PyYAML read it).
fn yaml_inline_safe(c: char) -> bool {
    matches!(c, '\t' | ' '..='~' | '\u{A0}'..='\u{2027}' | '\u{202A}'..='\u{D7FF}'
        | '\u{E000}'..='\u{FEFE}' | '\u{FF00}'..='\u{FFFD}' | '\u{10000}'..='\u{10FFFF}')
}

/// JSON text of `v`, usable as a YAML flow scalar: `", "` and `": "` separators, and
/// every character that is not safe inside a YAML scalar written as `\uXXXX`.
pub fn json_text(v: &Value) -> String {
    let mut out = String::new();
    write_json(v, &mut out);
    out
}

fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Null | Value::Bool(_) | Value::Number(_) => out.push_str(&v.to_string()),
        Value::String(s) => write_json_str(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_json_str(k, out);
                out.push_str(": ");
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

fn write_json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if yaml_inline_safe(c) => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

fn other(msg: String) -> RenderError {
    RenderErrorReason::Other(msg).into()
}

fn param<'a>(h: &'a Helper<'_>, r: &Handlebars<'_>, idx: usize) -> Result<&'a Value, RenderError> {
    let p = h
        .param(idx)
        .ok_or(RenderErrorReason::ParamNotFoundForIndex("helper", idx))?;
    if r.strict_mode() && p.is_value_missing() {
        return Err(other(format!(
            "helper {}: parameter {} ({}) does not exist",
            h.name(),
            idx + 1,
            p.relative_path().map(String::as_str).unwrap_or("?")
        )));
    }
    Ok(p.value())
}

fn str_param<'a>(
    h: &'a Helper<'_>,
    r: &Handlebars<'_>,
    idx: usize,
) -> Result<&'a str, RenderError> {
    param(h, r, idx)?.as_str().ok_or_else(|| {
        other(format!(
            "helper {}: parameter {} must be a string",
            h.name(),
            idx + 1
        ))
    })
}

/// Plain text of a scalar (strings as is, numbers and booleans as JSON, null empty).
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn derived<'rc>(v: Value) -> Result<ScopedJson<'rc>, RenderError> {
    Ok(ScopedJson::Derived(v))
}

macro_rules! value_helper {
    ($name:ident, |$h:ident, $r:ident| $body:expr) => {
        struct $name;
        impl HelperDef for $name {
            fn call_inner<'reg: 'rc, 'rc>(
                &self,
                $h: &Helper<'rc>,
                $r: &'reg Handlebars<'reg>,
                _: &'rc Context,
                _: &mut RenderContext<'reg, 'rc>,
            ) -> Result<ScopedJson<'rc>, RenderError> {
                derived($body)
            }
        }
    };
}

value_helper!(Json, |h, r| Value::String(json_text(param(h, r, 0)?)));
value_helper!(B64, |h, r| Value::String(
    base64::engine::general_purpose::STANDARD.encode(str_param(h, r, 0)?)
));
value_helper!(Upper, |h, r| Value::String(
    str_param(h, r, 0)?.to_uppercase()
));
value_helper!(Lower, |h, r| Value::String(
    str_param(h, r, 0)?.to_lowercase()
));
value_helper!(ShellQuote, |h, r| Value::String(shell_quote(&plain(
    param(h, r, 0)?
))));
value_helper!(Concat, |h, r| {
    let mut s = String::new();
    for i in 0..h.params().len() {
        s.push_str(&plain(param(h, r, i)?));
    }
    Value::String(s)
});
value_helper!(OneLine, |h, r| {
    let s = plain(param(h, r, 0)?);
    if let Some(bad) = s.chars().find(|c| !yaml_inline_safe(*c)) {
        return Err(other(format!(
            "oneline: value {:?} contains {:?}, which cannot be written on one line",
            s.chars().take(40).collect::<String>(),
            bad
        )));
    }
    Value::String(s)
});
value_helper!(Object, |h, _r| {
    let mut map = Map::new();
    for (k, v) in h.hash() {
        map.insert((*k).to_string(), v.value().clone());
    }
    Value::Object(map)
});
value_helper!(Div, |h, r| {
    let a = param(h, r, 0)?.as_i64();
    let b = param(h, r, 1)?.as_i64();
    match (a, b) {
        (Some(a), Some(b)) if b != 0 => Value::from(a.div_euclid(b)),
        _ => return Err(other("div: needs two integers, the second non-zero".into())),
    }
});
value_helper!(Yaml, |h, r| {
    let v = param(h, r, 0)?;
    let text = serde_yaml_ng::to_string(v).map_err(|e| other(format!("yaml: {e}")))?;
    Value::String(text.trim_end_matches('\n').to_string())
});

/// POSIX shell single-quoting.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn indent_text(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.split('\n')
        .map(|line| {
            if line.is_empty() {
                String::new()
            } else {
                format!("{pad}{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `{{indent N text}}` or `{{#indent N}}...{{/indent}}`: every non-empty line prefixed
/// with N spaces, the first line included.
struct Indent;

impl Indent {
    fn width(h: &Helper<'_>, r: &Handlebars<'_>) -> Result<usize, RenderError> {
        param(h, r, 0)?
            .as_u64()
            .map(|n| n as usize)
            .ok_or_else(|| other("indent: first parameter must be a non-negative integer".into()))
    }
}

impl HelperDef for Indent {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        _: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let n = Self::width(h, r)?;
        derived(Value::String(indent_text(&plain(param(h, r, 1)?), n)))
    }

    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let n = Self::width(h, r)?;
        let text = match h.template() {
            Some(t) => t.renders(r, ctx, rc)?,
            None => plain(param(h, r, 1)?),
        };
        out.write(&indent_text(&text, n))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_text_escapes_yaml_line_breaks_and_non_printables() {
        let v = Value::String("a\u{85}b\u{2028}c\u{7f}d\u{feff}\"\n".into());
        let text = json_text(&v);
        assert_eq!(text, r#""a\u0085b\u2028c\u007fd\ufeff\"\n""#);
        let back: String = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(Value::String(back), v);
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn shell_quote_survives_single_quotes() {
        assert_eq!(shell_quote("it's"), r#"'it'\''s'"#);
    }

    #[test]
    fn indent_skips_empty_lines() {
        assert_eq!(indent_text("a\n\nb", 2), "  a\n\n  b");
    }
}
