//! Unit states set by kiln match what `systemctl --root` makes of the same tree (the host's systemctl is the
//! reference; the test is skipped, saying so, where the host has none).

use std::{path::Path, process::Command};

use kiln_systemd::{etc_links, set_states};

fn unit(root: &Path, dir: &str, name: &str, text: &str) {
    let d = root.join(dir);
    fs_err::create_dir_all(&d).unwrap();
    fs_err::write(d.join(name), text).unwrap();
}

/// A tree with the kinds of units real images have: aliases, Also=, templates with DefaultInstance,
/// RequiredBy, specifiers, a static unit, and a unit that is already enabled.
fn tree(root: &Path) {
    let lib = "lib/systemd/system";
    unit(root, lib, "ssh.service", "[Unit]\nDescription=ssh\n[Service]\nExecStart=/usr/sbin/sshd -D\n[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\nAlso=ssh.socket\n");
    unit(root, lib, "ssh.socket", "[Socket]\nListenStream=22\n[Install]\nWantedBy=sockets.target\n");
    unit(
        root,
        lib,
        "getty@.service",
        "[Service]\nExecStart=/sbin/agetty %I\n[Install]\nWantedBy=getty.target\nDefaultInstance=tty1\n",
    );
    unit(
        root,
        lib,
        "serial-getty@.service",
        "[Service]\nExecStart=/sbin/agetty %I\n[Install]\nWantedBy=getty.target\n",
    );
    unit(root, lib, "nginx.service", "[Service]\nExecStart=/usr/sbin/nginx\n[Install]\nWantedBy=multi-user.target\nRequiredBy=%p-ready.target\n");
    unit(root, lib, "systemd-networkd.service", "[Service]\nExecStart=/lib/systemd/systemd-networkd\n[Install]\nWantedBy=multi-user.target\nAlias=dbus-org.freedesktop.network1.service\nAlso=systemd-networkd.socket\n");
    unit(
        root,
        lib,
        "systemd-networkd.socket",
        "[Socket]\nListenNetlink=route 1361\n[Install]\nWantedBy=sockets.target\n",
    );
    unit(root, lib, "static.service", "[Service]\nExecStart=/bin/true\n");
    unit(
        root,
        lib,
        "cron.service",
        "[Service]\nExecStart=/usr/sbin/cron\n[Install]\nWantedBy=multi-user.target\n",
    );
    unit(root, lib, "apt-daily.timer", "[Timer]\nOnCalendar=daily\n[Install]\nWantedBy=timers.target\n");
    // cron is enabled already, as its postinst would leave it.
    let wants = root.join("etc/systemd/system/multi-user.target.wants");
    fs_err::create_dir_all(&wants).unwrap();
    std::os::unix::fs::symlink("/lib/systemd/system/cron.service", wants.join("cron.service")).unwrap();
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("kiln-services-{name}-{}", std::process::id()));
    let _ = fs_err::remove_dir_all(&d);
    fs_err::create_dir_all(&d).unwrap();
    d
}

