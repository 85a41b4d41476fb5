//! The imperative, Dockerfile-like `Kilnfile` form.
//!
//! A Kilnfile is read the way Docker reads a Dockerfile: parser directives at the very top (`# escape=`;
//! `# syntax=` and `# check=` are accepted and ignored), whole-line `#` comments, line continuations with the
//! escape character, heredocs for RUN and COPY/ADD, exec (JSON array) and shell forms, and `$VAR`,
//! `${VAR}`, `${VAR:-default}`, `${VAR:+alternative}` substitution from earlier ARG and ENV values. One FROM
//! (no multi-stage builds), plus kiln's own directives: PACKAGES, SERVICE, CONTRACT, OUTPUT, DISK, SYSTEM and
//! LIFECYCLE. The result is the same [`Blueprint`] model the TOML form gives.
//!
//! The parser is written by hand in three layers: physical lines are joined into instructions (directives,
//! comments, continuations, heredoc bodies); each instruction's arguments are split into words and expanded
//! (quotes, escapes, substitution); and each directive fills in the model. Every byte of an instruction keeps
//! its offset in the file, so every problem points at the argument it is about. Problems are collected, not
//! returned at the first one: a bad line is reported and parsing goes on with the next.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Range,
    path::PathBuf,
    sync::Arc,
};

use crate::{
    diag::{Diag, SourceFile},
    model::Vars,
    model::{
        syntax, Base, Blueprint, Command, ContainerConfig, ContractRef, CopyStep, DebianBase, Disk, DiskSize,
        FileSource, FileStep, Form, LifecyclePolicy, Mode, Output, Packages, Partition, PartitionRole,
        RootFs, RunStep, Services, Span, Spanned, Step, System, Variant,
    },
    BlueprintError,
};

/// Parse a `Kilnfile`. `vars` are `--var` overrides of `ARG` defaults.
pub fn parse(file: Arc<SourceFile>, dir: PathBuf, vars: &Vars) -> Result<Blueprint, BlueprintError> {
    let parts = {
        let mut parser = Parser::new(&file.text, vars);
        parser.run();
        parser.finish()
    };
    match parts {
        Ok(p) => Ok(p.into_blueprint(file, dir)),
        Err(mut diags) => {
            diags.sort_by_key(|d| d.span.start);
            Err(BlueprintError::new(file, diags))
        }
    }
}

/// The label keys that carry the blueprint's name, version and description.
const TITLE: &str = "org.opencontainers.image.title";
const VERSION: &str = "org.opencontainers.image.version";
const DESCRIPTION: &str = "org.opencontainers.image.description";
const LABELS_HELP: &str =
    "add LABEL org.opencontainers.image.title=NAME org.opencontainers.image.version=X.Y.Z";

/// Smallest EFI system partition: FAT32 needs at least 65525 clusters, about 32 MiB.
const MIN_ESP_SIZE: u64 = 32 * 1024 * 1024;

/// Directives kiln reads.
const DIRECTIVES: [&str; 19] = [
    "FROM",
    "ARG",
    "ENV",
    "LABEL",
    "RUN",
    "COPY",
    "ADD",
    "USER",
    "WORKDIR",
    "ENTRYPOINT",
    "CMD",
    "EXPOSE",
    "PACKAGES",
    "SERVICE",
    "CONTRACT",
    "OUTPUT",
    "DISK",
    "SYSTEM",
    "LIFECYCLE",
];

/// Dockerfile directives kiln rejects, and why.
const UNSUPPORTED: [(&str, &str); 6] = [
    (
        "ONBUILD",
        "a kiln image is not a build stage of later Dockerfiles; put the steps where they are needed",
    ),
    (
        "STOPSIGNAL",
        "kiln images are whole systems whose init handles signals; the runtime picks the stop signal",
    ),
    ("HEALTHCHECK", "kiln checks images with the test suites of their contracts (CONTRACT), not at run time"),
    (
        "SHELL",
        "RUN's shell form always runs `/bin/sh -c`; use the exec form, e.g. RUN [\"bash\", \"-c\", \"...\"]",
    ),
    ("VOLUME", "kiln builds whole OS images; give extra partitions with `DISK partition=LABEL:SIZE:ROLE`"),
    ("MAINTAINER", "it is deprecated in Docker too; use `LABEL org.opencontainers.image.authors=...`"),
];

// -------------------------------------------------------------------------------------------------------
// Source text: physical lines and logical texts that keep their source offsets.

/// A logical line (continuations joined) or a heredoc body, with the source offset of each of its bytes.
#[derive(Debug, Default, Clone)]
struct Text {
    s: String,
    offs: Vec<usize>,
    /// Source offset just past the last byte pushed.
    end: usize,
}

impl Text {
    fn push(&mut self, piece: &str, at: usize) {
        self.offs.extend(at..at + piece.len());
        self.s.push_str(piece);
        self.end = at + piece.len();
    }

    /// A text whose every byte points at one source offset (for values decoded from a literal).
    fn at(s: String, at: usize) -> Self {
        let offs = vec![at; s.len()];
        Self { s, offs, end: at }
    }

    /// The source span of the byte range `r` of this text.
    fn span(&self, r: Range<usize>) -> Span {
        let start = self.offs.get(r.start).copied().unwrap_or(self.end);
        if r.end <= r.start {
            return start..start;
        }
        let end = self.offs.get(r.end - 1).map_or(self.end, |o| o + 1);
        start..end.max(start)
    }

    /// The range of the character at byte `i` (empty at the end).
    fn char_range(&self, i: usize) -> Range<usize> {
        let len = self.s.get(i..).and_then(|r| r.chars().next()).map_or(0, char::len_utf8);
        i..i + len
    }
}

/// Physical lines of the source, without their line ends.
#[derive(Debug, Clone)]
struct Lines<'a> {
    src: &'a str,
    pos: usize,
}

#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    start: usize,
    text: &'a str,
    /// Offset of the next line.
    next: usize,
}

impl<'a> Lines<'a> {
    fn next_line(&mut self) -> Option<Line<'a>> {
        let src: &'a str = self.src;
        let rest = src.get(self.pos..).filter(|r| !r.is_empty())?;
        let (len, next) = match rest.find('\n') {
            Some(i) => (i, self.pos + i + 1),
            None => (rest.len(), src.len()),
        };
        let raw = &rest[..len];
        let line = Line { start: self.pos, text: raw.strip_suffix('\r').unwrap_or(raw), next };
        self.pos = next;
        Some(line)
    }
}

/// A line without its continuation mark: `(text, continues)`. Like Docker, the escape character followed
/// only by blanks at the end of a line continues it.
fn trim_continuation(s: &str, esc: char) -> (&str, bool) {
    match s.trim_end_matches([' ', '\t']).strip_suffix(esc) {
        Some(body) => (body, true),
        None => (s, false),
    }
}

/// A parser directive line (`# key=value`): the ranges of key and value.
fn parser_directive(s: &str) -> Option<(Range<usize>, Range<usize>)> {
    let b = s.as_bytes();
    let blank = |i: &mut usize| {
        while b.get(*i).is_some_and(|c| *c == b' ' || *c == b'\t') {
            *i += 1;
        }
    };
    let mut i = 0;
    blank(&mut i);
    if b.get(i) != Some(&b'#') {
        return None;
    }
    i += 1;
    blank(&mut i);
    let key_start = i;
    if !b.get(i).is_some_and(u8::is_ascii_alphabetic) {
        return None;
    }
    while b.get(i).is_some_and(u8::is_ascii_alphanumeric) {
        i += 1;
    }
    let key = key_start..i;
    blank(&mut i);
    if b.get(i) != Some(&b'=') {
        return None;
    }
    i += 1;
    blank(&mut i);
    let end = s.trim_end().len();
    (end > i).then_some((key, i..end))
}

// -------------------------------------------------------------------------------------------------------
// Words, flags and heredoc markers of an instruction's arguments.

/// Splits `r` of `s` at blanks into words, keeping quoted text, escaped characters and `${...}` together.
fn words(s: &str, r: Range<usize>, esc: char) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = r.start;
    while i < r.end {
        let Some(c) = s[i..r.end].chars().next() else {
            break;
        };
        if c.is_whitespace() {
            i += c.len_utf8();
            continue;
        }
        let start = i;
        let mut quote: Option<char> = None;
        let mut braces = 0usize;
        while i < r.end {
            let Some(c) = s[i..r.end].chars().next() else {
                break;
            };
            i += c.len_utf8();
            match quote {
                Some('\'') => {
                    if c == '\'' {
                        quote = None;
                    }
                    continue;
                }
                Some(_) if c == '"' => {
                    quote = None;
                    continue;
                }
                _ => {}
            }
            if c == esc {
                if let Some(n) = s[i..r.end].chars().next() {
                    i += n.len_utf8();
                }
            } else if quote.is_some() {
            } else if c == '\'' || c == '"' {
                quote = Some(c);
            } else if c == '$' && s[i..r.end].starts_with('{') {
                braces += 1;
                i += 1;
            } else if c == '}' && braces > 0 {
                braces -= 1;
            } else if c.is_whitespace() && braces == 0 {
                i -= c.len_utf8();
                break;
            }
        }
        out.push(start..i);
    }
    out
}

/// A `--name[=value]` flag before an instruction's arguments.
#[derive(Debug)]
struct Flag {
    name: String,
    word: Range<usize>,
    value: Option<Range<usize>>,
}

/// The leading flags among `ws`, and the index of the first word after them (`--` ends the flags).
fn flags(s: &str, ws: &[Range<usize>]) -> (Vec<Flag>, usize) {
    let mut out = Vec::new();
    for (i, w) in ws.iter().enumerate() {
        let word = &s[w.clone()];
        if word == "--" {
            return (out, i + 1);
        }
        let Some(body) = word.strip_prefix("--") else {
            return (out, i);
        };
        let (name, value) = match body.find('=') {
            Some(e) => (&body[..e], Some(w.start + 2 + e + 1..w.end)),
            None => (body, None),
        };
        out.push(Flag { name: name.to_owned(), word: w.clone(), value });
    }
    (out, ws.len())
}

/// A `<<NAME` word of RUN, COPY or ADD.
#[derive(Debug, Clone)]
struct HeredocMark {
    word: Range<usize>,
    name: String,
    /// `<<-`: leading tabs are stripped from the body and the terminator.
    chomp: bool,
    /// Unquoted delimiter: COPY bodies get variable substitution.
    expand: bool,
}

fn heredoc_mark(s: &str, w: Range<usize>, esc: char) -> Option<HeredocMark> {
    let word = &s[w.clone()];
    let t = word.trim_start_matches(|c: char| c.is_ascii_digit()).strip_prefix("<<")?;
    if t.starts_with('<') {
        return None; // `<<<` is a here-string
    }
    let (chomp, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let (name, quoted) = match t.chars().next() {
        Some(q @ ('"' | '\'')) => {
            let inner = &t[1..];
            let close = inner.find(q)?;
            (inner[..close].to_owned(), true)
        }
        _ => {
            let end = t.find(|c: char| "<>|;&()".contains(c)).unwrap_or(t.len());
            let raw = &t[..end];
            let quoted = raw.contains(['"', '\'', esc]);
            (raw.chars().filter(|c| !matches!(c, '"' | '\'') && *c != esc).collect(), quoted)
        }
    };
    Some(HeredocMark { word: w, name, chomp, expand: !quoted })
}

/// A heredoc that was read: its marker, body, and the source range of body plus terminator line.
#[derive(Debug)]
struct Heredoc {
    mark: HeredocMark,
    body: Text,
    raw: Range<usize>,
}

// -------------------------------------------------------------------------------------------------------
// The exec form: a JSON array of strings, parsed here so each element keeps its place.

/// Whether `r` of `s` is meant as an exec form: `[` followed directly by a non-blank, or `[` blanks and a
/// string followed by `,` or `]`. (`[ -f x ]` and `[ "$a" = b ]` stay shell commands.)
fn looks_like_json(s: &str, r: Range<usize>) -> bool {
    let t = &s[r.clone()];
    let Some(after) = t.strip_prefix('[') else {
        return false;
    };
    match after.chars().next() {
        None => true,
        Some(c) if !c.is_whitespace() => true,
        Some(_) => {
            let a = after.trim_start();
            let at = r.end - a.len();
            a.starts_with(']')
                || (a.starts_with('"')
                    && json_string(s, at, r.end).is_ok_and(|(_, e)| {
                        let rest = s[e..r.end].trim_start();
                        rest.starts_with(',') || rest.starts_with(']')
                    }))
        }
    }
}

type JsonError = (usize, String);

/// A JSON array of strings at `r` of `s`: each string with the range of its literal.
fn json_strings(s: &str, r: Range<usize>) -> Result<Vec<(String, Range<usize>)>, JsonError> {
    let b = s.as_bytes();
    let end = r.end;
    let blank = |mut i: usize| {
        while i < end && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
            i += 1;
        }
        i
    };
    let mut i = r.start;
    if b.get(i) != Some(&b'[') || i >= end {
        return Err((i, "expected `[`".to_owned()));
    }
    i = blank(i + 1);
    let mut out = Vec::new();
    if i < end && b[i] == b']' {
        i += 1;
    } else {
        loop {
            if i >= end || b[i] != b'"' {
                let msg = if i < end && b[i] == b'\'' {
                    "strings need double quotes"
                } else {
                    "expected a double-quoted string"
                };
                return Err((i, msg.to_owned()));
            }
            let (v, e) = json_string(s, i, end)?;
            out.push((v, i..e));
            i = blank(e);
            match (i < end).then(|| b[i]) {
                Some(b',') => i = blank(i + 1),
                Some(b']') => {
                    i += 1;
                    break;
                }
                _ => return Err((i, "expected `,` or `]`".to_owned())),
            }
        }
    }
    let after = blank(i);
    if after < end {
        return Err((after, "unexpected text after the closing `]`".to_owned()));
    }
    Ok(out)
}

