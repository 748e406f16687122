//! Root-only places: the pin directory, the control socket's directory, and
//! the bpffs mount itself.
//!
//! Nothing an unprivileged user can write is trusted: an existing directory
//! must be a real directory (not a symbolic link), owned by the agent's user
//! (root), and writable by nobody else; one the agent creates is created
//! with mode 0700 whatever the umask (the mode is set explicitly after
//! `mkdir`). A bpffs the agent mounts itself is mounted `mode=0700`.

use std::{
    fs,
    os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt},
    path::{Path, PathBuf},
};

/// A place the agent refuses, or could not prepare.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    #[error("refusing {}: {why}; remove it or give it to root with mode 0700 (nothing another user can write is trusted)", path.display())]
    Untrusted { path: PathBuf, why: String },
    #[error("creating {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not on a bpffs mount: maps cannot be pinned there (mount one with `mount -t bpf -o mode=0700 bpf DIR`)", path.display())]
    NotBpffs { path: PathBuf },
    #[error("mounting bpffs on {}", path.display())]
    Mount {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn create(path: &Path) -> impl FnOnce(std::io::Error) -> PathError + '_ {
    move |source| PathError::Create {
        path: path.into(),
        source,
    }
}

/// Checks that an existing `dir` is one only root controls.
pub fn check_trusted(dir: &Path) -> Result<(), PathError> {
    let untrusted = |why: String| PathError::Untrusted {
        path: dir.into(),
        why,
    };
    let meta = fs::symlink_metadata(dir).map_err(create(dir))?;
    if meta.file_type().is_symlink() {
        return Err(untrusted("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(untrusted("it is not a directory".into()));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(untrusted(format!("it is owned by uid {}", meta.uid())));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(untrusted(format!(
            "it is writable by {} (mode {mode:04o})",
            if mode & 0o002 != 0 {
                "others"
            } else {
                "its group"
            }
        )));
    }
    Ok(())
}

/// `mkdir -p` with mode 0755 for each directory it creates, whatever the
/// umask.
fn create_parents(dir: &Path) -> Result<(), PathError> {
    if dir.as_os_str().is_empty() || dir.exists() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_parents(parent)?;
    }
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        r => r.map_err(create(dir))?,
    }
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).map_err(create(dir))
}

/// Creates `dir` with mode 0700 (parents as `mkdir -p` would, 0755), or
/// checks an existing one with [`check_trusted`]. Returns whether it was
/// created.
pub fn private_dir(dir: &Path) -> Result<bool, PathError> {
    match fs::symlink_metadata(dir) {
        Ok(_) => {
            check_trusted(dir)?;
            Ok(false)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(parent) = dir.parent() {
                create_parents(parent)?;
            }
            fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .map_err(create(dir))?;
            // The umask may have taken bits away (never added): set it exactly.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(create(dir))?;
            Ok(true)
        }
        Err(e) => Err(create(dir)(e)),
    }
}

/// Removes a stale socket left at `socket` by an agent that died (call with
/// the socket's lock held); refuses anything else found there.
pub fn clear_stale_socket(socket: &Path) -> Result<(), PathError> {
    use std::os::unix::fs::FileTypeExt;
    match fs::symlink_metadata(socket) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(create(socket)(e)),
        Ok(m) if m.file_type().is_socket() => fs::remove_file(socket).map_err(create(socket)),
        Ok(_) => Err(PathError::Untrusted {
            path: socket.into(),
            why: "it exists and is not a socket (--socket names the control socket to create)"
                .into(),
        }),
    }
}

/// The directory that holds the control socket (created 0700 when missing).
pub fn socket_dir(socket: &Path) -> Result<bool, PathError> {
    match socket.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => private_dir(dir),
        _ => private_dir(Path::new(".")),
    }
}

/// Mounts bpffs on `/sys/fs/bpf` when `dir` is below it and it is not a
/// bpffs yet (mode 0700, as systemd mounts it), then creates or checks the
/// pin directory `dir`. Returns whether `dir` was created.
pub fn pin_dir(dir: &Path) -> Result<bool, PathError> {
    let root = Path::new("/sys/fs/bpf");
    if dir.starts_with(root) && !crate::dataplane::is_bpffs(root) {
        fs::create_dir_all(root).map_err(create(root))?;
        mount_bpffs(root)?;
    }
    // Missing parents are created 0755 whatever the umask (private_dir).
    let created = private_dir(dir)?;
    if !crate::dataplane::is_bpffs(dir) {
        if created {
            let _ = fs::remove_dir(dir);
        }
        return Err(PathError::NotBpffs { path: dir.into() });
    }
    Ok(created)
}

/// `mount -t bpf -o mode=0700 bpf TARGET`.
pub fn mount_bpffs(target: &Path) -> Result<(), PathError> {
    let mount_err = |source| PathError::Mount {
        path: target.into(),
        source,
    };
    let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|e| mount_err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let fstype = c"bpf";
    let data = c"mode=0700";
    // SAFETY: valid NUL-terminated strings; `data` is bpffs's option string.
    let rc = unsafe {
        libc::mount(
            fstype.as_ptr(),
            c.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(mount_err(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("lb-paths-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        p
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn created_0700_whatever_the_umask() {
        let base = scratch("umask");
        let dir = base.join("run/lb");
        // SAFETY: umask has no preconditions; restored below.
        let old = unsafe { libc::umask(0) };
        let r = private_dir(&dir);
        unsafe { libc::umask(old) };
        assert!(r.unwrap());
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(dir.parent().unwrap()), 0o755, "missing parent");
        // Existing and trusted: accepted as it is.
        assert!(!private_dir(&dir).unwrap());
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn refuses_what_another_user_controls() {
        let base = scratch("untrusted");
        fs::create_dir_all(&base).unwrap();
        let other = base.join("other");
        fs::create_dir(&other).unwrap();
        std::os::unix::fs::chown(&other, Some(65534), Some(65534)).unwrap();
        let e = private_dir(&other).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        let open = base.join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        let e = private_dir(&open).unwrap_err().to_string();
        assert!(e.contains("writable by others"), "{e}");
        // A regular file where the socket goes is refused and kept.
        let file = base.join("keepalived.conf");
        fs::write(&file, "precious").unwrap();
        let e = clear_stale_socket(&file).unwrap_err().to_string();
        assert!(e.contains("not a socket"), "{e}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "precious");
        let sock = base.join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
        clear_stale_socket(&sock).unwrap();
        assert!(!sock.exists(), "stale socket kept");
        let link = base.join("link");
        std::os::unix::fs::symlink(&open, &link).unwrap();
        let e = private_dir(&link).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn bpffs_mounted_by_lb_is_root_only() {
        let base = scratch("mount");
        fs::create_dir_all(&base).unwrap();
        mount_bpffs(&base).unwrap();
        let m = mode(&base);
        let bpffs = crate::dataplane::is_bpffs(&base);
        // SAFETY: unmounting the scratch mount made above.
        let c = std::ffi::CString::new(base.as_os_str().as_encoded_bytes()).unwrap();
        unsafe { libc::umount(c.as_ptr()) };
        fs::remove_dir_all(&base).unwrap();
        assert!(bpffs);
        // bpffs always adds the sticky bit (1700): root-only either way.
        assert_eq!(m & 0o777, 0o700, "bpffs mounted with mode {m:o}");
    }
}