fn systemctl(root: &Path, verb: &str, units: &[&str]) {
    let out = Command::new("systemctl")
        .arg(format!("--root={}", root.display()))
        .arg(verb)
        .args(units)
        .output()
        .unwrap();
    assert!(out.status.success(), "systemctl {verb}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn enable_disable_mask_match_systemctl() {
    if Command::new("systemctl").arg("--version").output().is_err() {
        eprintln!("SKIP: the host has no systemctl to compare with (install the systemd package)");
        return;
    }
    let enable = [
        "ssh.service",
        "getty@.service",
        "serial-getty@ttyS0.service",
        "nginx.service",
        "systemd-networkd.service",
        "static.service",
    ];
    let ours = scratch("ours");
    let theirs = scratch("theirs");
    tree(&ours);
    tree(&theirs);

    let to_vec = |s: &[&str]| s.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>();
    let warnings =
        set_states(&ours, &to_vec(&enable), &to_vec(&["cron.service"]), &to_vec(&["apt-daily.timer"]))
            .unwrap();
    assert!(warnings.iter().any(|w| w.contains("static.service")), "{warnings:?}");

    systemctl(&theirs, "disable", &["cron.service"]);
    systemctl(&theirs, "enable", &enable);
    systemctl(&theirs, "mask", &["apt-daily.timer"]);

    assert_eq!(etc_links(&ours), etc_links(&theirs));
    // And what they did is what a user expects.
    let links = etc_links(&ours);
    for want in [
        ("/etc/systemd/system/multi-user.target.wants/ssh.service", "/lib/systemd/system/ssh.service"),
        ("/etc/systemd/system/sshd.service", "/lib/systemd/system/ssh.service"),
        ("/etc/systemd/system/sockets.target.wants/ssh.socket", "/lib/systemd/system/ssh.socket"),
        ("/etc/systemd/system/getty.target.wants/getty@tty1.service", "/lib/systemd/system/getty@.service"),
        (
            "/etc/systemd/system/nginx-ready.target.requires/nginx.service",
            "/lib/systemd/system/nginx.service",
        ),
        ("/etc/systemd/system/apt-daily.timer", "/dev/null"),
    ] {
        assert!(links.contains(&(want.0.to_owned(), want.1.to_owned())), "missing {want:?} in {links:#?}");
    }
    assert!(!links.iter().any(|(p, _)| p.contains("cron.service")), "cron was disabled: {links:#?}");

    // Disabling what was enabled gives systemctl's result too.
    let off = ["ssh.service", "systemd-networkd.service"];
    set_states(&ours, &[], &to_vec(&off), &[]).unwrap();
    systemctl(&theirs, "disable", &off);
    assert_eq!(etc_links(&ours), etc_links(&theirs));
}

#[test]
fn unknown_and_masked_units_are_errors() {
    let root = scratch("errors");
    tree(&root);
    let err = set_states(&root, &["nope.service".to_owned()], &[], &[]).unwrap_err();
    assert!(err.to_string().contains("nope.service"), "{err}");
    set_states(&root, &[], &[], &["cron.service".to_owned()]).unwrap();
    let err = set_states(&root, &["cron.service".to_owned()], &[], &[]).unwrap_err();
    assert!(err.to_string().contains("masked"), "{err}");
}

/// `systemctl --root=ROOT is-enabled UNIT`'s answer.
fn is_enabled(root: &Path, unit: &str) -> String {
    let out = Command::new("systemctl")
        .arg(format!("--root={}", root.display()))
        .args(["is-enabled", unit])
        .output();
    String::from_utf8_lossy(&out.unwrap().stdout).trim().to_owned()
}

#[test]
fn states_read_back_as_systemctl_is_enabled_reports_them() {
    use kiln_systemd::{unit_state, TreeUnits};
    let has_systemctl = Command::new("systemctl").arg("--version").output().is_ok();
    if !has_systemctl {
        eprintln!(
            "SKIP (comparison only): the host has no systemctl to compare with (install the systemd package)"
        );
    }
    let dir = scratch("read-back");
    tree(&dir);
    let units = ["ssh.service", "ssh.socket", "cron.service", "static.service", "apt-daily.timer"];
    let check = |when: &str| {
        for u in units {
            let ours = unit_state(u, &TreeUnits { root: &dir }, &etc_links(&dir)).unwrap();
            if has_systemctl {
                assert_eq!(ours.as_str(), is_enabled(&dir, u), "{u} {when}");
            }
        }
    };
    check("as shipped");
    assert_eq!(
        unit_state("cron.service", &TreeUnits { root: &dir }, &etc_links(&dir)).unwrap().as_str(),
        "enabled"
    );
    set_states(&dir, &["ssh.service".to_owned()], &[], &[]).unwrap();
    check("after enable");
    assert_eq!(
        unit_state("ssh.socket", &TreeUnits { root: &dir }, &etc_links(&dir)).unwrap().as_str(),
        "enabled"
    );
    set_states(&dir, &[], &["ssh.service".to_owned(), "cron.service".to_owned()], &[]).unwrap();
    check("after disable");
    set_states(&dir, &[], &[], &["ssh.service".to_owned()]).unwrap();
    check("after mask");
    assert_eq!(
        unit_state("ssh.service", &TreeUnits { root: &dir }, &etc_links(&dir)).unwrap().as_str(),
        "masked"
    );
    assert!(unit_state("no-such.service", &TreeUnits { root: &dir }, &etc_links(&dir)).is_err());
    let _ = fs_err::remove_dir_all(&dir);
}
