//! Readers of a keyword's values: a number, an address, seconds, a flag,
//! a one-word choice, a program's words, a user, hex bytes, a list block.
//! Each reports what is wrong with the keyword's location and returns
//! `None` (or a default); the blocks decide what a missing value means.

use std::{net::IpAddr, time::Duration};

use super::{Diag, Loc, Node, Severity};
use crate::util::process::Program;

/// A one-word setting: `known` values are implemented; `later` ones are valid
/// keepalived values not implemented yet, an error rather than a warning, so
/// that traffic is never handled otherwise than configured.
pub(super) fn choice<T: Copy>(
    n: &Node,
    what: &str,
    known: &[(&str, T)],
    later: &[&str],
    diags: &mut Vec<Diag>,
) -> Option<T> {
    let v = arg(n, 0, what, diags)?;
    if let Some((_, t)) = known.iter().find(|(k, _)| *k == v) {
        return Some(*t);
    }
    let msg = if later.contains(&v) {
        let names: Vec<&str> = known.iter().map(|(k, _)| *k).collect();
        format!(
            "{what} '{v}' not implemented yet (implemented: {})",
            names.join(", ")
        )
    } else {
        format!("unknown {what} '{v}'")
    };
    diags.push(Diag::error(&n.loc, Some(&n.keyword), msg));
    None
}

pub(super) fn arg<'a>(n: &'a Node, i: usize, what: &str, diags: &mut Vec<Diag>) -> Option<&'a str> {
    match n.args.get(i) {
        Some(a) => Some(a),
        None => {
            diags.push(Diag::error(
                &n.loc,
                Some(&n.keyword),
                format!("missing {what}"),
            ));
            None
        }
    }
}

pub(super) fn parse_num<T: std::str::FromStr>(
    n: &Node,
    i: usize,
    what: &str,
    diags: &mut Vec<Diag>,
) -> Option<T> {
    let a = arg(n, i, what, diags)?;
    match a.parse() {
        Ok(v) => Some(v),
        Err(_) => {
            diags.push(Diag::error(
                &n.loc,
                Some(&n.keyword),
                format!("invalid {what} '{a}'"),
            ));
            None
        }
    }
}

/// An IP address argument.
pub(super) fn parse_addr(n: &Node, i: usize, diags: &mut Vec<Diag>) -> Option<IpAddr> {
    parse_num(n, i, "IP address", diags)
}

/// A program and its arguments from one (quoted) argument, split into words;
/// never given to a shell.
pub(super) fn command(n: &Node, diags: &mut Vec<Diag>) -> Option<Vec<String>> {
    program_words(&n.args.join(" "), &n.loc, &n.keyword, diags)
}

/// `text` split into a program and its arguments ([`shell_words`]); an
/// error at `loc` about `keyword` if it cannot be.
pub(super) fn program_words(
    text: &str,
    loc: &Loc,
    keyword: &str,
    diags: &mut Vec<Diag>,
) -> Option<Vec<String>> {
    match shell_words(text) {
        Some(w) if !w.is_empty() => Some(w),
        _ => {
            diags.push(Diag::error(
                loc,
                Some(keyword),
                format!("cannot split '{text}' into a program and arguments"),
            ));
            None
        }
    }
}

/// A flag such as `inhibit_on_failure`, `alpha` or `smtp_alert`: alone it
/// means on; keepalived also takes `true`/`on`/`yes` and `false`/`off`/`no`
/// (lib/parser.c `check_true_false`); any other word is an error (keepalived
/// reports it and ignores the statement) and reads as off.
pub(super) fn flag(n: &Node, diags: &mut Vec<Diag>) -> bool {
    match n.args.first().map(String::as_str) {
        None | Some("true" | "on" | "yes") => true,
        Some("false" | "off" | "no") => false,
        Some(other) => {
            diags.push(Diag::error(
                &n.loc,
                Some(&n.keyword),
                format!("'{other}' is not one of true, on, yes, false, off, no"),
            ));
            false
        }
    }
}

