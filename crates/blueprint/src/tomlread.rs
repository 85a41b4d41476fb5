//! Span-aware TOML reading, shared by the blueprint's TOML form ([`crate::toml_form`]) and the contract
//! parser (`kiln-contract`).
//!
//! A document parsed by the `toml` crate into spanned values is walked table by table: [`Fields`] hands
//! out the keys of one table as [`Entry`] values (the value, its key path for messages, the key's span)
//! and reports the keys nobody asked for; [`Cx`] reads entries as strings, integers, booleans, arrays
//! and tables, and records every problem as a [`Diag`] at the offending key or value, so that one run
//! reports all of them. The messages name the key path (`` `users[0].uid`: ... ``).

use std::collections::HashMap;

use toml::de::{DeInteger, DeTable, DeValue};

use crate::{
    diag::{Diag, SourceFile},
    model::{Span, Spanned},
};

/// A value of the parsed document with its span.
pub type Item<'i> = toml::Spanned<DeValue<'i>>;

/// `prefix.key`, with the key quoted when it is not a bare TOML key.
pub fn join(prefix: &str, key: &str) -> String {
    let bare = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let key = if bare { key.to_owned() } else { format!("{key:?}") };
    if prefix.is_empty() {
        key
    } else {
        format!("{prefix}.{key}")
    }
}

/// "a string", "an integer", ...: the type of a value as messages name it.
pub fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

/// A key's value with its path (for messages) and the key's span (for conflicts and unknown keys).
#[derive(Clone, Debug)]
pub struct Entry<'t, 'i> {
    /// The key path, e.g. `users[0].uid`.
    pub path: String,
    /// The span of the key (of the element, for an array element).
    pub key_span: Span,
    /// The value.
    pub value: &'t Item<'i>,
}

impl Entry<'_, '_> {
    /// The span of the value.
    pub fn span(&self) -> Span {
        self.value.span()
    }
}

/// The keys of one table, read one by one; [`Fields::finish`] reports the keys nobody asked for.
#[derive(Debug)]
pub struct Fields<'t, 'i> {
    /// The table's key path (empty for the document's root).
    pub path: String,
    /// The table's span.
    pub span: Span,
    table: &'t DeTable<'i>,
    known: Vec<&'static str>,
}

impl<'t, 'i> Fields<'t, 'i> {
    /// The table `table` at `path`, spanning `span`; no key asked for yet.
    pub fn new(path: impl Into<String>, span: Span, table: &'t DeTable<'i>) -> Self {
        Self { path: path.into(), span, table, known: Vec::new() }
    }

    /// The path of `key` in this table.
    pub fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// The entry of `key`, if given; marks `key` as known.
    pub fn get(&mut self, key: &'static str) -> Option<Entry<'t, 'i>> {
        self.known.push(key);
        let (k, v) = self.table.get_key_value(key)?;
        Some(Entry { path: self.path_of(key), key_span: k.span(), value: v })
    }

