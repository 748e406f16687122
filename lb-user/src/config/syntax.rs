//! keepalived.conf syntax: tokens, blocks, comments, quoting and `include`.
//!
//! The grammar is line oriented, as keepalived's own reader: a statement is a
//! keyword followed by arguments up to the end of the line, optionally opening
//! a block with `{` (on the same line or alone on the next one) that runs to
//! the matching `}`. `#` and `!` start a comment anywhere outside quotes;
//! braces are tokens of their own even when glued to a word (`TCP_CHECK{`).
//! `include GLOB` splices the statements of every matching file, relative to
//! the including file's directory.

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// A position in a configuration file (1-based line and column).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loc {
    pub file: Arc<PathBuf>,
    pub line: u32,
    pub col: u32,
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file.display(), self.line, self.col)
    }
}

/// One statement: `keyword args… [{ children }]`.
#[derive(Clone, Debug)]
pub struct Node {
    pub keyword: String,
    pub args: Vec<String>,
    pub children: Option<Vec<Node>>,
    pub loc: Loc,
}

impl Node {
    /// The first child statement with this keyword.
    pub fn child(&self, keyword: &str) -> Option<&Node> {
        self.children
            .as_ref()?
            .iter()
            .find(|n| n.keyword == keyword)
    }
}

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// A problem found in the configuration, with its location.
#[derive(Clone, Debug)]
pub struct Diag {
    pub severity: Severity,
    pub loc: Loc,
    /// The keyword the problem is about, if any.
    pub keyword: Option<String>,
    pub message: String,
}

impl fmt::Display for Diag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        match &self.keyword {
            Some(k) => write!(f, "{}: {sev}: {k}: {}", self.loc, self.message),
            None => write!(f, "{}: {sev}: {}", self.loc, self.message),
        }
    }
}

impl Diag {
    pub fn error(loc: &Loc, keyword: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            loc: loc.clone(),
            keyword: keyword.map(str::to_owned),
            message: message.into(),
        }
    }
    pub fn warning(loc: &Loc, keyword: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            loc: loc.clone(),
            keyword: keyword.map(str::to_owned),
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Word(String),
    Open,
    Close,
    Newline,
}

struct Token {
    tok: Tok,
    loc: Loc,
}

const MAX_INCLUDE_DEPTH: usize = 8;

fn tokenize(text: &str, file: &Arc<PathBuf>, diags: &mut Vec<Diag>) -> Vec<Token> {
    let mut out = Vec::new();
    for (lineno, line) in text.lines().enumerate() {
        let line_no = lineno as u32 + 1;
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        let loc = |col: usize| Loc {
            file: file.clone(),
            line: line_no,
            col: col as u32 + 1,
        };
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if c == '#' || c == '!' {
                break;
            } else if c == '{' {
                out.push(Token {
                    tok: Tok::Open,
                    loc: loc(i),
                });
                i += 1;
            } else if c == '}' {
                out.push(Token {
                    tok: Tok::Close,
                    loc: loc(i),
                });
                i += 1;
            } else if c == '"' {
                let start = i;
                i += 1;
                let mut s = String::new();
                let mut closed = false;
                while i < chars.len() {
                    if chars[i] == '\\' && i + 1 < chars.len() {
                        s.push(chars[i + 1]);
                        i += 2;
                    } else if chars[i] == '"' {
                        closed = true;
                        i += 1;
                        break;
                    } else {
                        s.push(chars[i]);
                        i += 1;
                    }
                }
                if !closed {
                    diags.push(Diag::error(&loc(start), None, "unterminated quoted string"));
                }
                out.push(Token {
                    tok: Tok::Word(s),
                    loc: loc(start),
                });
            } else {
                let start = i;
                let mut s = String::new();
                while i < chars.len() {
                    let c = chars[i];
                    if c.is_whitespace() || c == '{' || c == '}' || c == '"' {
                        break;
                    }
                    // A comment glued to a word ("80#web") ends the word.
                    if c == '#' {
                        break;
                    }
                    s.push(c);
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Word(s),
                    loc: loc(start),
                });
            }
        }
        out.push(Token {
            tok: Tok::Newline,
            loc: loc(chars.len()),
        });
    }
    out
}

struct Parser<'a> {
    toks: &'a [Token],
    pos: usize,
}

