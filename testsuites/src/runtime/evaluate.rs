//! Judging a runtime check from what the guest observed (pure): Pass, or Fail with the evidence (expected
//! vs found); an error when an observation the check needs is missing or unreadable (the checker broke,
//! not the image).

use kiln_contract::{Check, Protocol};

use super::script::CheckAnswer;
use crate::outcome::{CheckError, Outcome};

/// At most this many characters of a command's output or a status text go into evidence.
const EVIDENCE_CHARS: usize = 2000;

/// What the host knows that the guest does not.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// What the runner appended to the image's kernel command line (removed before judging it).
    pub added_cmdline: &'a str,
    /// The wait for the boot's jobs: when it ended (uptime, s) and the jobs still pending then.
    pub settled: Option<f64>,
    pub pending_jobs: &'a str,
    pub command_timeout_secs: u64,
}

/// What a check expects, in words (the `expected` of a Fail).
pub fn describe(check: &Check) -> String {
    match check {
        Check::BootTarget { target, within_secs } => {
            format!("{target} reached within {within_secs} s of boot")
        }
        Check::UnitActive { unit } => format!("{unit} active"),
        Check::PortListening { port, protocol } => {
            format!("something listening on {} port {port}", proto(*protocol))
        }
        Check::Command { run, exit_code, output } => match output {
            Some(re) => format!("`{run}` exits with {exit_code} and its output matches /{re}/"),
            None => format!("`{run}` exits with {exit_code}"),
        },
        Check::KernelCmdline { contains, absent } => {
            let mut parts = Vec::new();
            if !contains.is_empty() {
                parts.push(format!("with {}", contains.join(" ")));
            }
            if !absent.is_empty() {
                parts.push(format!("without {}", absent.join(" ")));
            }
            format!("a kernel command line {}", parts.join(" and "))
        }
        Check::NoFailedUnits { allow } if allow.is_empty() => "no failed units".to_owned(),
        Check::NoFailedUnits { allow } => format!("no failed units but {}", allow.join(", ")),
        other => format!("a {} check (not a runtime check)", other.kind()),
    }
}

