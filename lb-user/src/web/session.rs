//! Sessions, CSRF tokens and the login rate limit of the web console.
//!
//! A session is a random 256-bit token in the cookie [`COOKIE`] (HttpOnly,
//! SameSite=Strict, Secure under TLS, Path=/), kept in memory only: an
//! agent restart logs everyone out. It ends after [`IDLE`] without a
//! request or [`LIFETIME`] after the login. Each session has its own CSRF
//! token (OWASP's synchroniser token pattern), which every form that
//! changes something carries in its hidden field `csrf`; the login form,
//! before any session, carries the value of the cookie [`LOGIN_COOKIE`]
//! (double submit). Tokens are compared in constant time.
//!
//! Logins are limited per client address: each attempt counts as a failure
//! before its password is hashed (so parallel attempts cannot pass the
//! limit) and a success clears the count; [`MAX_FAILURES`] in [`WINDOW`],
//! then every login from that address is refused (429) until the window
//! has passed. There is no limit over all addresses (it would let anyone
//! lock every admin out); a guessing attempt spread over many addresses is
//! bounded by the hash itself, computed one at a time
//! ([`super::auth::HASHES_AT_ONCE`]). A user has at most
//! [`MAX_SESSIONS_PER_USER`] sessions (their oldest ends first), so one
//! user's logins cannot push out the others'. Nothing here blocks: one
//! short std mutex per table.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use super::users::Role;

/// The session cookie.
pub const COOKIE: &str = "lb_session";
/// The login form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "lb_login";
/// A session ends this long after its last request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after its login.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at once; the least recently used goes first.
pub const MAX_SESSIONS: usize = 1024;
/// Failed logins from one address in [`WINDOW`] before it is refused.
pub const MAX_FAILURES: u32 = 5;
/// Sessions one user has at once.
pub const MAX_SESSIONS_PER_USER: usize = 16;
/// The rate limit's window.
pub const WINDOW: Duration = Duration::from_secs(60);

/// A random token: 32 bytes from the system's CSPRNG as 64 hex digits.
pub fn token() -> String {
    let mut b = [0u8; 32];
    // The kernel's getrandom does not fail once the pool is initialised;
    // should it, the zero token is refused by `Sessions::get` (no session
    // is ever stored under it).
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Whether `t` has the form of a [`token`] (64 lower-case hex digits).
pub fn is_token(t: &str) -> bool {
    t.len() == 64 && t.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Whether `a` and `b` are equal, in time independent of where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A logged-in user.
#[derive(Clone, Debug)]
pub struct Session {
    pub user: String,
    pub role: Role,
    /// This session's CSRF token.
    pub csrf: String,
    started: Instant,
    seen: Instant,
}

/// The sessions.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// A new session for `user`; returns its token.
    pub fn create(&self, user: &str, role: Role) -> String {
        let id = token();
        let now = Instant::now();
        let s = Session {
            user: user.into(),
            role,
            csrf: token(),
            started: now,
            seen: now,
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| live(s, now));
        let mine: Vec<(Instant, String)> = map
            .iter()
            .filter(|(_, s)| s.user == user)
            .map(|(k, s)| (s.seen, k.clone()))
            .collect();
        if mine.len() >= MAX_SESSIONS_PER_USER {
            if let Some((_, oldest)) = mine.into_iter().min() {
                map.remove(&oldest);
            }
        }
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.seen)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), s);
        id
    }

    /// The live session of token `id` (its idle time restarts).
    pub fn get(&self, id: &str) -> Option<Session> {
        if id.len() != 64 || id.bytes().all(|b| b == b'0') {
            return None;
        }
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let s = map.get_mut(id)?;
        if !live(s, now) {
            map.remove(id);
            return None;
        }
        s.seen = now;
        Some(s.clone())
    }

    /// Ends the session of token `id`.
    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < IDLE && now.duration_since(s.started) < LIFETIME
}

/// Login attempts per address within the window.
#[derive(Default)]
pub struct LoginLimit {
    inner: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl LoginLimit {
    /// Counts a login attempt from `addr` as failed until [`succeeded`]
    /// says otherwise; `Err(seconds)` (nothing counted) while the address
    /// is refused.
    ///
    /// [`succeeded`]: LoginLimit::succeeded
    pub fn begin(&self, addr: IpAddr) -> Result<(), u64> {
        self.begin_at(addr, Instant::now())
    }

    fn begin_at(&self, addr: IpAddr, now: Instant) -> Result<(), u64> {
        let mut l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() > 4096 {
            l.retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
        }
        let e = l.entry(addr).or_insert((now, 0));
        let age = now.duration_since(e.0);
        if age >= WINDOW {
            *e = (now, 0);
        } else if e.1 >= MAX_FAILURES {
            return Err((WINDOW - age).as_secs().max(1));
        }
        e.1 += 1;
        Ok(())
    }

    /// A successful login from `addr` clears its count.
    pub fn succeeded(&self, addr: IpAddr) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_compared_whole() {
        let (a, b) = (token(), token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &b));
        assert!(!same(&a, &a[..63]));
        assert!(is_token(&a));
        assert!(!is_token(&a[..63]));
        assert!(!is_token(&"A".repeat(64)) && !is_token(&"g".repeat(64)));
        assert!(!is_token(&format!("{};", &a[..63])));
    }

    #[test]
    fn sessions_end_on_logout_and_unknown_tokens_find_nothing() {
        let s = Sessions::default();
        let id = s.create("admin", Role::Admin);
        let got = s.get(&id).unwrap();
        assert_eq!((got.user.as_str(), got.role), ("admin", Role::Admin));
        assert_eq!(got.csrf.len(), 64);
        assert!(s.get(&token()).is_none());
        assert!(s.get(&"0".repeat(64)).is_none());
        assert!(s.get("short").is_none());
        s.remove(&id);
        assert!(s.get(&id).is_none());
    }

    #[test]
    fn attempts_count_before_they_end_and_block_one_address_for_the_window() {
        let l = LoginLimit::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        // Parallel attempts: none has ended, the sixth is refused already.
        for _ in 0..MAX_FAILURES {
            assert!(l.begin_at(a, t0).is_ok());
        }
        let wait = l.begin_at(a, t0).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(l.begin_at(b, t0).is_ok(), "another address is not blocked");
        assert!(l.begin_at(a, t0 + WINDOW).is_ok(), "the window passed");
        l.succeeded(a);
        assert!(l.begin_at(a, t0).is_ok());
    }

    #[test]
    fn many_addresses_block_nobody_else() {
        let l = LoginLimit::default();
        let t0 = Instant::now();
        for i in 0..500u32 {
            for _ in 0..MAX_FAILURES {
                let _ = l.begin_at(IpAddr::from([10, 1, (i / 200) as u8, (i % 200) as u8]), t0);
            }
        }
        assert!(l.begin_at("192.0.2.1".parse().unwrap(), t0).is_ok());
    }

    #[test]
    fn one_user_cannot_push_out_the_others() {
        let s = Sessions::default();
        let admin = s.create("admin", Role::Admin);
        let mut views = Vec::new();
        for _ in 0..MAX_SESSIONS + 10 {
            views.push(s.create("viewer", Role::View));
        }
        assert!(s.get(&admin).is_some());
        assert!(s.get(views.last().unwrap()).is_some());
        assert!(s.get(&views[0]).is_none(), "the viewer's oldest ended");
    }
}
