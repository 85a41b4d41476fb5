//! The `blueprint.toml` parser never panics: arbitrary text and valid blueprints with random edits (inserted
//! tokens, deleted or duplicated lines, truncation) either parse into a sound model or are rejected with
//! located problems that point inside the text.

use std::path::Path;

use kiln_blueprint::{load, LoadError, Vars};
use proptest::{prelude::*, sample::Index};

/// A valid blueprint using most keys.
const FULL: &str = r#"name = "fuzz-full"
version = "1.2.3-rc.1+build.5"
description = "Everything at once"
contracts = ["base-os@^1", "ssh-server@>=1.2, <2"]
outputs = ["raw", "qcow2:zstd", { kind = "oci", compression = "gzip" }]

[base]
suite = "bookworm"
components = ["main", "contrib"]
variant = "standard"
mirror = "https://deb.debian.org/debian"
keyring = "keys/archive.gpg"

[packages]
include = ["openssh-server", "linux-image-amd64"]
exclude = ["nano"]

[[groups]]
name = "web"
gid = 2000
system = false

[[users]]
name = "admin"
uid = 1000
groups = ["sudo", "web"]
shell = "/bin/bash"
ssh_keys = ["ssh-ed25519 AAAA admin@example"]
password_hash = "$6$salt$hash"
locked = false

[[directories]]
path = "/srv/www"
mode = 755
owner = "admin"

[[files]]
path = "/etc/motd"
content = "Welcome to {{ site }}"
mode = "0644"

[[files]]
path = "/etc/site.conf"
template = "files/site.conf.j2"

[[run]]
command = ["/usr/bin/env", "true"]
env = { LANG = "C.UTF-8" }

[[run]]
script = "scripts/setup.sh"
user = "admin:web"

[services]
enable = ["ssh.service"]
mask = ["apt-daily.timer"]

[system]
hostname = "fuzz"
locale = "C.UTF-8"
timezone = "Europe/Berlin"
kernel_cmdline = ["console=ttyS0"]

[disk]
size = "8G"
esp_size = 268435456

[[disk.partitions]]
label = "srv"
size = "1G"
role = "srv"
fs = "ext4"

[lifecycle]
support_months = 24
deprecate_after_days = 90

[variables]
site = "example.org"

[container]
entrypoint = ["/bin/sh", "-c"]
env = { PATH = "/usr/bin:/bin" }
labels = { "org.example.team" = "core" }
expose = ["80", 443, "53/udp"]
"#;

/// A valid blueprint on an existing image, written with inline tables and dotted keys.
const FROM: &str = r#"name = "fuzz-from"
version = "0.1.0"
base = { from = "catalog:debian-minimal@^1.2" }
packages.include = ["nginx"]
services = { enable = ["nginx.service"] }
run = [{ command = "nginx -t" }]
"#;

/// Short pieces of TOML and of blueprint values to splice in.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9_.\\-\\[\\]{}=\",:/@^ \\n#'\\\\]{0,24}",
        prop::sample::select(vec![
            "true",
            "-1",
            "0o777",
            "0x10",
            "1e9",
            "inf",
            "nan",
            "99999999999999999999",
            "1979-05-27T07:32:00Z",
            "\"\"",
            "[]",
            "{}",
            "[[users]]",
            "[[files]]",
            "[base]",
            "[disk]",
            "[[disk.partitions]]",
            "name = 1",
            "from = \"catalog:x@1\"",
            "locked = true",
            "\"\"\"",
            "'''",
            "\u{e9}",
            "\u{1F600}",
            "\0",
            "\r\n",
            "\t",
        ])
        .prop_map(str::to_owned),
    ]
}

/// A valid TOML value of any type, often one a blueprint key would accept somewhere.
fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec![
            "\"\"", "\"x\"", "0", "1", "-5", "0o755", "0x1f", "4294967296", "1.5", "true", "false", "1979-05-27",
            "[]", "[\"a\", 1]", "[[1], []]", "{}", "{ kind = \"raw\" }", "{ a = { b = 1 } }", "\"auto\"", "\"4X\"",
            "\"0999\"", "\"/abs/path\"", "\"../escape\"", "\"ssh.service\"", "\"catalog:a@stable\"",
            "\"oci-layout:out:tag\"", "\"qcow2:gzip\"", "[\"80/sctp\"]", "\"$6$x\"", "\"Root\"",
        ])
        .prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        // A literal string of arbitrary printable characters.
        1 => "[^'\\x00-\\x1f\\x7f]{0,16}".prop_map(|s| format!("'{s}'")),
        // A small array of literal strings.
        1 => prop::collection::vec("[a-z0-9@^.:/_ -]{0,12}", 0..4).prop_map(|v| {
            format!("[{}]", v.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", "))
        }),
    ]
}

/// A key a blueprint table might hold, or a near miss.
fn toml_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "name",
            "version",
            "description",
            "contracts",
            "outputs",
            "base",
            "suite",
            "from",
            "components",
            "variant",
            "mirror",
            "keyring",
            "include",
            "exclude",
            "gid",
            "uid",
            "system",
            "groups",
            "locked",
            "password_hash",
            "path",
            "mode",
            "owner",
            "group",
            "content",
            "source",
            "template",
            "command",
            "script",
            "env",
            "workdir",
            "user",
            "enable",
            "disable",
            "mask",
            "hostname",
            "timezone",
            "size",
            "esp_size",
            "root_fs",
            "label",
            "role",
            "fs",
            "expose",
            "labels",
            "cmd",
            "entrypoint",
            "kind",
            "compression",
            "incldue",
            "\"quoted key\"",
            "a.b",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,10}",
    ]
}

