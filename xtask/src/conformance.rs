//! `cargo xtask conformance`: one script of ipvsadm command lines
//! (`tests/conformance/script.txt`) played against real ipvsadm in the ipvs
//! VM (crate::vm) and against `lb adm`, compared step by step.
//!
//! - The reference: ipvsadm's stdout, stderr and exit status of every step,
//!   kept in `tests/conformance/ipvsadm/golden.json` (and a transcript for
//!   reading, `transcript.txt`).
//! - The lb side: an agent started with no configuration file (an empty
//!   table) on a veth in a network namespace of this machine (lb's XDP
//!   program needs a newer verifier than the VM kernel's; `--lb-in-vm`
//!   plays it in the VM where one can), `lb adm ARGS…` for each step with
//!   `LB_SOCKET` / `LB_BPFFS` naming it.
//! - The comparison (see [`compare`]): exit statuses always; stdout exactly,
//!   except the listings that print counters, rates or connections (`-L`
//!   with `--stats`, `--rate` or `-c`), compared by layout with numbers
//!   masked; stderr exactly. Each difference is either explained by an
//!   entry of `tests/conformance/expected-diffs.toml` (with its reason) or
//!   makes the command fail. `tests/conformance/REPORT.md` lists them all.
use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _};
use serde::{Deserialize, Serialize};

use crate::{
    setup,
    util::{cargo, exec, output, root},
    vm::{tail, Vm},
};

/// Packages the conformance run needs on the host (the VM runs the host's
/// files): the VM's, plus iproute2 for the agent's veth.
const PACKAGES: &[(&str, &str)] = &[("ip", "iproute2")];

/// How long one step may run before it is killed (its exit is then null).
const STEP_LIMIT: Duration = Duration::from_secs(60);

/// The directory of the script, its inputs, the golden files and the report.
pub fn dir() -> PathBuf {
    root().join("tests/conformance")
}

#[derive(clap::Args, Debug)]
pub struct Options {
    /// Only record ipvsadm (refreshes the golden file); no lb side, no diff.
    #[arg(long, conflicts_with_all = ["lb_only", "diff_only"])]
    pub ipvsadm_only: bool,
    /// Keep the committed golden file; play only `lb adm` in the VM.
    #[arg(long, conflicts_with = "diff_only")]
    pub lb_only: bool,
    /// Play nothing: compare the last lb record (target/conformance/lb.json)
    /// with the golden file and write the report.
    #[arg(long)]
    pub diff_only: bool,
    /// The lb binary (default: build lb-user and use target/debug/lb).
    #[arg(long)]
    pub lb: Option<PathBuf>,
    /// Play `lb adm` in the VM too (the same boot as ipvsadm) instead of in
    /// a network namespace on this machine. lb's XDP program needs a newer
    /// verifier than the VM kernel's (6.1), so this is for a VM kernel that
    /// has one.
    #[arg(long, conflicts_with = "diff_only")]
    pub lb_in_vm: bool,
    /// Arguments of the agent after `lb`; IFACE, STATE, SOCKET, BPFFS are
    /// replaced by its veth, state directory, socket and bpffs path.
    /// The connection table is sized as ipvs's in the VM (4,096: its
    /// default `conn_tab_bits` 12), the `size=` every listing's first line
    /// shows. No configuration file: the agent starts with an empty table (where
    /// the host has /etc/keepalived/keepalived.conf, which `lb run` would
    /// read, an empty file is named instead).
    #[arg(
        long,
        default_value = "run --iface IFACE --state-dir STATE --socket SOCKET --bpffs BPFFS \
                         --conntrack-size 4096"
    )]
    pub agent_args: String,
}

/// Hidden: plays the script with one program (run inside the VM).
#[derive(clap::Args, Debug)]
pub struct PlayOptions {
    /// The script to play.
    #[arg(long)]
    pub script: PathBuf,
    /// Where `< NAME` finds files no earlier step kept.
    #[arg(long)]
    pub inputs: PathBuf,
    /// Where kept files (`> NAME`) go.
    #[arg(long)]
    pub work: PathBuf,
    /// The record (JSON) to write.
    #[arg(long)]
    pub out: PathBuf,
    /// What the record calls the program (`ipvsadm`, `lb adm`).
    #[arg(long)]
    pub label: String,
    /// KEY=VALUE set in each step's environment (repeat).
    #[arg(long = "env")]
    pub env: Vec<String>,
    /// The program and its leading arguments (`ipvsadm`, `/…/lb adm`).
    #[arg(last = true, required = true)]
    pub program: Vec<String>,
}

/// One step of the script: the words after `ipvsadm` on one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The `## TITLE` above it ("" before the first).
    pub section: String,
    /// 1-based line number in the script.
    pub line: usize,
    /// The line as written, redirections included.
    pub cmd: String,
    /// The arguments (redirections removed).
    pub args: Vec<String>,
    /// `< NAME`: the step's standard input.
    pub stdin: Option<String>,
    /// `> NAME`: keep the step's stdout under that name.
    pub keep: Option<String>,
}

