//! The declarative, kickstart-like `blueprint.toml` form.
//!
//! The text is parsed with the `toml` crate into spanned values, then walked table by table into the
//! [`Blueprint`] model. Every problem (unknown key, wrong type, bad value, conflicting settings, missing
//! required key) becomes a [`Diag`] located at the offending key or value, and the walk goes on, so one
//! run reports all of them. Values use the shared syntax of [`crate::model::syntax`], so both blueprint
//! forms accept the same values.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::Arc,
};

use toml::de::{DeTable, DeValue};

use crate::{
    diag::{Diag, SourceFile},
    model::Vars,
    model::{
        syntax, Base, Blueprint, Command, ContainerConfig, ContractRef, DebianBase, Directory, Disk,
        DiskSize, FileSource, FileStep, Form, Group, LifecyclePolicy, Mode, Output, OutputKind, Packages,
        Partition, PartitionRole, Password, RootFs, RunStep, Services, Span, Spanned, Step, System, User,
        Variant,
    },
    tomlread::{join, Cx, Entry, Fields},
    BlueprintError,
};

/// Smallest EFI system partition: FAT32 needs at least 65525 clusters, about 32 MiB.
const MIN_ESP_SIZE: u64 = 32 * 1024 * 1024;

/// Parse a `blueprint.toml`. `vars` are `--var` overrides of `[variables]` defaults.
pub fn parse(file: Arc<SourceFile>, dir: PathBuf, vars: &Vars) -> Result<Blueprint, BlueprintError> {
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
        return Err(BlueprintError::new(file, diags));
    }
    let mut cx = Cx::new(&file);
    let parts = cx.blueprint(root.get_ref(), vars);
    let mut diags = cx.into_diags();
    diags.sort_by_key(|d| (d.span.start, d.span.end));
    match parts {
        Some(p) if diags.is_empty() => Ok(Blueprint {
            file: Arc::clone(&file),
            form: Form::Toml,
            dir,
            name: p.name,
            version: p.version,
            description: p.description,
            base: p.base,
            packages: p.packages,
            groups: p.groups,
            users: p.users,
            directories: p.directories,
            services: p.services,
            system: p.system,
            disk: p.disk,
            outputs: p.outputs,
            contracts: p.contracts,
            lifecycle: p.lifecycle,
            variables: p.variables,
            container: p.container,
            steps: p.steps,
        }),
        _ => {
            if diags.is_empty() {
                // Unreachable by construction (a missing required part always reports why).
                diags.push(Diag::new(0..0, "invalid blueprint"));
            }
            Err(BlueprintError::new(file, diags))
        }
    }
}

/// The parts of a [`Blueprint`] that come from the text.
struct Parts {
    name: Spanned<String>,
    version: Spanned<semver::Version>,
    description: Option<String>,
    base: Spanned<Base>,
    packages: Packages,
    groups: Vec<Spanned<Group>>,
    users: Vec<Spanned<User>>,
    directories: Vec<Spanned<Directory>>,
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

/// The blueprint's own readers, on top of the shared ones of [`crate::tomlread`].
impl Cx<'_> {
    /// Report `msg` with a `help` unless `ok`.
    fn require(&mut self, ok: bool, path: &str, s: &Spanned<String>, msg: &str, help: &str) -> bool {
        if !ok {
            self.push(Diag::new(s.span.clone(), format!("`{path}`: `{}` {msg}", s.value)).with_help(help));
        }
        ok
    }

    /// A table of strings (`{ KEY = "value" }`) with its keys checked by `key_ok`.
    fn string_map(
        &mut self,
        e: &Entry<'_, '_>,
        key_ok: fn(&str) -> bool,
        key_help: &str,
    ) -> BTreeMap<String, Spanned<String>> {
        let mut out = BTreeMap::new();
        let DeValue::Table(t) = e.value.get_ref() else {
            self.type_error(&e.path, "a table of strings", e.value);
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
            if let Some(s) = self.string(&entry) {
                out.insert(k.get_ref().to_string(), s);
            }
        }
        out
    }

    // ---------------------------------------------------------------------------------------------------

    fn blueprint(&mut self, root: &DeTable<'_>, vars: &Vars) -> Option<Parts> {
        let mut f = Fields::new("", 0..0, root);
        let name = f.required(self, "name").and_then(|e| self.string(&e)).filter(|s| {
            self.require(
                syntax::is_name(s),
                "name",
                s,
                "is not a valid name",
                "use lowercase letters, digits, `-`, `_` and `.`, starting with a letter or digit",
            )
        });
        let version = f.required(self, "version").and_then(|e| self.string(&e)).and_then(|s| {
            match semver::Version::parse(&s.value) {
                Ok(v) => Some(Spanned::new(v, s.span)),
                Err(_) => {
                    self.error(
                        s.span,
                        format!("`version`: `{}` is not a semantic version (e.g. `1.0.0`)", s.value),
                    );
                    None
                }
            }
        });
        let description = f.str(self, "description").map(|s| s.value);
        let contracts = f.get("contracts").map(|e| self.contracts(&e)).unwrap_or_default();
        let outputs = self.outputs(f.get("outputs"));
        let base = match f.get("base") {
            Some(e) => self.table(&e).and_then(|t| self.base(t)),
            None => {
                self.push(Diag::new(0..0, "missing required table `[base]`").with_help(
                    "add `[base]` with a Debian `suite` (e.g. `bookworm`) or `from` an existing image",
                ));
                None
            }
        };
        let packages =
            f.get("packages").and_then(|e| self.table(&e)).map(|t| self.packages(t)).unwrap_or_default();
        let groups = f.get("groups").map(|e| self.groups(&e)).unwrap_or_default();
        let users = f.get("users").map(|e| self.users(&e)).unwrap_or_default();
        let directories = f.get("directories").map(|e| self.directories(&e)).unwrap_or_default();
        let mut steps = f.get("files").map(|e| self.files(&e)).unwrap_or_default();
        steps.extend(f.get("run").map(|e| self.runs(&e)).unwrap_or_default());
        let services =
            f.get("services").and_then(|e| self.table(&e)).map(|t| self.services(t)).unwrap_or_default();
        let system = f.get("system").and_then(|e| self.table(&e)).map(|t| self.system(t)).unwrap_or_default();
        let disk = f.get("disk").and_then(|e| self.table(&e)).map(|t| self.disk(t)).unwrap_or_default();
        let lifecycle =
            f.get("lifecycle").and_then(|e| self.table(&e)).map(|t| self.lifecycle(t)).unwrap_or_default();
        let variables = f.get("variables").map(|e| self.variables(&e, vars)).unwrap_or_default();
        // Run commands see the blueprint's variables as environment variables (as a Kilnfile's RUN sees its
        // ARGs); a run's own `env` wins.
        for step in &mut steps {
            if let Step::Run(run) = &mut step.value {
                let mut env: BTreeMap<String, String> =
                    variables.iter().map(|(k, v)| (k.clone(), v.value.clone())).collect();
                env.extend(std::mem::take(&mut run.env));
                run.env = env;
            }
        }
        let container =
            f.get("container").and_then(|e| self.table(&e)).map(|t| self.container(t)).unwrap_or_default();
        f.finish(self);
        Some(Parts {
            name: name?,
            version: version?,
            description,
            base: base?,
            packages,
            groups,
            users,
            directories,
            services,
            system,
            disk,
            outputs,
            contracts,
            lifecycle,
            variables,
            container,
            steps,
        })
    }

