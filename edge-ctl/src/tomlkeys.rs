//! Unknown keys in a TOML file, every one of them, each at its position.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key and hides every other error of
//! the file. The policy and `serve`'s configuration are therefore deserialized leniently, and
//! their keys are checked here first against a [`Shape`] of what each table may hold, on the
//! parsed document with spans (toml_edit, the parser under the `toml` crate), so the caller can
//! report them together with everything else, in line order.

use toml_edit::{ImDocument, Item, TableLike};

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

/// Every key the shape does not allow, as (byte offset of the key, message). A document that
/// does not parse gives none: the deserializer reports the syntax error.
pub fn unknown(text: &str, shape: &Shape) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    if let Ok(doc) = ImDocument::parse(text) {
        walk_table(doc.as_table(), shape, &mut out);
    }
    out
}

/// A message at a byte offset.
pub type Positioned = (usize, String);

/// A file read leniently: its unknown keys (as [`unknown`]) and its value, or every error that
/// stops deserializing, as (byte offset, message). The text is parsed once when it is right (a
/// 10,000-rule policy spent a fifth of `policy check` parsing it a second time).
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
    let doc = match ImDocument::parse(text.to_string()) {
        Ok(doc) => doc,
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            return (Vec::new(), Err(vec![(at, e.message().trim_end().to_string())]));
        }
    };
    let mut out = Vec::new();
    walk_table(doc.as_table(), shape, &mut out);
    let first = match toml_edit::de::from_document::<T>(doc) {
        Ok(value) => return (out, Ok(value)),
        Err(e) => e,
    };
    let error = |e: &toml_edit::de::Error| (e.span().map(|s| s.start), e.message().trim_end().to_string());
    let (mut at, message) = error(&first);
    let mut errors = vec![(at.unwrap_or(0), message)];
    let mut work = text.to_string();
    let mut blanked: Vec<std::ops::Range<usize>> = Vec::new();
    while let Some(offset) = at {
        let Some(range) = ImDocument::parse(work.clone()).ok().and_then(|d| piece(d.as_table(), shape, offset)) else {
            break;
        };
        if errors.len() >= MAX_ERRORS || blanked.iter().any(|b| b.start <= range.start && range.end <= b.end) {
            break;
        }
        let mut next = work.clone();
        blank(&mut next, range.clone());
        if ImDocument::parse(next.as_str()).is_err() {
            // An element of an inline array: its comma goes with it.
            next = work.clone();
            blank(&mut next, with_comma(&work, range.clone()));
        }
        work = next;
        blanked.push(range);
        let Ok(doc) = ImDocument::parse(work.clone()) else { break };
        match toml_edit::de::from_document::<T>(doc) {
            Ok(_) => break,
            Err(e) => {
                let (next, message) = error(&e);
                at = next;
                errors.push((next.unwrap_or(0), message));
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
fn with_comma(text: &str, range: std::ops::Range<usize>) -> std::ops::Range<usize> {
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
fn blank(text: &mut String, range: std::ops::Range<usize>) {
    let blanked: String = text[range.clone()].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
    // Multi-byte characters become several spaces: the byte length is kept by padding.
    let pad = range.len() - blanked.len();
    text.replace_range(range, &(blanked + &" ".repeat(pad)));
}

/// The smallest piece of the document holding byte `offset` that can go without breaking what
/// is around it: an element of an array of tables (a `[[rule]]`), an entry of a free-form table
/// (a named set), a table of settings (`[conntrack]`), or a top-level key with its value.
fn piece(table: &dyn TableLike, shape: &Shape, offset: usize) -> Option<std::ops::Range<usize>> {
    let keys: &[(&str, Shape)] = match shape {
        Shape::Table(_, keys) => keys,
        _ => &[],
    };
    let within = |r: &std::ops::Range<usize>| r.start <= offset && offset <= r.end;
    for (key, item) in table.iter() {
        let child = keys.iter().find(|(k, _)| *k == key).map_or(Shape::Any, |(_, s)| *s);
        let key_start = table.get_key_value(key).and_then(|(k, _)| k.span()).map(|s| s.start);
        match item {
            Item::ArrayOfTables(tables) => {
                if let Some(r) = tables.iter().filter_map(|t| t.span()).find(within) {
                    return Some(r);
                }
            }
            Item::Table(t) => {
                if let Shape::Any = child {
                    // Free-form: each entry is a piece.
                    for (k, v) in t.iter() {
                        let start = t.get_key_value(k).and_then(|(k, _)| k.span()).map(|s| s.start);
                        let end = v.as_value().and_then(|v| v.span()).map(|s| s.end);
                        if let (Some(start), Some(end)) = (start, end)
                            && within(&(start..end))
                        {
                            return Some(start..end);
                        }
                    }
                } else if let Some(r) = piece(t, &child, offset) {
                    return Some(r);
                }
                if let Some(r) = t.span().filter(within) {
                    return Some(r);
                }
            }
            Item::Value(v) => {
                let Some(span) = v.span() else { continue };
                let whole = key_start.unwrap_or(span.start)..span.end;
                if !within(&whole) {
                    continue;
                }
                // An array of inline tables stands for an array of tables: each is a piece.
                if let (Shape::Tables(_), Some(array)) = (child, v.as_array())
                    && let Some(r) = array.iter().filter_map(|e| e.span()).find(within)
                {
                    return Some(r);
                }
                return Some(whole);
            }
            Item::None => {}
        }
    }
    None
}

fn walk(item: &Item, shape: &Shape, out: &mut Vec<(usize, String)>) {
    match shape {
        Shape::Any => {}
        Shape::Table(..) => {
            if let Some(t) = item.as_table_like() {
                walk_table(t, shape, out);
            }
        }
        Shape::Tables(inner) => {
            if let Some(tables) = item.as_array_of_tables() {
                for t in tables.iter() {
                    walk_table(t, inner, out);
                }
            } else if let Some(array) = item.as_array() {
                for t in array.iter().filter_map(|v| v.as_inline_table()) {
                    walk_table(t, inner, out);
                }
            }
        }
    }
}

fn walk_table(table: &dyn TableLike, shape: &Shape, out: &mut Vec<(usize, String)>) {
    let Shape::Table(name, keys) = shape else { return };
    for (key, item) in table.iter() {
        match keys.iter().find(|(k, _)| *k == key) {
            Some((_, child)) => walk(item, child, out),
            None => {
                let at = table.get_key_value(key).and_then(|(k, _)| k.span()).map_or(0, |s| s.start);
                let expected: Vec<String> = keys.iter().map(|(k, _)| format!("`{k}`")).collect();
                out.push((at, format!("unknown field `{key}` in {name}, expected one of {}", expected.join(", "))));
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
