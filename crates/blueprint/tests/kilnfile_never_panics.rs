//! The Kilnfile parser never panics: on arbitrary text, and on valid Kilnfiles with random damage (bytes
//! inserted, removed or replaced, lines cut), it returns a blueprint or located problems. Every problem it
//! reports lies inside the file, so it can be shown with its source line.

use std::path::Path;

use kiln_blueprint::{load, LoadError, Vars};
use proptest::prelude::*;

/// Valid Kilnfiles that use every part of the syntax: parser directives, continuations, heredocs, exec
/// form, substitution and kiln's directives.
const SEEDS: [&str; 3] = [
    r#"# syntax=docker/dockerfile:1
ARG site=example.org
ARG suite=bookworm
FROM --variant=standard --components=main,contrib debian:${suite}
LABEL org.opencontainers.image.title=web \
      org.opencontainers.image.version=1.0.0 \
      org.opencontainers.image.description="a ${site:-web} server" team='core'
ENV LANG=C.UTF-8 SITE=$site
PACKAGES nginx curl
PACKAGES --exclude nano
COPY --template --chmod=0644 --chown=www-data:www-data site.conf.j2 /etc/nginx/sites-available/default
COPY ["html/", "/var/www/html/"]
COPY <<EOF /etc/motd
Welcome to ${SITE}
EOF
RUN <<-SCRIPT
	set -e
	nginx -t
	SCRIPT
RUN ["/bin/echo", "caf\u00e9"]
WORKDIR /srv
USER root:root
SERVICE enable nginx.service
SERVICE mask apt-daily.timer
SYSTEM hostname=web timezone=Etc/UTC cmdline="console=ttyS0 quiet"
DISK size=auto esp=256M root=ext4 partition=srv:1G:srv:ext4
CONTRACT base-os@^1 web-server@^1
OUTPUT raw qcow2:zstd oci
LIFECYCLE support-months=12 deprecate-after-days=30
EXPOSE 80/tcp 443
ENTRYPOINT ["/usr/sbin/nginx"]
CMD ["-g", "daemon off;"]
"#,
    "# escape=`\nFROM catalog:debian-minimal@stable\nLABEL org.opencontainers.image.title=win `\n  org.opencontainers.image.version=2.0.0\nRUN echo C:\\path `\n  && cat <<'X' > /tmp/x\n$literal\nX\nCMD echo done\n",
    "ARG tag=1.0.0\nFROM oci-layout:../out/oci:${tag}\nLABEL org.opencontainers.image.title=derived org.opencontainers.image.version=$tag\nENV A=${missing:-x} B=${A:+y}\nADD rootfs.tar.gz /\nRUN cat <<EOF | sh\necho ${A}\nEOF\n",
];

/// Text that tends to reach the parser's corners.
const PIECES: [&str; 24] = [
    "\\", "`", "\n", "\r\n", "\t", " ", "\"", "'", "$", "${", "}", "${A:-", ":+", "<<", "<<-EOF", "EOF", "[",
    "]", ",", "=", "--", "#", "é", "\u{feff}",
];

#[derive(Debug, Clone)]
enum Damage {
    Insert(usize, String),
    Remove(usize, usize),
    Replace(usize, String),
    CutLine(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    let piece = prop_oneof![
        proptest::sample::select(PIECES.to_vec()).prop_map(str::to_owned),
        any::<char>().prop_map(String::from),
    ];
    prop_oneof![
        (any::<usize>(), piece.clone()).prop_map(|(at, p)| Damage::Insert(at, p)),
        (any::<usize>(), 1usize..40).prop_map(|(at, n)| Damage::Remove(at, n)),
        (any::<usize>(), piece).prop_map(|(at, p)| Damage::Replace(at, p)),
        any::<usize>().prop_map(Damage::CutLine),
    ]
}

/// `at` moved down to a character boundary of `s`.
fn boundary(s: &str, at: usize) -> usize {
    let mut at = at % (s.len() + 1);
    while !s.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(mut s: String, d: &Damage) -> String {
    match d {
        Damage::Insert(at, p) => {
            let at = boundary(&s, *at);
            s.insert_str(at, p);
        }
        Damage::Remove(at, n) => {
            let start = boundary(&s, *at);
            let end = boundary(&s, (start + n).min(s.len()));
            s.replace_range(start..end.max(start), "");
        }
        Damage::Replace(at, p) => {
            let start = boundary(&s, *at);
            let end = s[start..].chars().next().map_or(start, |c| start + c.len_utf8());
            s.replace_range(start..end, p);
        }
        Damage::CutLine(n) => {
            let lines: Vec<&str> = s.split_inclusive('\n').collect();
            let k = n % lines.len().max(1);
            s = lines.iter().enumerate().filter(|(i, _)| *i != k).map(|(_, l)| *l).collect();
        }
    }
    s
}

/// Parses `text` as a Kilnfile; every reported problem must lie inside it.
fn check(text: String, vars: &Vars) {
    let len = text.len();
    match load::parse(Path::new("case/Kilnfile"), text, vars) {
        Ok(_) | Err(LoadError::UnknownVar { .. }) => {}
        Err(LoadError::Blueprint(e)) => {
            assert!(!e.diags.is_empty());
            for d in &e.diags {
                assert!(
                    d.span.start <= d.span.end && d.span.end <= len,
                    "span {:?} outside 0..{len}",
                    d.span
                );
                assert!(
                    e.file.text.is_char_boundary(d.span.start) && e.file.text.is_char_boundary(d.span.end)
                );
            }
            let _ = e.to_string();
        }
        Err(other) => panic!("unexpected error: {other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn kilnfile_parser_never_panics(
        text in "(?s).{0,400}",
        words in proptest::collection::vec(proptest::sample::select(PIECES.to_vec()), 0..40),
        seed in 0..SEEDS.len(),
        damages in proptest::collection::vec(damage(), 1..8),
        override_site in proptest::option::of("[a-z$`\\\\{}]{0,8}"),
    ) {
        // Arbitrary text, and arbitrary text made of the syntax's own pieces.
        check(text, &Vars::new());
        check(words.concat(), &Vars::new());
        // A valid Kilnfile with damage, with and without a `--var` override.
        let mutated = damages.iter().fold(SEEDS[seed].to_owned(), apply);
        let vars: Vars = override_site.map(|v| [("site".to_owned(), v)].into()).unwrap_or_default();
        check(mutated, &vars);
    }
}

#[test]
fn the_seeds_are_valid_kilnfiles() {
    for seed in SEEDS {
        if let Err(e) = load::parse(Path::new("case/Kilnfile"), seed.to_owned(), &Vars::new()) {
            panic!("{e}: {e:?}\n{seed}");
        }
    }
}
