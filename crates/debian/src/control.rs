//! deb822 control data: the `Field: value` paragraphs that Packages indices, Release files and
//! `.sources` files are made of (Debian Policy 5.1).
//!
//! The parser borrows from the input: a field's value is the raw text after the colon, continuation lines
//! included, trimmed at both ends. Lines starting with `#` at column 0 are comments (deb822 sources allow
//! them; indices don't have any).

use thiserror::Error;

/// A malformed line in control data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ControlError {
    #[error("line {line}: continuation line before any field")]
    ContinuationWithoutField { line: usize },
    #[error("line {line}: expected `Field: value`, found {text:?}")]
    NotAField { line: usize, text: String },
}

/// One field of a paragraph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a str,
    /// The value with continuation lines kept as written (newlines and their leading space), trimmed.
    pub value: &'a str,
    /// 1-based line the field starts on.
    pub line: usize,
}

/// A paragraph: fields in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph<'a> {
    pub fields: Vec<Field<'a>>,
    /// 1-based line of the first field.
    pub line: usize,
}

impl<'a> Paragraph<'a> {
    /// The value of a field, by case-insensitive name (the first if it is repeated).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.field(name).map(|f| f.value)
    }

    /// The field itself, by case-insensitive name.
    pub fn field(&self, name: &str) -> Option<&Field<'a>> {
        self.fields.iter().find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// The non-empty, trimmed lines of a multi-line field (e.g. the `SHA256` list of a Release file).
    pub fn lines(&self, name: &str) -> impl Iterator<Item = &'a str> {
        self.get(name).unwrap_or("").lines().map(str::trim).filter(|l| !l.is_empty())
    }
}

/// Iterates over the paragraphs of control data. Blank (or whitespace-only) lines separate paragraphs.
#[derive(Debug, Clone)]
pub struct Paragraphs<'a> {
    rest: &'a str,
    line: usize,
}

/// Parses control data into paragraphs lazily; see [`Paragraphs`].
pub fn paragraphs(text: &str) -> Paragraphs<'_> {
    Paragraphs { rest: text, line: 0 }
}

/// Parses all paragraphs at once.
pub fn parse(text: &str) -> Result<Vec<Paragraph<'_>>, ControlError> {
    paragraphs(text).collect()
}

impl<'a> Paragraphs<'a> {
    /// Takes the next line (without its newline) off the input.
    fn next_line(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let (line, rest) = match self.rest.find('\n') {
            Some(i) => (&self.rest[..i], &self.rest[i + 1..]),
            None => (self.rest, ""),
        };
        self.rest = rest;
        self.line += 1;
        Some(line.strip_suffix('\r').unwrap_or(line))
    }

    fn peek_is_continuation(&self) -> bool {
        self.rest.starts_with([' ', '\t']) && {
            let line = self.rest.split('\n').next().unwrap_or("");
            !line.trim().is_empty()
        }
    }
}

impl<'a> Iterator for Paragraphs<'a> {
    type Item = Result<Paragraph<'a>, ControlError>;

    fn next(&mut self) -> Option<Self::Item> {
        let mut para = Paragraph::default();
        loop {
            let start_of_line = self.rest;
            let Some(line) = self.next_line() else {
                return (!para.fields.is_empty()).then_some(Ok(para));
            };
            if line.trim().is_empty() {
                if para.fields.is_empty() {
                    continue;
                }
                return Some(Ok(para));
            }
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                return Some(Err(ControlError::ContinuationWithoutField { line: self.line }));
            }
            let Some(colon) = line.find(':') else {
                self.rest = "";
                return Some(Err(ControlError::NotAField { line: self.line, text: line.to_owned() }));
            };
            let name = line[..colon].trim_end();
            if name.is_empty() || name.contains(char::is_whitespace) {
                self.rest = "";
                return Some(Err(ControlError::NotAField { line: self.line, text: line.to_owned() }));
            }
            let field_line = self.line;
            // The value runs from after the colon to the end of the last continuation line, borrowed
            // as one slice of the input.
            let value_start = colon + 1;
            let mut value_end = line.len();
            while self.peek_is_continuation() {
                let before = self.rest;
                let cont = self.next_line().unwrap_or("");
                let offset = start_of_line.len() - before.len();
                value_end = offset + cont.len();
            }
            let value = start_of_line[value_start..value_end].trim();
            if para.fields.is_empty() {
                para.line = field_line;
            }
            para.fields.push(Field { name, value, line: field_line });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_fields_and_continuations() {
        let text = "Package: a\nDescription: short\n long line\n .\n more\n\n\n# comment\nPackage: b\r\nVersion: 1\n";
        let paras = parse(text).unwrap();
        assert_eq!(paras.len(), 2);
        assert_eq!(paras[0].get("package"), Some("a"));
        assert_eq!(paras[0].get("Description"), Some("short\n long line\n .\n more"));
        assert_eq!(paras[1].get("Package"), Some("b"));
        assert_eq!(paras[1].get("version"), Some("1"));
        assert_eq!(paras[1].line, 9);
        assert_eq!(paras[1].field("Version").unwrap().line, 10);
    }

    #[test]
    fn multi_line_list_fields() {
        let text = "SHA256:\n 00 12 main/a\n 11 34 main/b\nOther: x\n";
        let p = &parse(text).unwrap()[0];
        assert_eq!(p.lines("SHA256").collect::<Vec<_>>(), ["00 12 main/a", "11 34 main/b"]);
        assert_eq!(p.get("other"), Some("x"));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("Package: a\nno colon here\n").unwrap_err(),
            ControlError::NotAField { line: 2, text: "no colon here".into() }
        );
        assert_eq!(parse(" leading\n").unwrap_err(), ControlError::ContinuationWithoutField { line: 1 });
    }

    #[test]
    fn whitespace_only_lines_separate_paragraphs() {
        let paras = parse("A: 1\n   \nB: 2\n").unwrap();
        assert_eq!(paras.len(), 2);
    }
}
