//! Unknown keys in a TOML file, every one of them, each at its position; and every type error.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key and hides every other error of
//! the file. The policy and `serve`'s configuration are therefore deserialized leniently, and
//! their keys are checked here first against a [`Shape`] of what each table may hold, on the
//! parsed document with spans (the `toml` crate's own spanned tree, which it deserializes
//! from), so the caller can report them together with everything else, in line order.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// What a table may hold: its keys, and for each the shape of its value.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// A table (standard, inline or dotted) with exactly these keys.
    Table(&'static str, &'static [(&'static str, Shape)]),
    /// An array of tables (`[[rule]]`, or an array of inline tables), each of this shape.
    Tables(&'static Shape),
    /// Anything: a value, or a table whose keys are the user's (named address sets).
    Any,
}

/// Every key the shape does not allow, as (byte offset of the key, message), in line order. A
/// document that does not parse gives none: the deserializer reports the syntax error.
pub fn unknown(text: &str, shape: &Shape) -> Vec<Positioned> {
    let mut out = Vec::new();
    if let Ok(doc) = DeTable::parse(text) {
        walk_table(doc.get_ref(), shape, &mut out);
    }
    out.sort_by_key(|e| e.0);
    out
}

/// A message at a byte offset.
pub type Positioned = (usize, String);

/// A file read leniently: its unknown keys (as [`unknown`]) and its value, or every error that
/// stops deserializing, as (byte offset, message). The text is parsed once when it is right.
///
/// serde stops at the first wrong type or missing field. To report them all, the piece of the
/// file holding the error (the rule, the table, the named set, the top-level key; see
/// [`piece`]) is blanked out, spaces for every character but newlines so that every offset and
/// line stays where it was, and the rest is deserialized again, until it deserializes or
/// [`MAX_ERRORS`] are found. The caller checks meaning only once the types are right.
pub fn parse<T: serde::de::DeserializeOwned>(
    text: &str,
    shape: &Shape,
) -> (Vec<Positioned>, Result<T, Vec<Positioned>>) {
    let message = |e: &toml::de::Error| e.message().trim_end().to_string();
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(e) => return (Vec::new(), Err(vec![(e.span().map_or(0, |s| s.start), message(&e))])),
    };
    let mut out = Vec::new();
    walk_table(doc.get_ref(), shape, &mut out);
    out.sort_by_key(|e| e.0);
    let first = match T::deserialize(toml::de::Deserializer::from(doc)) {
        Ok(value) => return (out, Ok(value)),
        Err(e) => e,
    };
    let mut at = first.span().map(|s| s.start);
    let mut errors = vec![(at.unwrap_or(0), message(&first))];
    let mut work = text.to_string();
    let mut blanked: Vec<Range<usize>> = Vec::new();
    while let Some(offset) = at {
        let Some(range) = DeTable::parse(&work).ok().and_then(|d| piece(d.get_ref(), shape, offset)) else {
            break;
        };
        if errors.len() >= MAX_ERRORS || blanked.iter().any(|b| b.start <= range.start && range.end <= b.end) {
            break;
        }
        let mut next = work.clone();
        blank(&mut next, range.clone());
        if DeTable::parse(&next).is_err() {
            // An element of an inline array: its comma goes with it.
            next = work.clone();
            blank(&mut next, with_comma(&work, range.clone()));
        }
        work = next;
        blanked.push(range);
        let Ok(doc) = DeTable::parse(&work) else { break };
        match T::deserialize(toml::de::Deserializer::from(doc)) {
            Ok(_) => break,
            Err(e) => {
                at = e.span().map(|s| s.start);
                errors.push((at.unwrap_or(0), message(&e)));
            }
        }
    }
    errors.sort_by_key(|e| e.0);
    errors.dedup();
    (out, Err(errors))
}

/// At most this many type errors are collected from one file.
pub const MAX_ERRORS: usize = 100;

/// `range` and the comma after it (or, for the last element of an array, the one before it).
fn with_comma(text: &str, range: Range<usize>) -> Range<usize> {
    let after = text[range.end..].find(|c: char| !c.is_whitespace()).map(|i| range.end + i);
    if let Some(i) = after.filter(|&i| text.as_bytes()[i] == b',') {
        return range.start..i + 1;
    }
    let before = text[..range.start].rfind(|c: char| !c.is_whitespace());
    match before.filter(|&i| text.as_bytes()[i] == b',') {
        Some(i) => i..range.end,
        None => range,
    }
}

/// Replaces every character of `range` but newlines with spaces (offsets and lines stay).
fn blank(text: &mut String, range: Range<usize>) {
    let blanked: String = text[range.clone()].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
    // Multi-byte characters become several spaces: the byte length is kept by padding.
    let pad = range.len() - blanked.len();
    text.replace_range(range, &(blanked + &" ".repeat(pad)));
}

/// All of the text a value covers: its own span (a table's is its header) and everything in it.
fn extent(value: &Spanned<DeValue>) -> Range<usize> {
    let mut r = value.span();
    let mut widen = |o: Range<usize>| r = r.start.min(o.start)..r.end.max(o.end);
    match value.get_ref() {
        DeValue::Table(t) => t.iter().for_each(|(k, v)| {
            widen(k.span());
            widen(extent(v));
        }),
        DeValue::Array(a) => a.iter().for_each(|v| widen(extent(v))),
        _ => {}
    }
    r
}

/// The smallest piece of the document holding byte `offset` that can go without breaking what
/// is around it: an element of an array of tables (a `[[rule]]`), an entry of a free-form table
/// (a named set), a table of settings (`[conntrack]`), or a top-level key with its value.
fn piece(table: &DeTable, shape: &Shape, offset: usize) -> Option<Range<usize>> {
    let keys: &[(&str, Shape)] = match shape {
        Shape::Table(_, keys) => keys,
        _ => &[],
    };
    let within = |r: &Range<usize>| r.start <= offset && offset <= r.end;
    for (key, value) in table.iter() {
        let child = keys.iter().find(|(k, _)| *k == key.get_ref().as_ref()).map_or(Shape::Any, |(_, s)| *s);
        let whole = {
            let e = extent(value);
            key.span().start.min(e.start)..e.end
        };
        if !within(&whole) {
            continue;
        }
        match (value.get_ref(), child) {
            // Each table of an array of tables (standard or inline) is a piece.
            (DeValue::Array(elements), Shape::Tables(_)) => {
                return elements.iter().map(extent).find(within).or(Some(whole));
            }
            // Free-form (the named sets): each entry is a piece.
            (DeValue::Table(entries), Shape::Any) => {
                let entry = entries.iter().map(|(k, v)| k.span().start..extent(v).end).find(within);
                return entry.or(Some(whole));
            }
            // A table of tables (`[roles]`): the inner table; a table of settings: all of it.
            (DeValue::Table(inner), Shape::Table(..)) => {
                return piece(inner, &child, offset).filter(|_| is_table_of_tables(inner)).or(Some(whole));
            }
            _ => return Some(whole),
        }
    }
    None
}

/// Whether every value of the table is a table (`[roles]`, holding `[roles.external]`).
fn is_table_of_tables(t: &DeTable) -> bool {
    !t.is_empty() && t.values().all(|v| matches!(v.get_ref(), DeValue::Table(_)))
}

fn walk(value: &DeValue, shape: &Shape, out: &mut Vec<Positioned>) {
    match (shape, value) {
        (Shape::Table(..), DeValue::Table(t)) => walk_table(t, shape, out),
        (Shape::Tables(inner), DeValue::Array(elements)) => {
            for e in elements.iter() {
                if let DeValue::Table(t) = e.get_ref() {
                    walk_table(t, inner, out);
                }
            }
        }
        _ => {}
    }
}

fn walk_table(table: &DeTable, shape: &Shape, out: &mut Vec<Positioned>) {
    let Shape::Table(name, keys) = shape else { return };
    for (key, value) in table.iter() {
        let name_of_key: &str = key.get_ref().as_ref();
        match keys.iter().find(|(k, _)| *k == name_of_key) {
            Some((_, child)) => walk(value.get_ref(), child, out),
            None => {
                let expected: Vec<String> = keys.iter().map(|(k, _)| format!("`{k}`")).collect();
                out.push((
                    key.span().start,
                    format!("unknown field `{name_of_key}` in {name}, expected one of {}", expected.join(", ")),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INNER: Shape = Shape::Table("[[item]]", &[("name", Shape::Any), ("on", Shape::Any)]);
    const SHAPE: Shape = Shape::Table(
        "the top level",
        &[
            ("item", Shape::Tables(&INNER)),
            (
                "opts",
                Shape::Table("[opts]", &[("a", Shape::Any), ("b", Shape::Table("[opts.b]", &[("c", Shape::Any)]))]),
            ),
            ("free", Shape::Any),
        ],
    );

    fn lines(text: &str) -> Vec<(usize, String)> {
        unknown(text, &SHAPE)
            .into_iter()
            .map(|(at, m)| (text[..at].matches('\n').count() + 1, m.split(',').next().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn every_unknown_key_at_its_line() {
        let text = "top = 1\nfree = { x = 1 }\n[opts]\na = 1\nz = 2\nb = { c = 1, d = 2 }\n\
                    [[item]]\nname = 1\nnmae = 2\n[[item]]\nextra.dotted = 3\n";
        assert_eq!(
            lines(text),
            [
                (1, "unknown field `top` in the top level".to_string()),
                (5, "unknown field `z` in [opts]".to_string()),
                (6, "unknown field `d` in [opts.b]".to_string()),
                (9, "unknown field `nmae` in [[item]]".to_string()),
                (11, "unknown field `extra` in [[item]]".to_string()),
            ]
        );
    }

    #[test]
    fn inline_arrays_of_tables_and_bad_syntax() {
        assert_eq!(
            lines("item = [{ name = 1 }, { on = 1, off = 2 }]\n"),
            [(1, "unknown field `off` in [[item]]".to_string())]
        );
        assert!(unknown("[opts\n", &SHAPE).is_empty(), "syntax errors are the deserializer's");
    }
}
