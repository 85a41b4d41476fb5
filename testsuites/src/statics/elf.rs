//! Shared libraries' ELF facts: the soname and the symbol versions a library defines (`GLIBC_2.36` in
//! libc.so.6's `.gnu.version_d`), read with the `object` crate.

use object::{
    elf,
    read::elf::{ElfFile64, FileHeader as _},
    Endianness,
};

/// What a shared library declares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LibraryFacts {
    /// DT_SONAME, when present.
    pub soname: Option<String>,
    /// Version definitions (`.gnu.version_d`), in file order, the base (file name) entry excluded.
    pub versions: Vec<String>,
}

/// Reads a 64-bit little- or big-endian ELF shared object.
pub fn library_facts(data: &[u8]) -> Result<LibraryFacts, String> {
    let file = ElfFile64::<Endianness>::parse(data).map_err(|e| format!("not a 64-bit ELF file: {e}"))?;
    let endian = file.endian();
    let header = file.elf_header();
    let sections = header.sections(endian, data).map_err(|e| format!("bad ELF section table: {e}"))?;
    let mut facts = LibraryFacts::default();
    if let Some((mut defs, link)) =
        sections.gnu_verdef(endian, data).map_err(|e| format!("bad .gnu.version_d: {e}"))?
    {
        let strings =
            sections.strings(endian, data, link).map_err(|e| format!("bad version strings: {e}"))?;
        while let Some((def, mut aux)) = defs.next().map_err(|e| format!("bad .gnu.version_d: {e}"))? {
            let is_base = def.vd_flags.get(endian) & elf::VER_FLG_BASE != 0;
            if let Some(first) = aux.next().map_err(|e| format!("bad .gnu.version_d: {e}"))? {
                let name = first.name(endian, strings).map_err(|e| format!("bad version name: {e}"))?;
                if !is_base {
                    facts.versions.push(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
    }
    if let Some((dynamic, link)) = sections.dynamic(endian, data).map_err(|e| format!("bad .dynamic: {e}"))? {
        let strings = sections.strings(endian, data, link).map_err(|e| format!("bad .dynstr: {e}"))?;
        for d in dynamic {
            if d.d_tag.get(endian) == u64::from(elf::DT_SONAME) {
                let name = strings
                    .get(d.d_val.get(endian) as u32)
                    .map_err(|_| "DT_SONAME points outside .dynstr".to_owned())?;
                facts.soname = Some(String::from_utf8_lossy(name).into_owned());
            }
        }
    }
    Ok(facts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The host's own libc (this test runs on Debian): its soname and some of its versions.
    #[test]
    fn the_hosts_libc_defines_glibc_versions() {
        let path = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/libc.so.6"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("a Debian amd64 host has libc.so.6");
        let facts = library_facts(&std::fs::read(path).unwrap()).unwrap();
        assert_eq!(facts.soname.as_deref(), Some("libc.so.6"));
        assert!(facts.versions.iter().any(|v| v == "GLIBC_2.2.5"), "{:?}", facts.versions);
        assert!(facts.versions.iter().any(|v| v == "GLIBC_2.34"), "{:?}", facts.versions);
        assert!(!facts.versions.iter().any(|v| v == "libc.so.6"), "the base entry is not a version");
    }

    #[test]
    fn non_elf_is_an_error() {
        assert!(library_facts(b"#!/bin/sh\n").is_err());
    }
}
