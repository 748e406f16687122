//! Script security: may a configured program run, and which file is it?
//!
//! The rule of keepalived 2.2.7 (`lib/notify.c`: `check_script_secure`,
//! `check_security`, `is_executable`), applied to every program the
//! configuration runs, at load and again before each run:
//!
//! - a bare name is looked up in [`SEARCH_PATH`] (keepalived searches its
//!   PATH and warns); a relative path is taken from `/` (keepalived's working
//!   directory);
//! - the path is resolved component by component without following anything
//!   blindly: every directory, every symbolic link traversed and the file
//!   itself are looked at (keepalived looks at the `realpath` only; a link a
//!   user can re-point is refused here too);
//! - the file must be a regular file executable by the account it runs as;
//! - when it runs privileged (uid or gid 0, or a set-uid / set-gid root
//!   executable), none of those objects may be changeable by a non-root
//!   user: owned by root, not writable by others, not writable by a group
//!   other than root's (directories with the sticky bit, as `/tmp`, excepted
//!   from the write bits, as keepalived; a link's own mode means nothing,
//!   its owner does).
//!
//! The caller executes [`Checked::path`], the resolved file, never the name
//! again. A privileged program passes only if no non-root user can change
//! any object on its path, so the path checked is the path executed.

use std::{
    ffi::OsString,
    fmt,
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

/// Directories searched for a bare program name, in order: the PATH the
/// programs are given (see `util::process`).
pub const SEARCH_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Most symbolic links followed in one resolution (the kernel's MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// The account a program runs as: (uid, gid).
pub type Account = (u32, u32);

/// Why a program cannot run at all (keepalived disables such a program:
/// `SC_NOTFOUND`, "not executable").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    #[error("no program given")]
    Empty,
    #[error("{}: {why}", .path.display())]
    Unreadable { path: PathBuf, why: String },
    #[error("'{0}' is not an executable file in {SEARCH_PATH}")]
    NotInPath(String),
    #[error("{}: more than {MAX_LINKS} symbolic links", .0.display())]
    Loop(PathBuf),
    #[error("{} is not a directory", .0.display())]
    NotDir(PathBuf),
    #[error("{} is not a regular file", .0.display())]
    NotFile(PathBuf),
    #[error("{} is not executable by uid {} gid {}", .path.display(), .user.0, .user.1)]
    NotExecutable { path: PathBuf, user: Account },
}

/// What makes an object changeable by a non-root user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weakness {
    /// Owned by this uid.
    Owner(u32),
    /// A symbolic link owned by this uid (its owner can re-point it).
    LinkOwner(u32),
    /// Writable by this non-root group (mode given).
    GroupWritable { gid: u32, mode: u32 },
    /// Writable by every user (mode given).
    OtherWritable { mode: u32 },
}

impl fmt::Display for Weakness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Weakness::Owner(uid) => write!(f, "is owned by uid {uid}"),
            Weakness::LinkOwner(uid) => write!(f, "is a symbolic link owned by uid {uid}"),
            Weakness::GroupWritable { gid, mode } => {
                write!(f, "is writable by group {gid} (mode {mode:o})")
            }
            Weakness::OtherWritable { mode } => {
                write!(f, "is writable by every user (mode {mode:o})")
            }
        }
    }
}

/// The first object on a program's path that a non-root user could change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} {weakness}", .path.display())]
pub struct Insecure {
    pub path: PathBuf,
    pub weakness: Weakness,
}

/// A program that can run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The file to execute: absolute, no `.`, `..` or symbolic link.
    pub path: PathBuf,
    /// Found by searching [`SEARCH_PATH`] for a bare name.
    pub searched: bool,
    /// It runs with root's rights (uid or gid 0, or set-uid / set-gid root).
    pub privileged: bool,
    /// Privileged and changeable by a non-root user (`None` when not
    /// privileged: keepalived does not ask then).
    pub insecure: Option<Insecure>,
}

/// Why a program is not run.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error(transparent)]
    Unusable(#[from] Unusable),
    #[error("{0}: a non-root user could change what runs as root (enable_script_security)")]
    Insecure(Insecure),
}

/// Resolves and checks `program` (a configured program's first word) run as
/// `user`; see the module documentation for the rule.
pub fn check(program: &str, user: Account) -> Result<Checked, Unusable> {
    if program.is_empty() {
        return Err(Unusable::Empty);
    }
    let (walk, searched) = if program.contains('/') {
        (walk(&Path::new("/").join(program))?, false)
    } else {
        (search(program, user)?, true)
    };
    if !executable_by(&walk.file, user) {
        return Err(Unusable::NotExecutable {
            path: walk.path,
            user,
        });
    }
    let privileged = privileged(&walk.file, user);
    Ok(Checked {
        path: walk.path,
        searched,
        privileged,
        insecure: if privileged { walk.weak } else { None },
    })
}

