//! The contracts of a folder (`contracts/*.toml`) as one set: every file parsed (all problems of all files
//! reported together), each name and version defined once, every `extends` resolved to the highest version
//! that matches it (a missing one, a cycle, or a requirement id declared twice along the way is an error
//! located at the `extends` entry or the requirement), and the questions the runner and the catalog ask:
//! which contract answers a request ([`ContractSet::resolve`]), what a contract requires with everything it
//! extends ([`ContractSet::effective`]), whether a certification answers a request
//! ([`ContractSet::satisfies`]), and whether every cited runbook entry exists
//! ([`ContractSet::check_runbooks`]).
//!
//! Only [`ContractSet::load`] and [`ContractSet::check_runbooks`] touch the file system; the rest works on
//! texts ([`ContractSet::from_files`]).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    fmt,
    path::{Path, PathBuf},
};

use kiln_blueprint::{
    diag::{Diag, Located},
    model::{ContractRef, Span},
    BlueprintError, SourceFile,
};

use crate::{
    model::{Contract, ContractId, Requirement},
    parse::{parse_file, Failed, Parsed},
};

/// A folder's contracts, checked as a whole.
#[derive(Debug, Clone)]
pub struct ContractSet {
    /// Sorted by name, then version.
    contracts: Vec<Contract>,
}

/// Why a folder of contracts cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ContractSetError {
    /// The folder or a file in it could not be read (the message names the path).
    #[error("reading contracts: {0}")]
    Io(#[from] std::io::Error),
    /// Problems in the files: one error per file, each with every problem found in it, located.
    #[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid { errors: Vec<BlueprintError> },
}

impl ContractSetError {
    /// Every located problem, file by file.
    pub fn located(&self) -> Vec<Located> {
        match self {
            ContractSetError::Io(_) => Vec::new(),
            ContractSetError::Invalid { errors } => errors.iter().flat_map(BlueprintError::located).collect(),
        }
    }

    /// One miette report per problem (source line and caret).
    pub fn reports(&self) -> Vec<miette::Report> {
        match self {
            ContractSetError::Io(_) => Vec::new(),
            ContractSetError::Invalid { errors } => errors.iter().flat_map(BlueprintError::reports).collect(),
        }
    }
}

/// A requirement citing a runbook entry that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingRunbook {
    /// The contract file and the line of the requirement.
    pub file: PathBuf,
    pub line: usize,
    pub contract: ContractId,
    pub requirement: String,
    pub runbook: String,
    /// The file that should exist: `RUNBOOK/checks/<runbook>.md`.
    pub expected: PathBuf,
}

impl fmt::Display for MissingRunbook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: requirement `{}` of {} cites runbook entry `{}`, but {} does not exist",
            self.file.display(),
            self.line,
            self.requirement,
            self.contract,
            self.runbook,
            self.expected.display()
        )
    }
}

/// Every requirement whose runbook entry is missing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct MissingRunbooks(pub Vec<MissingRunbook>);

/// A parsed file while the set is checked: its problems found across files so far.
struct Entry {
    parsed: Parsed,
    diags: Vec<Diag>,
    /// Dropped as a duplicate of an earlier definition.
    duplicate: bool,
    /// The index of the contract each `extends` entry resolves to.
    resolved: Vec<Option<usize>>,
}