    fn contracts(&mut self, e: &Entry<'_, '_>) -> Vec<Spanned<ContractRef>> {
        let items = self.strings(e).unwrap_or_default();
        let refs: Vec<Spanned<ContractRef>> = items
            .iter()
            .filter_map(|s| {
                self.check(&e.path, s, syntax::contract_ref).map(|c| Spanned::new(c, s.span.clone()))
            })
            .collect();
        self.unique(
            &e.path,
            refs.iter().map(|c| (&c.span, &c.value)),
            |c| c.name.clone(),
            |c| format!("contract `{}`", c.name),
        );
        refs
    }

    fn outputs(&mut self, e: Option<Entry<'_, '_>>) -> Vec<Spanned<Output>> {
        let Some(e) = e else {
            let kind = OutputKind::Oci;
            return vec![Spanned::new(Output { kind, compression: kind.compressions()[0] }, 0..0)];
        };
        let Some(items) = self.array(&e, "an array of outputs") else {
            return Vec::new();
        };
        if items.is_empty() {
            self.push(
                Diag::new(e.span(), "`outputs`: no outputs given").with_help(
                    "name at least one of `raw`, `qcow2`, `oci`, or leave `outputs` out for `oci`",
                ),
            );
        }
        let mut outputs = Vec::new();
        for item in &items {
            let out = match item.value.get_ref() {
                DeValue::String(s) => {
                    let s = Spanned::new(s.to_string(), item.span());
                    self.check(&e.path, &s, syntax::output)
                }
                DeValue::Table(t) => {
                    let mut f = Fields::new(item.path.clone(), item.span(), t);
                    let kind = f.required(self, "kind").and_then(|k| self.string(&k).map(|s| (k, s)));
                    let comp = f.str(self, "compression");
                    f.finish(self);
                    kind.and_then(|(k, s)| {
                        let kind = if s.value.contains(':') {
                            let msg = format!(
                                "`{}`: unknown output `{}`: give the compression separately",
                                k.path, s.value
                            );
                            self.error(s.span.clone(), msg);
                            None
                        } else {
                            self.check(&k.path, &s, syntax::output).map(|o| o.kind)
                        }?;
                        let comp_path = join(&item.path, "compression");
                        match comp {
                            Some(c) => self.check(&comp_path, &c, |c| syntax::output_with(kind, Some(c))),
                            None => syntax::output_with(kind, None).ok(),
                        }
                    })
                }
                _ => {
                    self.type_error(&item.path, "a string (`KIND[:COMPRESSION]`) or a table", item.value);
                    None
                }
            };
            if let Some(o) = out {
                outputs.push(Spanned::new(o, item.span()));
            }
        }
        self.unique(
            &e.path,
            outputs.iter().map(|o| (&o.span, o.kind)),
            |k| k.as_str(),
            |k| format!("output `{}`", k.as_str()),
        );
        outputs.sort_by_key(|o| o.kind);
        outputs
    }

    fn base(&mut self, mut f: Fields<'_, '_>) -> Option<Spanned<Base>> {
        let from = f.get("from");
        let from_base = from.as_ref().and_then(|e| {
            let s = self.string(e)?;
            self.check(&e.path, &s, syntax::base_ref)
        });
        let suite_e = f.get("suite");
        let suite = suite_e.as_ref().and_then(|e| self.string(e)).filter(|s| {
            self.require(syntax::is_name(s), "base.suite", s, "is not a valid suite name", "e.g. `bookworm`")
        });
        let components_e = f.get("components");
        let components = components_e.as_ref().and_then(|e| self.strings(e)).unwrap_or_default();
        for c in &components {
            self.require(
                syntax::is_name(c),
                "base.components",
                c,
                "is not a valid component name",
                "e.g. `main`, `contrib`, `non-free-firmware`",
            );
        }
        let variant_e = f.get("variant");
        let variant = variant_e.as_ref().and_then(|e| self.string(e)).and_then(|s| match s.value.as_str() {
            "minbase" => Some(Variant::Minbase),
            "standard" => Some(Variant::Standard),
            _ => {
                self.push(
                    Diag::new(s.span, format!("`base.variant`: unknown variant `{}`", s.value))
                        .with_help("expected `minbase` or `standard`"),
                );
                None
            }
        });
        let mirror_e = f.get("mirror");
        let mirror = mirror_e.as_ref().and_then(|e| self.string(e)).filter(|s| {
            let ok = ["http://", "https://", "file:/"].iter().any(|p| s.starts_with(p) && s.len() > p.len());
            self.require(
                ok,
                "base.mirror",
                s,
                "is not a mirror URL",
                "use an `http://`, `https://` or `file:/` URL",
            )
        });
        let keyring_e = f.get("keyring");
        let keyring = keyring_e.as_ref().and_then(|e| self.string(e)).filter(|s| {
            self.require(
                !s.is_empty() && !s.contains('\0'),
                "base.keyring",
                s,
                "is not a path",
                "name a keyring file",
            )
        });
        f.finish(self);

        let debian_keys = [&suite_e, &components_e, &variant_e, &mirror_e, &keyring_e];
        let first_debian = debian_keys.iter().filter_map(|e| e.as_ref()).min_by_key(|e| e.key_span.start);
        match (&from, first_debian) {
            (Some(from), Some(deb)) => {
                let (second, first) =
                    if from.key_span.start < deb.key_span.start { (deb, from) } else { (from, deb) };
                let line = self.line(&first.key_span);
                self.push(
                    Diag::new(
                        second.key_span.clone(),
                        format!("`{}` conflicts with `{}`", second.path, first.path),
                    )
                    .with_label("conflict")
                    .with_help(format!(
                        "a base is either a Debian suite (`suite`, `components`, `variant`, `mirror`, \
                             `keyring`) or `from` an existing image; `{}` is on line {line}",
                        first.path
                    )),
                );
                None
            }
            (Some(from), None) => from_base.map(|b| Spanned::new(b, from.span())),
            (None, _) => {
                if suite_e.is_none() {
                    self.push(
                        Diag::new(f.span.clone(), "missing required key `base.suite`")
                            .with_help("give a Debian `suite` (e.g. `bookworm`) or `from` an existing image"),
                    );
                }
                let suite = suite?;
                Some(Spanned::new(
                    Base::Debian(DebianBase {
                        suite: suite.value,
                        components: components.into_iter().map(|c| c.value).collect(),
                        variant: variant.unwrap_or_default(),
                        mirror: mirror.map(|m| m.value),
                        keyring: keyring.map(|k| k.value),
                    }),
                    f.span.clone(),
                ))
            }
        }
    }

    fn packages(&mut self, mut f: Fields<'_, '_>) -> Packages {
        let mut lists = Vec::new();
        for key in ["include", "exclude"] {
            let names = f.strings(self, key).unwrap_or_default();
            let path = f.path_of(key);
            let names: Vec<_> = names
                .into_iter()
                .filter(|n| {
                    self.require(
                        syntax::is_package_name(n),
                        &path,
                        n,
                        "is not a valid Debian package name",
                        "use lowercase letters, digits, `+`, `-` and `.` (at least two characters)",
                    )
                })
                .collect();
            lists.push((path, names));
        }
        f.finish(self);
        self.disjoint_lists(&lists);
        let mut lists = lists.into_iter().map(|(_, l)| l);
        Packages { include: lists.next().unwrap_or_default(), exclude: lists.next().unwrap_or_default() }
    }

