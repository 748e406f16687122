//! keepalived's line language, as keepalived 2.2.7 reads it (lib/parser.c,
//! `read_line`; keepalived.conf(5) "Parameter substitution", "Conditional
//! configuration", "Sequence blocks", "List blocks"): what turns the files
//! into the logical lines the tokenizer sees.
//!
//! - Comments: `#` or `!` outside double quotes ends the line; `\#` and
//!   `\!` stand for the characters themselves.
//! - `@ID line` keeps `line` only when ID is this host's config id (`-i`,
//!   else the host name up to its first dot); `@^ID line` only when it is
//!   not.
//! - `$NAME=value` defines a parameter (no blank before `=`; keepalived
//!   reads `$NAME = x` as a line starting with `$NAME`). A value ending in
//!   `\` continues on the next lines (a multi-line definition, usable only
//!   at the end of a line). `$NAME` (followed by a blank, `,`, `)` or the end
//!   of the line) and `${NAME}` are replaced by the value; an undefined
//!   parameter is kept as written, as keepalived does, with a warning.
//!   Predefined: `_PWD` (the current file's directory), `_INSTANCE` (the
//!   config id), `_RANDOM [MIN [MAX]]`, `_HASH` (`#`), `_BANG` (`!`).
//! - `~SEQ(VAR, [START,] [STEP,] END) rest` and `~SEQx(…)` repeat `rest` with
//!   `$VAR` set to each value (hexadecimal for `~SEQx`); `~LST(VAR, v1, v2…)`
//!   and `~LST({A, B}, {a1, b1}, …)` with listed values.
//! - `include GLOB` (also `includer`, `includem`, `includew`, `includeb`,
//!   `includea`, read as `include`) splices the matching files, relative to
//!   the including file's directory, in name order.
//!
//! Expansion is bounded by named limits ([`MAX_SUBSTITUTIONS`],
//! [`MAX_LINE_BYTES`], [`MAX_EXPANDED_BYTES`], [`MAX_EXPANSION_DEPTH`],
//! [`MAX_INCLUDE_DEPTH`]) and input by [`super::source`]'s; a limit reached
//! is a located error and ends the reading, never a hang.
//! Diagnostics name the location and the construct, never a line's text.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher as _, Hasher as _},
    path::{Path, PathBuf},
    sync::{Arc, OnceLock},
};

use super::source::{self, Budget, FileStamp, ReadError};
use super::syntax::{Diag, Loc};

/// Most parameter substitutions in one line (10,000): `$A=$A` would
/// otherwise loop forever (keepalived hangs on it).
pub const MAX_SUBSTITUTIONS: usize = 10_000;
/// Longest line after substitution (64 KiB); keepalived's own limit is its
/// 1 KiB line buffer.
pub const MAX_LINE_BYTES: usize = 64 << 10;
/// Most text produced by substitution, sequences and lists for one
/// configuration (16 MiB, each line counting one byte more than its length).
pub const MAX_EXPANDED_BYTES: u64 = 16 << 20;
/// Deepest nesting of expansions (multi-line parameters, `~SEQ`, `~LST`
/// within one another): 64.
pub const MAX_EXPANSION_DEPTH: usize = 64;
/// Deepest nesting of `include` (8).
pub const MAX_INCLUDE_DEPTH: usize = 8;

static CONFIG_ID: OnceLock<String> = OnceLock::new();

/// Sets the config id that `@ID` lines and `${_INSTANCE}` compare with
/// (keepalived's `-i`); only the first call counts.
pub fn set_config_id(id: &str) {
    let _ = CONFIG_ID.set(id.to_owned());
}

/// The config id: as set by [`set_config_id`], else the host name up to
/// its first dot (keepalived's default).
pub fn config_id() -> &'static str {
    CONFIG_ID.get_or_init(|| {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer and its length are valid; gethostname NUL-terminates
        // within them on success.
        let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
        let name = if ok {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            String::from_utf8_lossy(&buf[..end]).into_owned()
        } else {
            String::new()
        };
        name.split('.').next().unwrap_or_default().to_owned()
    })
}

/// One logical line for the tokenizer.
#[derive(Debug)]
pub struct Line {
    pub text: String,
    /// Where it comes from; a line produced by an expansion is located at
    /// the line that asked for it. `col` is the column of `text`'s start.
    pub loc: Loc,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Builtin {
    Pwd,
    Instance,
    Random,
}

#[derive(Debug)]
struct Def {
    value: String,
    multiline: bool,
    builtin: Option<Builtin>,
}

enum Source {
    File {
        path: Arc<PathBuf>,
        text: String,
        pos: usize,
        line: u32,
        statements: usize,
    },
    /// The files an `include` matched that are still to be read.
    Glob { at: Loc, paths: VecDeque<PathBuf> },
    /// The remaining lines of a multi-line parameter.
    Lines { at: Loc, lines: VecDeque<String> },
    Seq {
        at: Loc,
        var: String,
        next: i64,
        step: i64,
        last: i64,
        hex: bool,
        text: String,
    },
    Lst {
        at: Loc,
        vars: Vec<String>,
        sets: VecDeque<Vec<String>>,
        text: String,
    },
}

/// Produces the logical lines of a configuration file and its includes.
pub struct Reader {
    stack: Vec<Source>,
    defs: HashMap<String, Def>,
    budget: Budget,
    /// Every file read, in order (the main file first).
    pub stamps: Vec<FileStamp>,
    expanded: u64,
    /// The multi-line definition being read, if any.
    defining: Option<String>,
    done: bool,
}

/// Why reading stopped early; already reported as a diagnostic.
struct Stop;

fn builtin_defs() -> HashMap<String, Def> {
    let mut d = HashMap::new();
    let mut add = |name: &str, value: &str, builtin| {
        d.insert(
            name.to_owned(),
            Def {
                value: value.to_owned(),
                multiline: false,
                builtin,
            },
        );
    };
    add("_PWD", "", Some(Builtin::Pwd));
    add("_INSTANCE", "", Some(Builtin::Instance));
    add("_RANDOM", "", Some(Builtin::Random));
    add("_HASH", "#", None);
    add("_BANG", "!", None);
    d
}

/// keepalived's `decomment`: drops leading blanks, the comment (`#`/`!`
/// outside quotes), the escaping of `\#` / `\!` and trailing blanks; a final
/// `\` (a continuation) is kept, right after the text.
fn decomment(s: &str) -> String {
    let s = s.trim_start_matches([' ', '\t']);
    let mut out = String::with_capacity(s.len());
    let mut quote = false;
    let mut cut: Option<usize> = None;
    let mut cont = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                if cut.is_none() {
                    quote = !quote;
                }
                out.push(c);
            }
            '\\' => match chars.next() {
                None => {
                    cont = true;
                    break;
                }
                Some(n @ ('#' | '!')) if !quote => out.push(n),
                Some(n) => {
                    out.push('\\');
                    out.push(n);
                }
            },
            '#' | '!' if !quote && cut.is_none() => {
                cut = Some(out.len());
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    if let Some(at) = cut {
        out.truncate(at);
    }
    let keep = out.trim_end_matches([' ', '\t']).len();
    out.truncate(keep);
    if cont {
        out.push('\\');
    }
    out
}

/// C's `strtol(s, &end, 0)`: the value and the rest; no digits reads 0
/// and consumes nothing. Out-of-range values saturate, as strtol does.
fn strtol(s: &str) -> (i64, &str) {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, u) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits) = if (u.starts_with("0x") || u.starts_with("0X"))
        && u[2..].starts_with(|c: char| c.is_ascii_hexdigit())
    {
        (16, &u[2..])
    } else if u.starts_with('0') {
        (8, u)
    } else {
        (10, u)
    };
    let n = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if n == 0 {
        return (0, s);
    }
    let mut v: i64 = 0;
    for c in digits[..n].chars() {
        let d = i64::from(c.to_digit(radix).unwrap_or(0));
        v = v.saturating_mul(i64::from(radix)).saturating_add(d);
    }
    (if neg { v.saturating_neg() } else { v }, &digits[n..])
}