/// Reads the script format described at the top of `script.txt`.
pub fn parse_script(text: &str) -> anyhow::Result<Vec<Step>> {
    let mut section = String::new();
    let mut steps = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if let Some(title) = line.strip_prefix("##") {
            section = title.trim().to_string();
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words: Vec<&str> = line.split_whitespace().collect();
        let mut stdin = None;
        let mut keep = None;
        while words.len() >= 2 {
            let (op, name) = (words[words.len() - 2], words[words.len() - 1]);
            let slot = match op {
                "<" => &mut stdin,
                ">" => &mut keep,
                _ => break,
            };
            if slot.is_some() || name.contains('/') {
                bail!("script line {}: bad redirection in {line:?}", i + 1);
            }
            *slot = Some(name.to_string());
            words.truncate(words.len() - 2);
        }
        if words.iter().any(|w| *w == "<" || *w == ">") {
            bail!(
                "script line {}: a redirection must end the line: {line:?}",
                i + 1
            );
        }
        steps.push(Step {
            section: section.clone(),
            line: i + 1,
            cmd: line.to_string(),
            args: words.iter().map(|w| w.to_string()).collect(),
            stdin,
            keep,
        });
    }
    if steps.is_empty() {
        bail!("the script has no step");
    }
    Ok(steps)
}

/// What one program did for one step.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Outcome {
    pub section: String,
    pub line: usize,
    /// The script line (arguments after the program, redirections).
    pub cmd: String,
    /// Exit status; null when the step was killed (ran past a minute, or
    /// died of a signal).
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A whole run of the script with one program.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// `ipvsadm` or `lb adm`.
    pub program: String,
    /// Where it ran: the VM kernel's `uname -r`.
    pub kernel: String,
    /// When (UTC).
    pub date: String,
    pub steps: Vec<Outcome>,
}

impl Record {
    pub fn read(path: &Path) -> anyhow::Result<Record> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

fn run_step(
    program: &[String],
    env: &[(String, String)],
    step: &Step,
    stdin: Option<&Path>,
    work: &Path,
) -> anyhow::Result<Outcome> {
    let out_path = work.join(".stdout");
    let err_path = work.join(".stderr");
    let mut cmd = Command::new(&program[0]);
    cmd.args(&program[1..])
        .args(&step.args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .stdin(match stdin {
            Some(p) => Stdio::from(
                std::fs::File::open(p).with_context(|| format!("opening {}", p.display()))?,
            ),
            None => Stdio::null(),
        });
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", program[0]))?;
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if start.elapsed() > STEP_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let read = |p: &Path| -> anyhow::Result<String> {
        let mut s = Vec::new();
        std::fs::File::open(p)?.read_to_end(&mut s)?;
        Ok(String::from_utf8_lossy(&s).into_owned())
    };
    Ok(Outcome {
        section: step.section.clone(),
        line: step.line,
        cmd: step.cmd.clone(),
        exit: status.and_then(|s| s.code()),
        stdout: read(&out_path)?,
        stderr: read(&err_path)?,
    })
}

/// `conformance-play`: every step in order, one record.
pub fn play(opts: PlayOptions) -> anyhow::Result<()> {
    let steps = parse_script(&std::fs::read_to_string(&opts.script)?)?;
    let env: Vec<(String, String)> = opts
        .env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("--env {kv}: not KEY=VALUE"))
        })
        .collect::<anyhow::Result<_>>()?;
    std::fs::create_dir_all(&opts.work)?;
    let mut kept: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut outcomes = Vec::new();
    for step in &steps {
        let stdin = step.stdin.as_ref().map(|name| {
            kept.get(name)
                .cloned()
                .unwrap_or_else(|| opts.inputs.join(name))
        });
        let o = run_step(&opts.program, &env, step, stdin.as_deref(), &opts.work)?;
        eprintln!(
            "{} {}: exit {}",
            opts.label,
            step.cmd,
            o.exit.map_or("killed".into(), |c| c.to_string())
        );
        if let Some(name) = &step.keep {
            let p = opts.work.join(name);
            std::fs::write(&p, &o.stdout)?;
            kept.insert(name.clone(), p);
        }
        outcomes.push(o);
    }
    let uname = output(Command::new("uname").arg("-r")).unwrap_or_default();
    let record = Record {
        program: opts.label,
        kernel: uname.trim().to_string(),
        date: utc_now(),
        steps: outcomes,
    };
    std::fs::write(&opts.out, serde_json::to_string_pretty(&record)? + "\n")?;
    Ok(())
}

fn utc_now() -> String {
    output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// The human-readable form of a record: each step as a shell session would
/// show it.
pub fn transcript(r: &Record) -> String {
    let mut s = format!(
        "# {} on kernel {}, {} (generated from golden.json)\n",
        r.program, r.kernel, r.date
    );
    let mut section = None;
    for o in &r.steps {
        if section != Some(&o.section) {
            s.push_str(&format!("\n## {}\n", o.section));
            section = Some(&o.section);
        }
        s.push_str(&format!("\n$ ipvsadm {}\n", o.cmd));
        s.push_str(&o.stdout);
        for l in o.stderr.lines() {
            s.push_str(&format!("[stderr] {l}\n"));
        }
        s.push_str(&format!(
            "[exit {}]\n",
            o.exit.map_or("killed".into(), |c| c.to_string())
        ));
    }
    s
}

/// How a step's stdout is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Byte for byte.
    Exact,
    /// Line for line with every number masked (same width kept): counters,
    /// rates and connection expiry differ run to run, the layout does not.
    Layout,
}