/// keepalived's TIMER resolution: decimal seconds with at most 6 decimal
/// places (`TIMER_HZ_DIGITS`, microseconds; lib/parser.c `read_timer`).
pub(super) const TIMER_DIGITS: u32 = 6;

/// keepalived's `TIMER_MAXIMUM` (lib/parser.h: `ULONG_MAX - 1` µs).
pub(super) const TIMER_MAX: Duration = Duration::from_micros(u64::MAX - 1);

/// What is wrong with a decimal number of seconds ([`decimal_micros`]);
/// the message follows the value ("'-1' is negative").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum DecimalError {
    #[error("is negative")]
    Negative,
    #[error("is not a decimal number")]
    NotDecimal,
    #[error("has more than {TIMER_DIGITS} decimal places (the resolution is 1 µs)")]
    TooPrecise,
    #[error("is too large")]
    TooLarge(#[source] std::num::ParseIntError),
}

/// Reads a decimal number of seconds such as `2`, `0.5` or `1.000001` into
/// microseconds, as keepalived's `read_decimal_unsigned_long_func`: digits,
/// an optional point and at most [`TIMER_DIGITS`] decimals; no sign, no
/// exponent, no `nan` / `inf`. `Err` says what is wrong.
pub(super) fn decimal_micros(text: &str) -> Result<u64, DecimalError> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if text.starts_with('-') {
        return Err(DecimalError::Negative);
    }
    if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) {
        return Err(DecimalError::NotDecimal);
    }
    if frac.len() > TIMER_DIGITS as usize {
        return Err(DecimalError::TooPrecise);
    }
    let padded = format!("{int}{frac:0<width$}", width = TIMER_DIGITS as usize);
    padded.parse::<u64>().map_err(DecimalError::TooLarge)
}

/// Seconds with keepalived's TIMER rules ([`decimal_micros`]) within
/// `min..=max`, read from the statement's first argument; the message names
/// the keyword, the value, the range and the unit.
pub(super) fn timer(
    n: &Node,
    min: Duration,
    max: Duration,
    diags: &mut Vec<Diag>,
) -> Option<Duration> {
    let a = arg(n, 0, "number of seconds", diags)?;
    let d = decimal_micros(a).map(Duration::from_micros);
    match d {
        Ok(d) if (min..=max).contains(&d) => Some(d),
        Ok(_) => {
            diags.push(Diag::error(
                &n.loc,
                Some(&n.keyword),
                format!(
                    "'{a}' must be from {} to {} seconds",
                    secs_text(min),
                    secs_text(max)
                ),
            ));
            None
        }
        Err(why) => {
            diags.push(Diag::error(
                &n.loc,
                Some(&n.keyword),
                format!(
                    "'{a}' {why}; expected seconds from {} to {}",
                    secs_text(min),
                    secs_text(max)
                ),
            ));
            None
        }
    }
}

/// Whole seconds within `min..=max` (keywords keepalived reads with
/// `read_unsigned`, e.g. `garp_master_delay`, `misc_timeout`, a
/// `vrrp_script`'s `interval`).
pub(super) fn whole_secs(n: &Node, min: u64, max: u64, diags: &mut Vec<Diag>) -> Option<Duration> {
    uint(n, 0, min, max, "seconds", diags).map(Duration::from_secs)
}

/// An unsigned integer argument `i` within `min..=max` (keepalived's
/// `read_unsigned_strvec`: decimal digits only); `unit` names what it counts.
pub(super) fn uint(
    n: &Node,
    i: usize,
    min: u64,
    max: u64,
    unit: &str,
    diags: &mut Vec<Diag>,
) -> Option<u64> {
    let a = arg(n, i, unit, diags)?;
    let v = a
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| a.parse::<u64>().ok())
        .flatten();
    match v {
        Some(v) if (min..=max).contains(&v) => Some(v),
        _ => {
            diags.push(out_of_range(n, a, &min.to_string(), &max.to_string(), unit));
            None
        }
    }
}

