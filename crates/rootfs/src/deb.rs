//! Reading .deb files: the ar container (`debian-binary`, `control.tar.*`, `data.tar.*`), the control
//! archive's members (control paragraph, maintainer scripts, conffiles, md5sums, triggers, ...) and a streamed
//! view of the data archive, decompressed from xz, zstd, gzip or stored as is.

use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::control::{ControlError, Paragraph};

/// A problem reading a .deb file.
#[derive(Debug, thiserror::Error)]
pub enum DebError {
    #[error("reading {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a Debian binary package: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("{path}: unsupported compression of member `{member}`")]
    Compression { path: PathBuf, member: String },
    #[error("{path}: control member: {source}")]
    Control { path: PathBuf, source: ControlError },
}

/// How a tar member of the .deb is compressed, from its name's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Xz,
    Zstd,
}

impl Compression {
    fn from_member(member: &str, stem: &str) -> Option<Self> {
        match member.strip_prefix(stem)? {
            "" => Some(Self::None),
            ".gz" => Some(Self::Gzip),
            ".xz" => Some(Self::Xz),
            ".zst" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// A reader giving the decompressed bytes of `inner`.
    pub fn decoder<'a, R: Read + 'a>(self, inner: R) -> std::io::Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Self::None => Box::new(inner),
            Self::Gzip => Box::new(flate2::read::GzDecoder::new(BufReader::new(inner))),
            Self::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(BufReader::new(inner))),
            Self::Zstd => Box::new(zstd::stream::read::Decoder::new(inner)?),
        })
    }
}

/// A regular file of the control archive (`postinst`, `conffiles`, `md5sums`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlMember {
    pub name: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// A conffile the package declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conffile {
    /// Absolute path in the tree, e.g. `/etc/default/foo`.
    pub path: String,
    /// `remove-on-upgrade`: the file is obsolete, only listed so an upgrade removes it.
    pub remove_on_upgrade: bool,
}

/// A .deb whose control archive has been read; the data archive is read on demand with [`Deb::with_data`].
#[derive(Debug, Clone)]
pub struct Deb {
    pub path: PathBuf,
    pub control: Paragraph,
    /// Every regular file of the control archive but `control` itself, in archive order.
    pub members: Vec<ControlMember>,
    pub data_compression: Compression,
    /// The package name.
    pub name: String,
    pub version: String,
    pub architecture: String,
}

impl Deb {
    /// Read the package's control archive.
    pub fn open(path: &Path) -> Result<Self, DebError> {
        let io = |source| DebError::Io { path: path.to_owned(), source };
        let format = |reason: String| DebError::Format { path: path.to_owned(), reason };
        let file = fs_err::File::open(path).map_err(io)?;
        let mut archive = ar::Archive::new(BufReader::new(file));

        let mut names = Vec::new();
        let mut control_tar = None;
        let mut data_compression = None;
        while let Some(entry) = archive.next_entry() {
            let mut entry = entry.map_err(|e| format(format!("bad ar archive: {e}")))?;
            let name = member_name(entry.header().identifier());
            match names.len() {
                0 => {
                    if name != "debian-binary" {
                        return Err(format(format!("first member is `{name}`, not `debian-binary`")));
                    }
                    let mut version = String::new();
                    entry.read_to_string(&mut version).map_err(io)?;
                    if !version.starts_with("2.") {
                        return Err(format(format!("format version `{}` is not 2.x", version.trim())));
                    }
                }
                _ if name.starts_with("control.tar") => {
                    let compression = Compression::from_member(&name, "control.tar").ok_or_else(|| {
                        DebError::Compression { path: path.to_owned(), member: name.clone() }
                    })?;
                    let mut bytes = Vec::new();
                    compression
                        .decoder(&mut entry)
                        .and_then(|mut d| d.read_to_end(&mut bytes))
                        .map_err(io)?;
                    control_tar = Some(bytes);
                }
                _ if name.starts_with("data.tar") => {
                    data_compression =
                        Some(Compression::from_member(&name, "data.tar").ok_or_else(|| {
                            DebError::Compression { path: path.to_owned(), member: name.clone() }
                        })?);
                    break;
                }
                // dpkg ignores members whose names start with `_` and refuses other unknown ones.
                _ if name.starts_with('_') => {}
                _ => return Err(format(format!("unexpected member `{name}`"))),
            }
            names.push(name);
        }
        let control_tar = control_tar.ok_or_else(|| format("no control.tar member".to_owned()))?;
        let data_compression = data_compression.ok_or_else(|| format("no data.tar member".to_owned()))?;

        let mut control_text = None;
        let mut members = Vec::new();
        let mut tar = tar::Archive::new(control_tar.as_slice());
        for entry in tar.entries().map_err(io)? {
            let mut entry = entry.map_err(io)?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let raw = entry.path().map_err(io)?.to_string_lossy().into_owned();
            let name = raw.trim_start_matches("./").to_owned();
            if name.is_empty() || name.contains('/') {
                continue;
            }
            let mode = entry.header().mode().map_err(io)? & 0o7777;
            let mut data = Vec::new();
            entry.read_to_end(&mut data).map_err(io)?;
            if name == "control" {
                control_text = Some(data);
            } else {
                members.push(ControlMember { name, mode, data });
            }
        }
        let control_text =
            control_text.ok_or_else(|| format("the control archive has no `control`".to_owned()))?;
        let control_err = |source| DebError::Control { path: path.to_owned(), source };
        let text = String::from_utf8(control_text).map_err(|_| control_err(ControlError::NotUtf8))?;
        let control = Paragraph::parse(&text).map_err(control_err)?;
        let name = control.require("Package").map_err(control_err)?.to_owned();
        let version = control.require("Version").map_err(control_err)?.to_owned();
        let architecture = control.require("Architecture").map_err(control_err)?.to_owned();
        Ok(Self { path: path.to_owned(), control, members, data_compression, name, version, architecture })
    }