impl Parser<'_> {
    fn skip_newlines(&mut self) {
        while self.pos < self.toks.len() && self.toks[self.pos].tok == Tok::Newline {
            self.pos += 1;
        }
    }

    /// Statements until a `}` (when `nested`) or the end of input.
    fn block(&mut self, nested: Option<&Loc>, diags: &mut Vec<Diag>) -> Vec<Node> {
        let mut nodes = Vec::new();
        loop {
            self.skip_newlines();
            let Some(t) = self.toks.get(self.pos) else {
                if let Some(open) = nested {
                    diags.push(Diag::error(open, None, "unclosed '{' (missing '}')"));
                }
                return nodes;
            };
            match &t.tok {
                Tok::Close => {
                    if nested.is_some() {
                        self.pos += 1;
                        return nodes;
                    }
                    diags.push(Diag::error(&t.loc, None, "unexpected '}'"));
                    self.pos += 1;
                }
                Tok::Open => {
                    // An anonymous block: keep its contents so nothing is lost.
                    let loc = t.loc.clone();
                    diags.push(Diag::error(&loc, None, "'{' without a keyword"));
                    self.pos += 1;
                    let _ = self.block(Some(&loc), diags);
                }
                Tok::Word(w) => {
                    let keyword = w.clone();
                    let loc = t.loc.clone();
                    self.pos += 1;
                    let mut args = Vec::new();
                    let mut children = None;
                    while let Some(t) = self.toks.get(self.pos) {
                        match &t.tok {
                            Tok::Word(a) => {
                                args.push(a.clone());
                                self.pos += 1;
                            }
                            Tok::Open => {
                                let open = t.loc.clone();
                                self.pos += 1;
                                children = Some(self.block(Some(&open), diags));
                                break;
                            }
                            Tok::Close => break,
                            Tok::Newline => {
                                // `keyword args` then `{` alone on the next line.
                                let mut p = self.pos;
                                while p < self.toks.len() && self.toks[p].tok == Tok::Newline {
                                    p += 1;
                                }
                                if let Some(Token {
                                    tok: Tok::Open,
                                    loc: open,
                                }) = self.toks.get(p)
                                {
                                    let next_is_eol = matches!(
                                        self.toks.get(p + 1).map(|t| &t.tok),
                                        Some(Tok::Newline)
                                    );
                                    if next_is_eol {
                                        let open = open.clone();
                                        self.pos = p + 1;
                                        children = Some(self.block(Some(&open), diags));
                                    }
                                }
                                break;
                            }
                        }
                    }
                    nodes.push(Node {
                        keyword,
                        args,
                        children,
                        loc,
                    });
                }
                Tok::Newline => unreachable!("newlines skipped above"),
            }
        }
    }
}

/// Parses `path` (and its includes) into statements; problems go to `diags`.
pub fn parse_file(path: &Path, diags: &mut Vec<Diag>) -> Vec<Node> {
    parse_file_depth(path, diags, 0, None)
}

/// Parses configuration text as if read from `path`.
pub fn parse_str(text: &str, path: &Path, diags: &mut Vec<Diag>) -> Vec<Node> {
    parse_text(text, path, diags, 0)
}

fn parse_file_depth(
    path: &Path,
    diags: &mut Vec<Diag>,
    depth: usize,
    from: Option<&Loc>,
) -> Vec<Node> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            parse_text(&text, path, diags, depth)
        }
        Err(e) => {
            let loc = from.cloned().unwrap_or(Loc {
                file: Arc::new(path.to_owned()),
                line: 0,
                col: 0,
            });
            diags.push(Diag::error(
                &loc,
                from.map(|_| "include"),
                format!("cannot read {}: {e}", path.display()),
            ));
            Vec::new()
        }
    }
}

fn parse_text(text: &str, path: &Path, diags: &mut Vec<Diag>, depth: usize) -> Vec<Node> {
    let file = Arc::new(path.to_owned());
    let toks = tokenize(text, &file, diags);
    let mut p = Parser {
        toks: &toks,
        pos: 0,
    };
    let nodes = p.block(None, diags);
    expand_includes(nodes, path, diags, depth)
}

fn expand_includes(
    nodes: Vec<Node>,
    path: &Path,
    diags: &mut Vec<Diag>,
    depth: usize,
) -> Vec<Node> {
    let mut out = Vec::with_capacity(nodes.len());
    for mut n in nodes {
        if n.keyword == "include" {
            let Some(pattern) = n.args.first() else {
                diags.push(Diag::error(&n.loc, Some("include"), "missing file name"));
                continue;
            };
            if depth >= MAX_INCLUDE_DEPTH {
                diags.push(Diag::error(
                    &n.loc,
                    Some("include"),
                    "includes nested too deeply (loop?)",
                ));
                continue;
            }
            let base = path.parent().unwrap_or(Path::new("."));
            let full = if Path::new(pattern).is_absolute() {
                PathBuf::from(pattern)
            } else {
                base.join(pattern)
            };
            let mut matched = false;
            match glob::glob(&full.to_string_lossy()) {
                Ok(paths) => {
                    let mut files: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
                    files.sort();
                    for f in files {
                        matched = true;
                        out.extend(parse_file_depth(&f, diags, depth + 1, Some(&n.loc)));
                    }
                }
                Err(e) => diags.push(Diag::error(
                    &n.loc,
                    Some("include"),
                    format!("bad pattern: {e}"),
                )),
            }
            if !matched {
                diags.push(Diag::warning(
                    &n.loc,
                    Some("include"),
                    format!("no file matches {}", full.display()),
                ));
            }
            continue;
        }
        if let Some(children) = n.children.take() {
            n.children = Some(expand_includes(children, path, diags, depth));
        }
        out.push(n);
    }
    out
}