fn is_include(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("include")?;
    let mut chars = rest.chars();
    match chars.next()? {
        ' ' | '\t' => Some(rest[1..].trim_start_matches([' ', '\t'])),
        'r' | 'm' | 'w' | 'b' | 'a' if matches!(chars.next(), Some(' ' | '\t')) => {
            Some(rest[2..].trim_start_matches([' ', '\t']))
        }
        _ => None,
    }
}

/// `$NAME=value` (keepalived's `check_definition`): the name and the value
/// after `=` and blanks.
fn definition(text: &str) -> Option<(&str, &str)> {
    let b = text.as_bytes();
    if b.first() != Some(&b'$')
        || !b
            .get(1)
            .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
    {
        return None;
    }
    let mut i = 2;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
        i += 1;
    }
    if b.get(i) != Some(&b'=') {
        return None;
    }
    Some((&text[1..i], text[i + 1..].trim_start_matches([' ', '\t'])))
}

/// A reference at the start of `s` (just after `$`): the name, its
/// parameters (`${_RANDOM 1 9}`), how many bytes it spans and whether it
/// ends the line.
struct Ref<'a> {
    name: &'a str,
    params: Option<&'a str>,
    len: usize,
    at_end: bool,
}

fn reference(s: &str) -> Option<Ref<'_>> {
    let b = s.as_bytes();
    let braces = b.first() == Some(&b'{');
    let start = usize::from(braces);
    if !b
        .get(start)
        .is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_')
    {
        return None;
    }
    let mut j = start + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
        j += 1;
    }
    let name = &s[start..j];
    if braces {
        let (mut first, mut last) = (None, 0);
        while j < b.len() && (b[j] == b' ' || b[j].is_ascii_digit()) {
            if b[j] != b' ' {
                first.get_or_insert(j);
                last = j;
            }
            j += 1;
        }
        if first.is_some() && last + 1 != j {
            return None;
        }
        if b.get(j) != Some(&b'}') {
            return None;
        }
        Some(Ref {
            name,
            params: first.map(|f| &s[f..=last]),
            len: j + 1,
            at_end: j + 1 == b.len(),
        })
    } else {
        if j < b.len() && !matches!(b[j], b' ' | b'\t' | b',' | b')') {
            return None;
        }
        Some(Ref {
            name,
            params: None,
            len: j,
            at_end: j == b.len(),
        })
    }
}

fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// Shows a parameter name in a diagnostic: at most 32 characters.
fn shown(name: &str) -> String {
    if name.len() > 32 {
        format!("{}…", &name[..32])
    } else {
        name.to_owned()
    }
}

impl Reader {
    /// A reader of `path`; its problems (unreadable file) go to `diags`.
    pub fn open(path: &Path, diags: &mut Vec<Diag>) -> Self {
        let mut r = Self::empty();
        let loc = Loc {
            file: Arc::new(path.to_owned()),
            line: 0,
            col: 0,
        };
        match source::read(path, &mut r.budget, false) {
            Ok((bytes, stamp)) => {
                r.stamps.push(stamp);
                r.push_file(path, bytes);
            }
            Err(e) => {
                diags.push(Diag::error(&loc, None, e.to_string()));
                r.done = true;
            }
        }
        r
    }

    /// A reader of `text`, as if read from `path` (includes are read from disk).
    pub fn from_text(text: &str, path: &Path) -> Self {
        let mut r = Self::empty();
        r.push_file(path, text.as_bytes().to_vec());
        r
    }

    fn empty() -> Self {
        Self {
            stack: Vec::new(),
            defs: builtin_defs(),
            budget: Budget::default(),
            stamps: Vec::new(),
            expanded: 0,
            defining: None,
            done: false,
        }
    }

    /// Used by tests: a reader with its own budget.
    #[cfg(test)]
    fn with_budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    fn push_file(&mut self, path: &Path, bytes: Vec<u8>) {
        let text = match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        self.stack.push(Source::File {
            path: Arc::new(path.to_owned()),
            text,
            pos: 0,
            line: 0,
            statements: 0,
        });
    }

    /// Stops reading after a limit was reached (already reported).
    fn stop(&mut self) -> Stop {
        self.done = true;
        self.stack.clear();
        Stop
    }

    fn current_file(&self) -> Option<&Arc<PathBuf>> {
        self.stack.iter().rev().find_map(|s| match s {
            Source::File { path, .. } => Some(path),
            _ => None,
        })
    }

