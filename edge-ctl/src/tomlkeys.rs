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

/// A file read leniently: its unknown keys (as [`unknown`]) and its value, or the error that
/// stopped deserializing as (byte offset, message). The text is parsed once for both (a
/// 10,000-rule policy spent a fifth of `policy check` parsing it a second time).
pub fn parse<T: serde::de::DeserializeOwned>(text: &str, shape: &Shape) -> (Vec<Positioned>, Result<T, Positioned>) {
    let doc = match ImDocument::parse(text.to_string()) {
        Ok(doc) => doc,
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            return (Vec::new(), Err((at, e.message().trim_end().to_string())));
        }
    };
    let mut out = Vec::new();
    walk_table(doc.as_table(), shape, &mut out);
    let value = toml_edit::de::from_document(doc)
        .map_err(|e| (e.span().map_or(0, |s| s.start), e.message().trim_end().to_string()));
    (out, value)
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
