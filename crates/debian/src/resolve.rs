//! Dependency resolution: from parsed Packages indices and a request (variant, include, exclude) to the
//! exact set of packages to install, with an install order. Pure logic, no I/O.
//!
//! The algorithm follows what apt does for `mmdebstrap`, so that variant `minbase` gives the same set:
//!
//! 1. The seeds are marked first: the include list, then (unless excluded) every package with
//!    `Essential: yes`, the variant's priorities (`required` for minbase; also `important` and
//!    `standard` for standard) and `apt`. Each is taken at its highest version.
//! 2. The `Pre-Depends` then `Depends` of every seed are satisfied depth-first, in name order. A group
//!    that a marked package already satisfies (directly or through `Provides`) needs nothing. Otherwise
//!    the alternatives are tried in order: a real package at its highest version that fits the constraint,
//!    then the providers of that name (Essential first, then by priority and name). A candidate that
//!    is excluded, conflicts with a marked package, needs a second version of a marked package, or whose
//!    own dependencies can't be met is skipped, and what its attempt marked is undone.
//! 3. The final set is checked for `Conflicts`/`Breaks` among its members.
//!
//! Everything iterates in a fixed order, so the same indices and request always give the same result.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt,
};

use thiserror::Error;

use crate::{
    packages::{MultiArch, Package, Priority},
    relation::{Alternatives, Constraint, Op, Relation},
    version::Version,
};

/// Which base set to install (mmdebstrap's variants of the same name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// `Essential: yes`, `Priority: required` and `apt`, with their dependencies.
    #[default]
    Minbase,
    /// Minbase plus `Priority: important` and `standard`.
    Standard,
    /// Only the include list, with its dependencies.
    Custom,
}

/// What to install.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    pub variant: Variant,
    /// Extra packages: `name`, or `name=version` for an exact version. A virtual name picks a provider.
    pub include: Vec<String>,
    /// Packages never to install; if something needs one, resolution fails.
    pub exclude: Vec<String>,
}

/// Which field of a package asked for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepField {
    PreDepends,
    Depends,
}

impl DepField {
    fn verb(self) -> &'static str {
        match self {
            DepField::PreDepends => "pre-depends on",
            DepField::Depends => "depends on",
        }
    }
}

/// Why a package is wanted.
#[derive(Debug, Clone, PartialEq)]
pub enum Wanted {
    /// It is in the request's include list.
    Included,
    /// `Essential: yes`.
    Essential,
    /// Its priority belongs to the variant.
    Priority(Priority),
    /// The variant names it (`apt`).
    VariantMember,
    /// Another package's `Depends`/`Pre-Depends` names it.
    Dependency { package: String, version: Version, field: DepField, requirement: String },
}

impl fmt::Display for Wanted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wanted::Included => f.write_str("it is in the include list"),
            Wanted::Essential => f.write_str("it is Essential"),
            Wanted::Priority(p) => write!(f, "it has Priority: {p}"),
            Wanted::VariantMember => f.write_str("the variant includes it"),
            Wanted::Dependency { package, version, field, requirement } => {
                write!(f, "{package} {version} {} {requirement}", field.verb())
            }
        }
    }
}

/// Why one way of satisfying a requirement did not work.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// No package has this name and none provides it.
    Missing { name: String },
    /// The request excludes it.
    Excluded { name: String },
    /// The package exists, but no version fits.
    NoFittingVersion { name: String, wanted: String, available: Vec<Version> },
    /// Only providers exist, and none provides a fitting version.
    NoFittingProvider { name: String, wanted: String, providers: Vec<String> },
    /// The architecture qualifier can't be met (e.g. `:any` on a package that is not `Multi-Arch: allowed`).
    Architecture { name: String, qualifier: String },
    /// Another version of the package is already selected.
    OtherVersionSelected { candidate: String, selected: String },
    /// The candidate and a selected package conflict.
    Conflict { candidate: String, other: String, relation: String },
    /// The candidate was tried, but its own dependencies failed.
    DependencyFailed { candidate: String, cause: Box<Unsatisfiable> },
    /// Resolution gave up trying further candidates (too many attempts).
    GaveUp,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Missing { name } => {
                write!(f, "{name} is not in the repository and nothing provides it")
            }
            Rejection::Excluded { name } => write!(f, "{name} is excluded by the request"),
            Rejection::NoFittingVersion { name, available, .. } => {
                let list: Vec<String> = available.iter().map(Version::to_string).collect();
                write!(f, "the repository has only {name} {}", list.join(", "))
            }
            Rejection::NoFittingProvider { name, wanted, providers } => {
                write!(f, "{name} is virtual and no provider fits {wanted}: {}", providers.join(", "))
            }
            Rejection::Architecture { name, qualifier } => {
                write!(f, "no package of the native architecture matches {name}:{qualifier}")
            }
            Rejection::OtherVersionSelected { candidate, selected } => {
                write!(f, "{candidate} can't be used because {selected} is already selected")
            }
            Rejection::Conflict { candidate, other, relation } => {
                write!(f, "{candidate} conflicts with the selected {other} ({relation})")
            }
            Rejection::DependencyFailed { candidate, cause } => {
                write!(f, "{candidate} can't be installed: {}", cause.summary())
            }
            Rejection::GaveUp => f.write_str("resolution stopped trying more alternatives"),
        }
    }
}

/// A requirement nothing fits, with the chain of packages that led to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsatisfiable {
    /// The requirement as written, e.g. `libssl3 (>= 3.0.9)` or `a | b`.
    pub requirement: String,
    /// Why it is needed, innermost first: the package that asks for it, then why that package is
    /// wanted, and so on up to the request.
    pub wanted_by: Vec<Wanted>,
    /// Why each way of meeting it failed, in the order they were tried.
    pub rejections: Vec<Rejection>,
}