/// [`check`] with keepalived's policy: with `script_security`
/// (`enable_script_security`) an insecure privileged program is refused;
/// without it, it is returned (with [`Checked::insecure`] set, to be warned
/// about) and runs, as keepalived runs it.
pub fn authorize(program: &str, user: Account, script_security: bool) -> Result<Checked, Refused> {
    let c = check(program, user)?;
    match &c.insecure {
        Some(i) if script_security => Err(Refused::Insecure(i.clone())),
        _ => Ok(c),
    }
}

/// What a non-root user could change on the way to `path` (absolute): the
/// file, a directory above it or a symbolic link traversed, by the rule of
/// [`check`]; `Ok(None)` when nothing. Used for files that are read rather
/// than run (configuration includes).
pub fn weak_point(path: &Path) -> Result<Option<Insecure>, Unusable> {
    walk(path).map(|w| w.weak)
}

/// A resolved path with what was seen on the way.
struct Walk {
    path: PathBuf,
    file: std::fs::Metadata,
    /// The first weak object traversed.
    weak: Option<Insecure>,
}

fn lstat(p: &Path) -> Result<std::fs::Metadata, Unusable> {
    std::fs::symlink_metadata(p).map_err(|e| unreadable(p, &e))
}

/// The error as strerror words ("No such file or directory"), without
/// std's " (os error N)".
fn unreadable(p: &Path, e: &std::io::Error) -> Unusable {
    let text = e.to_string();
    let why = match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    };
    Unusable::Unreadable {
        path: p.to_path_buf(),
        why,
    }
}

/// Resolves an absolute `path` as the kernel would, looking at (lstat)
/// every directory, link and the final file.
fn walk(path: &Path) -> Result<Walk, Unusable> {
    // Components still to resolve, the next one last.
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, path);
    let mut cur = PathBuf::from("/");
    let mut meta = lstat(&cur)?;
    let mut weak = weakness(&meta).map(|weakness| Insecure {
        path: cur.clone(),
        weakness,
    });
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            cur.pop();
            meta = lstat(&cur)?;
            continue;
        }
        let next = cur.join(&name);
        let m = lstat(&next)?;
        if weak.is_none() {
            weak = weakness(&m).map(|weakness| Insecure {
                path: next.clone(),
                weakness,
            });
        }
        if m.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(Unusable::Loop(path.to_path_buf()));
            }
            let target = std::fs::read_link(&next).map_err(|e| unreadable(&next, &e))?;
            if target.is_absolute() {
                cur = PathBuf::from("/");
            }
            push_components(&mut pending, &target);
            continue;
        }
        if !pending.is_empty() && !m.is_dir() {
            return Err(Unusable::NotDir(next));
        }
        cur = next;
        meta = m;
    }
    if !meta.is_file() {
        return Err(Unusable::NotFile(cur));
    }
    Ok(Walk {
        path: cur,
        file: meta,
        weak,
    })
}