    /// Names that must appear in at most one of several lists, once.
    fn disjoint_lists(&mut self, lists: &[(String, Vec<Spanned<String>>)]) {
        let mut all: Vec<(&str, &Spanned<String>)> =
            lists.iter().flat_map(|(path, l)| l.iter().map(move |n| (path.as_str(), n))).collect();
        all.sort_by_key(|(_, n)| n.span.start);
        let mut seen: HashMap<&str, (&str, &Span)> = HashMap::new();
        for (path, n) in all {
            match seen.get(n.value.as_str()) {
                Some((first_path, first)) if *first_path == path => {
                    let first = (*first).clone();
                    self.conflict(
                        n.span.clone(),
                        format!("`{path}`: `{}` is listed twice", n.value),
                        &first,
                        "first",
                    );
                }
                Some((first_path, first)) => {
                    let (first_path, first) = (first_path.to_string(), (*first).clone());
                    self.conflict(
                        n.span.clone(),
                        format!("`{path}`: `{}` is also in `{first_path}`", n.value),
                        &first,
                        &format!("`{first_path}` names it"),
                    );
                }
                None => {
                    seen.insert(&n.value, (path, &n.span));
                }
            }
        }
    }

    /// An account name, checked.
    fn account(&mut self, path: &str, s: Spanned<String>, what: &str) -> Option<Spanned<String>> {
        let ok = syntax::is_account_name(&s);
        self.require(
            ok,
            path,
            &s,
            &format!("is not a valid {what} name"),
            "use lowercase letters, digits, `-` and `_`, starting with a letter or `_` (at most 32 characters)",
        )
        .then_some(s)
    }

    fn groups(&mut self, e: &Entry<'_, '_>) -> Vec<Spanned<Group>> {
        let mut groups = Vec::new();
        for mut f in self.tables(e) {
            let path = f.path_of("name");
            let name = f
                .required(self, "name")
                .and_then(|e| self.string(&e))
                .and_then(|s| self.account(&path, s, "group"));
            let gid = f.u32(self, "gid");
            let system = f.bool(self, "system").is_some_and(|b| b.value);
            f.finish(self);
            if let Some(name) = name {
                groups.push((name.span, Spanned::new(Group { name: name.value, gid, system }, f.span)));
            }
        }
        self.unique(
            &e.path,
            groups.iter().map(|(s, g)| (s, &g.name)),
            |n| (*n).clone(),
            |n| format!("group `{n}`"),
        );
        groups.into_iter().map(|(_, g)| g).collect()
    }

    fn users(&mut self, e: &Entry<'_, '_>) -> Vec<Spanned<User>> {
        let mut users = Vec::new();
        for mut f in self.tables(e) {
            let name_path = f.path_of("name");
            let name = f
                .required(self, "name")
                .and_then(|e| self.string(&e))
                .and_then(|s| self.account(&name_path, s, "user"));
            let uid = f.u32(self, "uid");
            let pg_path = f.path_of("primary_group");
            let primary_group = f.str(self, "primary_group").and_then(|s| self.account(&pg_path, s, "group"));
            let groups_path = f.path_of("groups");
            let groups: Vec<String> = f
                .strings(self, "groups")
                .unwrap_or_default()
                .into_iter()
                .filter_map(|s| self.account(&groups_path, s, "group"))
                .map(|s| s.value)
                .collect();
            let shell = f.checked(self, "shell", absolute_path);
            let home = f.checked(self, "home", absolute_path);
            let gecos = f.checked(self, "gecos", |s| {
                if s.contains([':', '\n', '\0']) {
                    Err(format!(
                        "`{}` contains `:` or a line break, which /etc/passwd cannot hold",
                        s.escape_debug()
                    ))
                } else {
                    Ok(s.to_owned())
                }
            });
            let keys_path = f.path_of("ssh_keys");
            let ssh_keys: Vec<String> = f
                .strings(self, "ssh_keys")
                .unwrap_or_default()
                .into_iter()
                .filter(|k| {
                    let ok = !k.trim().is_empty() && !k.contains(['\n', '\r', '\0']);
                    if !ok {
                        self.error(
                            k.span.clone(),
                            format!("`{keys_path}`: an SSH public key must be one non-empty line"),
                        );
                    }
                    ok
                })
                .map(|k| k.value)
                .collect();
            let locked_e = f.get("locked");
            let locked = locked_e.as_ref().and_then(|e| self.boolean(e));
            let hash_e = f.get("password_hash");
            let hash = hash_e.as_ref().and_then(|e| self.string(e)).and_then(|h| {
                let ok = h.starts_with('$') && !h.contains([':', '\n', '\r', '\0', ' ', '\t']);
                let path = join(&f.path, "password_hash");
                self.require(
                    ok,
                    &path,
                    &h,
                    "is not a crypt(3) hash",
                    "e.g. the output of `mkpasswd -m sha-512`",
                )
                .then_some(h)
            });
            let system = f.bool(self, "system").is_some_and(|b| b.value);
            f.finish(self);
            let password = match (&locked_e, locked, &hash_e, hash) {
                (Some(le), Some(l), Some(he), _) if l.value => {
                    let (second, first) =
                        if le.key_span.start < he.key_span.start { (he, le) } else { (le, he) };
                    self.conflict(
                        second.key_span.clone(),
                        format!("`{}` conflicts with `{}`", second.path, first.path),
                        &first.key_span,
                        &format!("a user with a `password_hash` is not `locked = true`; `{}` is", first.path),
                    );
                    None
                }
                (_, _, _, Some(h)) => Some(Password::Hashed(h.value)),
                (Some(le), Some(l), None, _) if !l.value => {
                    self.push(
                        Diag::new(
                            le.span(),
                            format!("`{}`: an unlocked user needs a `password_hash`", le.path),
                        )
                        .with_help("add `password_hash = \"$6$...\"` or leave the account locked"),
                    );
                    None
                }
                _ => Some(Password::Locked),
            };
            if let (Some(name), Some(password)) = (name, password) {
                let user = User {
                    name: name.value,
                    uid,
                    primary_group: primary_group.map(|g| g.value),
                    groups,
                    shell,
                    home,
                    gecos,
                    ssh_keys,
                    password,
                    system,
                };
                users.push((name.span, Spanned::new(user, f.span)));
            }
        }
        self.unique(
            &e.path,
            users.iter().map(|(s, u)| (s, &u.name)),
            |n| (*n).clone(),
            |n| format!("user `{n}`"),
        );
        users.into_iter().map(|(_, u)| u).collect()
    }

    /// A mode: an octal string (`"0755"`) or an integer read as octal digits (`755`, `0o755`).
    fn mode(&mut self, e: &Entry<'_, '_>) -> Option<Mode> {
        match e.value.get_ref() {
            DeValue::String(s) => self.check(&e.path, &Spanned::new(s.to_string(), e.span()), syntax::mode),
            DeValue::Integer(i) if matches!(i.radix(), 8 | 10) => {
                self.check(&e.path, &Spanned::new(i.as_str().to_owned(), e.span()), syntax::mode)
            }
            DeValue::Integer(i) => {
                self.error(
                    e.span(),
                    format!("`{}`: invalid mode `{i}`: write a mode as octal digits, e.g. `0644`", e.path),
                );
                None
            }
            _ => {
                self.type_error(&e.path, "a mode (a string like \"0644\" or an integer like 644)", e.value);
                None
            }
        }
    }

