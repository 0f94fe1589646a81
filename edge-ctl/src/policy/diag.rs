//! Diagnostics that name the file, line and column of the offending text.

use std::fmt;

/// A position in a policy source, 1-based.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Location {
    pub line: usize,
    pub col: usize,
}

impl Location {
    /// The line and column of byte `offset` in `text`.
    /// For one look-up; [`LineIndex`] answers many without rescanning the text.
    pub fn of(text: &str, offset: usize) -> Self {
        LineIndex::new(text).locate(offset)
    }
}

/// Where each line of a text starts, so that a location costs a binary search instead of a scan
/// of everything before it (a 10,000-rule policy asks for tens of thousands of locations).
#[derive(Debug)]
pub struct LineIndex<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let starts = std::iter::once(0).chain(line_starts_after_first(text)).collect();
        LineIndex { text, starts }
    }

    /// The line and column of byte `offset` (columns count characters, not bytes).
    pub fn locate(&self, offset: usize) -> Location {
        let offset = offset.min(self.text.len());
        let line = self.starts.partition_point(|&s| s <= offset);
        let start = self.starts[line - 1];
        let col = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count()) + 1;
        Location { line, col }
    }
}

fn line_starts_after_first(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.bytes().enumerate().filter(|(_, b)| *b == b'\n').map(|(i, _)| i + 1)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One finding about a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The file path, or `<built-in ...>` for generated policies.
    pub origin: String,
    pub at: Location,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{}:{}:{}: {kind}: {}", self.origin, self.at.line, self.at.col, self.message)
    }
}

/// A policy that cannot be used: every error found, in source order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    pub errors: Vec<Diagnostic>,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyError {}

/// Collects diagnostics while a policy is checked.
#[derive(Debug)]
pub struct Diagnostics<'a> {
    pub origin: &'a str,
    lines: LineIndex<'a>,
    pub items: Vec<Diagnostic>,
}

impl<'a> Diagnostics<'a> {
    pub fn new(origin: &'a str, text: &'a str) -> Self {
        Diagnostics { origin, lines: LineIndex::new(text), items: Vec::new() }
    }

    pub fn at(&self, offset: usize) -> Location {
        self.lines.locate(offset)
    }

    pub fn error(&mut self, offset: usize, message: impl Into<String>) {
        self.push(Severity::Error, self.at(offset), message.into());
    }

    pub fn warning(&mut self, offset: usize, message: impl Into<String>) {
        self.push(Severity::Warning, self.at(offset), message.into());
    }

    pub fn push(&mut self, severity: Severity, at: Location, message: String) {
        self.items.push(Diagnostic { severity, origin: self.origin.to_string(), at, message });
    }

    pub fn has_errors(&self) -> bool {
        self.items.iter().any(|d| d.severity == Severity::Error)
    }

    /// Splits into errors (if any) and warnings.
    pub fn finish(mut self) -> Result<Vec<Diagnostic>, PolicyError> {
        self.items.sort_by_key(|d| d.at);
        if self.has_errors() {
            Err(PolicyError { errors: self.items.into_iter().filter(|d| d.severity == Severity::Error).collect() })
        } else {
            Ok(self.items)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_counts_lines_and_chars() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(Location::of(text, 0), Location { line: 1, col: 1 });
        assert_eq!(Location::of(text, 6), Location { line: 2, col: 1 });
        // 'é' is two bytes but one column.
        assert_eq!(Location::of(text, 9), Location { line: 2, col: 3 });
        // The end of the text, and past it.
        assert_eq!(Location::of(text, text.len()), Location { line: 3, col: 1 });
        assert_eq!(Location::of(text, 99), Location { line: 3, col: 1 });
        assert_eq!(Location::of("", 0), Location { line: 1, col: 1 });
    }

    #[test]
    fn line_index_agrees_with_a_scan_at_every_offset() {
        let text = "x\n\nabc é\n\n  [[rule]]\nz";
        let index = LineIndex::new(text);
        for offset in (0..=text.len()).filter(|o| text.is_char_boundary(*o)) {
            let before = &text[..offset];
            let line = before.matches('\n').count() + 1;
            let col = before[before.rfind('\n').map_or(0, |i| i + 1)..].chars().count() + 1;
            assert_eq!(index.locate(offset), Location { line, col }, "offset {offset}");
        }
    }
}
