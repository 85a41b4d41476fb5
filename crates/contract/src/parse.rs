//! The `contracts/*.toml` parser: one contract file into the [`Contract`] model.
//!
//! The text is parsed with the `toml` crate into spanned values, then checked by hand, key by key, with
//! the span-aware reading `kiln_blueprint::toml_form` uses for blueprints (`kiln_blueprint::tomlread`):
//! every problem (unknown key, wrong type, bad value, conflicting keys, missing required key, repeated
//! requirement id, regular expression or Debian version constraint that does not parse) becomes a
//! [`Diag`] at the offending key or value, and the walk goes on, so one run reports all of them, each
//! with its line and column. The format is documented in `runbook/contracts.md`.

use std::{
    collections::{BTreeMap, HashMap},
    ops::{Deref, DerefMut},
    path::PathBuf,
    sync::Arc,
};

use kiln_blueprint::{
    diag::{Diag, SourceFile},
    model::{syntax, ContractRef, Span, Spanned},
    tomlread::{self, join, Entry, Fields},
    BlueprintError,
};
use kiln_debian::relation::{Constraint, Op};
use toml::de::{DeTable, DeValue};

use crate::model::{
    Check, ConfigFormat, Contract, ContractId, FileKind, Match, PackageState, Protocol, Requirement,
    ServiceState, Severity,
};

/// The check kinds, as written in contract files (`kind = "..."`), in the order the documentation lists
/// them.
pub const KINDS: [&str; 16] = [
    "os-release",
    "package",
    "file",
    "user",
    "group",
    "service",
    "config",
    "library",
    "special-files",
    "oci-config",
    "boot-target",
    "unit-active",
    "port-listening",
    "command",
    "kernel-cmdline",
    "no-failed-units",
];

/// Parse one contract file. `path` is how the file is named in messages and recorded in the contract.
pub fn parse(path: impl Into<PathBuf>, text: impl Into<String>) -> Result<Contract, BlueprintError> {
    parse_file(SourceFile::new(path, text)).map(|p| p.contract).map_err(|f| f.error)
}

/// A parsed contract with the places of what a contract set checks across files.
#[derive(Debug)]
pub(crate) struct Parsed {
    pub contract: Contract,
    pub file: Arc<SourceFile>,
    /// The `version` value.
    pub version: Span,
    /// Each `extends` entry, in order.
    pub extends: Vec<Span>,
    /// Each requirement's `id` value, in order.
    pub requirement_ids: Vec<Span>,
}

/// A contract file with problems, and its name when that much could be read (so that a contract set does
/// not also report contracts extending it as missing).
#[derive(Debug)]
pub(crate) struct Failed {
    pub error: BlueprintError,
    pub name: Option<String>,
}

pub(crate) fn parse_file(file: Arc<SourceFile>) -> Result<Parsed, Failed> {
    let (root, errors) = DeTable::parse_recoverable(&file.text);
    if !errors.is_empty() {
        // A document that is not TOML gives no reliable structure to check further.
        let diags = errors
            .iter()
            .map(|e| {
                let span = e.span().unwrap_or(0..0);
                Diag::new(span, format!("invalid TOML: {}", e.message())).with_label("syntax error")
            })
            .collect();
        return Err(Failed { error: BlueprintError::new(file, diags), name: None });
    }
    let mut cx = Cx(tomlread::Cx::new(&file));
    let parts = cx.contract(root.get_ref());
    let mut diags = cx.0.into_diags();
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    match parts {
        Parts { name: Some(name), version: Some(version), description: Some(description), .. }
            if diags.is_empty() =>
        {
            let contract = Contract {
                id: ContractId { name: name.value, version: version.value },
                description,
                extends: parts.extends.iter().map(|e| e.value.clone()).collect(),
                requirements: parts.requirements.iter().map(|r| r.value.clone()).collect(),
                path: file.path.clone(),
            };
            Ok(Parsed {
                contract,
                version: version.span,
                extends: parts.extends.into_iter().map(|e| e.span).collect(),
                requirement_ids: parts.requirements.into_iter().map(|r| r.span).collect(),
                file,
            })
        }
        _ => {
            if diags.is_empty() {
                // Unreachable by construction (a missing required part always reports why).
                diags.push(Diag::new(0..0, "invalid contract"));
            }
            let name = parts.name.map(|n| n.value);
            Err(Failed { error: BlueprintError::new(file, diags), name })
        }
    }
}

/// A Debian version constraint as package checks take it: one of Debian's relation operators (`<<`,
/// `<=`, `=`, `>=`, `>>`) and a version, e.g. `>= 2.36` or `<< 3.0~`.
pub fn version_constraint(s: &str) -> Result<Constraint, String> {
    let t = s.trim();
    const OPS: [(&str, Op); 5] =
        [("<<", Op::Lt), ("<=", Op::Le), (">=", Op::Ge), (">>", Op::Gt), ("=", Op::Eq)];
    let Some((op, rest)) = OPS.iter().find_map(|(p, op)| t.strip_prefix(p).map(|r| (*op, r))) else {
        let hint = if t.starts_with('<') || t.starts_with('>') {
            " (`<` and `>` are ambiguous in Debian: write `<<`, `<=`, `>=` or `>>`)"
        } else {
            ""
        };
        return Err(format!(
            "invalid version constraint `{s}`: expected an operator (`<<`, `<=`, `=`, `>=`, `>>`) and a \
             version, e.g. `>= 2.36`{hint}"
        ));
    };
    let v = rest.trim();
    if v.is_empty() {
        return Err(format!("invalid version constraint `{s}`: no version after `{}`", op.as_str()));
    }
    let version = kiln_debian::Version::parse(v).map_err(|e| {
        format!("invalid version constraint `{s}`: `{v}` is not a Debian version ({})", e.reason)
    })?;
    Ok(Constraint { op, version })
}

