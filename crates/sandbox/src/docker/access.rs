//! Lets the container's non-root user write a worktree it does not own,
//! without changing the worktree's owner.
//!
//! When orch runs as root, worktrees are owned by root while commands in the
//! container run as uid 10001. Chowning the tree to 10001 would make
//! host-side git refuse it ("dubious ownership") and would not cover files
//! the agent creates on the host during the attempt. Instead every directory
//! and file gets a POSIX ACL entry for the sandbox uid (`rwX`), and every
//! directory a default ACL, so files created later (by the agent on the
//! host, or by the container) inherit the grant. `revoke` removes exactly
//! those ACLs again, restores the group permission bits the ACL mask
//! replaced, and hands files the container created back to the worktree's
//! owner.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const XATTR_ACCESS: &str = "system.posix_acl_access";
const XATTR_DEFAULT: &str = "system.posix_acl_default";

const ACL_VERSION: u32 = 2;
const TAG_USER_OBJ: u16 = 0x01;
const TAG_USER: u16 = 0x02;
const TAG_GROUP_OBJ: u16 = 0x04;
const TAG_GROUP: u16 = 0x08;
const TAG_MASK: u16 = 0x10;
const TAG_OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

/// A grant made on a worktree, undone by [`revoke`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub root: PathBuf,
    /// The sandbox uid that was granted access.
    pub uid: u32,
    /// Owner of the worktree root when granted: files the sandbox user
    /// created are handed back to it.
    pub owner: (u32, u32),
}

/// One ACL entry, as the kernel stores it in the xattr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    tag: u16,
    perm: u16,
    id: u32,
}

fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + entries.len() * 8);
    out.extend_from_slice(&ACL_VERSION.to_le_bytes());
    for e in entries {
        out.extend_from_slice(&e.tag.to_le_bytes());
        out.extend_from_slice(&e.perm.to_le_bytes());
        out.extend_from_slice(&e.id.to_le_bytes());
    }
    out
}

fn decode(bytes: &[u8]) -> Option<Vec<Entry>> {
    if bytes.len() < 4 || !(bytes.len() - 4).is_multiple_of(8) {
        return None;
    }
    if u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) != ACL_VERSION {
        return None;
    }
    Some(
        bytes[4..]
            .chunks_exact(8)
            .map(|c| Entry {
                tag: u16::from_le_bytes([c[0], c[1]]),
                perm: u16::from_le_bytes([c[2], c[3]]),
                id: u32::from_le_bytes([c[4], c[5], c[6], c[7]]),
            })
            .collect(),
    )
}

/// The access ACL granting `uid` on an entry with permission bits `mode`:
/// read-write, plus execute/search for directories and files that are
/// executable for someone (`rwX`).
fn access_acl(mode: u32, is_dir: bool, uid: u32) -> Vec<Entry> {
    let user = (mode >> 6) & 7;
    let group = (mode >> 3) & 7;
    let other = mode & 7;
    let grant = if is_dir || mode & 0o111 != 0 { 7 } else { 6 };
    vec![
        entry(TAG_USER_OBJ, user, UNDEFINED_ID),
        entry(TAG_USER, grant, uid),
        entry(TAG_GROUP_OBJ, group, UNDEFINED_ID),
        entry(TAG_MASK, grant | group, UNDEFINED_ID),
        entry(TAG_OTHER, other, UNDEFINED_ID),
    ]
}

/// The default ACL of a directory: what entries created in it inherit.
fn default_acl(mode: u32, uid: u32) -> Vec<Entry> {
    vec![
        entry(TAG_USER_OBJ, (mode >> 6) & 7, UNDEFINED_ID),
        entry(TAG_USER, 7, uid),
        entry(TAG_GROUP_OBJ, (mode >> 3) & 7, UNDEFINED_ID),
        entry(TAG_MASK, 7, UNDEFINED_ID),
        entry(TAG_OTHER, mode & 7, UNDEFINED_ID),
    ]
}

fn entry(tag: u16, perm: u32, id: u32) -> Entry {
    Entry {
        tag,
        perm: (perm & 7) as u16,
        id,
    }
}