    /// The entry of a required `key`; reports it missing at the table.
    pub fn required(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Option<Entry<'t, 'i>> {
        let e = self.get(key);
        if e.is_none() {
            cx.push(Diag::new(self.span.clone(), format!("missing required key `{}`", self.path_of(key))));
        }
        e
    }

    /// A string `key`, if given.
    pub fn str(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Option<Spanned<String>> {
        self.get(key).and_then(|e| cx.string(&e))
    }

    /// A boolean `key`, if given.
    pub fn bool(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Option<Spanned<bool>> {
        self.get(key).and_then(|e| cx.boolean(&e))
    }

    /// A non-negative integer `key` that fits a `u32`, if given (see [`Cx::u32`]).
    pub fn u32(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Option<u32> {
        self.get(key).and_then(|e| cx.u32(&e))
    }

    /// An array of strings `key`, if given (see [`Cx::strings`]).
    pub fn strings(&mut self, cx: &mut Cx<'_>, key: &'static str) -> Option<Vec<Spanned<String>>> {
        self.get(key).and_then(|e| cx.strings(&e))
    }

    /// A string checked by `check`, whose error message gets the key path in front.
    pub fn checked<T>(
        &mut self,
        cx: &mut Cx<'_>,
        key: &'static str,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let e = self.get(key)?;
        cx.checked(&e, check)
    }

    /// A required string checked by `check`.
    pub fn required_checked<T>(
        &mut self,
        cx: &mut Cx<'_>,
        key: &'static str,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let e = self.required(cx, key)?;
        cx.checked(&e, check)
    }

    /// An array of strings, each checked by `check`, repeats reported (see [`Cx::unique_strings`]);
    /// `None` when not given.
    pub fn checked_list(
        &mut self,
        cx: &mut Cx<'_>,
        key: &'static str,
        check: impl Fn(&str) -> Result<String, String>,
    ) -> Option<Vec<Spanned<String>>> {
        let e = self.get(key)?;
        let items = cx.strings(&e)?;
        let list: Vec<_> = items
            .into_iter()
            .filter_map(|s| cx.check(&e.path, &s, &check).map(|v| Spanned::new(v, s.span.clone())))
            .collect();
        cx.unique_strings(&e.path, &list);
        Some(list)
    }

    /// Report every key of the table that was not asked for.
    pub fn finish(&self, cx: &mut Cx<'_>) {
        for (k, _) in self.table.iter() {
            if !self.known.contains(&k.get_ref().as_ref()) {
                cx.push(
                    Diag::new(k.span(), format!("unknown key `{}`", self.path_of(k.get_ref())))
                        .with_label("unknown key")
                        .with_help(format!("expected one of: {}", self.known.join(", "))),
                );
            }
        }
    }
}

/// The reading: the source (for line numbers in hints) and the problems found so far.
#[derive(Debug)]
pub struct Cx<'f> {
    file: &'f SourceFile,
    diags: Vec<Diag>,
}

impl<'f> Cx<'f> {
    /// A reading of `file`, with no problem found yet.
    pub fn new(file: &'f SourceFile) -> Self {
        Self { file, diags: Vec::new() }
    }

    /// The problems found, in the order they were reported.
    pub fn into_diags(self) -> Vec<Diag> {
        self.diags
    }

    /// Report a problem.
    pub fn push(&mut self, d: Diag) {
        self.diags.push(d);
    }

    /// Report `msg` at `span`.
    pub fn error(&mut self, span: Span, msg: String) {
        self.diags.push(Diag::new(span, msg));
    }

    /// The line (1-based) where `span` starts.
    pub fn line(&self, span: &Span) -> usize {
        self.file.line_col(span.start).0
    }

    /// Report that `v` at `path` is not `expected` (e.g. "a string").
    pub fn type_error(&mut self, path: &str, expected: &str, v: &Item<'_>) {
        self.push(
            Diag::new(v.span(), format!("`{path}`: expected {expected}, found {}", type_name(v.get_ref())))
                .with_label("wrong type"),
        );
    }

    /// Run `check` on a string value; on error, report its message after the key path.
    pub fn check<T>(
        &mut self,
        path: &str,
        s: &Spanned<String>,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        match check(&s.value) {
            Ok(v) => Some(v),
            Err(msg) => {
                self.error(s.span.clone(), format!("`{path}`: {msg}"));
                None
            }
        }
    }

    /// A string entry checked by `check` (see [`Cx::check`]).
    pub fn checked<T>(
        &mut self,
        e: &Entry<'_, '_>,
        check: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<T> {
        let s = self.string(e)?;
        self.check(&e.path, &s, check)
    }

    /// A string entry.
    pub fn string(&mut self, e: &Entry<'_, '_>) -> Option<Spanned<String>> {
        match e.value.get_ref() {
            DeValue::String(s) => Some(Spanned::new(s.to_string(), e.span())),
            _ => {
                self.type_error(&e.path, "a string", e.value);
                None
            }
        }
    }

    /// A boolean entry.
    pub fn boolean(&mut self, e: &Entry<'_, '_>) -> Option<Spanned<bool>> {
        match e.value.get_ref() {
            DeValue::Boolean(b) => Some(Spanned::new(*b, e.span())),
            _ => {
                self.type_error(&e.path, "a boolean", e.value);
                None
            }
        }
    }

    /// An integer value in `min..=max`.
    pub fn int_in(
        &mut self,
        path: &str,
        span: Span,
        i: &DeInteger<'_>,
        min: i128,
        max: i128,
    ) -> Option<i128> {
        match i128::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.error(span, format!("`{path}`: {i} is out of range ({min} to {max})"));
                None
            }
        }
    }

    /// An integer entry in `min..=max`; another type is reported as not "an integer".
    pub fn int(&mut self, e: &Entry<'_, '_>, min: i128, max: i128) -> Option<i128> {
        match e.value.get_ref() {
            DeValue::Integer(i) => self.int_in(&e.path, e.span(), i, min, max),
            _ => {
                self.type_error(&e.path, "an integer", e.value);
                None
            }
        }
    }

    /// An integer entry in `0..=u32::MAX`; another type is reported as not "a non-negative integer".
    pub fn u32(&mut self, e: &Entry<'_, '_>) -> Option<u32> {
        match e.value.get_ref() {
            DeValue::Integer(i) => {
                self.int_in(&e.path, e.span(), i, 0, u32::MAX.into()).and_then(|n| u32::try_from(n).ok())
            }
            _ => {
                self.type_error(&e.path, "a non-negative integer", e.value);
                None
            }
        }
    }

    /// The elements of an array, each as an entry `path[i]`; anything else is reported as not
    /// `expected`.
    pub fn array<'t, 'i>(&mut self, e: &Entry<'t, 'i>, expected: &str) -> Option<Vec<Entry<'t, 'i>>> {
        match e.value.get_ref() {
            DeValue::Array(a) => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, v)| Entry { path: format!("{}[{i}]", e.path), key_span: v.span(), value: v })
                    .collect(),
            ),
            _ => {
                self.type_error(&e.path, expected, e.value);
                None
            }
        }
    }

    /// An array of strings; `None` if it is not an array (elements of another type are reported and left
    /// out).
    pub fn strings(&mut self, e: &Entry<'_, '_>) -> Option<Vec<Spanned<String>>> {
        let items = self.array(e, "an array of strings")?;
        Some(items.iter().filter_map(|item| self.string(item)).collect())
    }

    /// A table value as [`Fields`].
    pub fn table<'t, 'i>(&mut self, e: &Entry<'t, 'i>) -> Option<Fields<'t, 'i>> {
        match e.value.get_ref() {
            DeValue::Table(t) => Some(Fields::new(e.path.clone(), e.span(), t)),
            _ => {
                self.type_error(&e.path, "a table", e.value);
                None
            }
        }
    }

    /// An array of tables (`[[key]]` or `key = [{...}]`), each as [`Fields`] named `key[i]`.
    pub fn tables<'t, 'i>(&mut self, e: &Entry<'t, 'i>) -> Vec<Fields<'t, 'i>> {
        let items = self.array(e, "an array of tables").unwrap_or_default();
        items.iter().filter_map(|item| self.table(item)).collect()
    }

    /// Report the second of two conflicting items; the help names the line of the first as
    /// "`first_what` on line N".
    pub fn conflict(&mut self, second: Span, msg: String, first: &Span, first_what: &str) {
        let line = self.line(first);
        self.push(
            Diag::new(second, msg).with_label("conflict").with_help(format!("{first_what} on line {line}")),
        );
    }

    /// Values of a list that must be unique by `key`; reports repeats as "`path`: DESCRIBED is listed
    /// twice". Returns the first spans by key.
    pub fn unique<'a, T, K: std::hash::Hash + Eq>(
        &mut self,
        path: &str,
        items: impl IntoIterator<Item = (&'a Span, T)>,
        key: impl Fn(&T) -> K,
        describe: impl Fn(&T) -> String,
    ) -> HashMap<K, Span> {
        let mut seen: HashMap<K, Span> = HashMap::new();
        for (span, item) in items {
            let k = key(&item);
            if let Some(first) = seen.get(&k) {
                let first = first.clone();
                self.conflict(
                    span.clone(),
                    format!("`{path}`: {} is listed twice", describe(&item)),
                    &first,
                    "first",
                );
            } else {
                seen.insert(k, span.clone());
            }
        }
        seen
    }

    /// Strings that must be unique; reports repeats as "`path`: `VALUE` is listed twice".
    pub fn unique_strings(&mut self, path: &str, items: &[Spanned<String>]) {
        self.unique(path, items.iter().map(|s| (&s.span, s.value.as_str())), |v| *v, |v| format!("`{v}`"));
    }
}
