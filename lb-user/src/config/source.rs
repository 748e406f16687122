//! Reading configuration files so that hostile input cannot hurt the reader.
//!
//! Every file (the main one and each `include`) is opened with `O_NONBLOCK`
//! and checked with `fstat` on the open descriptor before a byte is read:
//! only regular files are read, so a FIFO, a device (`/dev/zero`) or a
//! socket can never block or feed the reader without end. What is read is
//! counted against one [`Budget`] for the whole configuration: at most
//! [`MAX_INPUT_BYTES`] bytes and [`MAX_FILES`] files. When running as root,
//! an included file that a non-root user could have changed is refused, by
//! the rule keepalived applies to scripts under `enable_script_security`
//! (see [`super::vrrp::insecure`]).
//!
//! Each file read leaves a [`FileStamp`] (identity, size, mtime and a hash
//! of the bytes read), so that a reload can tell whether a file changed
//! while it was being read (see [`super::load_stable`]).

use std::{
    hash::{Hash as _, Hasher as _},
    io::Read as _,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::SystemTime,
};

/// Most bytes read from all the files of one configuration together
/// (16 MiB). A keepalived.conf of 1,024 virtual servers with 16 reals each
/// is about 1 MiB; the cap keeps what a parse can allocate bounded.
pub const MAX_INPUT_BYTES: u64 = 16 << 20;

/// Most files opened for one configuration, the main file included (1,024):
/// bounds the fan-out of `include` globs that include each other.
pub const MAX_FILES: usize = 1024;

/// What one configuration may still consume.
#[derive(Debug)]
pub struct Budget {
    /// Bytes that may still be read.
    pub bytes_left: u64,
    /// Files that may still be opened.
    pub files_left: usize,
    /// Refuse files (and directories above them) that a non-root user could
    /// change; set when running as root (keepalived's script security rule).
    pub require_root_owned: bool,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            bytes_left: MAX_INPUT_BYTES,
            files_left: MAX_FILES,
            // SAFETY: geteuid has no preconditions and cannot fail.
            require_root_owned: unsafe { libc::geteuid() } == 0,
        }
    }
}

/// One file as it was read: enough to tell later whether it changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// Size in bytes from `fstat`, before reading.
    pub len: u64,
    pub mtime: Option<SystemTime>,
    /// Hash of the bytes read (SipHash, `std`'s default hasher).
    pub hash: u64,
}

/// Why a file could not be read. The messages name the path and the limit,
/// never the file's content.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a regular file ({kind}); only regular files are read")]
    NotRegular { path: String, kind: &'static str },
    #[error("{path} is refused: {why} (running as root, an included file and the path to it must be changeable by root only, the rule of keepalived's enable_script_security)")]
    Insecure { path: String, why: String },
    #[error("more than {MAX_FILES} files opened for this configuration (limit MAX_FILES); {path} not read")]
    TooManyFiles { path: String },
    #[error("the configuration is larger than {} MiB in all (limit MAX_INPUT_BYTES); {path} not read", MAX_INPUT_BYTES >> 20)]
    TooLarge { path: String },
}

fn kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Why `path` could be changed by a non-root user, if it could: the file
/// itself, every directory above it, every symbolic link on the way (by its
/// owner) and everything on the path the links resolve to.
pub fn changeable_by_non_root(path: &Path) -> Option<String> {
    let abs = if path.is_absolute() {
        path.to_owned()
    } else {
        match std::env::current_dir() {
            Ok(d) => d.join(path),
            Err(e) => return Some(format!("the current directory cannot be read ({e})")),
        }
    };
    // The same rule as for programs run as root (keepalived's
    // enable_script_security), applied to what is read.
    match crate::util::security::weak_point(&abs) {
        Ok(None) => None,
        Ok(Some(weak)) => Some(weak.to_string()),
        // What cannot be walked (missing, not a regular file) is reported
        // by the open and fstat that follow, with the right reason.
        Err(_) => None,
    }
}

