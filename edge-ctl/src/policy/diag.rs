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
    pub fn of(text: &str, offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        Location { line, col }
    }
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
    pub text: &'a str,
    pub items: Vec<Diagnostic>,
}

impl<'a> Diagnostics<'a> {
    pub fn new(origin: &'a str, text: &'a str) -> Self {
        Diagnostics { origin, text, items: Vec::new() }
    }

    pub fn at(&self, offset: usize) -> Location {
        Location::of(self.text, offset)
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
    }
}