/// `-L`/`-l` with `--stats`, `--rate` or `-c` (connections) is compared by
/// layout; everything else (`-Ln`, `--timeout`, `-S`, …) exactly.
pub fn stdout_mode(args: &[String]) -> Mode {
    let mut short = String::new();
    let mut long = Vec::new();
    for a in args {
        if let Some(l) = a.strip_prefix("--") {
            long.push(l);
        } else if let Some(s) = a.strip_prefix('-') {
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphabetic()) {
                short.push_str(s);
            }
        }
    }
    let list = short.contains(['L', 'l']) || long.contains(&"list");
    let volatile = short.contains('c')
        || long
            .iter()
            .any(|l| matches!(*l, "stats" | "rate" | "connection"));
    if list && volatile {
        Mode::Layout
    } else {
        Mode::Exact
    }
}

/// A number as ipvsadm lists it: digits with an optional K/M/G/T unit
/// (`--stats` without `--exact`), or a connection's `MM:SS` expiry.
fn is_number(w: &str) -> bool {
    let digits = w.trim_end_matches(['K', 'M', 'G', 'T']);
    let plain = !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit());
    let expiry = w.split_once(':').is_some_and(|(m, s)| {
        !m.is_empty()
            && s.len() == 2
            && m.chars().all(|c| c.is_ascii_digit())
            && s.chars().all(|c| c.is_ascii_digit())
    });
    plain || expiry
}

/// Replaces every number (see `is_number`) by as many `#`, so positions stay.
pub fn mask(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let mut word = String::new();
        let flush = |word: &mut String, out: &mut String| {
            if is_number(word) {
                out.extend(std::iter::repeat_n('#', word.chars().count()));
            } else {
                out.push_str(word);
            }
            word.clear();
        };
        for c in line.chars() {
            if c.is_whitespace() {
                flush(&mut word, &mut out);
                out.push(c);
            } else {
                word.push(c);
            }
        }
        flush(&mut word, &mut out);
    }
    out
}

/// The parts of a step that can differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    Exit,
    Stdout,
    Stderr,
}

/// One entry of expected-diffs.toml: a difference lb keeps on purpose.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// The script line, exactly as written.
    pub cmd: String,
    /// Only in this section (default: wherever the line occurs).
    pub section: Option<String>,
    /// Which parts may differ.
    pub parts: Vec<Part>,
    /// Why lb must differ here (printed in the report).
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectedFile {
    #[serde(default)]
    diff: Vec<Expected>,
}

/// Reads expected-diffs.toml; every entry needs a reason.
pub fn read_expected(text: &str) -> anyhow::Result<Vec<Expected>> {
    let f: ExpectedFile = toml::from_str(text).context("expected-diffs.toml")?;
    for e in &f.diff {
        if e.reason.trim().is_empty() {
            bail!("expected-diffs.toml: `{}` has no reason", e.cmd);
        }
        if e.parts.is_empty() {
            bail!("expected-diffs.toml: `{}` names no part", e.cmd);
        }
    }
    Ok(f.diff)
}

/// The comparison of one step.
#[derive(Debug, Clone)]
pub struct StepDiff {
    /// Index in the script's steps.
    pub index: usize,
    pub mode: Mode,
    /// The parts that differ.
    pub parts: Vec<Part>,
    /// The expected-diffs entry explaining them, if one covers all.
    pub reason: Option<String>,
    /// Parts that differ and no entry explains.
    pub unexplained: Vec<Part>,
}

/// Compares two records step by step. Fails when they are not of the same
/// script (different steps), so a stale golden file is caught.
pub fn compare(
    steps: &[Step],
    reference: &Record,
    lb: &Record,
    expected: &[Expected],
) -> anyhow::Result<(Vec<StepDiff>, Vec<usize>)> {
    for (name, r) in [("the golden file", reference), ("the lb record", lb)] {
        let same =
            r.steps.len() == steps.len() && r.steps.iter().zip(steps).all(|(o, s)| o.cmd == s.cmd);
        if !same {
            bail!(
                "{name} ({}) was not made from this script: record it again",
                r.program
            );
        }
    }
    let mut used = vec![false; expected.len()];
    let mut diffs = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let (a, b) = (&reference.steps[i], &lb.steps[i]);
        let mode = stdout_mode(&step.args);
        let mut parts = Vec::new();
        if a.exit != b.exit {
            parts.push(Part::Exit);
        }
        let same_stdout = match mode {
            Mode::Exact => a.stdout == b.stdout,
            Mode::Layout => mask(&a.stdout) == mask(&b.stdout),
        };
        if !same_stdout {
            parts.push(Part::Stdout);
        }
        if a.stderr != b.stderr {
            parts.push(Part::Stderr);
        }
        let entry = expected.iter().position(|e| {
            e.cmd == step.cmd && e.section.as_ref().is_none_or(|s| *s == step.section)
        });
        let mut reason = None;
        let mut unexplained = parts.clone();
        if let Some(k) = entry {
            used[k] = true;
            unexplained.retain(|p| !expected[k].parts.contains(p));
            if !parts.is_empty() {
                reason = Some(expected[k].reason.clone());
            }
        }
        diffs.push(StepDiff {
            index: i,
            mode,
            parts,
            reason,
            unexplained,
        });
    }
    let stale = used
        .iter()
        .enumerate()
        .filter(|(_, u)| !**u)
        .map(|(k, _)| k)
        .collect();
    Ok((diffs, stale))
}

