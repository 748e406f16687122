//! keepalived.conf syntax: tokens, blocks and quoting, over the logical
//! lines of [`super::reader`] (comments, parameters, conditional lines,
//! sequences and `include` are handled there).
//!
//! The grammar is line oriented, as keepalived's own reader: a statement is a
//! keyword followed by arguments up to the end of the line, optionally opening
//! a block with `{` (on the same line or alone on the next one) that runs to
//! the matching `}`. Braces are tokens of their own even when glued to a word
//! (`TCP_CHECK{`).
//!
//! Tokens are read as the parser needs them and blocks nest at most
//! [`MAX_BLOCK_DEPTH`] deep, so no input can exhaust the stack; the whole
//! configuration holds at most [`MAX_TOKENS`] tokens, which bounds what a
//! parse allocates.

use std::{
    collections::VecDeque,
    fmt,
    path::{Path, PathBuf},
    sync::Arc,
};

use super::{
    reader::{Line, Reader},
    source::FileStamp,
};

/// Deepest nesting of `{ }` blocks (64); keepalived's own configurations
/// nest fewer than 10 deep. A deeper block is an error and is skipped.
pub const MAX_BLOCK_DEPTH: usize = 64;

/// Most tokens (words and braces) in one configuration (1,000,000): about
/// 40,000 virtual servers with a real server and a checker each.
pub const MAX_TOKENS: usize = 1_000_000;

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

/// Longest keyword a diagnostic shows (48 characters; keepalived's longest
/// keywords have about 40).
pub const MAX_SHOWN_KEYWORD: usize = 48;

/// How a diagnostic shows a keyword read from a file: as written when it
/// looks like a keyword (letters, digits and `_-.$@~`, at most
/// [`MAX_SHOWN_KEYWORD`] characters), else only its length, so that a file
/// that is not a configuration (an include pointing at a secret) is never
/// echoed.
pub fn shown_keyword(k: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.$@~".contains(c);
    // Entries of address blocks (`10.0.0.1/24`, `fd00::1`) are their keyword.
    let (addr, prefix) = k.split_once('/').unwrap_or((k, "0"));
    if addr.parse::<std::net::IpAddr>().is_ok() && prefix.len() <= 3 && prefix.parse::<u8>().is_ok()
    {
        return k.to_owned();
    }
    if k.chars().all(plain) && !k.is_empty() {
        if k.len() <= MAX_SHOWN_KEYWORD {
            k.to_owned()
        } else {
            format!("{}…", &k[..MAX_SHOWN_KEYWORD])
        }
    } else {
        format!("(a {}-byte word, not shown)", k.len())
    }
}