impl Unsatisfiable {
    /// The innermost failure when there was only one way to go: following single
    /// [`Rejection::DependencyFailed`] links down to where the chain actually broke.
    pub fn root_cause(&self) -> &Unsatisfiable {
        let mut at = self;
        while let [Rejection::DependencyFailed { cause, .. }] = at.rejections.as_slice() {
            at = cause;
        }
        at
    }

    /// One line: who wants what, and why nothing fits.
    pub fn summary(&self) -> String {
        let reasons: Vec<String> = self.rejections.iter().map(ToString::to_string).collect();
        let reasons = reasons.join("; ");
        match self.wanted_by.first() {
            Some(w @ Wanted::Dependency { .. }) => format!("{w}, but {reasons}"),
            Some(w) => format!("{} is wanted because {w}, but {reasons}", self.requirement),
            None => format!("{} can't be installed: {reasons}", self.requirement),
        }
    }
}

impl fmt::Display for Unsatisfiable {
    /// The root cause's summary, then the chain that led to it, one line each:
    /// `X 1.0 is wanted because Y 2.0 depends on X`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cause = self.root_cause();
        f.write_str(&cause.summary())?;
        for pair in cause.wanted_by.windows(2) {
            if let Wanted::Dependency { package, version, .. } = &pair[0] {
                write!(f, "\n  {package} {version} is wanted because {}", pair[1])?;
            }
        }
        Ok(())
    }
}

/// Two selected packages that must not be installed together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictPair {
    /// `name version` of the package declaring the relation.
    pub package: String,
    /// `name version` of the package it conflicts with.
    pub other: String,
    /// `Conflicts: x (<< 2)` or `Breaks: ...`.
    pub relation: String,
}

impl fmt::Display for ConflictPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} conflicts with {} ({})", self.package, self.other, self.relation)
    }
}

/// Why a request can't be resolved.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ResolveError {
    #[error("unsatisfiable: {0}")]
    Unsatisfiable(Box<Unsatisfiable>),
    #[error("conflicting packages selected: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Conflicts(Vec<ConflictPair>),
    #[error("invalid include entry {entry:?}: {reason}")]
    BadInclude { entry: String, reason: String },
}

/// The packages of some indices, for one native architecture: what the resolver chooses from.
#[derive(Debug, Clone)]
pub struct Universe {
    arch: String,
    packages: Vec<Package>,
    /// Package indices by name, highest version first.
    by_name: HashMap<String, Vec<usize>>,
    /// Indices of packages that provide a name, in preference order.
    providers: HashMap<String, Vec<usize>>,
}

impl Universe {
    /// Collects packages for `arch` (packages of other architectures are left out, `all` is kept). When
    /// the same name, version and architecture come twice (several indices), the first one is kept.
    pub fn new(arch: &str, packages: impl IntoIterator<Item = Package>) -> Self {
        let mut seen = HashSet::new();
        let packages: Vec<Package> = packages
            .into_iter()
            .filter(|p| p.architecture == arch || p.architecture == "all")
            .filter(|p| seen.insert((p.name.clone(), p.version.to_string(), p.architecture.clone())))
            .collect();
        let mut by_name: HashMap<String, Vec<usize>> = HashMap::new();
        let mut providers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, p) in packages.iter().enumerate() {
            by_name.entry(p.name.clone()).or_default().push(i);
            for prov in &p.provides {
                providers.entry(prov.name.clone()).or_default().push(i);
            }
        }
        for list in by_name.values_mut() {
            list.sort_by(|&a, &b| packages[b].version.cmp(&packages[a].version).then(a.cmp(&b)));
        }
        for list in providers.values_mut() {
            list.sort_by(|&a, &b| {
                let (pa, pb) = (&packages[a], &packages[b]);
                pb.essential
                    .cmp(&pa.essential)
                    .then_with(|| rank(pa.priority).cmp(&rank(pb.priority)))
                    .then_with(|| pa.name.cmp(&pb.name))
                    .then_with(|| pb.version.cmp(&pa.version))
                    .then(a.cmp(&b))
            });
            list.dedup();
        }
        Self { arch: arch.to_owned(), packages, by_name, providers }
    }

    pub fn arch(&self) -> &str {
        &self.arch
    }

    pub fn packages(&self) -> &[Package] {
        &self.packages
    }

    /// All versions of a package, highest first.
    pub fn versions(&self, name: &str) -> impl Iterator<Item = &Package> {
        self.by_name.get(name).into_iter().flatten().map(|&i| &self.packages[i])
    }

    /// The highest version of a package.
    pub fn candidate(&self, name: &str) -> Option<&Package> {
        self.versions(name).next()
    }

    /// Resolves a request; see the module documentation.
    pub fn resolve(&self, request: &Request) -> Result<Resolution, ResolveError> {
        Resolver::new(self, request).run()
    }
}

fn rank(p: Option<Priority>) -> u8 {
    match p {
        Some(Priority::Required) => 0,
        Some(Priority::Important) => 1,
        Some(Priority::Standard) => 2,
        Some(Priority::Optional) => 3,
        Some(Priority::Extra) => 4,
        None => 5,
    }
}

/// The result of a resolution.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolution {
    /// The packages to install, sorted by name.
    pub packages: Vec<Package>,
    /// Package names in an order to unpack and configure them: dependencies before the packages that
    /// need them where the graph allows, and within a dependency cycle `Pre-Depends` first.
    pub install_order: Vec<String>,
}

/// Upper bound on candidate attempts, so a pathological request fails instead of searching forever.
const MAX_ATTEMPTS: usize = 100_000;

