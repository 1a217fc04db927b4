//! A YAML writer for what curtin and cloud-init read with PyYAML.
//!
//! PyYAML speaks YAML 1.1, where a plain `52:54:00:12:34:56` is a base-60
//! integer and a plain `on`, `no` or `y` is a boolean. serde_yaml_ng (used to
//! build and read values) writes YAML 1.2 and leaves those plain, so output
//! goes through this writer instead: a string is written plain only when it
//! cannot mean anything else in YAML 1.1 or 1.2, otherwise double-quoted
//! with JSON escapes (a subset of YAML's); multi-line strings become literal
//! blocks. A test reads every rendered document back with PyYAML.

use std::fmt::Write as _;

use serde_yaml_ng::Value;

/// Writes `value` (a mapping or sequence at the top) as a YAML document.
pub(crate) fn to_string(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Mapping(m) if !m.is_empty() => write_mapping(&mut out, m, 0),
        Value::Sequence(s) if !s.is_empty() => write_sequence(&mut out, s, 0),
        other => {
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

fn write_mapping(out: &mut String, m: &serde_yaml_ng::Mapping, level: usize) {
    for (k, v) in m {
        indent(out, level);
        out.push_str(&scalar(k));
        out.push(':');
        write_value_after_key(out, v, level);
    }
}

fn write_sequence(out: &mut String, s: &[Value], level: usize) {
    for v in s {
        indent(out, level);
        out.push('-');
        match v {
            Value::Mapping(m) if !m.is_empty() => {
                // The first key goes on the dash's line.
                let mut first = true;
                for (k, val) in m {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(out, level + 2);
                    }
                    out.push_str(&scalar(k));
                    out.push(':');
                    write_value_after_key(out, val, level + 2);
                }
            }
            Value::Sequence(inner) if !inner.is_empty() => {
                out.push('\n');
                write_sequence(out, inner, level + 2);
            }
            other => {
                out.push(' ');
                write_inline(out, other, level + 2);
            }
        }
    }
}

fn write_value_after_key(out: &mut String, v: &Value, level: usize) {
    match v {
        Value::Mapping(m) if !m.is_empty() => {
            out.push('\n');
            write_mapping(out, m, level + 2);
        }
        Value::Sequence(s) if !s.is_empty() => {
            out.push('\n');
            write_sequence(out, s, level);
        }
        other => {
            out.push(' ');
            write_inline(out, other, level + 2);
        }
    }
}

/// A scalar, empty collection or multi-line string after `key: ` or `- `.
fn write_inline(out: &mut String, v: &Value, level: usize) {
    if let Value::String(s) = v
        && s.contains('\n')
        && block_ok(s)
    {
        let body = s.strip_suffix('\n').unwrap_or(s);
        let chomp = if s.ends_with('\n') && !body.ends_with('\n') {
            ""
        } else if !s.ends_with('\n') {
            "-"
        } else {
            "+"
        };
        out.push('|');
        out.push_str(chomp);
        out.push('\n');
        for line in body.split('\n') {
            if !line.is_empty() {
                indent(out, level);
                out.push_str(line);
            }
            out.push('\n');
        }
        return;
    }
    out.push_str(&scalar(v));
    out.push('\n');
}

/// Whether a multi-line string can be a literal block: printable, no
/// leading space on its first line (that would need an indentation
/// indicator), no trailing spaces that a reader might strip.
fn block_ok(s: &str) -> bool {
    !s.starts_with(' ')
        && !s.starts_with('\n')
        && s.chars().all(|c| c == '\n' || !c.is_control())
        && !s.contains(" \n")
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Sequence(s) if s.is_empty() => "[]".to_owned(),
        Value::Mapping(m) if m.is_empty() => "{}".to_owned(),
        // Not reached through the writers above; a flow form keeps it valid.
        other => serde_json::to_string(other).unwrap_or_else(|_| "null".to_owned()),
    }
}

/// Words YAML 1.1 reads as booleans or null.
const RESERVED: &[&str] = &[
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~",
];

fn string(s: &str) -> String {
    let plain = !s.is_empty()
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '_')
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':' | '+' | '=' | ',' | '@' | '%')
        })
        && !s.ends_with(':')
        && !s.contains(": ")
        && !RESERVED.contains(&s.to_ascii_lowercase().as_str())
        // A letter-led word can still be a float in YAML 1.1 (`.inf`) or
        // an exponent form; only letters lead here, so check the few words.
        && !matches!(s.to_ascii_lowercase().as_str(), "nan" | "inf");
    if plain {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ambiguous_strings_are_quoted() {
        for s in [
            "52:54:00:12:34:56",
            "on",
            "Off",
            "yes",
            "n",
            "~",
            "1.0",
            "010",
            "",
            "a: b",
            "-x",
            "#c",
            "*a",
        ] {
            assert!(string(s).starts_with('"'), "{s}");
        }
        for s in [
            "eth0",
            "http://10.0.0.1:5248/MAAS/metadata/",
            "/dev/sda",
            "balance-rr",
            "layer3+4",
            "op=netboot_off",
        ] {
            assert_eq!(string(s), s);
        }
    }

    #[test]
    fn documents_read_back_equal() {
        let v: Value = serde_yaml_ng::from_str(
            "a: {b: [1, \"on\", {c: \"x\\ny\\n\", d: []}], e: {}}\nf: [[1, 2], \"z\"]\ng: \"k\\n\\n\"\nh: \" lead\\nx\"\n",
        )
        .unwrap();
        let text = to_string(&v);
        let back: Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(back, v, "{text}");
    }
}