/// The JSON string literal starting at `start` (a `"`): its value and the offset after it.
fn json_string(s: &str, start: usize, end: usize) -> Result<(String, usize), JsonError> {
    let mut out = String::new();
    let mut i = start + 1;
    loop {
        let Some(c) = s.get(i..end).and_then(|r| r.chars().next()) else {
            return Err((start, "unterminated string".to_owned()));
        };
        match c {
            '"' => return Ok((out, i + 1)),
            '\\' => {
                let Some(e) = s.get(i + 1..end).and_then(|r| r.chars().next()) else {
                    return Err((i, "unterminated escape".to_owned()));
                };
                let simple = match e {
                    '"' => Some('"'),
                    '\\' => Some('\\'),
                    '/' => Some('/'),
                    'b' => Some('\u{8}'),
                    'f' => Some('\u{c}'),
                    'n' => Some('\n'),
                    'r' => Some('\r'),
                    't' => Some('\t'),
                    _ => None,
                };
                if let Some(ch) = simple {
                    out.push(ch);
                    i += 2;
                } else if e == 'u' {
                    let hex = |at: usize| {
                        s.get(at..at + 4)
                            .filter(|h| at + 4 <= end && h.bytes().all(|b| b.is_ascii_hexdigit()))
                            .and_then(|h| u32::from_str_radix(h, 16).ok())
                    };
                    let bad = || (i, "invalid `\\u` escape".to_owned());
                    let hi = hex(i + 2).ok_or_else(bad)?;
                    let (ch, len) = if (0xD800..0xDC00).contains(&hi) {
                        let lo = (s.get(i + 6..i + 8) == Some("\\u"))
                            .then(|| hex(i + 8))
                            .flatten()
                            .filter(|lo| (0xDC00..0xE000).contains(lo))
                            .ok_or_else(bad)?;
                        (char::from_u32(0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)), 12)
                    } else {
                        (char::from_u32(hi), 6)
                    };
                    out.push(ch.ok_or_else(bad)?);
                    i += len;
                } else {
                    return Err((i, format!("invalid escape `\\{e}`")));
                }
            }
            c if u32::from(c) < 0x20 => return Err((i, "control character in a string".to_owned())),
            c => {
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
}

// -------------------------------------------------------------------------------------------------------
// Substitution: quotes, escapes and `$VAR` / `${VAR...}`.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quoting {
    /// As Docker reads arguments: quotes are removed, the escape character escapes the next character.
    Shell,
    /// Heredoc bodies and exec-form elements: quotes are text; only `\$` and `\\` are escapes.
    Literal,
}

/// Variables visible to substitution: ENV values (which win, as in Docker) and ARG values.
#[derive(Debug, Default)]
struct Scope {
    env: BTreeMap<String, String>,
    args: BTreeMap<String, Spanned<String>>,
    /// ARGs declared without any value (already reported): they expand to nothing without another error.
    valueless: BTreeSet<String>,
}

impl Scope {
    fn get(&self, name: &str) -> Option<String> {
        self.env
            .get(name)
            .or_else(|| self.args.get(name).map(|a| &a.value))
            .cloned()
            .or_else(|| self.valueless.contains(name).then(String::new))
    }
}

/// Deepest nesting of `${A:-${B:-...}}` read.
const MAX_NESTING: usize = 16;

struct Expander<'p> {
    t: &'p Text,
    esc: char,
    scope: &'p Scope,
    diags: &'p mut Vec<Diag>,
    depth: usize,
}

impl Expander<'_> {
    fn error(&mut self, r: Range<usize>, msg: String) {
        let span = self.t.span(r);
        self.diags.push(Diag::new(span, msg));
    }

    /// The text of `r` with quotes, escapes and substitutions processed; `None` after a reported problem.
    fn expand(&mut self, r: Range<usize>, q: Quoting) -> Option<String> {
        let t = self.t;
        let s = t.s.as_str();
        let mut out = String::new();
        let mut ok = true;
        let mut quote: Option<(char, usize)> = None;
        let mut i = r.start;
        while i < r.end {
            let Some(c) = s[i..r.end].chars().next() else {
                break;
            };
            let n = c.len_utf8();
            if matches!(quote, Some(('\'', _))) {
                if c == '\'' {
                    quote = None;
                } else {
                    out.push(c);
                }
                i += n;
                continue;
            }
            let in_double = quote.is_some();
            if c == self.esc {
                match s[i + n..r.end].chars().next() {
                    Some(d)
                        if (q == Quoting::Shell && !in_double)
                            || d == '$'
                            || d == self.esc
                            || (in_double && d == '"') =>
                    {
                        out.push(d);
                        i += n + d.len_utf8();
                    }
                    _ => {
                        out.push(c);
                        i += n;
                    }
                }
            } else if c == '$' {
                i = self.dollar(i, r.end, q, &mut out, &mut ok);
            } else if q == Quoting::Shell && c == '"' {
                quote = if in_double { None } else { Some(('"', i)) };
                i += 1;
            } else if q == Quoting::Shell && c == '\'' && !in_double {
                quote = Some(('\'', i));
                i += 1;
            } else {
                out.push(c);
                i += n;
            }
        }
        if let Some((c, at)) = quote {
            self.error(at..at + 1, format!("unterminated quote: this `{c}` is never closed"));
            ok = false;
        }
        ok.then_some(out)
    }

    /// Expands the `$` at `i`; returns the offset after the substitution.
    fn dollar(&mut self, i: usize, end: usize, q: Quoting, out: &mut String, ok: &mut bool) -> usize {
        let t = self.t;
        let s = t.s.as_str();
        let ident_end = |from: usize| {
            s[from..end].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(end, |k| from + k)
        };
        let after = i + 1;
        if !s[after..end].starts_with('{') {
            let name_end = ident_end(after);
            let name = &s[after..name_end];
            if !syntax::is_env_name(name) {
                out.push('$');
                return after;
            }
            match self.scope.get(name) {
                Some(v) => out.push_str(&v),
                None => {
                    self.undefined(i..name_end, name);
                    *ok = false;
                }
            }
            return name_end;
        }
        let Some(close) = find_close(s, after + 1, end, self.esc) else {
            self.error(i..end, "unterminated `${`: no `}` closes it".to_owned());
            *ok = false;
            return end;
        };
        let whole = i..close + 1;
        let name_end = ident_end(after + 1).min(close);
        let name = &s[after + 1..name_end];
        if !syntax::is_env_name(name) {
            self.error(
                whole.clone(),
                format!("invalid substitution `{}`: expected a variable name", &s[whole]),
            );
            *ok = false;
            return close + 1;
        }
        const OPS: [&str; 6] = [":-", ":+", ":?", "-", "+", "?"];
        let tail = &s[name_end..close];
        let op = if tail.is_empty() {
            ""
        } else if let Some(op) = OPS.iter().find(|o| tail.starts_with(**o)) {
            op
        } else {
            self.error(
                whole.clone(),
                format!(
                    "unsupported substitution `{}`: kiln knows `${{NAME}}`, `${{NAME:-default}}`, \
                     `${{NAME:+alternative}}` and `${{NAME:?message}}`",
                    &s[whole]
                ),
            );
            *ok = false;
            return close + 1;
        };
        let word = name_end + op.len()..close;
        let value = self.scope.get(name);
        let set = value.is_some();
        let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
        let result = match op {
            "" => {
                if value.is_none() {
                    self.undefined(whole, name);
                }
                value
            }
            ":-" | "-" => {
                if (op == ":-" && non_empty) || (op == "-" && set) {
                    value
                } else {
                    self.nested(word, q)
                }
            }
            ":+" | "+" => {
                if (op == ":+" && non_empty) || (op == "+" && set) {
                    self.nested(word, q)
                } else {
                    Some(String::new())
                }
            }
            _ => {
                if (op == ":?" && non_empty) || (op == "?" && set) {
                    value
                } else {
                    let msg = self.nested(word, q).filter(|m| !m.is_empty());
                    let msg = msg.unwrap_or_else(|| "it is not set".to_owned());
                    self.error(whole, format!("variable `{name}` has no value: {msg}"));
                    None
                }
            }
        };
        match result {
            Some(v) => out.push_str(&v),
            None => *ok = false,
        }
        close + 1
    }

    fn nested(&mut self, r: Range<usize>, q: Quoting) -> Option<String> {
        if self.depth >= MAX_NESTING {
            self.error(r, "substitutions are nested too deeply".to_owned());
            return None;
        }
        self.depth += 1;
        let v = self.expand(r, q);
        self.depth -= 1;
        v
    }

    fn undefined(&mut self, r: Range<usize>, name: &str) {
        let span = self.t.span(r);
        self.diags.push(Diag::new(span, format!("undefined variable `{name}`")).with_help(format!(
            "declare it before this line with `ARG {name}=...` or `ENV {name}=...`, or give a default: \
             `${{{name}:-...}}`"
        )));
    }
}

/// The `}` that closes a `${` whose body starts at `from`, skipping nested `${...}` and escaped characters.
fn find_close(s: &str, from: usize, end: usize, esc: char) -> Option<usize> {
    let b = s.as_bytes();
    let mut depth = 0usize;
    let mut i = from;
    while i < end {
        match b[i] {
            c if char::from(c) == esc => i += 1,
            b'$' if b.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

// -------------------------------------------------------------------------------------------------------
// Small value helpers.

/// `rel` resolved against the absolute folder `base`, with `.`, `..` and repeated `/` folded.
fn resolve(base: &str, rel: &str) -> String {
    let joined = if rel.starts_with('/') { rel.to_owned() } else { format!("{base}/{rel}") };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether `s` names a remote source (`https://...`, `git@host:...`).
fn is_remote(s: &str) -> bool {
    let scheme = s.split_once("://").is_some_and(|(scheme, _)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.bytes().all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
    });
    scheme || s.starts_with("git@")
}

/// An extra partition: `LABEL:SIZE:ROLE[:FS]`, e.g. `srv:1G:srv:ext4` or `swap:2G:swap`.
fn partition(s: &str) -> Result<Partition, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [label, size, role, fs @ ..] = parts.as_slice() else {
        return Err(format!(
            "invalid partition `{s}`: expected `LABEL:SIZE:ROLE[:FS]`, e.g. `srv:1G:srv:ext4`"
        ));
    };
    if fs.len() > 1 {
        return Err(format!(
            "invalid partition `{s}`: expected `LABEL:SIZE:ROLE[:FS]`, e.g. `srv:1G:srv:ext4`"
        ));
    }
    if label.is_empty() || label.encode_utf16().count() > 36 || label.contains(char::is_control) {
        return Err(format!(
            "invalid partition `{s}`: `{label}` is not a GPT partition label (1 to 36 characters)"
        ));
    }
    let size = syntax::size(size)?;
    if size == 0 {
        return Err(format!("invalid partition `{s}`: a size must be larger than 0"));
    }
    let Some(role) = PartitionRole::ALL.iter().find(|(n, _)| n == role).map(|(_, r)| *r) else {
        let names: Vec<&str> = PartitionRole::ALL.iter().map(|(n, _)| *n).collect();
        return Err(format!(
            "invalid partition `{s}`: unknown role `{role}` (expected {})",
            names.join(", ")
        ));
    };
    let fs = match fs.first() {
        None => None,
        Some(&"ext4") => Some(RootFs::Ext4),
        Some(other) => {
            return Err(format!("invalid partition `{s}`: unsupported file system `{other}` (only `ext4`)"))
        }
    };
    if role == PartitionRole::Swap && fs.is_some() {
        return Err(format!("invalid partition `{s}`: a swap partition holds no file system"));
    }
    Ok(Partition { label: (*label).to_owned(), size, role, fs })
}

/// A byte count for messages, in MiB when it is a whole number of them.
fn mib(bytes: u64) -> String {
    if bytes % (1024 * 1024) == 0 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{bytes} bytes")
    }
}

// -------------------------------------------------------------------------------------------------------
// The parser.

/// One instruction: its logical text, directive (upper case) and the ranges of its name and arguments.
struct Ins<'t> {
    t: &'t Text,
    dir: String,
    name: Range<usize>,
    rest: Range<usize>,
}

impl Ins<'_> {
    fn s(&self) -> &str {
        &self.t.s
    }

    fn name_span(&self) -> Span {
        self.t.span(self.name.clone())
    }

    fn span(&self) -> Span {
        self.t.span(self.name.start..self.rest.end)
    }

    /// The arguments from the word `ws[k]` on (an empty range at the end when there is none).
    fn args_from(&self, ws: &[Range<usize>], k: usize) -> Range<usize> {
        ws.get(k).map_or(self.rest.end..self.rest.end, |w| w.start..self.rest.end)
    }
}

/// A `NAME=VALUE` argument, expanded.
#[derive(Debug)]
struct Pair {
    key: String,
    key_range: Range<usize>,
    value: String,
    value_range: Range<usize>,
}

/// Everything the parser found, before it becomes a [`Blueprint`].
#[derive(Debug)]
struct Parts {
    name: Spanned<String>,
    version: Spanned<semver::Version>,
    description: Option<String>,
    base: Spanned<Base>,
    packages: Packages,
    services: Services,
    system: System,
    disk: Disk,
    outputs: Vec<Spanned<Output>>,
    contracts: Vec<Spanned<ContractRef>>,
    lifecycle: LifecyclePolicy,
    variables: BTreeMap<String, Spanned<String>>,
    container: ContainerConfig,
    steps: Vec<Spanned<Step>>,
}

impl Parts {
    fn into_blueprint(self, file: Arc<SourceFile>, dir: PathBuf) -> Blueprint {
        Blueprint {
            file,
            form: Form::Kilnfile,
            dir,
            name: self.name,
            version: self.version,
            description: self.description,
            base: self.base,
            packages: self.packages,
            groups: Vec::new(),
            users: Vec::new(),
            directories: Vec::new(),
            services: self.services,
            system: self.system,
            disk: self.disk,
            outputs: self.outputs,
            contracts: self.contracts,
            lifecycle: self.lifecycle,
            variables: self.variables,
            container: self.container,
            steps: self.steps,
        }
    }
}