    fn include_depth(&self) -> usize {
        self.stack
            .iter()
            .filter(|s| matches!(s, Source::File { .. }))
            .count()
    }

    fn expansion_depth(&self) -> usize {
        self.stack
            .iter()
            .filter(|s| {
                matches!(
                    s,
                    Source::Lines { .. } | Source::Seq { .. } | Source::Lst { .. }
                )
            })
            .count()
    }

    fn push_expansion(
        &mut self,
        s: Source,
        at: &Loc,
        what: &str,
        diags: &mut Vec<Diag>,
    ) -> Result<(), Stop> {
        if self.expansion_depth() >= MAX_EXPANSION_DEPTH {
            diags.push(Diag::error(
                at,
                Some(what),
                format!("expansions nested deeper than {MAX_EXPANSION_DEPTH} (limit MAX_EXPANSION_DEPTH); reading stopped"),
            ));
            return Err(self.stop());
        }
        self.stack.push(s);
        Ok(())
    }

    fn count(&mut self, bytes: usize, at: &Loc, diags: &mut Vec<Diag>) -> Result<(), Stop> {
        self.expanded += bytes as u64 + 1;
        if self.expanded > MAX_EXPANDED_BYTES {
            diags.push(Diag::error(
                at,
                None,
                format!(
                    "the expanded configuration exceeds {} MiB (limit MAX_EXPANDED_BYTES); reading stopped",
                    MAX_EXPANDED_BYTES >> 20
                ),
            ));
            return Err(self.stop());
        }
        Ok(())
    }