fn exit_str(e: Option<i32>) -> String {
    e.map_or("killed".into(), |c| c.to_string())
}

fn fenced_diff(a: &str, b: &str, left: &str, right: &str) -> String {
    let d = similar::TextDiff::from_lines(a, b);
    let body = d
        .unified_diff()
        .context_radius(3)
        .header(left, right)
        .to_string();
    format!("```diff\n{}```\n", body.replace("```", "`\u{200b}``"))
}

/// The Markdown report.
pub fn report(
    steps: &[Step],
    reference: &Record,
    lb: &Record,
    expected: &[Expected],
    diffs: &[StepDiff],
    stale: &[usize],
) -> String {
    let differ = diffs.iter().filter(|d| !d.parts.is_empty()).count();
    let unexplained = diffs.iter().filter(|d| !d.unexplained.is_empty()).count();
    let mut s = String::from("# Conformance: ipvsadm and `lb adm`, step by step\n\n");
    s.push_str(&format!(
        "Written by `cargo xtask conformance` from `tests/conformance/script.txt` \
         ({} steps). Reference: {} on Linux {} in the ipvs VM, recorded {} \
         (`ipvsadm/golden.json`). lb: {} on Linux {}, run {}.\n\n",
        steps.len(),
        reference.program,
        reference.kernel,
        reference.date,
        lb.program,
        lb.kernel,
        lb.date
    ));
    s.push_str(&format!(
        "**{} steps: {} identical, {} different with a reason \
         (`expected-diffs.toml`), {} unexplained.**\n\n",
        steps.len(),
        steps.len() - differ,
        differ - unexplained,
        unexplained
    ));
    s.push_str(
        "Compared per step: the exit status; stdout byte for byte, except `-L` listings \
         with `--stats`, `--rate` or `-c`, compared by layout (every number replaced by \
         as many `#`: header lines and column positions must match, values need not); \
         stderr byte for byte.\n\n",
    );
    s.push_str(
        "Not covered: connection entries and non-zero counters (no traffic is sent, so \
         `-Lnc` compares its header lines only and every counter and rate is 0), \
         firewall-mark services (`-f`, which lb does not have).\n\n",
    );
    if !stale.is_empty() {
        s.push_str("Entries of `expected-diffs.toml` that matched no difference (stale):\n\n");
        for k in stale {
            s.push_str(&format!("- `{}`\n", expected[*k].cmd));
        }
        s.push('\n');
    }
    s.push_str("## Steps\n\n| # | line | command | exit (ipvsadm / lb) | result |\n|---|---|---|---|---|\n");
    let mut section = None;
    for d in diffs {
        let step = &steps[d.index];
        if section != Some(&step.section) {
            s.push_str(&format!("| | | **{}** | | |\n", step.section));
            section = Some(&step.section);
        }
        let result = if d.parts.is_empty() {
            "same".to_string()
        } else if d.unexplained.is_empty() {
            format!("[explained](#step-{})", d.index + 1)
        } else {
            format!("[**DIFFERENT**](#step-{})", d.index + 1)
        };
        s.push_str(&format!(
            "| {} | {} | `{}` | {} / {} | {}{} |\n",
            d.index + 1,
            step.line,
            step.cmd.replace('|', "\\|"),
            exit_str(reference.steps[d.index].exit),
            exit_str(lb.steps[d.index].exit),
            result,
            if d.mode == Mode::Layout {
                " (layout)"
            } else {
                ""
            }
        ));
    }
    s.push_str("\n## Differences\n");
    if differ == 0 {
        s.push_str("\nNone.\n");
    }
    for d in diffs.iter().filter(|d| !d.parts.is_empty()) {
        let step = &steps[d.index];
        let (a, b) = (&reference.steps[d.index], &lb.steps[d.index]);
        s.push_str(&format!(
            "\n### step {}\n\n`ipvsadm {}` (line {}, {})\n\n",
            d.index + 1,
            step.cmd,
            step.line,
            step.section
        ));
        match &d.reason {
            Some(r) if d.unexplained.is_empty() => s.push_str(&format!("Reason: {}\n\n", r.trim())),
            Some(r) => s.push_str(&format!(
                "**Unexplained** ({:?}); the entry for this line covers only part of it: {}\n\n",
                d.unexplained,
                r.trim()
            )),
            None => s.push_str("**Unexplained.**\n\n"),
        }
        if d.parts.contains(&Part::Exit) {
            s.push_str(&format!(
                "exit: ipvsadm {}, lb {}\n\n",
                exit_str(a.exit),
                exit_str(b.exit)
            ));
        }
        if d.parts.contains(&Part::Stdout) {
            s.push_str(if d.mode == Mode::Layout {
                "stdout (numbers masked):\n\n"
            } else {
                "stdout:\n\n"
            });
            let (x, y) = match d.mode {
                Mode::Exact => (a.stdout.clone(), b.stdout.clone()),
                Mode::Layout => (mask(&a.stdout), mask(&b.stdout)),
            };
            s.push_str(&fenced_diff(&x, &y, "ipvsadm", "lb adm"));
            s.push('\n');
        }
        if d.parts.contains(&Part::Stderr) {
            s.push_str("stderr:\n\n");
            s.push_str(&fenced_diff(&a.stderr, &b.stderr, "ipvsadm", "lb adm"));
            s.push('\n');
        }
    }
    s
}

