//! One agent per pin directory and per control socket.
//!
//! `lb run` holds an exclusive `flock(2)` on its bpffs pin directory and on a
//! lock file beside its control socket (`SOCKET.lock`) from before it touches
//! a map or the socket until it exits; the kernel releases both when the
//! process dies, however it dies. A second agent asking for either is
//! refused at once, with the PID of the holder read from `/proc/locks`.

use std::{
    fs::File,
    io::Write as _,
    os::{
        fd::AsRawFd,
        unix::fs::{MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
};

/// An exclusive lock, held until dropped.
#[derive(Debug)]
pub struct Exclusive {
    _file: File,
    pub path: PathBuf,
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{} is in use by another lb agent (pid {pid}): one agent per {what}; stop it first, or give this one another --{flag}", path.display())]
    Held {
        path: PathBuf,
        pid: String,
        what: &'static str,
        flag: &'static str,
    },
    #[error("opening {} to lock it", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("locking {}", path.display())]
    Lock {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn flock_exclusive(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn held(path: &Path, what: &'static str, flag: &'static str) -> LockError {
    LockError::Held {
        path: path.to_path_buf(),
        pid: holder(path)
            .map(|p| p.to_string())
            .unwrap_or_else(|| "unknown".into()),
        what,
        flag,
    }
}

/// Locks the pin directory `dir` (which must exist).
pub fn pin_dir(dir: &Path) -> Result<Exclusive, LockError> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)
        .map_err(|source| LockError::Open {
            path: dir.into(),
            source,
        })?;
    match flock_exclusive(&file) {
        Ok(true) => Ok(Exclusive {
            _file: file,
            path: dir.into(),
        }),
        Ok(false) => Err(held(dir, "pin directory", "bpffs")),
        Err(source) => Err(LockError::Lock {
            path: dir.into(),
            source,
        }),
    }
}

/// The lock file of a control socket.
pub fn socket_lock_path(socket: &Path) -> PathBuf {
    let mut p = socket.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Locks `SOCKET.lock` (created 0600, never through a symbolic link) and
/// writes this process's PID into it.
pub fn socket(socket: &Path) -> Result<Exclusive, LockError> {
    let path = socket_lock_path(socket);
    let mut file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(|source| LockError::Open {
            path: path.clone(),
            source,
        })?;
    match flock_exclusive(&file) {
        Ok(true) => {
            let _ = file.set_len(0);
            let _ = writeln!(file, "{}", std::process::id());
            Ok(Exclusive { _file: file, path })
        }
        Ok(false) => Err(held(&path, "control socket", "socket")),
        Err(source) => Err(LockError::Lock { path, source }),
    }
}

/// The PID holding a `flock` on `path`, from `/proc/locks`.
pub fn holder(path: &Path) -> Option<u32> {
    let meta = std::fs::metadata(path).ok()?;
    let (maj, min, ino) = (libc::major(meta.dev()), libc::minor(meta.dev()), meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        // "1: FLOCK  ADVISORY  WRITE 1234 00:2a:5678 0 EOF"; waiters have "->".
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 6 || f[1] != "FLOCK" {
            return None;
        }
        let mut id = f[5].split(':');
        let (Some(a), Some(b), Some(c)) = (id.next(), id.next(), id.next()) else {
            return None;
        };
        let same = u32::from_str_radix(a, 16).ok()? == maj
            && u32::from_str_radix(b, 16).ok()? == min
            && c.parse::<u64>().ok()? == ino;
        same.then(|| f[4].parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid() {
        let dir = std::env::temp_dir().join(format!("lb-lock-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sock = dir.join("lb.sock");
        let first = socket(&sock).unwrap();
        assert_eq!(holder(&first.path), Some(std::process::id()));
        // flock locks belong to the open file description: a second open in
        // the same process conflicts as a second process would.
        let err = socket(&sock).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        assert!(matches!(err, LockError::Held { .. }));
        let d1 = pin_dir(&dir).unwrap();
        assert!(matches!(pin_dir(&dir), Err(LockError::Held { .. })));
        drop(d1);
        drop(first);
        assert_eq!(holder(&sock.with_extension("sock.lock")), None);
        socket(&sock).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