/// A regular expression as checks use it (Rust `regex` syntax); the error is the parser's one-line reason.
pub fn regex(s: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(s).map_err(|e| {
        let text = e.to_string();
        let reason = text
            .lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix("error: "))
            .map_or_else(|| text.lines().last().unwrap_or_default().trim().to_owned(), str::to_owned);
        format!("invalid regular expression `{s}`: {reason}")
    })
}

/// A duration as `boot-target` takes it: `90s`, `2m`, `1m30s`, `1h` (hours, minutes, seconds in that
/// order, each at most once), in seconds; larger than zero.
pub fn duration_secs(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid duration `{s}`: expected e.g. `60s`, `2m` or `1m30s`");
    let mut rest = s.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut last_unit = 0;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let (unit, factor, len) = match rest.chars().next() {
            Some('h') => (1, 3600, 1),
            Some('m') => (2, 60, 1),
            Some('s') => (3, 1, 1),
            None => return Err(format!("invalid duration `{s}`: give a unit (`s`, `m` or `h`)")),
            Some(_) => return Err(bad()),
        };
        if unit <= last_unit {
            return Err(bad());
        }
        last_unit = unit;
        rest = &rest[len..];
        total = n.checked_mul(factor).and_then(|x| total.checked_add(x)).ok_or_else(bad)?;
    }
    if total == 0 {
        return Err(format!("invalid duration `{s}`: must be longer than zero"));
    }
    Ok(total)
}

/// A requirement or runbook id: lowercase ASCII letters, digits and `-`, starting with a letter, at most
/// 64 characters (it names a file, `runbook/checks/<id>.md`).
pub fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

const ID_HELP: &str = "use lowercase letters, digits and `-`, starting with a letter (at most 64 characters)";

fn absolute_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("`{s}` is not an absolute path (it must start with `/`)"));
    }
    if s.contains('\0') || s.contains('\n') {
        return Err(format!("`{}` contains a NUL character or a line break", s.escape_debug()));
    }
    Ok(s.to_owned())
}

/// A user or group: an account name or a number.
fn account_or_id(s: &str) -> Result<String, String> {
    if syntax::is_account_name(s) || (!s.is_empty() && s.len() <= 10 && s.bytes().all(|b| b.is_ascii_digit()))
    {
        Ok(s.to_owned())
    } else {
        Err(format!("`{s}` is neither an account name nor a numeric id"))
    }
}

fn account(s: &str) -> Result<String, String> {
    if syntax::is_account_name(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a valid account name (lowercase letters, digits, `-` and `_`, starting with a \
             letter or `_`)"
        ))
    }
}

fn unit_name(s: &str) -> Result<String, String> {
    if syntax::is_unit_name(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a systemd unit name (give the full name with its type, e.g. `ssh.service`)"
        ))
    }
}

/// One word: not empty, no white space.
fn word(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains(char::is_whitespace) {
        Err(format!("`{}` is not one word (no spaces, not empty)", s.escape_debug()))
    } else {
        Ok(s.to_owned())
    }
}

/// What the top level of a contract file gave (each part `None` when missing or bad).
struct Parts {
    name: Option<Spanned<String>>,
    version: Option<Spanned<semver::Version>>,
    description: Option<String>,
    extends: Vec<Spanned<ContractRef>>,
    /// Each requirement with the span of its `id` value.
    requirements: Vec<Spanned<Requirement>>,
}

/// The parse: the shared span-aware reading of [`tomlread::Cx`] (the source and the problems found so
/// far), with the contract's own readers on top.
struct Cx<'f>(tomlread::Cx<'f>);

impl<'f> Deref for Cx<'f> {
    type Target = tomlread::Cx<'f>;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl DerefMut for Cx<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Cx<'_> {
    /// A string that is not blank.
    fn text(&mut self, e: &Entry<'_, '_>) -> Option<String> {
        self.checked(e, |s| {
            if s.trim().is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(s.to_owned())
            }
        })
    }

    /// A user or group id: an integer entry in `0..=u32::MAX`. Unlike [`tomlread::Cx::u32`], another type
    /// is reported as not "an integer".
    fn id_number(&mut self, e: &Entry<'_, '_>) -> Option<u32> {
        self.int(e, 0, u32::MAX.into()).and_then(|n| u32::try_from(n).ok())
    }

