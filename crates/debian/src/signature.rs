//! OpenPGP verification of `InRelease` files by running `gpgv`, the way apt does (see
//! `runbook/decisions/0002-debian-client.md` for why not an in-process OpenPGP stack).
//!
//! `gpgv` runs with a private, empty home directory and only the given keyrings. The verified content
//! is what `gpgv --output` writes, never our own reading of the clear-signed text, so nothing outside
//! the signed part can slip in. Like apt, a file is accepted when at least one signature is good, made
//! by an allowed key with a strong digest, and none is bad; signatures by unknown keys are ignored.
//! ASCII-armored keyrings (`.asc`, inline `Signed-By` blocks) are converted to binary first, as
//! `gpgv` reads only binary keyrings.

use std::{
    io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use thiserror::Error;

/// The keys a signature must come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keys {
    /// Keyring files, binary or ASCII-armored.
    pub files: Vec<PathBuf>,
    /// ASCII-armored public key blocks (from an inline `Signed-By`).
    pub armored: Vec<String>,
    /// If not empty, the signing key (or its primary key) must have one of these fingerprints.
    pub fingerprints: Vec<String>,
}

/// Why a signed file was not accepted.
#[derive(Debug, Error)]
pub enum SignatureError {
    #[error("cannot run gpgv (needed to verify signatures; install the gpgv package): {source}")]
    NoGpgv { source: io::Error },
    #[error("no keyring to verify the signature with")]
    NoKeyring,
    #[error("keyring {} does not exist", path.display())]
    KeyringMissing { path: PathBuf },
    #[error("invalid ASCII-armored key data in {origin}")]
    BadArmor { origin: String },
    #[error("bad signature by key {key}: the signed text was changed")]
    BadSignature { key: String },
    #[error("not signed by any trusted key (signed by {}; keyrings: {})", if keys.is_empty() { "nobody".to_owned() } else { keys.join(", ") }, keyrings.join(", "))]
    UnknownKey { keys: Vec<String>, keyrings: Vec<String> },
    #[error("signature by {key} uses the weak digest algorithm {algorithm}")]
    WeakDigest { key: String, algorithm: &'static str },
    #[error("signature by {key} is not trusted: {reason}")]
    Untrusted { key: String, reason: &'static str },
    #[error("signed by {signer}, which is not one of the allowed fingerprints {allowed:?}")]
    WrongSigner { signer: String, allowed: Vec<String> },
    #[error("gpgv did not verify the file (exit status {status}): {stderr}")]
    Failed { status: String, stderr: String },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A verified clear-signed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The signed text.
    pub content: Vec<u8>,
    /// Fingerprint of the primary key of the (first) good signature.
    pub signer: String,
}

fn normalize_fingerprint(f: &str) -> String {
    f.trim_end_matches('!').chars().filter(|c| !c.is_whitespace()).collect::<String>().to_ascii_uppercase()
}

/// Verifies a clear-signed file (`InRelease`) and returns its signed content.
pub fn verify_clearsigned(data: &[u8], keys: &Keys) -> Result<Verified, SignatureError> {
    if keys.files.is_empty() && keys.armored.is_empty() {
        return Err(SignatureError::NoKeyring);
    }
    let dir = tempfile::Builder::new().prefix("kiln-gpgv").tempdir()?;
    let home = dir.path().join("home");
    fs_err::create_dir(&home)?;
    set_private(&home)?;
    let mut keyrings = Vec::new();
    for (n, file) in keys.files.iter().enumerate() {
        let bytes = match fs_err::read(file) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SignatureError::KeyringMissing { path: file.clone() })
            }
            Err(e) => return Err(e.into()),
        };
        if bytes.starts_with(b"-----BEGIN") {
            let binary = dearmor(&String::from_utf8_lossy(&bytes))
                .ok_or_else(|| SignatureError::BadArmor { origin: file.display().to_string() })?;
            let path = dir.path().join(format!("keyring-{n}.gpg"));
            fs_err::write(&path, binary)?;
            keyrings.push(path);
        } else {
            keyrings.push(absolute(file)?);
        }
    }
    for (n, block) in keys.armored.iter().enumerate() {
        let binary = dearmor(block)
            .ok_or_else(|| SignatureError::BadArmor { origin: "an inline Signed-By key".into() })?;
        let path = dir.path().join(format!("inline-{n}.gpg"));
        fs_err::write(&path, binary)?;
        keyrings.push(path);
    }
    let input = dir.path().join("InRelease");
    let output = dir.path().join("content");
    fs_err::write(&input, data)?;

    let mut cmd = Command::new("gpgv");
    cmd.arg("--homedir").arg(&home).args(["--status-fd", "1", "--output"]).arg(&output);
    for k in &keyrings {
        cmd.arg("--keyring").arg(k);
    }
    cmd.arg(&input).env("LC_ALL", "C").stdin(Stdio::null());
    let out = cmd.output().map_err(|source| SignatureError::NoGpgv { source })?;
    let status = String::from_utf8_lossy(&out.stdout);
    let signer = match judge(&status, &keys.fingerprints) {
        Ok(signer) => signer,
        // No signature status at all: gpgv failed before verifying anything (e.g. not a signed file).
        Err(SignatureError::UnknownKey { keys: ids, .. }) if ids.is_empty() && !out.status.success() => {
            return Err(SignatureError::Failed {
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        Err(SignatureError::UnknownKey { keys: ids, .. }) => {
            let mut keyrings: Vec<String> = keys.files.iter().map(|p| p.display().to_string()).collect();
            keyrings.extend(keys.armored.iter().map(|_| "an inline Signed-By key".to_owned()));
            return Err(SignatureError::UnknownKey { keys: ids, keyrings });
        }
        Err(e) => return Err(e),
    };
    let content = fs_err::read(&output)?;
    Ok(Verified { content, signer })
}

fn absolute(p: &Path) -> io::Result<PathBuf> {
    // gpgv looks a keyring name without a slash up in its home directory.
    if p.is_absolute() {
        Ok(p.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

#[cfg(unix)]
fn set_private(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn set_private(_: &Path) -> io::Result<()> {
    Ok(())
}

/// Decides from gpgv's `--status-fd` lines (see GnuPG's doc/DETAILS) whether a file is accepted;
/// returns the primary-key fingerprint of the accepted signer. Each signature's lines start with
/// `NEWSIG`.
pub fn judge(status: &str, allowed: &[String]) -> Result<String, SignatureError> {
    let allowed: Vec<String> = allowed.iter().map(|f| normalize_fingerprint(f)).collect();
    let mut signatures: Vec<Vec<Vec<&str>>> = vec![Vec::new()];
    for line in status.lines() {
        let Some(rest) = line.strip_prefix("[GNUPG:] ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        if words.first() == Some(&"NEWSIG") {
            signatures.push(Vec::new());
        } else if let Some(last) = signatures.last_mut() {
            last.push(words);
        }
    }
    let mut good = None;
    let mut unknown = Vec::new();
    let mut rejected = None;
    for lines in signatures.iter().filter(|s| !s.is_empty()) {
        let mut verdict: Option<Result<(), SignatureError>> = None;
        let mut valid: Option<(&str, &str, &str)> = None;
        for words in lines {
            match words.as_slice() {
                ["BADSIG", key, ..] => return Err(SignatureError::BadSignature { key: (*key).to_owned() }),
                ["GOODSIG", ..] => verdict = verdict.or(Some(Ok(()))),
                ["EXPKEYSIG", key, ..] => {
                    verdict = Some(Err(SignatureError::Untrusted {
                        key: (*key).to_owned(),
                        reason: "the key has expired",
                    }))
                }
                ["REVKEYSIG", key, ..] => {
                    verdict = Some(Err(SignatureError::Untrusted {
                        key: (*key).to_owned(),
                        reason: "the key was revoked",
                    }))
                }
                ["EXPSIG", key, ..] => {
                    verdict = Some(Err(SignatureError::Untrusted {
                        key: (*key).to_owned(),
                        reason: "the signature has expired",
                    }))
                }
                ["ERRSIG", key, ..] => unknown.push((*key).to_owned()),
                ["VALIDSIG", fpr, _date, _ts, _expire, _ver, _reserved, _pk, hash, _class, rest @ ..] => {
                    valid = Some((fpr, rest.first().copied().unwrap_or(fpr), hash));
                }
                _ => {}
            }
        }
        let (Some(verdict), Some((fpr, primary, hash))) = (verdict, valid) else {
            continue;
        };
        if let Err(e) = verdict {
            rejected = Some(e);
            continue;
        }
        let weak = match hash {
            "1" => Some("MD5"),
            "2" => Some("SHA1"),
            "3" => Some("RIPEMD160"),
            _ => None,
        };
        if let Some(algorithm) = weak {
            rejected = Some(SignatureError::WeakDigest { key: primary.to_owned(), algorithm });
            continue;
        }
        let matches = |f: &str| allowed.iter().any(|a| *a == normalize_fingerprint(f));
        if !allowed.is_empty() && !matches(fpr) && !matches(primary) {
            rejected =
                Some(SignatureError::WrongSigner { signer: primary.to_owned(), allowed: allowed.clone() });
            continue;
        }
        good = good.or(Some(primary.to_owned()));
    }
    match good {
        Some(signer) => Ok(signer),
        None => Err(rejected.unwrap_or(SignatureError::UnknownKey { keys: unknown, keyrings: Vec::new() })),
    }
}

/// Converts ASCII-armored OpenPGP data (one or more blocks) to binary.
pub fn dearmor(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut lines = text.lines().map(str::trim);
    let mut blocks = 0;
    while let Some(line) = lines.next() {
        if !line.starts_with("-----BEGIN PGP ") {
            continue;
        }
        // Armor headers ("Version: ...") up to an empty line; some writers leave the empty line out.
        let mut body = String::new();
        let mut in_headers = true;
        let mut ended = false;
        for line in lines.by_ref() {
            if line.starts_with("-----END PGP ") {
                ended = true;
                break;
            }
            if in_headers {
                if line.is_empty() {
                    in_headers = false;
                    continue;
                }
                if line.contains(": ") {
                    continue;
                }
                in_headers = false;
            }
            if line.starts_with('=') && line.len() == 5 {
                continue; // CRC-24 checksum line
            }
            body.push_str(line);
        }
        if !ended {
            return None;
        }
        out.extend(base64_decode(&body)?);
        blocks += 1;
    }
    (blocks > 0).then_some(out)
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            b' ' | b'\t' | b'\r' | b'\n' => continue,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FPR: &str = "B8B80B5B623EAB6AD8775C45B7C5D7D6350947F8";
    const SUB: &str = "1111111111111111111111111111111111111111";

    fn validsig(fpr: &str, hash: u8, primary: &str) -> String {
        format!("[GNUPG:] VALIDSIG {fpr} 2023-06-10 1686387173 0 4 0 1 {hash} 01 {primary}\n")
    }

    #[test]
    fn good_signature_is_accepted() {
        let status =
            format!("[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG B7C5D7D6350947F8 Debian\n{}", validsig(SUB, 10, FPR));
        assert_eq!(judge(&status, &[]).unwrap(), FPR);
        // The allowed fingerprint may name the primary key or the signing subkey.
        assert_eq!(judge(&status, &[FPR.to_lowercase()]).unwrap(), FPR);
        assert_eq!(judge(&status, &[format!("{SUB}!")]).unwrap(), FPR);
        assert!(matches!(judge(&status, &["00".into()]), Err(SignatureError::WrongSigner { .. })));
    }

    #[test]
    fn unknown_keys_are_ignored_when_another_signature_is_good() {
        let status = format!(
            "[GNUPG:] NEWSIG\n[GNUPG:] ERRSIG 0123456789ABCDEF 1 10 01 1686387173 9 -\n\
             [GNUPG:] NO_PUBKEY 0123456789ABCDEF\n[GNUPG:] NEWSIG\n[GNUPG:] GOODSIG B7C5D7D6350947F8 Debian\n{}",
            validsig(FPR, 10, FPR)
        );
        assert_eq!(judge(&status, &[]).unwrap(), FPR);
        let only_unknown =
            "[GNUPG:] ERRSIG 0123456789ABCDEF 1 10 01 1686387173 9 -\n[GNUPG:] NO_PUBKEY 0123456789ABCDEF\n";
        match judge(only_unknown, &[]) {
            Err(SignatureError::UnknownKey { keys, .. }) => assert_eq!(keys, ["0123456789ABCDEF"]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_weak_and_expired_signatures_are_rejected() {
        let bad = format!("[GNUPG:] BADSIG B7C5D7D6350947F8 Debian\n{}", validsig(FPR, 10, FPR));
        assert!(matches!(judge(&bad, &[]), Err(SignatureError::BadSignature { .. })));
        let weak = format!("[GNUPG:] GOODSIG B7C5D7D6350947F8 Debian\n{}", validsig(FPR, 2, FPR));
        assert!(matches!(judge(&weak, &[]), Err(SignatureError::WeakDigest { algorithm: "SHA1", .. })));
        let expired = format!("[GNUPG:] EXPKEYSIG B7C5D7D6350947F8 Debian\n{}", validsig(FPR, 10, FPR));
        assert!(matches!(judge(&expired, &[]), Err(SignatureError::Untrusted { .. })));
        // A good signature next to one by an expired key is enough.
        let both = format!(
            "[GNUPG:] NEWSIG\n[GNUPG:] EXPKEYSIG 1111111111111111 Old\n{}[GNUPG:] NEWSIG\n\
             [GNUPG:] GOODSIG B7C5D7D6350947F8 Debian\n{}",
            validsig(SUB, 10, SUB),
            validsig(FPR, 10, FPR)
        );
        assert_eq!(judge(&both, &[]).unwrap(), FPR);
    }

    #[test]
    fn dearmor_decodes_blocks() {
        // "hello" and "kiln!" in two blocks, with a header, a checksum line and a missing blank line.
        let text = "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: x\n\naGVsbG8=\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n\
                    -----BEGIN PGP PUBLIC KEY BLOCK-----\na2lsbiE=\n-----END PGP PUBLIC KEY BLOCK-----\n";
        assert_eq!(dearmor(text).unwrap(), b"hellokiln!");
        assert!(dearmor("no armor").is_none());
        assert!(dearmor(
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\naGVs*G8=\n-----END PGP PUBLIC KEY BLOCK-----\n"
        )
        .is_none());
        assert_eq!(base64_decode("AAECAwQF").unwrap(), [0, 1, 2, 3, 4, 5]);
    }
}