#[derive(Debug, Clone)]
enum Edit {
    /// Give a `key = value` line another (valid TOML) value.
    ReplaceValue(Index, String),
    /// Give a `key = value` line another key.
    RenameKey(Index, String),
    DeleteLine(Index),
    Insert(Index, String),
    Delete(Index, usize),
    ReplaceLine(Index, String),
    DuplicateLine(Index),
    SwapLines(Index),
    Truncate(Index),
}

/// Edits that keep the text valid TOML (mostly: a renamed key may clash with another).
fn toml_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        3 => (any::<Index>(), toml_value()).prop_map(|(i, v)| Edit::ReplaceValue(i, v)),
        1 => (any::<Index>(), toml_key()).prop_map(|(i, k)| Edit::RenameKey(i, k)),
    ]
}

/// Any edit, including ones that break the TOML syntax.
fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => toml_edit(),
        2 => any::<Index>().prop_map(Edit::DeleteLine),
        1 => (any::<Index>(), fragment()).prop_map(|(i, s)| Edit::Insert(i, s)),
        1 => (any::<Index>(), 1usize..40).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => (any::<Index>(), fragment()).prop_map(|(i, s)| Edit::ReplaceLine(i, s)),
        1 => any::<Index>().prop_map(Edit::DuplicateLine),
        1 => any::<Index>().prop_map(Edit::SwapLines),
        1 => any::<Index>().prop_map(Edit::Truncate),
    ]
}

/// The byte offset `i` picks in `text` (0..=len), moved back to a character boundary.
fn offset(text: &str, i: &Index) -> usize {
    let mut at = i.index(text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &mut String, e: &Edit) {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    let line = |i: &Index| i.index(lines.len());
    match e {
        Edit::ReplaceValue(i, v) => {
            let l = line(i);
            if let Some((key, _)) = lines[l].split_once(" = ") {
                lines[l] = format!("{key} = {v}");
            }
            *text = lines.join("\n");
        }
        Edit::RenameKey(i, k) => {
            let l = line(i);
            if let Some((_, value)) = lines[l].split_once(" = ") {
                lines[l] = format!("{k} = {value}");
            }
            *text = lines.join("\n");
        }
        Edit::DeleteLine(i) => {
            let l = line(i);
            lines.remove(l);
            *text = lines.join("\n");
        }
        Edit::Insert(i, s) => {
            let at = offset(text, i);
            text.insert_str(at, s);
        }
        Edit::Delete(i, n) => {
            let at = offset(text, i);
            let end = text[at..].char_indices().nth(*n).map_or(text.len(), |(k, _)| at + k);
            text.replace_range(at..end, "");
        }
        Edit::ReplaceLine(i, s) => {
            let l = line(i);
            lines[l].clone_from(s);
            *text = lines.join("\n");
        }
        Edit::DuplicateLine(i) => {
            let l = line(i);
            lines.insert(l, lines[l].clone());
            *text = lines.join("\n");
        }
        Edit::SwapLines(i) => {
            let l = line(i);
            if l + 1 < lines.len() {
                lines.swap(l, l + 1);
            }
            *text = lines.join("\n");
        }
        Edit::Truncate(i) => {
            let at = offset(text, i);
            text.truncate(at);
        }
    }
}

fn input() -> impl Strategy<Value = String> {
    prop_oneof![
        // Arbitrary text, including control characters and multi-byte characters.
        1 => any::<String>(),
        // Text made of TOML's punctuation and blueprint words.
        1 => prop::collection::vec(fragment(), 0..30).prop_map(|v| v.concat()),
        // Valid blueprints with other values and keys: exercises the checks of the blueprint schema.
        4 => edited(toml_edit()),
        // Valid blueprints with a few random edits of any kind.
        2 => edited(edit()),
    ]
}

/// A seed blueprint with 1 to 5 edits.
fn edited(edit: impl Strategy<Value = Edit>) -> impl Strategy<Value = String> {
    (prop::sample::select(vec![FULL, FROM]), prop::collection::vec(edit, 1..6)).prop_map(|(seed, edits)| {
        let mut text = seed.to_owned();
        for e in &edits {
            apply(&mut text, e);
        }
        text
    })
}

fn parse(text: &str) -> Result<kiln_blueprint::Blueprint, LoadError> {
    load::parse(Path::new("fuzz/blueprint.toml"), text.to_owned(), &Vars::new())
}

#[test]
fn seeds_are_valid_blueprints() {
    for seed in [FULL, FROM] {
        if let Err(e) = parse(seed) {
            panic!("seed rejected: {e}: {:?}", e);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn toml_parser_never_panics(text in input()) {
        match parse(&text) {
            Ok(bp) => {
                // Whatever got through is a sound model.
                prop_assert!(kiln_blueprint::model::syntax::is_name(&bp.name));
                prop_assert!(!bp.outputs.is_empty());
                prop_assert!(bp.outputs.windows(2).all(|w| w[0].kind < w[1].kind), "outputs not sorted and unique");
            }
            Err(LoadError::Blueprint(e)) => {
                prop_assert!(!e.diags.is_empty(), "rejected without a problem");
                for d in &e.diags {
                    prop_assert!(d.span.start <= d.span.end && d.span.end <= text.len(),
                        "span {:?} outside the text ({} bytes): {}", d.span, text.len(), d.message);
                    prop_assert!(!d.message.is_empty());
                }
                // Locating and rendering every problem works too.
                prop_assert_eq!(e.located().len(), e.diags.len());
                prop_assert_eq!(e.reports().len(), e.diags.len());
            }
            Err(other) => prop_assert!(false, "failed without located problems: {}", other),
        }
    }
}