/// Pushes `p`'s components so that the first is popped first; `.` and the
/// root are dropped (the caller restarts from `/` for absolute paths).
fn push_components(pending: &mut Vec<OsString>, p: &Path) {
    let start = pending.len();
    for c in p.components() {
        match c {
            Component::Normal(n) => pending.push(n.to_os_string()),
            Component::ParentDir => pending.push("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    pending[start..].reverse();
}

/// The first executable file named `name` in [`SEARCH_PATH`] (as
/// keepalived's `find_path`: files not executable by `user` are skipped).
fn search(name: &str, user: Account) -> Result<Walk, Unusable> {
    for dir in SEARCH_PATH.split(':') {
        if let Ok(w) = walk(&Path::new(dir).join(name)) {
            if executable_by(&w.file, user) {
                return Ok(w);
            }
        }
    }
    Err(Unusable::NotInPath(name.to_string()))
}

/// keepalived's `check_security` test for one object.
fn weakness(m: &std::fs::Metadata) -> Option<Weakness> {
    let ft = m.file_type();
    if ft.is_symlink() {
        return (m.uid() != 0).then_some(Weakness::LinkOwner(m.uid()));
    }
    if m.uid() != 0 {
        return Some(Weakness::Owner(m.uid()));
    }
    let mode = m.mode() & 0o7777;
    let checked = (ft.is_dir() && mode & 0o1000 == 0) || ft.is_file();
    if !checked {
        return None;
    }
    if mode & 0o002 != 0 {
        return Some(Weakness::OtherWritable { mode });
    }
    if m.gid() != 0 && mode & 0o020 != 0 {
        return Some(Weakness::GroupWritable { gid: m.gid(), mode });
    }
    None
}

/// keepalived's `is_executable`: root needs any x bit; others the bit of
/// their class.
fn executable_by(m: &std::fs::Metadata, (uid, gid): Account) -> bool {
    let mode = m.mode();
    (uid == 0 && mode & 0o111 != 0)
        || (uid == m.uid() && mode & 0o100 != 0)
        || (uid != m.uid()
            && ((gid == m.gid() && mode & 0o010 != 0) || (gid != m.gid() && mode & 0o001 != 0)))
}

/// keepalived's `need_script_protection`: run as uid or gid 0, or a set-uid
/// / set-gid root executable.
fn privileged(m: &std::fs::Metadata, (uid, gid): Account) -> bool {
    let mode = m.mode();
    uid == 0
        || gid == 0
        || (m.uid() == 0 && mode & 0o4000 != 0 && mode & 0o100 != 0)
        || (m.gid() == 0 && mode & 0o2000 != 0 && mode & 0o010 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt as _};

    const NOBODY: u32 = 65534;

    /// A directory under /tmp owned by root, mode 755, removed on drop.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!("lb-sec-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&d);
            std::fs::create_dir(&d).unwrap();
            std::os::unix::fs::chown(&d, Some(0), Some(0)).unwrap();
            chmod(&d, 0o755);
            Dir(d)
        }
        /// An executable shell script `name` (root, 755).
        fn program(&self, name: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
            chmod(&p, 0o755);
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn chown(p: &Path, uid: u32) {
        std::os::unix::fs::lchown(p, Some(uid), None).unwrap();
    }

    fn weak(p: &Path, user: Account) -> Option<Insecure> {
        check(p.to_str().unwrap(), user).unwrap().insecure
    }

    #[test]
    fn a_root_owned_program_in_root_owned_directories_is_secure() {
        let d = Dir::new("ok");
        let p = d.program("ok.sh");
        let c = check(p.to_str().unwrap(), (0, 0)).unwrap();
        assert_eq!(
            c,
            Checked {
                path: p,
                searched: false,
                privileged: true,
                insecure: None
            }
        );
    }

    #[test]
    fn a_program_owned_by_a_user_is_insecure_when_run_as_root() {
        let d = Dir::new("owner");
        let p = d.program("user.sh");
        chown(&p, NOBODY);
        assert_eq!(
            weak(&p, (0, 0)),
            Some(Insecure {
                path: p.clone(),
                weakness: Weakness::Owner(NOBODY)
            })
        );
        // Run as that user, nothing to protect (keepalived does not ask).
        let c = check(p.to_str().unwrap(), (NOBODY, NOBODY)).unwrap();
        assert!(!c.privileged && c.insecure.is_none());
        // gid 0 alone is privileged.
        assert!(weak(&p, (NOBODY, 0)).is_some());
        assert_eq!(
            authorize(p.to_str().unwrap(), (0, 0), true),
            Err(Refused::Insecure(Insecure {
                path: p.clone(),
                weakness: Weakness::Owner(NOBODY)
            }))
        );
        // Without enable_script_security it runs, flagged.
        assert!(authorize(p.to_str().unwrap(), (0, 0), false)
            .unwrap()
            .insecure
            .is_some());
    }

    #[test]
    fn writable_files_and_directories_are_insecure_unless_sticky_or_root_group() {
        let d = Dir::new("modes");
        let p = d.program("x.sh");
        chmod(&p, 0o757);
        assert_eq!(
            weak(&p, (0, 0)).unwrap().weakness,
            Weakness::OtherWritable { mode: 0o757 }
        );
        // Group write by root's group is accepted (keepalived), by another group not.
        chmod(&p, 0o775);
        assert_eq!(weak(&p, (0, 0)), None);
        std::os::unix::fs::chown(&p, None, Some(NOBODY)).unwrap();
        assert_eq!(
            weak(&p, (0, 0)).unwrap().weakness,
            Weakness::GroupWritable {
                gid: NOBODY,
                mode: 0o775
            }
        );
        std::os::unix::fs::chown(&p, None, Some(0)).unwrap();
        chmod(&p, 0o755);
        // A world-writable directory above it.
        chmod(&d.0, 0o777);
        assert_eq!(
            weak(&p, (0, 0)),
            Some(Insecure {
                path: d.0.clone(),
                weakness: Weakness::OtherWritable { mode: 0o777 }
            })
        );
        // The same with the sticky bit (as /tmp) is accepted.
        chmod(&d.0, 0o1777);
        assert_eq!(weak(&p, (0, 0)), None);
        // A user-owned directory above it is not, sticky or not.
        chown(&d.0, NOBODY);
        assert_eq!(weak(&p, (0, 0)).unwrap().weakness, Weakness::Owner(NOBODY));
    }

    #[test]
    fn a_user_owned_link_in_sticky_tmp_is_insecure_and_the_target_is_what_runs() {
        let d = Dir::new("link");
        let target = d.program("real.sh");
        // /tmp is root's and sticky: a link there owned by a user.
        let link = std::env::temp_dir().join(format!("lb-sec-tmplink-{}", std::process::id()));
        let _ = std::fs::remove_file(&link);
        symlink(&target, &link).unwrap();
        chown(&link, NOBODY);
        let c = check(link.to_str().unwrap(), (0, 0)).unwrap();
        assert_eq!(c.path, target, "the resolved file is what runs");
        assert_eq!(
            c.insecure,
            Some(Insecure {
                path: link.clone(),
                weakness: Weakness::LinkOwner(NOBODY)
            })
        );
        // The same link owned by root: nobody else can re-point it (sticky).
        chown(&link, 0);
        assert_eq!(
            check(link.to_str().unwrap(), (0, 0)).unwrap().insecure,
            None
        );
        std::fs::remove_file(&link).unwrap();
    }

    #[test]
    fn links_in_a_writable_directory_and_relative_links_are_followed_and_checked() {
        let d = Dir::new("rel");
        let target = d.program("real.sh");
        let sub = d.0.join("sub");
        std::fs::create_dir(&sub).unwrap();
        chmod(&sub, 0o755);
        // sub/link -> ../real.sh, sub/dot -> ./link: relative links, resolved.
        symlink("../real.sh", sub.join("link")).unwrap();
        symlink("./link", sub.join("dot")).unwrap();
        let via = sub.join("dot");
        let c = check(via.to_str().unwrap(), (0, 0)).unwrap();
        assert_eq!((c.path.clone(), c.insecure), (target.clone(), None));
        // `..` and `.` in the configured path.
        let odd = format!("{}/./sub/../real.sh", d.0.display());
        assert_eq!(check(&odd, (0, 0)).unwrap().path, target);
        // A group-writable (non-root group) directory holding the link.
        std::os::unix::fs::chown(&sub, None, Some(NOBODY)).unwrap();
        chmod(&sub, 0o775);
        assert_eq!(
            check(via.to_str().unwrap(), (0, 0)).unwrap().insecure,
            Some(Insecure {
                path: sub.clone(),
                weakness: Weakness::GroupWritable {
                    gid: NOBODY,
                    mode: 0o775
                }
            })
        );
    }

    #[test]
    fn what_cannot_run_is_named() {
        let d = Dir::new("bad");
        let p = d.program("x.sh");
        chmod(&p, 0o644);
        assert_eq!(
            check(p.to_str().unwrap(), (NOBODY, NOBODY)),
            Err(Unusable::NotExecutable {
                path: p.clone(),
                user: (NOBODY, NOBODY)
            })
        );
        // Owner-only execute: root may, another user may not.
        chmod(&p, 0o744);
        assert!(check(p.to_str().unwrap(), (0, 0)).is_ok());
        assert!(check(p.to_str().unwrap(), (NOBODY, NOBODY)).is_err());
        let missing = d.0.join("missing");
        assert_eq!(
            check(missing.to_str().unwrap(), (0, 0)),
            Err(Unusable::Unreadable {
                path: missing.clone(),
                why: "No such file or directory".into()
            })
        );
        assert_eq!(
            check(d.0.to_str().unwrap(), (0, 0)),
            Err(Unusable::NotFile(d.0.clone()))
        );
        let through_file = format!("{}/x.sh/y", d.0.display());
        assert_eq!(
            check(&through_file, (0, 0)),
            Err(Unusable::NotDir(p.clone()))
        );
        let a = d.0.join("a");
        symlink("b", &a).unwrap();
        symlink("a", d.0.join("b")).unwrap();
        assert_eq!(
            check(a.to_str().unwrap(), (0, 0)),
            Err(Unusable::Loop(a.clone()))
        );
        assert_eq!(check("", (0, 0)), Err(Unusable::Empty));
        assert_eq!(
            check("lb-no-such-program", (0, 0)),
            Err(Unusable::NotInPath("lb-no-such-program".into()))
        );
    }

    #[test]
    fn bare_names_are_searched_and_setuid_root_is_privileged() {
        let c = check("sh", (NOBODY, NOBODY)).unwrap();
        assert!(c.searched && c.path.is_absolute() && !c.privileged);
        assert!(c.path.ends_with("sh") || c.path.ends_with("dash") || c.path.ends_with("bash"));
        let d = Dir::new("suid");
        let p = d.program("s");
        chmod(&p, 0o4755);
        assert!(
            check(p.to_str().unwrap(), (NOBODY, NOBODY))
                .unwrap()
                .privileged
        );
        chmod(&p, 0o2755);
        assert!(
            check(p.to_str().unwrap(), (NOBODY, NOBODY))
                .unwrap()
                .privileged
        );
    }
}
