//! `lb adm ARGS…` (and `lbadm ARGS…`, the same binary through a link):
//! ipvsadm's command line over lb. Listings read the pinned maps (as
//! `lb list`); changes go to the running agent's runtime layer through the
//! API (`POST /v1/runtime`), which checks them as ipvs does and answers with
//! ipvs's errors. The socket and pin directory are the defaults, or those
//! in `LB_SOCKET` / `LB_BPFFS` (ipvsadm's syntax has no room for options of
//! lb's own).
//!
//! Exit codes as ipvsadm's: 0 done; 2 a bad command line (or, here, what
//! lb does not implement); 255 the table refused the change (ipvs's
//! error), an unknown option, or no command; 1 a listing of a service that
//! does not exist.

pub mod args;
pub mod names;
pub mod render;

use std::{
    io::{BufRead as _, Read as _, Write as _},
    path::{Path, PathBuf},
    time::Duration,
};

use args::{Cmd, Failure, Invocation, Parsed};
use render::Format;

use crate::{
    api,
    dataplane::Dataplane,
    list,
    runtime::{Change, RealSpec, ServiceSpec},
};

/// Where `lb adm` finds the agent.
#[derive(Clone, Debug)]
pub struct Env {
    pub socket: PathBuf,
    pub bpffs: PathBuf,
}

impl Env {
    /// `LB_SOCKET` / `LB_BPFFS`, or the defaults.
    pub fn from_env(default_socket: &str) -> Self {
        Env {
            socket: std::env::var_os("LB_SOCKET")
                .map(PathBuf::from)
                .unwrap_or_else(|| default_socket.into()),
            bpffs: std::env::var_os("LB_BPFFS")
                .map(PathBuf::from)
                .unwrap_or_else(|| lb_common::DEFAULT_BPFFS_DIR.into()),
        }
    }
}

/// What one command printed and its exit code.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub code: u8,
}

impl Outcome {
    fn ok(stdout: String) -> Self {
        Outcome {
            stdout,
            ..Default::default()
        }
    }
    fn fail(code: u8, message: impl Into<String>) -> Self {
        let mut stderr = message.into();
        if !stderr.ends_with('\n') {
            stderr.push('\n');
        }
        Outcome {
            stderr,
            code,
            ..Default::default()
        }
    }
}

impl From<Failure> for Outcome {
    fn from(f: Failure) -> Self {
        Outcome::fail(f.code, f.message)
    }
}

/// ipvsadm's answer when the table cannot be reached.
fn unreachable(what: &Path, why: impl std::fmt::Display) -> Outcome {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Outcome::fail(
            2,
            format!(
                "Can't initialize ipvs: Permission denied (you must be root)\n(lb's socket and pin directory, {}, are root-only)",
                what.display()
            ),
        );
    }
    Outcome::fail(
        2,
        format!(
            "Can't initialize ipvs: {why}\nIs `lb run` running? (its socket and pin directory: {}; set LB_SOCKET / LB_BPFFS for others)",
            what.display()
        ),
    )
}

/// The commands and options of `lb adm` (the usage text's body, also in
/// the `lb adm` man page).
pub const OPTIONS_HELP: &str = "virtual-service: --tcp-service|-t ADDR[:PORT] | --udp-service|-u ADDR[:PORT]
  (ADDR an IPv4 address or host name, or [IPv6]; PORT a number or a service name)