fn proto(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

fn need(answer: &CheckAnswer, name: &str) -> Result<String, CheckError> {
    answer.text(name).ok_or_else(|| CheckError::new(format!("the guest sent no `{name}` observation")))
}

/// At most [`EVIDENCE_CHARS`] characters of `text`, saying so when it was cut.
fn excerpt(text: &str) -> String {
    let text = text.trim_end();
    match text.char_indices().nth(EVIDENCE_CHARS) {
        Some((at, _)) => format!("{}\n[… cut at {EVIDENCE_CHARS} characters]", &text[..at]),
        None => text.to_owned(),
    }
}

/// Judge one check from its answer.
pub fn evaluate(check: &Check, answer: &CheckAnswer, ctx: &Context<'_>) -> Result<Outcome, CheckError> {
    let expected = describe(check);
    match check {
        Check::BootTarget { within_secs, .. } => {
            let show = need(answer, "show")?;
            let prop =
                |k: &str| show.lines().find_map(|l| l.strip_prefix(k)?.strip_prefix('=')).unwrap_or("");
            let entered: u64 = prop("ActiveEnterTimestampMonotonic").trim().parse().map_err(|_| {
                CheckError::new(format!("unreadable ActiveEnterTimestampMonotonic in `{}`", show.trim()))
            })?;
            if prop("LoadState") == "not-found" {
                return Ok(Outcome::fail(expected, "no such unit (LoadState=not-found)"));
            }
            if entered == 0 {
                let mut found = format!("not reached (ActiveState={})", prop("ActiveState"));
                if let Some(s) = ctx.settled {
                    found.push_str(&format!(" when the boot settled {s:.1} s after the kernel started"));
                }
                if !ctx.pending_jobs.trim().is_empty() {
                    found.push_str(&format!("; jobs still pending then:\n{}", ctx.pending_jobs.trim_end()));
                }
                return Ok(Outcome::fail(expected, found));
            }
            let secs = entered as f64 / 1e6;
            Ok(Outcome::pass_if(secs <= *within_secs as f64, expected, format!("reached after {secs:.1} s")))
        }
        Check::UnitActive { .. } => {
            let state = need(answer, "state")?;
            let state = state.trim();
            if state == "active" {
                return Ok(Outcome::Pass);
            }
            let status = answer.text("status").unwrap_or_default();
            Ok(Outcome::fail(expected, format!("{state}; systemctl status:\n{}", excerpt(&status))))
        }
        Check::PortListening { port, protocol } => {
            let p = proto(*protocol);
            let tables: Vec<String> =
                [p.to_owned(), format!("{p}6")].iter().filter_map(|f| answer.text(f)).collect();
            if tables.is_empty() {
                return Err(CheckError::new(format!(
                    "the guest sent neither /proc/net/{p} nor /proc/net/{p}6"
                )));
            }
            let mut ports = Vec::new();
            for t in &tables {
                ports.extend(listening_ports(t, *protocol).map_err(CheckError::new)?);
            }
            ports.sort_unstable();
            ports.dedup();
            if ports.contains(port) {
                return Ok(Outcome::Pass);
            }
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            let list = if list.is_empty() { "none".to_owned() } else { list.join(", ") };
            Ok(Outcome::fail(expected, format!("nothing on {p} port {port}; listening {p} ports: {list}")))
        }
        Check::Command { exit_code, output, .. } => {
            let code: i32 = need(answer, "exit")?
                .trim()
                .parse()
                .map_err(|_| CheckError::new("unreadable exit code from the guest"))?;
            let text = answer.text("output").unwrap_or_default();
            let bytes: usize = answer.text("bytes").and_then(|b| b.trim().parse().ok()).unwrap_or(text.len());
            let re = match output {
                Some(re) => Some(
                    regex::Regex::new(re)
                        .map_err(|e| CheckError::new(format!("invalid output regex /{re}/: {e}")))?,
                ),
                None => None,
            };
            // Matched without the trailing newlines, so that `$` ends the last line as one expects.
            let matches = re.as_ref().is_none_or(|re| re.is_match(text.trim_end_matches(['\n', '\r'])));
            if code == *exit_code && matches {
                return Ok(Outcome::Pass);
            }
            let mut found = format!("exit code {code}");
            if code == 124 {
                found.push_str(&format!(
                    " (also what `timeout` gives a command still running after {} s)",
                    ctx.command_timeout_secs
                ));
            }
            if code == *exit_code && !matches {
                found.push_str(", output not matching");
            }
            let cut = if bytes > text.len() {
                format!(" (first {} of {bytes} bytes)", text.len())
            } else {
                String::new()
            };
            found.push_str(&format!("; output{cut}:\n{}", excerpt(&text)));
            Ok(Outcome::fail(expected, found))
        }
        Check::KernelCmdline { contains, absent } => {
            let seen = need(answer, "cmdline")?;
            let own = image_cmdline(&seen, ctx.added_cmdline);
            let words = cmdline_words(&own);
            let has = |want: &String| words.iter().any(|w| word_matches(want, w));
            let missing: Vec<&str> = contains.iter().filter(|w| !has(w)).map(String::as_str).collect();
            let present: Vec<&str> = absent.iter().filter(|w| has(w)).map(String::as_str).collect();
            if missing.is_empty() && present.is_empty() {
                return Ok(Outcome::Pass);
            }
            let mut found = Vec::new();
            if !missing.is_empty() {
                found.push(format!("missing {}", missing.join(" ")));
            }
            if !present.is_empty() {
                found.push(format!("present {}", present.join(" ")));
            }
            Ok(Outcome::fail(expected, format!("{} in `{own}`", found.join(", "))))
        }
        Check::NoFailedUnits { allow } => {
            let listed = need(answer, "failed")?;
            let failed: Vec<&str> = listed
                .lines()
                .filter_map(|l| l.split_whitespace().next())
                .filter(|u| !allow.iter().any(|a| glob_match(a, u)))
                .collect();
            if failed.is_empty() {
                return Ok(Outcome::Pass);
            }
            let status = answer.text("status").unwrap_or_default();
            Ok(Outcome::fail(
                expected,
                format!("failed: {}; systemctl status:\n{}", failed.join(", "), excerpt(&status)),
            ))
        }
        other => Err(CheckError::new(format!("`{}` is not a runtime check", other.kind()))),
    }
}

/// The ports of the sockets listening in a `/proc/net/{tcp,tcp6,udp,udp6}` table: TCP sockets in the
/// LISTEN state (`0A`), UDP sockets that are bound and not connected (`07`).
pub fn listening_ports(table: &str, protocol: Protocol) -> Result<Vec<u16>, String> {
    let state = match protocol {
        Protocol::Tcp => "0A",
        Protocol::Udp => "07",
    };
    let mut ports = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 {
            continue;
        }
        let port = f[1].rsplit(':').next().and_then(|h| u16::from_str_radix(h, 16).ok());
        let Some(port) = port else {
            return Err(format!("unreadable local address `{}` in a /proc/net table", f[1]));
        };
        if f[3] == state {
            ports.push(port);
        }
    }
    Ok(ports)
}