/// Reads `path` if it is a regular file within the budget, returning its
/// bytes and stamp. `check_owner` asks for the root-only rule (includes).
pub fn read(
    path: &Path,
    budget: &mut Budget,
    check_owner: bool,
) -> Result<(Vec<u8>, FileStamp), ReadError> {
    let shown = || path.display().to_string();
    if budget.files_left == 0 {
        return Err(ReadError::TooManyFiles { path: shown() });
    }
    budget.files_left -= 1;
    if check_owner && budget.require_root_owned {
        if let Some(why) = changeable_by_non_root(path) {
            return Err(ReadError::Insecure { path: shown(), why });
        }
    }
    // O_NONBLOCK: opening a FIFO for reading never waits for a writer.
    // O_NOCTTY: a terminal device never becomes our controlling terminal.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| ReadError::Open {
            path: shown(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| ReadError::Read {
        path: shown(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular {
            path: shown(),
            kind: kind(meta.file_type()),
        });
    }
    if check_owner && budget.require_root_owned && (meta.uid() != 0 || meta.mode() & 0o022 != 0) {
        // The file opened is not the one checked (replaced in between).
        return Err(ReadError::Insecure {
            path: shown(),
            why: "the file opened is owned or writable by a non-root user".into(),
        });
    }
    if meta.len() > budget.bytes_left {
        return Err(ReadError::TooLarge { path: shown() });
    }
    // The file may grow while read: never read more than the budget allows.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(budget.bytes_left + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| ReadError::Read {
            path: shown(),
            source,
        })?;
    if bytes.len() as u64 > budget.bytes_left {
        return Err(ReadError::TooLarge { path: shown() });
    }
    budget.bytes_left -= bytes.len() as u64;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    let stamp = FileStamp {
        path: path.to_owned(),
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        mtime: meta.modified().ok(),
        hash: h.finish(),
    };
    Ok((bytes, stamp))
}

/// Reads `stamp.path` again (own budget) and tells whether it is still
/// what `stamp` describes.
pub fn unchanged(stamp: &FileStamp) -> bool {
    let mut budget = Budget {
        files_left: 1,
        ..Budget::default()
    };
    match read(&stamp.path, &mut budget, false) {
        Ok((_, now)) => now == *stamp,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lb-source-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let d = tmpdir("fifo");
        let fifo = d.join("fifo.conf");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let t = std::time::Instant::now();
        let e = read(&fifo, &mut Budget::default(), false).unwrap_err();
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert!(
            matches!(e, ReadError::NotRegular { kind: "a FIFO", .. }),
            "{e}"
        );
    }

    #[test]
    fn devices_are_refused() {
        let e = read(Path::new("/dev/zero"), &mut Budget::default(), false).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::NotRegular {
                    kind: "a character device",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn budget_caps_bytes_and_files() {
        let d = tmpdir("budget");
        let f = d.join("a.conf");
        std::fs::write(&f, vec![b'x'; 100]).unwrap();
        let mut b = Budget {
            bytes_left: 150,
            files_left: 2,
            require_root_owned: false,
        };
        assert_eq!(read(&f, &mut b, false).unwrap().0.len(), 100);
        let e = read(&f, &mut b, false).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { .. }), "{e}");
        assert!(e.to_string().contains("MAX_INPUT_BYTES"), "{e}");
        let e = read(&f, &mut b, false).unwrap_err();
        assert!(matches!(e, ReadError::TooManyFiles { .. }), "{e}");
        assert!(e.to_string().contains("MAX_FILES"), "{e}");
    }

    #[test]
    fn writable_directory_is_refused_for_root() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tmpdir("owner");
        let sub = d.join("shared");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        let f = sub.join("inc.conf");
        std::fs::write(&f, "x\n").unwrap();
        let mut b = Budget {
            require_root_owned: true,
            ..Budget::default()
        };
        // As root: the directory is writable by all. As another user: the
        // file is not root's. Refused either way.
        let e = read(&f, &mut b, true).unwrap_err();
        assert!(matches!(e, ReadError::Insecure { .. }), "{e}");
        // Not asked to check (the main file): read.
        assert!(read(&f, &mut b, false).is_ok());
    }

    #[test]
    fn symlink_into_writable_directory_is_refused_for_root() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tmpdir("link");
        let open = d.join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::write(open.join("real.conf"), "x\n").unwrap();
        let safe = d.join("safe");
        std::fs::create_dir(&safe).unwrap();
        std::os::unix::fs::symlink(open.join("real.conf"), safe.join("link.conf")).unwrap();
        let mut b = Budget {
            require_root_owned: true,
            ..Budget::default()
        };
        let e = read(&safe.join("link.conf"), &mut b, true).unwrap_err();
        assert!(matches!(e, ReadError::Insecure { .. }), "{e}");
    }

    #[test]
    fn stamp_tells_a_change() {
        let d = tmpdir("stamp");
        let f = d.join("a.conf");
        std::fs::write(&f, "one\n").unwrap();
        let (_, s) = read(&f, &mut Budget::default(), false).unwrap();
        assert!(unchanged(&s));
        std::fs::write(&f, "two\n").unwrap();
        assert!(!unchanged(&s));
    }
}
