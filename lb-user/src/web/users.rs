//! The web console's users: the file `lb passwd` writes and the agent reads
//! at each login.
//!
//! Format (`/etc/lb/web-users` by default), one user a line, `#` comments:
//!
//! ```text
//! NAME ROLE HASH
//! admin admin $argon2id$v=19$m=19456,t=2,p=1$…$…
//! ops view $argon2id$v=19$m=19456,t=2,p=1$…$…
//! ```
//!
//! NAME is 1 to 32 of `A-Z a-z 0-9 . _ -`; ROLE is `admin` (may change the
//! configuration) or `view` (read only); HASH is an Argon2id hash in the PHC
//! string format (RFC 9106 parameters of the argon2 crate's defaults:
//! 19 MiB, 2 passes, 1 lane, 16-byte random salt). The file is written
//! mode 0600 by [`write`] (a new file renamed over the old one) and trusted
//! only when it is owned by root (or by the agent's own user) and neither
//! group- nor world-writable ([`load`]): a file an unprivileged user could
//! write would let them make themselves admin.

use std::{
    fmt,
    os::unix::fs::{MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
};

use argon2::{
    password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString},
    Argon2,
};

/// Default users file.
pub const DEFAULT_FILE: &str = "/etc/lb/web-users";
/// Longest password accepted, bytes (argon2 takes any length; this bounds
/// the work a login request can ask for).
pub const MAX_PASSWORD: usize = 1024;
/// Largest users file read, bytes.
pub const MAX_FILE: u64 = 1 << 20;

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Every page; no change.
    View,
    /// Every page and every change (setup, drain, reload).
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::View => "view",
            Role::Admin => "admin",
        }
    }

    /// `admin` or `view`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "view" => Some(Role::View),
            _ => None,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub role: Role,
    /// Argon2 PHC string.
    pub hash: String,
}

/// Reading, checking or writing the users file failed.
#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not trusted: {why} (it must be owned by root and writable by its owner only: chown root {path}; chmod 600 {path})")]
    Untrusted { path: PathBuf, why: String },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{path}: larger than {MAX_FILE} bytes")]
    TooLarge { path: PathBuf },
    #[error("user name {0:?}: 1 to 32 of A-Z a-z 0-9 . _ -")]
    BadName(String),
    #[error("no user {0}; nothing changed")]
    NoSuchUser(String),
    #[error("the password is empty")]
    EmptyPassword,
    #[error("the password is longer than {MAX_PASSWORD} bytes")]
    LongPassword,
    #[error("hashing the password: {0}")]
    Hash(String),
}

/// Whether `name` is a valid user name.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses the file's text (`path` names it in errors).
pub fn parse(path: &Path, text: &str) -> Result<Vec<User>, UsersError> {
    let mut users: Vec<User> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let syntax = |message: String| UsersError::Syntax {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let [name, role, hash] = words[..] else {
            return Err(syntax(format!(
                "expected NAME ROLE HASH, found {} word(s)",
                words.len()
            )));
        };
        if !valid_name(name) {
            return Err(syntax(UsersError::BadName(name.into()).to_string()));
        }
        let role = Role::parse(role)
            .ok_or_else(|| syntax(format!("role {role:?}: expected admin or view")))?;
        PasswordHash::new(hash).map_err(|e| syntax(format!("hash of {name}: {e}")))?;
        if users.iter().any(|u| u.name == name) {
            return Err(syntax(format!("user {name} defined twice")));
        }
        users.push(User {
            name: name.into(),
            role,
            hash: hash.into(),
        });
    }
    Ok(users)
}

/// The file's text for `users`.
pub fn render(users: &[User]) -> String {
    let mut s =
        String::from("# lb web console users (lb passwd): NAME ROLE(admin|view) ARGON2-HASH\n");
    for u in users {
        s.push_str(&format!("{} {} {}\n", u.name, u.role, u.hash));
    }
    s
}