    /// Owner and group (account names, default `root`).
    fn ownership(&mut self, f: &mut Fields<'_, '_>) -> (Option<String>, Option<String>) {
        let (owner_path, group_path) = (f.path_of("owner"), f.path_of("group"));
        let owner = f.str(self, "owner").map(|s| self.account(&owner_path, s, "user").map(|s| s.value));
        let group = f.str(self, "group").map(|s| self.account(&group_path, s, "group").map(|s| s.value));
        (owner.unwrap_or_else(|| Some("root".to_owned())), group.unwrap_or_else(|| Some("root".to_owned())))
    }

    fn directories(&mut self, e: &Entry<'_, '_>) -> Vec<Spanned<Directory>> {
        let mut dirs = Vec::new();
        for mut f in self.tables(e) {
            let path = f.required(self, "path").and_then(|e| {
                let s = self.string(&e)?;
                self.check(&e.path, &s, absolute_path).map(|p| Spanned::new(p, s.span))
            });
            let mode = f.get("mode").map(|e| self.mode(&e)).unwrap_or(Some(Mode(0o755)));
            let (owner, group) = self.ownership(&mut f);
            f.finish(self);
            if let (Some(path), Some(mode), Some(owner), Some(group)) = (path, mode, owner, group) {
                dirs.push((
                    path.span,
                    Spanned::new(Directory { path: path.value, mode, owner, group }, f.span),
                ));
            }
        }
        self.unique(
            &e.path,
            dirs.iter().map(|(s, d)| (s, &d.path)),
            |p| (*p).clone(),
            |p| format!("directory `{p}`"),
        );
        dirs.into_iter().map(|(_, d)| d).collect()
    }

