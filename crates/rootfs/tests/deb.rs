//! Reading .deb files built by `dpkg-deb` with each compression it offers: the control paragraph, the
//! control members and the data archive are what `dpkg-deb -f`, `-e` and `-c` show.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{run, Pkg};
use kiln_rootfs::deb::{Compression, Deb, DebError};

fn sample() -> Pkg {
    Pkg::new("sample", "1:2.3-4")
        .field("Depends", "libc6 (>= 2.36)")
        .field("Multi-Arch", "same")
        .file_mode("/usr/bin/sample", b"#!/bin/sh\n", 0o755)
        .file("/usr/share/doc/sample/copyright", "free\n")
        .hardlink("/usr/share/doc/sample/copyright-again", "/usr/share/doc/sample/copyright")
        .symlink("/usr/bin/sample-link", "sample")
        .conffile("/etc/sample.conf", "a = b\n")
        .script("postinst", "#!/bin/sh\nexit 0\n")
        .member("templates", "Template: sample/q\nType: boolean\nDescription: q?\n")
        .member("shlibs", "libsample 1 sample\n")
}

/// `dpkg-deb -c` lines without the date and time columns: `MODE OWNER SIZE PATH [-> TARGET | link to TARGET]`.
fn dpkg_listing(deb: &Path) -> Vec<String> {
    run(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {} {}", f[0], f[1], f[2], f[5..].join(" "))
        })
        .collect()
}

/// The same view of the data archive, through the crate's reader.
fn our_listing(deb: &Deb) -> Vec<String> {
    deb.with_data(|tar| -> Result<Vec<String>, DebError> {
        let mut out = Vec::new();
        for entry in tar.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            let kind = match h.entry_type() {
                tar::EntryType::Directory => 'd',
                tar::EntryType::Symlink => 'l',
                tar::EntryType::Link => 'h',
                _ => '-',
            };
            let mode = h.mode().unwrap();
            let perms: String =
                (0..9).map(|i| if mode & (0o400 >> i) != 0 { ['r', 'w', 'x'][i % 3] } else { '-' }).collect();
            let owner = format!("{}/{}", h.username().unwrap().unwrap(), h.groupname().unwrap().unwrap());
            let path = entry.path().unwrap().display().to_string();
            let link = entry.link_name().unwrap().map(|l| l.display().to_string());
            let tail = match (kind, link) {
                ('l', Some(t)) => format!(" -> {t}"),
                ('h', Some(t)) => format!(" link to {t}"),
                _ => String::new(),
            };
            out.push(format!("{kind}{perms} {owner} {} {path}{tail}", h.size().unwrap()));
        }
        Ok(out)
    })
    .unwrap()
}

#[test]
fn reads_every_compression_like_dpkg_deb() {
    let dir = tempfile::tempdir().unwrap();
    for (option, compression) in [
        ("xz", Compression::Xz),
        ("zstd", Compression::Zstd),
        ("gzip", Compression::Gzip),
        ("none", Compression::None),
    ] {
        let out = dir.path().join(option);
        std::fs::create_dir(&out).unwrap();
        let path = sample().build(&out, option);
        let deb = Deb::open(&path).unwrap();
        assert_eq!(deb.data_compression, compression, "{option}");
        assert_eq!(
            (deb.name.as_str(), deb.version.as_str(), deb.architecture.as_str()),
            ("sample", "1:2.3-4", "amd64")
        );
        assert_eq!(deb.db_name(), "sample:amd64");
        for field in ["Package", "Version", "Depends", "Multi-Arch", "Description"] {
            let expected = run(Command::new("dpkg-deb").arg("-f").arg(&path).arg(field));
            let expected =
                expected.trim_end_matches('\n').trim_start_matches(&format!("{field}: ")).to_owned();
            assert_eq!(deb.control.get(field), Some(expected.as_str()), "{option}: {field}");
        }

        // Control members: what `dpkg-deb -e` extracts, bytes and modes, but `control` itself.
        let extracted = out.join("control");
        run(Command::new("dpkg-deb").arg("-e").arg(&path).arg(&extracted));
        let mut names: Vec<String> = std::fs::read_dir(&extracted)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "control")
            .collect();
        names.sort();
        let mut ours: Vec<String> = deb.members.iter().map(|m| m.name.clone()).collect();
        ours.sort();
        assert_eq!(ours, names, "{option}");
        for m in &deb.members {
            let p = extracted.join(&m.name);
            assert_eq!(m.data, std::fs::read(&p).unwrap(), "{option}: {}", m.name);
            assert_eq!(
                m.mode,
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
                "{option}: {}",
                m.name
            );
        }
        let conffiles: Vec<String> = deb.conffiles().into_iter().map(|c| c.path).collect();
        assert_eq!(conffiles, ["/etc/sample.conf"]);

        assert_eq!(our_listing(&deb), dpkg_listing(&path), "{option}");
    }
}

#[test]
fn broken_packages_are_reported_with_their_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.deb");
    std::fs::write(&path, "!<arch>\n").unwrap();
    let err = Deb::open(&path).unwrap_err();
    assert!(matches!(&err, DebError::Format { path: p, .. } if p == &path), "{err}");
    assert!(err.to_string().contains("broken.deb"), "{err}");

    let missing = Deb::open(&dir.path().join("missing.deb")).unwrap_err();
    assert!(matches!(missing, DebError::Io { .. }), "{missing}");

    // A package whose control file lacks a Version.
    let good = sample().build(dir.path(), "gzip");
    let stage = dir.path().join("stage");
    run(Command::new("dpkg-deb").arg("-R").arg(&good).arg(&stage));
    let control = std::fs::read_to_string(stage.join("DEBIAN/control")).unwrap();
    let without: String =
        control.lines().filter(|l| !l.starts_with("Version:")).map(|l| format!("{l}\n")).collect();
    std::fs::write(stage.join("DEBIAN/control"), without).unwrap();
    let bad = dir.path().join("noversion.deb");
    // dpkg-deb checks control files unless told not to.
    let built =
        Command::new("dpkg-deb").args(["--build", "--nocheck"]).arg(&stage).arg(&bad).output().unwrap();
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    let err = Deb::open(&bad).unwrap_err();
    assert!(matches!(&err, DebError::Control { .. }), "{err}");
    assert!(err.to_string().contains("Version"), "{err}");
}
