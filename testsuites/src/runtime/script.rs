//! The guest side of the runtime checks, as text: the shell script that collects observations in the
//! booted VM ([`check_script`]), and the reader of its answers ([`parse_answers`]). Both are pure.
//!
//! The script only observes (unit states, `/proc` files, a command's exit code and output); the host judges
//! the observations ([`super::evaluate`]), so that matching rules (Rust regular expressions, globs, port
//! parsing) live in tested Rust code and the script stays small enough for a minimal image (`sh`, coreutils,
//! `systemctl`; no `ss`, no agent).
//!
//! The answers come as lines on the guest's second serial port (other output, e.g. the firmware's, may be
//! mixed in and is ignored):
//!
//! ```text
//! KILN-BEGIN <uptime>                  the script started
//! KILN-OBS boot <name> <base64>        an observation about the boot itself
//! KILN-SETTLED <uptime>                the boot's jobs are done (or the wait ran out)
//! KILN-OBS <index> <name> <base64>     an observation for check <index>
//! KILN-END <index> <start> <end>       check <index> is complete (uptimes, seconds)
//! KILN-DONE
//! ```

use std::collections::BTreeMap;

use base64::Engine as _;
use kiln_contract::{Check, Protocol};

/// The serial number of the drive that holds the script: the guest finds it as `/dev/disk/by-id/virtio-…`.
pub const SCRIPT_DRIVE_SERIAL: &str = "kiln-checks";

/// Limits the script enforces in the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScriptSettings {
    /// Stop waiting for the boot's jobs this many seconds after the kernel started, and check anyway.
    pub settle_secs: u64,
    /// A `command` check is stopped (`timeout`) after this many seconds.
    pub command_timeout_secs: u64,
    /// At most this many bytes of a command's output (or a status text) come back.
    pub output_limit: usize,
}

impl Default for ScriptSettings {
    fn default() -> Self {
        Self { settle_secs: 240, command_timeout_secs: 60, output_limit: 16 * 1024 }
    }
}

/// A string as one shell word.
pub(crate) fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// An id reduced to characters that are safe in a comment line.
fn comment_safe(s: &str) -> String {
    s.chars().map(|c| if c.is_ascii_alphanumeric() || "._@:-".contains(c) { c } else { '_' }).collect()
}

const PROLOGUE: &str = r#"#!/bin/sh
# kiln's runtime checks, generated for one boot. systemd-run-generator runs this script (through the
# systemd.run= kernel parameter) as kernel-command-line.service. It only collects observations and sends
# them to the host on the second serial port; the host judges them.
exec >/dev/ttyS1
stty -F /dev/ttyS1 raw -echo 2>/dev/null
up() { read -r u _ </proc/uptime; echo "$u"; }
obs() { printf 'KILN-OBS %s %s ' "$1" "$2"; base64 -w0; echo; }
echo "KILN-BEGIN $(up)"