Commands:
  --add-service     -A        add a virtual service
  --edit-service    -E        edit a virtual service
  --delete-service  -D        delete a virtual service
  --clear           -C        clear the whole table (the configuration file's services come back at the next reload)
  --restore         -R        read rules (as -S writes them) from stdin
  --save            -S        write the table as rules to stdout
  --add-server      -a        add a real server to a virtual service
  --edit-server     -e        edit a real server
  --delete-server   -d        delete a real server
  --list            -L|-l     list the table
  --zero            -Z        zero the counters of a service or of all
  --set tcp tcpfin udp        set the connection idle timeouts (0: unchanged)
  --help            -h        this text
  --version         -v        the version
Options:
  --scheduler      -s SCHED   rr|wrr|lc|wlc|sed|nq|sh|mh|dh|fo|ovf|twos|lblc|lblcr (default wlc)
  --persistent     -p [T]     persistent service, timeout T seconds (default 360)
  --netmask        -M MASK    persistence granularity (IPv4 netmask, IPv6 prefix length)
  --sched-flags    -b FLAGS   sh-fallback, sh-port, mh-fallback, mh-port (comma-separated)
  --real-server    -r ADDR[:PORT]
  --gatewaying     -g         direct routing (default)
  --ipip           -i         IPIP / IPv6 tunnel
  --masquerading   -m         NAT
  --weight         -w W       0 to 65535 (default 1)
  --u-threshold    -x N       upper connection threshold (0: none)
  --l-threshold    -y N       lower connection threshold
  --numeric        -n         numeric addresses and ports
  --connection     -c         list the connections (and persistence templates)
  --timeout                   list the timeouts
  --stats --rate --exact --thresholds --persistent-conn --sort --nosort
Not in lb: firewall-mark services (-f), one-packet scheduling (-o), persistence
engines (--pe), the sync daemon (--start-daemon / --stop-daemon / --daemon lists none).
The agent: LB_SOCKET (default /run/lb/lb.sock), LB_BPFFS (default /sys/fs/bpf/lb).
";

/// The usage text of `-h`.
pub fn usage(program: &str) -> String {
    format!(
        "{program}: ipvsadm's command line for lb (ipvsadm v1.31 syntax)
Usage:
  {program} -A|E virtual-service [-s scheduler] [-p [timeout]] [-M netmask] [-b sched-flags]
  {program} -D virtual-service
  {program} -C
  {program} -R
  {program} -S [-n]
  {program} -a|e virtual-service -r server-address [options]
  {program} -d virtual-service -r server-address
  {program} -L|l [virtual-service] [options]
  {program} -Z [virtual-service]
  {program} --set tcp tcpfin udp
  {program} -h

{OPTIONS_HELP}"
    )
}

/// Runs one command line (`args` without the program name). Never panics
/// on any input; prints nothing itself.
pub async fn run(program: &str, args: &[String], env: &Env) -> Outcome {
    match args::parse(program, args) {
        Err(f) => f.into(),
        Ok(Parsed::Help) => Outcome::ok(usage(program)),
        Ok(Parsed::Version) => Outcome::ok(format!(
            "{program} (lb {}) — ipvsadm v1.31 command line (IPVS v1.2.1 listings)\n",
            env!("CARGO_PKG_VERSION")
        )),
        Ok(Parsed::ListAll) => list(&list_all_invocation(), env).await,
        Ok(Parsed::Run(inv)) => match inv.cmd {
            Cmd::List => list(&inv, env).await,
            Cmd::Save => save(&inv, env),
            Cmd::Restore => restore(program, env).await,
            _ => change(&inv, env).await,
        },
    }
}

fn list_all_invocation() -> Invocation {
    match args::parse("ipvsadm", &["-L".to_string()]) {
        Ok(Parsed::Run(i)) => *i,
        _ => unreachable!("-L always parses"),
    }
}

fn format_of(inv: &Invocation) -> Format {
    Format {
        numeric: inv.numeric,
        stats: inv.stats,
        rate: inv.rate,
        thresholds: inv.thresholds,
        persistent_conn: inv.persistent_conn,
        nosort: inv.nosort,
        exact: inv.exact,
        rule: false,
    }
}

fn open(env: &Env) -> Result<Dataplane, Outcome> {
    let dp = Dataplane::from_pins(&env.bpffs)
        .map_err(|e| unreachable(&env.bpffs, crate::util::chain(&e)))?;
    if crate::agent::exclusive::holder(&env.bpffs).is_none() {
        // As `lb list`: pins without an agent are a table nobody keeps.
        eprintln!(
            "lb: warning: no agent is running on {}: this table is not being maintained",
            env.bpffs.display()
        );
    }
    Ok(dp)
}

async fn list(inv: &Invocation, env: &Env) -> Outcome {
    let dp = match open(env) {
        Ok(dp) => dp,
        Err(o) => return o,
    };
    let f = format_of(inv);
    let has = |o: args::Opt| inv.opts.contains(&o);
    if has(args::Opt::Timeout) {
        return Outcome::ok(render::timeout(&dp.timeouts_in_effect()));
    }
    if has(args::Opt::Daemon) {
        // No sync daemon runs in lb (yet): ipvsadm lists none then.
        return Outcome::ok(String::new());
    }
    let snap = match list::snapshot(&dp, has(args::Opt::Connection)) {
        Ok(s) => s,
        Err(e) => return unreachable(&env.bpffs, crate::util::chain(&e)),
    };
    if has(args::Opt::Connection) {
        return Outcome::ok(render::conns(&snap, &f));
    }
    let sample = if f.rate {
        // ipvs estimates rates over seconds; lb samples one second.
        tokio::time::sleep(Duration::from_secs(1)).await;
        match list::snapshot(&dp, false) {
            Ok(after) => Some(after),
            Err(e) => return unreachable(&env.bpffs, crate::util::chain(&e)),
        }
    } else {
        None
    };
    let (shown, before) = match &sample {
        Some(after) => (after, Some((&snap, Duration::from_secs(1)))),
        None => (&snap, None),
    };
    if inv.fwmark.is_some() {
        return Outcome::fail(1, "No such service");
    }
    if let Some(svc) = &inv.service {
        let found = shown
            .services
            .iter()
            .any(|s| s.addr == svc.addr && s.port == svc.port && s.proto == svc.proto.number());
        if !found {
            return Outcome::fail(1, "No such service");
        }
        let mut out = render::title(&f);
        out.push_str(&render::services(shown, &f, Some(svc), before));
        return Outcome::ok(out);
    }
    let mut out = render::header(shown.conn_table_size);
    out.push_str(&render::title(&f));
    out.push_str(&render::services(shown, &f, None, before));
    Outcome::ok(out)
}

fn save(inv: &Invocation, env: &Env) -> Outcome {
    let dp = match open(env) {
        Ok(dp) => dp,
        Err(o) => return o,
    };
    let snap = match list::snapshot(&dp, false) {
        Ok(s) => s,
        Err(e) => return unreachable(&env.bpffs, crate::util::chain(&e)),
    };
    let f = Format {
        numeric: inv.numeric,
        rule: true,
        ..Default::default()
    };
    Outcome::ok(render::services(&snap, &f, None, None))
}

/// What lb refuses that ipvs has, before anything is sent.
fn not_in_lb(inv: &Invocation) -> Option<Outcome> {
    let has = |o: args::Opt| inv.opts.contains(&o);
    let why = if inv.fwmark.is_some() {
        "firewall-mark services (-f) are not supported: XDP runs before netfilter sets marks; use -t / -u"
    } else if has(args::Opt::Ops) {
        "one-packet scheduling (-o / --ops) is not implemented: every UDP flow is tracked"
    } else if has(args::Opt::Pe) {
        "persistence engines (--pe) are not implemented: persistence is per client address (-M for a netmask)"
    } else if matches!(inv.cmd, Cmd::Add | Cmd::Edit) && inv.service.is_some_and(|s| s.port == 0) {
        "port 0 (every port of the address) is not supported: lb's data plane selects a service by address, protocol and port; add one service per port"
    } else if matches!(inv.cmd, Cmd::StartDaemon | Cmd::StopDaemon) {
        "the connection synchronisation daemon is not implemented yet"
    } else if inv.tun_type.as_deref().is_some_and(|t| t != "ipip") || !inv.tun_other.is_empty() {
        "lb's tunnels are IPIP / IPv6-in-IPv6 only (--tun-type ipip, no GUE / GRE options)"
    } else if inv.weight > crate::config::MAX_WEIGHT {
        return Some(Outcome::fail(
            2,
            format!(
                "lb: weight {} is above {}, the largest lb's schedulers take",
                inv.weight,
                crate::config::MAX_WEIGHT
            ),
        ));
    } else if inv
        .service
        .zip(inv.server)
        .is_some_and(|(s, (a, _))| s.addr.is_ipv4() != a.is_ipv4())
    {
        "a tunnelled real of the other address family than its service is not supported (lb tunnels IPv4 in IPv4, IPv6 in IPv6)"
    } else {
        return None;
    };
    Some(Outcome::fail(2, format!("lb: {why}")))
}

/// The runtime change a command asks for.
fn change_of(inv: &Invocation) -> Result<Change, Outcome> {
    let service = inv.service;
    let need = || service.ok_or_else(|| Outcome::fail(2, "no service given"));
    let real = |inv: &Invocation| -> Result<RealSpec, Outcome> {
        let (addr, port) = inv
            .server
            .ok_or_else(|| Outcome::fail(2, "no real server given"))?;
        Ok(RealSpec {
            addr,
            port,
            fwd: inv.fwd,
            weight: inv.weight,
            u_threshold: inv.u_threshold,
            l_threshold: inv.l_threshold,
            // ipvsadm has no checkers: -a adds a real without one, and -e
            // leaves the real's checkers as they are (the runtime layer's
            // rule for an EditReal without a check).
            check: None,
        })
    };
    Ok(match inv.cmd {
        Cmd::Add | Cmd::Edit => {
            let sched = args::sched_of(inv)
                .ok_or_else(|| Outcome::fail(255, "Scheduler or persistence engine not found"))?;
            let flags = &inv.sched_flags;
            let spec = ServiceSpec {
                service: need()?,
                sched,
                hash_port: flags
                    .iter()
                    .any(|f| matches!(f.as_str(), "sh-port" | "mh-port" | "flag-2")),
                hash_fallback: flags
                    .iter()
                    .any(|f| matches!(f.as_str(), "sh-fallback" | "mh-fallback" | "flag-1")),
                persistence_timeout: inv.persistent,
                persistence_prefix: inv.persistent.and(inv.netmask).filter(|p| {
                    *p < if need().is_ok_and(|s| s.addr.is_ipv4()) {
                        32
                    } else {
                        128
                    }
                }),
            };
            if flags.iter().any(|f| f == "flag-3") {
                return Err(Outcome::fail(
                    2,
                    "lb: scheduler flag flag-3 has no meaning for lb's schedulers",
                ));
            }
            if inv.cmd == Cmd::Add {
                Change::AddService { spec }
            } else {
                Change::EditService { spec }
            }
        }
        Cmd::Del => Change::DeleteService { service: need()? },
        Cmd::Flush => Change::Flush,
        Cmd::AddDest => Change::AddReal {
            service: need()?,
            real: real(inv)?,
        },
        Cmd::EditDest => Change::EditReal {
            service: need()?,
            real: real(inv)?,
        },
        Cmd::DelDest => {
            let (addr, port) = inv
                .server
                .ok_or_else(|| Outcome::fail(2, "no real server given"))?;
            Change::DeleteReal {
                service: need()?,
                addr,
                port,
            }
        }
        Cmd::Zero => Change::Zero { service },
        Cmd::Timeout => {
            let (tcp_s, tcp_fin_s, udp_s) = inv.timeouts.unwrap_or_default();
            Change::SetTimeouts {
                tcp_s,
                tcp_fin_s,
                udp_s,
            }
        }
        Cmd::List | Cmd::Save | Cmd::Restore | Cmd::StartDaemon | Cmd::StopDaemon => {
            return Err(Outcome::fail(2, "not a change"))
        }
    })
}

async fn change(inv: &Invocation, env: &Env) -> Outcome {
    if let Some(o) = not_in_lb(inv) {
        return o;
    }
    let c = match change_of(inv) {
        Ok(c) => c,
        Err(o) => return o,
    };
    match api::client::change(&env.socket, &c).await {
        Err(e) => unreachable(&env.socket, crate::util::chain(&e)),
        Ok(reply) if reply.ok => Outcome::default(),
        Ok(reply) => match reply.error {
            Some(crate::runtime::ChangeError::Refused(why)) => {
                Outcome::fail(255, format!("lb: {why}"))
            }
            _ => Outcome::fail(255, reply.message),
        },
    }
}

/// Splits one rule line into words (blanks separate; double quotes group).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

/// Longest rule line `-R` reads, bytes (ipvsadm's lines are short).
pub const MAX_RULE_LINE: usize = 64 * 1024;

/// `-R`: each line of stdin is one command (as `-S` and ipvsadm-save
/// write them). A bad command line stops the restore (ipvsadm exits
/// there); a change the table refuses is reported and the next line
/// follows; the exit code is the last line's.
async fn restore(program: &str, env: &Env) -> Outcome {
    let mut total = Outcome::default();
    let stdin = std::io::stdin();
    let mut lock = stdin.lock();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = match (&mut lock)
            .take(MAX_RULE_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
        {
            Ok(n) => n,
            Err(e) => {
                total.stderr.push_str(&format!("reading stdin: {e}\n"));
                total.code = 1;
                return total;
            }
        };
        if n == 0 {
            break;
        }
        if buf.len() > MAX_RULE_LINE {
            total.stderr.push_str(&format!(
                "lb: a rule line longer than {MAX_RULE_LINE} bytes; restore stopped\n"
            ));
            total.code = 2;
            return total;
        }
        let line = String::from_utf8_lossy(&buf);
        let w = words(&line);
        if w.is_empty() || w[0].starts_with('#') {
            continue;
        }
        let out = match args::parse(program, &w) {
            Err(f) => {
                let o: Outcome = f.into();
                total.stderr.push_str(&o.stderr);
                total.code = o.code;
                return total;
            }
            Ok(Parsed::Run(inv)) if inv.cmd == Cmd::Restore => {
                let o: Outcome = args::tryhelp(program).into();
                total.stderr.push_str(&o.stderr);
                total.code = o.code;
                return total;
            }
            Ok(Parsed::Run(inv)) => match inv.cmd {
                Cmd::List => list(&inv, env).await,
                Cmd::Save => save(&inv, env),
                _ => change(&inv, env).await,
            },
            Ok(Parsed::ListAll) => list(&list_all_invocation(), env).await,
            Ok(Parsed::Help) => Outcome::ok(usage(program)),
            Ok(Parsed::Version) => Outcome::default(),
        };
        total.stdout.push_str(&out.stdout);
        total.stderr.push_str(&out.stderr);
        total.code = out.code;
    }
    total
}

/// Prints an outcome and gives its exit code (a closed stdout is not an
/// error).
pub fn emit(o: &Outcome) -> std::process::ExitCode {
    let _ = std::io::stdout().lock().write_all(o.stdout.as_bytes());
    let _ = std::io::stderr().lock().write_all(o.stderr.as_bytes());
    std::process::ExitCode::from(o.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_lines_split_as_ipvsadm_reads_them() {
        assert_eq!(
            words("-A -t 10.0.0.1:80 -s rr\n"),
            ["-A", "-t", "10.0.0.1:80", "-s", "rr"]
        );
        assert_eq!(words("  -a  \"-t\" x  "), ["-a", "-t", "x"]);
        assert!(words(" \t\n").is_empty());
    }

    #[test]
    fn what_lb_does_not_have_is_refused_not_ignored() {
        let inv = |line: &str| match args::parse(
            "ipvsadm",
            &line
                .split_whitespace()
                .map(String::from)
                .collect::<Vec<_>>(),
        ) {
            Ok(Parsed::Run(i)) => *i,
            other => panic!("{other:?}"),
        };
        for line in [
            "-A -f 1 -s rr",
            "-A -u 1.2.3.4:53 -o",
            "-A -t 1.2.3.4:80 -p --pe sip",
            "--start-daemon master",
        ] {
            let o = not_in_lb(&inv(line)).unwrap_or_else(|| panic!("{line} accepted"));
            assert_eq!(o.code, 2, "{line}");
            assert!(o.stderr.starts_with("lb: "), "{line}: {}", o.stderr);
        }
        let o = change_of(&inv("-A -t 1.2.3.4:80 -s nope")).unwrap_err();
        assert_eq!(
            (o.code, o.stderr.as_str()),
            (255, "Scheduler or persistence engine not found\n")
        );
        match change_of(&inv(
            "-A -t 1.2.3.4:80 -s sh -b sh-fallback,sh-port -p 60 -M 255.255.255.0",
        ))
        .unwrap()
        {
            Change::AddService { spec } => {
                assert!(spec.hash_port && spec.hash_fallback);
                assert_eq!(
                    (spec.persistence_timeout, spec.persistence_prefix),
                    (Some(60), Some(24))
                );
            }
            c => panic!("{c:?}"),
        }
    }
}