struct Parser<'a> {
    src: &'a str,
    vars: &'a Vars,
    esc: char,
    diags: Vec<Diag>,
    scope: Scope,
    /// The first FROM directive.
    from: Option<Span>,
    /// Directives other than ARG met before any FROM.
    before_from: Vec<(String, Span)>,
    base: Option<Spanned<Base>>,
    name: Option<Spanned<String>>,
    version: Option<Spanned<semver::Version>>,
    description: Option<String>,
    /// Whether the title and version labels were given (perhaps with a bad value, reported there).
    title_given: bool,
    version_given: bool,
    /// ENV is kept in `scope`; `user` and `workdir` here are the values in force.
    container: ContainerConfig,
    packages: Packages,
    services: Services,
    system: System,
    disk: Disk,
    disk_size: Option<Span>,
    outputs: Vec<Spanned<Output>>,
    contracts: Vec<Spanned<ContractRef>>,
    lifecycle: LifecyclePolicy,
    /// Settings that may be given once (`DISK size`, `SYSTEM hostname`, ...), with where they were.
    settings: BTreeMap<String, Span>,
    steps: Vec<Spanned<Step>>,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, vars: &'a Vars) -> Self {
        Self {
            src,
            vars,
            esc: '\\',
            diags: Vec::new(),
            scope: Scope::default(),
            from: None,
            before_from: Vec::new(),
            base: None,
            name: None,
            version: None,
            description: None,
            title_given: false,
            version_given: false,
            container: ContainerConfig::default(),
            packages: Packages::default(),
            services: Services::default(),
            system: System::default(),
            disk: Disk::default(),
            disk_size: None,
            outputs: Vec::new(),
            contracts: Vec::new(),
            lifecycle: LifecyclePolicy::default(),
            settings: BTreeMap::new(),
            steps: Vec::new(),
        }
    }

    fn error(&mut self, span: Span, msg: impl Into<String>) {
        self.diags.push(Diag::new(span, msg));
    }

    fn error_help(&mut self, span: Span, msg: impl Into<String>, help: impl Into<String>) {
        self.diags.push(Diag::new(span, msg).with_help(help));
    }

    /// 1-based line of a source offset.
    fn line_of(&self, span: &Span) -> usize {
        self.src.get(..span.start).map_or(1, |b| b.matches('\n').count() + 1)
    }

    fn expand(&mut self, t: &Text, r: Range<usize>, q: Quoting) -> Option<String> {
        Expander { t, esc: self.esc, scope: &self.scope, diags: &mut self.diags, depth: 0 }.expand(r, q)
    }

    /// Expanded words: the value (`None` after a reported problem) and the word's range.
    fn expand_words(&mut self, t: &Text, ws: &[Range<usize>]) -> Vec<(Option<String>, Range<usize>)> {
        ws.iter().map(|w| (self.expand(t, w.clone(), Quoting::Shell), w.clone())).collect()
    }

    fn missing(&mut self, ins: &Ins<'_>, what: &str) {
        let span = ins.name_span();
        let d = ins.dir.clone();
        self.error(span, format!("`{d}` needs {what}"));
    }

    /// Records a setting that may be given only once; reports a second one.
    fn once(&mut self, key: String, span: Span) -> bool {
        if let Some(first) = self.settings.get(&key) {
            let line = self.line_of(first);
            self.diags.push(
                Diag::new(span, format!("`{key}` is set twice"))
                    .with_label("set again here")
                    .with_help(format!("it is first set on line {line}")),
            );
            return false;
        }
        self.settings.insert(key, span);
        true
    }

    fn unknown_flag(&mut self, ins: &Ins<'_>, f: &Flag, takes: &str) {
        let span = ins.t.span(f.word.clone());
        let d = ins.dir.clone();
        self.error_help(span, format!("unknown flag `--{}` for `{d}`", f.name), takes.to_owned());
    }

    /// A flag's value, expanded, with its span; reports a flag given without `=VALUE`.
    fn flag_value(&mut self, ins: &Ins<'_>, f: &Flag) -> Option<(String, Span)> {
        let Some(r) = f.value.clone() else {
            let span = ins.t.span(f.word.clone());
            self.error(span, format!("`--{}` needs a value: `--{}=VALUE`", f.name, f.name));
            return None;
        };
        let v = self.expand(ins.t, r.clone(), Quoting::Shell)?;
        Some((v, ins.t.span(r)))
    }

    /// A boolean flag: `--name`, `--name=true` or `--name=false`.
    fn flag_bool(&mut self, ins: &Ins<'_>, f: &Flag) -> Option<bool> {
        let Some(r) = f.value.clone() else {
            return Some(true);
        };
        match &ins.s()[r.clone()] {
            "true" => Some(true),
            "false" => Some(false),
            other => {
                let msg = format!("`--{}` takes no value, or `true` or `false`, not `{other}`", f.name);
                self.error(ins.t.span(r), msg);
                None
            }
        }
    }

    /// Reports flags given twice; returns the ones to look at.
    fn distinct_flags<'f>(&mut self, ins: &Ins<'_>, flags: &'f [Flag]) -> Vec<&'f Flag> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for f in flags {
            if seen.insert(f.name.as_str()) {
                out.push(f);
            } else {
                let span = ins.t.span(f.word.clone());
                self.error(span, format!("`--{}` is given twice", f.name));
            }
        }
        out
    }

    // ---------------------------------------------------------------------------------------------------

    fn run(&mut self) {
        let mut lines = Lines { src: self.src, pos: 0 };
        if self.src.starts_with('\u{feff}') {
            lines.pos = '\u{feff}'.len_utf8();
        }
        self.parser_directives(&mut lines);
        while let Some(line) = lines.next_line() {
            let content = line.text.trim_start();
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let mut text = Text::default();
            let (piece, mut more) = trim_continuation(content, self.esc);
            text.push(piece, line.start + (line.text.len() - content.len()));
            while more {
                let Some(next) = lines.next_line() else { break };
                let t = next.text.trim_start();
                // As in Docker: comment lines and empty lines inside a continuation are skipped.
                if t.is_empty() || t.starts_with('#') {
                    continue;
                }
                let (piece, m) = trim_continuation(next.text, self.esc);
                text.push(piece, next.start);
                more = m;
            }
            self.instruction(&text, &mut lines);
        }
    }

    /// `# escape=` and friends, only before anything else.
    fn parser_directives(&mut self, lines: &mut Lines<'_>) {
        let mut seen = BTreeSet::new();
        loop {
            let saved = lines.clone();
            let Some(line) = lines.next_line() else {
                return;
            };
            let Some((key, value)) = parser_directive(line.text) else {
                *lines = saved;
                return;
            };
            let name = line.text[key.clone()].to_ascii_lowercase();
            if !matches!(name.as_str(), "escape" | "syntax" | "check") {
                *lines = saved; // an ordinary comment: directives end here
                return;
            }
            let key_span = line.start + key.start..line.start + key.end;
            if !seen.insert(name.clone()) {
                self.error(key_span, format!("the `{name}` parser directive is given twice"));
                continue;
            }
            if name == "escape" {
                match &line.text[value.clone()] {
                    "\\" => self.esc = '\\',
                    "`" => self.esc = '`',
                    other => {
                        let span = line.start + value.start..line.start + value.end;
                        self.error_help(
                            span,
                            format!("invalid escape character `{other}`"),
                            "use `# escape=\\` (the default) or `# escape=``",
                        );
                    }
                }
            }
        }
    }

    fn instruction(&mut self, t: &Text, lines: &mut Lines<'_>) {
        let s = t.s.as_str();
        let name_end = s.find(char::is_whitespace).unwrap_or(s.len());
        let after = &s[name_end..];
        let rest_start = name_end + (after.len() - after.trim_start().len());
        let rest_end = s.trim_end().len().max(rest_start);
        let ins =
            Ins { t, dir: s[..name_end].to_ascii_uppercase(), name: 0..name_end, rest: rest_start..rest_end };
        let dir = ins.dir.as_str();
        if self.from.is_none() && dir != "ARG" && dir != "FROM" && DIRECTIVES.contains(&dir) {
            self.before_from.push((ins.dir.clone(), ins.name_span()));
        }
        match dir {
            "FROM" => self.from_(&ins),
            "ARG" => self.arg(&ins),
            "ENV" => self.env(&ins),
            "LABEL" => self.label(&ins),
            "RUN" => self.run_(&ins, lines),
            "COPY" => self.copy(&ins, lines, false),
            "ADD" => self.copy(&ins, lines, true),
            "USER" => self.user(&ins),
            "WORKDIR" => self.workdir(&ins),
            "ENTRYPOINT" | "CMD" => self.entrypoint_cmd(&ins),
            "EXPOSE" => self.expose(&ins),
            "PACKAGES" => self.packages(&ins),
            "SERVICE" => self.service(&ins),
            "CONTRACT" => self.contract(&ins),
            "OUTPUT" => self.output(&ins),
            "DISK" => self.disk(&ins),
            "SYSTEM" => self.system(&ins),
            "LIFECYCLE" => self.lifecycle(&ins),
            _ => {
                let span = ins.name_span();
                let raw = &s[..name_end];
                match UNSUPPORTED.iter().find(|(d, _)| *d == dir) {
                    Some((d, why)) => self.error(span, format!("`{d}` is not supported by kiln: {why}")),
                    None => self.error_help(
                        span,
                        format!("unknown directive `{raw}`"),
                        format!("kiln knows {}", DIRECTIVES.join(", ")),
                    ),
                }
            }
        }
    }

    // ---------------------------------------------------------------------------------------------------

    fn from_(&mut self, ins: &Ins<'_>) {
        if let Some(first) = &self.from {
            let line = self.line_of(first);
            self.error_help(
                ins.name_span(),
                "a second `FROM`: multi-stage builds are not supported",
                format!("a Kilnfile builds one image from one base; the first FROM is on line {line}"),
            );
            return;
        }
        self.from = Some(ins.name_span());
        let s = ins.s();
        let ws = words(s, ins.rest.clone(), self.esc);
        let (flags, k) = flags(s, &ws);
        let mut variant = None;
        let mut components = None;
        let mut mirror = None;
        let mut keyring = None;
        let mut debian_flags = Vec::new();
        for f in self.distinct_flags(ins, &flags) {
            match f.name.as_str() {
                "variant" | "components" | "mirror" | "keyring" => {
                    debian_flags.push((f.name.clone(), ins.t.span(f.word.clone())));
                }
                "platform" => {
                    let span = ins.t.span(f.word.clone());
                    self.error(span, "`FROM --platform` is not supported by kiln: images are built for the host's architecture");
                    continue;
                }
                _ => {
                    self.unknown_flag(ins, f, "FROM takes --variant, --components, --mirror and --keyring");
                    continue;
                }
            }
            let Some((v, span)) = self.flag_value(ins, f) else {
                continue;
            };
            match f.name.as_str() {
                "variant" => match v.as_str() {
                    "minbase" => variant = Some(Variant::Minbase),
                    "standard" => variant = Some(Variant::Standard),
                    _ => self.error_help(
                        span,
                        format!("unknown variant `{v}`"),
                        "expected `minbase` or `standard`",
                    ),
                },
                "components" => {
                    let list: Vec<String> = v.split(',').map(str::to_owned).collect();
                    match list.iter().find(|c| !syntax::is_name(c)) {
                        Some(bad) => self.error_help(
                            span,
                            format!("`{bad}` is not a valid component name"),
                            "give a comma-separated list, e.g. `--components=main,contrib`",
                        ),
                        None => components = Some(list),
                    }
                }
                "mirror" => {
                    if ["http://", "https://", "file:/"].iter().any(|p| v.starts_with(p) && v.len() > p.len())
                    {
                        mirror = Some(v);
                    } else {
                        self.error_help(
                            span,
                            format!("`{v}` is not a mirror URL"),
                            "use an `http://`, `https://` or `file:/` URL",
                        );
                    }
                }
                _ => {
                    if v.is_empty() || v.contains('\0') {
                        self.error_help(span, format!("`{v}` is not a path"), "name a keyring file");
                    } else {
                        keyring = Some(v);
                    }
                }
            }
        }
        let Some(refw) = ws.get(k).cloned() else {
            self.missing(ins, "a base, e.g. `FROM debian:bookworm`");
            return;
        };
        if let Some(extra) = ws.get(k + 1) {
            if s[extra.clone()].eq_ignore_ascii_case("as") {
                self.error_help(
                    ins.t.span(extra.start..ins.rest.end),
                    "`AS NAME`: multi-stage builds are not supported",
                    "a Kilnfile builds one image; drop `AS ...`",
                );
            } else {
                let span = ins.t.span(extra.clone());
                self.error(span, format!("unexpected argument `{}` after the base", &s[extra.clone()]));
            }
        }
        let Some(reference) = self.expand(ins.t, refw.clone(), Quoting::Shell) else {
            return;
        };
        let span = ins.t.span(refw);
        let base = if let Some(suite) = reference.strip_prefix("debian:") {
            if !syntax::is_name(suite) {
                self.error_help(
                    span,
                    format!("`{suite}` is not a valid Debian suite name"),
                    "e.g. `debian:bookworm`",
                );
                return;
            }
            Base::Debian(DebianBase {
                suite: suite.to_owned(),
                components: components.unwrap_or_default(),
                variant: variant.unwrap_or_default(),
                mirror,
                keyring,
            })
        } else if reference.starts_with("catalog:") || reference.starts_with("oci-layout:") {
            for (flag, fspan) in debian_flags {
                self.error(
                    fspan,
                    format!("`--{flag}` applies only to `debian:` bases, not to `{reference}`"),
                );
            }
            match syntax::base_ref(&reference) {
                Ok(b) => b,
                Err(m) => {
                    self.error(span, m);
                    return;
                }
            }
        } else {
            self.error_help(
                span,
                format!("invalid base `{reference}`"),
                "expected `debian:SUITE`, `catalog:FAMILY@VERSION|CHANNEL` or `oci-layout:PATH:TAG`",
            );
            return;
        };
        self.base = Some(Spanned::new(base, span));
    }

    fn arg(&mut self, ins: &Ins<'_>) {
        let s = ins.s();
        let ws = words(s, ins.rest.clone(), self.esc);
        if ws.is_empty() {
            self.missing(ins, "a variable: `ARG NAME` or `ARG NAME=DEFAULT`");
        }
        for w in ws {
            let word = &s[w.clone()];
            let (name, default) = match word.find('=') {
                Some(eq) => (&word[..eq], Some(w.start + eq + 1..w.end)),
                None => (word, None),
            };
            let span = ins.t.span(w.clone());
            if !syntax::is_env_name(name) {
                self.error_help(
                    span,
                    format!("`{name}` is not a valid variable name"),
                    "a variable name uses ASCII letters, digits and `_`, not starting with a digit",
                );
                continue;
            }
            let name = name.to_owned();
            let default = match default {
                Some(r) => match self.expand(ins.t, r, Quoting::Shell) {
                    Some(v) => Some(v),
                    None => {
                        self.scope.valueless.insert(name);
                        continue;
                    }
                },
                None => None,
            };
            let value = match (self.vars.get(&name), default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => d,
                // A second `ARG NAME` keeps the value it already has.
                (None, None) if self.scope.args.contains_key(&name) => continue,
                (None, None) => {
                    if !self.scope.valueless.contains(&name) {
                        self.error(
                            span,
                            format!("variable `{name}` has no value; give a default or --var {name}=..."),
                        );
                        self.scope.valueless.insert(name);
                    }
                    continue;
                }
            };
            self.scope.valueless.remove(&name);
            self.scope.args.insert(name, Spanned::new(value, span));
        }
    }

    /// `NAME=VALUE ...` (or the legacy `NAME VALUE`) of ENV and LABEL, names and values expanded.
    fn pairs(&mut self, ins: &Ins<'_>) -> Vec<Pair> {
        let s = ins.s();
        let t = ins.t;
        let ws = words(s, ins.rest.clone(), self.esc);
        let Some(first) = ws.first().cloned() else {
            self.missing(ins, "NAME=VALUE arguments");
            return Vec::new();
        };
        let mut raw = Vec::new();
        if !s[first.clone()].contains('=') {
            match ws.get(1) {
                Some(second) => raw.push((first.clone(), second.start..ins.rest.end)),
                None => {
                    let d = ins.dir.clone();
                    let name = &s[first.clone()];
                    self.error(t.span(first), format!("`{d} {name}` needs a value: write `{name}=VALUE`"));
                    return Vec::new();
                }
            }
        } else {
            for w in ws {
                match s[w.clone()].find('=') {
                    Some(eq) => raw.push((w.start..w.start + eq, w.start + eq + 1..w.end)),
                    None => {
                        let word = &s[w.clone()];
                        self.error(t.span(w), format!("`{word}` is not of the form NAME=VALUE"));
                    }
                }
            }
        }
        let mut out = Vec::new();
        for (k, v) in raw {
            let key = self.expand(t, k.clone(), Quoting::Shell);
            let value = self.expand(t, v.clone(), Quoting::Shell);
            let (Some(key), Some(value)) = (key, value) else {
                continue;
            };
            if key.trim().is_empty() {
                self.error(t.span(k), "a name is missing before `=`");
                continue;
            }
            out.push(Pair { key, key_range: k, value, value_range: v });
        }
        out
    }

    fn env(&mut self, ins: &Ins<'_>) {
        // Like Docker, every value of one ENV is expanded with the variables as they were before it.
        let pairs = self.pairs(ins);
        for p in pairs {
            if !syntax::is_env_name(&p.key) {
                self.error_help(
                    ins.t.span(p.key_range),
                    format!("`{}` is not a valid variable name", p.key),
                    "use ASCII letters, digits and `_`, not starting with a digit",
                );
                continue;
            }
            self.scope.env.insert(p.key, p.value);
        }
    }

    fn label(&mut self, ins: &Ins<'_>) {
        for p in self.pairs(ins) {
            let span = ins.t.span(p.value_range.clone());
            match p.key.as_str() {
                TITLE => {
                    self.title_given = true;
                    if syntax::is_name(&p.value) {
                        self.name = Some(Spanned::new(p.value, span));
                    } else {
                        self.error_help(
                            span,
                            format!("`{}` is not a valid image title", p.value),
                            "the title names the image family: lowercase letters, digits, `-`, `_` and `.`",
                        );
                    }
                }
                VERSION => {
                    self.version_given = true;
                    match semver::Version::parse(&p.value) {
                        Ok(v) => self.version = Some(Spanned::new(v, span)),
                        Err(e) => self.error_help(
                            span,
                            format!("invalid version `{}`: {e}", p.value),
                            "the version is a semantic version, e.g. `1.0.0`",
                        ),
                    }
                }
                DESCRIPTION => self.description = Some(p.value),
                _ => {
                    self.container.labels.insert(p.key, p.value);
                }
            }
        }
    }

    fn run_(&mut self, ins: &Ins<'_>, lines: &mut Lines<'_>) {
        let s = ins.s();
        let ws = words(s, ins.rest.clone(), self.esc);
        let (flags, k) = flags(s, &ws);
        for f in &flags {
            let span = ins.t.span(f.word.clone());
            self.error(
                span,
                format!(
                    "`RUN --{}` is not supported by kiln: RUN steps run in kiln's build sandbox, without \
                     build mounts, network or security options",
                    f.name
                ),
            );
        }
        let body = ins.args_from(&ws, k);
        let command = if looks_like_json(s, body.clone()) {
            let Some(argv) = self.exec_form(ins, body) else {
                return;
            };
            if argv.is_empty() {
                self.missing(ins, "a program to run: the exec form `[]` is empty");
                return;
            }
            Command::Exec(argv)
        } else {
            let marks: Vec<HeredocMark> =
                ws[k..].iter().filter_map(|w| heredoc_mark(s, w.clone(), self.esc)).collect();
            let Some(docs) = self.read_heredocs(ins, marks, lines) else {
                return;
            };
            let text = &s[body.clone()];
            if text.is_empty() {
                self.missing(ins, "a command");
                return;
            }
            match docs.as_slice() {
                [] => Command::Shell(text.to_owned()),
                // `RUN <<EOF`: the body is the script.
                [only] if text == &s[only.mark.word.clone()] => Command::Shell(only.body.s.clone()),
                // A command that reads heredocs: the shell gets the command with the heredocs after it.
                [first, ..] => {
                    let last = &docs[docs.len() - 1];
                    let raw = &self.src[first.raw.start..last.raw.end];
                    Command::Shell(format!("{text}\n{}", raw.trim_end_matches(['\n', '\r'])))
                }
            }
        };
        if !flags.is_empty() {
            return;
        }
        // As in Docker, RUN sees the ARG values in scope as environment variables, and ENV wins over them.
        let mut env: BTreeMap<String, String> =
            self.scope.args.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect();
        env.extend(self.scope.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let step = RunStep {
            command,
            env,
            workdir: self.container.workdir.clone(),
            user: self.container.user.clone(),
        };
        self.steps.push(Spanned::new(Step::Run(step), ins.span()));
    }

    /// The strings of an exec form; reports bad JSON at the place it goes wrong.
    fn exec_form(&mut self, ins: &Ins<'_>, r: Range<usize>) -> Option<Vec<String>> {
        match json_strings(ins.s(), r) {
            Ok(v) => Some(v.into_iter().map(|(s, _)| s).collect()),
            Err((at, msg)) => {
                let span = ins.t.span(ins.t.char_range(at));
                self.error_help(
                    span,
                    format!("invalid exec form: {msg}"),
                    "write a JSON array of double-quoted strings, e.g. [\"/usr/bin/env\", \"true\"]",
                );
                None
            }
        }
    }

    /// Reads the bodies of the heredocs an instruction names, in order. `None` if one is not terminated or
    /// has no delimiter (reported).
    fn read_heredocs(
        &mut self,
        ins: &Ins<'_>,
        marks: Vec<HeredocMark>,
        lines: &mut Lines<'_>,
    ) -> Option<Vec<Heredoc>> {
        let mut out = Vec::new();
        let mut ok = true;
        for mark in marks {
            let span = ins.t.span(mark.word.clone());
            if mark.name.is_empty() {
                self.error_help(
                    span,
                    "a heredoc needs a delimiter",
                    "write it right after `<<`, e.g. `<<EOF`",
                );
                ok = false;
                continue;
            }
            let start = lines.pos;
            let mut body = Text::default();
            let mut end = None;
            while let Some(line) = lines.next_line() {
                let (content, at) = if mark.chomp {
                    let c = line.text.trim_start_matches('\t');
                    (c, line.start + line.text.len() - c.len())
                } else {
                    (line.text, line.start)
                };
                if content == mark.name {
                    end = Some(line.next);
                    break;
                }
                body.push(content, at);
                body.push("\n", line.start + line.text.len());
            }
            match end {
                Some(end) => out.push(Heredoc { mark, body, raw: start..end }),
                None => {
                    let name = mark.name;
                    self.error_help(
                        span,
                        format!("unterminated heredoc: no line `{name}` ends it"),
                        format!("end the heredoc with a line that holds only `{name}`"),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }

    fn copy(&mut self, ins: &Ins<'_>, lines: &mut Lines<'_>, add: bool) {
        let d = if add { "ADD" } else { "COPY" };
        let s = ins.s();
        let t = ins.t;
        let ws = words(s, ins.rest.clone(), self.esc);
        let (flags, k) = flags(s, &ws);
        let mut ok = true;
        let mut chown = None;
        let mut chmod = None;
        let mut template = None;
        let mut other_stage = false;
        for f in self.distinct_flags(ins, &flags) {
            let span = t.span(f.word.clone());
            match f.name.as_str() {
                "chown" => match self.flag_value(ins, f) {
                    Some((v, vspan)) => match syntax::user_spec(&v) {
                        Ok(v) => chown = Some(v),
                        Err(m) => {
                            self.error(vspan, m);
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                "chmod" => match self.flag_value(ins, f) {
                    Some((v, vspan)) => match syntax::mode(&v) {
                        Ok(m) => chmod = Some(m),
                        Err(m) => {
                            self.error(vspan, m);
                            ok = false;
                        }
                    },
                    None => ok = false,
                },
                "template" => match self.flag_bool(ins, f) {
                    Some(b) => template = b.then_some(span),
                    None => ok = false,
                },
                "from" => {
                    self.error_help(
                        span,
                        format!("`{d} --from`: multi-stage builds are not supported"),
                        format!("{d} takes files from the blueprint folder"),
                    );
                    other_stage = true;
                }
                "link" | "parents" | "exclude" | "checksum" | "keep-git-dir" | "unpack" => {
                    self.error(span, format!("`{d} --{}` is not supported by kiln", f.name));
                    ok = false;
                }
                _ => {
                    self.unknown_flag(ins, f, &format!("{d} takes --chown, --chmod and --template"));
                    ok = false;
                }
            }
        }
        let body = ins.args_from(&ws, k);

        // The arguments: (value, text they were read from, range in it, heredoc body).
        let mut args: Vec<(Option<String>, Range<usize>, Option<Heredoc>)> = Vec::new();
        if looks_like_json(s, body.clone()) {
            let Ok(items) = json_strings(s, body.clone()) else {
                self.exec_form(ins, body);
                return;
            };
            for (v, r) in items {
                // Substitution in an element; problems point at the element.
                let text = Text::at(v, t.span(r.clone()).start);
                let len = text.s.len();
                let value = self.expand(&text, 0..len, Quoting::Literal);
                args.push((value, r, None));
            }
        } else {
            let marks: Vec<HeredocMark> =
                ws[k..].iter().filter_map(|w| heredoc_mark(s, w.clone(), self.esc)).collect();
            let Some(mut docs) = self.read_heredocs(ins, marks, lines).map(|d| d.into_iter()) else {
                return;
            };
            let mut next_doc = docs.next();
            for w in &ws[k..] {
                if next_doc.as_ref().is_some_and(|h| h.mark.word == *w) {
                    let h = next_doc.take();
                    next_doc = docs.next();
                    args.push((Some(s[w.clone()].to_owned()), w.clone(), h));
                } else {
                    let v = self.expand(t, w.clone(), Quoting::Shell);
                    args.push((v, w.clone(), None));
                }
            }
        }
        let Some((dest, dest_range, dest_doc)) = args.pop().filter(|_| !args.is_empty()) else {
            self.missing(ins, "a source and a destination");
            return;
        };
        if other_stage {
            return; // the paths are another stage's: nothing more to say about them
        }
        let dest_span = t.span(dest_range);
        if dest_doc.is_some() {
            self.error(dest_span, format!("the destination of `{d}` cannot be a heredoc"));
            return;
        }
        let Some(dest) = dest else { return };
        if dest.is_empty() {
            self.error(dest_span, format!("the destination of `{d}` is empty"));
            return;
        }
        // Like Docker: a relative destination is relative to the WORKDIR; a trailing `/` means a folder.
        let into_dir = dest.ends_with('/') || dest == "." || dest.ends_with("/.");
        let workdir = self.container.workdir.clone().unwrap_or_else(|| "/".to_owned());
        let mut dest_abs = resolve(&workdir, &dest);
        if into_dir && dest_abs != "/" {
            dest_abs.push('/');
        }
        if args.len() > 1 && !into_dir {
            self.error_help(
                dest_span,
                format!(
                    "`{d}` with several sources needs a folder as destination: `{dest}` does not end in `/`"
                ),
                format!("write `{dest}/`"),
            );
            ok = false;
        }
        let (owner, group) = match &chown {
            Some(c) => match c.split_once(':') {
                Some((u, g)) => (u.to_owned(), g.to_owned()),
                None => (c.clone(), c.clone()),
            },
            None => ("root".to_owned(), "root".to_owned()),
        };
        let mut files = Vec::new();
        let mut sources = Vec::new();
        for (value, r, doc) in args {
            let span = t.span(r);
            if let Some(doc) = doc {
                if let Some(tspan) = &template {
                    self.error(
                        tspan.clone(),
                        "`--template` applies to files from the blueprint folder, not to heredocs".to_owned(),
                    );
                    ok = false;
                    continue;
                }
                let content = if doc.mark.expand {
                    let len = doc.body.s.len();
                    match self.expand(&doc.body, 0..len, Quoting::Literal) {
                        Some(c) => c,
                        None => {
                            ok = false;
                            continue;
                        }
                    }
                } else {
                    doc.body.s.clone()
                };
                let path = if into_dir { format!("{dest_abs}{}", doc.mark.name) } else { dest_abs.clone() };
                let step = FileStep {
                    path,
                    source: FileSource::Inline(content),
                    mode: chmod.unwrap_or(Mode(0o644)),
                    owner: owner.clone(),
                    group: group.clone(),
                };
                files.push(Spanned::new(Step::File(step), ins.span()));
                continue;
            }
            let Some(src) = value else {
                ok = false;
                continue;
            };
            if is_remote(&src) {
                self.error_help(
                    span,
                    format!("`{src}`: remote sources are not supported"),
                    format!("download the file into the blueprint folder and {d} it from there"),
                );
                ok = false;
                continue;
            }
            if let Err(m) = syntax::relative_path(&src) {
                self.error(span, format!("invalid {d} source: {m}"));
                ok = false;
                continue;
            }
            sources.push(src);
        }
        if !ok {
            return;
        }
        self.steps.extend(files);
        if !sources.is_empty() {
            let step = CopyStep { sources, dest: dest_abs, chown, chmod, template: template.is_some(), add };
            self.steps.push(Spanned::new(Step::Copy(step), ins.span()));
        }
    }

    fn user(&mut self, ins: &Ins<'_>) {
        if ins.rest.is_empty() {
            self.missing(ins, "a user: `USER NAME[:GROUP]`");
            return;
        }
        let Some(v) = self.expand(ins.t, ins.rest.clone(), Quoting::Shell) else {
            return;
        };
        match syntax::user_spec(&v) {
            Ok(v) => self.container.user = Some(v),
            Err(m) => self.error(ins.t.span(ins.rest.clone()), m),
        }
    }

    fn workdir(&mut self, ins: &Ins<'_>) {
        if ins.rest.is_empty() {
            self.missing(ins, "a folder");
            return;
        }
        let Some(v) = self.expand(ins.t, ins.rest.clone(), Quoting::Shell) else {
            return;
        };
        if v.is_empty() || v.contains('\0') {
            self.error(ins.t.span(ins.rest.clone()), format!("`{}` is not a folder", v.escape_debug()));
            return;
        }
        // Like Docker: a relative WORKDIR is relative to the one before.
        let base = self.container.workdir.clone().unwrap_or_else(|| "/".to_owned());
        self.container.workdir = Some(resolve(&base, &v));
    }

    fn entrypoint_cmd(&mut self, ins: &Ins<'_>) {
        if ins.rest.is_empty() {
            self.missing(ins, "a command, in exec form `[\"program\", \"arg\"]` or shell form");
            return;
        }
        let argv = if looks_like_json(ins.s(), ins.rest.clone()) {
            let Some(v) = self.exec_form(ins, ins.rest.clone()) else {
                return;
            };
            v
        } else {
            vec!["/bin/sh".to_owned(), "-c".to_owned(), ins.s()[ins.rest.clone()].to_owned()]
        };
        if ins.dir == "CMD" {
            self.container.cmd = Some(argv);
        } else {
            self.container.entrypoint = Some(argv);
        }
    }

    fn expose(&mut self, ins: &Ins<'_>) {
        let ws = words(ins.s(), ins.rest.clone(), self.esc);
        if ws.is_empty() {
            self.missing(ins, "a port: `EXPOSE 80`, `EXPOSE 80/tcp` or `EXPOSE 53/udp`");
        }
        for (v, r) in self.expand_words(ins.t, &ws) {
            let Some(v) = v else { continue };
            match syntax::port(&v.to_ascii_lowercase()) {
                Ok(p) => {
                    if !self.container.exposed_ports.contains(&p) {
                        self.container.exposed_ports.push(p);
                    }
                }
                Err(m) => self.error(ins.t.span(r), m),
            }
        }
    }

    fn packages(&mut self, ins: &Ins<'_>) {
        let s = ins.s();
        let ws = words(s, ins.rest.clone(), self.esc);
        let (flags, k) = flags(s, &ws);
        let mut exclude = false;
        for f in self.distinct_flags(ins, &flags) {
            if f.name == "exclude" {
                exclude = self.flag_bool(ins, f).unwrap_or(exclude);
            } else {
                self.unknown_flag(ins, f, "PACKAGES takes --exclude");
            }
        }
        if ws.len() <= k {
            self.missing(ins, "package names");
        }
        for (v, r) in self.expand_words(ins.t, &ws[k..]) {
            let Some(name) = v else { continue };
            let span = ins.t.span(r);
            if !syntax::is_package_name(&name) {
                self.error_help(
                    span,
                    format!("`{name}` is not a valid Debian package name"),
                    "use lowercase letters, digits, `+`, `-` and `.` (at least two characters)",
                );
                continue;
            }
            let (list, other, (this_word, other_word)) = if exclude {
                (&self.packages.exclude, &self.packages.include, ("excluded", "included"))
            } else {
                (&self.packages.include, &self.packages.exclude, ("included", "excluded"))
            };
            if let Some(first) = other.iter().find(|p| p.value == name) {
                let line = self.line_of(&first.span);
                self.diags.push(
                    Diag::new(span, format!("package `{name}` is both {other_word} and {this_word}"))
                        .with_label("conflict")
                        .with_help(format!("it is {other_word} on line {line}")),
                );
                continue;
            }
            if list.iter().any(|p| p.value == name) {
                continue;
            }
            let list = if exclude { &mut self.packages.exclude } else { &mut self.packages.include };
            list.push(Spanned::new(name, span));
        }
    }

    fn service(&mut self, ins: &Ins<'_>) {
        let ws = words(ins.s(), ins.rest.clone(), self.esc);
        let mut vals = self.expand_words(ins.t, &ws).into_iter();
        let Some((state, state_range)) = vals.next() else {
            self.missing(ins, "a state and units: `SERVICE enable|disable|mask UNIT...`");
            return;
        };
        let Some(state) = state else { return };
        if !matches!(state.as_str(), "enable" | "disable" | "mask") {
            self.error_help(
                ins.t.span(state_range),
                format!("unknown service state `{state}`"),
                "expected `enable`, `disable` or `mask`, as `systemctl` takes them",
            );
            return;
        }
        if ws.len() < 2 {
            self.missing(ins, &format!("units after `{state}`, e.g. `SERVICE {state} ssh.service`"));
        }
        for (v, r) in vals {
            let Some(unit) = v else { continue };
            let span = ins.t.span(r);
            if !syntax::is_unit_name(&unit) {
                self.error_help(
                    span,
                    format!("`{unit}` is not a systemd unit name"),
                    "name the unit with its type, e.g. `ssh.service` or `fstrim.timer`",
                );
                continue;
            }
            let states = [
                ("enable", &self.services.enable),
                ("disable", &self.services.disable),
                ("mask", &self.services.mask),
            ];
            let mut seen = None;
            for (other, list) in states {
                if let Some(first) = list.iter().find(|u| u.value == unit) {
                    seen = Some((other, first.span.clone()));
                }
            }
            match seen {
                Some((other, _)) if other == state => continue,
                Some((other, first)) => {
                    let line = self.line_of(&first);
                    self.diags.push(
                        Diag::new(span, format!("unit `{unit}` is set to both `{other}` and `{state}`"))
                            .with_label("conflict")
                            .with_help(format!(
                                "a unit has one state; it is set to `{other}` on line {line}"
                            )),
                    );
                }
                None => {
                    let list = match state.as_str() {
                        "enable" => &mut self.services.enable,
                        "disable" => &mut self.services.disable,
                        _ => &mut self.services.mask,
                    };
                    list.push(Spanned::new(unit, span));
                }
            }
        }
    }

    fn contract(&mut self, ins: &Ins<'_>) {
        let ws = words(ins.s(), ins.rest.clone(), self.esc);
        if ws.is_empty() {
            self.missing(ins, "contracts: `CONTRACT NAME@RANGE...`, e.g. `CONTRACT base-os@^1`");
        }
        for (v, r) in self.expand_words(ins.t, &ws) {
            let Some(v) = v else { continue };
            let span = ins.t.span(r);
            match syntax::contract_ref(&v) {
                Ok(c) => {
                    if let Some(first) = self.contracts.iter().find(|x| x.name == c.name) {
                        let line = self.line_of(&first.span);
                        self.diags.push(
                            Diag::new(span, format!("contract `{}` is claimed twice", c.name))
                                .with_label("conflict")
                                .with_help(format!("it is first claimed on line {line}")),
                        );
                    } else {
                        self.contracts.push(Spanned::new(c, span));
                    }
                }
                Err(m) => self.error(span, m),
            }
        }
    }

    fn output(&mut self, ins: &Ins<'_>) {
        let ws = words(ins.s(), ins.rest.clone(), self.esc);
        if ws.is_empty() {
            self.missing(ins, "outputs: `OUTPUT KIND[:COMPRESSION]...`, e.g. `OUTPUT raw qcow2:zstd oci`");
        }
        for (v, r) in self.expand_words(ins.t, &ws) {
            let Some(v) = v else { continue };
            let span = ins.t.span(r);
            match syntax::output(&v) {
                Ok(o) => {
                    if let Some(first) = self.outputs.iter().find(|x| x.kind == o.kind) {
                        let line = self.line_of(&first.span);
                        self.diags.push(
                            Diag::new(span, format!("output `{}` is given twice", o.kind.as_str()))
                                .with_label("conflict")
                                .with_help(format!("it is first given on line {line}")),
                        );
                    } else {
                        self.outputs.push(Spanned::new(o, span));
                    }
                }
                Err(m) => self.error(span, m),
            }
        }
    }

    /// `KEY=VALUE` arguments of kiln's setting directives: keys as written, values expanded.
    fn settings_args(&mut self, ins: &Ins<'_>, keys: &[&str]) -> Vec<(String, Span, String, Span)> {
        let s = ins.s();
        let ws = words(s, ins.rest.clone(), self.esc);
        let d = ins.dir.clone();
        let takes = keys.iter().map(|k| format!("{k}=")).collect::<Vec<_>>().join(", ");
        if ws.is_empty() {
            self.missing(ins, &format!("KEY=VALUE settings: {takes}"));
        }
        let mut out = Vec::new();
        for w in ws {
            let word = &s[w.clone()];
            let Some(eq) = word.find('=') else {
                self.error_help(
                    ins.t.span(w),
                    format!("`{word}` is not KEY=VALUE"),
                    format!("{d} takes {takes}"),
                );
                continue;
            };
            let key = &word[..eq];
            let key_span = ins.t.span(w.start..w.start + eq);
            if !keys.contains(&key) {
                self.error_help(key_span, format!("unknown {d} key `{key}`"), format!("{d} takes {takes}"));
                continue;
            }
            let vr = w.start + eq + 1..w.end;
            let Some(value) = self.expand(ins.t, vr.clone(), Quoting::Shell) else {
                continue;
            };
            out.push((key.to_owned(), key_span, value, ins.t.span(vr)));
        }
        out
    }

    fn disk(&mut self, ins: &Ins<'_>) {
        for (key, key_span, v, span) in self.settings_args(ins, &["size", "esp", "root", "partition"]) {
            if key != "partition" && !self.once(format!("DISK {key}"), key_span) {
                continue;
            }
            match key.as_str() {
                "size" => {
                    let size =
                        if v == "auto" { Ok(DiskSize::Auto) } else { syntax::size(&v).map(DiskSize::Bytes) };
                    match size {
                        Ok(DiskSize::Bytes(0)) => self.error(span, "`size`: a size must be larger than 0"),
                        Ok(size) => {
                            self.disk.size = size;
                            self.disk_size = Some(span);
                        }
                        Err(m) => self.error_help(span, m, "use `auto` or a size such as `4G`"),
                    }
                }
                "esp" => match syntax::size(&v) {
                    Ok(n) if n < MIN_ESP_SIZE => self.error_help(
                        span,
                        format!("`esp`: {} is too small for an EFI system partition", mib(n)),
                        "FAT32 needs at least 32 MiB",
                    ),
                    Ok(n) => self.disk.esp_size = n,
                    Err(m) => self.error(span, m),
                },
                "root" => match v.as_str() {
                    "ext4" => self.disk.root_fs = RootFs::Ext4,
                    other => self
                        .error(span, format!("unsupported file system `{other}` (only `ext4` is supported)")),
                },
                _ => match partition(&v) {
                    Ok(p) => {
                        if let Some(first) = self.disk.partitions.iter().find(|x| x.label == p.label) {
                            let line = self.line_of(&first.span);
                            self.diags.push(
                                Diag::new(span, format!("partition label `{}` is used twice", p.label))
                                    .with_label("conflict")
                                    .with_help(format!("it is first used on line {line}")),
                            );
                        } else {
                            self.disk.partitions.push(Spanned::new(p, span));
                        }
                    }
                    Err(m) => self.error(span, m),
                },
            }
        }
    }

    fn system(&mut self, ins: &Ins<'_>) {
        for (key, key_span, v, span) in
            self.settings_args(ins, &["hostname", "locale", "timezone", "cmdline"])
        {
            if !self.once(format!("SYSTEM {key}"), key_span) {
                continue;
            }
            match key.as_str() {
                "hostname" if syntax::is_hostname(&v) => self.system.hostname = Some(v),
                "hostname" => self.error_help(
                    span,
                    format!("`{v}` is not a valid host name"),
                    "dot-separated labels of letters, digits and `-`, each 1 to 63 characters, not starting or \
                     ending with `-`",
                ),
                "locale" if syntax::is_locale(&v) => self.system.locale = Some(v),
                "locale" => self.error(span, format!("`{v}` is not a locale name (e.g. `C.UTF-8` or `en_US.UTF-8`)")),
                "timezone" if syntax::is_timezone(&v) => self.system.timezone = Some(v),
                "timezone" => self.error(
                    span,
                    format!("`{v}` is not a time zone name (e.g. `Etc/UTC`, `Europe/Berlin` or `UTC`)"),
                ),
                _ => self.system.kernel_cmdline = v.split_whitespace().map(str::to_owned).collect(),
            }
        }
    }

    fn lifecycle(&mut self, ins: &Ins<'_>) {
        for (key, key_span, v, span) in self.settings_args(ins, &["support-months", "deprecate-after-days"]) {
            if !self.once(format!("LIFECYCLE {key}"), key_span) {
                continue;
            }
            let Ok(n) = v.parse::<u32>() else {
                self.error(span, format!("`{key}`: `{v}` is not a whole number"));
                continue;
            };
            if key == "support-months" {
                self.lifecycle.support_months = Some(n);
            } else {
                self.lifecycle.deprecate_after_days = Some(n);
            }
        }
    }

    // ---------------------------------------------------------------------------------------------------

    fn finish(mut self) -> Result<Parts, Vec<Diag>> {
        let at = match self.from.clone() {
            Some(from) => {
                for (d, span) in std::mem::take(&mut self.before_from) {
                    self.error(span, format!("`{d}` before `FROM`: only `ARG` may come before `FROM`"));
                }
                from
            }
            None => {
                let end = self.src.len();
                let span = self.before_from.first().map_or(end..end, |(_, s)| s.clone());
                self.error_help(
                    span.clone(),
                    "missing `FROM`: a Kilnfile starts with its base",
                    "e.g. `FROM debian:bookworm`, `FROM catalog:FAMILY@CHANNEL` or `FROM oci-layout:PATH:TAG`; \
                     only `ARG` may come before it",
                );
                span
            }
        };
        if !self.title_given {
            self.error_help(at.clone(), format!("missing image title: no `LABEL {TITLE}=NAME`"), LABELS_HELP);
        }
        if !self.version_given {
            self.error_help(
                at.clone(),
                format!("missing image version: no `LABEL {VERSION}=X.Y.Z`"),
                LABELS_HELP,
            );
        }
        if let (DiskSize::Bytes(total), Some(span)) = (self.disk.size, self.disk_size.clone()) {
            let fixed =
                self.disk.partitions.iter().fold(self.disk.esp_size, |acc, p| acc.saturating_add(p.size));
            if total <= fixed {
                self.error_help(
                    span,
                    format!("`size`: {} leaves no room for the root partition", mib(total)),
                    format!("the EFI system partition and extra partitions take {}", mib(fixed)),
                );
            }
        }
        let (Some(name), Some(version), Some(base)) = (self.name, self.version, self.base) else {
            return Err(self.diags);
        };
        if !self.diags.is_empty() {
            return Err(self.diags);
        }
        let mut outputs = self.outputs;
        if outputs.is_empty() {
            let oci = syntax::output_with(crate::model::OutputKind::Oci, None)
                .map_err(|m| vec![Diag::new(0..0, m)])?;
            outputs.push(Spanned::new(oci, 0..0));
        }
        outputs.sort_by_key(|o| o.kind);
        let mut container = self.container;
        container.env = self.scope.env;
        Ok(Parts {
            name,
            version,
            description: self.description,
            base,
            packages: self.packages,
            services: self.services,
            system: self.system,
            disk: self.disk,
            outputs,
            contracts: self.contracts,
            lifecycle: self.lifecycle,
            variables: self.scope.args,
            container,
            steps: self.steps,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::model::{CatalogSelector, Compression, OutputKind};

    const HEAD: &str =
        "FROM debian:bookworm\nLABEL org.opencontainers.image.title=t org.opencontainers.image.version=1.0.0\n";

    fn parse_with(text: &str, vars: &[(&str, &str)]) -> Result<Blueprint, BlueprintError> {
        let vars: Vars = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        parse(SourceFile::new("bp/Kilnfile", text), PathBuf::from("bp"), &vars)
    }

    fn ok(text: &str) -> Blueprint {
        parse_with(text, &[]).unwrap_or_else(|e| panic!("rejected:\n{e}"))
    }

    /// A blueprint of HEAD followed by `body`.
    fn ok_body(body: &str) -> Blueprint {
        ok(&format!("{HEAD}{body}"))
    }

    /// The problems as `LINE:COL: message`.
    fn problems(text: &str) -> Vec<String> {
        problems_with(text, &[])
    }

    fn problems_with(text: &str, vars: &[(&str, &str)]) -> Vec<String> {
        match parse_with(text, vars) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.located().iter().map(|l| format!("{}:{}: {}", l.line, l.column, l.message)).collect(),
        }
    }

    /// Problems of HEAD followed by `body`, with line numbers counted from the body's first line.
    fn body_problems(body: &str) -> Vec<String> {
        problems(&format!("{HEAD}{body}"))
            .into_iter()
            .map(|p| {
                let (line, rest) = p.split_once(':').unwrap();
                format!("{}:{rest}", line.parse::<usize>().unwrap() - 2)
            })
            .collect()
    }

    fn run_steps(bp: &Blueprint) -> Vec<&RunStep> {
        bp.steps
            .iter()
            .filter_map(|s| match &s.value {
                Step::Run(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn commands(bp: &Blueprint) -> Vec<Command> {
        run_steps(bp).into_iter().map(|r| r.command.clone()).collect()
    }

    fn shell(s: &str) -> Command {
        Command::Shell(s.to_owned())
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    // --- lines: comments, continuations, escape directive ------------------------------------------------

    #[test]
    fn continuations_join_lines_and_skip_comments_and_blank_lines_inside() {
        let bp = ok_body(
            "RUN apt-get update && \\\n    apt-get install -y curl\n\
             # a comment\n\
             RUN a \\\n# comment inside\n\n  b \\  \n  c\n\
             RUN echo # not a comment\n",
        );
        assert_eq!(
            commands(&bp),
            [
                shell("apt-get update &&     apt-get install -y curl"),
                shell("a   b   c"),
                shell("echo # not a comment")
            ]
        );
    }

    #[test]
    fn problems_in_continued_lines_point_at_their_own_line() {
        assert_eq!(
            body_problems("PACKAGES curl \\\n    Bad_Name\n"),
            ["2:5: `Bad_Name` is not a valid Debian package name"]
        );
    }

    #[test]
    fn directives_are_case_insensitive_and_indented_lines_are_read() {
        let bp = ok("  from debian:bookworm\nlabel org.opencontainers.image.title=t org.opencontainers.image.version=1.0.0\n\tRun true\r\n");
        assert_eq!(commands(&bp), [shell("true")]);
    }

    #[test]
    fn escape_directive_switches_to_backtick() {
        let bp = ok(&format!("# syntax=docker/dockerfile:1\n# escape=`\n{HEAD}RUN echo C:\\dir\\ `\n  done\nCOPY a\\b.txt /x\n"));
        assert_eq!(commands(&bp), [shell("echo C:\\dir\\   done")]);
        let Step::Copy(c) = &bp.steps[1].value else { panic!() };
        assert_eq!(c.sources, ["a\\b.txt"]);
        // After any other line, `# escape=` is an ordinary comment.
        let bp = ok(&format!("# just a comment\n# escape=`\n{HEAD}RUN a `\nRUN b\n"));
        assert_eq!(commands(&bp), [shell("a `"), shell("b")]);
        assert_eq!(problems(&format!("# escape=x\n{HEAD}")), ["1:10: invalid escape character `x`"]);
        assert_eq!(
            problems(&format!("# escape=`\n#ESCAPE = \\\n{HEAD}")),
            ["2:2: the `escape` parser directive is given twice"]
        );
    }

    // --- heredocs ------------------------------------------------------------------------------------------

    #[test]
    fn run_heredoc_is_the_script_body_without_substitution() {
        let bp =
            ok_body("RUN <<EOF\nset -e\necho \"$HOME\" ${UNDEFINED}\nFROM not-a-directive\nEOF\nRUN true\n");
        assert_eq!(
            commands(&bp),
            [shell("set -e\necho \"$HOME\" ${UNDEFINED}\nFROM not-a-directive\n"), shell("true")]
        );
        let bp = ok_body("RUN <<'EOF'\n#!/usr/bin/env python3\nprint('hi')\nEOF\n");
        assert_eq!(commands(&bp), [shell("#!/usr/bin/env python3\nprint('hi')\n")]);
    }

    #[test]
    fn chomping_heredoc_strips_leading_tabs() {
        let bp = ok_body("RUN <<-END\n\tif true; then\n\t\techo yes\n\tfi\n\tEND\n");
        assert_eq!(commands(&bp), [shell("if true; then\necho yes\nfi\n")]);
    }

    #[test]
    fn heredoc_fed_to_a_command_goes_to_the_shell_as_written() {
        let bp =
            ok_body("RUN cat <<EOF > /etc/a && cat <<-TWO > /etc/b\nfirst\nEOF\n\tsecond\n\tTWO\nRUN true\n");
        assert_eq!(
            commands(&bp),
            [shell("cat <<EOF > /etc/a && cat <<-TWO > /etc/b\nfirst\nEOF\n\tsecond\n\tTWO"), shell("true")]
        );
    }

    #[test]
    fn copy_heredoc_writes_an_inline_file_with_substitution_unless_quoted() {
        let bp = ok_body(
            "ARG site=example.org\nWORKDIR /etc\n\
             COPY <<EOF motd\nWelcome to ${site}, \\$HOME stays\nEOF\n\
             COPY --chmod=0600 --chown=app:staff <<\"EOF\" /srv/\nkeep $site\nEOF\n\
             COPY --chown=app <<-X /x\n\tx\n\tX\n",
        );
        let files: Vec<&FileStep> = bp
            .steps
            .iter()
            .map(|s| match &s.value {
                Step::File(f) => f,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            files[0],
            &FileStep {
                path: "/etc/motd".into(),
                source: FileSource::Inline("Welcome to example.org, $HOME stays\n".into()),
                mode: Mode(0o644),
                owner: "root".into(),
                group: "root".into(),
            }
        );
        assert_eq!(
            files[1],
            &FileStep {
                path: "/srv/EOF".into(),
                source: FileSource::Inline("keep $site\n".into()),
                mode: Mode(0o600),
                owner: "app".into(),
                group: "staff".into(),
            }
        );
        assert_eq!(
            (files[2].path.as_str(), files[2].owner.as_str(), files[2].group.as_str()),
            ("/x", "app", "app")
        );
        assert_eq!(files[2].source, FileSource::Inline("x\n".into()));
    }

    #[test]
    fn heredoc_problems() {
        assert_eq!(
            body_problems("RUN <<EOF\necho hi\nEOF \n"),
            ["1:5: unterminated heredoc: no line `EOF` ends it"]
        );
        assert_eq!(body_problems("COPY <<EOF /x\n$nope\nEOF\n"), ["2:1: undefined variable `nope`"]);
        assert_eq!(body_problems("RUN cat << EOF\n"), ["1:9: a heredoc needs a delimiter"]);
        assert_eq!(
            body_problems("COPY --template <<EOF /x\nhi\nEOF\n"),
            ["1:6: `--template` applies to files from the blueprint folder, not to heredocs"]
        );
    }

    // --- exec and shell forms -------------------------------------------------------------------------------

    #[test]
    fn exec_form_is_a_json_array_and_anything_else_is_shell_form() {
        let bp = ok_body(
            "RUN [\"/usr/bin/env\", \"a b\", \"\\u00e9\\n\\\"\", \"\\ud83d\\ude00\"]\n\
             RUN [ \"x\" ]\n\
             RUN [ -f /etc/x ] && echo yes\n\
             RUN [ \"$a\" = b ]\n\
             ENTRYPOINT [\"/usr/sbin/nginx\"]\n\
             CMD nginx -g 'daemon off;'\n",
        );
        assert_eq!(
            commands(&bp),
            [
                Command::Exec(strings(&["/usr/bin/env", "a b", "é\n\"", "😀"])),
                Command::Exec(strings(&["x"])),
                shell("[ -f /etc/x ] && echo yes"),
                shell("[ \"$a\" = b ]"),
            ]
        );
        assert_eq!(bp.container.entrypoint, Some(strings(&["/usr/sbin/nginx"])));
        assert_eq!(bp.container.cmd, Some(strings(&["/bin/sh", "-c", "nginx -g 'daemon off;'"])));
        assert_eq!(ok_body("CMD []\n").container.cmd, Some(vec![]));
    }

    #[test]
    fn bad_exec_form_is_reported_where_it_goes_wrong() {
        assert_eq!(
            body_problems("RUN [\"apt-get\", \"install\" \"curl\"]\n"),
            ["1:27: invalid exec form: expected `,` or `]`"]
        );
        assert_eq!(body_problems("CMD ['bash']\n"), ["1:6: invalid exec form: strings need double quotes"]);
        assert_eq!(
            body_problems("RUN [\"a\",]\n"),
            ["1:10: invalid exec form: expected a double-quoted string"]
        );
        assert_eq!(
            body_problems("RUN [\"a\"] x\n"),
            ["1:11: invalid exec form: unexpected text after the closing `]`"]
        );
        assert_eq!(body_problems("RUN [\"a\\q\"]\n"), ["1:8: invalid exec form: invalid escape `\\q`"]);
        assert_eq!(body_problems("RUN [\"\\ud800\"]\n"), ["1:7: invalid exec form: invalid `\\u` escape"]);
        assert_eq!(body_problems("RUN [\"open\n"), ["1:6: invalid exec form: unterminated string"]);
        assert_eq!(
            body_problems("RUN []\n"),
            ["1:1: `RUN` needs a program to run: the exec form `[]` is empty"]
        );
    }

    // --- substitution ---------------------------------------------------------------------------------------

    #[test]
    fn substitution_from_args_and_env() {
        let bp = ok(
            "ARG SUITE=bookworm\n\
             ARG empty=\n\
             FROM debian:${SUITE}\n\
             LABEL org.opencontainers.image.title=t org.opencontainers.image.version=1.0.0\n\
             ENV A=one B=\"two words\" C='$A' D=\\$A\n\
             ENV E=$A F=\"${A}-x\" G=${missing:-dflt} H=${A:+alt} I=${missing:+alt} J=${empty:-e} K=${empty-e}\n\
             ENV A=changed L=$A\n\
             ENV M ${A} and more\n\
             LABEL x=\"${SUITE}\" y=${nope-${A}}\n",
        );
        assert_eq!(
            bp.base.value,
            Base::Debian(DebianBase {
                suite: "bookworm".into(),
                components: vec![],
                variant: Variant::Minbase,
                mirror: None,
                keyring: None,
            })
        );
        let env = &bp.container.env;
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("A"), Some("changed"));
        assert_eq!((get("B"), get("C"), get("D")), (Some("two words"), Some("$A"), Some("$A")));
        assert_eq!((get("E"), get("F"), get("G")), (Some("one"), Some("one-x"), Some("dflt")));
        assert_eq!((get("H"), get("I"), get("J"), get("K")), (Some("alt"), Some(""), Some("e"), Some("")));
        // Values of one ENV see the variables as they were before it.
        assert_eq!(get("L"), Some("one"));
        assert_eq!(get("M"), Some("changed and more"));
        assert_eq!(bp.container.labels.get("x").map(String::as_str), Some("bookworm"));
        assert_eq!(bp.container.labels.get("y").map(String::as_str), Some("changed"));
        assert_eq!(bp.variables["SUITE"].value, "bookworm");
        assert_eq!(bp.variables["empty"].value, "");
    }

    #[test]
    fn var_overrides_replace_arg_defaults_everywhere() {
        let text = format!("ARG SUITE=bookworm\nFROM debian:$SUITE\n{}ARG who\nENV W=$who\n", &HEAD[21..]);
        let bp = parse_with(&text, &[("SUITE", "trixie"), ("who", "ops")]).unwrap();
        let Base::Debian(d) = &bp.base.value else { panic!() };
        assert_eq!(d.suite, "trixie");
        assert_eq!(bp.variables["SUITE"].value, "trixie");
        assert_eq!(bp.variables["who"].value, "ops");
        assert_eq!(bp.container.env["W"], "ops");
        // The variable keeps the span of its ARG.
        assert_eq!(&text[bp.variables["SUITE"].span.clone()], "SUITE=bookworm");
    }

    #[test]
    fn run_bodies_are_left_to_the_shell_and_run_env_has_args_and_env() {
        let bp = ok_body("ARG secret=x\nARG LANG=ignored\nENV PATH=/usr/bin LANG=C\nUSER app\nWORKDIR /srv\nWORKDIR www\nRUN echo $secret ${nope}\nUSER root:root\nWORKDIR ../data\nRUN [\"true\", \"$x\"]\n");
        let runs = run_steps(&bp);
        assert_eq!(runs[0].command, shell("echo $secret ${nope}"));
        assert_eq!(
            runs[0].env,
            BTreeMap::from([
                ("LANG".into(), "C".into()),
                ("PATH".into(), "/usr/bin".into()),
                ("secret".into(), "x".into())
            ])
        );
        assert_eq!((runs[0].user.as_deref(), runs[0].workdir.as_deref()), (Some("app"), Some("/srv/www")));
        assert_eq!(runs[1].command, Command::Exec(strings(&["true", "$x"])));
        assert_eq!(
            (runs[1].user.as_deref(), runs[1].workdir.as_deref()),
            (Some("root:root"), Some("/srv/data"))
        );
        assert_eq!(bp.container.user.as_deref(), Some("root:root"));
        assert_eq!(bp.container.workdir.as_deref(), Some("/srv/data"));
        assert!(!bp.container.env.contains_key("secret"));
    }

    #[test]
    fn substitution_problems_point_at_the_variable() {
        assert_eq!(body_problems("ENV A=x$nope\n"), ["1:8: undefined variable `nope`"]);
        assert_eq!(body_problems("LABEL a=\"${nope}\"\n"), ["1:10: undefined variable `nope`"]);
        assert_eq!(body_problems("ENV A=${nope:?set it}\n"), ["1:7: variable `nope` has no value: set it"]);
        assert_eq!(body_problems("ENV A=${x%y}\n"), ["1:7: unsupported substitution `${x%y}`: kiln knows `${NAME}`, `${NAME:-default}`, `${NAME:+alternative}` and `${NAME:?message}`"]);
        assert_eq!(body_problems("ENV A=${\n"), ["1:7: unterminated `${`: no `}` closes it"]);
        assert_eq!(body_problems("ENV A=\"x\n"), ["1:7: unterminated quote: this `\"` is never closed"]);
        // `$` not followed by a name is kept; `${A:-$nope}` only looks at its default when it needs it.
        let bp = ok_body("ARG A=a\nENV P=5$ Q=$1 R=${A:-$nope}\n");
        assert_eq!((bp.container.env["P"].as_str(), bp.container.env["Q"].as_str()), ("5$", "$1"));
        assert_eq!(bp.container.env["R"], "a");
    }

    #[test]
    fn arg_without_a_value_is_reported_once_at_the_arg() {
        assert_eq!(
            problems(&format!("{HEAD}ARG token\nENV T=$token\nARG token\n")),
            ["3:5: variable `token` has no value; give a default or --var token=..."]
        );
        assert!(parse_with(&format!("{HEAD}ARG token\n"), &[("token", "x")]).is_ok());
        assert_eq!(body_problems("ARG 1x=2\n"), ["1:5: `1x` is not a valid variable name"]);
    }

    // --- FROM and labels --------------------------------------------------------------------------------

    #[test]
    fn from_forms() {
        let bp = ok(&format!(
            "FROM --variant=standard --components=main,contrib --mirror=http://deb.example/debian --keyring=keys/a.gpg debian:trixie\n{}",
            &HEAD[21..]
        ));
        assert_eq!(
            bp.base.value,
            Base::Debian(DebianBase {
                suite: "trixie".into(),
                components: strings(&["main", "contrib"]),
                variant: Variant::Standard,
                mirror: Some("http://deb.example/debian".into()),
                keyring: Some("keys/a.gpg".into()),
            })
        );
        let bp = ok(&format!("FROM catalog:debian-minimal@stable\n{}", &HEAD[21..]));
        assert_eq!(
            bp.base.value,
            Base::Catalog {
                family: "debian-minimal".into(),
                selector: CatalogSelector::Channel("stable".into())
            }
        );
        let bp = ok(&format!("FROM oci-layout:../out/oci:1.0.0\n{}", &HEAD[21..]));
        assert_eq!(bp.base.value, Base::OciLayout { path: "../out/oci".into(), tag: "1.0.0".into() });
    }

    #[test]
    fn from_problems() {
        let labels = &HEAD[21..];
        assert_eq!(problems(&format!("FROM ubuntu:22.04\n{labels}")), ["1:6: invalid base `ubuntu:22.04`"]);
        assert_eq!(
            problems(&format!("FROM --variant=standard catalog:base@stable\n{labels}")),
            ["1:6: `--variant` applies only to `debian:` bases, not to `catalog:base@stable`"]
        );
        assert_eq!(
            problems(&format!(
                "FROM --variant=big --components=Main --mirror=ftp://x debian:bookworm\n{labels}"
            )),
            [
                "1:16: unknown variant `big`",
                "1:33: `Main` is not a valid component name",
                "1:47: `ftp://x` is not a mirror URL"
            ]
        );
        assert_eq!(
            problems(&format!("FROM debian:bookworm AS build\n{labels}FROM debian:trixie\n")),
            [
                "1:22: `AS NAME`: multi-stage builds are not supported",
                "3:1: a second `FROM`: multi-stage builds are not supported"
            ]
        );
        assert_eq!(
            problems(&format!("FROM --platform=linux/arm64 debian:bookworm\n{labels}"))[0],
            "1:6: `FROM --platform` is not supported by kiln: images are built for the host's architecture"
        );
        assert_eq!(
            problems(&format!("FROM\n{labels}")),
            ["1:1: `FROM` needs a base, e.g. `FROM debian:bookworm`"]
        );
        assert_eq!(
            problems(&format!("ARG x=1\nLABEL {}\nFROM debian:bookworm\n", &labels[6..labels.len() - 1])),
            ["2:1: `LABEL` before `FROM`: only `ARG` may come before `FROM`"]
        );
        assert_eq!(
            problems("ARG x=1\n# nothing else\n"),
            [
                "3:1: missing `FROM`: a Kilnfile starts with its base",
                "3:1: missing image title: no `LABEL org.opencontainers.image.title=NAME`",
                "3:1: missing image version: no `LABEL org.opencontainers.image.version=X.Y.Z`"
            ]
        );
    }

    #[test]
    fn labels_set_name_version_description_and_the_rest_stay_labels() {
        let bp = ok("FROM debian:bookworm\n\
             LABEL org.opencontainers.image.title=web \"org.opencontainers.image.version\"=1.2.3-rc.1 \\\n\
             \x20     org.opencontainers.image.description=\"A web server\" team=core\n\
             LABEL legacy value with spaces\n");
        assert_eq!(bp.name.value, "web");
        assert_eq!(bp.version.value, semver::Version::parse("1.2.3-rc.1").unwrap());
        assert_eq!(bp.description.as_deref(), Some("A web server"));
        assert_eq!(
            bp.container.labels,
            BTreeMap::from([("legacy".into(), "value with spaces".into()), ("team".into(), "core".into())])
        );
        assert_eq!(ok(HEAD).description, None);
        assert_eq!(
            problems("FROM debian:bookworm\nLABEL org.opencontainers.image.title=Web org.opencontainers.image.version=1.0\n"),
            [
                "2:38: `Web` is not a valid image title",
                "2:75: invalid version `1.0`: unexpected end of input while parsing minor version number"
            ]
        );
        assert_eq!(
            problems("FROM debian:bookworm\nLABEL org.opencontainers.image.version=1.0.0 lonely\n"),
            [
                "1:1: missing image title: no `LABEL org.opencontainers.image.title=NAME`",
                "2:46: `lonely` is not of the form NAME=VALUE"
            ]
        );
        assert_eq!(body_problems("ENV alone\n"), ["1:5: `ENV alone` needs a value: write `alone=VALUE`"]);
        assert_eq!(body_problems("ENV a-b=1\n"), ["1:5: `a-b` is not a valid variable name"]);
    }

    // --- COPY / ADD ---------------------------------------------------------------------------------------

    #[test]
    fn copy_and_add() {
        let bp = ok_body(
            "COPY --chown=www-data:www-data --chmod=640 html/ /var/www/html/\n\
             COPY --template site.conf.j2 /etc/nginx/sites-available/default\n\
             WORKDIR /opt/app\n\
             COPY a.txt b.txt ./\n\
             COPY [\"with space.txt\", \"conf\"]\n\
             ADD rootfs.tar.gz /\n",
        );
        let copies: Vec<&CopyStep> = bp
            .steps
            .iter()
            .map(|s| match &s.value {
                Step::Copy(c) => c,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            copies[0],
            &CopyStep {
                sources: strings(&["html/"]),
                dest: "/var/www/html/".into(),
                chown: Some("www-data:www-data".into()),
                chmod: Some(Mode(0o640)),
                template: false,
                add: false,
            }
        );
        assert!(copies[1].template && copies[1].chmod.is_none() && copies[1].chown.is_none());
        assert_eq!((copies[2].sources.len(), copies[2].dest.as_str()), (2, "/opt/app/"));
        assert_eq!(
            (copies[3].sources[0].as_str(), copies[3].dest.as_str()),
            ("with space.txt", "/opt/app/conf")
        );
        assert!(copies[4].add && copies[4].dest == "/");
    }

    #[test]
    fn copy_problems() {
        assert_eq!(
            body_problems("COPY --from=build /app /app\n"),
            ["1:6: `COPY --from`: multi-stage builds are not supported"]
        );
        assert_eq!(
            body_problems("COPY /etc/hosts /etc/hosts\n"),
            ["1:6: invalid COPY source: `/etc/hosts` is absolute; name a file in the blueprint folder by a relative path"]
        );
        assert_eq!(
            body_problems("COPY ../secret /x\n"),
            ["1:6: invalid COPY source: `../secret` leads out of the blueprint folder"]
        );
        assert_eq!(
            body_problems("ADD https://example.org/a.tar.gz /\n"),
            ["1:5: `https://example.org/a.tar.gz`: remote sources are not supported"]
        );
        assert_eq!(
            body_problems("COPY a b /dest\n"),
            ["1:10: `COPY` with several sources needs a folder as destination: `/dest` does not end in `/`"]
        );
        assert_eq!(body_problems("COPY onlyone\n"), ["1:1: `COPY` needs a source and a destination"]);
        assert_eq!(
            body_problems("COPY --chmod=999 --chown=Bad --link --bogus a /b\n"),
            [
                "1:14: invalid mode `999`: expected octal digits, e.g. `0644`",
                "1:26: `Bad` is not a user (expected `NAME`, `UID`, or either followed by `:GROUP`)",
                "1:30: `COPY --link` is not supported by kiln",
                "1:37: unknown flag `--bogus` for `COPY`"
            ]
        );
    }

    // --- other Docker directives -------------------------------------------------------------------------

    #[test]
    fn expose_user_workdir() {
        let bp = ok_body(
            "ARG port=8080\nEXPOSE 80 53/udp $port/TCP 80/tcp\nUSER 1000:1000\nWORKDIR /a/./b//c/..\n",
        );
        assert_eq!(bp.container.exposed_ports, strings(&["80/tcp", "53/udp", "8080/tcp"]));
        assert_eq!(bp.container.user.as_deref(), Some("1000:1000"));
        assert_eq!(bp.container.workdir.as_deref(), Some("/a/b"));
        assert_eq!(
            body_problems("EXPOSE 80/sctp 0\nUSER Root\n"),
            [
                "1:8: invalid port `80/sctp`: protocol `sctp` is neither `tcp` nor `udp`",
                "1:16: invalid port `0`: expected a number from 1 to 65535, optionally with `/tcp` or `/udp`",
                "2:6: `Root` is not a user (expected `NAME`, `UID`, or either followed by `:GROUP`)"
            ]
        );
    }

    #[test]
    fn unsupported_and_unknown_directives_are_errors() {
        let p = body_problems(
            "HEALTHCHECK CMD true\nONBUILD RUN x\nSTOPSIGNAL SIGTERM\nSHELL [\"bash\"]\nVOLUME /data\nMAINTAINER me\nFOO bar\n",
        );
        assert_eq!(p.len(), 7);
        for (i, d) in
            ["HEALTHCHECK", "ONBUILD", "STOPSIGNAL", "SHELL", "VOLUME", "MAINTAINER"].iter().enumerate()
        {
            assert!(p[i].starts_with(&format!("{}:1: `{d}` is not supported by kiln: ", i + 1)), "{}", p[i]);
        }
        assert_eq!(p[6], "7:1: unknown directive `FOO`");
        assert_eq!(
            body_problems("RUN --mount=type=cache,target=/var/cache/apt --network=none apt-get update\n")[0],
            "1:5: `RUN --mount` is not supported by kiln: RUN steps run in kiln's build sandbox, without build mounts, network or security options"
        );
    }

    // --- kiln's directives ---------------------------------------------------------------------------------

    #[test]
    fn packages_include_and_exclude() {
        let bp = ok_body("ARG kernel=linux-image-amd64\nPACKAGES curl $kernel\nPACKAGES --exclude nano vim-tiny\nPACKAGES curl git\n");
        let names = |v: &[Spanned<String>]| v.iter().map(|s| s.value.clone()).collect::<Vec<_>>();
        assert_eq!(names(&bp.packages.include), ["curl", "linux-image-amd64", "git"]);
        assert_eq!(names(&bp.packages.exclude), ["nano", "vim-tiny"]);
        assert_eq!(
            body_problems("PACKAGES curl\nPACKAGES --exclude curl X\nPACKAGES\nPACKAGES --only ab\n"),
            [
                "2:20: package `curl` is both included and excluded",
                "2:25: `X` is not a valid Debian package name",
                "3:1: `PACKAGES` needs package names",
                "4:10: unknown flag `--only` for `PACKAGES`"
            ]
        );
    }

    #[test]
    fn services() {
        let bp = ok_body("SERVICE enable ssh.service getty@ttyS0.service\nSERVICE disable apt-daily.timer\nSERVICE mask systemd-resolved.service\nSERVICE enable ssh.service\n");
        assert_eq!(
            bp.services.enable.iter().map(|s| s.value.as_str()).collect::<Vec<_>>(),
            ["ssh.service", "getty@ttyS0.service"]
        );
        assert_eq!(bp.services.disable[0].value, "apt-daily.timer");
        assert_eq!(bp.services.mask[0].value, "systemd-resolved.service");
        assert_eq!(
            body_problems("SERVICE start ssh.service\nSERVICE enable ssh.service\nSERVICE mask ssh.service ssh\nSERVICE enable\n"),
            [
                "1:9: unknown service state `start`",
                "3:14: unit `ssh.service` is set to both `enable` and `mask`",
                "3:26: `ssh` is not a systemd unit name",
                "4:1: `SERVICE` needs units after `enable`, e.g. `SERVICE enable ssh.service`"
            ]
        );
    }

    #[test]
    fn contracts_and_outputs() {
        let bp = ok_body("CONTRACT base-os@^1 ssh-server@~1.0\nOUTPUT qcow2:zstd oci raw\n");
        assert_eq!(
            bp.contracts.iter().map(|c| (c.name.as_str(), c.req.as_str())).collect::<Vec<_>>(),
            [("base-os", "^1"), ("ssh-server", "~1.0")]
        );
        assert_eq!(
            bp.outputs.iter().map(|o| (o.kind, o.compression)).collect::<Vec<_>>(),
            [
                (OutputKind::Raw, Compression::None),
                (OutputKind::Qcow2, Compression::Zstd),
                (OutputKind::Oci, Compression::Gzip)
            ]
        );
        let default = ok(HEAD);
        assert_eq!(
            default.outputs.iter().map(|o| (o.kind, o.compression)).collect::<Vec<_>>(),
            [(OutputKind::Oci, Compression::Gzip)]
        );
        assert_eq!(
            body_problems("CONTRACT base-os@^1 base-os@^2 web\nOUTPUT raw:zstd iso oci oci:zstd\n"),
            [
                "1:21: contract `base-os` is claimed twice",
                "1:32: invalid contract `web`: expected `NAME@VERSION-RANGE`, e.g. `base-os@^1`",
                "2:8: compression `zstd` is not available for `raw` outputs (use none)",
                "2:17: unknown output `iso`: expected `raw`, `qcow2` or `oci`",
                "2:25: output `oci` is given twice"
            ]
        );
    }

    #[test]
    fn disk_settings() {
        let bp = ok_body(
            "DISK size=8G esp=64M root=ext4 partition=srv:1G:srv:ext4\nDISK partition=swap:512M:swap\n",
        );
        assert_eq!(
            bp.disk,
            Disk {
                size: DiskSize::Bytes(8 << 30),
                esp_size: 64 << 20,
                root_fs: RootFs::Ext4,
                partitions: vec![
                    Spanned::new(
                        Partition {
                            label: "srv".into(),
                            size: 1 << 30,
                            role: PartitionRole::Srv,
                            fs: Some(RootFs::Ext4)
                        },
                        0..0
                    ),
                    Spanned::new(
                        Partition {
                            label: "swap".into(),
                            size: 512 << 20,
                            role: PartitionRole::Swap,
                            fs: None
                        },
                        0..0
                    ),
                ],
            }
        );
        assert_eq!(ok_body("DISK size=auto\n").disk, Disk::default());
        assert_eq!(ok(HEAD).disk, Disk::default());
        assert_eq!(
            body_problems("DISK esp=16M fs=xfs size=4X root=btrfs\nDISK size=1G partition=a:1G:data partition=b:0:srv partition=s:1G:swap:ext4\n"),
            [
                "1:10: `esp`: 16 MiB is too small for an EFI system partition",
                "1:14: unknown DISK key `fs`",
                "1:26: invalid size `4X`: unknown unit `X` (use K, M, G or T)",
                "1:34: unsupported file system `btrfs` (only `ext4` is supported)",
                "2:6: `DISK size` is set twice",
                "2:24: invalid partition `a:1G:data`: unknown role `data` (expected home, srv, var, tmp, swap, linux)",
                "2:44: invalid partition `b:0:srv`: a size must be larger than 0",
                "2:62: invalid partition `s:1G:swap:ext4`: a swap partition holds no file system"
            ]
        );
        assert_eq!(
            body_problems("DISK size=1G esp=512M partition=a:1G:srv partition=a:1G:var\n"),
            [
                "1:11: `size`: 1024 MiB leaves no room for the root partition",
                "1:52: partition label `a` is used twice"
            ]
        );
    }

    #[test]
    fn system_and_lifecycle_settings() {
        let bp = ok_body(
            "ARG host=web-1\nSYSTEM hostname=$host locale=C.UTF-8\nSYSTEM timezone=Etc/UTC cmdline=\"console=ttyS0  quiet\"\n\
             LIFECYCLE support-months=12 deprecate-after-days=30\n",
        );
        assert_eq!(
            bp.system,
            System {
                hostname: Some("web-1".into()),
                locale: Some("C.UTF-8".into()),
                timezone: Some("Etc/UTC".into()),
                kernel_cmdline: strings(&["console=ttyS0", "quiet"]),
            }
        );
        assert_eq!(
            bp.lifecycle,
            LifecyclePolicy { support_months: Some(12), deprecate_after_days: Some(30) }
        );
        assert_eq!(
            body_problems("SYSTEM hostname=-x locale=\"en US\" timezone=Berlin hostname=b tz=x nokey\nLIFECYCLE support-months=-1 days=3\nSYSTEM\n"),
            [
                "1:17: `-x` is not a valid host name",
                "1:27: `en US` is not a locale name (e.g. `C.UTF-8` or `en_US.UTF-8`)",
                "1:44: `Berlin` is not a time zone name (e.g. `Etc/UTC`, `Europe/Berlin` or `UTC`)",
                "1:51: `SYSTEM hostname` is set twice",
                "1:62: unknown SYSTEM key `tz`",
                "1:67: `nokey` is not KEY=VALUE",
                "2:26: `support-months`: `-1` is not a whole number",
                "2:29: unknown LIFECYCLE key `days`",
                "3:1: `SYSTEM` needs KEY=VALUE settings: hostname=, locale=, timezone=, cmdline="
            ]
        );
    }

    // --- whole files --------------------------------------------------------------------------------------

    #[test]
    fn problems_of_many_lines_are_reported_together_in_file_order() {
        let p = problems(
            "FROM debian:bookworm\nFOO\nLABEL org.opencontainers.image.title=t\nEXPOSE http\nSERVICE start x.service\n",
        );
        assert_eq!(
            p,
            [
                "1:1: missing image version: no `LABEL org.opencontainers.image.version=X.Y.Z`",
                "2:1: unknown directive `FOO`",
                "4:8: invalid port `http`: expected a number from 1 to 65535, optionally with `/tcp` or `/udp`",
                "5:9: unknown service state `start`"
            ]
        );
    }

    #[test]
    fn full_example_maps_to_the_model() {
        let text = r#"# syntax=docker/dockerfile:1
# A web role on top of the catalog's minimal image.
ARG site_name=www.example.org
FROM catalog:debian-minimal@^1.2
LABEL org.opencontainers.image.title=web-role \
      org.opencontainers.image.version=1.0.0 \
      org.opencontainers.image.description="nginx for ${site_name}" \
      org.example.team=web
ENV LANG=C.UTF-8
PACKAGES nginx ca-certificates
PACKAGES --exclude nano
COPY --template --chmod=0644 site.conf.j2 /etc/nginx/sites-available/default
COPY --chown=www-data:www-data html/ /var/www/html/
ADD rootfs-extra.tar.gz /
RUN <<SCRIPT
set -e
nginx -t
SCRIPT
USER root
WORKDIR /srv
SERVICE enable nginx.service
SYSTEM hostname=web timezone=Etc/UTC cmdline="console=ttyS0"
DISK size=auto esp=256M root=ext4 partition=srv:1G:srv:ext4
CONTRACT base-os@^1 web-server@^1
OUTPUT raw qcow2:zstd oci
LIFECYCLE support-months=12 deprecate-after-days=30
EXPOSE 80/tcp 443
ENTRYPOINT ["/usr/sbin/nginx"]
CMD ["-g", "daemon off;"]
"#;
        let bp = ok(text);
        let sp = |v: &str| Spanned::new(v.to_owned(), 0..0);
        assert_eq!(bp.form, Form::Kilnfile);
        assert_eq!(bp.dir, Path::new("bp"));
        assert_eq!((bp.name.value.as_str(), bp.version.value.to_string().as_str()), ("web-role", "1.0.0"));
        assert_eq!(&text[bp.name.span.clone()], "web-role");
        assert_eq!(bp.description.as_deref(), Some("nginx for www.example.org"));
        assert_eq!(
            bp.base.value,
            Base::Catalog {
                family: "debian-minimal".into(),
                selector: CatalogSelector::Version("^1.2".into())
            }
        );
        assert_eq!(
            bp.packages,
            Packages { include: vec![sp("nginx"), sp("ca-certificates")], exclude: vec![sp("nano")] }
        );
        assert_eq!(
            bp.services,
            Services { enable: vec![sp("nginx.service")], disable: vec![], mask: vec![] }
        );
        assert_eq!(bp.system.kernel_cmdline, strings(&["console=ttyS0"]));
        assert_eq!(bp.disk.partitions.len(), 1);
        assert_eq!(
            bp.outputs.iter().map(|o| o.kind).collect::<Vec<_>>(),
            [OutputKind::Raw, OutputKind::Qcow2, OutputKind::Oci]
        );
        assert_eq!(bp.contracts.len(), 2);
        assert_eq!(bp.lifecycle.support_months, Some(12));
        assert_eq!(bp.variables.keys().collect::<Vec<_>>(), ["site_name"]);
        assert_eq!(
            bp.container,
            ContainerConfig {
                entrypoint: Some(strings(&["/usr/sbin/nginx"])),
                cmd: Some(strings(&["-g", "daemon off;"])),
                env: BTreeMap::from([("LANG".into(), "C.UTF-8".into())]),
                labels: BTreeMap::from([("org.example.team".into(), "web".into())]),
                user: Some("root".into()),
                workdir: Some("/srv".into()),
                exposed_ports: strings(&["80/tcp", "443/tcp"]),
            }
        );
        let kinds: Vec<String> = bp
            .steps
            .iter()
            .map(|s| match &s.value {
                Step::Copy(c) => {
                    format!("{} {} -> {}", if c.add { "add" } else { "copy" }, c.sources.join(","), c.dest)
                }
                Step::Run(r) => format!("run {:?} as {:?} in {:?}", r.command, r.user, r.workdir),
                Step::File(f) => format!("file {}", f.path),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "copy site.conf.j2 -> /etc/nginx/sites-available/default",
                "copy html/ -> /var/www/html/",
                "add rootfs-extra.tar.gz -> /",
                "run Shell(\"set -e\\nnginx -t\\n\") as None in None",
            ]
        );
        // Each step points at its instruction.
        assert!(text[bp.steps[1].span.clone()].starts_with("COPY --chown"));
    }
}
