//! Diagnostics for blueprint input: every problem names the file, line and column, shows the source line
//! with a caret (through miette), and several problems are reported at once.
//!
//! Parsers collect [`Diag`]s against one [`SourceFile`] and return them together as a
//! [`BlueprintError`]; nothing downstream runs when any were found.

use std::{fmt, ops::Range, path::PathBuf, sync::Arc};

/// A blueprint source file: its path (as the user named it) and its whole text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Arc<Self> {
        Arc::new(Self { path: path.into(), text: text.into() })
    }

    /// 1-based line and column (in characters) of a byte offset; offsets past the end clamp to the end.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }
}

/// One problem found in a blueprint, located by a byte span of its source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diag {
    pub message: String,
    pub span: Range<usize>,
    /// Short text under the caret, e.g. "unknown key".
    pub label: Option<String>,
    /// A hint: what would be accepted instead.
    pub help: Option<String>,
}

impl Diag {
    pub fn new(span: Range<usize>, message: impl Into<String>) -> Self {
        Self { message: message.into(), span, label: None, help: None }
    }

    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    #[must_use]
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

/// A located problem, ready to print or serialize: `file:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Located {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)
    }
}

/// Every problem found in one blueprint file. Displays as one `file:line:col: message` line per problem;
/// as a miette diagnostic it renders the source line with a caret for each.
#[derive(Debug, Clone)]
pub struct BlueprintError {
    pub file: Arc<SourceFile>,
    pub diags: Vec<Diag>,
}

impl BlueprintError {
    pub fn new(file: Arc<SourceFile>, diags: Vec<Diag>) -> Self {
        Self { file, diags }
    }

    /// The problems with their line and column resolved.
    pub fn located(&self) -> Vec<Located> {
        self.diags
            .iter()
            .map(|d| {
                let (line, column) = self.file.line_col(d.span.start);
                Located {
                    file: self.file.path.clone(),
                    line,
                    column,
                    message: d.message.clone(),
                    help: d.help.clone(),
                }
            })
            .collect()
    }
}

impl fmt::Display for BlueprintError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let located = self.located();
        for (i, l) in located.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{l}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BlueprintError {}

/// One diagnostic of a [`BlueprintError`] as miette renders it (the source line and a caret).
#[derive(Debug)]
struct MietteDiag {
    located: Located,
    diag: Diag,
    source: miette::NamedSource<String>,
}

impl fmt::Display for MietteDiag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.located.fmt(f)
    }
}

impl std::error::Error for MietteDiag {}

impl miette::Diagnostic for MietteDiag {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new("kiln::blueprint"))
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diag.help.as_ref().map(|h| Box::new(h.clone()) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        let span = &self.diag.span;
        let len = span.end.saturating_sub(span.start);
        Some(Box::new(std::iter::once(miette::LabeledSpan::new(
            Some(self.diag.label.clone().unwrap_or_else(|| "here".to_owned())),
            span.start,
            len,
        ))))
    }
}

impl BlueprintError {
    /// One miette report per problem, each with the source line and a caret.
    pub fn reports(&self) -> Vec<miette::Report> {
        let source = miette::NamedSource::new(self.file.path.display().to_string(), self.file.text.clone());
        self.located()
            .into_iter()
            .zip(&self.diags)
            .map(|(located, diag)| {
                miette::Report::new(MietteDiag { located, diag: diag.clone(), source: source.clone() })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_in_characters() {
        let f = SourceFile::new("b.toml", "a = 1\nnäme = 2\n");
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(6), (2, 1));
        // 'ä' is two bytes; the '=' after "näme " is the 6th character of line 2.
        let eq = f.text.find("= 2").unwrap();
        assert_eq!(f.line_col(eq), (2, 6));
        assert_eq!(f.line_col(10_000), (3, 1));
    }

    #[test]
    fn display_is_one_located_line_per_problem() {
        let f = SourceFile::new("x/Kilnfile", "FROM debian:bookworm\nFOO bar\n");
        let e = BlueprintError::new(
            f,
            vec![Diag::new(21..24, "unknown directive `FOO`"), Diag::new(25..28, "second")],
        );
        assert_eq!(e.to_string(), "x/Kilnfile:2:1: unknown directive `FOO`\nx/Kilnfile:2:5: second");
        assert_eq!(e.reports().len(), 2);
    }
}