impl ContractSet {
    /// Read and check every `*.toml` file of `dir` (not its subfolders; names starting with `.` are left
    /// out). Files are named in messages as `dir` joined with the file name.
    pub fn load(dir: &Path) -> Result<ContractSet, ContractSetError> {
        let mut files = Vec::new();
        for entry in fs_err::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || !name.ends_with(".toml") || !entry.file_type()?.is_file() {
                continue;
            }
            let path = dir.join(&*name);
            let text = fs_err::read_to_string(&path)?;
            files.push((path, text));
        }
        Self::from_files(files)
    }

    /// Check contract files given as (path, text); see the module documentation.
    pub fn from_files(
        files: impl IntoIterator<Item = (PathBuf, String)>,
    ) -> Result<ContractSet, ContractSetError> {
        let mut files: Vec<(PathBuf, String)> = files.into_iter().collect();
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut errors: Vec<BlueprintError> = Vec::new();
        let mut failed_names: HashSet<String> = HashSet::new();
        let mut entries: Vec<Entry> = Vec::new();
        for (path, text) in files {
            match parse_file(SourceFile::new(path, text)) {
                Ok(parsed) => {
                    entries.push(Entry { parsed, diags: Vec::new(), duplicate: false, resolved: Vec::new() })
                }
                Err(Failed { error, name }) => {
                    failed_names.extend(name);
                    errors.push(error);
                }
            }
        }

        // Each name and version once.
        let mut first: HashMap<ContractId, usize> = HashMap::new();
        for i in 0..entries.len() {
            let id = entries[i].parsed.contract.id.clone();
            if let Some(&j) = first.get(&id) {
                let other = entries[j].parsed.file.path.display().to_string();
                let e = &mut entries[i];
                e.duplicate = true;
                e.diags.push(
                    Diag::new(e.parsed.version.clone(), format!("contract {id} is also defined in {other}"))
                        .with_label("defined twice")
                        .with_help("give each version of a contract its own number"),
                );
            } else {
                first.insert(id, i);
            }
        }

        // Resolve each `extends` entry to the highest matching version.
        let live: Vec<usize> = (0..entries.len()).filter(|&i| !entries[i].duplicate).collect();
        for &i in &live {
            let mut resolved = Vec::new();
            let mut diags = Vec::new();
            for (r, span) in entries[i].parsed.contract.extends.iter().zip(&entries[i].parsed.extends) {
                let found = highest(live.iter().map(|&j| (j, &entries[j].parsed.contract.id)), r);
                if found.is_none() && !failed_names.contains(&r.name) {
                    let versions: Vec<String> = live
                        .iter()
                        .map(|&j| &entries[j].parsed.contract.id)
                        .filter(|id| id.name == r.name)
                        .map(|id| id.version.to_string())
                        .collect();
                    let help = if versions.is_empty() {
                        format!("no contract in this folder is named `{}`", r.name)
                    } else {
                        format!("`{}` has version(s) {}", r.name, versions.join(", "))
                    };
                    diags.push(
                        Diag::new(span.clone(), format!("no contract matches `{}@{}`", r.name, r.req))
                            .with_label("not found")
                            .with_help(help),
                    );
                }
                resolved.push(found);
            }
            entries[i].resolved = resolved;
            entries[i].diags.extend(diags);
        }

        // Cycles: an entry that leads back to its own contract.
        for &i in &live {
            for (k, target) in entries[i].resolved.clone().into_iter().enumerate() {
                let Some(t) = target else { continue };
                if let Some(path) = path_between(&entries, t, i) {
                    let mut chain = vec![entries[i].parsed.contract.id.to_string()];
                    chain.extend(path.iter().map(|&j| entries[j].parsed.contract.id.to_string()));
                    let r = &entries[i].parsed.contract.extends[k];
                    let msg =
                        format!("`{}@{}` leads back to this contract: {}", r.name, r.req, chain.join(" -> "));
                    let span = entries[i].parsed.extends[k].clone();
                    entries[i].diags.push(
                        Diag::new(span, msg)
                            .with_label("cycle")
                            .with_help("a contract cannot extend itself, directly or through others"),
                    );
                }
            }
        }

        // Requirement ids unique across a contract and everything it extends.
        for &i in &live {
            let diags = id_collisions(&entries, i);
            entries[i].diags.extend(diags);
        }

        let mut contracts = Vec::new();
        for e in entries {
            if e.diags.is_empty() {
                if !e.duplicate {
                    contracts.push(e.parsed.contract);
                }
            } else {
                let mut diags = e.diags;
                diags.sort_by_key(|d| (d.span.start, d.span.end));
                errors.push(BlueprintError::new(e.parsed.file, diags));
            }
        }
        if !errors.is_empty() {
            errors.sort_by(|a, b| a.file.path.cmp(&b.file.path));
            return Err(ContractSetError::Invalid { errors });
        }
        contracts.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(ContractSet { contracts })
    }

    /// Every contract, by name and then version.
    pub fn contracts(&self) -> &[Contract] {
        &self.contracts
    }

    /// The contract with exactly this name and version.
    pub fn get(&self, id: &ContractId) -> Option<&Contract> {
        self.contracts.iter().find(|c| c.id == *id)
    }

    /// The highest version of the requested contract that matches the request's range.
    pub fn resolve(&self, request: &ContractRef) -> Option<&Contract> {
        highest(self.contracts.iter().enumerate().map(|(i, c)| (i, &c.id)), request)
            .map(|i| &self.contracts[i])
    }

    /// `contract` followed by every contract it extends, transitively (each resolved to its highest
    /// matching version), depth first in `extends` order, each once.
    pub fn lineage<'a>(&'a self, contract: &'a Contract) -> Vec<&'a Contract> {
        let mut out: Vec<&'a Contract> = Vec::new();
        let mut todo = vec![contract];
        while let Some(c) = todo.pop() {
            if out.iter().any(|o| o.id == c.id) {
                continue;
            }
            out.push(c);
            todo.extend(c.extends.iter().rev().filter_map(|r| self.resolve(r)));
        }
        out
    }

    /// What certifying against `contract` checks: its own requirements and those of every contract it
    /// extends (transitively, each contract once), each tagged with the contract that declares it.
    pub fn effective<'a>(&'a self, contract: &'a Contract) -> Vec<(ContractId, &'a Requirement)> {
        self.lineage(contract)
            .into_iter()
            .flat_map(|c| c.requirements.iter().map(move |r| (c.id.clone(), r)))
            .collect()
    }

    /// Whether a certification against `certified` answers `request`: the same name with a version in the
    /// requested range (`base-os@^1.1` is answered by `base-os@1.3.0`, not by `base-os@2.0.0`), or a
    /// contract of this set that extends, transitively, one that does.
    pub fn satisfies(&self, certified: &ContractId, request: &ContractRef) -> bool {
        let answers = |id: &ContractId| id.name == request.name && request.req().matches(&id.version);
        if answers(certified) {
            return true;
        }
        self.get(certified).is_some_and(|c| self.lineage(c).iter().any(|x| answers(&x.id)))
    }

    /// Check that every runbook entry a requirement cites exists as `runbook_dir/checks/<id>.md`.
    pub fn check_runbooks(&self, runbook_dir: &Path) -> Result<(), MissingRunbooks> {
        let missing: Vec<MissingRunbook> = self
            .contracts
            .iter()
            .flat_map(|c| c.requirements.iter().map(move |r| (c, r)))
            .filter_map(|(c, r)| {
                let runbook = r.runbook.as_ref()?;
                let expected = runbook_dir.join("checks").join(format!("{runbook}.md"));
                (!expected.is_file()).then(|| MissingRunbook {
                    file: c.path.clone(),
                    line: r.line,
                    contract: c.id.clone(),
                    requirement: r.id.clone(),
                    runbook: runbook.clone(),
                    expected,
                })
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(MissingRunbooks(missing))
        }
    }
}