/// The image's own command line: what the kernel saw, less what the runner appended (the firmware may
/// add more after it, e.g. OVMF's `initrd=initrd`, as systemd-boot adds `initrd=…` in a plain boot).
pub fn image_cmdline(seen: &str, added: &str) -> String {
    let seen = seen.trim_end_matches(['\n', '\0', ' ']);
    match seen.find(added).filter(|_| !added.is_empty()) {
        Some(at) => format!("{}{}", seen[..at].trim_end(), &seen[at + added.len()..]),
        None => seen.to_owned(),
    }
}

/// The words of a kernel command line; a double-quoted part belongs to its word (`a="b c"`).
pub fn cmdline_words(cmdline: &str) -> Vec<&str> {
    let mut words = Vec::new();
    let (mut start, mut quoted) = (None, false);
    for (i, c) in cmdline.char_indices() {
        if c == '"' {
            quoted = !quoted;
        }
        if c.is_whitespace() && !quoted {
            if let Some(s) = start.take() {
                words.push(&cmdline[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        words.push(&cmdline[s..]);
    }
    words
}

/// Whether a command line word is the one a contract names: equal, or, when the name ends with `=`
/// (`root=`), the parameter with any value.
pub fn word_matches(want: &str, word: &str) -> bool {
    word == want || (want.ends_with('=') && word.starts_with(want))
}

/// A glob with `*` (any run of characters) and `?` (one character), matched against the whole text.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(pairs: &[(&str, &str)]) -> CheckAnswer {
        CheckAnswer {
            observed: pairs.iter().map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec())).collect(),
            span: Some((30.0, 30.5)),
        }
    }

    const ADDED: &str = "systemd.run=\"/bin/sh -c 'x'\"";

    fn ctx() -> Context<'static> {
        Context { added_cmdline: ADDED, settled: Some(61.2), pending_jobs: "", command_timeout_secs: 60 }
    }

    fn fail(o: Result<Outcome, CheckError>) -> (String, String) {
        match o.unwrap() {
            Outcome::Fail { expected, found } => (expected, found),
            other => panic!("expected a Fail, got {other:?}"),
        }
    }

    #[test]
    fn boot_target_is_judged_by_its_activation_time() {
        let check = Check::BootTarget { target: "multi-user.target".into(), within_secs: 60 };
        let show = |t: &str| {
            answer(&[(
                "show",
                &format!("LoadState=loaded\nActiveState=active\nActiveEnterTimestampMonotonic={t}\n"),
            )])
        };
        assert_eq!(evaluate(&check, &show("34209387"), &ctx()), Ok(Outcome::Pass));
        let (expected, found) = fail(evaluate(&check, &show("75000000"), &ctx()));
        assert_eq!(expected, "multi-user.target reached within 60 s of boot");
        assert_eq!(found, "reached after 75.0 s");
        let never =
            answer(&[("show", "LoadState=loaded\nActiveState=inactive\nActiveEnterTimestampMonotonic=0\n")]);
        let c = Context { pending_jobs: "7 multi-user.target start waiting\n", ..ctx() };
        let (_, found) = fail(evaluate(&check, &never, &c));
        assert_eq!(
            found,
            "not reached (ActiveState=inactive) when the boot settled 61.2 s after the kernel started; jobs still \
             pending then:\n7 multi-user.target start waiting"
        );
        let missing =
            answer(&[("show", "LoadState=not-found\nActiveState=inactive\nActiveEnterTimestampMonotonic=0")]);
        assert_eq!(fail(evaluate(&check, &missing, &ctx())).1, "no such unit (LoadState=not-found)");
        assert!(evaluate(&check, &answer(&[]), &ctx()).is_err(), "no observation: the checker broke");
    }

    #[test]
    fn unit_active_fails_with_the_state_and_status() {
        let check = Check::UnitActive { unit: "ssh.service".into() };
        assert_eq!(evaluate(&check, &answer(&[("state", "active\n")]), &ctx()), Ok(Outcome::Pass));
        let a =
            answer(&[("state", "inactive\n"), ("status", "○ ssh.service - OpenBSD Secure Shell server\n")]);
        let (expected, found) = fail(evaluate(&check, &a, &ctx()));
        assert_eq!(expected, "ssh.service active");
        assert_eq!(found, "inactive; systemctl status:\n○ ssh.service - OpenBSD Secure Shell server");
    }

    const TCP: &str =
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
        0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 16779 1\n\
        1: 0100007F:0277 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 0 1\n";
    const TCP6: &str =
        "  sl  local_address                         remote_address                        st\n\
        0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0 0 0 0 0\n";
    const UDP: &str = "  sl  local_address rem_address   st\n\
        5: 00000000:0044 00000000:0000 07 00000000:00000000\n\
        6: 0A00020F:8F3A 08080808:0035 01 00000000:00000000\n";

    #[test]
    fn ports_are_read_from_proc_net_tables() {
        assert_eq!(listening_ports(TCP, Protocol::Tcp).unwrap(), [22], "established 631 is not listening");
        assert_eq!(listening_ports(TCP6, Protocol::Tcp).unwrap(), [8080]);
        assert_eq!(listening_ports(UDP, Protocol::Udp).unwrap(), [68], "a connected socket is not listening");
        assert!(listening_ports("h\n0: zz:zz 0 0A\n", Protocol::Tcp).is_err());
    }

    #[test]
    fn port_listening_lists_what_does_listen() {
        let a = answer(&[("tcp", TCP), ("tcp6", TCP6)]);
        let at = |port| Check::PortListening { port, protocol: Protocol::Tcp };
        assert_eq!(evaluate(&at(22), &a, &ctx()), Ok(Outcome::Pass));
        assert_eq!(evaluate(&at(8080), &a, &ctx()), Ok(Outcome::Pass), "IPv6 sockets count");
        let (expected, found) = fail(evaluate(&at(23), &a, &ctx()));
        assert_eq!(expected, "something listening on tcp port 23");
        assert_eq!(found, "nothing on tcp port 23; listening tcp ports: 22, 8080");
        let udp = Check::PortListening { port: 53, protocol: Protocol::Udp };
        assert_eq!(
            fail(evaluate(&udp, &answer(&[("udp", UDP)]), &ctx())).1,
            "nothing on udp port 53; listening udp ports: 68"
        );
        assert!(evaluate(&udp, &a, &ctx()).is_err(), "no udp table: the checker broke");
    }

    #[test]
    fn command_needs_the_exit_code_and_a_matching_output() {
        let check = |exit_code, output: Option<&str>| Check::Command {
            run: "cat /etc/hostname".into(),
            exit_code,
            output: output.map(str::to_owned),
        };
        let a = answer(&[("exit", "0\n"), ("bytes", "15\n"), ("output", "debian-minimal\n")]);
        assert_eq!(
            evaluate(&check(0, Some(r"^debian-\w+$")), &a, &ctx()),
            Ok(Outcome::Pass),
            "`$` before the last newline"
        );
        assert_eq!(evaluate(&check(0, None), &a, &ctx()), Ok(Outcome::Pass));
        let (expected, found) = fail(evaluate(&check(3, None), &a, &ctx()));
        assert_eq!(expected, "`cat /etc/hostname` exits with 3");
        assert_eq!(found, "exit code 0; output:\ndebian-minimal");
        let (expected, found) = fail(evaluate(&check(0, Some("^web")), &a, &ctx()));
        assert_eq!(expected, "`cat /etc/hostname` exits with 0 and its output matches /^web/");
        assert_eq!(found, "exit code 0, output not matching; output:\ndebian-minimal");
        let cut = answer(&[("exit", "124"), ("bytes", "99999"), ("output", "yes\n")]);
        assert_eq!(
            fail(evaluate(&check(0, None), &cut, &ctx())).1,
            "exit code 124 (also what `timeout` gives a command still running after 60 s); output (first 4 of 99999 \
             bytes):\nyes"
        );
        assert!(evaluate(&check(0, Some("(")), &a, &ctx()).is_err(), "a bad regex is the checker's error");
    }

    #[test]
    fn kernel_cmdline_is_the_images_own() {
        let seen = format!("root=PARTUUID=84f0 console=ttyS0 rw {ADDED} initrd=initrd\n");
        let a = answer(&[("cmdline", &seen)]);
        let check = |contains: &[&str], absent: &[&str]| Check::KernelCmdline {
            contains: contains.iter().map(|s| (*s).to_owned()).collect(),
            absent: absent.iter().map(|s| (*s).to_owned()).collect(),
        };
        assert_eq!(
            evaluate(&check(&["root=", "console=ttyS0", "rw"], &["quiet"]), &a, &ctx()),
            Ok(Outcome::Pass)
        );
        // What the runner added is not the image's: absent stays absent.
        assert_eq!(evaluate(&check(&[], &["systemd.run="]), &a, &ctx()), Ok(Outcome::Pass));
        let (expected, found) = fail(evaluate(&check(&["quiet", "root="], &["rw", "console="]), &a, &ctx()));
        assert_eq!(expected, "a kernel command line with quiet root= and without rw console=");
        assert_eq!(
            found,
            "missing quiet, present rw console= in `root=PARTUUID=84f0 console=ttyS0 rw initrd=initrd`"
        );
        assert_eq!(image_cmdline("a b\n", ""), "a b");
        assert_eq!(cmdline_words(r#"a="b c" d  e"#), [r#"a="b c""#, "d", "e"]);
        assert!(word_matches("console=", "console=ttyS0") && !word_matches("console", "console=ttyS0"));
    }

    #[test]
    fn failed_units_are_listed_with_their_status_unless_allowed() {
        let a = answer(&[
            ("failed", "kiln-fails.service loaded failed failed A unit that fails\ne2scrub_reap.service loaded failed failed x\n"),
            ("status", "× kiln-fails.service - A unit that fails\n"),
        ]);
        let (expected, found) = fail(evaluate(&Check::NoFailedUnits { allow: vec![] }, &a, &ctx()));
        assert_eq!(expected, "no failed units");
        assert_eq!(found, "failed: kiln-fails.service, e2scrub_reap.service; systemctl status:\n× kiln-fails.service - A unit that fails");
        let allowed = Check::NoFailedUnits { allow: vec!["e2scrub*".into(), "kiln-?ails.service".into()] };
        assert_eq!(evaluate(&allowed, &a, &ctx()), Ok(Outcome::Pass));
        assert_eq!(
            evaluate(&Check::NoFailedUnits { allow: vec![] }, &answer(&[("failed", "")]), &ctx()),
            Ok(Outcome::Pass)
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("e2scrub*", "e2scrub_reap.service"));
        assert!(glob_match("*.service", "a.service") && !glob_match("*.service", "a.socket"));
        assert!(glob_match("a*b*c", "aXbYbc") && !glob_match("a*b", "aXbY"));
        assert!(glob_match("*", "") && !glob_match("?", ""));
        // Allowlisted paths of special-files checks: `*` also spans `/`.
        assert!(glob_match("/usr/lib/*/ssh-keysign", "/usr/lib/openssh/ssh-keysign"));
        assert!(glob_match("/tmp", "/tmp") && !glob_match("/tmp", "/tmp/x"));
        assert!(!glob_match("/usr/bin/su", "/usr/bin/sudo"));
    }

    #[test]
    fn long_evidence_is_cut() {
        let long = "x".repeat(EVIDENCE_CHARS + 10);
        let e = excerpt(&long);
        assert!(e.ends_with("[… cut at 2000 characters]") && e.len() < long.len() + 40, "{e}");
    }
}
