//! `lb`: XDP layer-4 load balancer agent and CLI.
use std::{io::Write as _, path::PathBuf, process::ExitCode, time::Duration};

use aya::programs::XdpMode;
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use lb_common::{Timeouts, DEFAULT_BPFFS_DIR, DEFAULT_CONNTRACK_SIZE};
use lb_user::{agent, api, config, dataplane::Dataplane, list, logging};

const DEFAULT_SOCKET: &str = "/run/lb/lb.sock";
/// keepalived's configuration file.
const DEFAULT_CONFIG: &str = "/etc/keepalived/keepalived.conf";
/// sysexits.h EX_USAGE: bad configuration.
const EX_USAGE: u8 = 64;
/// sysexits.h EX_TEMPFAIL: the agent is serving as many control
/// connections as it serves at once (503); nothing was done, try again.
const EX_TEMPFAIL: u8 = 75;
/// `lb drain`: the timeout passed with connections left (the real was
/// removed all the same); timeout(1)'s status for the same case.
const EX_DRAIN_TIMEOUT: u8 = 124;
/// `lb drain`: the agent refused it (no such service or real), as `lb adm`
/// exits on ipvs's errors.
const EX_REFUSED: u8 = 255;
/// `lb drain`: a bad service or real on the command line, as ipvsadm.
const EX_BAD_LINE: u8 = 2;

#[derive(Parser)]
#[command(
    name = "lb",
    version,
    about = "XDP layer-4 load balancer (LVS/ipvs + keepalived replacement)"
)]
struct Cli {
    /// Least severe messages logged (default info; without this option
    /// RUST_LOG's directives apply when set).
    #[arg(long, global = true, value_enum, value_name = "LEVEL")]
    log_level: Option<logging::Level>,
    /// Log lines as text or as JSON objects (on stderr; journald's priority
    /// prefix under systemd).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        value_name = "FORMAT"
    )]
    log_format: logging::Format,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum, Debug)]
enum Mode {
    /// Native (driver) XDP.
    Native,
    /// Generic (skb) XDP, for drivers without native support.
    Skb,
}

/// `lb import-lvs-cf --router`.
#[derive(Clone, Copy, ValueEnum, Debug)]
enum RouterArg {
    Primary,
    Backup,
}

#[derive(Clone, Copy, ValueEnum, Debug)]
enum RoleArg {
    Admin,
    View,
}

/// `lb run`'s web console options.
#[derive(clap::Args, Debug)]
struct WebArgs {
    /// Serve the web console on ADDR:PORT (off by default; Piranha used
    /// port 3636). Plain HTTP on a loopback address only, unless
    /// --web-insecure; give --web-cert and --web-key for HTTPS.
    #[arg(long, value_name = "ADDR:PORT")]
    web_listen: Option<std::net::SocketAddr>,
    /// PEM certificate chain for HTTPS.
    #[arg(long, value_name = "FILE", requires = "web_key")]
    web_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, value_name = "FILE", requires = "web_cert")]
    web_key: Option<PathBuf>,
    /// The console's users file (`lb passwd --file`).
    #[arg(long, value_name = "FILE", default_value = lb_user::web::users::DEFAULT_FILE)]
    web_users: PathBuf,
    /// Allow plain HTTP on an address other than loopback (passwords and
    /// sessions then cross the network in clear).
    #[arg(long)]
    web_insecure: bool,
}

/// `lb bgp`'s actions.
#[derive(Subcommand, Clone, Copy)]
enum BgpAction {
    /// Withdraw every VIP and keep them withdrawn.
    Drain,
    /// Announce again the VIPs that serve.
    Undrain,
}