    /// The next raw line, decommented: from a file, or produced by an
    /// expansion. `None` at the end of everything.
    fn raw(&mut self, diags: &mut Vec<Diag>) -> Result<Option<(String, Loc)>, Stop> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            match top {
                Source::File {
                    path,
                    text,
                    pos,
                    line,
                    statements,
                } => {
                    if *pos >= text.len() {
                        if *statements == 0 {
                            let loc = Loc {
                                file: path.clone(),
                                line: 1,
                                col: 1,
                            };
                            diags.push(Diag::warning(
                                &loc,
                                None,
                                "no statements in this file (empty, or only comments)",
                            ));
                        }
                        self.stack.pop();
                        continue;
                    }
                    let end = text[*pos..].find('\n').map_or(text.len(), |i| *pos + i);
                    let physical = text[*pos..end].trim_end_matches(['\r', '\n']);
                    *pos = end + 1;
                    *line += 1;
                    if physical.is_empty() {
                        // A blank line ends a multi-line definition.
                        self.end_definition();
                        continue;
                    }
                    let indent = physical.len() - physical.trim_start_matches([' ', '\t']).len();
                    let clean = decomment(physical);
                    if clean.is_empty() {
                        continue;
                    }
                    *statements += 1;
                    let loc = Loc {
                        file: path.clone(),
                        line: *line,
                        col: indent as u32 + 1,
                    };
                    return Ok(Some((clean, loc)));
                }
                Source::Glob { at, paths } => {
                    let Some(next) = paths.pop_front() else {
                        self.stack.pop();
                        continue;
                    };
                    let at = at.clone();
                    self.open_include(&next, &at, diags)?;
                }
                Source::Lines { at, lines } => {
                    let at = at.clone();
                    let l = lines.pop_front();
                    if lines.is_empty() {
                        // Popped before its last line is read: a definition
                        // that ends by using itself does not pile up.
                        self.stack.pop();
                    }
                    if let Some(l) = l {
                        self.count(0, &at, diags)?;
                        return Ok(Some((l, at)));
                    }
                }
                Source::Seq {
                    at,
                    var,
                    next,
                    step,
                    last,
                    hex,
                    text,
                } => {
                    let value = if *hex {
                        format!("{:x}", *next)
                    } else {
                        next.to_string()
                    };
                    let (var, text, at) = (var.clone(), text.clone(), at.clone());
                    let after = next.checked_add(*step);
                    let more = match after {
                        Some(n) => (*step > 0 && n <= *last) || (*step < 0 && n >= *last),
                        None => false,
                    };
                    if more {
                        *next = after.unwrap_or(*last);
                    } else {
                        self.stack.pop();
                    }
                    self.set(&var, value);
                    self.count(0, &at, diags)?;
                    return Ok(Some((text, at)));
                }
                Source::Lst {
                    at,
                    vars,
                    sets,
                    text,
                } => {
                    let Some(values) = sets.pop_front() else {
                        self.stack.pop();
                        continue;
                    };
                    let (vars, text, at) = (vars.clone(), text.clone(), at.clone());
                    if let Some(Source::Lst { sets, .. }) = self.stack.last() {
                        if sets.is_empty() {
                            self.stack.pop();
                        }
                    }
                    for (v, val) in vars.iter().zip(values) {
                        self.set(v, val);
                    }
                    self.count(0, &at, diags)?;
                    return Ok(Some((text, at)));
                }
            }
        }
    }

    fn set(&mut self, name: &str, value: String) {
        self.defs.insert(
            name.to_owned(),
            Def {
                value,
                multiline: false,
                builtin: None,
            },
        );
    }

    fn end_definition(&mut self) {
        if let Some(name) = self.defining.take() {
            if let Some(d) = self.defs.get_mut(&name) {
                if d.value.is_empty() {
                    d.multiline = false;
                }
            }
        }
    }

    /// The next logical line, `None` at the end (or after a limit).
    pub fn next_line(&mut self, diags: &mut Vec<Diag>) -> Option<Line> {
        if self.done {
            return None;
        }
        // A stop was reported where it happened.
        self.next_inner(diags).unwrap_or_default()
    }

    fn next_inner(&mut self, diags: &mut Vec<Diag>) -> Result<Option<Line>, Stop> {
        loop {
            let Some((mut text, loc)) = self.raw(diags)? else {
                self.end_definition();
                return Ok(None);
            };
            if let Some(name) = self.defining.clone() {
                self.continue_definition(&name, text);
                continue;
            }
            let mut subs = 0;
            loop {
                if let Some(rest) = text.strip_prefix('@') {
                    let (rev, rest) = match rest.strip_prefix('^') {
                        Some(r) => (true, r),
                        None => (false, rest),
                    };
                    let Some(i) = rest.find([' ', '\t']) else {
                        text.clear();
                        break;
                    };
                    if (&rest[..i] == config_id()) == rev {
                        text.clear();
                        break;
                    }
                    text = rest[i..].trim_start_matches([' ', '\t']).to_owned();
                }
                if let Some((name, value)) = definition(&text) {
                    let name = name.to_owned();
                    let multiline = value.ends_with('\\');
                    let value = if multiline {
                        let v = value[..value.len() - 1].trim_end_matches([' ', '\t']);
                        if v.is_empty() {
                            String::new()
                        } else {
                            format!("{v}\n")
                        }
                    } else {
                        value.to_owned()
                    };
                    self.defs.insert(
                        name.clone(),
                        Def {
                            value,
                            multiline,
                            builtin: None,
                        },
                    );
                    if multiline {
                        self.defining = Some(name);
                    }
                    text.clear();
                    break;
                }
                if text.starts_with("~SEQ") {
                    self.seq(&text, &loc, diags)?;
                    text.clear();
                    break;
                }
                if text.starts_with("~LST") {
                    self.lst(&text, &loc, diags)?;
                    text.clear();
                    break;
                }
                if text.starts_with('~') || !text.contains('$') {
                    break;
                }
                let mut pending = Vec::new();
                let changed = self.substitute(&mut text, &mut subs, &mut pending, &loc, diags)?;
                // Later expansions are read first (keepalived's multiline stack).
                for lines in pending {
                    self.push_expansion(
                        Source::Lines {
                            at: loc.clone(),
                            lines,
                        },
                        &loc,
                        "$",
                        diags,
                    )?;
                }
                if !changed {
                    break;
                }
                text = decomment(&text);
                if !(text.starts_with('@') || text.contains('$')) {
                    break;
                }
            }
            if text.is_empty() {
                continue;
            }
            if let Some(pattern) = is_include(&text) {
                let pattern = pattern.to_owned();
                self.include(&pattern, &loc, diags)?;
                continue;
            }
            self.undefined(&text, &loc, diags);
            self.count(text.len(), &loc, diags)?;
            return Ok(Some(Line { text, loc }));
        }
    }

    fn continue_definition(&mut self, name: &str, text: String) {
        let cont = text.ends_with('\\');
        let mut t = text;
        if cont {
            t.pop();
            let keep = t.trim_end_matches([' ', '\t']).len();
            t.truncate(keep);
            t.push('\n');
        }
        if let Some(d) = self.defs.get_mut(name) {
            if t.len() >= 2 || (!t.is_empty() && !cont) {
                d.value.push_str(&t);
            }
        }
        if !cont {
            self.end_definition();
        }
    }

    /// Warns once per undefined parameter left in a line.
    fn undefined(&self, text: &str, loc: &Loc, diags: &mut Vec<Diag>) {
        let mut seen: Vec<&str> = Vec::new();
        let mut pos = 0;
        while let Some(i) = text[pos..].find('$').map(|i| pos + i) {
            pos = i + 1;
            if let Some(r) = reference(&text[i + 1..]) {
                if !self.defs.contains_key(r.name) && !seen.contains(&r.name) {
                    seen.push(r.name);
                    diags.push(Diag::warning(
                        loc,
                        Some("$"),
                        format!(
                            "parameter {} is not defined; kept as written (as keepalived does)",
                            shown(r.name)
                        ),
                    ));
                }
            }
        }
    }

    fn value_of(&self, name: &str, params: Option<&str>) -> Option<String> {
        let d = self.defs.get(name)?;
        Some(match d.builtin {
            None => d.value.clone(),
            Some(Builtin::Instance) => config_id().to_owned(),
            Some(Builtin::Pwd) => {
                let file = self
                    .current_file()
                    .map(|f| f.as_path())
                    .unwrap_or(Path::new("."));
                let dir = file.parent().unwrap_or(Path::new(""));
                let dir = if dir.is_absolute() {
                    dir.to_owned()
                } else {
                    std::env::current_dir().unwrap_or_default().join(dir)
                };
                let s = dir.display().to_string();
                if s.len() > 1 {
                    s.trim_end_matches('/').to_owned()
                } else {
                    s
                }
            }
            Some(Builtin::Random) => {
                let mut nums = params.unwrap_or("").split(' ').filter(|s| !s.is_empty());
                let min: u64 = nums.next().and_then(|n| n.parse().ok()).unwrap_or(0);
                let max: u64 = nums.next().and_then(|n| n.parse().ok()).unwrap_or(32767);
                if max < min {
                    min.to_string()
                } else {
                    (min + random_u64() % (max - min).saturating_add(1).max(1)).to_string()
                }
            }
        })
    }

    /// keepalived's `replace_param`: replaces references from left to right,
    /// rescanning each replacement. Returns whether anything was replaced;
    /// the further lines of multi-line parameters go to `pending`.
    fn substitute(
        &mut self,
        text: &mut String,
        subs: &mut usize,
        pending: &mut Vec<VecDeque<String>>,
        loc: &Loc,
        diags: &mut Vec<Diag>,
    ) -> Result<bool, Stop> {
        let mut pos = 0;
        let mut changed = false;
        while let Some(i) = text[pos..].find('$').map(|i| pos + i) {
            if i + 1 >= text.len() {
                break;
            }
            let found = reference(&text[i + 1..]).and_then(|r| {
                let d = self.defs.get(r.name)?;
                if d.multiline && !r.at_end {
                    return None;
                }
                if r.params.is_some() && d.builtin != Some(Builtin::Random) {
                    return None;
                }
                let multiline = d.multiline;
                Some((r.len, self.value_of(r.name, r.params)?, multiline))
            });
            let Some((len, value, multiline)) = found else {
                pos = i + 1;
                continue;
            };
            changed = true;
            *subs += 1;
            if *subs > MAX_SUBSTITUTIONS {
                diags.push(Diag::error(
                    loc,
                    Some("$"),
                    format!("more than {MAX_SUBSTITUTIONS} parameter substitutions in one line (limit MAX_SUBSTITUTIONS; a parameter that expands to itself?); reading stopped"),
                ));
                return Err(self.stop());
            }
            let first = if multiline {
                let mut lines = value.split('\n');
                let first = lines.next().unwrap_or("").to_owned();
                let rest: VecDeque<String> = lines.map(str::to_owned).collect();
                if !rest.is_empty() {
                    pending.push(rest);
                }
                first
            } else {
                value
            };
            let tilde = first.trim_start_matches([' ', '\t']).starts_with('~');
            text.replace_range(i..i + 1 + len, &first);
            if text.len() > MAX_LINE_BYTES {
                diags.push(Diag::error(
                    loc,
                    Some("$"),
                    format!(
                        "a line grows past {} KiB by parameter substitution (limit MAX_LINE_BYTES); reading stopped",
                        MAX_LINE_BYTES >> 10
                    ),
                ));
                return Err(self.stop());
            }
            if tilde {
                break;
            }
        }
        Ok(changed)
    }

    /// `~SEQ(…) rest` / `~SEQx(…) rest` (keepalived's `add_seq`).
    fn seq(&mut self, text: &str, loc: &Loc, diags: &mut Vec<Diag>) -> Result<(), Stop> {
        let bad = |diags: &mut Vec<Diag>, why: &str| {
            diags.push(Diag::error(loc, Some("~SEQ"), why.to_owned()));
            Ok(())
        };
        let mut p = &text[4..];
        let hex = p.starts_with('x');
        if hex {
            p = &p[1..];
        }
        let Some(p) = p.trim_start_matches([' ', '\t']).strip_prefix('(') else {
            return bad(diags, "invalid ~SEQ: '(' expected");
        };
        let p = p.trim_start_matches([' ', '\t']);
        let var_len = p.find([' ', '\t', ',', ')']).unwrap_or(p.len());
        let var = &p[..var_len];
        let after = p[var_len..].trim_start_matches([' ', '\t']);
        if var.is_empty() || after.is_empty() || after.starts_with(')') {
            return bad(
                diags,
                "invalid ~SEQ: a variable and an end value are needed",
            );
        }
        let after =
            after[after.chars().next().map_or(0, char::len_utf8)..].trim_start_matches([' ', '\t']);
        let Some(close) = after.find(')') else {
            return bad(diags, "invalid ~SEQ: ')' missing");
        };
        let mut params = after[..=close].to_owned();
        if params.len() > 63 {
            return bad(diags, "~SEQ parameters are longer than 63 characters");
        }
        let mut pending = Vec::new();
        let mut subs = 0;
        self.substitute(&mut params, &mut subs, &mut pending, loc, diags)?;
        if !pending.is_empty() {
            return bad(diags, "a ~SEQ parameter is a multi-line definition");
        }
        let mut nums = Vec::new();
        let mut q = params.as_str();
        loop {
            let (v, rest) = strtol(q);
            nums.push(v);
            let rest = rest.trim_start_matches([' ', '\t']);
            if rest.starts_with(')') {
                break;
            }
            match rest.strip_prefix(',') {
                Some(r) if nums.len() < 3 => q = r,
                _ => return bad(diags, "invalid ~SEQ: numbers separated by ',' expected"),
            }
        }
        let (start, step, end) = match nums[..] {
            [end] => (
                if end < 0 { -1 } else { 1 },
                if end < 1 { -1 } else { 1 },
                end,
            ),
            [start, end] => (start, if start <= end { 1 } else { -1 }, end),
            [start, step, end] => {
                if step == 0 || (start < end && step < 0) || (start > end && step > 0) {
                    return bad(
                        diags,
                        "invalid ~SEQ values: the step is 0 or goes away from the end",
                    );
                }
                (start, step, end)
            }
            _ => unreachable!("one to three numbers are read"),
        };
        if hex && (start < 0 || end < 0) {
            return bad(diags, "~SEQx is only valid for positive numbers");
        }
        let rest = after[close + 1..]
            .trim_start_matches([' ', '\t'])
            .to_owned();
        let src = Source::Seq {
            at: loc.clone(),
            var: var.to_owned(),
            next: start,
            step,
            last: end,
            hex,
            text: rest,
        };
        self.push_expansion(src, loc, "~SEQ", diags)
    }

    /// `~LST(VAR, v1, v2…) rest` / `~LST({A, B}, {a1, b1}, …) rest`
    /// (keepalived's `add_lst`).
    fn lst(&mut self, text: &str, loc: &Loc, diags: &mut Vec<Diag>) -> Result<(), Stop> {
        let invalid = |diags: &mut Vec<Diag>| {
            diags.push(Diag::error(loc, Some("~LST"), "invalid ~LST specification"));
            Ok(())
        };
        let blanks = |s: &str| s.len() - s.trim_start_matches([' ', '\t']).len();
        let b = text.as_bytes();
        let mut p = 4;
        p += blanks(&text[p..]);
        if b.get(p) != Some(&b'(') {
            return invalid(diags);
        }
        p += 1;
        p += blanks(&text[p..]);
        // The variables.
        let mut end_char = b',';
        if b.get(p) == Some(&b'{') {
            end_char = b'}';
            p += 1;
            p += blanks(&text[p..]);
        }
        let mut vars = Vec::new();
        loop {
            let len = text[p..]
                .find([' ', '\t', ',', '}'])
                .unwrap_or(text.len() - p);
            vars.push(text[p..p + len].to_owned());
            p += len;
            p += blanks(&text[p..]);
            if b.get(p) == Some(&end_char) {
                break;
            }
            if b.get(p) != Some(&b',') {
                return invalid(diags);
            }
            p += 1;
            p += blanks(&text[p..]);
        }
        if b.get(p) == Some(&b'}') {
            p += 1;
            p += blanks(&text[p..]);
        }
        if b.get(p) != Some(&b',') {
            return invalid(diags);
        }
        p += 1;
        p += blanks(&text[p..]);
        // The sets of values.
        let mut sets = VecDeque::new();
        loop {
            let mut end_char = b',';
            if b.get(p) == Some(&b'{') {
                end_char = b'}';
                p += 1;
                p += blanks(&text[p..]);
            }
            let mut values = Vec::new();
            loop {
                let len = text[p..]
                    .find([' ', '\t', ',', '}', ')'])
                    .unwrap_or(text.len() - p);
                values.push(text[p..p + len].to_owned());
                p += len;
                p += blanks(&text[p..]);
                if b.get(p) == Some(&end_char) || (b.get(p) == Some(&b')') && end_char == b',') {
                    break;
                }
                if b.get(p) != Some(&b',') {
                    return invalid(diags);
                }
                p += 1;
                p += blanks(&text[p..]);
                if values.len() >= vars.len() {
                    diags.push(Diag::error(
                        loc,
                        Some("~LST"),
                        "~LST specification has too many values",
                    ));
                    return Ok(());
                }
            }
            values.resize(vars.len(), String::new());
            sets.push_back(values);
            if b.get(p) == Some(&b'}') && end_char == b'}' {
                p += 1;
                p += blanks(&text[p..]);
            }
            if b.get(p) == Some(&b')') {
                break;
            }
            if b.get(p) != Some(&b',') {
                return invalid(diags);
            }
            p += 1;
            p += blanks(&text[p..]);
        }
        p += 1;
        p += blanks(&text[p..]);
        let src = Source::Lst {
            at: loc.clone(),
            vars,
            sets,
            text: text[p..].to_owned(),
        };
        self.push_expansion(src, loc, "~LST", diags)
    }

    fn include(&mut self, pattern: &str, at: &Loc, diags: &mut Vec<Diag>) -> Result<(), Stop> {
        if pattern.is_empty() {
            diags.push(Diag::error(at, Some("include"), "missing file name"));
            return Ok(());
        }
        if self.include_depth() > MAX_INCLUDE_DEPTH {
            diags.push(Diag::error(
                at,
                Some("include"),
                format!("includes nested deeper than {MAX_INCLUDE_DEPTH} (limit MAX_INCLUDE_DEPTH; files including each other?); not read"),
            ));
            return Ok(());
        }
        let base = self
            .current_file()
            .and_then(|f| f.parent())
            .unwrap_or(Path::new("."))
            .to_owned();
        let full = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            base.join(pattern)
        };
        // glob(3), which keepalived uses, reads `**` as `*`.
        let mut text = full.to_string_lossy().into_owned();
        while text.contains("**") {
            text = text.replace("**", "*");
        }
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: true,
        };
        let paths = match glob::glob_with(&text, opts) {
            Ok(p) => p,
            Err(e) => {
                diags.push(Diag::error(
                    at,
                    Some("include"),
                    format!("bad pattern: {e}"),
                ));
                return Ok(());
            }
        };
        let mut found = VecDeque::new();
        for p in paths {
            match p {
                Ok(p) => found.push_back(p),
                Err(e) => diags.push(Diag::warning(
                    at,
                    Some("include"),
                    format!(
                        "{} cannot be searched ({}); skipped",
                        e.path().display(),
                        e.error()
                    ),
                )),
            }
            if found.len() > self.budget.files_left {
                diags.push(Diag::error(
                    at,
                    Some("include"),
                    ReadError::TooManyFiles { path: text.clone() }.to_string(),
                ));
                return Err(self.stop());
            }
        }
        if found.is_empty() {
            diags.push(Diag::warning(
                at,
                Some("include"),
                format!("no file matches {text}"),
            ));
            return Ok(());
        }
        self.stack.push(Source::Glob {
            at: at.clone(),
            paths: found,
        });
        Ok(())
    }

    fn open_include(&mut self, path: &Path, at: &Loc, diags: &mut Vec<Diag>) -> Result<(), Stop> {
        match source::read(path, &mut self.budget, true) {
            Ok((bytes, stamp)) => {
                self.stamps.push(stamp);
                self.push_file(path, bytes);
                Ok(())
            }
            Err(
                e @ ReadError::NotRegular {
                    kind: "a directory",
                    ..
                },
            ) => {
                diags.push(Diag::warning(at, Some("include"), format!("{e}; skipped")));
                Ok(())
            }
            Err(e @ (ReadError::TooLarge { .. } | ReadError::TooManyFiles { .. })) => {
                diags.push(Diag::error(
                    at,
                    Some("include"),
                    format!("{e}; reading stopped"),
                ));
                Err(self.stop())
            }
            Err(e) => {
                diags.push(Diag::error(at, Some("include"), e.to_string()));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> (Vec<String>, Vec<Diag>) {
        let mut diags = Vec::new();
        let mut r = Reader::from_text(text, Path::new("/etc/keepalived/k.conf"));
        let mut out = Vec::new();
        while let Some(l) = r.next_line(&mut diags) {
            out.push(l.text);
        }
        (out, diags)
    }

    fn errors(d: &[Diag]) -> Vec<String> {
        d.iter()
            .filter(|d| d.severity == super::super::Severity::Error)
            .map(|d| d.to_string())
            .collect()
    }

    #[test]
    fn comments_and_escapes() {
        assert_eq!(decomment("  a b # c"), "a b");
        assert_eq!(decomment("a \"b # c\" ! d"), "a \"b # c\"");
        assert_eq!(decomment(r"a \# b"), "a # b");
        assert_eq!(decomment(r#""\#" x"#), r#""\#" x"#);
        assert_eq!(decomment("pass!word"), "pass");
        assert_eq!(decomment("a b  \\"), "a b\\");
    }

    #[test]
    fn definitions_and_substitution() {
        let (l, d) =
            lines("$VIP=10.0.0.1\n$PORT=80\nvirtual_server $VIP $PORT {\n}\nx ${VIP}/32\n");
        assert_eq!(l, ["virtual_server 10.0.0.1 80 {", "}", "x 10.0.0.1/32"]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn a_reference_must_end_at_a_separator() {
        // keepalived: `$VIP/32` is not a reference (only blank , ) or the end).
        let (l, d) = lines("$VIP=10.0.0.1\na $VIP/32 ($VIP) $VIP,$VIP\n");
        assert_eq!(l, ["a $VIP/32 (10.0.0.1) 10.0.0.1,10.0.0.1"]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn blank_before_equals_is_not_a_definition() {
        // As keepalived 2.2.7 (`keepalived -t` reports "Unknown keyword '$SP'").
        let (l, d) = lines("$SP = 10.0.0.2\n");
        assert_eq!(l, ["$SP = 10.0.0.2"]);
        assert_eq!(d.len(), 1);
        assert!(
            d[0].message.contains("parameter SP is not defined"),
            "{}",
            d[0]
        );
    }

    #[test]
    fn undefined_parameter_is_kept_with_a_located_warning() {
        let (l, d) = lines("\n  virtual_server $UNDEF 80 {\n");
        assert_eq!(l, ["virtual_server $UNDEF 80 {"]);
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].loc.line, d[0].loc.col), (2, 3));
        assert_eq!(d[0].severity, super::super::Severity::Warning);
    }

    #[test]
    fn multiline_definition() {
        let text = "$RS=real_server 10.1.1.1 80 { \\\n   weight 3 \\\n}\nvirtual_server 10.0.0.1 80 {\n  $RS\n}\n";
        let (l, d) = lines(text);
        assert_eq!(
            l,
            [
                "virtual_server 10.0.0.1 80 {",
                "real_server 10.1.1.1 80 {",
                "weight 3",
                "}",
                "}"
            ]
        );
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn multiline_definition_from_the_man_page_nests() {
        let text = "$RS= \\\nreal_server 192.168.${VS_NUM}.${RS_NUM} 80 { \\\n weight 1 \\\n}\n\
                    $VS= \\\nvirtual_server 10.0.${VS_NUM}.4 80 { \\\n $RS_NUM=1 \\\n $RS \\\n $RS_NUM=2 \\\n $RS \\\n}\n\
                    $VS_NUM=0\n$VS\n$VS_NUM=1\n$VS\n";
        let (l, d) = lines(text);
        assert!(d.is_empty(), "{d:?}");
        let want = [
            "virtual_server 10.0.0.4 80 {",
            "real_server 192.168.0.1 80 {",
            "weight 1",
            "}",
            "real_server 192.168.0.2 80 {",
            "weight 1",
            "}",
            "}",
            "virtual_server 10.0.1.4 80 {",
            "real_server 192.168.1.1 80 {",
            "weight 1",
            "}",
            "real_server 192.168.1.2 80 {",
            "weight 1",
            "}",
            "}",
        ];
        assert_eq!(l, want);
    }

    #[test]
    fn multiline_only_at_the_end_of_a_line() {
        let (l, _) = lines("$M=a \\\nb\nx $M y\n");
        assert_eq!(l, ["x $M y"]);
    }

    #[test]
    fn blank_line_ends_a_multiline_definition() {
        let (l, _) = lines("$M=a \\\nb \\\n\nc\n$M\n");
        assert_eq!(l, ["c", "a", "b"]);
    }

    #[test]
    fn conditional_lines() {
        set_config_id("test-host");
        let id = config_id();
        let text =
            format!("@{id} a 1\n@other a 2\n@^{id} a 3\n@^other a 4\n@{id}\n$C=@{id}\n$C a 5\n");
        let (l, d) = lines(&text);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(l, ["a 1", "a 4", "a 5"]);
    }

    #[test]
    fn conditional_definitions() {
        let id = config_id();
        let (l, _) = lines(&format!("@{id} $P=240\n@not-{id} $P=200\npriority $P\n"));
        assert_eq!(l, ["priority 240"]);
    }

    #[test]
    fn sequences() {
        let (l, d) = lines("~SEQ(N, 0, 3) ip 10.0.${N}.1\n");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(
            l,
            ["ip 10.0.0.1", "ip 10.0.1.1", "ip 10.0.2.1", "ip 10.0.3.1"]
        );
        let (l, _) = lines("~SEQx(S, 0x90, 0x10, 0xc0) ip fe80::20:${S}:1\n");
        assert_eq!(
            l,
            [
                "ip fe80::20:90:1",
                "ip fe80::20:a0:1",
                "ip fe80::20:b0:1",
                "ip fe80::20:c0:1"
            ]
        );
        let (l, _) = lines("~SEQ(N, 3) n $N\n");
        assert_eq!(l, ["n 1", "n 2", "n 3"]);
        let (l, _) = lines("~SEQ(N, 3, 1) n $N\n");
        assert_eq!(l, ["n 3", "n 2", "n 1"]);
        let (l, _) = lines("~SEQ(N, -2) n $N\n");
        assert_eq!(l, ["n -1", "n -2"]);
        let (l, _) = lines("$E=2\n~SEQ(N, $E) n $N\n");
        assert_eq!(l, ["n 1", "n 2"]);
        let (l, _) = lines("~SEQ(A, 1, 2) ~SEQ(B, 1, 2) p ${A}.$B $A.\n");
        // `$A.` is not a reference: only a blank, `,`, `)` or the end may follow.
        assert_eq!(l, ["p 1.1 $A.", "p 1.2 $A.", "p 2.1 $A.", "p 2.2 $A."]);
    }

    #[test]
    fn bad_sequences_are_located_errors() {
        for bad in [
            "~SEQ(N, 1, 0, 3) x",
            "~SEQ(N, 3, 1, 1) x",
            "~SEQ N 3",
            "~SEQ(N) x",
            "~SEQx(N, -3) x",
        ] {
            let (l, d) = lines(&format!("\n{bad}\n"));
            assert!(l.is_empty(), "{bad}: {l:?}");
            let e = errors(&d);
            assert_eq!(e.len(), 1, "{bad}: {d:?}");
            assert!(e[0].contains("k.conf:2:1: error: ~SEQ"), "{}", e[0]);
        }
    }

    #[test]
    fn lists() {
        let (l, d) = lines("~LST({IP, IP1}, {10,1},{20,4}) 192.168.${IP}.${IP1}\n");
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(l, ["192.168.10.1", "192.168.20.4"]);
        let (l, _) = lines("~LST(IP, 1, 2) ~LST(IP1, 5,6) a.${IP}.${IP1}\n");
        assert_eq!(l, ["a.1.5", "a.1.6", "a.2.5", "a.2.6"]);
    }

    #[test]
    fn predefined_parameters() {
        let (l, _) = lines("a ${_HASH} \"${_HASH}\" ${_BANG}x\nb ${_PWD}\nc ${_INSTANCE}\n");
        // `#` and `!` produced by substitution start comments unless quoted,
        // as keepalived decomments the line again.
        assert_eq!(l[0], "a");
        assert_eq!(l[1], "b /etc/keepalived");
        assert_eq!(l[2], format!("c {}", config_id()));
        let (l, _) = lines("r ${_RANDOM 5 7}\n");
        let n: u32 = l[0][2..].parse().unwrap();
        assert!((5..=7).contains(&n), "{n}");
    }

    #[test]
    fn self_reference_is_bounded() {
        let (_, d) = lines("$A=$A\nx $A\n");
        assert!(errors(&d)[0].contains("MAX_SUBSTITUTIONS"), "{d:?}");
        let (_, d) = lines(&format!("$A={}\nx $A\n", "$A ".repeat(20)));
        assert!(errors(&d)[0].contains("MAX_LINE_BYTES"), "{d:?}");
        // A multi-line parameter that ends with itself: lines without end.
        let (_, d) = lines("$M=a \\\n$M\nx\n$M\n");
        assert!(errors(&d)[0].contains("MAX_EXPANDED_BYTES"), "{d:?}");
        // Exponential: each level doubles.
        let mut text = String::from("$L0=x\n");
        for i in 1..40 {
            text.push_str(&format!("$L{i}=$L{p} $L{p}\n", p = i - 1));
        }
        text.push_str("y $L39\n");
        let (_, d) = lines(&text);
        assert!(errors(&d)[0].contains("MAX_SUBSTITUTIONS"), "{d:?}");
        let (_, d) = lines("~SEQ(N, 1, 1000000000000) x\n");
        assert!(errors(&d)[0].contains("MAX_EXPANDED_BYTES"), "{d:?}");
    }

    #[test]
    fn nested_expansions_are_bounded() {
        // A multi-line parameter whose middle line uses itself nests.
        let (_, d) = lines("$M=a \\\n$M \\\nb\nx\n$M\n");
        assert!(errors(&d)[0].contains("MAX_EXPANSION_DEPTH"), "{d:?}");
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("lb-reader-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn read_all(path: &Path, budget: Budget) -> (Vec<String>, Vec<Diag>) {
        let mut diags = Vec::new();
        let mut r = Reader::open(path, &mut diags).with_budget(budget);
        let mut out = Vec::new();
        while let Some(l) = r.next_line(&mut diags) {
            out.push(l.text);
        }
        (out, diags)
    }

    fn open_budget() -> Budget {
        Budget {
            require_root_owned: false,
            ..Budget::default()
        }
    }

    #[test]
    fn includes_share_parameters_and_are_relative() {
        let d = tmpdir("inc");
        std::fs::create_dir(d.join("conf.d")).unwrap();
        std::fs::write(
            d.join("main.conf"),
            "$P=80\ninclude conf.d/*.conf\nafter $Q\n",
        )
        .unwrap();
        std::fs::write(d.join("conf.d/a.conf"), "a $P\n$Q=q\n").unwrap();
        std::fs::write(d.join("conf.d/b.conf"), "b ${_PWD}\n").unwrap();
        std::fs::write(d.join("conf.d/.hidden.conf"), "hidden\n").unwrap();
        let (l, diags) = read_all(&d.join("main.conf"), open_budget());
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(
            l,
            [
                "a 80",
                format!("b {}", d.join("conf.d").display()).as_str(),
                "after q"
            ]
        );
    }

    #[test]
    fn include_fan_out_is_bounded() {
        // Seven files that include each other: 7^8 files without limits.
        let d = tmpdir("fanout");
        for i in 0..7 {
            std::fs::write(d.join(format!("f{i}.conf")), "x\ninclude *.conf\n").unwrap();
        }
        let t = std::time::Instant::now();
        let (l, diags) = read_all(&d.join("f0.conf"), open_budget());
        assert!(t.elapsed() < std::time::Duration::from_secs(10));
        assert!(l.len() <= source::MAX_FILES);
        // The deepest files' includes are refused (MAX_INCLUDE_DEPTH) until
        // the file count stops the reading.
        let e = errors(&diags);
        assert!(e.len() <= source::MAX_FILES, "{}", e.len());
        let last = e.last().unwrap();
        assert!(
            last.contains("MAX_FILES") && last.contains(".conf:2:1: error: include:"),
            "{last}"
        );
        assert!(e[..e.len() - 1]
            .iter()
            .all(|e| e.contains("MAX_INCLUDE_DEPTH")));
    }

    #[test]
    fn include_depth_is_bounded() {
        let d = tmpdir("depth");
        std::fs::write(d.join("self.conf"), "x\ninclude self.conf\n").unwrap();
        let (l, diags) = read_all(&d.join("self.conf"), open_budget());
        assert_eq!(l.len(), MAX_INCLUDE_DEPTH + 1);
        let e = errors(&diags);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("MAX_INCLUDE_DEPTH"), "{e:?}");
    }

    #[test]
    fn include_of_a_fifo_or_device_is_an_error_at_once() {
        let d = tmpdir("fifo");
        let fifo = d.join("fifo.conf");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        std::fs::write(
            d.join("main.conf"),
            "include fifo.conf\ninclude /dev/zero\na\n",
        )
        .unwrap();
        let t = std::time::Instant::now();
        let (l, diags) = read_all(&d.join("main.conf"), open_budget());
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
        assert_eq!(l, ["a"]);
        let e = errors(&diags);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(
            e[0].contains("main.conf:1:1: error: include:") && e[0].contains("a FIFO"),
            "{e:?}"
        );
        assert!(
            e[1].contains("main.conf:2:1: error: include:") && e[1].contains("/dev/zero"),
            "{e:?}"
        );
    }

    #[test]
    fn input_size_is_bounded() {
        let d = tmpdir("size");
        std::fs::write(d.join("big.conf"), "a\n".repeat(600)).unwrap();
        std::fs::write(d.join("main.conf"), "include big.conf\ninclude big.conf\n").unwrap();
        let budget = Budget {
            bytes_left: 2000,
            ..open_budget()
        };
        let (l, diags) = read_all(&d.join("main.conf"), budget);
        assert_eq!(l.len(), 600);
        let e = errors(&diags);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("MAX_INPUT_BYTES") && e[0].contains("main.conf:2:1"),
            "{e:?}"
        );
    }

    #[test]
    fn empty_files_are_warned_about() {
        let d = tmpdir("empty");
        std::fs::write(d.join("main.conf"), "# nothing\n\n").unwrap();
        let (l, diags) = read_all(&d.join("main.conf"), open_budget());
        assert!(l.is_empty());
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert!(
            diags[0]
                .to_string()
                .contains("main.conf:1:1: warning: no statements"),
            "{}",
            diags[0]
        );
    }
}