struct Resolver<'u> {
    u: &'u Universe,
    request: &'u Request,
    excluded: HashSet<&'u str>,
    /// Selected package indices, in selection order (for undoing).
    selected: Vec<usize>,
    by_name: HashMap<&'u str, usize>,
    /// The chain of reasons down to the package being processed (outermost first).
    stack: Vec<Wanted>,
    attempts: usize,
}

impl<'u> Resolver<'u> {
    fn new(u: &'u Universe, request: &'u Request) -> Self {
        Self {
            u,
            request,
            excluded: request.exclude.iter().map(String::as_str).collect(),
            selected: Vec::new(),
            by_name: HashMap::new(),
            stack: Vec::new(),
            attempts: 0,
        }
    }

    fn pkg(&self, i: usize) -> &'u Package {
        &self.u.packages[i]
    }

    fn select(&mut self, i: usize) {
        self.selected.push(i);
        self.by_name.insert(&self.u.packages[i].name, i);
    }

    fn undo_to(&mut self, mark: usize) {
        for i in self.selected.drain(mark..) {
            self.by_name.remove(self.u.packages[i].name.as_str());
        }
    }

    fn run(mut self) -> Result<Resolution, ResolveError> {
        // Phase 1: mark the seeds. Includes first (they may pin a version), then the variant's set.
        let mut seeds: Vec<(usize, Wanted)> = Vec::new();
        let mut virtual_includes = Vec::new();
        for entry in &self.request.include {
            let (name, version) = match entry.split_once('=') {
                Some((n, v)) => {
                    let v = Version::parse(v).map_err(|e| ResolveError::BadInclude {
                        entry: entry.clone(),
                        reason: e.to_string(),
                    })?;
                    (n.trim(), Some(v))
                }
                None => (entry.trim(), None),
            };
            if name.is_empty() {
                return Err(ResolveError::BadInclude { entry: entry.clone(), reason: "empty name".into() });
            }
            let relation = Relation {
                name: name.to_owned(),
                arch_qualifier: None,
                constraint: version.map(|version| Constraint { op: Op::Eq, version }),
                arches: Vec::new(),
                profiles: Vec::new(),
            };
            if self.excluded.contains(name) {
                return Err(unsat(
                    &relation.to_string(),
                    vec![Wanted::Included],
                    vec![Rejection::Excluded { name: name.to_owned() }],
                ));
            }
            if self.u.by_name.contains_key(name) {
                let found = self.u.by_name[name]
                    .iter()
                    .copied()
                    .find(|&i| relation.constraint.as_ref().is_none_or(|c| c.matches(&self.pkg(i).version)));
                match found {
                    Some(i) if !self.by_name.contains_key(name) => {
                        self.select(i);
                        seeds.push((i, Wanted::Included));
                    }
                    Some(i) if self.by_name[name] == i => {}
                    Some(i) => {
                        return Err(unsat(
                            &relation.to_string(),
                            vec![Wanted::Included],
                            vec![Rejection::OtherVersionSelected {
                                candidate: self.pkg(i).id(),
                                selected: self.pkg(self.by_name[name]).id(),
                            }],
                        ))
                    }
                    None => {
                        return Err(unsat(
                            &relation.to_string(),
                            vec![Wanted::Included],
                            vec![self.no_fitting_version(&relation)],
                        ))
                    }
                }
            } else {
                virtual_includes.push(relation);
            }
        }
        let variant = self.request.variant;
        let mut names: Vec<&'u String> = self.u.by_name.keys().collect();
        names.sort();
        for name in names {
            let i = self.u.by_name[name][0];
            let p = self.pkg(i);
            let why = if variant == Variant::Custom {
                None
            } else if p.essential {
                Some(Wanted::Essential)
            } else if p.name == "apt" {
                Some(Wanted::VariantMember)
            } else {
                match (variant, p.priority) {
                    (_, Some(Priority::Required)) => Some(Wanted::Priority(Priority::Required)),
                    (Variant::Standard, Some(pr @ (Priority::Important | Priority::Standard))) => {
                        Some(Wanted::Priority(pr))
                    }
                    _ => None,
                }
            };
            if let Some(why) = why {
                if !self.excluded.contains(name.as_str()) && !self.by_name.contains_key(name.as_str()) {
                    self.select(i);
                    seeds.push((i, why));
                }
            }
        }
        if matches!(variant, Variant::Minbase | Variant::Standard)
            && !self.by_name.contains_key("apt")
            && !self.excluded.contains("apt")
        {
            let relation = simple_relation("apt");
            return Err(unsat("apt", vec![Wanted::VariantMember], vec![self.no_fitting_version(&relation)]));
        }

        // Phase 2: satisfy every seed's dependencies, then the virtual includes.
        seeds.sort_by(|a, b| self.pkg(a.0).name.cmp(&self.pkg(b.0).name));
        for (i, why) in seeds {
            self.stack.push(why);
            let result = self.process(i);
            self.stack.pop();
            result.map_err(|e| ResolveError::Unsatisfiable(Box::new(e)))?;
        }
        for relation in virtual_includes {
            self.stack.push(Wanted::Included);
            let group = Alternatives(vec![relation]);
            let result = self.satisfy(&group);
            self.stack.pop();
            result.map_err(|e| ResolveError::Unsatisfiable(Box::new(e)))?;
        }

        // Phase 3: the result.
        let conflicts = self.conflicts();
        if !conflicts.is_empty() {
            return Err(ResolveError::Conflicts(conflicts));
        }
        let mut packages: Vec<Package> = self.selected.iter().map(|&i| self.pkg(i).clone()).collect();
        packages.sort_by(|a, b| a.name.cmp(&b.name));
        let install_order = self.install_order();
        Ok(Resolution { packages, install_order })
    }

    /// Satisfies the `Pre-Depends` and `Depends` of a selected package (the stack says why it is wanted).
    fn process(&mut self, i: usize) -> Result<(), Unsatisfiable> {
        let p = self.pkg(i);
        for (field, groups) in [(DepField::PreDepends, &p.pre_depends), (DepField::Depends, &p.depends)] {
            for group in groups {
                let Some(group) = self.applicable(group) else {
                    continue;
                };
                self.stack.push(Wanted::Dependency {
                    package: p.name.clone(),
                    version: p.version.clone(),
                    field,
                    requirement: group.to_string(),
                });
                let result = self.satisfy(&group);
                self.stack.pop();
                result?;
            }
        }
        Ok(())
    }

    /// The alternatives of a group that apply to the native architecture (`None` if none do).
    fn applicable(&self, group: &Alternatives) -> Option<Alternatives> {
        let alts: Vec<Relation> = group.0.iter().filter(|r| r.applies_to(&self.u.arch)).cloned().collect();
        (!alts.is_empty()).then_some(Alternatives(alts))
    }

    /// Whether a package (of the universe) matches a relation's architecture qualifier.
    fn arch_ok(&self, p: &Package, relation: &Relation) -> bool {
        match relation.arch_qualifier.as_deref() {
            None | Some("native") => p.architecture == self.u.arch || p.architecture == "all",
            Some("any") => p.multi_arch == MultiArch::Allowed,
            Some(arch) => p.architecture == arch,
        }
    }

    /// Whether package `i` provides `relation`'s name in a way that fits its constraint.
    fn provides_fitting(&self, i: usize, relation: &Relation) -> bool {
        self.pkg(i).provides.iter().any(|prov| {
            prov.name == relation.name
                && match (&relation.constraint, &prov.version) {
                    (None, _) => true,
                    (Some(c), Some(v)) => c.matches(v),
                    (Some(_), None) => false,
                }
        })
    }

    /// The selected package that satisfies a relation, if any.
    fn satisfied_by(&self, relation: &Relation) -> Option<usize> {
        if let Some(&i) = self.by_name.get(relation.name.as_str()) {
            let p = self.pkg(i);
            if self.arch_ok(p, relation) && relation.constraint.as_ref().is_none_or(|c| c.matches(&p.version))
            {
                return Some(i);
            }
        }
        self.u.providers.get(&relation.name).into_iter().flatten().copied().find(|&i| {
            self.by_name.get(self.pkg(i).name.as_str()) == Some(&i) && self.provides_fitting(i, relation)
        })
    }

    fn satisfy(&mut self, group: &Alternatives) -> Result<(), Unsatisfiable> {
        if group.0.iter().any(|r| self.satisfied_by(r).is_some()) {
            return Ok(());
        }
        let mut rejections = Vec::new();
        for relation in &group.0 {
            let (candidates, mut rejected) = self.candidates(relation);
            rejections.append(&mut rejected);
            for i in candidates {
                match self.try_candidate(i) {
                    Ok(()) => return Ok(()),
                    Err(r) => rejections.push(r),
                }
                if self.attempts > MAX_ATTEMPTS {
                    rejections.push(Rejection::GaveUp);
                    return Err(self.failure(group, rejections));
                }
            }
        }
        Err(self.failure(group, rejections))
    }

    fn failure(&self, group: &Alternatives, rejections: Vec<Rejection>) -> Unsatisfiable {
        let wanted_by = self.stack.iter().rev().cloned().collect();
        Unsatisfiable { requirement: group.to_string(), wanted_by, rejections }
    }

    /// The packages that could satisfy a relation, in preference order, and why others can't.
    fn candidates(&self, relation: &Relation) -> (Vec<usize>, Vec<Rejection>) {
        let mut out = Vec::new();
        let mut rejected = Vec::new();
        let real = self.u.by_name.get(&relation.name);
        if let Some(list) = real {
            if self.excluded.contains(relation.name.as_str()) {
                rejected.push(Rejection::Excluded { name: relation.name.clone() });
            } else {
                let arch_fit: Vec<usize> =
                    list.iter().copied().filter(|&i| self.arch_ok(self.pkg(i), relation)).collect();
                let fit: Vec<usize> = arch_fit
                    .iter()
                    .copied()
                    .filter(|&i| relation.constraint.as_ref().is_none_or(|c| c.matches(&self.pkg(i).version)))
                    .collect();
                if arch_fit.is_empty() {
                    rejected.push(Rejection::Architecture {
                        name: relation.name.clone(),
                        qualifier: relation.arch_qualifier.clone().unwrap_or_default(),
                    });
                } else if fit.is_empty() {
                    rejected.push(self.no_fitting_version(relation));
                }
                out.extend(fit);
            }
        }
        let providers = self.u.providers.get(&relation.name);
        if let Some(list) = providers {
            let mut fit = Vec::new();
            for &i in list {
                if self.excluded.contains(self.pkg(i).name.as_str()) {
                    continue;
                }
                if self.provides_fitting(i, relation) {
                    fit.push(i);
                }
            }
            if fit.is_empty() && real.is_none() {
                let excluded: Vec<&Package> = list
                    .iter()
                    .map(|&i| self.pkg(i))
                    .filter(|p| self.excluded.contains(p.name.as_str()))
                    .collect();
                if excluded.len() == list.len() {
                    rejected.extend(excluded.iter().map(|p| Rejection::Excluded { name: p.name.clone() }));
                } else {
                    rejected.push(Rejection::NoFittingProvider {
                        name: relation.name.clone(),
                        wanted: relation.to_string(),
                        providers: list.iter().map(|&i| self.provide_text(i, &relation.name)).collect(),
                    });
                }
            }
            out.extend(fit);
        }
        if real.is_none() && providers.is_none() {
            rejected.push(Rejection::Missing { name: relation.name.clone() });
        }
        (out, rejected)
    }

    fn provide_text(&self, i: usize, name: &str) -> String {
        let p = self.pkg(i);
        let version = p.provides.iter().find(|pr| pr.name == name).and_then(|pr| pr.version.as_ref());
        match version {
            Some(v) => format!("{} provides {name} (= {v})", p.id()),
            None => format!("{} provides {name} without a version", p.id()),
        }
    }

    fn no_fitting_version(&self, relation: &Relation) -> Rejection {
        match self.u.by_name.get(&relation.name) {
            None => Rejection::Missing { name: relation.name.clone() },
            Some(list) => {
                let mut available: Vec<Version> = list.iter().map(|&i| self.pkg(i).version.clone()).collect();
                available.sort();
                Rejection::NoFittingVersion {
                    name: relation.name.clone(),
                    wanted: relation.to_string(),
                    available,
                }
            }
        }
    }

    /// Marks candidate `i` and satisfies its dependencies; on failure undoes everything it marked.
    fn try_candidate(&mut self, i: usize) -> Result<(), Rejection> {
        let p = self.pkg(i);
        if let Some(&other) = self.by_name.get(p.name.as_str()) {
            return Err(Rejection::OtherVersionSelected {
                candidate: p.id(),
                selected: self.pkg(other).id(),
            });
        }
        if let Some(c) = self.selected.iter().find_map(|&s| self.conflict_between(i, s)) {
            return Err(Rejection::Conflict {
                candidate: p.id(),
                other: c.other_of(self, i),
                relation: c.relation,
            });
        }
        self.attempts += 1;
        let mark = self.selected.len();
        self.select(i);
        match self.process(i) {
            Ok(()) => Ok(()),
            Err(cause) => {
                self.undo_to(mark);
                Err(Rejection::DependencyFailed { candidate: p.id(), cause: Box::new(cause) })
            }
        }
    }

    /// Whether `a`'s Conflicts/Breaks name `b` (the version and provides considered).
    fn declares_conflict(&self, a: usize, b: usize) -> Option<String> {
        if a == b {
            return None;
        }
        let (pa, pb) = (self.pkg(a), self.pkg(b));
        if pa.name == pb.name {
            return None;
        }
        for (field, list) in [("Conflicts", &pa.conflicts), ("Breaks", &pa.breaks)] {
            for r in list {
                let direct =
                    r.name == pb.name && r.constraint.as_ref().is_none_or(|c| c.matches(&pb.version));
                let provided = pb.provides.iter().any(|prov| {
                    prov.name == r.name
                        && match (&r.constraint, &prov.version) {
                            (None, _) => true,
                            (Some(c), Some(v)) => c.matches(v),
                            (Some(_), None) => false,
                        }
                });
                if direct || provided {
                    return Some(format!("{field}: {r}"));
                }
            }
        }
        None
    }

    fn conflict_between(&self, a: usize, b: usize) -> Option<Found> {
        if let Some(relation) = self.declares_conflict(a, b) {
            return Some(Found { declarer: a, target: b, relation });
        }
        self.declares_conflict(b, a).map(|relation| Found { declarer: b, target: a, relation })
    }

    fn conflicts(&self) -> Vec<ConflictPair> {
        let mut sorted = self.selected.clone();
        sorted.sort_by(|&a, &b| self.pkg(a).name.cmp(&self.pkg(b).name));
        let mut out = Vec::new();
        for &a in &sorted {
            for &b in &sorted {
                if let Some(relation) = self.declares_conflict(a, b) {
                    out.push(ConflictPair { package: self.pkg(a).id(), other: self.pkg(b).id(), relation });
                }
            }
        }
        out
    }

    /// Dependencies before dependents: the strongly connected components of the dependency graph in
    /// topological order (Tarjan's algorithm emits them that way), each cycle ordered by its
    /// `Pre-Depends` edges and then by name.
    fn install_order(&self) -> Vec<String> {
        let mut nodes = self.selected.clone();
        nodes.sort_by(|&a, &b| self.pkg(a).name.cmp(&self.pkg(b).name));
        let index: HashMap<usize, usize> = nodes.iter().enumerate().map(|(n, &i)| (i, n)).collect();
        // edges[n] = (target node, is pre-depends)
        let edges: Vec<Vec<(usize, bool)>> = nodes
            .iter()
            .map(|&i| {
                let p = self.pkg(i);
                let mut out = Vec::new();
                for (pre, groups) in [(true, &p.pre_depends), (false, &p.depends)] {
                    for group in groups {
                        let target = group
                            .0
                            .iter()
                            .filter(|r| r.applies_to(&self.u.arch))
                            .find_map(|r| self.satisfied_by(r));
                        if let Some(t) = target.and_then(|t| index.get(&t)) {
                            if *t != index[&i] {
                                out.push((*t, pre));
                            }
                        }
                    }
                }
                out
            })
            .collect();
        let mut tarjan = Tarjan::new(nodes.len());
        for n in 0..nodes.len() {
            if tarjan.index[n].is_none() {
                tarjan.visit(n, &edges);
            }
        }
        let mut order = Vec::with_capacity(nodes.len());
        for component in tarjan.components {
            order
                .extend(order_cycle(&component, &edges).into_iter().map(|n| self.pkg(nodes[n]).name.clone()));
        }
        order
    }
}

