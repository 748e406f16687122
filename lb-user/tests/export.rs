//! `lb export` reproduces the configuration: for every keepalived.conf the
//! repository's tests and seeds use, reading the export back gives the
//! same model (`lb check-config --dump`, source locations aside). Any
//! difference is a bug of the export: what keepalived.conf cannot say is
//! listed in `config::export`'s documentation and is not in these files.
//!
//! The files: `tests/corpus/valid/`, the package's example, the Piranha
//! import fixtures, the seed documents' configuration blocks, and every
//! configuration written as a string in the tests' sources (the namespace
//! tests, the BPF fixtures, lb-user's own unit and integration tests) that
//! has no placeholder other than the lab's addresses and loads without
//! errors (many are deliberately broken: those test the reader).

use std::path::{Path, PathBuf};

use lb_user::config::{dump::dump, export::keepalived_conf, load, load_str, Config};
use serde_json::Value;

fn without_locations(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("location");
            m.values_mut().for_each(without_locations);
        }
        Value::Array(a) => a.iter_mut().for_each(without_locations),
        _ => {}
    }
}

/// Exports `c`, reads it back and compares the dumps; the difference
/// (with the export) if any.
fn mismatch(c: &Config) -> Option<String> {
    let text = keepalived_conf(c);
    let back = load_str(&text, Path::new("/tmp/exported.conf"));
    let errors: Vec<String> = back.errors().map(ToString::to_string).collect();
    if !errors.is_empty() {
        return Some(format!("the export does not load: {errors:#?}\n{text}"));
    }
    let (mut a, mut b) = (dump(c), dump(&back.config));
    without_locations(&mut a);
    without_locations(&mut b);
    if a == b {
        return None;
    }
    let (a, b) = (
        serde_json::to_string_pretty(&a).unwrap(),
        serde_json::to_string_pretty(&b).unwrap(),
    );
    let diff: Vec<String> = a
        .lines()
        .zip(b.lines())
        .enumerate()
        .filter(|(_, (x, y))| x != y)
        .take(10)
        .map(|(i, (x, y))| format!("dump line {}: {x}  |  {y}", i + 1))
        .collect();
    Some(format!("{diff:#?}\n{text}"))
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_configuration_file_of_the_repository_round_trips() {
    let mut files = files_in(&manifest().join("tests/corpus/valid"), "conf");
    files.push(manifest().join("pkg/keepalived.conf"));
    files.extend(files_in(&manifest().join("tests/fixtures/lvscf"), "conf"));
    assert!(files.len() >= 10, "{files:?}");
    for f in &files {
        let l = load(f);
        let errors: Vec<String> = l.errors().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
        if let Some(m) = mismatch(&l.config) {
            panic!("{}: {m}", f.display());
        }
    }
}

#[test]
fn every_seed_configuration_round_trips() {
    let mut checked = 0;
    for prefix in ["000", "001", "002", "003", "004"] {
        let (path, blocks) = lb_tests::seeds::config_of(prefix);
        let l = load_str(&blocks, &path);
        let errors: Vec<String> = l.errors().map(ToString::to_string).collect();
        assert!(errors.is_empty(), "seed {prefix}: {errors:#?}");
        if l.config.services.is_empty() && l.config.vrrp.instances.is_empty() {
            continue; // seed 003 has no keepalived configuration
        }
        if let Some(m) = mismatch(&l.config) {
            panic!("seed {prefix}: {m}");
        }
        checked += 1;
    }
    assert_eq!(checked, 4, "seeds with a configuration");
}

/// The string literals of a Rust source (`"…"` with escapes, `r"…"`,
/// `r#"…"#`), as their values.
fn literals(src: &str) -> Vec<String> {
    let b: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        // Comments: skip to the end of the line (a `"` there is prose).
        if b[i] == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
            continue;
        }
        // Character literals such as '"' and '{'.
        if b[i] == '\'' {
            if b.get(i + 1) == Some(&'\\') && b.get(i + 3) == Some(&'\'') {
                i += 4;
                continue;
            }
            if b.get(i + 2) == Some(&'\'') {
                i += 3;
                continue;
            }
        }
        if b[i] == 'r' && (b.get(i + 1) == Some(&'"') || b.get(i + 1) == Some(&'#')) {
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) == Some(&'"') && (i == 0 || !b[i - 1].is_alphanumeric()) {
                let start = j + 1;
                let mut k = start;
                loop {
                    if k >= b.len() {
                        return out;
                    }
                    if b[k] == '"' && (0..hashes).all(|h| b.get(k + 1 + h) == Some(&'#')) {
                        break;
                    }
                    k += 1;
                }
                out.push(b[start..k].iter().collect());
                i = k + 1 + hashes;
                continue;
            }
        }
        if b[i] == '"' {
            let mut s = String::new();
            let mut k = i + 1;
            while k < b.len() && b[k] != '"' {
                if b[k] == '\\' {
                    k += 1;
                    match b.get(k) {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('"') => s.push('"'),
                        Some('\\') => s.push('\\'),
                        Some('\'') => s.push('\''),
                        Some('0') => s.push('\0'),
                        Some('\n') => {
                            // A continuation: the next line's leading blanks go.
                            while b.get(k + 1).is_some_and(|c| c.is_whitespace()) {
                                k += 1;
                            }
                        }
                        Some(c) => {
                            s.push('\\');
                            s.push(*c);
                        }
                        None => {}
                    }
                } else {
                    s.push(b[k]);
                }
                k += 1;
            }
            out.push(s);
            i = k + 1;
            continue;
        }
        i += 1;
    }
    out
}