impl Diag {
    pub fn error(loc: &Loc, keyword: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            loc: loc.clone(),
            keyword: keyword.map(shown_keyword),
            message: message.into(),
        }
    }
    pub fn warning(loc: &Loc, keyword: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            loc: loc.clone(),
            keyword: keyword.map(shown_keyword),
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

/// Splits one logical line into tokens (a `Newline` ends it).
fn tokenize(line: &Line, out: &mut VecDeque<Token>, diags: &mut Vec<Diag>) {
    let chars: Vec<char> = line.text.chars().collect();
    let loc = |col: usize| Loc {
        file: line.loc.file.clone(),
        line: line.loc.line,
        col: line.loc.col + col as u32,
    };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '{' {
            out.push_back(Token {
                tok: Tok::Open,
                loc: loc(i),
            });
            i += 1;
        } else if c == '}' {
            out.push_back(Token {
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
            out.push_back(Token {
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
                s.push(c);
                i += 1;
            }
            out.push_back(Token {
                tok: Tok::Word(s),
                loc: loc(start),
            });
        }
    }
    out.push_back(Token {
        tok: Tok::Newline,
        loc: loc(chars.len()),
    });
}

/// Tokens read from the reader as the parser asks for them.
struct Tokens {
    reader: Reader,
    buf: VecDeque<Token>,
    /// Tokens other than newlines produced so far.
    count: usize,
    stopped: bool,
}

impl Tokens {
    /// Makes `buf` hold more than `n` tokens if the input has them.
    fn fill(&mut self, n: usize, diags: &mut Vec<Diag>) -> bool {
        while self.buf.len() <= n {
            if self.stopped {
                return false;
            }
            let Some(line) = self.reader.next_line(diags) else {
                return false;
            };
            let before = self.buf.len();
            tokenize(&line, &mut self.buf, diags);
            self.count += self.buf.len() - before - 1;
            if self.count > MAX_TOKENS {
                diags.push(Diag::error(
                    &line.loc,
                    None,
                    format!("more than {MAX_TOKENS} words and braces in the configuration (limit MAX_TOKENS); reading stopped"),
                ));
                self.stopped = true;
                self.buf.clear();
                return false;
            }
        }
        true
    }

    fn peek(&mut self, n: usize, diags: &mut Vec<Diag>) -> Option<&Token> {
        if self.fill(n, diags) {
            self.buf.get(n)
        } else {
            None
        }
    }

    fn next(&mut self, diags: &mut Vec<Diag>) -> Option<Token> {
        if self.fill(0, diags) {
            self.buf.pop_front()
        } else {
            None
        }
    }

    fn skip_newlines(&mut self, diags: &mut Vec<Diag>) {
        while self.peek(0, diags).is_some_and(|t| t.tok == Tok::Newline) {
            self.buf.pop_front();
        }
    }

    /// Skips the rest of a block whose `{` was just read, without recursion.
    fn skip_block(&mut self, diags: &mut Vec<Diag>) {
        let mut level = 1usize;
        while let Some(t) = self.next(diags) {
            match t.tok {
                Tok::Open => level += 1,
                Tok::Close => {
                    level -= 1;
                    if level == 0 {
                        return;
                    }
                }
                _ => {}
            }
        }
    }
}

struct Parser {
    toks: Tokens,
}

impl Parser {
    /// The children of a block whose `{` at `open` was just read, `depth`
    /// blocks deep; a block past [`MAX_BLOCK_DEPTH`] is skipped.
    fn child_block(
        &mut self,
        open: &Loc,
        depth: usize,
        diags: &mut Vec<Diag>,
    ) -> Option<Vec<Node>> {
        if depth > MAX_BLOCK_DEPTH {
            diags.push(Diag::error(
                open,
                None,
                format!("blocks nested deeper than {MAX_BLOCK_DEPTH} (limit MAX_BLOCK_DEPTH); this block is skipped"),
            ));
            self.toks.skip_block(diags);
            return None;
        }
        Some(self.block(Some(open), depth, diags))
    }

    /// Statements until a `}` (when `nested`) or the end of input; `depth`
    /// is the number of blocks open around them.
    fn block(&mut self, nested: Option<&Loc>, depth: usize, diags: &mut Vec<Diag>) -> Vec<Node> {
        let mut nodes = Vec::new();
        loop {
            self.toks.skip_newlines(diags);
            let Some(t) = self.toks.next(diags) else {
                if let Some(open) = nested {
                    diags.push(Diag::error(open, None, "unclosed '{' (missing '}')"));
                }
                return nodes;
            };
            match t.tok {
                Tok::Close => {
                    if nested.is_some() {
                        return nodes;
                    }
                    diags.push(Diag::error(&t.loc, None, "unexpected '}'"));
                }
                Tok::Open => {
                    // An anonymous block: read through so nothing is misplaced.
                    diags.push(Diag::error(&t.loc, None, "'{' without a keyword"));
                    let _ = self.child_block(&t.loc, depth + 1, diags);
                }
                Tok::Word(keyword) => {
                    let loc = t.loc;
                    let mut args = Vec::new();
                    let mut children = None;
                    while let Some(t) = self.toks.peek(0, diags) {
                        match &t.tok {
                            Tok::Word(_) => {
                                if let Some(Token {
                                    tok: Tok::Word(a), ..
                                }) = self.toks.next(diags)
                                {
                                    args.push(a);
                                }
                            }
                            Tok::Open => {
                                let open = t.loc.clone();
                                self.toks.next(diags);
                                children = self.child_block(&open, depth + 1, diags);
                                break;
                            }
                            Tok::Close => break,
                            Tok::Newline => {
                                // `keyword args` then `{` alone on the next line.
                                let open_next = matches!(
                                    self.toks.peek(1, diags).map(|t| &t.tok),
                                    Some(Tok::Open)
                                ) && matches!(
                                    self.toks.peek(2, diags).map(|t| &t.tok),
                                    Some(Tok::Newline)
                                );
                                if open_next {
                                    self.toks.next(diags);
                                    let open = self.toks.next(diags).map(|t| t.loc);
                                    if let Some(open) = open {
                                        children = self.child_block(&open, depth + 1, diags);
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

/// Statements of a configuration and the files they were read from.
pub struct Parsed {
    pub nodes: Vec<Node>,
    /// Every file read, the main file first (see [`FileStamp`]).
    pub files: Vec<FileStamp>,
}

fn parse(reader: Reader, diags: &mut Vec<Diag>) -> Parsed {
    let mut p = Parser {
        toks: Tokens {
            reader,
            buf: VecDeque::new(),
            count: 0,
            stopped: false,
        },
    };
    let nodes = p.block(None, 0, diags);
    Parsed {
        nodes,
        files: std::mem::take(&mut p.toks.reader.stamps),
    }
}

/// Parses `path` (and its includes) into statements; problems go to `diags`.
pub fn parse_file(path: &Path, diags: &mut Vec<Diag>) -> Parsed {
    let reader = Reader::open(path, diags);
    parse(reader, diags)
}

/// Parses configuration text as if read from `path`.
pub fn parse_str(text: &str, path: &Path, diags: &mut Vec<Diag>) -> Parsed {
    parse(Reader::from_text(text, path), diags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> (Vec<Node>, Vec<Diag>) {
        let mut diags = Vec::new();
        let p = parse_str(text, Path::new("k.conf"), &mut diags);
        (p.nodes, diags)
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        // 10,300 '{' crashed check-config and the agent with a stack overflow.
        let text = format!("a {}\n", "{".repeat(10_300));
        let t = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || parse_text(&text))
            .unwrap();
        let (nodes, diags) = t.join().expect("no stack overflow");
        assert_eq!(nodes.len(), 1);
        let deep: Vec<_> = diags
            .iter()
            .filter(|d| d.message.contains("MAX_BLOCK_DEPTH"))
            .collect();
        assert_eq!(deep.len(), 1, "{diags:?}");
        assert_eq!(deep[0].loc.col, 3 + MAX_BLOCK_DEPTH as u32);
    }

    #[test]
    fn many_nested_keyword_blocks_are_bounded_too() {
        let mut text = String::new();
        for _ in 0..20_000 {
            text.push_str("b {\n");
        }
        let t = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || parse_text(&text))
            .unwrap();
        let (_, diags) = t.join().expect("no stack overflow");
        assert!(
            diags[0]
                .to_string()
                .contains("k.conf:65:3: error: blocks nested deeper than 64"),
            "{}",
            diags[0]
        );
    }

    #[test]
    fn depth_64_is_accepted() {
        let text = format!(
            "{}{}\n",
            "a {\n".repeat(MAX_BLOCK_DEPTH),
            "}\n".repeat(MAX_BLOCK_DEPTH)
        );
        let (nodes, diags) = parse_text(&text);
        assert!(diags.is_empty(), "{diags:?}");
        let mut n = &nodes[0];
        let mut depth = 1;
        while let Some(c) = n.children.as_ref().and_then(|c| c.first()) {
            n = c;
            depth += 1;
        }
        assert_eq!(depth, MAX_BLOCK_DEPTH);
    }

    #[test]
    fn token_count_is_bounded() {
        let text = "a b c d e f g h i j\n".repeat(MAX_TOKENS / 10 + 1);
        let (nodes, diags) = parse_text(&text);
        assert!(nodes.len() <= MAX_TOKENS / 10);
        assert!(
            diags.last().unwrap().message.contains("MAX_TOKENS"),
            "{diags:?}"
        );
    }

    #[test]
    fn keywords_that_are_not_keywords_are_not_echoed() {
        let (_, diags) = parse_text("}\n");
        assert!(diags[0].keyword.is_none());
        assert_eq!(shown_keyword("lb_algo"), "lb_algo");
        assert_eq!(shown_keyword("10.0.0.1/40"), "10.0.0.1/40");
        assert_eq!(shown_keyword("fd00::1"), "fd00::1");
        assert_eq!(shown_keyword("fd00::1/x"), "(a 9-byte word, not shown)");
        assert_eq!(
            shown_keyword("root:$6$salt$hash:19000:0:99999:7:::"),
            "(a 36-byte word, not shown)"
        );
        assert_eq!(
            shown_keyword(&"a".repeat(60)),
            format!("{}…", "a".repeat(48))
        );
        let d = Diag::warning(
            &Loc {
                file: Arc::new("k.conf".into()),
                line: 1,
                col: 1,
            },
            Some("secret\u{1b}[2J"),
            "unknown keyword; ignored",
        );
        assert_eq!(
            d.to_string(),
            "k.conf:1:1: warning: (a 10-byte word, not shown): unknown keyword; ignored"
        );
    }

    #[test]
    fn parameters_feed_the_grammar() {
        let (nodes, diags) = parse_text(
            "$VIP=10.0.0.1\nvirtual_server $VIP 80 {\n  ~SEQ(N, 2) real_server 10.1.1.$N 80\n}\n",
        );
        assert!(diags.is_empty(), "{diags:?}");
        assert_eq!(nodes.len(), 1);
        assert_eq!(nodes[0].args, ["10.0.0.1", "80"]);
        let reals: Vec<_> = nodes[0]
            .children
            .as_ref()
            .unwrap()
            .iter()
            .map(|n| n.args[0].clone())
            .collect();
        assert_eq!(reals, ["10.1.1.1", "10.1.1.2"]);
        // The real servers are located at the ~SEQ line.
        assert_eq!(nodes[0].children.as_ref().unwrap()[1].loc.line, 3);
    }
}