    /// Exactly one of several alternative keys: reports none or several.
    fn one_of<'t, 'i>(
        &mut self,
        f: &Fields<'t, 'i>,
        given: Vec<(&'static str, Entry<'t, 'i>)>,
        all: &[&str],
    ) -> Option<(&'static str, Entry<'t, 'i>)> {
        let names = all.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
        let mut given = given;
        given.sort_by_key(|(_, e)| e.key_span.start);
        let mut it = given.into_iter();
        let Some(first) = it.next() else {
            self.push(
                Diag::new(f.span.clone(), format!("`{}`: needs one of {names}", f.path))
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
                &format!("give exactly one of {names}; `{}` is", first.1.path),
            );
        }
        ok.then_some(first)
    }

    fn files(&mut self, e: &Entry<'_, '_>) -> Vec<Spanned<Step>> {
        let mut files = Vec::new();
        for mut f in self.tables(e) {
            let path = f.required(self, "path").and_then(|e| {
                let s = self.string(&e)?;
                self.check(&e.path, &s, |p| {
                    let p = absolute_path(p)?;
                    if p.ends_with('/') {
                        return Err(format!("`{p}` names a directory; give the path of the file"));
                    }
                    Ok(p)
                })
                .map(|p| Spanned::new(p, s.span))
            });
            let given: Vec<_> = ["content", "source", "template"]
                .into_iter()
                .filter_map(|k| f.get(k).map(|e| (k, e)))
                .collect();
            // Check every given alternative, even when they conflict.
            let mut sources: Vec<(&str, Option<FileSource>)> = Vec::new();
            for (k, e) in &given {
                let s = self.string(e);
                let src = s.and_then(|s| match *k {
                    "content" => Some(FileSource::Inline(s.value)),
                    "source" => {
                        self.check(&e.path, &s, syntax::relative_path).map(|()| FileSource::Path(s.value))
                    }
                    _ => {
                        self.check(&e.path, &s, syntax::relative_path).map(|()| FileSource::Template(s.value))
                    }
                });
                sources.push((k, src));
            }
            let chosen = self.one_of(&f, given, &["content", "source", "template"]);
            let source =
                chosen.and_then(|(k, _)| sources.into_iter().find(|(n, _)| *n == k).and_then(|(_, s)| s));
            let mode = f.get("mode").map(|e| self.mode(&e)).unwrap_or(Some(Mode(0o644)));
            let (owner, group) = self.ownership(&mut f);
            f.finish(self);
            if let (Some(path), Some(source), Some(mode), Some(owner), Some(group)) =
                (path, source, mode, owner, group)
            {
                let step = Step::File(FileStep { path: path.value, source, mode, owner, group });
                files.push(Spanned::new(step, f.span));
            }
        }
        files
    }

    fn runs(&mut self, e: &Entry<'_, '_>) -> Vec<Spanned<Step>> {
        let mut runs = Vec::new();
        for mut f in self.tables(e) {
            let given: Vec<_> =
                ["command", "script"].into_iter().filter_map(|k| f.get(k).map(|e| (k, e))).collect();
            let mut commands: Vec<(&str, Option<Command>)> = Vec::new();
            for (k, e) in &given {
                let cmd = match (*k, e.value.get_ref()) {
                    ("command", DeValue::String(s)) if s.trim().is_empty() => {
                        self.error(e.span(), format!("`{}`: empty command", e.path));
                        None
                    }
                    ("command", DeValue::String(s)) => Some(Command::Shell(s.to_string())),
                    ("command", DeValue::Array(_)) => self.strings(e).and_then(|argv| {
                        if argv.is_empty() {
                            self.error(e.span(), format!("`{}`: empty command", e.path));
                            None
                        } else {
                            Some(Command::Exec(argv.into_iter().map(|a| a.value).collect()))
                        }
                    }),
                    ("command", _) => {
                        self.type_error(&e.path, "a string or an array of strings", e.value);
                        None
                    }
                    _ => self.string(e).and_then(|s| {
                        self.check(&e.path, &s, syntax::relative_path).map(|()| Command::ScriptFile(s.value))
                    }),
                };
                commands.push((k, cmd));
            }
            let chosen = self.one_of(&f, given, &["command", "script"]);
            let command =
                chosen.and_then(|(k, _)| commands.into_iter().find(|(n, _)| *n == k).and_then(|(_, c)| c));
            let env = f
                .get("env")
                .map(|e| self.string_map(&e, syntax::is_env_name, ENV_NAME_HELP))
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.value))
                .collect();
            let workdir = f.checked(self, "workdir", absolute_path);
            let user = f.checked(self, "user", syntax::user_spec);
            f.finish(self);
            if let Some(command) = command {
                runs.push(Spanned::new(Step::Run(RunStep { command, env, workdir, user }), f.span));
            }
        }
        runs
    }

    fn services(&mut self, mut f: Fields<'_, '_>) -> Services {
        let mut lists = Vec::new();
        for key in ["enable", "disable", "mask"] {
            let path = f.path_of(key);
            let units: Vec<_> = f
                .strings(self, key)
                .unwrap_or_default()
                .into_iter()
                .filter(|u| {
                    self.require(
                        syntax::is_unit_name(u),
                        &path,
                        u,
                        "is not a systemd unit name",
                        "give the full unit name with its type, e.g. `ssh.service` or `fstrim.timer`",
                    )
                })
                .collect();
            lists.push((path, units));
        }
        f.finish(self);
        self.disjoint_lists(&lists);
        let mut lists = lists.into_iter().map(|(_, l)| l);
        Services {
            enable: lists.next().unwrap_or_default(),
            disable: lists.next().unwrap_or_default(),
            mask: lists.next().unwrap_or_default(),
        }
    }

    fn system(&mut self, mut f: Fields<'_, '_>) -> System {
        let hostname = f.checked(self, "hostname", |s| {
            if syntax::is_hostname(s) {
                Ok(s.to_owned())
            } else {
                Err(format!(
                    "`{s}` is not a valid host name (dot-separated labels of letters, digits and `-`, \
                     each 1 to 63 characters, not starting or ending with `-`)"
                ))
            }
        });
        let locale = f.checked(self, "locale", |s| {
            if syntax::is_locale(s) {
                Ok(s.to_owned())
            } else {
                Err(format!("`{s}` is not a locale name (e.g. `C.UTF-8` or `en_US.UTF-8`)"))
            }
        });
        let timezone = f.checked(self, "timezone", |s| {
            if syntax::is_timezone(s) {
                Ok(s.to_owned())
            } else {
                Err(format!("`{s}` is not a time zone name (e.g. `Etc/UTC`, `Europe/Berlin` or `UTC`)"))
            }
        });
        let path = f.path_of("kernel_cmdline");
        let kernel_cmdline = f
            .strings(self, "kernel_cmdline")
            .unwrap_or_default()
            .into_iter()
            .filter(|a| {
                let ok = !a.is_empty() && !a.contains(char::is_whitespace);
                if !ok {
                    self.push(
                        Diag::new(
                            a.span.clone(),
                            format!("`{path}`: `{}` is not one argument", a.value.escape_debug()),
                        )
                        .with_help("give each argument as its own string, without spaces"),
                    );
                }
                ok
            })
            .map(|a| a.value)
            .collect();
        f.finish(self);
        System { hostname, locale, timezone, kernel_cmdline }
    }

    /// A size in bytes: a size string (`512M`) or an integer; `auto_ok` accepts `"auto"` (as `None`).
    fn size(&mut self, e: &Entry<'_, '_>, auto_ok: bool) -> Option<Option<u64>> {
        let bytes = match e.value.get_ref() {
            DeValue::String(s) if auto_ok && s.as_ref() == "auto" => return Some(None),
            DeValue::String(s) => {
                self.check(&e.path, &Spanned::new(s.to_string(), e.span()), syntax::size)?
            }
            DeValue::Integer(i) => {
                self.int_in(&e.path, e.span(), i, 0, u64::MAX.into()).and_then(|n| u64::try_from(n).ok())?
            }
            _ => {
                let expected =
                    if auto_ok { "a size (\"auto\", \"4G\" or bytes)" } else { "a size (\"4G\" or bytes)" };
                self.type_error(&e.path, expected, e.value);
                return None;
            }
        };
        if bytes == 0 {
            self.error(e.span(), format!("`{}`: a size must be larger than 0", e.path));
            return None;
        }
        Some(Some(bytes))
    }

    fn root_fs(&mut self, e: &Entry<'_, '_>) -> Option<RootFs> {
        let s = self.string(e)?;
        self.check(&e.path, &s, |v| match v {
            "ext4" => Ok(RootFs::Ext4),
            other => Err(format!("unsupported file system `{other}` (only `ext4` is supported)")),
        })
    }

    fn disk(&mut self, mut f: Fields<'_, '_>) -> Disk {
        let mut disk = Disk::default();
        let size_e = f.get("size");
        if let Some(Some(size)) = size_e.as_ref().map(|e| self.size(e, true)) {
            disk.size = size.map_or(DiskSize::Auto, DiskSize::Bytes);
        }
        if let Some(e) = f.get("esp_size") {
            if let Some(Some(esp)) = self.size(&e, false) {
                if esp < MIN_ESP_SIZE {
                    self.push(
                        Diag::new(
                            e.span(),
                            format!("`{}`: {} is too small for an EFI system partition", e.path, mib(esp)),
                        )
                        .with_help("FAT32 needs at least 32 MiB"),
                    );
                } else {
                    disk.esp_size = esp;
                }
            }
        }
        if let Some(fs) = f.get("root_fs").and_then(|e| self.root_fs(&e)) {
            disk.root_fs = fs;
        }
        let partitions_e = f.get("partitions");
        let mut labels = Vec::new();
        for mut p in partitions_e.as_ref().map(|e| self.tables(e)).unwrap_or_default() {
            let label_path = p.path_of("label");
            let label = p.required(self, "label").and_then(|e| self.string(&e)).filter(|l| {
                let ok = !l.is_empty() && l.encode_utf16().count() <= 36 && !l.contains(char::is_control);
                self.require(
                    ok,
                    &label_path,
                    l,
                    "is not a GPT partition label",
                    "use 1 to 36 printable characters",
                )
            });
            let size = p.required(self, "size").and_then(|e| self.size(&e, false)).flatten();
            let role = p.required(self, "role").and_then(|e| {
                let s = self.string(&e)?;
                let role = PartitionRole::ALL.iter().find(|(n, _)| *n == s.value).map(|(_, r)| *r);
                if role.is_none() {
                    let names: Vec<_> = PartitionRole::ALL.iter().map(|(n, _)| *n).collect();
                    self.push(
                        Diag::new(s.span, format!("`{}`: unknown partition role `{}`", e.path, s.value))
                            .with_help(format!("expected one of: {}", names.join(", "))),
                    );
                }
                role
            });
            let fs_e = p.get("fs");
            let fs = fs_e.as_ref().map(|e| self.root_fs(e));
            p.finish(self);
            if let (Some(label), Some(size), Some(role), Some(fs)) =
                (label, size, role, fs.unwrap_or(Some(RootFs::Ext4)))
            {
                let fs = fs_e.is_some().then_some(fs);
                labels.push(label.clone());
                disk.partitions.push(Spanned::new(Partition { label: label.value, size, role, fs }, p.span));
            }
        }
        if let Some(e) = &partitions_e {
            self.unique(
                &e.path,
                labels.iter().map(|l| (&l.span, &l.value)),
                |l| (*l).clone(),
                |l| format!("partition label `{l}`"),
            );
        }
        f.finish(self);
        if let (DiskSize::Bytes(total), Some(e)) = (disk.size, &size_e) {
            let fixed = disk.partitions.iter().fold(disk.esp_size, |acc, p| acc.saturating_add(p.size));
            if total <= fixed {
                self.push(
                    Diag::new(
                        e.span(),
                        format!("`{}`: {} leaves no room for the root partition", e.path, mib(total)),
                    )
                    .with_help(format!("the EFI system partition and extra partitions take {}", mib(fixed))),
                );
            }
        }
        disk
    }

    fn lifecycle(&mut self, mut f: Fields<'_, '_>) -> LifecyclePolicy {
        let support_months = f.u32(self, "support_months");
        let deprecate_after_days = f.u32(self, "deprecate_after_days");
        f.finish(self);
        LifecyclePolicy { support_months, deprecate_after_days }
    }

    fn variables(&mut self, e: &Entry<'_, '_>, vars: &Vars) -> BTreeMap<String, Spanned<String>> {
        let mut variables = self.string_map(e, syntax::is_env_name, VAR_NAME_HELP);
        for (name, value) in &mut variables {
            if let Some(v) = vars.get(name) {
                value.value.clone_from(v);
            }
        }
        variables
    }

    fn container(&mut self, mut f: Fields<'_, '_>) -> ContainerConfig {
        let entrypoint = f.strings(self, "entrypoint").map(|v| v.into_iter().map(|s| s.value).collect());
        let cmd = f.strings(self, "cmd").map(|v| v.into_iter().map(|s| s.value).collect());
        let unwrap =
            |m: BTreeMap<String, Spanned<String>>| m.into_iter().map(|(k, v)| (k, v.value)).collect();
        let env = f.get("env").map(|e| self.string_map(&e, syntax::is_env_name, ENV_NAME_HELP)).map(unwrap);
        let labels = f
            .get("labels")
            .map(|e| self.string_map(&e, |k| !k.trim().is_empty(), "a label needs a name"))
            .map(unwrap);
        let user = f.checked(self, "user", syntax::user_spec);
        let workdir = f.checked(self, "workdir", absolute_path);
        let mut ports: Vec<Spanned<String>> = Vec::new();
        if let Some(e) = f.get("expose") {
            for item in self.array(&e, "an array of ports").unwrap_or_default() {
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
            self.unique(
                &e.path,
                ports.iter().map(|p| (&p.span, &p.value)),
                |p| (*p).clone(),
                |p| format!("port `{p}`"),
            );
        }
        f.finish(self);
        ContainerConfig {
            entrypoint,
            cmd,
            env: env.unwrap_or_default(),
            labels: labels.unwrap_or_default(),
            user,
            workdir,
            exposed_ports: ports.into_iter().map(|p| p.value).collect(),
        }
    }
}