/// Why `meta` (of a users file) is not to be trusted, if it is not.
fn distrust(meta: &std::fs::Metadata) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != euid {
        return Some(format!("owned by uid {}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!("mode {:o}", meta.mode() & 0o7777));
    }
    if !meta.is_file() {
        return Some("not a regular file".into());
    }
    None
}

/// Why the directory `meta` (holding a users file) is not to be trusted:
/// one another user could write to could get the file replaced.
fn distrust_dir(meta: &std::fs::Metadata) -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != 0 && meta.uid() != euid {
        return Some(format!("its directory is owned by uid {}", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!("its directory has mode {:o}", meta.mode() & 0o7777));
    }
    None
}

/// Reads and checks the users file. A missing file is no users (every
/// login fails), not an error.
pub fn load(path: &Path) -> Result<Vec<User>, UsersError> {
    let io = |source| UsersError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(e)),
    };
    let meta = file.metadata().map_err(io)?;
    let dir_why = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .and_then(|d| std::fs::metadata(d).ok())
        .and_then(|d| distrust_dir(&d));
    if let Some(why) = distrust(&meta).or(dir_why) {
        return Err(UsersError::Untrusted {
            path: path.to_path_buf(),
            why,
        });
    }
    if meta.len() > MAX_FILE {
        return Err(UsersError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let mut text = String::new();
    std::io::Read::read_to_string(&mut std::io::Read::take(&file, MAX_FILE), &mut text)
        .map_err(io)?;
    parse(path, &text)
}

/// Writes `users` to `path` as [`crate::util::replace_file`] does (a new
/// file, mode 0600, synced and renamed over the old one); the directory is
/// made (0755) when missing.
pub fn write(path: &Path, users: &[User]) -> Result<(), UsersError> {
    let io = |source| UsersError::Io {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.as_os_str().is_empty() && !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
    }
    crate::util::replace_file(path, render(users).as_bytes()).map_err(|e| UsersError::Io {
        path: e.path,
        source: e.source,
    })
}

/// The Argon2id hash of `password` with a fresh random salt.
pub fn hash(password: &str) -> Result<String, UsersError> {
    check_password(password)?;
    let mut salt = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| UsersError::Hash("no random bytes".into()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| UsersError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
}

fn check_password(password: &str) -> Result<(), UsersError> {
    if password.is_empty() {
        return Err(UsersError::EmptyPassword);
    }
    if password.len() > MAX_PASSWORD {
        return Err(UsersError::LongPassword);
    }
    Ok(())
}

/// Whether `password` matches `user`'s hash (constant time in the
/// password, as the argon2 crate compares).
pub fn verify(user: &User, password: &str) -> bool {
    if check_password(password).is_err() {
        return false;
    }
    let Ok(parsed) = PasswordHash::new(&user.hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// A hash to verify against when the user does not exist, so that a
/// login for an unknown name takes as long as a wrong password.
pub fn decoy() -> &'static User {
    static DECOY: std::sync::OnceLock<User> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| User {
        name: String::new(),
        role: Role::View,
        hash: hash("decoy password never matched").unwrap_or_default(),
    })
}

/// `lb passwd`: sets (adds or replaces) or deletes a user in `path`.
/// Returns the line for the operator.
pub fn set(
    path: &Path,
    name: &str,
    role: Role,
    password: Option<&str>,
) -> Result<String, UsersError> {
    if !valid_name(name) {
        return Err(UsersError::BadName(name.into()));
    }
    let mut users = load(path)?;
    let Some(password) = password else {
        let before = users.len();
        users.retain(|u| u.name != name);
        if users.len() == before {
            return Err(UsersError::NoSuchUser(name.into()));
        }
        write(path, &users)?;
        return Ok(format!("{}: user {name} deleted", path.display()));
    };
    let user = User {
        name: name.into(),
        role,
        hash: hash(password)?,
    };
    let what = match users.iter_mut().find(|u| u.name == name) {
        Some(u) => {
            *u = user;
            "changed"
        }
        None => {
            users.push(user);
            "added"
        }
    };
    write(path, &users)?;
    Ok(format!(
        "{}: user {name} ({role}) {what}; the console reads it at the next login",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_only_its_password() {
        let u = User {
            name: "a".into(),
            role: Role::Admin,
            hash: hash("s3cret").unwrap(),
        };
        assert!(u.hash.starts_with("$argon2id$"));
        assert!(verify(&u, "s3cret"));
        assert!(!verify(&u, "s3cret "));
        assert!(!verify(&u, ""));
        assert!(!verify(decoy(), "s3cret"));
        assert!(matches!(hash(""), Err(UsersError::EmptyPassword)));
        assert!(matches!(
            hash(&"x".repeat(MAX_PASSWORD + 1)),
            Err(UsersError::LongPassword)
        ));
    }

    #[test]
    fn parse_locates_errors() {
        let p = Path::new("/f");
        let h = hash("x").unwrap();
        let ok = parse(p, &format!("# c\n\nadmin admin {h}\nops view {h}\n")).unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[1].role, Role::View);
        for (text, want) in [
            ("a admin\n".to_string(), "/f:1: expected NAME ROLE HASH"),
            (format!("\nb@ admin {h}\n"), "/f:2: user name"),
            (format!("a root {h}\n"), "/f:1: role \"root\""),
            ("a admin nothash\n".to_string(), "/f:1: hash of a"),
            (
                format!("a admin {h}\na view {h}\n"),
                "/f:2: user a defined twice",
            ),
        ] {
            let e = parse(p, &text).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e} (want {want})");
        }
        assert_eq!(parse(p, &render(&ok)).unwrap(), ok);
    }

    #[test]
    fn set_adds_replaces_deletes_and_refuses_untrusted_files() {
        let dir = std::env::temp_dir().join(format!("lb-users-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/web-users");
        assert!(load(&path).unwrap().is_empty());
        set(&path, "admin", Role::Admin, Some("one")).unwrap();
        set(&path, "ops", Role::View, Some("two")).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let users = load(&path).unwrap();
        assert!(verify(&users[0], "one") && verify(&users[1], "two"));
        set(&path, "admin", Role::View, Some("three")).unwrap();
        let users = load(&path).unwrap();
        assert_eq!(users[0].role, Role::View);
        assert!(verify(&users[0], "three") && !verify(&users[0], "one"));
        set(&path, "ops", Role::View, None).unwrap();
        assert_eq!(load(&path).unwrap().len(), 1);
        assert!(matches!(
            set(&path, "ops", Role::View, None),
            Err(UsersError::NoSuchUser(_))
        ));
        let sub = path.parent().unwrap();
        std::fs::set_permissions(sub, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("its directory has mode 777"), "{e}");
        std::fs::set_permissions(sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(set(&path, "bad name", Role::View, Some("x")).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(e.contains("not trusted: mode 666"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