    /// One of `all` (name, value) by its name; an unknown name is reported with the accepted ones.
    fn choice<T: Copy>(&mut self, e: &Entry<'_, '_>, all: &[(&'static str, T)], what: &str) -> Option<T> {
        let s = self.string(e)?;
        let found = all.iter().find(|(n, _)| *n == s.value).map(|(_, v)| *v);
        if found.is_none() {
            let names: Vec<String> = all.iter().map(|(n, _)| format!("`{n}`")).collect();
            self.push(
                Diag::new(s.span, format!("`{}`: unknown {what} `{}`", e.path, s.value))
                    .with_help(format!("expected one of: {}", names.join(", "))),
            );
        }
        found
    }

    /// Exactly one of several alternative keys: reports none or several. `None` when not exactly one.
    fn one_of<'t, 'i>(
        &mut self,
        f: &mut Fields<'t, 'i>,
        all: &[&'static str],
    ) -> Option<(&'static str, Entry<'t, 'i>)> {
        let mut given: Vec<(&'static str, Entry<'t, 'i>)> =
            all.iter().filter_map(|k| f.get(k).map(|e| (*k, e))).collect();
        let names = all.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" or ");
        given.sort_by_key(|(_, e)| e.key_span.start);
        let mut it = given.into_iter();
        let Some(first) = it.next() else {
            self.push(
                Diag::new(f.span.clone(), format!("`{}`: needs {names}", f.path))
                    .with_help(format!("give exactly one of {names}")),
            );
            return None;
        };
        let mut ok = true;
        for (_, second) in it {
            ok = false;
            self.conflict(
                second.key_span.clone(),
                format!("`{}` conflicts with `{}`", second.path, first.1.path),
                &first.1.key_span,
                &format!("give only one of {names}; `{}` is", first.1.path),
            );
        }
        ok.then_some(first)
    }

    /// A value match from `equals = "..."` or `matches = "REGEX"` in the table `f`.
    fn value_match(&mut self, f: &mut Fields<'_, '_>) -> Option<Match> {
        let (key, e) = self.one_of(f, &["equals", "matches"])?;
        self.match_entry(key, &e)
    }

    fn match_entry(&mut self, key: &str, e: &Entry<'_, '_>) -> Option<Match> {
        let s = self.string(e)?;
        if key == "equals" {
            Some(Match::Equals(s.value))
        } else {
            self.check(&e.path, &s, regex).map(|_| Match::Regex(s.value))
        }
    }

    /// A table of matches: `{ NAME = "exact", OTHER = { matches = "REGEX" } }`, names checked by `key_ok`.
    fn match_map(
        &mut self,
        e: &Entry<'_, '_>,
        key_ok: fn(&str) -> bool,
        key_help: &str,
    ) -> BTreeMap<String, Match> {
        let mut out = BTreeMap::new();
        let DeValue::Table(t) = e.value.get_ref() else {
            self.type_error(&e.path, "a table", e.value);
            return out;
        };
        for (k, v) in t.iter() {
            let entry = Entry { path: join(&e.path, k.get_ref()), key_span: k.span(), value: v };
            if !key_ok(k.get_ref()) {
                self.push(
                    Diag::new(k.span(), format!("`{}`: `{}` is not a valid name", entry.path, k.get_ref()))
                        .with_help(key_help.to_owned()),
                );
            }
            let m = match v.get_ref() {
                DeValue::String(s) => Some(Match::Equals(s.to_string())),
                DeValue::Table(t) => {
                    let mut f = Fields::new(entry.path.clone(), v.span(), t);
                    let m = self.value_match(&mut f);
                    f.finish(self);
                    m
                }
                _ => {
                    self.type_error(
                        &entry.path,
                        "a string or a table (`{ equals = \"...\" }` or `{ matches = \"...\" }`)",
                        v,
                    );
                    None
                }
            };
            if let Some(m) = m {
                out.insert(k.get_ref().to_string(), m);
            }
        }
        out
    }

    /// Report that a table checks nothing.
    fn checks_nothing(&mut self, f: &Fields<'_, '_>, help: &str) {
        self.push(
            Diag::new(f.span.clone(), format!("`{}` checks nothing", f.path)).with_help(help.to_owned()),
        );
    }

    // ---------------------------------------------------------------------------------------------------

    fn contract(&mut self, root: &DeTable<'_>) -> Parts {
        let mut f = Fields::new("", 0..0, root);
        let name = f.required(self, "name").and_then(|e| self.string(&e)).filter(|s| {
            let ok = syntax::is_name(s);
            if !ok {
                self.push(
                    Diag::new(s.span.clone(), format!("`name`: `{}` is not a valid contract name", s.value))
                        .with_help(
                        "use lowercase letters, digits, `-`, `_` and `.`, starting with a letter or digit",
                    ),
                );
            }
            ok
        });
        let version = f.required(self, "version").and_then(|e| self.string(&e)).and_then(|s| {
            match semver::Version::parse(&s.value) {
                Ok(v) => Some(Spanned::new(v, s.span)),
                Err(e) => {
                    self.error(
                        s.span,
                        format!("`version`: `{}` is not a semantic version (e.g. `1.0.0`): {e}", s.value),
                    );
                    None
                }
            }
        });
        let description = f.required(self, "description").and_then(|e| self.text(&e));
        let extends_e = f.get("extends");
        let extends = extends_e.as_ref().map(|e| self.extends(e, name.as_ref())).unwrap_or_default();
        let require_e = f.get("require");
        let mut requirements = Vec::new();
        if let Some(e) = &require_e {
            for t in self.tables(e) {
                if let Some(r) = self.requirement(t) {
                    requirements.push(r);
                }
            }
        }
        f.finish(self);
        if require_e.is_none() && extends.is_empty() {
            self.push(
                Diag::new(0..0, "the contract has no requirements")
                    .with_help("add `[[require]]` tables, or `extends` another contract"),
            );
        }
        // Requirement ids are unique within the file (a contract set checks the contracts it extends).
        let ids: Vec<Spanned<String>> = requirements
            .iter()
            .map(|r: &Spanned<Requirement>| Spanned::new(r.value.id.clone(), r.span.clone()))
            .collect();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for id in &ids {
            if let Some(first) = seen.get(id.value.as_str()) {
                let first = first.clone();
                self.conflict(
                    id.span.clone(),
                    format!("requirement id `{}` is used twice", id.value),
                    &first,
                    "first",
                );
            } else {
                seen.insert(&id.value, id.span.clone());
            }
        }
        Parts { name, version, description, extends, requirements }
    }

    fn extends(&mut self, e: &Entry<'_, '_>, own: Option<&Spanned<String>>) -> Vec<Spanned<ContractRef>> {
        let items = self.strings(e).unwrap_or_default();
        let refs: Vec<Spanned<ContractRef>> = items
            .iter()
            .filter_map(|s| {
                self.check(&e.path, s, syntax::contract_ref).map(|c| Spanned::new(c, s.span.clone()))
            })
            .collect();
        let mut seen: HashMap<&str, Span> = HashMap::new();
        for r in &refs {
            if own.is_some_and(|n| n.value == r.value.name) {
                self.push(
                    Diag::new(r.span.clone(), format!("`{}`: a contract cannot extend itself", e.path))
                        .with_help("a new version of a contract replaces the old one; copy what it keeps"),
                );
            }
            if let Some(first) = seen.get(r.value.name.as_str()) {
                let first = first.clone();
                self.conflict(
                    r.span.clone(),
                    format!("`{}`: contract `{}` is listed twice", e.path, r.value.name),
                    &first,
                    "first",
                );
            } else {
                seen.insert(&r.value.name, r.span.clone());
            }
        }
        refs
    }

    /// One `[[require]]` table; the result is spanned by its `id` value.
    fn requirement(&mut self, mut f: Fields<'_, '_>) -> Option<Spanned<Requirement>> {
        let id = f.required(self, "id").and_then(|e| {
            let s = self.string(&e)?;
            if is_id(&s.value) {
                Some(s)
            } else {
                self.push(
                    Diag::new(s.span, format!("`{}`: `{}` is not a valid requirement id", e.path, s.value))
                        .with_help(ID_HELP),
                );
                None
            }
        });
        let description = f.required(self, "description").and_then(|e| self.text(&e));
        let severity = f.required(self, "severity").and_then(|e| self.choice(&e, &Severity::ALL, "severity"));
        let runbook = f.get("runbook").and_then(|e| {
            let s = self.string(&e)?;
            if is_id(&s.value) {
                Some(s.value)
            } else {
                self.push(
                    Diag::new(s.span, format!("`{}`: `{}` is not a valid runbook entry id", e.path, s.value))
                        .with_help(format!("it names `runbook/checks/<id>.md`; {ID_HELP}")),
                );
                None
            }
        });
        let kind = f.required(self, "kind").and_then(|e| self.string(&e).map(|s| (e, s)));
        let check = match &kind {
            Some((e, s)) => match s.value.as_str() {
                "os-release" => self.os_release(&mut f),
                "package" => self.package(&mut f),
                "file" => self.file(&mut f),
                "user" => self.user(&mut f),
                "group" => self.group(&mut f),
                "service" => self.service(&mut f),
                "config" => self.config(&mut f),
                "library" => self.library(&mut f),
                "special-files" => self.special_files(&mut f),
                "oci-config" => self.oci_config(&mut f),
                "boot-target" => self.boot_target(&mut f),
                "unit-active" => self.unit_active(&mut f),
                "port-listening" => self.port_listening(&mut f),
                "command" => self.command(&mut f),
                "kernel-cmdline" => self.kernel_cmdline(&mut f),
                "no-failed-units" => self.no_failed_units(&mut f),
                other => {
                    self.push(
                        Diag::new(s.span.clone(), format!("`{}`: unknown check kind `{other}`", e.path))
                            .with_help(format!("expected one of: {}", KINDS.join(", "))),
                    );
                    None
                }
            },
            None => None,
        };
        // Without a known kind, which other keys belong is unknown: only the kind is reported.
        if check.is_some() || kind.as_ref().is_some_and(|(_, s)| KINDS.contains(&s.value.as_str())) {
            f.finish(self);
        }
        let line = self.line(&f.span);
        let id = id?;
        Some(Spanned::new(
            Requirement {
                id: id.value,
                description: description?,
                severity: severity?,
                runbook,
                check: check?,
                line,
            },
            id.span,
        ))
    }

    // ---- static checks ----

    fn os_release(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let field = f.required_checked(self, "field", |s| {
            let ok = s.starts_with(|c: char| c.is_ascii_uppercase())
                && s.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_');
            if ok {
                Ok(s.to_owned())
            } else {
                Err(format!("`{s}` is not an os-release field name (e.g. `ID`, `VERSION_ID`)"))
            }
        });
        let value = self.value_match(f);
        Some(Check::OsRelease { field: field?, value: value? })
    }

    fn package(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let name = f.required_checked(self, "name", |s| {
            if syntax::is_package_name(s) {
                Ok(s.to_owned())
            } else {
                Err(format!("`{s}` is not a valid Debian package name"))
            }
        });
        let state_e = f.get("state");
        let absent = state_e
            .as_ref()
            .and_then(|e| self.choice(e, &[("present", false), ("absent", true)], "package state"));
        let version_e = f.get("version");
        let version = version_e
            .as_ref()
            .and_then(|e| self.checked(e, |s| version_constraint(s).map(|_| s.trim().to_owned())));
        let state = match (absent, &version_e, &state_e) {
            (Some(true), Some(v), Some(state_e)) => {
                self.conflict(
                    v.key_span.clone(),
                    format!("`{}` conflicts with `{} = \"absent\"`", v.path, state_e.path),
                    &state_e.key_span,
                    "a version applies to an installed package; the state is",
                );
                None
            }
            (Some(true), _, _) => Some(PackageState::Absent),
            // A bad state was reported.
            (None, _, Some(_)) => None,
            _ => Some(PackageState::Present { version }),
        };
        Some(Check::Package { name: name?, state: state? })
    }

    fn file(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let path = f.required_checked(self, "path", absolute_path);
        let exists_e = f.get("exists");
        let exists = exists_e.as_ref().and_then(|e| self.boolean(e)).is_none_or(|b| b.value);
        let mut details: Vec<Entry<'_, '_>> = Vec::new();
        let type_e = f.get("type");
        let file_type = type_e.as_ref().and_then(|e| self.choice(e, &FileKind::ALL, "file type"));
        let mode = f.get("mode").and_then(|e| {
            let m = self.mode(&e);
            details.push(e);
            m
        });
        let owner = f.get("owner").and_then(|e| {
            let o = self.checked(&e, account_or_id);
            details.push(e);
            o
        });
        let group = f.get("group").and_then(|e| {
            let g = self.checked(&e, account_or_id);
            details.push(e);
            g
        });
        let sha256_e = f.get("sha256");
        let sha256 = sha256_e.as_ref().and_then(|e| {
            self.checked(e, |s| {
                if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(s.to_ascii_lowercase())
                } else {
                    Err(format!("`{s}` is not a SHA-256 digest (64 hexadecimal digits)"))
                }
            })
        });
        let content_e = f.get("content");
        let content = content_e.as_ref().and_then(|e| self.checked(e, |s| regex(s).map(|_| s.to_owned())));
        if let Some(e) = &type_e {
            details.push(e.clone());
        }
        let content_keys: Vec<&Entry<'_, '_>> = [&sha256_e, &content_e].into_iter().flatten().collect();
        details.extend(content_keys.iter().map(|e| (*e).clone()));
        if !exists {
            let exists_e = exists_e.as_ref()?;
            details.sort_by_key(|e| e.key_span.start);
            for d in &details {
                self.conflict(
                    d.key_span.clone(),
                    format!("`{}` conflicts with `{} = false`", d.path, exists_e.path),
                    &exists_e.key_span,
                    "nothing is checked of a path that must be absent; `exists = false` is",
                );
            }
            if !details.is_empty() {
                return None;
            }
        }
        if let (Some(FileKind::Directory | FileKind::Symlink), Some(type_e)) = (file_type, &type_e) {
            for e in &content_keys {
                self.conflict(
                    e.key_span.clone(),
                    format!("`{}` conflicts with `{}`: only a regular file has content", e.path, type_e.path),
                    &type_e.key_span,
                    "the type is",
                );
            }
        }
        Some(Check::File { path: path?, exists, file_type, mode, owner, group, sha256, content })
    }

    /// A mode: an octal string (`"0755"`) or an integer read as octal digits (`755`, `0o755`).
    fn mode(&mut self, e: &Entry<'_, '_>) -> Option<u32> {
        let text = match e.value.get_ref() {
            DeValue::String(s) => s.to_string(),
            DeValue::Integer(i) if matches!(i.radix(), 8 | 10) => i.as_str().to_owned(),
            DeValue::Integer(i) => {
                self.error(
                    e.span(),
                    format!("`{}`: invalid mode `{i}`: write a mode as octal digits, e.g. \"0644\"", e.path),
                );
                return None;
            }
            _ => {
                self.type_error(&e.path, "a mode (a string like \"0644\")", e.value);
                return None;
            }
        };
        self.check(&e.path, &Spanned::new(text, e.span()), syntax::mode).map(|m| m.0)
    }

    fn user(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let name = f.required_checked(self, "name", account);
        let uid = f.get("uid").and_then(|e| self.id_number(&e));
        let home = f.checked(self, "home", absolute_path);
        let shell = f.checked(self, "shell", absolute_path);
        let groups = f.checked_list(self, "groups", account).unwrap_or_default();
        Some(Check::User {
            name: name?,
            uid,
            home,
            shell,
            groups: groups.into_iter().map(|g| g.value).collect(),
        })
    }

    fn group(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let name = f.required_checked(self, "name", account);
        let gid = f.get("gid").and_then(|e| self.id_number(&e));
        let members = f.checked_list(self, "members", account).unwrap_or_default();
        Some(Check::Group { name: name?, gid, members: members.into_iter().map(|m| m.value).collect() })
    }

    fn service(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let unit = f.required_checked(self, "unit", unit_name);
        let state =
            f.required(self, "state").and_then(|e| self.choice(&e, &ServiceState::ALL, "service state"));
        Some(Check::Service { unit: unit?, state: state? })
    }

    fn config(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let format = f
            .required(self, "format")
            .and_then(|e| self.choice(&e, &ConfigFormat::ALL, "configuration format"));
        let key = f.required_checked(self, "key", word);
        let value = self.value_match(f);
        Some(Check::Config { format: format?, key: key?, value: value? })
    }

    fn library(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let soname = f.required_checked(self, "soname", |s| {
            if !s.is_empty() && s.contains(".so") && !s.contains('/') && !s.contains(char::is_whitespace) {
                Ok(s.to_owned())
            } else {
                Err(format!("`{s}` is not a shared library name (e.g. `libc.so.6`, without a directory)"))
            }
        });
        let versions = f.checked_list(self, "symbol_versions", word).unwrap_or_default();
        Some(Check::Library {
            soname: soname?,
            symbol_versions: versions.into_iter().map(|v| v.value).collect(),
        })
    }

    fn special_files(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let setuid = f.bool(self, "setuid").is_none_or(|b| b.value);
        let setgid = f.bool(self, "setgid").is_none_or(|b| b.value);
        let world_writable = f.bool(self, "world_writable").is_none_or(|b| b.value);
        let allow = f.checked_list(self, "allow", absolute_path).unwrap_or_default();
        if !(setuid || setgid || world_writable) {
            self.checks_nothing(f, "leave at least one of `setuid`, `setgid`, `world_writable` true");
            return None;
        }
        Some(Check::SpecialFiles {
            setuid,
            setgid,
            world_writable,
            allow: allow.into_iter().map(|a| a.value).collect(),
        })
    }

    fn oci_config(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let mut given = false;
        let mut argv = |cx: &mut Self, f: &mut Fields<'_, '_>, key: &'static str| {
            let e = f.get(key)?;
            given = true;
            let items = cx.strings(&e)?;
            if items.is_empty() {
                cx.push(
                    Diag::new(e.span(), format!("`{}`: empty command", e.path))
                        .with_help(format!("leave `{key}` out to not check it")),
                );
                return None;
            }
            Some(items.into_iter().map(|s| s.value).collect::<Vec<_>>())
        };
        let entrypoint = argv(self, f, "entrypoint");
        let cmd = argv(self, f, "cmd");
        let env_e = f.get("env");
        let env = env_e
            .as_ref()
            .map(|e| self.match_map(e, syntax::is_env_name, "use ASCII letters, digits and `_`"))
            .unwrap_or_default();
        let labels_e = f.get("labels");
        let labels = labels_e
            .as_ref()
            .map(|e| self.match_map(e, |k| !k.trim().is_empty(), "a label needs a name"))
            .unwrap_or_default();
        let ports_e = f.get("exposed_ports");
        let mut ports: Vec<Spanned<String>> = Vec::new();
        if let Some(e) = &ports_e {
            for item in self.array(e, "an array of ports").unwrap_or_default() {
                let s = match item.value.get_ref() {
                    DeValue::String(s) => Spanned::new(s.to_string(), item.span()),
                    DeValue::Integer(i) => Spanned::new(i.to_string(), item.span()),
                    _ => {
                        self.type_error(
                            &item.path,
                            "a port (`80`, `\"80/tcp\"` or `\"53/udp\"`)",
                            item.value,
                        );
                        continue;
                    }
                };
                if let Some(p) = self.check(&e.path, &s, syntax::port) {
                    ports.push(Spanned::new(p, s.span));
                }
            }
            self.unique_strings(&e.path, &ports);
        }
        let user_e = f.get("user");
        let user = user_e.as_ref().and_then(|e| self.checked(e, syntax::user_spec));
        given |= env_e.is_some() || labels_e.is_some() || ports_e.is_some() || user_e.is_some();
        if !given {
            self.checks_nothing(
                f,
                "give at least one of `entrypoint`, `cmd`, `env`, `labels`, `exposed_ports`, `user`",
            );
            return None;
        }
        Some(Check::OciConfig {
            entrypoint,
            cmd,
            env,
            labels,
            exposed_ports: ports.into_iter().map(|p| p.value).collect(),
            user,
        })
    }

    // ---- runtime checks ----

    fn boot_target(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let target = f.required_checked(self, "target", |s| {
            if syntax::is_unit_name(s) && s.ends_with(".target") {
                Ok(s.to_owned())
            } else {
                Err(format!("`{s}` is not a systemd target (e.g. `multi-user.target`)"))
            }
        });
        let within = f.required(self, "within").and_then(|e| match e.value.get_ref() {
            DeValue::String(_) => self.checked(&e, duration_secs),
            DeValue::Integer(i) => {
                self.int_in(&e.path, e.span(), i, 1, u32::MAX.into()).and_then(|n| u64::try_from(n).ok())
            }
            _ => {
                self.type_error(&e.path, "a duration (\"60s\", \"2m\") or a number of seconds", e.value);
                None
            }
        });
        Some(Check::BootTarget { target: target?, within_secs: within? })
    }

    fn unit_active(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let unit = f.required_checked(self, "unit", unit_name);
        Some(Check::UnitActive { unit: unit? })
    }

    fn port_listening(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let port_e = f.required(self, "port");
        let proto_e = f.get("protocol");
        let protocol = proto_e.as_ref().and_then(|e| self.choice(e, &Protocol::ALL, "protocol"));
        let port = port_e.as_ref().and_then(|e| match e.value.get_ref() {
            DeValue::Integer(i) => self
                .int_in(&e.path, e.span(), i, 1, u16::MAX.into())
                .and_then(|n| u16::try_from(n).ok())
                .map(|n| (n, None)),
            DeValue::String(_) => {
                let s = self.string(e)?;
                let with_proto = s.value.contains('/');
                let p = self.check(&e.path, &s, syntax::port)?;
                let (num, proto) = p.split_once('/')?;
                let proto = Protocol::ALL.iter().find(|(n, _)| *n == proto).map(|(_, p)| *p)?;
                if let (true, Some(pe)) = (with_proto, &proto_e) {
                    self.conflict(
                        pe.key_span.clone(),
                        format!("`{}` conflicts with the protocol in `{}`", pe.path, e.path),
                        &e.key_span,
                        "the port with its protocol is",
                    );
                    return None;
                }
                num.parse::<u16>().ok().map(|n| (n, with_proto.then_some(proto)))
            }
            _ => {
                self.type_error(&e.path, "a port (`22` or `\"22/tcp\"`)", e.value);
                None
            }
        });
        if proto_e.is_some() && protocol.is_none() {
            return None;
        }
        let (port, in_port) = port?;
        Some(Check::PortListening { port, protocol: in_port.or(protocol).unwrap_or(Protocol::Tcp) })
    }

    fn command(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let run = f.required(self, "run").and_then(|e| {
            self.checked(&e, |s| {
                if s.trim().is_empty() {
                    Err("empty command".to_owned())
                } else {
                    Ok(s.to_owned())
                }
            })
        });
        let exit_e = f.get("exit_code");
        let exit_code = exit_e.as_ref().and_then(|e| self.int(e, 0, 255)).and_then(|n| i32::try_from(n).ok());
        let output = f.checked(self, "output", |s| regex(s).map(|_| s.to_owned()));
        if exit_e.is_some() && exit_code.is_none() {
            return None;
        }
        Some(Check::Command { run: run?, exit_code: exit_code.unwrap_or(0), output })
    }

    fn kernel_cmdline(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let contains = f.checked_list(self, "contains", word).unwrap_or_default();
        let absent = f.checked_list(self, "absent", word).unwrap_or_default();
        for a in &absent {
            if let Some(c) = contains.iter().find(|c| c.value == a.value) {
                let path = f.path_of("absent");
                self.conflict(
                    a.span.clone(),
                    format!("`{path}`: `{}` is also in `contains`", a.value),
                    &c.span,
                    "`contains` names it",
                );
            }
        }
        if contains.is_empty() && absent.is_empty() {
            self.checks_nothing(f, "give words the command line must hold (`contains`) or not (`absent`)");
            return None;
        }
        Some(Check::KernelCmdline {
            contains: contains.into_iter().map(|c| c.value).collect(),
            absent: absent.into_iter().map(|a| a.value).collect(),
        })
    }

    fn no_failed_units(&mut self, f: &mut Fields<'_, '_>) -> Option<Check> {
        let allow = f.checked_list(self, "allow", unit_name).unwrap_or_default();
        Some(Check::NoFailedUnits { allow: allow.into_iter().map(|a| a.value).collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Contract {
        parse("c.toml", text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn errors(text: &str) -> Vec<String> {
        match parse("c.toml", text) {
            Ok(c) => panic!("accepted: {c:?}"),
            Err(e) => e.located().iter().map(|l| format!("{}:{}: {}", l.line, l.column, l.message)).collect(),
        }
    }

    const HEAD: &str = "name = \"c\"\nversion = \"1.0.0\"\ndescription = \"d\"\n";

    fn one(body: &str) -> Check {
        let c =
            ok(&format!("{HEAD}[[require]]\nid = \"r\"\ndescription = \"x\"\nseverity = \"minor\"\n{body}"));
        c.requirements.into_iter().next().unwrap().check
    }

    #[test]
    fn a_contract_with_a_requirement() {
        let c = ok(&format!(
            "{HEAD}extends = [\"base-os@^1\"]\n\n[[require]]\nid = \"sshd-enabled\"\ndescription = \"sshd \
             starts at boot\"\nseverity = \"critical\"\nrunbook = \"sshd-enabled\"\nkind = \"service\"\nunit = \
             \"ssh.service\"\nstate = \"enabled\"\n"
        ));
        assert_eq!(c.id.to_string(), "c@1.0.0");
        assert_eq!(c.extends, vec![ContractRef { name: "base-os".into(), req: "^1".into() }]);
        let r = &c.requirements[0];
        assert_eq!(
            (r.id.as_str(), r.severity, r.runbook.as_deref(), r.line),
            ("sshd-enabled", Severity::Critical, Some("sshd-enabled"), 6)
        );
        assert_eq!(r.check, Check::Service { unit: "ssh.service".into(), state: ServiceState::Enabled });
    }

    #[test]
    fn ports_take_either_form() {
        let tcp22 = Check::PortListening { port: 22, protocol: Protocol::Tcp };
        assert_eq!(one("kind = \"port-listening\"\nport = \"22/tcp\""), tcp22);
        assert_eq!(one("kind = \"port-listening\"\nport = 22"), tcp22);
        assert_eq!(one("kind = \"port-listening\"\nport = \"22\""), tcp22);
        assert_eq!(
            one("kind = \"port-listening\"\nport = 53\nprotocol = \"udp\""),
            Check::PortListening { port: 53, protocol: Protocol::Udp }
        );
    }

    #[test]
    fn boot_target_durations() {
        let t = |w: &str| match one(&format!(
            "kind = \"boot-target\"\ntarget = \"multi-user.target\"\nwithin = {w}"
        )) {
            Check::BootTarget { within_secs, .. } => within_secs,
            other => panic!("{other:?}"),
        };
        assert_eq!(t("\"60s\""), 60);
        assert_eq!(t("\"2m\""), 120);
        assert_eq!(t("\"1m30s\""), 90);
        assert_eq!(t("45"), 45);
        assert!(duration_secs("30s1m").is_err());
        assert!(duration_secs("0s").is_err());
        assert!(duration_secs("60").is_err());
        assert!(duration_secs("1d").is_err());
    }

    #[test]
    fn file_defaults_and_modes() {
        assert_eq!(
            one("kind = \"file\"\npath = \"/etc/shadow\"\nmode = \"0640\"\ngroup = \"shadow\""),
            Check::File {
                path: "/etc/shadow".into(),
                exists: true,
                file_type: None,
                mode: Some(0o640),
                owner: None,
                group: Some("shadow".into()),
                sha256: None,
                content: None,
            }
        );
        match one("kind = \"file\"\npath = \"/usr/bin/su\"\nmode = 4755\nsha256 = \"AB\"\n"
            .replace("\"AB\"", &format!("\"{}\"", "AB".repeat(32)))
            .as_str())
        {
            Check::File { mode, sha256, .. } => {
                assert_eq!(mode, Some(0o4755));
                assert_eq!(sha256, Some("ab".repeat(32)));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn matches_in_oci_labels() {
        let c = one(
            "kind = \"oci-config\"\nlabels = { \"org.opencontainers.image.title\" = { matches = \"\\\\S\" }, \
             vendor = \"kiln\" }\nexposed_ports = [80, \"53/udp\"]",
        );
        let Check::OciConfig { labels, exposed_ports, entrypoint, .. } = c else { panic!() };
        assert_eq!(labels["org.opencontainers.image.title"], Match::Regex("\\S".into()));
        assert_eq!(labels["vendor"], Match::Equals("kiln".into()));
        assert_eq!(exposed_ports, ["80/tcp", "53/udp"]);
        assert_eq!(entrypoint, None);
    }

    #[test]
    fn package_versions_use_debian_operators() {
        assert_eq!(
            one("kind = \"package\"\nname = \"libc6\"\nversion = \">= 2.36\""),
            Check::Package {
                name: "libc6".into(),
                state: PackageState::Present { version: Some(">= 2.36".into()) }
            }
        );
        assert_eq!(
            one("kind = \"package\"\nname = \"linux-image-amd64\"\nstate = \"absent\""),
            Check::Package { name: "linux-image-amd64".into(), state: PackageState::Absent }
        );
        for bad in ["> 2.36", "2.36", ">=", ">= 2 36", "~= 1"] {
            assert!(version_constraint(bad).is_err(), "{bad}");
        }
        assert_eq!(version_constraint("<<1:2.0~rc1-3").unwrap().to_string(), "<< 1:2.0~rc1-3");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let e = errors(
            "name = \"C\"\nversion = \"1.0\"\ndescription = \"d\"\n\n[[require]]\nid = \"a\"\ndescription = \
             \"x\"\nseverity = \"fatal\"\nkind = \"command\"\nrun = \"true\"\noutput = \"(\"\n",
        );
        assert_eq!(e.len(), 4, "{e:?}");
        assert!(e[0].starts_with("1:8: `name`: `C` is not a valid contract name"), "{e:?}");
        assert!(e[1].starts_with("2:11: `version`: `1.0` is not a semantic version"), "{e:?}");
        assert!(e[2].starts_with("8:12: `require[0].severity`: unknown severity `fatal`"), "{e:?}");
        assert!(e[3].starts_with("11:10: `require[0].output`: invalid regular expression `(`:"), "{e:?}");
    }

    #[test]
    fn regex_errors_are_one_line() {
        let e = regex("a(b").unwrap_err();
        assert!(!e.contains('\n'), "{e}");
        assert!(e.contains("unclosed group"), "{e}");
    }

    #[test]
    fn an_unknown_kind_reports_only_the_kind() {
        let e = errors(&format!(
            "{HEAD}[[require]]\nid = \"a\"\ndescription = \"x\"\nseverity = \"minor\"\nkind = \"nope\"\nfoo = 1\n"
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("8:8: `require[0].kind`: unknown check kind `nope`"), "{e:?}");
    }
}
