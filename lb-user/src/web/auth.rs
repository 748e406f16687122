//! Logging in and out, and the guard in front of every other route.
//!
//! The guard ([`guard`]) finds the session of the request's cookie; without
//! one a page (`GET`) is redirected to `/login` (303) and anything else
//! (`POST`, `/live.json`) is refused with 401. For a `POST` it then reads
//! the form (at most [`super::MAX_FORM`] bytes) and checks its `csrf` field
//! against the session's token (403 when missing or wrong), and that the
//! user's role is `admin` (403 "read-only" for `view`; logging out is open
//! to both). [`headers`] adds the security headers to every answer.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, Method, StatusCode},
    middleware::Next,
    response::{IntoResponse, Redirect, Response},
    Extension, Form,
};
use serde::Deserialize;

use super::{
    pages,
    session::{self, Session},
    users::{self, Role},
    Client, Web,
};

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, Path=/, Secure under
/// TLS; `max_age` 0 deletes it.
pub fn set_cookie(name: &str, value: &str, tls: bool, max_age: Option<u64>) -> HeaderValue {
    let mut v = format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict");
    if tls {
        v.push_str("; Secure");
    }
    if let Some(age) = max_age {
        v.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The content security policy: scripts from this origin only (the
/// overview's `/static/lb.js`), the page's own inline style, no frames.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to every answer.
pub async fn headers(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if web.tls {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
    res
}

/// The guard in front of every route but `/login`.
pub async fn guard(State(web): State<Arc<Web>>, req: Request, next: Next) -> Response {
    let session = cookie(req.headers(), session::COOKIE).and_then(|id| web.sessions.get(id));
    // The users file decides at every request: a user deleted or given
    // another role with `lb passwd` loses the session's rights at once.
    let session = match session {
        Some(s) => current_role(&web, s).await,
        None => None,
    };
    let Some(session) = session else {
        if (req.method() == Method::GET || req.method() == Method::HEAD)
            && req.uri().path() != "/live.json"
        {
            return Redirect::to("/login").into_response();
        }
        return pages::error(
            StatusCode::UNAUTHORIZED,
            None,
            "Not logged in",
            "log in first",
        );
    };
    let mut req = req;
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let (parts, body) = req.into_parts();
        let bytes = match axum::body::to_bytes(body, super::MAX_FORM).await {
            Ok(b) => b,
            Err(_) => {
                return pages::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    Some(&session),
                    "Refused",
                    "the form is too large",
                )
            }
        };
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
        let token = pairs
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str());
        if !token.is_some_and(|t| session::same(t, &session.csrf)) {
            tracing::warn!(user = %session.user, path = %parts.uri.path(), "web console: a change without a valid CSRF token refused");
            return pages::error(
                StatusCode::FORBIDDEN,
                Some(&session),
                "Refused",
                "CSRF token missing or wrong: reload the page and try again",
            );
        }
        if session.role != Role::Admin && parts.uri.path() != "/logout" {
            tracing::warn!(user = %session.user, path = %parts.uri.path(), "web console: a change by a read-only user refused");
            return pages::error(
                StatusCode::FORBIDDEN,
                Some(&session),
                "Refused",
                "your role is read-only (view): ask an admin",
            );
        }
        req = Request::from_parts(parts, Body::from(bytes));
    }
    req.extensions_mut().insert(session);
    next.run(req).await
}

/// `s` with its user's role as the users file has it now; `None` (the
/// session ended) when the user is no longer in the file or the file
/// cannot be read.
async fn current_role(web: &Web, mut s: Session) -> Option<Session> {
    let path = web.users.clone();
    let name = s.user.clone();
    let role = tokio::task::spawn_blocking(move || {
        users::load(&path)
            .ok()?
            .into_iter()
            .find(|u| u.name == name)
            .map(|u| u.role)
    })
    .await
    .ok()
    .flatten();
    match role {
        Some(r) => {
            s.role = r;
            Some(s)
        }
        None => {
            tracing::info!(user = %s.user, "web console: session ended: the user is no longer in {}", web.users.display());
            None
        }
    }
}

/// `GET /login`.
pub async fn login_page(State(web): State<Arc<Web>>, headers: HeaderMap) -> Response {
    if cookie(&headers, session::COOKIE).is_some_and(|id| web.sessions.get(id).is_some()) {
        return Redirect::to("/").into_response();
    }
    // The browser's login token stays while it has one: a subresource the
    // guard sends here (Chromium asks for /favicon.ico), or a second tab on
    // /login, would otherwise replace the cookie under the form shown, and
    // its login would be refused as a CSRF failure.
    let token = cookie(&headers, session::LOGIN_COOKIE)
        .filter(|t| session::is_token(t))
        .map_or_else(session::token, str::to_owned);
    let no_users = users::load(&web.users).is_ok_and(|u| u.is_empty());
    let mut res = pages::login(StatusCode::OK, &token, None, no_users.then_some(&web.users));
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(session::LOGIN_COOKIE, &token, web.tls, Some(600)),
    );
    res
}