/// The VM job that plays the script with ipvsadm and, with `lb`, with
/// `lb adm` against an agent on a veth; records land in /tmp/out.
fn job(xtask: &Path, vm: &Vm, ipvsadm: bool, lb: Option<(&Path, &str)>) -> String {
    let d = dir();
    let play = |label: &str, out: &str, env: &str, program: &str| {
        format!(
            "'{xtask}' conformance-play --script '{script}' --inputs '{inputs}' \
             --work /tmp/work-{out} --out /tmp/out/{out}.json --label '{label}' {env} \
             -- {program} 2> /tmp/out/{out}-play.log\n",
            xtask = xtask.display(),
            script = d.join("script.txt").display(),
            inputs = d.join("inputs").display(),
        )
    };
    // Loopback up: ipvs refuses a real whose address type is not unicast,
    // and with no local routing table at all every address reads as broadcast.
    let mut j = String::from("cd /tmp\nip link set lo up\n");
    if ipvsadm {
        // ipvsadm loads ip_vs itself with the host's /sbin/modprobe, which
        // knows only the host kernel's modules: load it for the VM's kernel.
        // The schedulers load on demand (the kernel's modprobe is the VM's).
        j.push_str(&format!(
            "'{}' ip_vs || echo 'LBVM: no ip_vs'\n",
            vm.modprobe().display()
        ));
        j.push_str(&play("ipvsadm", "ipvsadm", "", "ipvsadm"));
    }
    if let Some((lb, agent_args)) = lb {
        // The agent trusts only root-only directories for its socket and
        // state (not /tmp itself): it creates these with mode 0700.
        let args = agent_args
            .replace("IFACE", "lbconf0")
            .replace("STATE", "/tmp/lb-state")
            .replace("SOCKET", "/tmp/lb/lb.sock")
            .replace("BPFFS", "/sys/fs/bpf/lb");
        j.push_str(&format!(
            "ip link add lbconf0 type veth peer name lbconf1\n\
             ip link set lbconf0 up\nip link set lbconf1 up\n\
             CONF=\n\
             if [ -e /etc/keepalived/keepalived.conf ]; then : > /tmp/empty.conf; CONF='--config /tmp/empty.conf'; fi\n\
             '{lb}' {args} $CONF > /tmp/out/lb-agent.log 2>&1 &\n\
             AGENT=$!\n\
             i=0; until '{lb}' status --socket /tmp/lb/lb.sock > /dev/null 2>&1; do\n\
               kill -0 $AGENT 2> /dev/null || {{ echo 'LBVM: the agent exited'; break; }}\n\
               i=$((i+1)); [ $i -gt 600 ] && {{ echo 'LBVM: the agent does not answer'; break; }}; sleep 0.5\n\
             done\n",
            lb = lb.display()
        ));
        j.push_str(&play(
            "lb adm",
            "lb",
            "--env LB_SOCKET=/tmp/lb/lb.sock --env LB_BPFFS=/sys/fs/bpf/lb",
            &format!("'{}' adm", lb.display()),
        ));
        j.push_str("kill -TERM $AGENT; wait $AGENT\n");
    }
    j
}