const ENV_NAME_HELP: &str = "use ASCII letters, digits and `_`, not starting with a digit";
const VAR_NAME_HELP: &str = "a variable name uses ASCII letters, digits and `_`, not starting with a digit";

/// An absolute path in the image.
fn absolute_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("`{s}` is not an absolute path (it must start with `/`)"));
    }
    if s.contains('\0') {
        return Err(format!("`{}` contains a NUL character", s.escape_debug()));
    }
    Ok(s.to_owned())
}

/// A byte count for messages, in MiB when it is a whole number of them.
fn mib(bytes: u64) -> String {
    if bytes % (1024 * 1024) == 0 {
        format!("{} MiB", bytes / (1024 * 1024))
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{CatalogSelector, Compression};

    fn parse_str(text: &str, vars: &Vars) -> Result<Blueprint, BlueprintError> {
        parse(SourceFile::new("bp/blueprint.toml", text), PathBuf::from("bp"), vars)
    }

    fn sp<T>(value: T) -> Spanned<T> {
        Spanned::new(value, 0..0)
    }

    /// `LINE:COL: MESSAGE` of every problem.
    fn problems(text: &str) -> Vec<String> {
        match parse_str(text, &Vars::new()) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.located().iter().map(|l| format!("{}:{}: {}", l.line, l.column, l.message)).collect(),
        }
    }

    const FULL: &str = r#"
name = "debian-minimal"
version = "1.2.3"
description = "A small Debian"
contracts = ["ssh-server@^1", "base-os@>=1.2, <2"]
outputs = ["raw", { kind = "oci", compression = "zstd" }, "qcow2:zstd"]

[base]
suite = "bookworm"
components = ["main", "contrib"]
variant = "standard"
mirror = "http://deb.debian.org/debian"
keyring = "keys/archive.gpg"

[packages]
include = ["openssh-server", "linux-image-amd64"]
exclude = ["nano"]

[[groups]]
name = "web"
gid = 2000
system = false

[[groups]]
name = "svc"
system = true

[[users]]
name = "admin"
uid = 1000
primary_group = "admin"
groups = ["sudo", "web"]
shell = "/bin/bash"
home = "/home/admin"
gecos = "Admin"
ssh_keys = ["ssh-ed25519 AAAAC3Nza admin@example"]
locked = false
password_hash = "$6$salt$hash"
system = false

[[users]]
name = "deploy"
system = true

[[directories]]
path = "/srv/www"
mode = "0750"
owner = "admin"
group = "web"

[[directories]]
path = "/srv/data"
mode = 2775

[[directories]]
path = "/srv/tmp"

[[run]]
command = "echo hi"
env = { GREETING = "hello", _X = "1" }
workdir = "/root"
user = "root"

[[files]]
path = "/etc/motd"
content = "hello"

[[run]]
command = ["/usr/bin/env", "true"]

[[files]]
path = "/etc/app.conf"
source = "files/app.conf"
mode = 0o600
owner = "admin"
group = "web"

[[files]]
path = "/etc/site.conf"
template = "files/site.conf.j2"

[[run]]
script = "scripts/setup.sh"

[services]
enable = ["ssh.service", "getty@ttyS0.service"]
disable = ["apt-daily.timer"]
mask = ["systemd-networkd-wait-online.service"]

[system]
hostname = "kiln"
locale = "C.UTF-8"
timezone = "Etc/UTC"
kernel_cmdline = ["console=ttyS0", "quiet"]

[disk]
size = "8G"
esp_size = "64M"
root_fs = "ext4"

[[disk.partitions]]
label = "srv"
size = "1G"
role = "srv"
fs = "ext4"

[[disk.partitions]]
label = "swap"
size = 536870912
role = "swap"

[lifecycle]
support_months = 24
deprecate_after_days = 90

[variables]
site_name = "example"
port = "8080"

[container]
entrypoint = ["/bin/sh"]
cmd = ["-c", "echo"]
env = { PATH = "/usr/bin:/bin" }
labels = { "org.example.team" = "core" }
user = "root"
workdir = "/"
expose = ["80/tcp", "443", 53, "53/udp"]
"#;

    #[test]
    fn full_blueprint_maps_every_key_to_the_model() {
        let vars = Vars::from([("port".to_owned(), "9090".to_owned())]);
        let bp = parse_str(FULL, &vars).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bp.form, Form::Toml);
        assert_eq!(bp.dir, PathBuf::from("bp"));
        assert_eq!(bp.name.value, "debian-minimal");
        assert_eq!(&FULL[bp.name.span.clone()], "\"debian-minimal\"");
        assert_eq!(bp.version.value, semver::Version::new(1, 2, 3));
        assert_eq!(bp.description.as_deref(), Some("A small Debian"));
        assert_eq!(
            bp.contracts,
            vec![
                sp(ContractRef { name: "ssh-server".into(), req: "^1".into() }),
                sp(ContractRef { name: "base-os".into(), req: ">=1.2, <2".into() }),
            ]
        );
        // Sorted by kind, whatever the order written.
        assert_eq!(
            bp.outputs,
            vec![
                sp(Output { kind: OutputKind::Raw, compression: Compression::None }),
                sp(Output { kind: OutputKind::Qcow2, compression: Compression::Zstd }),
                sp(Output { kind: OutputKind::Oci, compression: Compression::Zstd }),
            ]
        );
        assert_eq!(&FULL[bp.outputs[1].span.clone()], "\"qcow2:zstd\"");
        assert_eq!(
            bp.base.value,
            Base::Debian(DebianBase {
                suite: "bookworm".into(),
                components: vec!["main".into(), "contrib".into()],
                variant: Variant::Standard,
                mirror: Some("http://deb.debian.org/debian".into()),
                keyring: Some("keys/archive.gpg".into()),
            })
        );
        assert_eq!(
            bp.packages,
            Packages {
                include: vec![sp("openssh-server".into()), sp("linux-image-amd64".into())],
                exclude: vec![sp("nano".into())],
            }
        );
        assert_eq!(
            bp.groups,
            vec![
                sp(Group { name: "web".into(), gid: Some(2000), system: false }),
                sp(Group { name: "svc".into(), gid: None, system: true }),
            ]
        );
        assert_eq!(
            bp.users,
            vec![
                sp(User {
                    name: "admin".into(),
                    uid: Some(1000),
                    primary_group: Some("admin".into()),
                    groups: vec!["sudo".into(), "web".into()],
                    shell: Some("/bin/bash".into()),
                    home: Some("/home/admin".into()),
                    gecos: Some("Admin".into()),
                    ssh_keys: vec!["ssh-ed25519 AAAAC3Nza admin@example".into()],
                    password: Password::Hashed("$6$salt$hash".into()),
                    system: false,
                }),
                sp(User {
                    name: "deploy".into(),
                    uid: None,
                    primary_group: None,
                    groups: vec![],
                    shell: None,
                    home: None,
                    gecos: None,
                    ssh_keys: vec![],
                    password: Password::Locked,
                    system: true,
                }),
            ]
        );
        let root = || "root".to_owned();
        assert_eq!(
            bp.directories,
            vec![
                sp(Directory {
                    path: "/srv/www".into(),
                    mode: Mode(0o750),
                    owner: "admin".into(),
                    group: "web".into()
                }),
                // An integer mode is read as octal digits.
                sp(Directory { path: "/srv/data".into(), mode: Mode(0o2775), owner: root(), group: root() }),
                sp(Directory { path: "/srv/tmp".into(), mode: Mode(0o755), owner: root(), group: root() }),
            ]
        );
        // All files in order, then all runs in order, whatever the interleaving in the text.
        let file = |path: &str, source, mode, owner: &str, group: &str| {
            sp(Step::File(FileStep {
                path: path.into(),
                source,
                mode,
                owner: owner.into(),
                group: group.into(),
            }))
        };
        assert_eq!(
            bp.steps,
            vec![
                file("/etc/motd", FileSource::Inline("hello".into()), Mode(0o644), "root", "root"),
                file("/etc/app.conf", FileSource::Path("files/app.conf".into()), Mode(0o600), "admin", "web"),
                file(
                    "/etc/site.conf",
                    FileSource::Template("files/site.conf.j2".into()),
                    Mode(0o644),
                    "root",
                    "root"
                ),
                sp(Step::Run(RunStep {
                    command: Command::Shell("echo hi".into()),
                    env: BTreeMap::from([
                        ("GREETING".into(), "hello".into()),
                        ("_X".into(), "1".into()),
                        ("port".into(), "9090".into()),
                        ("site_name".into(), "example".into())
                    ]),
                    workdir: Some("/root".into()),
                    user: Some("root".into()),
                })),
                sp(Step::Run(RunStep {
                    command: Command::Exec(vec!["/usr/bin/env".into(), "true".into()]),
                    env: BTreeMap::from([
                        ("port".into(), "9090".into()),
                        ("site_name".into(), "example".into())
                    ]),
                    workdir: None,
                    user: None,
                })),
                sp(Step::Run(RunStep {
                    command: Command::ScriptFile("scripts/setup.sh".into()),
                    env: BTreeMap::from([
                        ("port".into(), "9090".into()),
                        ("site_name".into(), "example".into())
                    ]),
                    workdir: None,
                    user: None,
                })),
            ]
        );
        assert!(FULL[bp.steps[0].span.clone()].starts_with("[[files]]"));
        assert_eq!(
            bp.services,
            Services {
                enable: vec![sp("ssh.service".into()), sp("getty@ttyS0.service".into())],
                disable: vec![sp("apt-daily.timer".into())],
                mask: vec![sp("systemd-networkd-wait-online.service".into())],
            }
        );
        assert_eq!(
            bp.system,
            System {
                hostname: Some("kiln".into()),
                locale: Some("C.UTF-8".into()),
                timezone: Some("Etc/UTC".into()),
                kernel_cmdline: vec!["console=ttyS0".into(), "quiet".into()],
            }
        );
        assert_eq!(
            bp.disk,
            Disk {
                size: DiskSize::Bytes(8 << 30),
                esp_size: 64 << 20,
                root_fs: RootFs::Ext4,
                partitions: vec![
                    sp(Partition {
                        label: "srv".into(),
                        size: 1 << 30,
                        role: PartitionRole::Srv,
                        fs: Some(RootFs::Ext4)
                    }),
                    sp(Partition {
                        label: "swap".into(),
                        size: 512 << 20,
                        role: PartitionRole::Swap,
                        fs: None
                    }),
                ],
            }
        );
        assert_eq!(
            bp.lifecycle,
            LifecyclePolicy { support_months: Some(24), deprecate_after_days: Some(90) }
        );
        assert_eq!(bp.variables["site_name"].value, "example");
        // An override replaces the value and keeps the declaration's place.
        assert_eq!(bp.variables["port"].value, "9090");
        assert_eq!(&FULL[bp.variables["port"].span.clone()], "\"8080\"");
        assert_eq!(
            bp.container,
            ContainerConfig {
                entrypoint: Some(vec!["/bin/sh".into()]),
                cmd: Some(vec!["-c".into(), "echo".into()]),
                env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
                // Only what the blueprint says: no name/version labels added.
                labels: BTreeMap::from([("org.example.team".into(), "core".into())]),
                user: Some("root".into()),
                workdir: Some("/".into()),
                exposed_ports: vec!["80/tcp".into(), "443/tcp".into(), "53/tcp".into(), "53/udp".into()],
            }
        );
    }

    const MINIMAL: &str = "name = \"mini\"\nversion = \"0.1.0\"\n[base]\nsuite = \"bookworm\"\n";

    #[test]
    fn minimal_blueprint_gets_the_defaults() {
        let bp = parse_str(MINIMAL, &Vars::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bp.description, None);
        assert_eq!(bp.outputs, vec![sp(Output { kind: OutputKind::Oci, compression: Compression::Gzip })]);
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
        assert_eq!(bp.disk, Disk::default());
        assert_eq!(bp.packages, Packages::default());
        assert_eq!(bp.container, ContainerConfig::default());
        assert!(bp.steps.is_empty() && bp.users.is_empty() && bp.variables.is_empty());
    }

    #[test]
    fn base_from_an_image() {
        let text = "name = \"web\"\nversion = \"2.0.0\"\n[base]\nfrom = \"catalog:debian-minimal@stable\"\n";
        let bp = parse_str(text, &Vars::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            bp.base.value,
            Base::Catalog {
                family: "debian-minimal".into(),
                selector: CatalogSelector::Channel("stable".into())
            }
        );
        assert_eq!(&text[bp.base.span.clone()], "\"catalog:debian-minimal@stable\"");
        let text = "name = \"web\"\nversion = \"2.0.0\"\nbase = { from = \"oci-layout:../out:1.0.0\" }\n";
        let bp = parse_str(text, &Vars::new()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(bp.base.value, Base::OciLayout { path: "../out".into(), tag: "1.0.0".into() });
    }

    #[test]
    fn unknown_keys_name_their_path_and_the_expected_keys() {
        let text = format!("{MINIMAL}[packages]\nincldue = [\"vim\"]\n");
        let err = parse_str(&text, &Vars::new()).unwrap_err();
        assert_eq!(err.to_string(), "bp/blueprint.toml:6:1: unknown key `packages.incldue`");
        assert_eq!(err.diags[0].help.as_deref(), Some("expected one of: include, exclude"));
    }

    #[test]
    fn messages_name_the_key_and_the_types() {
        let text = "name = \"x\"\nversion = 1\n[base]\nsuite = \"bookworm\"\n";
        assert_eq!(problems(text), ["2:11: `version`: expected a string, found an integer"]);
        let text = "name = \"x\"\nversion = \"1.0\"\n[base]\nsuite = \"bookworm\"\n";
        assert_eq!(problems(text), ["2:11: `version`: `1.0` is not a semantic version (e.g. `1.0.0`)"]);
    }

    #[test]
    fn every_problem_is_reported_in_one_pass_in_source_order() {
        let text = r#"name = "Bad Name"
version = "1"
colour = "blue"
[base]
suite = "bookworm"
[[users]]
name = "admin"
uid = -1
[[files]]
path = "etc/motd"
content = "x"
source = "motd"
"#;
        assert_eq!(
            problems(text),
            [
                "1:8: `name`: `Bad Name` is not a valid name",
                "2:11: `version`: `1` is not a semantic version (e.g. `1.0.0`)",
                "3:1: unknown key `colour`",
                "8:7: `users[0].uid`: -1 is out of range (0 to 4294967295)",
                "10:8: `files[0].path`: `etc/motd` is not an absolute path (it must start with `/`)",
                "12:1: `files[0].source` conflicts with `files[0].content`",
            ]
        );
    }

    #[test]
    fn conflicts_point_at_the_second_item_and_name_the_first_line() {
        let text = format!("{MINIMAL}[services]\nenable = [\"ssh.service\"]\nmask = [\"ssh.service\"]\n");
        let err = parse_str(&text, &Vars::new()).unwrap_err();
        let l = &err.located()[0];
        assert_eq!((l.line, l.column), (7, 9));
        assert_eq!(l.message, "`services.mask`: `ssh.service` is also in `services.enable`");
        assert_eq!(l.help.as_deref(), Some("`services.enable` names it on line 6"));

        let text =
            "name = \"x\"\nversion = \"1.0.0\"\n[base]\nfrom = \"catalog:a@stable\"\nsuite = \"bookworm\"\n";
        assert_eq!(problems(text), ["5:1: `base.suite` conflicts with `base.from`"]);
        let text =
            "name = \"x\"\nversion = \"1.0.0\"\n[base]\nsuite = \"bookworm\"\nfrom = \"catalog:a@stable\"\n";
        assert_eq!(problems(text), ["5:1: `base.from` conflicts with `base.suite`"]);
    }

    #[test]
    fn passwords() {
        let user = |extra: &str| format!("{MINIMAL}[[users]]\nname = \"a\"\n{extra}\n");
        let pw = |extra: &str| parse_str(&user(extra), &Vars::new()).map(|bp| bp.users[0].password.clone());
        assert_eq!(pw("").unwrap(), Password::Locked);
        assert_eq!(pw("locked = true").unwrap(), Password::Locked);
        assert_eq!(pw("password_hash = \"$y$j9T$x\"").unwrap(), Password::Hashed("$y$j9T$x".into()));
        assert_eq!(
            problems(&user("locked = true\npassword_hash = \"$6$x\"")),
            ["8:1: `users[0].password_hash` conflicts with `users[0].locked`"]
        );
        assert_eq!(
            problems(&user("locked = false")),
            ["7:10: `users[0].locked`: an unlocked user needs a `password_hash`"]
        );
    }

    #[test]
    fn outputs_reject_duplicates_bad_compressions_and_empty_lists() {
        let with = |outputs: &str| format!("outputs = {outputs}\n{MINIMAL}");
        assert_eq!(
            problems(&with("[\"oci\", \"oci:zstd\"]")),
            ["1:19: `outputs`: output `oci` is listed twice"]
        );
        assert_eq!(
            problems(&with("[\"raw:zstd\"]")),
            ["1:12: `outputs`: compression `zstd` is not available for `raw` outputs (use none)"]
        );
        assert_eq!(problems(&with("[{ kind = \"qcow2\", compression = \"gzip\" }]")), [
            "1:44: `outputs[0].compression`: compression `gzip` is not available for `qcow2` outputs (use none, zlib, zstd)"
        ]);
        assert_eq!(problems(&with("[]")), ["1:11: `outputs`: no outputs given"]);
    }

    #[test]
    fn disk_sizes() {
        let with = |disk: &str| format!("{MINIMAL}[disk]\n{disk}\n");
        let size = |disk: &str| parse_str(&with(disk), &Vars::new()).map(|bp| bp.disk);
        assert_eq!(size("size = \"auto\"").unwrap().size, DiskSize::Auto);
        assert_eq!(size("size = 1073741824").unwrap().size, DiskSize::Bytes(1 << 30));
        assert_eq!(
            problems(&with("esp_size = \"16M\"")),
            ["6:12: `disk.esp_size`: 16 MiB is too small for an EFI system partition"]
        );
        assert_eq!(
            problems(&with("size = \"200M\"")),
            ["6:8: `disk.size`: 200 MiB leaves no room for the root partition"]
        );
        assert_eq!(
            problems(&with("root_fs = \"xfs\"")),
            ["6:11: `disk.root_fs`: unsupported file system `xfs` (only `ext4` is supported)"]
        );
    }

    #[test]
    fn system_and_container_values_are_checked() {
        let text = format!(
            "{MINIMAL}[system]\nhostname = \"-kiln\"\nlocale = \"en US\"\ntimezone = \"Berlin\"\n\
             kernel_cmdline = [\"quiet splash\"]\n[container]\nuser = \"Root\"\nworkdir = \"srv\"\n\
             expose = [\"80\", 80, \"70000\"]\nenv = {{ \"A.B\" = \"x\" }}\n"
        );
        let got = problems(&text);
        let want = [
            "6:12: `system.hostname`: `-kiln` is not a valid host name",
            "7:10: `system.locale`: `en US` is not a locale name",
            "8:12: `system.timezone`: `Berlin` is not a time zone name",
            "9:19: `system.kernel_cmdline`: `quiet splash` is not one argument",
            "11:8: `container.user`: `Root` is not a user",
            "12:11: `container.workdir`: `srv` is not an absolute path",
            "13:17: `container.expose`: port `80/tcp` is listed twice",
            "13:21: `container.expose`: invalid port `70000`",
            "14:9: `container.env.\"A.B\"`: `A.B` is not a valid name",
        ];
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.starts_with(w), "{g:?} does not start with {w:?}");
        }
    }

    #[test]
    fn syntax_errors_are_reported_where_the_toml_crate_says() {
        let err = parse_str("name = \"x\"\nversion = \n", &Vars::new()).unwrap_err();
        let l = &err.located()[0];
        assert_eq!(l.line, 2);
        assert!(l.message.starts_with("invalid TOML: "), "{}", l.message);
        let got = problems("name = \"a\"\nname = \"b\"\n");
        assert_eq!(got, ["2:1: invalid TOML: duplicate key"]);
    }
}