/// Password hashes computed at once.
pub const HASHES_AT_ONCE: usize = 1;
/// Longest a login waits for its turn to hash.
pub const HASH_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// Longest a request body (a form) may take to arrive.
pub const BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads every request's body within [`BODY_WAIT`] and at most
/// [`super::MAX_FORM`] bytes before any handler runs (a client sending its
/// form a byte at a time holds its connection 5 s, not 120); refuses
/// methods other than GET, HEAD and POST (405).
pub async fn body_deadline(req: Request, next: Next) -> Response {
    match *req.method() {
        Method::GET | Method::HEAD => return next.run(req).await,
        Method::POST => {}
        _ => {
            return (
                StatusCode::METHOD_NOT_ALLOWED,
                [(header::ALLOW, "GET, HEAD, POST")],
                "the console answers GET, HEAD and POST\n",
            )
                .into_response()
        }
    }
    let (parts, body) = req.into_parts();
    let bytes =
        match tokio::time::timeout(BODY_WAIT, axum::body::to_bytes(body, super::MAX_FORM)).await {
            Ok(Ok(b)) => b,
            Ok(Err(_)) => {
                return pages::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    None,
                    "Refused",
                    "the form is too large",
                )
            }
            Err(_) => {
                return pages::error(
                    StatusCode::REQUEST_TIMEOUT,
                    None,
                    "Refused",
                    "the form took too long to arrive",
                )
            }
        };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// The login form.
#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub csrf: String,
}

/// `POST /login`.
pub async fn login(
    State(web): State<Arc<Web>>,
    Extension(Client(peer)): Extension<Client>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let again = |code, message: &str| {
        let token = session::token();
        let mut res = pages::login(code, &token, Some(message), None);
        res.headers_mut().append(
            header::SET_COOKIE,
            set_cookie(session::LOGIN_COOKIE, &token, web.tls, Some(600)),
        );
        res
    };
    let expected = cookie(&headers, session::LOGIN_COOKIE).unwrap_or("");
    if !session::is_token(expected) || !session::same(expected, &form.csrf) {
        return again(
            StatusCode::FORBIDDEN,
            "CSRF token missing or wrong: the login form expired, try again",
        );
    }
    if let Err(wait) = web.limit.begin(peer.ip()) {
        tracing::warn!(client = %peer.ip(), "web console: login refused, too many failed attempts");
        return again(
            StatusCode::TOO_MANY_REQUESTS,
            &format!("too many failed attempts: try again in {wait} s"),
        );
    }
    // One hash at a time (each takes 19 MiB and tens of milliseconds):
    // a burst of logins queues here, briefly, instead of eating memory.
    let Ok(Ok(_hashing)) =
        tokio::time::timeout(HASH_WAIT, web.hashing.clone().acquire_owned()).await
    else {
        return again(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many logins at once: try again in a moment",
        );
    };
    let path = web.users.clone();
    let (name, password) = (form.user.clone(), form.password);
    let verdict = tokio::task::spawn_blocking(move || {
        let list = users::load(&path)?;
        let user = list.iter().find(|u| u.name == name);
        // Unknown users cost a hash too: the answer's time does not tell
        // which names exist.
        let ok = users::verify(user.unwrap_or(users::decoy()), &password);
        Ok::<_, users::UsersError>(user.filter(|_| ok).map(|u| u.role))
    })
    .await;
    match verdict {
        Ok(Ok(Some(role))) => {
            web.limit.succeeded(peer.ip());
            let id = web.sessions.create(&form.user, role);
            tracing::info!(user = %form.user, %role, client = %peer.ip(), "web console: logged in");
            let mut res = Redirect::to("/").into_response();
            let h = res.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(session::COOKIE, &id, web.tls, None),
            );
            h.append(
                header::SET_COOKIE,
                set_cookie(session::LOGIN_COOKIE, "", web.tls, Some(0)),
            );
            res
        }
        Ok(Ok(None)) => {
            tracing::warn!(user = %form.user.escape_debug(), client = %peer.ip(), "web console: failed login");
            again(StatusCode::UNAUTHORIZED, "wrong user name or password")
        }
        Ok(Err(e)) => {
            tracing::error!("web console: {e}");
            again(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the users file cannot be read: see the agent's log",
            )
        }
        Err(e) => {
            tracing::error!("web console: login task: {e}");
            again(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
        }
    }
}

/// `POST /logout`.
pub async fn logout(
    State(web): State<Arc<Web>>,
    Extension(session): Extension<Session>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = cookie(&headers, session::COOKIE) {
        web.sessions.remove(id);
    }
    tracing::info!(user = %session.user, "web console: logged out");
    let mut res = Redirect::to("/login").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(session::COOKIE, "", web.tls, Some(0)),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; lb_session=xyz"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, "lb_session"), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "lb"), None);
        let v = set_cookie("lb_session", "t", true, None);
        assert_eq!(
            v.to_str().unwrap(),
            "lb_session=t; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        let v = set_cookie("x", "", false, Some(0));
        assert_eq!(
            v.to_str().unwrap(),
            "x=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"
        );
    }
}