/// A format string's text with the lab's addresses put in, `{{` / `}}`
/// unescaped; `None` when it has another placeholder.
fn fill(lit: &str) -> Option<String> {
    let known = [
        ("VIP", lb_tests::VIP),
        ("VIP6", lb_tests::VIP6),
        ("CLIENT_IP", lb_tests::CLIENT_IP),
        ("DIRECTOR_IP", lb_tests::DIRECTOR_IP),
        ("r1", "10.200.0.11"),
        ("r2", "10.200.0.12"),
        ("R1", "10.200.0.11"),
        ("R2", "10.200.0.12"),
        ("R1_6", "fd00:200::11"),
        ("vip", lb_tests::VIP),
        // Settings some tests vary: one value each is enough here.
        ("algo", "wrr"),
        ("port", "80"),
        ("extra", ""),
        ("TIMING", ""),
    ];
    let mut out = String::new();
    let mut rest = lit;
    while let Some(i) = rest.find(['{', '}']) {
        out.push_str(&rest[..i]);
        let r = &rest[i..];
        if r.starts_with("{{") || r.starts_with("}}") {
            out.push_str(&r[..1]);
            rest = &r[2..];
            continue;
        }
        if r.starts_with('}') {
            return None;
        }
        let end = r.find('}')?;
        let name = &r[1..end];
        let (_, v) = known.iter().find(|(k, _)| *k == name)?;
        out.push_str(v);
        rest = &r[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.filter_map(Result::ok) {
        let p = e.path();
        if p.is_dir() {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_configuration_written_in_the_tests_round_trips() {
    let root = manifest().join("..");
    let mut sources = Vec::new();
    for d in [
        "tests/tests",
        "tests/src",
        "testkit",
        "lb-user/src",
        "lb-user/tests",
    ] {
        rust_sources(&root.join(d), &mut sources);
    }
    sources.sort();
    let (mut checked, mut failures) = (0, Vec::new());
    for src in &sources {
        let text = std::fs::read_to_string(src).unwrap();
        for lit in literals(&text) {
            if !(lit.contains("virtual_server") || lit.contains("vrrp_instance")) {
                continue;
            }
            let is_format = lit.contains("{{") || lit.contains("}}");
            let conf = if is_format {
                fill(&lit)
            } else {
                Some(lit.clone())
            };
            let Some(conf) = conf else { continue };
            let l = load_str(&conf, Path::new("/etc/keepalived/keepalived.conf"));
            if l.has_errors()
                || (l.config.services.is_empty() && l.config.vrrp.instances.is_empty())
            {
                continue;
            }
            checked += 1;
            if let Some(m) = mismatch(&l.config) {
                failures.push(format!(
                    "{}: {m}\n--- configuration:\n{conf}",
                    src.display()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    // Enough of them are found that the harvest is known to work.
    assert!(checked >= 40, "only {checked} configurations found");
    eprintln!("{checked} configurations written in the tests round-trip");
}