/// The index of the highest version among `ids` that answers `request`.
fn highest<'a>(ids: impl Iterator<Item = (usize, &'a ContractId)>, request: &ContractRef) -> Option<usize> {
    let req = request.req();
    ids.filter(|(_, id)| id.name == request.name && req.matches(&id.version))
        .max_by(|a, b| a.1.version.cmp(&b.1.version))
        .map(|(i, _)| i)
}

/// The contracts from `from` to `to` along resolved `extends` (both included), shortest first.
fn path_between(entries: &[Entry], from: usize, to: usize) -> Option<Vec<usize>> {
    let mut parent: HashMap<usize, usize> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    let mut seen = HashSet::from([from]);
    while let Some(n) = queue.pop_front() {
        if n == to {
            let mut path = vec![n];
            let mut cur = n;
            while let Some(&p) = parent.get(&cur) {
                path.push(p);
                cur = p;
            }
            path.reverse();
            return Some(path);
        }
        for &t in entries[n].resolved.iter().flatten() {
            if seen.insert(t) {
                parent.insert(t, n);
                queue.push_back(t);
            }
        }
    }
    None
}

/// Requirement ids of contract `i` that another contract along its `extends` also declares. Each is
/// reported once, where contract `i` brings the two together: at its own requirement, or at the second
/// `extends` entry that brings the id (a clash within one extended contract is that contract's problem).
fn id_collisions(entries: &[Entry], i: usize) -> Vec<Diag> {
    let mut diags = Vec::new();
    let own = &entries[i].parsed;
    // id -> (the extends entry that brought it, or None for the contract's own; declaring contract)
    let mut seen: HashMap<&str, (Option<usize>, usize)> = HashMap::new();
    let mut own_spans: HashMap<&str, &Span> = HashMap::new();
    for (r, span) in own.contract.requirements.iter().zip(&own.requirement_ids) {
        seen.insert(&r.id, (None, i));
        own_spans.insert(&r.id, span);
    }
    let mut visited = HashSet::from([i]);
    for (k, target) in entries[i].resolved.iter().enumerate() {
        let Some(t) = *target else { continue };
        let mut todo = vec![t];
        while let Some(n) = todo.pop() {
            if !visited.insert(n) {
                continue;
            }
            let c = &entries[n].parsed.contract;
            for r in &c.requirements {
                match seen.get(r.id.as_str()) {
                    None => {
                        seen.insert(&r.id, (Some(k), n));
                    }
                    Some(&(None, _)) => diags.push(
                        Diag::new(
                            own_spans[r.id.as_str()].clone(),
                            format!(
                                "requirement `{}` is also declared by {}, which this contract extends",
                                r.id, c.id
                            ),
                        )
                        .with_help(
                            "requirement ids are unique across a contract and the contracts it extends",
                        ),
                    ),
                    Some(&(Some(first_k), first)) if first_k != k => {
                        let e = &own.contract.extends[k];
                        diags.push(
                            Diag::new(
                                own.extends[k].clone(),
                                format!(
                                    "`{}@{}` brings requirement `{}` of {}, which {} (through `{}@{}`) also declares",
                                    e.name,
                                    e.req,
                                    r.id,
                                    c.id,
                                    entries[first].parsed.contract.id,
                                    own.contract.extends[first_k].name,
                                    own.contract.extends[first_k].req,
                                ),
                            )
                            .with_help("requirement ids are unique across a contract and the contracts it extends"),
                        );
                    }
                    Some(_) => {}
                }
            }
            todo.extend(entries[n].resolved.iter().rev().flatten());
        }
    }
    diags
}