/// A signed integer argument `i` within `min..=max` (keepalived's
/// `read_int_strvec`).
pub(super) fn int(
    n: &Node,
    i: usize,
    min: i64,
    max: i64,
    unit: &str,
    diags: &mut Vec<Diag>,
) -> Option<i64> {
    let a = arg(n, i, unit, diags)?;
    let body = a.strip_prefix('-').unwrap_or(a);
    let v = (!body.is_empty() && body.bytes().all(|b| b.is_ascii_digit()))
        .then(|| a.parse::<i64>().ok())
        .flatten();
    match v {
        Some(v) if (min..=max).contains(&v) => Some(v),
        _ => {
            diags.push(out_of_range(n, a, &min.to_string(), &max.to_string(), unit));
            None
        }
    }
}

fn out_of_range(n: &Node, value: &str, min: &str, max: &str, unit: &str) -> Diag {
    Diag::error(
        &n.loc,
        Some(&n.keyword),
        format!("'{value}' must be a whole number from {min} to {max} ({unit})"),
    )
}

/// Seconds as written in messages and `--dump`: whole seconds plainly,
/// otherwise with the decimals needed (µs resolution).
pub fn secs_text(d: Duration) -> String {
    let us = d.as_micros();
    let (s, frac) = (us / 1_000_000, us % 1_000_000);
    if frac == 0 {
        s.to_string()
    } else {
        format!("{s}.{}", format!("{frac:06}").trim_end_matches('0'))
    }
}

/// How a statement is shaped: the block keywords of a context, and for
/// every value keyword the most arguments it takes. keepalived reads only
/// the arguments a keyword uses and ignores the rest silently (so lb
/// warns); it answers a `{` after a value keyword with "Unexpected '{' -
/// ignoring" and then misreads what follows (a checker in it is lost), so
/// lb refuses it. Keywords in neither list are left to the caller (unknown).
pub(super) struct Shapes {
    /// Keywords that open a block.
    pub blocks: &'static [&'static str],
    /// Value keywords and the most arguments each takes.
    pub values: &'static [(&'static str, usize)],
}

/// No upper bound on the arguments (programs with their arguments, lists).
pub(super) const ANY: usize = usize::MAX;

impl Shapes {
    /// Checks `n` against the shapes of its context.
    pub fn check(&self, n: &Node, diags: &mut Vec<Diag>) {
        if self.blocks.contains(&n.keyword.as_str()) {
            return;
        }
        let Some(&(_, max)) = self.values.iter().find(|(k, _)| *k == n.keyword) else {
            return;
        };
        if n.children.is_some() {
            diags.push(Diag::error(
                &n.loc,
                Some(&n.keyword),
                "takes a value, not a '{ … }' block; the block and everything in it would be lost",
            ));
        }
        if n.args.len() > max {
            diags.push(Diag::warning(
                &n.loc,
                Some(&n.keyword),
                format!(
                    "extra argument(s) '{}' ignored (as keepalived)",
                    n.args[max..].join(" ")
                ),
            ));
        }
    }
}

pub(super) fn block<'a>(n: &'a Node, diags: &mut Vec<Diag>) -> &'a [Node] {
    match &n.children {
        Some(c) => c,
        None => {
            diags.push(Diag::error(
                &n.loc,
                Some(&n.keyword),
                "missing '{ … }' block",
            ));
            &[]
        }
    }
}

/// The words of a list block (`notification_email { a b }`, `group { VI_1 VI_2 }`):
/// every keyword and argument inside.
pub(super) fn words(n: &Node, diags: &mut Vec<Diag>) -> Vec<String> {
    block(n, diags)
        .iter()
        .flat_map(|c| std::iter::once(c.keyword.clone()).chain(c.args.iter().cloned()))
        .collect()
}

pub(super) fn unknown(n: &Node, within: &str) -> Diag {
    Diag::warning(
        &n.loc,
        Some(&n.keyword),
        format!("unknown keyword in {within}; ignored"),
    )
}

pub(super) fn ignored(n: &Node, why: &str) -> Diag {
    Diag::warning(&n.loc, Some(&n.keyword), why.to_string())
}

