//! The difference between a parent image's tree and a child tree, as OCI layer changes (pure).
//!
//! Rules:
//! * a path only in the child is [`Change::Added`]; a path in both whose entries differ (see
//!   [`Entry::same_as`]: kind, content, mode, owner, xattrs; not mtime) is [`Change::Modified`];
//! * a path only in the parent is [`Change::Deleted`] unless an ancestor is already deleted, replaced by a
//!   non-directory or made opaque (one whiteout covers a whole deleted directory);
//! * a directory in both whose parent-side children are all gone from the child, and that has new children,
//!   was replaced: it becomes [`Change::Opaque`] and everything below it in the child is added again,
//!   instead of one whiteout per old child (an emptied directory gets whiteouts);
//! * a type change needs no whiteout: the new entry hides what the layers below had at that path.
//!
//! [`layer_entries`] turns changes into the entries and markers of a layer; it also adds the parent
//! directories of every change (with the child's metadata), so unpackers that create missing parents get
//! their owner and mode right.

use std::collections::BTreeSet;

use crate::{
    layer::{opaque_path, whiteout_path, LayerPlan},
    tree::{Entry, TreeIndex, TreePath},
};

/// One difference between the parent's tree and the child's.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Added(TreePath),
    Modified(TreePath),
    Deleted(TreePath),
    /// The directory's content from the layers below is hidden (`.wh..wh..opq`).
    Opaque(TreePath),
}

impl Change {
    pub fn path(&self) -> &TreePath {
        match self {
            Self::Added(p) | Self::Modified(p) | Self::Deleted(p) | Self::Opaque(p) => p,
        }
    }
}

/// Whether `path` lies below any directory of `dirs` (a set of directory paths).
fn below_any(path: &TreePath, dirs: &BTreeSet<TreePath>) -> bool {
    !dirs.is_empty() && path.ancestors().any(|a| dirs.contains(&a))
}

/// The changes that turn `parent` into `child`, sorted by path (an opaque marker sorts with its directory).
pub fn diff(parent: &TreeIndex, child: &TreeIndex) -> Vec<Change> {
    // Directories in both whose old children are all gone and that have new ones.
    let mut opaque: BTreeSet<TreePath> = BTreeSet::new();
    for (path, pe) in &parent.entries {
        if !pe.is_dir() || below_any(path, &opaque) {
            continue;
        }
        if !child.get(path).is_some_and(Entry::is_dir) {
            continue;
        }
        let mut old = parent.children(path).peekable();
        let replaced = old.peek().is_some()
            && old.all(|(c, _)| !child.entries.contains_key(c))
            && child.children(path).next().is_some();
        if replaced {
            opaque.insert(path.clone());
        }
    }

    let mut changes = Vec::new();
    for dir in &opaque {
        changes.push(Change::Opaque(dir.clone()));
    }
    for (path, ce) in &child.entries {
        match parent.get(path) {
            _ if below_any(path, &opaque) => changes.push(Change::Added(path.clone())),
            None => changes.push(Change::Added(path.clone())),
            Some(pe) if !pe.same_as(ce) => changes.push(Change::Modified(path.clone())),
            Some(_) => {}
        }
    }
    // Topmost deletions only: below a deleted directory, a non-directory or an opaque one nothing is needed.
    let mut gone: BTreeSet<TreePath> = BTreeSet::new();
    for path in parent.entries.keys() {
        if child.entries.contains_key(path) {
            continue;
        }
        let parent_dir = path.parent().unwrap_or_default();
        let covered = below_any(path, &gone)
            || below_any(path, &opaque)
            || (!parent_dir.is_root() && !child.get(&parent_dir).is_some_and(Entry::is_dir));
        if !covered {
            changes.push(Change::Deleted(path.clone()));
        }
        gone.insert(path.clone());
    }
    changes.sort_by(|a, b| a.path().cmp(b.path()).then(a.cmp(b)));
    changes
}

/// The tree entries and whiteout/opaque markers of a layer holding `changes` (entries from `child`),
/// including the parent directories of every change.
pub fn layer_entries(changes: &[Change], child: &TreeIndex) -> (Vec<(TreePath, Entry)>, Vec<TreePath>) {
    let mut paths: BTreeSet<TreePath> = BTreeSet::new();
    let mut markers = Vec::new();
    for change in changes {
        let path = change.path();
        match change {
            Change::Added(_) | Change::Modified(_) => {
                paths.insert(path.clone());
            }
            Change::Deleted(_) => markers.push(whiteout_path(path)),
            Change::Opaque(_) => {
                markers.push(opaque_path(path));
                paths.insert(path.clone());
            }
        }
        paths.extend(path.ancestors());
    }
    let entries = paths.into_iter().filter_map(|p| child.get(&p).cloned().map(|e| (p, e))).collect();
    (entries, markers)
}