#[derive(Subcommand)]
enum Cmd {
    /// Load and attach XDP, apply the configuration and run in the foreground.
    Run {
        /// Interface to attach to (repeat for several).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// keepalived.conf-syntax configuration file. Without it,
        /// /etc/keepalived/keepalived.conf is read if it exists; else the
        /// agent starts with an empty table (add services with `lb adm`).
        #[arg(long, short = 'f')]
        config: Option<PathBuf>,
        /// Directory where runtime changes (`lb adm`) are saved and restored
        /// from at the next start (root only).
        #[arg(long, default_value = lb_user::runtime::DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// bpffs directory where the maps are pinned.
        #[arg(long, default_value = DEFAULT_BPFFS_DIR)]
        bpffs: PathBuf,
        /// Control socket (root only).
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long, value_enum, default_value = "native")]
        xdp_mode: Mode,
        /// Connection-table capacity (flows).
        #[arg(long, default_value_t = DEFAULT_CONNTRACK_SIZE)]
        conntrack_size: u32,
        /// Idle timeout of established TCP connections, seconds.
        #[arg(long, default_value_t = Timeouts::default().tcp_s)]
        tcp_timeout: u32,
        /// Idle timeout of TCP connections after FIN, seconds.
        #[arg(long, default_value_t = Timeouts::default().tcp_fin_s)]
        tcpfin_timeout: u32,
        /// Idle timeout of UDP flows, seconds.
        #[arg(long, default_value_t = Timeouts::default().udp_s)]
        udp_timeout: u32,
        /// Config id for `@ID` lines and `${_INSTANCE}` (keepalived's -i;
        /// default: the host name up to its first dot).
        #[arg(short = 'i', long)]
        config_id: Option<String>,
        /// Serve Prometheus metrics on http://ADDR:PORT/metrics (off by default).
        #[arg(long, value_name = "ADDR:PORT")]
        metrics_listen: Option<std::net::SocketAddr>,
        #[command(flatten)]
        web: WebArgs,
    },
    /// Set, change or delete a web console user (`lb run --web-listen`).
    ///
    /// The password is read from the terminal (twice, not echoed) or, when
    /// standard input is not a terminal, as its first line. It is stored as
    /// an Argon2id hash in the users file (mode 0600, owned by root); the
    /// console reads the file at each login, so no restart is needed.
    /// Roles: admin (every page and change) or view (read only).
    Passwd {
        /// The user's name (1 to 32 of A-Z a-z 0-9 . _ -).
        #[arg(default_value = "admin")]
        user: String,
        /// What the user may do.
        #[arg(long, value_enum, default_value = "admin")]
        role: RoleArg,
        /// Delete the user instead.
        #[arg(long, conflicts_with = "role")]
        delete: bool,
        /// The users file (`lb run --web-users`).
        #[arg(long, default_value = lb_user::web::users::DEFAULT_FILE)]
        file: PathBuf,
    },
    /// ipvsadm's command line: `lb adm -A -t VIP:80 -s rr`, `lb adm -Ln`,
    /// `lb adm -S`, … (also as `lbadm`, a link to lb). Changes go to the
    /// running agent (LB_SOCKET, default /run/lb/lb.sock); listings read
    /// the maps (LB_BPFFS, default /sys/fs/bpf/lb). `lb adm -h` for more.
    #[command(
        disable_help_flag = true,
        disable_version_flag = true,
        long_about = lb_user::adm::OPTIONS_HELP
    )]
    Adm {
        /// ipvsadm's arguments, as ipvsadm takes them.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<String>,
    },
    /// Drain a real server gracefully: weight 0, wait for its connections,
    /// remove it.
    ///
    /// Its weight goes to 0 (no new connections, as
    /// `lb adm -e -w 0`), the agent waits until its active connections end
    /// or --timeout passes, then removes it (as `lb adm -d`). The drain runs
    /// in the agent; this command follows it, printing progress once a
    /// second (Ctrl-C stops following, not the drain; `lb drain` again
    /// follows it). A reload, or `lb adm -e -w N` (N > 0) on the real,
    /// cancels it. Exit status: 0 drained and removed; 124 timed out
    /// (removed with connections left); 1 cancelled, removal failed or the
    /// agent lost; 2 a bad service or real; 255 no such service / real.
    Drain {
        /// TCP service, VIP:PORT (IPv6 as [ADDR]:PORT), as `lb adm -t`.
        #[arg(short = 't', long = "tcp-service", value_name = "VIP:PORT")]
        tcp: Option<String>,
        /// UDP service, VIP:PORT, as `lb adm -u`.
        #[arg(short = 'u', long = "udp-service", value_name = "VIP:PORT")]
        udp: Option<String>,
        /// The real server, ADDR[:PORT] (the service's port when left out), as `lb adm -r`.
        #[arg(short = 'r', long = "real-server", value_name = "REAL[:PORT]")]
        real: String,
        /// Seconds to wait for the connections to end before removing the
        /// real anyway; 0 waits for ever.
        #[arg(long, value_name = "S", default_value_t = lb_user::drain::DEFAULT_TIMEOUT_S)]
        timeout: u64,
        /// Start the drain and return without following it.
        #[arg(long)]
        no_wait: bool,
        /// The agent's control socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Print the virtual server table (ipvsadm -Ln layout).
    List {
        #[arg(long, default_value = DEFAULT_BPFFS_DIR)]
        bpffs: PathBuf,
        /// Counters (ipvsadm -Ln --stats).
        #[arg(long)]
        stats: bool,
        /// Rates over one second (ipvsadm -Ln --rate).
        #[arg(long)]
        rate: bool,
        /// Tracked connections (ipvsadm -Lnc).
        #[arg(short = 'c', long = "connection")]
        conns: bool,
        /// Exact numbers (no K/M/G).
        #[arg(long)]
        exact: bool,
        /// Accepted for ipvsadm compatibility: output is always numeric.
        #[arg(short = 'n', long = "numeric")]
        _numeric: bool,
        /// Health checkers: state, last result, last change (asks the agent).
        #[arg(long)]
        checks: bool,
        /// VRRP instances: state, priority (effective and configured),
        /// master, advert interval, counters (asks the agent).
        #[arg(long)]
        vrrp: bool,
        /// BGP announcement: the daemon's sessions, and per VIP whether it
        /// is announced and why not (asks the agent).
        #[arg(long)]
        bgp: bool,
        /// Per `mh` service, a digest of its live Maglev table (slots
        /// resolved to real addresses): equal on every director exactly
        /// when they send each flow to the same real (README "Scale-out").
        #[arg(long)]
        mh_digest: bool,
        /// The agent's control socket (for --checks, --vrrp and --bgp, and the
        /// drain markers of the table).
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// JSON instead of the table (README "JSON output").
        #[arg(long)]
        json: bool,
    },
    /// Validate a configuration file; prints every problem, exits 64 on errors.
    CheckConfig {
        file: PathBuf,
        /// Print the parsed model with every default filled in, as JSON
        /// (format `lb-config-dump/1`) on stdout; the diagnostics and the
        /// summary go to stderr.
        #[arg(long)]
        dump: bool,
        /// Config id for `@ID` lines and `${_INSTANCE}` (keepalived's -i;
        /// default: the host name up to its first dot).
        #[arg(short = 'i', long)]
        config_id: Option<String>,
    },
    /// Global data-plane counters: verdicts, and why packets were passed or dropped.
    Counters {
        #[arg(long, default_value = DEFAULT_BPFFS_DIR)]
        bpffs: PathBuf,
        /// JSON: `{"counters": {NAME: VALUE, ...}}`.
        #[arg(long)]
        json: bool,
    },
    /// Ask a running agent for its state dump (what SIGUSR1 writes to
    /// /tmp/lb.data) or, with --stats, its statistics (SIGUSR2, /tmp/lb.stats).
    Dump {
        /// Statistics instead of the state.
        #[arg(long)]
        stats: bool,
        /// Print the API's JSON reply.
        #[arg(long)]
        json: bool,
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Print the configuration the running agent applies (keepalived.conf
    /// with the runtime changes of `lb adm` and the API on top) as a
    /// keepalived.conf that reproduces it; a header comment says when and
    /// from which files it was exported. `lb export > keepalived.conf`
    /// turns a table built by hand into a configuration file.
    Export {
        /// The agent's control socket.
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Helper started by `lb run`: removes the virtual addresses the agent
    /// held if it dies without releasing them.
    #[command(hide = true)]
    VipGuard,
    /// Real-server side of LVS-TUN without a kernel ipip device: strip the
    /// tunnel header of packets to VIP (XDP) until SIGTERM.
    Decap {
        /// Interface the tunnelled packets arrive on.
        #[arg(long)]
        iface: String,
        /// Virtual address to accept (repeat for several).
        #[arg(long = "vip", required = true)]
        vips: Vec<std::net::IpAddr>,
        #[arg(long, value_enum, default_value_t = Mode::Native)]
        xdp_mode: Mode,
    },
    /// keepalived's genhash: fetch a URL from a server and print the MD5
    /// digest that HTTP_GET / SSL_GET `url { digest }` expects (computed by
    /// the checker's own code). Exits 1 when the fetch fails.
    Genhash {
        /// Server address (an IP address).
        #[arg(short = 's', long)]
        server: std::net::IpAddr,
        /// Server port.
        #[arg(short = 'p', long)]
        port: u16,
        /// URL path to fetch.
        #[arg(short = 'u', long)]
        url: String,
        /// HTTPS (SSL_GET); the certificate is not verified.
        #[arg(short = 'S', long = "use-ssl")]
        ssl: bool,
        /// Send the virtualhost as SNI in the TLS handshake.
        #[arg(short = 'I', long = "use-sni")]
        sni: bool,
        /// Host header (default: server:port).
        #[arg(short = 'V', long = "use-virtualhost")]
        virtualhost: Option<String>,
        /// Print the header and body dumps and the response time.
        #[arg(short = 'v', long)]
        verbose: bool,
        /// Firewall mark of the socket (SO_MARK).
        #[arg(short = 'm', long)]
        fwmark: Option<u32>,
        /// HTTP version: 1.0, 1.0c (1.0 with Connection: close) or 1.1.
        #[arg(short = 'P', long, default_value = "1.0")]
        protocol: lb_user::genhash::Protocol,
        /// Bound of the whole fetch, seconds.
        #[arg(short = 't', long, default_value_t = 5)]
        timeout: u64,
    },
    /// Convert a Piranha lvs.cf (pulse / nanny) into keepalived.conf on
    /// stdout; what cannot be carried over is a warning on stderr (file:line).
    /// Exits 64 on errors (nothing printed on stdout then).
    ImportLvsCf {
        /// The lvs.cf file (usually /etc/sysconfig/ha/lvs.cf).
        file: PathBuf,
        /// The router the output is for: the primary (MASTER, priority 150)
        /// or the backup (BACKUP, priority 100).
        #[arg(long, value_enum, default_value_t = RouterArg::Primary)]
        router: RouterArg,
        /// VRRP virtual_router_id (pulse has none; both routers need the same).
        #[arg(long, default_value_t = 51, value_parser = clap::value_parser!(u8).range(1..))]
        vrid: u8,
    },
    /// Drain this director for maintenance (withdraw every VIP from BGP)
    /// or bring it back (`lb_bgp`).
    ///
    /// `drain` withdraws every VIP through the BGP daemon: the routers send
    /// the flows to the other directors, and XDP keeps forwarding what
    /// still arrives here. The drain is kept in the state directory, across
    /// restarts, until `undrain`, which announces again the VIPs that have
    /// a healthy real. Prints the announcement state (`lb list --bgp`).
    Bgp {
        #[command(subcommand)]
        action: BgpAction,
        /// The agent's control socket.
        #[arg(long, global = true, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the API's JSON reply.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Ask a running agent to reload its configuration (same as SIGHUP).
    Reload {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Stop a running agent, as SIGTERM does (VRRP goodbye, notify_stop
    /// programs), and wait until it has exited.
    ///
    /// With --keep-forwarding, XDP and the tc program stay attached (their
    /// links stay pinned in the pin directory): the director keeps
    /// forwarding with the tables as they are, established flows included,
    /// until the next `lb run` takes the attachment over without a gap. For
    /// restarts and upgrades. Health checks and VRRP stop meanwhile.
    Stop {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Leave XDP attached and forwarding (see above).
        #[arg(long)]
        keep_forwarding: bool,
        /// Do not stop now: the next SIGTERM (`systemctl restart lb`, within
        /// 120 s) stops the agent as asked here. `lb stop --keep-forwarding
        /// --defer && systemctl restart lb` restarts without a gap.
        #[arg(long)]
        defer: bool,
        /// Longest wait for the agent to exit, seconds (it says goodbye to
        /// VRRP peers and runs notify_stop programs first).
        #[arg(long, default_value_t = 90)]
        timeout: u64,
    },
    /// Ask a running agent for its state: services and reals, where each
    /// came from (file:line, health, quorum), reals' MAC resolution.
    Status {
        #[arg(long, default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
        /// Print the API's JSON reply (`GET /v1/status`).
        #[arg(long)]
        json: bool,
    },
    /// Write the manual pages and the bash / zsh / fish completions made
    /// from this command line (`cargo xtask deb` packs them).
    #[command(hide = true)]
    GenerateDocs {
        /// Directory for the man pages (lb.8, lb-run.8, …).
        #[arg(long)]
        man: PathBuf,
        /// Directory for the completions (lb, _lb, lb.fish).
        #[arg(long)]
        completions: PathBuf,
    },
}

/// `lbadm ARGS…` / `lb adm ARGS…`: ipvsadm's command line.
fn adm_main(program: &str, args: &[String]) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let env = lb_user::adm::Env::from_env(DEFAULT_SOCKET);
    let outcome = rt.block_on(lb_user::adm::run(program, args, &env));
    lb_user::adm::emit(&outcome)
}

fn main() -> ExitCode {
    // Through a link named lbadm: ipvsadm's command line, nothing else.
    let argv0 = std::env::args().next().unwrap_or_default();
    // A link named ipvsadm too: scripts written for ipvsadm run unchanged.
    if let Some(name) = std::path::Path::new(&argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| *n == "lbadm" || *n == "ipvsadm")
    {
        let args: Vec<String> = std::env::args().skip(1).collect();
        return adm_main(name, &args);
    }
    if std::env::args_os().nth(1).is_some_and(|a| a == "run") {
        agent::hold_signals();
    }
    let cli = Cli::parse();
    logging::init(cli.log_level, cli.log_format);
    if let Cmd::Adm { args } = &cli.cmd {
        return adm_main("lb adm", args);
    }
    match real_main(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("lb: {e:#}");
            // The agent is busy (503): nothing was done, try again later.
            let busy = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<api::client::ClientError>(),
                    Some(api::client::ClientError::Server { status, .. })
                        if *status == hyper::StatusCode::SERVICE_UNAVAILABLE
                )
            });
            if busy {
                ExitCode::from(EX_TEMPFAIL)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// `lb drain`: starts (or joins) the agent's drain of `key` and follows it.
async fn drain(
    socket: &std::path::Path,
    key: config::RealKey,
    timeout_s: u64,
    no_wait: bool,
) -> anyhow::Result<ExitCode> {
    use lb_user::drain::{DrainList, DrainRequest, Outcome, Phase};
    let (svc, addr, port) = key;
    let req = DrainRequest {
        service: svc,
        addr,
        port,
        timeout_s,
    };
    let reply = match api::client::drain(socket, &req).await? {
        Ok(r) => r,
        Err(refused) => {
            eprintln!("{}", refused.message);
            return Ok(ExitCode::from(EX_REFUSED));
        }
    };
    let d = &reply.drain;
    let timeout = d
        .timeout_s
        .map_or_else(|| "no timeout".to_string(), |t| format!("timeout {t}s"));
    if reply.joined {
        println!(
            "{} real {} is already being drained ({:.0}s so far, {timeout}): following that drain",
            d.service, d.real, d.elapsed_s
        );
    } else {
        println!(
            "draining {} real {}: weight {} -> 0, {timeout}",
            d.service, d.real, d.weight_before
        );
    }
    println!("(the drain runs in the agent: Ctrl-C stops following it, not the drain)");
    if no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let (id, started) = (d.id, d.started_unix_s);
    loop {
        tokio::time::sleep(lb_user::drain::POLL).await;
        let list: DrainList = match api::client::get(socket, api::DRAIN).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!(
                    "lb: lost the agent while following the drain ({}); its outcome is unknown: see `lb list` or GET {}",
                    lb_user::util::chain(&e),
                    api::DRAIN
                );
                return Ok(ExitCode::FAILURE);
            }
        };
        let Some(d) = list
            .drains
            .into_iter()
            .find(|d| d.id == id && d.started_unix_s == started && d.is_of(&svc, addr, port))
        else {
            eprintln!("lb: the agent no longer lists this drain (was it restarted?); its outcome is unknown");
            return Ok(ExitCode::FAILURE);
        };
        match &d.phase {
            Phase::Draining | Phase::Removing { .. } => println!("{}", d.progress()),
            Phase::Done { outcome } => {
                let code = match outcome {
                    Outcome::Drained => ExitCode::SUCCESS,
                    Outcome::TimedOut => ExitCode::from(EX_DRAIN_TIMEOUT),
                    Outcome::Cancelled(_) | Outcome::Failed { .. } => ExitCode::FAILURE,
                };
                println!("{} real {}: {}", d.service, d.real, d.outcome_text());
                return Ok(code);
            }
        }
    }
}

/// `lb list` reads the pinned maps directly; say when no agent keeps them.
fn warn_unmaintained(bpffs: &std::path::Path) {
    if agent::exclusive::holder(bpffs).is_none() {
        eprintln!(
            "lb: warning: no agent is running on {}: this table is not being maintained (no health checks, neighbour updates or connection sweeps)",
            bpffs.display()
        );
    }
}

/// Prints `value` as pretty JSON, or the text `render` makes; a reader that
/// stops early (`| head`) is not an error.
fn print_out<T: serde::Serialize>(
    json: bool,
    value: &T,
    render: impl FnOnce() -> String,
) -> anyhow::Result<ExitCode> {
    let text = if json {
        serde_json::to_string_pretty(value)? + "\n"
    } else {
        render()
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn real_main(cli: Cli) -> anyhow::Result<ExitCode> {
    // The agent gets two workers: the reconciler's synchronous map writes
    // never hold the API, VRRP or the probes. The CLI needs one thread.
    let rt = if matches!(cli.cmd, Cmd::Run { .. }) {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    };
    match cli.cmd {
        Cmd::Run {
            ifaces,
            config,
            state_dir,
            bpffs,
            socket,
            xdp_mode,
            conntrack_size,
            tcp_timeout,
            tcpfin_timeout,
            udp_timeout,
            config_id,
            metrics_listen,
            web,
        } => {
            if let Some(id) = config_id {
                config::reader::set_config_id(&id);
            }
            let opts = agent::Options {
                ifaces,
                config_optional: config.is_none(),
                config: config.unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG)),
                state_dir,
                bpffs,
                socket,
                mode: match xdp_mode {
                    Mode::Native => XdpMode::Driver,
                    Mode::Skb => XdpMode::Skb,
                },
                conntrack_size,
                timeouts: Timeouts {
                    tcp_s: tcp_timeout,
                    tcp_fin_s: tcpfin_timeout,
                    udp_s: udp_timeout,
                    ..Timeouts::default()
                },
                metrics_listen,
                web: web.web_listen.map(|listen| lb_user::web::Options {
                    listen,
                    cert: web.web_cert,
                    key: web.web_key,
                    users: web.web_users,
                    insecure: web.web_insecure,
                }),
            };
            match rt.block_on(agent::run(opts)) {
                Ok(()) => Ok(ExitCode::SUCCESS),
                Err(e @ agent::AgentError::ConfigRefused { .. }) => {
                    eprintln!("lb: {e}");
                    Ok(ExitCode::from(EX_USAGE))
                }
                Err(e) => Err(e.into()),
            }
        }
        Cmd::List {
            checks: true,
            socket,
            json,
            ..
        } => {
            let c: api::views::Checks = rt.block_on(api::client::get(&socket, api::CHECKS))?;
            print_out(json, &c, || c.render())
        }
        Cmd::List {
            bgp: true,
            socket,
            json,
            ..
        } => {
            let v: lb_user::bgp::View = rt.block_on(api::client::get(&socket, api::BGP))?;
            print_out(json, &v, || v.render())
        }
        Cmd::Bgp {
            action,
            socket,
            json,
        } => {
            let drained = matches!(action, BgpAction::Drain);
            let v = rt.block_on(api::client::bgp_drain(&socket, drained))?;
            print_out(json, &v, || v.render())
        }
        Cmd::List {
            mh_digest: true,
            bpffs,
            json,
            ..
        } => {
            let dp = Dataplane::from_pins(&bpffs)?;
            warn_unmaintained(&bpffs);
            let t = lb_user::mh_digest::read(&dp)?;
            print_out(json, &serde_json::json!({ "mh_tables": t }), || {
                lb_user::mh_digest::render(&t)
            })
        }
        Cmd::List {
            vrrp: true,
            socket,
            json,
            ..
        } => {
            let v: api::views::Vrrp = rt.block_on(api::client::get(&socket, api::VRRP))?;
            print_out(json, &v, || v.render())
        }
        Cmd::List {
            bpffs,
            rate,
            conns,
            json: true,
            socket,
            ..
        } => {
            let dp = Dataplane::from_pins(&bpffs)?;
            warn_unmaintained(&bpffs);
            let table = if rate {
                let (a, b, dt) = list::rate_samples(&dp)?;
                lb_user::list_json::Table::with_rates(&a, &b, dt)
            } else {
                let mut snap = list::snapshot(&dp, conns)?;
                if let Some(d) = rt.block_on(list::agent_drains(&socket)) {
                    list::mark_drains(&mut snap, &d);
                }
                lb_user::list_json::Table::new(&snap, conns)
            };
            print_out(true, &table, String::new)
        }
        Cmd::List {
            bpffs,
            stats,
            rate,
            conns,
            exact,
            socket,
            ..
        } => {
            let dp = Dataplane::from_pins(&bpffs)?;
            warn_unmaintained(&bpffs);
            let out = if rate {
                let (a, b, dt) = list::rate_samples(&dp)?;
                list::render_rate(&a, &b, dt, exact)
            } else {
                let mut snap = list::snapshot(&dp, conns)?;
                if conns {
                    list::render_conns(&snap)
                } else if stats {
                    list::render_stats(&snap, exact)
                } else {
                    // Reals the agent is draining carry a marker.
                    if let Some(d) = rt.block_on(list::agent_drains(&socket)) {
                        list::mark_drains(&mut snap, &d);
                    }
                    list::render_table(&snap)
                }
            };
            print!("{out}");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Counters { bpffs, json } => {
            let dp = Dataplane::from_pins(&bpffs)?;
            warn_unmaintained(&bpffs);
            let g = dp.global_sum()?;
            print_out(json, &lb_user::list_json::GlobalCounters::from(&g), || {
                list::render_counters(&g)
            })
        }
        Cmd::Dump {
            stats: false,
            json,
            socket,
        } => {
            let d: lb_user::dump::Data = rt.block_on(api::client::get(&socket, api::DUMP))?;
            print_out(json, &d, || d.render())
        }
        Cmd::Dump {
            stats: true,
            json,
            socket,
        } => {
            let d: lb_user::dump::Stats =
                rt.block_on(api::client::get(&socket, api::DUMP_STATS))?;
            print_out(json, &d, || d.render())
        }
        Cmd::Export { socket } => {
            let text = rt.block_on(api::client::export(&socket))?;
            // A reader that stops early (`| head`) is not an error.
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                if e.kind() != std::io::ErrorKind::BrokenPipe {
                    return Err(e.into());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Cmd::CheckConfig {
            file,
            dump,
            config_id,
        } => {
            if let Some(id) = config_id {
                config::reader::set_config_id(&id);
            }
            let loaded = config::load(&file);
            let errors = loaded.errors().count();
            let warnings = loaded.diags.len() - errors;
            let summary = format!(
                "{}: {} virtual server(s), {} VRRP instance(s), {errors} error(s), {warnings} warning(s)",
                file.display(),
                loaded.config.services.len(),
                loaded.config.vrrp.instances.len()
            );
            if dump {
                for d in &loaded.diags {
                    eprintln!("{d}");
                }
                eprintln!("{summary}");
                let text = serde_json::to_string_pretty(&config::dump::dump(&loaded.config))?;
                // A reader that stops early (`| head`) is not an error.
                let mut out = std::io::stdout().lock();
                if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        return Err(e.into());
                    }
                }
            } else {
                for d in &loaded.diags {
                    println!("{d}");
                }
                println!("{summary}");
            }
            Ok(if errors > 0 {
                ExitCode::from(EX_USAGE)
            } else {
                ExitCode::SUCCESS
            })
        }
        Cmd::Adm { .. } => unreachable!("handled in main"),
        Cmd::Drain {
            tcp,
            udp,
            real,
            timeout,
            no_wait,
            socket,
        } => {
            let key = match lb_user::drain::target(tcp.as_deref(), udp.as_deref(), &real) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("lb drain: {e}");
                    return Ok(ExitCode::from(EX_BAD_LINE));
                }
            };
            rt.block_on(drain(&socket, key, timeout, no_wait))
        }
        Cmd::VipGuard => {
            rt.block_on(lb_user::vrrp::guard::run())?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Decap {
            iface,
            vips,
            xdp_mode,
        } => {
            let mode = match xdp_mode {
                Mode::Native => XdpMode::Driver,
                Mode::Skb => XdpMode::Skb,
            };
            rt.block_on(lb_user::decap::run(&iface, &vips, mode))?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Genhash {
            server,
            port,
            url,
            ssl,
            sni,
            virtualhost,
            verbose,
            fwmark,
            protocol,
            timeout,
        } => {
            let opts = lb_user::genhash::Options {
                server,
                port,
                url,
                ssl,
                sni,
                virtualhost,
                protocol,
                fwmark,
                timeout: Duration::from_secs(timeout),
            };
            let fetched = rt.block_on(lb_user::genhash::fetch(&opts))?;
            if let Some(w) = lb_user::genhash::status_warning(&fetched.answer) {
                eprintln!("lb: warning: {w}");
            }
            print!("{}", lb_user::genhash::render(&fetched, &opts.url, verbose));
            Ok(ExitCode::SUCCESS)
        }
        Cmd::ImportLvsCf { file, router, vrid } => {
            use anyhow::Context as _;
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let router = match router {
                RouterArg::Primary => lb_user::lvscf::Router::Primary,
                RouterArg::Backup => lb_user::lvscf::Router::Backup,
            };
            let import = lb_user::lvscf::import(&text, &file, router, vrid);
            for d in &import.diags {
                eprintln!("{d}");
            }
            if import.has_errors() {
                return Ok(ExitCode::from(EX_USAGE));
            }
            print!("{}", import.text);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Reload { socket } => {
            let reply = rt.block_on(api::client::reload(&socket))?;
            for d in &reply.diagnostics {
                println!("{}", d.text);
            }
            println!("{}", reply.message);
            Ok(match reply.outcome {
                api::ReloadOutcome::Applied => ExitCode::SUCCESS,
                api::ReloadOutcome::Refused => ExitCode::from(EX_USAGE),
                api::ReloadOutcome::Failed => ExitCode::FAILURE,
            })
        }
        Cmd::Stop {
            socket,
            keep_forwarding,
            defer,
            timeout,
        } => {
            let reply = rt.block_on(api::client::stop(
                &socket,
                api::StopRequest {
                    keep_forwarding,
                    defer,
                },
            ))?;
            println!("{}", reply.message);
            if !reply.stopping {
                return Ok(ExitCode::SUCCESS);
            }
            let start = std::time::Instant::now();
            // The agent answered before it began to stop: wait for its exit.
            while process_alive(reply.pid) {
                if start.elapsed() > Duration::from_secs(timeout) {
                    eprintln!(
                        "lb: the agent (pid {}) has not exited after {timeout} s",
                        reply.pid
                    );
                    return Ok(ExitCode::FAILURE);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            println!("stopped");
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Passwd {
            user,
            role,
            delete,
            file,
        } => {
            let role = match role {
                RoleArg::Admin => lb_user::web::users::Role::Admin,
                RoleArg::View => lb_user::web::users::Role::View,
            };
            let password = if delete {
                None
            } else {
                Some(read_password(&user)?)
            };
            match lb_user::web::users::set(&file, &user, role, password.as_deref()) {
                Ok(msg) => {
                    println!("{msg}");
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("lb passwd: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Cmd::GenerateDocs { man, completions } => {
            lb_user::docs::write_man_pages(Cli::command(), &man)?;
            lb_user::docs::write_completions(Cli::command(), "lb", &completions)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { socket, json } => {
            let status = rt.block_on(api::client::status(&socket))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", status.render());
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Whether process `pid` still runs: it exists (kill(2) with signal 0;
/// EPERM: it exists) and is not a zombie (exited, its parent has not
/// collected it yet; `/proc/PID/stat`'s state `Z`).
fn process_alive(pid: u32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let r = unsafe { libc::kill(pid as libc::pid_t, 0) };
    let exists = r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // The state follows the command name, which is in parentheses.
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    });
    exists && !zombie
}

/// `lb passwd`'s password: asked twice on the terminal (not echoed), or
/// the first line of standard input when it is not a terminal.
fn read_password(user: &str) -> anyhow::Result<String> {
    use std::io::IsTerminal as _;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("New password for {user}: "))?;
        let again = rpassword::prompt_password("Again: ")?;
        if first != again {
            anyhow::bail!("the passwords differ; nothing changed");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::stdin().lock(), &mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