# systemd-run-generator made kernel-command-line.target the default target: start the image's own one, as
# its unit files name it, so that the image boots as it would.
default=
for d in /etc/systemd/system /usr/local/lib/systemd/system /lib/systemd/system /usr/lib/systemd/system; do
  if [ -e "$d/default.target" ]; then
    default=$(readlink -f "$d/default.target")
    default=${default##*/}
    break
  fi
done
printf '%s' "$default" | obs boot default-target
[ -n "$default" ] && systemctl start --no-block "$default"
"#;

/// The script that collects the observations for `checks` (numbered in order); every check must be a
/// runtime one (others get a comment and no observation).
pub fn check_script(checks: &[(&str, &Check)], settings: &ScriptSettings) -> String {
    let mut s = String::from(PROLOGUE);
    s.push_str(&format!(
        r#"
# Wait for the boot to settle: no job left but this script's own, or {settle} s after the kernel started.
while :; do
  jobs=$(systemctl list-jobs --no-legend --plain | grep -v ' kernel-command-line\.')
  [ -z "$jobs" ] && break
  now=$(up)
  [ "${{now%.*}}" -ge {settle} ] && break
  sleep 1
done
printf '%s' "$jobs" | obs boot pending-jobs
echo "KILN-SETTLED $(up)"
"#,
        settle = settings.settle_secs
    ));
    let limit = settings.output_limit;
    for (i, (id, check)) in checks.iter().enumerate() {
        s.push_str(&format!("\n# {i}: {} ({})\nt=$(up)\n", comment_safe(id), check.kind()));
        match check {
            Check::BootTarget { target, .. } => {
                s.push_str(&format!(
                    "systemctl show --property=LoadState,ActiveState,ActiveEnterTimestampMonotonic -- {} | obs {i} show\n",
                    sh_quote(target)
                ));
            }
            Check::UnitActive { unit } => {
                let u = sh_quote(unit);
                s.push_str(&format!("systemctl is-active -- {u} | obs {i} state\n"));
                s.push_str(&format!(
                    "systemctl status --no-pager --full --lines=10 -- {u} 2>&1 | head -c {limit} | obs {i} status\n"
                ));
            }
            Check::PortListening { protocol, .. } => {
                let p = match protocol {
                    Protocol::Tcp => "tcp",
                    Protocol::Udp => "udp",
                };
                for f in [p.to_owned(), format!("{p}6")] {
                    s.push_str(&format!("[ -r /proc/net/{f} ] && obs {i} {f} </proc/net/{f}\n"));
                }
            }
            Check::Command { run, .. } => {
                let out = format!("/run/kiln-check-{i}.out");
                s.push_str(&format!(
                    "timeout -k 5 {} /bin/sh -c {} </dev/null >{out} 2>&1\n",
                    settings.command_timeout_secs,
                    sh_quote(run)
                ));
                s.push_str(&format!("echo $? | obs {i} exit\n"));
                s.push_str(&format!("wc -c <{out} | obs {i} bytes\n"));
                s.push_str(&format!("head -c {limit} {out} | obs {i} output\n"));
                s.push_str(&format!("rm -f {out}\n"));
            }
            Check::KernelCmdline { .. } => {
                s.push_str(&format!("obs {i} cmdline </proc/cmdline\n"));
            }
            Check::NoFailedUnits { .. } => {
                s.push_str(&format!(
                    "systemctl list-units --failed --plain --no-legend --full | obs {i} failed\n"
                ));
                s.push_str(&format!(
                    "systemctl list-units --failed --plain --no-legend --full | while read -r u _; do\n  \
                     systemctl status --no-pager --full --lines=5 -- \"$u\"\ndone 2>&1 | head -c {limit} | obs {i} status\n"
                ));
            }
            other => {
                s.push_str(&format!("# not a runtime check ({}): nothing to observe\n", other.kind()));
            }
        }
        s.push_str(&format!("echo \"KILN-END {i} $t $(up)\"\n"));
    }
    s.push_str("\necho KILN-DONE\nexit 0\n");
    s
}

/// The kernel command line words that make systemd run the script from the drive with serial
/// [`SCRIPT_DRIVE_SERIAL`] (its first `len` bytes). No `$` or `%`: systemd would expand them in `ExecStart=`.
pub fn run_parameter(len: usize) -> String {
    let dev = format!("/dev/disk/by-id/virtio-{SCRIPT_DRIVE_SERIAL}");
    format!(
        "systemd.run=\"/bin/sh -c 'udevadm wait --timeout=60 {dev} && head -c {len} {dev} >/run/kiln-checks.sh && exec /bin/sh /run/kiln-checks.sh'\""
    )
}

/// What one check sent back.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckAnswer {
    /// Observations by name (decoded bytes).
    pub observed: BTreeMap<String, Vec<u8>>,
    /// Uptimes (s) when the check started and ended, once it ended.
    pub span: Option<(f64, f64)>,
}