/// The layer that turns `parent` into `child` (entries with content read from the child's tree).
pub fn diff_layer(parent: &TreeIndex, child: &TreeIndex, epoch: u64) -> (Vec<Change>, LayerPlan) {
    let changes = diff(parent, child);
    let (entries, markers) = layer_entries(&changes, child);
    let plan = LayerPlan::new(entries, markers, epoch);
    (changes, plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{EntryKind, Sha256};

    fn p(s: &str) -> TreePath {
        TreePath::new(s).unwrap()
    }

    fn file(content: &str) -> Entry {
        Entry::new(
            EntryKind::File { size: content.len() as u64, digest: Some(Sha256::of(content.as_bytes())) },
            0o644,
        )
    }

    fn dir() -> Entry {
        Entry::new(EntryKind::Dir, 0o755)
    }

    fn tree(items: &[(&str, Entry)]) -> TreeIndex {
        TreeIndex { entries: items.iter().map(|(k, e)| (p(k), e.clone())).collect() }
    }

    fn show(changes: &[Change]) -> Vec<String> {
        changes
            .iter()
            .map(|c| match c {
                Change::Added(p) => format!("A {p}"),
                Change::Modified(p) => format!("M {p}"),
                Change::Deleted(p) => format!("D {p}"),
                Change::Opaque(p) => format!("O {p}"),
            })
            .collect()
    }

    fn base() -> TreeIndex {
        tree(&[
            ("etc", dir()),
            ("etc/motd", file("hi")),
            ("etc/hostname", file("box")),
            ("usr", dir()),
            ("usr/share", dir()),
            ("usr/share/doc", dir()),
            ("usr/share/doc/a", file("a")),
            ("usr/share/doc/b", file("b")),
            ("var", dir()),
            ("var/cache", dir()),
            ("var/cache/x", file("x")),
            ("var/cache/y", dir()),
            ("var/cache/y/z", file("z")),
        ])
    }

    #[test]
    fn identical_trees_have_no_changes() {
        assert!(diff(&base(), &base()).is_empty());
    }

    #[test]
    fn added_modified_and_deleted_files() {
        let mut child = base();
        child.entries.remove(&p("etc/motd"));
        child.insert(p("etc/hostname"), file("kiln"));
        child.insert(p("etc/new"), file("n"));
        let mut m = file("a");
        m.mode = 0o600;
        child.insert(p("usr/share/doc/a"), m);
        let mut later = file("b");
        later.mtime = 12345;
        child.insert(p("usr/share/doc/b"), later);
        assert_eq!(
            show(&diff(&base(), &child)),
            ["M etc/hostname", "D etc/motd", "A etc/new", "M usr/share/doc/a"]
        );
    }

    #[test]
    fn deleted_directory_is_one_whiteout() {
        let mut child = base();
        child.remove_tree(&p("usr/share/doc"));
        let changes = diff(&base(), &child);
        assert_eq!(show(&changes), ["D usr/share/doc"]);
        let (entries, markers) = layer_entries(&changes, &child);
        assert_eq!(markers, [p("usr/share/.wh.doc")]);
        let e: Vec<_> = entries.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(e, ["usr", "usr/share"]);
    }

    #[test]
    fn replaced_directory_is_opaque() {
        let mut child = base();
        child.remove_descendants(&p("var/cache"));
        child.insert(p("var/cache/fresh"), file("f"));
        let changes = diff(&base(), &child);
        assert_eq!(show(&changes), ["O var/cache", "A var/cache/fresh"]);
        let (entries, markers) = layer_entries(&changes, &child);
        assert_eq!(markers, [p("var/cache/.wh..wh..opq")]);
        let e: Vec<_> = entries.iter().map(|(k, _)| k.to_string()).collect();
        assert_eq!(e, ["var", "var/cache", "var/cache/fresh"]);
    }

    #[test]
    fn emptied_directory_gets_whiteouts() {
        let mut child = base();
        child.remove_descendants(&p("var/cache"));
        assert_eq!(show(&diff(&base(), &child)), ["D var/cache/x", "D var/cache/y"]);
    }

    #[test]
    fn partly_kept_directory_is_not_opaque() {
        let mut child = base();
        child.remove_tree(&p("var/cache/y"));
        assert_eq!(show(&diff(&base(), &child)), ["D var/cache/y"]);
    }

    #[test]
    fn everything_below_an_opaque_directory_is_added_again() {
        let mut child = base();
        child.remove_descendants(&p("usr/share"));
        child.insert(p("usr/share/man"), dir());
        child.insert(p("usr/share/man/x"), file("x"));
        assert_eq!(show(&diff(&base(), &child)), ["O usr/share", "A usr/share/man", "A usr/share/man/x"]);
    }

    #[test]
    fn type_changes_need_no_whiteouts() {
        let mut child = base();
        child.remove_tree(&p("var/cache/y"));
        child.insert(p("var/cache/y"), file("now a file"));
        child.entries.remove(&p("etc/motd"));
        child.insert(p("etc/motd"), dir());
        child.insert(p("etc/motd/part"), file("p"));
        assert_eq!(show(&diff(&base(), &child)), ["M etc/motd", "A etc/motd/part", "M var/cache/y"]);
    }

    #[test]
    fn diff_layer_plan_has_whiteout_entries_in_order() {
        let mut child = base();
        child.entries.remove(&p("etc/motd"));
        child.insert(p("etc/added"), file("n"));
        let (_, plan) = diff_layer(&base(), &child, 100);
        let shown: Vec<_> = plan.entries.iter().map(|e| format!("{:?} {}", e.kind, e.path)).collect();
        assert_eq!(shown, ["Dir etc", "Whiteout etc/.wh.motd", "File { size: 1 } etc/added"]);
    }
}