/// A notify program as keepalived reads one (`notify_script_init`):
/// `KEYWORD "PROGRAM ARGS…" [USER [GROUP]]`: the first argument holds the
/// program and its words, the next ones the account it runs as.
pub(super) fn notify_program(n: &Node, diags: &mut Vec<Diag>) -> Option<Program> {
    let text = arg(n, 0, "program", diags)?;
    let mut p = Program::new(program_words(text, &n.loc, &n.keyword, diags)?);
    if n.args.len() > 1 {
        p.user = Some(account(n, 1, diags)?);
    }
    if n.args.len() > 3 {
        diags.push(Diag::warning(
            &n.loc,
            Some(&n.keyword),
            "only a program, a user and a group are read; the rest is ignored (quote the program with its arguments)",
        ));
    }
    Some(p)
}

/// `user NAME [GROUP]`: the account's uid and gid (or GROUP's gid).
pub(super) fn run_as(n: &Node, diags: &mut Vec<Diag>) -> Option<(u32, u32)> {
    account(n, 0, diags)
}

/// `NAME [GROUP]` from argument `i` on: the account's uid and gid (or
/// GROUP's gid).
fn account(n: &Node, i: usize, diags: &mut Vec<Diag>) -> Option<(u32, u32)> {
    let name = arg(n, i, "user name", diags)?;
    let Some((uid, gid)) = lookup_user(name) else {
        diags.push(Diag::error(
            &n.loc,
            Some(&n.keyword),
            format!("no user '{name}' on this system"),
        ));
        return None;
    };
    let gid = match n.args.get(i + 1) {
        None => gid,
        Some(g) => match lookup_group(g) {
            Some(g) => g,
            None => {
                diags.push(Diag::error(
                    &n.loc,
                    Some(&n.keyword),
                    format!("no group '{g}' on this system"),
                ));
                return None;
            }
        },
    };
    Some((uid, gid))
}

/// The uid and primary gid of account `name`, if it exists.
pub(super) fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getpwnam returns null or a pointer to static storage that we
    // read at once (the agent does not call it concurrently).
    unsafe {
        let p = libc::getpwnam(c.as_ptr());
        (!p.is_null()).then(|| ((*p).pw_uid, (*p).pw_gid))
    }
}

fn lookup_group(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: as in lookup_user.
    unsafe {
        let p = libc::getgrnam(c.as_ptr());
        (!p.is_null()).then(|| (*p).gr_gid)
    }
}

pub(super) fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.strip_prefix("0x").unwrap_or(s);
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

pub(super) fn parse_range(a: &str) -> Option<(u16, u16)> {
    let (lo, hi) = match a.split_once('-') {
        Some((l, h)) => (l.parse().ok()?, h.parse().ok()?),
        None => {
            let c = a.parse().ok()?;
            (c, c)
        }
    };
    (100..=599).contains(&lo).then_some(())?;
    (lo <= hi && hi <= 599).then_some((lo, hi))
}

/// Splits a command line into words: whitespace separates, double or
/// single quotes group, backslash escapes the next character. No expansion
/// of any kind: the words go to the program as they are (never to a shell).
pub fn shell_words(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some('"'), '\\') => cur.push(chars.next()?),
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '\\') => {
                cur.push(chars.next()?);
                in_word = true;
            }
            (None, c) if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            (None, c) => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quote.is_some() {
        return None;
    }
    if in_word {
        out.push(cur);
    }
    Some(out)
}

pub(super) fn errors(diags: &[Diag]) -> usize {
    diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_split_without_a_shell() {
        assert_eq!(
            shell_words(r#"/bin/check "a b" 'c d' e\ f $HOME;rm"#).unwrap(),
            ["/bin/check", "a b", "c d", "e f", "$HOME;rm"]
        );
        assert!(shell_words("\"open").is_none());
    }

    #[test]
    fn status_ranges() {
        assert_eq!(parse_range("200"), Some((200, 200)));
        assert_eq!(parse_range("200-299"), Some((200, 299)));
        assert_eq!(parse_range("300-200"), None);
        assert_eq!(parse_range("99"), None);
    }
}