/// The lb side on this machine: an agent with no configuration file on a
/// veth (`eth0`) in a network namespace of its own, and the script played
/// inside that namespace (no route anywhere: name lookups fail at once, as
/// in the VM) with `LB_SOCKET` / `LB_BPFFS` naming the agent. Holds the
/// machine-wide namespace-test lock (`/tmp/lb-nstest.lock`) meanwhile; the
/// lab (namespace, agent, bpffs mount, files) is removed on return.
fn play_lb_on_host(
    lb: &Path,
    xtask: &Path,
    agent_args: &str,
    record: &Path,
    work: &Path,
) -> anyhow::Result<()> {
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/tmp/lb-nstest.lock")?;
    lock.lock().context("locking /tmp/lb-nstest.lock")?;
    let bins = lb_tests::Bins {
        lb: lb.to_owned(),
        nsprobe: PathBuf::new(),
        lab: PathBuf::new(),
    };
    let mut lab = lb_tests::Lab::empty(&format!("lbcf{}", std::process::id() % 1000), bins)?;
    let ns = lab.add_ns("dir")?;
    lab.exec(
        "dir",
        &[
            "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
        ],
    )?;
    lab.exec("dir", &["ip", "link", "set", "eth0", "up"])?;
    lab.exec("dir", &["ip", "link", "set", "eth0p", "up"])?;
    let socket = lab.socket_of("dir");
    let bpffs = lab.bpffs_of("dir");
    let state = lab.state_dir_of("dir");
    let mut args: Vec<String> = vec![lb.to_string_lossy().into_owned()];
    for a in agent_args.split_whitespace() {
        args.push(match a {
            "IFACE" => "eth0".into(),
            "STATE" => state.to_string_lossy().into_owned(),
            "SOCKET" => socket.to_string_lossy().into_owned(),
            "BPFFS" => bpffs.to_string_lossy().into_owned(),
            a => a.to_string(),
        });
    }
    // `lb run` reads /etc/keepalived/keepalived.conf when there is one and
    // no --config: an empty file stands in for "no file" then.
    if Path::new("/etc/keepalived/keepalived.conf").exists() {
        let empty = lab.workdir.join("empty.conf");
        std::fs::write(&empty, "")?;
        args.extend(["--config".into(), empty.to_string_lossy().into_owned()]);
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.spawn("dir", &argv, "lb")?;
    let start = Instant::now();
    loop {
        let up = Command::new(lb)
            .args(["status", "--socket"])
            .arg(&socket)
            .output()
            .is_ok_and(|o| o.status.success());
        if up {
            break;
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "the agent did not come up in a minute:\n{}",
                lab.log("dir", "lb")
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let d = dir();
    let log = work.join("lb-play.log");
    let st = Command::new("ip")
        .args(["netns", "exec", &ns])
        .arg(xtask)
        .arg("conformance-play")
        .arg("--script")
        .arg(d.join("script.txt"))
        .arg("--inputs")
        .arg(d.join("inputs"))
        .arg("--work")
        .arg(lab.workdir.join("play"))
        .arg("--out")
        .arg(record)
        .args(["--label", "lb adm", "--env"])
        .arg(format!("LB_SOCKET={}", socket.display()))
        .arg("--env")
        .arg(format!("LB_BPFFS={}", bpffs.display()))
        .arg("--")
        .arg(lb)
        .arg("adm")
        .env("LC_ALL", "C")
        .stderr(std::fs::File::create(&log)?)
        .status()?;
    std::fs::write(work.join("lb-agent.log"), lab.log("dir", "lb"))?;
    if !st.success() {
        bail!(
            "playing the script with lb adm failed ({st}); log in {}",
            log.display()
        );
    }
    Ok(())
}

/// Disables the init scripts / units a package enabled (Debian enables
/// ipvsadm's; its /etc/default keeps it from loading rules, but the
/// conformance run must leave no service behind at the next boot).
fn disable_services(names: &[&str]) {
    for n in names {
        let done = if crate::util::find_program("systemctl").is_some() {
            Command::new("systemctl")
                .args(["disable", "--quiet", n])
                .status()
        } else {
            Command::new("update-rc.d").args([n, "disable"]).status()
        };
        if !done.is_ok_and(|s| s.success()) {
            eprintln!("conformance: could not disable the {n} service; check it");
        }
    }
}

pub fn run(opts: Options) -> anyhow::Result<()> {
    let d = dir();
    let steps = parse_script(&std::fs::read_to_string(d.join("script.txt"))?)?;
    let golden = d.join("ipvsadm/golden.json");
    let work = root().join("target/conformance");
    std::fs::create_dir_all(&work)?;
    let lb_record = work.join("lb.json");

    if !opts.diff_only {
        let lb = if opts.ipvsadm_only {
            None
        } else if let Some(p) = &opts.lb {
            Some(std::fs::canonicalize(p).with_context(|| format!("--lb {}", p.display()))?)
        } else {
            exec(cargo().args(["build", "-p", "lb-user", "--bin", "lb"]))?;
            Some(root().join("target/debug/lb"))
        };
        let xtask = std::env::current_exe()?;
        let in_vm = lb.as_deref().filter(|_| opts.lb_in_vm);
        if !opts.lb_only || in_vm.is_some() {
            let mut pkgs: Vec<(&str, &str)> = setup::IPVS_PACKAGES.to_vec();
            pkgs.extend_from_slice(PACKAGES);
            let had_ipvsadm = crate::util::find_program("ipvsadm").is_some();
            setup::install_packages(&pkgs)?;
            if !had_ipvsadm {
                disable_services(&["ipvsadm"]);
            }
            let vm = Vm::prepare()?;
            let out = work.join("vm-out");
            let _ = std::fs::remove_dir_all(&out);
            let job = job(
                &xtask,
                &vm,
                !opts.lb_only,
                in_vm.map(|p| (p, opts.agent_args.as_str())),
            );
            eprintln!("conformance: booting the VM (emulated; about 10 minutes)");
            let (text, _) = vm.run("conformance", &job, Some(&out), Duration::from_secs(2400))?;
            let console = vm.dir().join("conformance-console.log");
            let fetch = |name: &str| -> anyhow::Result<Record> {
                Record::read(&out.join(name)).with_context(|| {
                    format!(
                        "no {name} from the VM (console in {}; logs in {}):\n{}",
                        console.display(),
                        out.display(),
                        tail(&text, 20)
                    )
                })
            };
            if !opts.lb_only {
                let r = fetch("ipvsadm.json")?;
                std::fs::create_dir_all(golden.parent().unwrap())?;
                std::fs::write(&golden, serde_json::to_string_pretty(&r)? + "\n")?;
                std::fs::write(d.join("ipvsadm/transcript.txt"), transcript(&r))?;
                eprintln!("conformance: ipvsadm recorded in {}", golden.display());
            }
            if in_vm.is_some() {
                let r = fetch("lb.json")?;
                std::fs::write(&lb_record, serde_json::to_string_pretty(&r)? + "\n")?;
            }
        }
        if let (Some(lb), false) = (&lb, opts.lb_in_vm) {
            eprintln!("conformance: playing lb adm in a network namespace");
            play_lb_on_host(lb, &xtask, &opts.agent_args, &lb_record, &work)?;
        }
    }
    if opts.ipvsadm_only {
        return Ok(());
    }
    let reference = Record::read(&golden)?;
    let lb = Record::read(&lb_record)?;
    let expected = read_expected(&std::fs::read_to_string(d.join("expected-diffs.toml"))?)?;
    let (diffs, stale) = compare(&steps, &reference, &lb, &expected)?;
    let text = report(&steps, &reference, &lb, &expected, &diffs, &stale);
    std::fs::write(d.join("REPORT.md"), text)?;
    let bad: Vec<String> = diffs
        .iter()
        .filter(|d| !d.unexplained.is_empty())
        .map(|d| format!("step {} `{}`", d.index + 1, steps[d.index].cmd))
        .collect();
    eprintln!(
        "conformance: {} steps, {} different, {} unexplained; report in {}",
        steps.len(),
        diffs.iter().filter(|d| !d.parts.is_empty()).count(),
        bad.len(),
        d.join("REPORT.md").display()
    );
    if !bad.is_empty() {
        bail!("unexplained differences: {}", bad.join(", "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(cmd: &str, exit: i32, stdout: &str, stderr: &str) -> Outcome {
        Outcome {
            section: "s".into(),
            line: 1,
            cmd: cmd.into(),
            exit: Some(exit),
            stdout: stdout.into(),
            stderr: stderr.into(),
        }
    }

    fn record(steps: Vec<Outcome>) -> Record {
        Record {
            program: "p".into(),
            kernel: "k".into(),
            date: "d".into(),
            steps,
        }
    }

    #[test]
    fn script_parses_sections_and_redirections() {
        let steps = parse_script(
            "# comment\n-C\n## first part\n-S -n > saved\n\n-R < saved\n## second\n-Ln\n",
        )
        .unwrap();
        assert_eq!(steps.len(), 4);
        assert_eq!(steps[0].section, "");
        assert_eq!(steps[1].section, "first part");
        assert_eq!(steps[1].args, ["-S", "-n"]);
        assert_eq!(steps[1].keep.as_deref(), Some("saved"));
        assert_eq!(steps[2].stdin.as_deref(), Some("saved"));
        assert_eq!(steps[2].args, ["-R"]);
        assert_eq!(steps[2].line, 6);
        assert_eq!(steps[3].section, "second");
        assert!(parse_script("-R < a b\n").is_err());
        assert!(parse_script("-R < ../x\n").is_err());
        assert!(parse_script("# nothing\n").is_err());
    }

    #[test]
    fn committed_script_and_golden_file_agree() {
        let steps =
            parse_script(&std::fs::read_to_string(dir().join("script.txt")).unwrap()).unwrap();
        for s in &steps {
            if let Some(name) = &s.stdin {
                let kept_before = steps
                    .iter()
                    .take_while(|t| t.line < s.line)
                    .any(|t| t.keep.as_ref() == Some(name));
                assert!(
                    kept_before || dir().join("inputs").join(name).is_file(),
                    "line {}: no input {name}",
                    s.line
                );
            }
        }
        let golden = Record::read(&dir().join("ipvsadm/golden.json")).unwrap();
        assert_eq!(golden.program, "ipvsadm");
        let cmds: Vec<&str> = golden.steps.iter().map(|o| o.cmd.as_str()).collect();
        let script: Vec<&str> = steps.iter().map(|s| s.cmd.as_str()).collect();
        assert_eq!(
            cmds, script,
            "golden.json is stale: run `cargo xtask conformance --ipvsadm-only`"
        );
        // The session commands worked in ipvsadm: the reference is sound.
        let add = golden
            .steps
            .iter()
            .find(|o| o.cmd == "-A -t 12.0.0.20:80 -s rr")
            .unwrap();
        assert_eq!(add.exit, Some(0), "{add:?}");
        read_expected(&std::fs::read_to_string(dir().join("expected-diffs.toml")).unwrap())
            .unwrap();
    }

    #[test]
    fn listings_with_counters_compare_by_layout() {
        let m = |s: &str| stdout_mode(&s.split_whitespace().map(String::from).collect::<Vec<_>>());
        assert_eq!(m("-Ln"), Mode::Exact);
        assert_eq!(m("-L --timeout -n"), Mode::Exact);
        assert_eq!(m("-S -n"), Mode::Exact);
        assert_eq!(m("-Ln --stats"), Mode::Layout);
        assert_eq!(m("-l --rate"), Mode::Layout);
        assert_eq!(m("-Lnc"), Mode::Layout);
        assert_eq!(m("-L -n -c"), Mode::Layout);
        assert_eq!(m("--list --connection"), Mode::Layout);
        // -C clears; it lists nothing.
        assert_eq!(m("-C"), Mode::Exact);
    }

    #[test]
    fn mask_keeps_positions_and_words() {
        let a = "TCP  10.0.3.1:80     12       34K       0\n  -> 10.0.3.11:80  01:59\n";
        assert_eq!(
            mask(a),
            "TCP  10.0.3.1:80     ##       ###       #\n  -> 10.0.3.11:80  #####\n"
        );
        // Same width, other values: the same layout.
        let b = "TCP  10.0.3.1:80     99       12M       7\n  -> 10.0.3.11:80  14:07\n";
        assert_eq!(mask(a), mask(b));
        // A column one place to the left is a layout difference.
        let c = "TCP  10.0.3.1:80    12        34K       0\n  -> 10.0.3.11:80  01:59\n";
        assert_ne!(mask(a), mask(c));
    }

    #[test]
    fn differences_are_found_and_explained() {
        let steps = parse_script("## s\n-v\n-Ln\n-Ln --stats\n-A -t x\n").unwrap();
        let reference = record(vec![
            outcome("-v", 0, "ipvsadm v1.31\n", ""),
            outcome("-Ln", 0, "TCP  1.2.3.4:80 rr\n", ""),
            outcome("-Ln --stats", 0, "TCP  1.2.3.4:80   10   5\n", ""),
            outcome("-A -t x", 2, "", "illegal virtual server address\n"),
        ]);
        let mut lb = reference.clone();
        lb.steps[0].stdout = "lb adm 0.1\n".into();
        lb.steps[2].stdout = "TCP  1.2.3.4:80   99   7\n".into();
        let expected = read_expected(
            "[[diff]]\ncmd = \"-v\"\nparts = [\"stdout\"]\nreason = \"another program\"\n\
             [[diff]]\ncmd = \"-C\"\nparts = [\"exit\"]\nreason = \"stale\"\n",
        )
        .unwrap();
        let (d, stale) = compare(&steps, &reference, &lb, &expected).unwrap();
        assert_eq!(d[0].parts, [Part::Stdout]);
        assert!(d[0].unexplained.is_empty());
        assert_eq!(d[0].reason.as_deref(), Some("another program"));
        assert!(d[1].parts.is_empty());
        // Counters differ, the layout does not.
        assert!(d[2].parts.is_empty(), "{:?}", d[2]);
        assert_eq!(stale, [1]);

        lb.steps[1].stdout = "TCP  1.2.3.4:80 wlc\n".into();
        lb.steps[3].exit = Some(1);
        lb.steps[3].stderr = "other\n".into();
        lb.steps[0].exit = Some(1);
        let (d, _) = compare(&steps, &reference, &lb, &expected).unwrap();
        assert_eq!(d[1].unexplained, [Part::Stdout]);
        assert_eq!(d[3].unexplained, [Part::Exit, Part::Stderr]);
        // The -v entry explains stdout only, not the exit status.
        assert_eq!(d[0].unexplained, [Part::Exit]);
        let text = report(&steps, &reference, &lb, &expected, &d, &[1]);
        assert!(text.contains(
            "4 steps: 1 identical, 0 different with a reason (`expected-diffs.toml`), 3 unexplained"
        ));
        assert!(
            text.contains("-TCP  1.2.3.4:80 rr\n+TCP  1.2.3.4:80 wlc"),
            "{text}"
        );
        assert!(text.contains("exit: ipvsadm 2, lb 1"));

        // A record of another script is refused.
        let mut short = lb.clone();
        short.steps.pop();
        assert!(compare(&steps, &reference, &short, &expected).is_err());
    }

    #[test]
    fn expected_entries_need_a_reason() {
        assert!(
            read_expected("[[diff]]\ncmd = \"-v\"\nparts = [\"stdout\"]\nreason = \" \"\n")
                .is_err()
        );
        assert!(read_expected("[[diff]]\ncmd = \"-v\"\nparts = []\nreason = \"x\"\n").is_err());
        assert!(
            read_expected("[[diff]]\ncmd = \"-v\"\nparts = [\"stdout\"]\nwhy = \"x\"\n").is_err()
        );
    }
}