    /// A control member by name.
    pub fn member(&self, name: &str) -> Option<&ControlMember> {
        self.members.iter().find(|m| m.name == name)
    }

    /// `Multi-Arch: same`: dpkg names this package `NAME:ARCH` in its database.
    pub fn multi_arch_same(&self) -> bool {
        self.control.get("Multi-Arch").is_some_and(|v| v.eq_ignore_ascii_case("same"))
    }

    /// The name dpkg uses for the package in its database files: `NAME`, or `NAME:ARCH` for `Multi-Arch: same`.
    pub fn db_name(&self) -> String {
        if self.multi_arch_same() {
            format!("{}:{}", self.name, self.architecture)
        } else {
            self.name.clone()
        }
    }

    /// The conffiles the package declares (the `conffiles` member).
    pub fn conffiles(&self) -> Vec<Conffile> {
        let Some(member) = self.member("conffiles") else { return Vec::new() };
        String::from_utf8_lossy(&member.data)
            .lines()
            .filter_map(|line| {
                let line = line.trim();
                let path = line.split_whitespace().last()?;
                let flags: Vec<&str> = line.split_whitespace().rev().skip(1).collect();
                Some(Conffile {
                    path: path.to_owned(),
                    remove_on_upgrade: flags.contains(&"remove-on-upgrade"),
                })
            })
            .collect()
    }

    /// Stream the data archive through `f`.
    pub fn with_data<T, E: From<DebError>>(
        &self,
        f: impl FnOnce(&mut tar::Archive<Box<dyn Read + '_>>) -> Result<T, E>,
    ) -> Result<T, E> {
        let path = &self.path;
        let io = |source| DebError::Io { path: path.clone(), source };
        let file = fs_err::File::open(path).map_err(io)?;
        let mut archive = ar::Archive::new(BufReader::new(file));
        while let Some(entry) = archive.next_entry() {
            let entry = entry.map_err(io)?;
            let name = member_name(entry.header().identifier());
            if name.starts_with("data.tar") {
                let decoder = self.data_compression.decoder(entry).map_err(io)?;
                let mut tar = tar::Archive::new(decoder);
                return f(&mut tar);
            }
        }
        Err(DebError::Format { path: path.clone(), reason: "no data.tar member".to_owned() }.into())
    }
}

fn member_name(identifier: &[u8]) -> String {
    let name = String::from_utf8_lossy(identifier);
    name.trim_end().trim_end_matches('/').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_from_member_names() {
        assert_eq!(Compression::from_member("data.tar.xz", "data.tar"), Some(Compression::Xz));
        assert_eq!(Compression::from_member("data.tar.zst", "data.tar"), Some(Compression::Zstd));
        assert_eq!(Compression::from_member("data.tar.gz", "data.tar"), Some(Compression::Gzip));
        assert_eq!(Compression::from_member("data.tar", "data.tar"), Some(Compression::None));
        assert_eq!(Compression::from_member("data.tar.bz2", "data.tar"), None);
    }

    #[test]
    fn member_names_drop_gnu_slash() {
        assert_eq!(member_name(b"data.tar.xz/"), "data.tar.xz");
        assert_eq!(member_name(b"debian-binary   "), "debian-binary");
    }
}