struct Found {
    declarer: usize,
    target: usize,
    relation: String,
}

impl Found {
    fn other_of(&self, r: &Resolver<'_>, candidate: usize) -> String {
        let other = if self.declarer == candidate { self.target } else { self.declarer };
        r.pkg(other).id()
    }
}

fn simple_relation(name: &str) -> Relation {
    Relation {
        name: name.to_owned(),
        arch_qualifier: None,
        constraint: None,
        arches: Vec::new(),
        profiles: Vec::new(),
    }
}

fn unsat(requirement: &str, wanted_by: Vec<Wanted>, rejections: Vec<Rejection>) -> ResolveError {
    ResolveError::Unsatisfiable(Box::new(Unsatisfiable {
        requirement: requirement.to_owned(),
        wanted_by,
        rejections,
    }))
}

/// Orders the members of one strongly connected component: Kahn's algorithm over its Pre-Depends
/// edges (a package after what it pre-depends on), smallest name index first; members left in a
/// Pre-Depends cycle follow in name order.
fn order_cycle(component: &[usize], edges: &[Vec<(usize, bool)>]) -> Vec<usize> {
    if component.len() == 1 {
        return component.to_vec();
    }
    let members: HashSet<usize> = component.iter().copied().collect();
    // pending[n] = how many pre-dependencies of n inside the component are not placed yet
    let mut pending: BTreeMap<usize, usize> = component.iter().map(|&n| (n, 0)).collect();
    for &n in component {
        let count = edges[n]
            .iter()
            .filter(|(t, pre)| *pre && members.contains(t))
            .map(|(t, _)| t)
            .collect::<HashSet<_>>()
            .len();
        pending.insert(n, count);
    }
    let mut order = Vec::with_capacity(component.len());
    let mut placed = HashSet::new();
    while order.len() < component.len() {
        let next = pending
            .iter()
            .find(|(n, count)| **count == 0 && !placed.contains(*n))
            .map(|(n, _)| *n)
            .or_else(|| pending.keys().find(|n| !placed.contains(*n)).copied());
        let Some(n) = next else { break };
        placed.insert(n);
        order.push(n);
        for &m in component {
            if !placed.contains(&m) && edges[m].iter().any(|&(t, pre)| pre && t == n) {
                if let Some(c) = pending.get_mut(&m) {
                    *c = c.saturating_sub(1);
                }
            }
        }
    }
    order
}