/// True for an ACL orch made: the minimal entries plus one named user, `uid`.
fn is_ours(entries: &[Entry], uid: u32) -> bool {
    let users: Vec<&Entry> = entries.iter().filter(|e| e.tag == TAG_USER).collect();
    users.len() == 1
        && users[0].id == uid
        && !entries.iter().any(|e| e.tag == TAG_GROUP)
        && entries.iter().any(|e| e.tag == TAG_MASK)
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cname(name: &str) -> CString {
    // The names are constants without NUL bytes.
    CString::new(name).unwrap_or_default()
}

fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let p = cpath(path)?;
    let n = cname(name);
    let mut buf = vec![0u8; 256];
    loop {
        // SAFETY: p and n are valid NUL-terminated strings; buf is writable
        // for buf.len() bytes.
        let r = unsafe {
            libc::lgetxattr(
                p.as_ptr(),
                n.as_ptr(),
                buf.as_mut_ptr().cast::<libc::c_void>(),
                buf.len(),
            )
        };
        if r >= 0 {
            buf.truncate(r as usize);
            return Ok(Some(buf));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::ENODATA) => return Ok(None),
            Some(libc::ERANGE) => buf.resize(buf.len() * 4, 0),
            _ => return Err(err),
        }
    }
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cpath(path)?;
    let n = cname(name);
    // SAFETY: valid NUL-terminated strings; value is readable for its length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast::<libc::c_void>(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn remove_xattr(path: &Path, name: &str) -> io::Result<()> {
    let p = cpath(path)?;
    let n = cname(name);
    // SAFETY: valid NUL-terminated strings.
    let r = unsafe { libc::lremovexattr(p.as_ptr(), n.as_ptr()) };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENODATA) {
        Ok(())
    } else {
        Err(err)
    }
}

fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    let p = cpath(path)?;
    // SAFETY: valid NUL-terminated string.
    let r = unsafe { libc::lchown(p.as_ptr(), uid, gid) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Every directory, file and symlink under `root` (including it), without
/// following symlinks. Entries that vanish while walking are skipped.
fn walk(
    root: &Path,
    mut visit: impl FnMut(&Path, &std::fs::Metadata) -> io::Result<()>,
) -> io::Result<()> {
    let mut stack = vec![root.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        visit(&path, &meta)?;
        if meta.is_dir() {
            let entries = match std::fs::read_dir(&path) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// Gives `uid` read-write access to everything under `root` (see the module
/// docs). Entries that already carry someone else's ACL are left alone.
pub(crate) fn grant(root: &Path, uid: u32) -> io::Result<Grant> {
    let meta = std::fs::metadata(root)?;
    let owner = (meta.uid(), meta.gid());
    walk(root, |path, meta| {
        // Symlinks carry no ACL; the sandbox user's own entries need none;
        // an existing ACL is either ours already or someone else's to keep.
        if meta.file_type().is_symlink()
            || meta.uid() == uid
            || get_xattr(path, XATTR_ACCESS)?.is_some()
        {
            return Ok(());
        }
        let mode = meta.permissions().mode();
        set_xattr(
            path,
            XATTR_ACCESS,
            &encode(&access_acl(mode, meta.is_dir(), uid)),
        )?;
        if meta.is_dir() {
            set_xattr(path, XATTR_DEFAULT, &encode(&default_acl(mode, uid)))?;
        }
        Ok(())
    })
    .map_err(|e| {
        if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
            io::Error::new(
                e.kind(),
                format!(
                    "the filesystem holding {} does not support POSIX ACLs, which orch uses to \
                     let the sandbox user (uid {uid}) write a worktree owned by uid {}: put \
                     data_dir on ext4, xfs, btrfs or tmpfs, or run orch as a non-root user (the \
                     container then runs as your uid)",
                    root.display(),
                    owner.0
                ),
            )
        } else {
            e
        }
    })?;
    Ok(Grant {
        root: root.to_path_buf(),
        uid,
        owner,
    })
}

/// Undoes [`grant`]: removes orch's ACLs, puts back the group permission
/// bits, and hands entries owned by the sandbox uid back to the owner (when
/// this process may chown). A worktree that is already gone is fine.
pub(crate) fn revoke(grant: &Grant) -> io::Result<()> {
    // SAFETY: geteuid has no preconditions.
    let may_chown = unsafe { libc::geteuid() } == 0;
    walk(&grant.root, |path, meta| {
        if may_chown && meta.uid() == grant.uid {
            match lchown(path, grant.owner.0, grant.owner.1) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        if meta.file_type().is_symlink() {
            return Ok(());
        }
        let Some(bytes) = get_xattr(path, XATTR_ACCESS)? else {
            return Ok(());
        };
        let Some(entries) = decode(&bytes) else {
            return Ok(());
        };
        if !is_ours(&entries, grant.uid) {
            return Ok(());
        }
        let perm_of = |tag| {
            entries
                .iter()
                .find(|e| e.tag == tag)
                .map(|e| u32::from(e.perm))
                .unwrap_or(0)
        };
        // The group bits showed the mask; what the group really had is the
        // group entry as the mask limited it.
        let group = perm_of(TAG_GROUP_OBJ) & perm_of(TAG_MASK);
        remove_xattr(path, XATTR_ACCESS)?;
        if meta.is_dir() {
            remove_xattr(path, XATTR_DEFAULT)?;
        }
        let mode = meta.permissions().mode() & 0o7777;
        let restored = (mode & !0o070) | (group << 3);
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(restored))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_round_trips_through_the_xattr_format() {
        let acl = access_acl(0o644, false, 10001);
        assert_eq!(decode(&encode(&acl)).unwrap(), acl);
        assert!(is_ours(&acl, 10001));
        assert!(!is_ours(&acl, 10002));
    }

    #[test]
    fn files_get_rw_and_executables_rwx() {
        let file = access_acl(0o644, false, 7);
        assert_eq!(file[1], entry(TAG_USER, 6, 7));
        assert_eq!(file[3], entry(TAG_MASK, 6 | 4, UNDEFINED_ID));
        let exe = access_acl(0o755, false, 7);
        assert_eq!(exe[1].perm, 7);
        let dir = access_acl(0o700, true, 7);
        assert_eq!(dir[1].perm, 7);
        assert_eq!(dir[2].perm, 0, "the group entry keeps the group's bits");
    }

    #[test]
    fn grant_and_revoke_on_a_real_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/a.txt"), "x").unwrap();
        std::fs::set_permissions(
            root.join("sub/a.txt"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/a.txt", root.join("link")).unwrap();
        let g = match grant(root, 54321) {
            Ok(g) => g,
            // A filesystem without ACLs: nothing to test here, and the error
            // must say what to do.
            Err(e) if e.to_string().contains("does not support POSIX ACLs") => return,
            Err(e) => panic!("{e}"),
        };
        let acl = decode(
            &get_xattr(&root.join("sub/a.txt"), XATTR_ACCESS)
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert!(is_ours(&acl, 54321));
        assert!(get_xattr(&root.join("sub"), XATTR_DEFAULT)
            .unwrap()
            .is_some());
        // A file created after the grant inherits it.
        std::fs::write(root.join("sub/new.txt"), "y").unwrap();
        let inherited = decode(
            &get_xattr(&root.join("sub/new.txt"), XATTR_ACCESS)
                .unwrap()
                .unwrap(),
        )
        .unwrap();
        assert!(inherited.iter().any(|e| e.tag == TAG_USER && e.id == 54321));

        revoke(&g).unwrap();
        for p in ["sub", "sub/a.txt", "sub/new.txt"] {
            assert!(
                get_xattr(&root.join(p), XATTR_ACCESS).unwrap().is_none(),
                "{p}"
            );
        }
        assert!(get_xattr(&root.join("sub"), XATTR_DEFAULT)
            .unwrap()
            .is_none());
        let mode = std::fs::metadata(root.join("sub/a.txt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}