impl CheckAnswer {
    /// An observation as text (lossy UTF-8).
    pub fn text(&self, name: &str) -> Option<String> {
        self.observed.get(name).map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// Everything the script sent back, as far as it got.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answers {
    /// Uptime (s) when the script started; `None`: it never did (the image did not boot that far).
    pub begun: Option<f64>,
    /// Uptime (s) when the boot settled (or the wait ran out).
    pub settled: Option<f64>,
    /// Observations about the boot (`default-target`, `pending-jobs`).
    pub boot: BTreeMap<String, Vec<u8>>,
    pub checks: BTreeMap<usize, CheckAnswer>,
    pub done: bool,
    /// Lines that looked like answers but could not be read.
    pub garbled: Vec<String>,
}

impl Answers {
    pub fn boot_text(&self, name: &str) -> Option<String> {
        self.boot.get(name).map(|b| String::from_utf8_lossy(b).into_owned())
    }
}

/// Reads the second serial port's text.
pub fn parse_answers(text: &str) -> Answers {
    let mut a = Answers::default();
    for raw in text.lines() {
        let Some(at) = raw.find("KILN-") else { continue };
        let line = raw[at..].trim_end();
        let words: Vec<&str> = line.split(' ').collect();
        let ok = match words.as_slice() {
            ["KILN-BEGIN", up] => up.parse().map(|u| a.begun = Some(u)).is_ok(),
            ["KILN-SETTLED", up] => up.parse().map(|u| a.settled = Some(u)).is_ok(),
            ["KILN-DONE"] => {
                a.done = true;
                true
            }
            ["KILN-OBS", who, name, value @ ..] if value.len() <= 1 => {
                let b64 = value.first().copied().unwrap_or("");
                match base64::engine::general_purpose::STANDARD.decode(b64) {
                    Ok(bytes) if *who == "boot" => {
                        a.boot.insert((*name).to_owned(), bytes);
                        true
                    }
                    Ok(bytes) => match who.parse::<usize>() {
                        Ok(i) => {
                            a.checks.entry(i).or_default().observed.insert((*name).to_owned(), bytes);
                            true
                        }
                        Err(_) => false,
                    },
                    Err(_) => false,
                }
            }
            ["KILN-END", i, start, end] => match (i.parse::<usize>(), start.parse(), end.parse()) {
                (Ok(i), Ok(s), Ok(e)) => {
                    a.checks.entry(i).or_default().span = Some((s, e));
                    true
                }
                _ => false,
            },
            _ => false,
        };
        if !ok {
            a.garbled.push(line.to_owned());
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_kinds() -> Vec<(String, Check)> {
        vec![
            ("boots".into(), Check::BootTarget { target: "multi-user.target".into(), within_secs: 120 }),
            ("sshd-up".into(), Check::UnitActive { unit: "ssh.service".into() }),
            ("ssh-port".into(), Check::PortListening { port: 22, protocol: Protocol::Tcp }),
            ("dns-port".into(), Check::PortListening { port: 53, protocol: Protocol::Udp }),
            (
                "it's quoted".into(),
                Check::Command {
                    run: "echo 'hello' && test \"$HOME\" != /root; exit 2".into(),
                    exit_code: 2,
                    output: Some("^hello$".into()),
                },
            ),
            ("cmdline".into(), Check::KernelCmdline { contains: vec!["root=".into()], absent: vec![] }),
            ("healthy".into(), Check::NoFailedUnits { allow: vec!["e2scrub*".into()] }),
        ]
    }

    #[test]
    fn script_for_every_runtime_kind() {
        let checks = all_kinds();
        let refs: Vec<(&str, &Check)> = checks.iter().map(|(i, c)| (i.as_str(), c)).collect();
        insta::assert_snapshot!(check_script(&refs, &ScriptSettings::default()));
    }

    #[test]
    fn the_script_is_valid_sh_and_commands_survive_quoting() {
        let checks = all_kinds();
        let refs: Vec<(&str, &Check)> = checks.iter().map(|(i, c)| (i.as_str(), c)).collect();
        let script = check_script(&refs, &ScriptSettings::default());
        let dir = std::env::temp_dir().join(format!("kiln-script-test-{}", std::process::id()));
        fs_err::create_dir_all(&dir).unwrap();
        let path = dir.join("checks.sh");
        fs_err::write(&path, &script).unwrap();
        let syntax = std::process::Command::new("sh").arg("-n").arg(&path).output().unwrap();
        assert!(syntax.status.success(), "{}", String::from_utf8_lossy(&syntax.stderr));
        // The command a contract gives runs as written, quotes and all.
        let Check::Command { run, .. } = &checks[4].1 else { unreachable!() };
        let out = std::process::Command::new("sh").arg("-c").arg(format!("sh -c {}", sh_quote(run))).output();
        let out = out.unwrap();
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
        let _ = fs_err::remove_dir_all(&dir);
    }

    #[test]
    fn the_run_parameter_has_nothing_systemd_would_expand() {
        let p = run_parameter(1234);
        assert!(!p.contains('$') && !p.contains('%'), "{p}");
        assert!(p.starts_with("systemd.run=\"") && p.ends_with('"') && p.matches('"').count() == 2, "{p}");
        assert!(p.contains("head -c 1234 /dev/disk/by-id/virtio-kiln-checks"), "{p}");
    }

    #[test]
    fn answers_are_read_past_other_output_on_the_port() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let text = format!(
            "\u{1b}[2J firmware noise EFI stub: Loaded initrd\nKILN-BEGIN 27.15\nKILN-OBS boot default-target {}\n\
             KILN-OBS boot pending-jobs \nKILN-SETTLED 35.10\nKILN-OBS 0 state {}\nKILN-END 0 35.10 35.22\n\
             KILN-OBS 1 exit {}\nKILN-OBS 1 output @@@\nKILN-END 1 x 2\nKILN-DONE\n",
            b64("graphical.target"),
            b64("inactive\n"),
            b64("1\n")
        );
        let a = parse_answers(&text);
        assert_eq!((a.begun, a.settled, a.done), (Some(27.15), Some(35.10), true));
        assert_eq!(a.boot_text("default-target").as_deref(), Some("graphical.target"));
        assert_eq!(a.boot_text("pending-jobs").as_deref(), Some(""));
        assert_eq!(a.checks[&0].text("state").as_deref(), Some("inactive\n"));
        assert_eq!(a.checks[&0].span, Some((35.10, 35.22)));
        assert_eq!(a.checks[&1].text("exit").as_deref(), Some("1\n"));
        assert_eq!(a.checks[&1].span, None);
        assert_eq!(a.garbled, ["KILN-OBS 1 output @@@", "KILN-END 1 x 2"]);
        assert_eq!(parse_answers("no answers at all\n"), Answers::default());
    }
}