/// Tarjan's strongly connected components; `components` come out in reverse topological order of the
/// edge direction, i.e. dependencies first.
struct Tarjan {
    next: usize,
    index: Vec<Option<usize>>,
    low: Vec<usize>,
    on_stack: Vec<bool>,
    stack: Vec<usize>,
    components: Vec<Vec<usize>>,
}

impl Tarjan {
    fn new(n: usize) -> Self {
        Self {
            next: 0,
            index: vec![None; n],
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            components: Vec::new(),
        }
    }

    fn visit(&mut self, v: usize, edges: &[Vec<(usize, bool)>]) {
        self.index[v] = Some(self.next);
        self.low[v] = self.next;
        self.next += 1;
        self.stack.push(v);
        self.on_stack[v] = true;
        for &(w, _) in &edges[v] {
            match self.index[w] {
                None => {
                    self.visit(w, edges);
                    self.low[v] = self.low[v].min(self.low[w]);
                }
                Some(iw) if self.on_stack[w] => self.low[v] = self.low[v].min(iw),
                Some(_) => {}
            }
        }
        if Some(self.low[v]) == self.index[v] {
            let mut component = Vec::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack[w] = false;
                component.push(w);
                if w == v {
                    break;
                }
            }
            component.sort_unstable();
            self.components.push(component);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::packages::parse_packages;

    /// A Packages record: name, version, extra fields.
    fn rec(name: &str, version: &str, fields: &[(&str, &str)]) -> String {
        let mut s = format!("Package: {name}\nVersion: {version}\nArchitecture: amd64\n");
        for (k, v) in fields {
            s.push_str(&format!("{k}: {v}\n"));
        }
        s.push_str(&format!("Filename: pool/{name}_{version}.deb\nSize: 1\nSHA256: {}\n\n", "0".repeat(64)));
        s
    }

    fn universe(records: &[String]) -> Universe {
        let text: String = records.concat();
        Universe::new("amd64", parse_packages(&text, &Arc::from("http://127.0.0.1:1")).unwrap())
    }

    fn names(r: &Resolution) -> Vec<String> {
        r.packages.iter().map(|p| format!("{}={}", p.name, p.version)).collect()
    }

    fn custom(include: &[&str]) -> Request {
        Request {
            variant: Variant::Custom,
            include: include.iter().map(|s| s.to_string()).collect(),
            exclude: vec![],
        }
    }

    fn unsat_of(e: ResolveError) -> Unsatisfiable {
        match e {
            ResolveError::Unsatisfiable(u) => *u,
            other => panic!("expected unsatisfiable, got {other}"),
        }
    }

    fn base() -> Vec<String> {
        vec![
            rec("base-files", "13", &[("Essential", "yes"), ("Priority", "required")]),
            rec("libc6", "2.36-9", &[("Priority", "optional")]),
            rec(
                "dash",
                "0.5",
                &[("Essential", "yes"), ("Priority", "required"), ("Pre-Depends", "libc6 (>= 2.34)")],
            ),
            rec("mawk", "1.3", &[("Priority", "required"), ("Provides", "awk"), ("Depends", "libc6")]),
            rec("gawk", "5.2", &[("Priority", "optional"), ("Provides", "awk")]),
            rec("apt", "2.6", &[("Priority", "important"), ("Depends", "libc6, gpgv | gpgv2")]),
            rec("gpgv", "2.2", &[("Priority", "optional")]),
            rec("gpgv2", "2.2", &[("Priority", "optional")]),
            rec("less", "590", &[("Priority", "important")]),
            rec("man-db", "2.11", &[("Priority", "standard"), ("Depends", "awk")]),
            rec("vim", "9.0", &[("Priority", "optional")]),
        ]
    }

    #[test]
    fn minbase_is_essential_required_and_apt_with_dependencies() {
        let r = universe(&base()).resolve(&Request::default()).unwrap();
        assert_eq!(
            names(&r),
            ["apt=2.6", "base-files=13", "dash=0.5", "gpgv=2.2", "libc6=2.36-9", "mawk=1.3"]
        );
    }

    #[test]
    fn standard_adds_important_and_standard_and_prefers_selected_providers() {
        let req = Request { variant: Variant::Standard, ..Request::default() };
        let r = universe(&base()).resolve(&req).unwrap();
        // man-db needs awk: mawk is already selected, so gawk is not added.
        assert_eq!(
            names(&r),
            [
                "apt=2.6",
                "base-files=13",
                "dash=0.5",
                "gpgv=2.2",
                "less=590",
                "libc6=2.36-9",
                "man-db=2.11",
                "mawk=1.3"
            ]
        );
    }

    #[test]
    fn alternatives_take_the_first_satisfiable_or_an_already_selected_one() {
        let u = universe(&[
            rec("app", "1", &[("Depends", "missing | old (>= 2) | good | other")]),
            rec("old", "1", &[]),
            rec("good", "1", &[]),
            rec("other", "1", &[]),
            rec("app2", "1", &[("Depends", "good2 | other")]),
            rec("good2", "1", &[]),
        ]);
        assert_eq!(names(&u.resolve(&custom(&["app"])).unwrap()), ["app=1", "good=1"]);
        // `other` is wanted anyway, so it satisfies app2's group rather than good2.
        assert_eq!(names(&u.resolve(&custom(&["app2", "other"])).unwrap()), ["app2=1", "other=1"]);
    }

    #[test]
    fn a_candidate_whose_dependencies_fail_is_dropped_for_the_next() {
        let u = universe(&[
            rec("app", "1", &[("Depends", "first | second")]),
            rec("first", "1", &[("Depends", "helper")]),
            rec("helper", "1", &[("Depends", "nonexistent")]),
            rec("second", "1", &[]),
        ]);
        let r = u.resolve(&custom(&["app"])).unwrap();
        assert_eq!(names(&r), ["app=1", "second=1"]);
    }

    #[test]
    fn versions_constraints_and_the_highest_fitting_version() {
        let u = universe(&[
            rec("lib", "1.0", &[]),
            rec("lib", "2.0~rc1", &[]),
            rec("lib", "2.0", &[]),
            rec("new", "1", &[("Depends", "lib (>= 1.5)")]),
            rec("pinned", "1", &[("Depends", "lib (<< 2.0)")]),
            rec("exact", "1", &[("Depends", "lib (= 2.0~rc1)")]),
        ]);
        assert_eq!(names(&u.resolve(&custom(&["new"])).unwrap()), ["lib=2.0", "new=1"]);
        assert_eq!(names(&u.resolve(&custom(&["pinned"])).unwrap()), ["lib=2.0~rc1", "pinned=1"]);
        assert_eq!(names(&u.resolve(&custom(&["exact"])).unwrap()), ["exact=1", "lib=2.0~rc1"]);
        assert_eq!(names(&u.resolve(&custom(&["lib=1.0"])).unwrap()), ["lib=1.0"]);
        // Two versions of one package can't be installed together.
        let e = unsat_of(u.resolve(&custom(&["lib=1.0", "new"])).unwrap_err());
        assert_eq!(e.requirement, "lib (>= 1.5)");
        assert!(
            matches!(&e.rejections[0], Rejection::OtherVersionSelected { selected, .. } if selected == "lib 1.0")
        );
    }

    #[test]
    fn virtual_packages_and_versioned_provides() {
        let u = universe(&[
            rec("nano", "7", &[("Provides", "editor (= 1.2)")]),
            rec("ed", "1", &[("Provides", "editor")]),
            rec("needs-editor", "1", &[("Depends", "editor")]),
            rec("needs-new-editor", "1", &[("Depends", "editor (>= 1.0)")]),
            rec("needs-newer-editor", "1", &[("Depends", "editor (>= 2)")]),
        ]);
        // Unversioned: providers in name order.
        assert_eq!(names(&u.resolve(&custom(&["needs-editor"])).unwrap()), ["ed=1", "needs-editor=1"]);
        // Versioned: only a versioned provide fits.
        assert_eq!(
            names(&u.resolve(&custom(&["needs-new-editor"])).unwrap()),
            ["nano=7", "needs-new-editor=1"]
        );
        let e = unsat_of(u.resolve(&custom(&["needs-newer-editor"])).unwrap_err());
        assert_eq!(
            e.to_string(),
            "needs-newer-editor 1 depends on editor (>= 2), but editor is virtual and no provider fits editor (>= 2): \
             ed 1 provides editor without a version, nano 7 provides editor (= 1.2)\n  \
             needs-newer-editor 1 is wanted because it is in the include list"
        );
        // A virtual name in the include list picks a provider.
        assert_eq!(names(&u.resolve(&custom(&["editor"])).unwrap()), ["ed=1"]);
    }

    #[test]
    fn unsatisfiable_explains_the_chain() {
        let u = universe(&[
            rec("webapp", "2", &[("Depends", "nginx")]),
            rec("nginx", "1.22", &[("Depends", "libssl3 (>= 3.0.9)")]),
            rec("libssl3", "3.0.2", &[]),
        ]);
        let e = unsat_of(u.resolve(&custom(&["webapp"])).unwrap_err());
        assert_eq!(
            e.to_string(),
            "nginx 1.22 depends on libssl3 (>= 3.0.9), but the repository has only libssl3 3.0.2\n  \
             nginx 1.22 is wanted because webapp 2 depends on nginx\n  \
             webapp 2 is wanted because it is in the include list"
        );
        let root = e.root_cause();
        assert_eq!(root.requirement, "libssl3 (>= 3.0.9)");
        assert_eq!(root.wanted_by.len(), 3);
        assert_eq!(root.wanted_by[2], Wanted::Included);

        let e = unsat_of(u.resolve(&custom(&["nothere"])).unwrap_err());
        assert_eq!(e.to_string(), "nothere is wanted because it is in the include list, but nothere is not in the repository and nothing provides it");
    }

    #[test]
    fn exclude_drops_seeds_and_fails_when_still_needed() {
        let mut recs = base();
        let u = universe(&recs);
        let req = Request { exclude: vec!["mawk".into()], ..Request::default() };
        let r = u.resolve(&req).unwrap();
        assert!(!names(&r).iter().any(|n| n.starts_with("mawk")));

        recs.push(rec("tool", "1", &[("Depends", "gpgv")]));
        let u = universe(&recs);
        let req =
            Request { include: vec!["tool".into()], exclude: vec!["gpgv".into()], ..Request::default() };
        // apt can still use gpgv2, but tool needs gpgv itself.
        let e = unsat_of(u.resolve(&req).unwrap_err());
        assert_eq!(e.requirement, "gpgv");
        assert_eq!(e.rejections, [Rejection::Excluded { name: "gpgv".into() }]);
        assert!(e.to_string().starts_with("tool 1 depends on gpgv, but gpgv is excluded by the request"));
    }

    #[test]
    fn conflicts_are_avoided_when_possible_and_reported_otherwise() {
        let u = universe(&[
            rec("a", "1", &[("Depends", "impl-x | impl-y")]),
            rec("impl-x", "1", &[("Conflicts", "b")]),
            rec("impl-y", "1", &[]),
            rec("b", "1", &[]),
            rec("c", "1", &[("Breaks", "b (<< 2)")]),
        ]);
        // impl-x would conflict with the requested b, so impl-y is taken.
        assert_eq!(names(&u.resolve(&custom(&["a", "b"])).unwrap()), ["a=1", "b=1", "impl-y=1"]);
        match u.resolve(&custom(&["b", "c"])).unwrap_err() {
            ResolveError::Conflicts(c) => {
                assert_eq!(
                    c,
                    [ConflictPair {
                        package: "c 1".into(),
                        other: "b 1".into(),
                        relation: "Breaks: b (<< 2)".into()
                    }]
                );
            }
            other => panic!("{other}"),
        }
    }

    #[test]
    fn arch_qualifiers() {
        let u = universe(&[
            rec("perl", "5.36", &[("Multi-Arch", "allowed")]),
            rec("python3", "3.11", &[]),
            rec("a", "1", &[("Depends", "perl:any, python3:native")]),
            rec("b", "1", &[("Depends", "python3:any")]),
            rec("c", "1", &[("Depends", "perl:i386")]),
            rec("d", "1", &[("Depends", "python3 [i386], perl [!i386]")]),
        ]);
        assert_eq!(names(&u.resolve(&custom(&["a"])).unwrap()), ["a=1", "perl=5.36", "python3=3.11"]);
        assert!(matches!(
            unsat_of(u.resolve(&custom(&["b"])).unwrap_err()).rejections[0],
            Rejection::Architecture { .. }
        ));
        assert!(u.resolve(&custom(&["c"])).is_err());
        assert_eq!(names(&u.resolve(&custom(&["d"])).unwrap()), ["d=1", "perl=5.36"]);
    }

    #[test]
    fn install_order_puts_dependencies_and_pre_depends_first() {
        let u = universe(&[
            rec("app", "1", &[("Depends", "lib")]),
            rec("lib", "1", &[("Depends", "core")]),
            rec("core", "1", &[]),
            // A cycle: x and y depend on each other; y must be unpacked after x (pre-depends).
            rec("x", "1", &[("Depends", "y")]),
            rec("y", "1", &[("Pre-Depends", "x")]),
            rec("top", "1", &[("Depends", "x")]),
        ]);
        let r = u.resolve(&custom(&["app", "top"])).unwrap();
        let pos = |n: &str| r.install_order.iter().position(|x| x == n).unwrap();
        assert_eq!(r.install_order.len(), 6);
        assert!(pos("core") < pos("lib") && pos("lib") < pos("app"));
        assert!(pos("x") < pos("y") && pos("y") < pos("top"));
    }

    #[test]
    fn same_input_in_any_order_gives_the_same_result() {
        let recs = base();
        let mut reversed = recs.clone();
        reversed.reverse();
        let req = Request { variant: Variant::Standard, include: vec!["vim".into()], exclude: vec![] };
        let a = universe(&recs).resolve(&req).unwrap();
        let b = universe(&reversed).resolve(&req).unwrap();
        assert_eq!(names(&a), names(&b));
        assert_eq!(a.install_order, b.install_order);
    }

    #[test]
    fn minbase_without_apt_is_an_error_unless_excluded() {
        let recs: Vec<String> = base().into_iter().filter(|r| !r.starts_with("Package: apt\n")).collect();
        let u = universe(&recs);
        let e = unsat_of(u.resolve(&Request::default()).unwrap_err());
        assert_eq!(e.requirement, "apt");
        let req = Request { exclude: vec!["apt".into()], ..Request::default() };
        assert!(u.resolve(&req).is_ok());
    }
}
