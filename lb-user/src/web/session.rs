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
//! Failed logins are limited per client address: [`MAX_FAILURES`] in
//! [`WINDOW`], then every login from that address is refused (429) until
//! the window has passed; and [`MAX_FAILURES_ALL`] in the window from all
//! addresses together (a spread guessing attempt). Nothing here blocks:
//! one short std mutex per table.

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
/// Failed logins from all addresses in [`WINDOW`] before every login is
/// refused.
pub const MAX_FAILURES_ALL: u32 = 50;
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

/// Failed logins per address within the window.
#[derive(Default)]
pub struct LoginLimit {
    inner: Mutex<Limits>,
}

#[derive(Default)]
struct Limits {
    by_addr: HashMap<IpAddr, (Instant, u32)>,
    all: Option<(Instant, u32)>,
}

impl LoginLimit {
    /// Whether `addr` may try to log in now; `Err(seconds)` until it may.
    pub fn check(&self, addr: IpAddr) -> Result<(), u64> {
        self.check_at(addr, Instant::now())
    }

    fn check_at(&self, addr: IpAddr, now: Instant) -> Result<(), u64> {
        let l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let blocked = |(since, n): (Instant, u32), max: u32| {
            let age = now.duration_since(since);
            (n >= max && age < WINDOW).then(|| (WINDOW - age).as_secs().max(1))
        };
        if let Some(s) = l.by_addr.get(&addr).and_then(|e| blocked(*e, MAX_FAILURES)) {
            return Err(s);
        }
        if let Some(s) = l.all.and_then(|e| blocked(e, MAX_FAILURES_ALL)) {
            return Err(s);
        }
        Ok(())
    }

    /// Counts a failed login from `addr`.
    pub fn failed(&self, addr: IpAddr) {
        self.failed_at(addr, Instant::now())
    }

    fn failed_at(&self, addr: IpAddr, now: Instant) {
        let mut l = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let bump = |e: &mut (Instant, u32)| {
            if now.duration_since(e.0) >= WINDOW {
                *e = (now, 0);
            }
            e.1 += 1;
        };
        if l.by_addr.len() > 4096 {
            l.by_addr
                .retain(|_, (since, _)| now.duration_since(*since) < WINDOW);
        }
        bump(l.by_addr.entry(addr).or_insert((now, 0)));
        bump(l.all.get_or_insert((now, 0)));
    }

    /// A successful login from `addr` clears its count.
    pub fn succeeded(&self, addr: IpAddr) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_addr
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
    fn failures_block_one_address_for_the_window() {
        let l = LoginLimit::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES {
            assert!(l.check_at(a, t0).is_ok());
            l.failed_at(a, t0);
        }
        let wait = l.check_at(a, t0).unwrap_err();
        assert!((1..=60).contains(&wait));
        assert!(l.check_at(b, t0).is_ok(), "another address is not blocked");
        assert!(l.check_at(a, t0 + WINDOW).is_ok(), "the window passed");
        l.succeeded(a);
        assert!(l.check_at(a, t0).is_ok());
    }

    #[test]
    fn failures_from_many_addresses_block_all() {
        let l = LoginLimit::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES_ALL {
            l.failed_at(IpAddr::from([10, 0, (i / 200) as u8, (i % 200) as u8]), t0);
        }
        assert!(l.check_at("192.0.2.1".parse().unwrap(), t0).is_err());
    }
}
