//! Tiny HTTP server and clients for the namespace tests and the demo lab.
//!
//! nsprobe serve PORT NAME [STATUS_FILE]
//!                                answer every request with body "NAME\n" (keep-alive aware), with
//!                                the status code written in STATUS_FILE (200 when absent)
//!                                (STATUS_FILE.body, when present, replaces the body)
//! nsprobe tls-serve PORT NAME CERT.der KEY.der
//!                                the same over TLS (HTTP/1.0, one request per connection)
//! nsprobe silent PORT            accept connections and never answer
//! nsprobe smtp PORT              an SMTP server: 220 banner, 250 to each command, 221 to QUIT
//! nsprobe get HOST:PORT COUNT    COUNT requests, one connection each; prints "NAME count" lines and "fail N"
//! nsprobe get-on-cpus HOST:PORT COUNT CPU[,CPU...]
//!                                COUNT requests, one connection each, request i made from CPU
//!                                number i mod (number of CPUs listed) of the list (the process
//!                                moves there first); prints "CPU NAME" (or "CPU fail") per request
//! nsprobe load HOST:PORT SECONDS GAP_MS
//!                                a request every GAP_MS (one connection each, 0.5 s timeout) for
//!                                SECONDS; prints "NAME count" lines, "fail N" and "outage_ms T"
//!                                (from the start of the first failed request to the end of the last)
//! nsprobe hold HOST:PORT         one keep-alive connection; a request per stdin line, prints each answer
//! nsprobe hold-many HOST:PORT CONNS SECONDS GAP_MS
//!                                CONNS keep-alive connections (one thread each), each sending a
//!                                request every GAP_MS for SECONDS; one line per connection
//!                                "conn I first=NAME last=NAME requests=N changed=C failed=F reset=0|1"
//!                                (changed: answers from another real than the first; failed:
//!                                requests not answered within 1 s; reset: the connection died with
//!                                an error, RST or EOF, or stayed unanswered for 10 s), then
//!                                "resets N", "changed N", "failed N" (sums)
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

const TIMEOUT: Duration = Duration::from_secs(3);

fn read_request(r: &mut BufReader<TcpStream>) -> std::io::Result<Option<bool>> {
    let mut keep_alive = false;
    let mut first = true;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if first {
            keep_alive = line.contains("HTTP/1.1");
            first = false;
        }
        let l = line.to_ascii_lowercase();
        if l.starts_with("connection: close") {
            keep_alive = false;
        }
        if line == "\r\n" || line == "\n" {
            return Ok(Some(keep_alive));
        }
    }
}

/// The body: STATUS_FILE.body when present, else "NAME\n".
fn body(name: &str, status_file: &Option<String>) -> String {
    status_file
        .as_ref()
        .and_then(|f| std::fs::read_to_string(format!("{f}.body")).ok())
        .unwrap_or_else(|| format!("{name}\n"))
}

/// TLS: one HTTP/1.0 answer per connection.
fn tls_serve(port: u16, name: String, cert: &str, key: &str) {
    let cert = rustls::pki_types::CertificateDer::from(std::fs::read(cert).expect("certificate"));
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(std::fs::read(key).expect("key").into());
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let cfg = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .expect("certificate and key"),
    );
    let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    for s in l.incoming().flatten() {
        let cfg = cfg.clone();
        let name = name.clone();
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(TIMEOUT));
            let conn = rustls::ServerConnection::new(cfg).expect("TLS session");
            let mut tls = rustls::StreamOwned::new(conn, s);
            let mut buf = Vec::new();
            let mut b = [0u8; 1024];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut b) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&b[..n]),
                }
            }
            let body = format!("{name}\n");
            let resp = format!(
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(resp.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        });
    }
}

/// Accepts and holds connections without ever answering.
fn silent(port: u16) {
    let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    let mut held = Vec::new();
    for s in l.incoming().flatten() {
        held.push(s);
    }
}

/// A minimal SMTP server for SMTP_CHECK: a 220 banner, 250 to every
/// command but QUIT, 221 to QUIT (then the connection is closed).
fn smtp(port: u16) {
    use std::io::{BufRead, BufReader, Write};
    let l = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut w = s.try_clone().expect("clone");
            let _ = w.write_all(b"220 nsprobe ESMTP\r\n");
            for line in BufReader::new(s).lines() {
                let Ok(line) = line else { return };
                if line.trim_end().eq_ignore_ascii_case("QUIT") {
                    let _ = w.write_all(b"221 bye\r\n");
                    return;
                }
                let _ = w.write_all(b"250 ok\r\n");
            }
        });
    }
}

/// Status code to answer with: the number in `file`, else 200.
fn status(file: &Option<String>) -> u16 {
    file.as_ref()
        .and_then(|f| std::fs::read_to_string(f).ok())
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(200)
}

fn serve(port: u16, name: String, status_file: Option<String>) {
    let l = TcpListener::bind(("::", port))
        .or_else(|_| TcpListener::bind(("0.0.0.0", port)))
        .expect("bind");
    for s in l.incoming().flatten() {
        let name = name.clone();
        let status_file = status_file.clone();
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_secs(600)));
            let mut w = s.try_clone().expect("clone");
            let mut r = BufReader::new(s);
            while let Ok(Some(keep)) = read_request(&mut r) {
                let body = body(&name, &status_file);
                let conn = if keep { "keep-alive" } else { "close" };
                let code = status(&status_file);
                let resp = format!(
                    "HTTP/1.1 {code} X\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n{body}",
                    body.len()
                );
                if w.write_all(resp.as_bytes()).is_err() || !keep {
                    break;
                }
            }
        });
    }
}

/// What one connection of `hold-many` saw.
#[derive(Debug, Default)]
struct Held {
    first: Option<String>,
    last: Option<String>,
    requests: u64,
    changed: u64,
    failed: u64,
    reset: bool,
}

/// How long a `hold-many` request may go unanswered before it counts as failed.
const HELD_ANSWER: Duration = Duration::from_secs(1);
/// How long a `hold-many` connection waits for a late answer in all before
/// it is counted as dead (reset).
const HELD_DEAD: Duration = Duration::from_secs(10);

/// One keep-alive connection of `hold-many`: a request every `gap` until
/// `secs` have passed since `start`. Requests are never pipelined: a
/// request not answered within [`HELD_ANSWER`] counts as failed and its
/// answer is still waited for (up to [`HELD_DEAD`]) before the next one.
fn hold_one(addr: SocketAddr, start: std::time::Instant, secs: f64, gap: Duration) -> Held {
    let mut h = Held::default();
    let Ok(s) = TcpStream::connect_timeout(&addr, TIMEOUT) else {
        h.reset = true;
        return h;
    };
    let Ok(mut w) = s.try_clone() else {
        h.reset = true;
        return h;
    };
    let mut r = BufReader::new(s);
    while start.elapsed().as_secs_f64() < secs {
        h.requests += 1;
        if w.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n").is_err() {
            h.reset = true;
            break;
        }
        let _ = r.get_ref().set_read_timeout(Some(HELD_ANSWER));
        let mut answer = response_body(&mut r);
        if matches!(&answer, Err(e) if is_timeout(e)) {
            h.failed += 1;
            let _ = r.get_ref().set_read_timeout(Some(HELD_DEAD - HELD_ANSWER));
            answer = response_body(&mut r);
        }
        match answer {
            Ok(name) => {
                if h.first.as_ref().is_some_and(|f| *f != name) {
                    h.changed += 1;
                }
                h.first.get_or_insert_with(|| name.clone());
                h.last = Some(name);
            }
            Err(e) => {
                eprintln!("hold-many: connection died: {e}");
                h.reset = true;
                break;
            }
        }
        std::thread::sleep(gap);
    }
    h
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

fn response_body(r: &mut BufReader<TcpStream>) -> std::io::Result<String> {
    let mut len = 0usize;
    let mut status = String::new();
    r.read_line(&mut status)?;
    if !status.starts_with("HTTP/1.1 200") {
        return Err(std::io::Error::other(format!("bad status {status:?}")));
    }
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::Error::other("eof in headers"));
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
        if line == "\r\n" {
            break;
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).trim().to_string())
}

fn one(addr: SocketAddr) -> std::io::Result<String> {
    one_within(addr, TIMEOUT)
}

fn one_within(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    let mut w = s.try_clone()?;
    w.write_all(b"GET / HTTP/1.0\r\nHost: vip\r\n\r\n")?;
    response_body(&mut BufReader::new(s))
}

/// Moves this process to CPU `cpu` only; exits when it cannot run there.
/// A connection's SYN then leaves on that CPU (and a veth peer's XDP runs
/// in the softirq of the sending CPU).
fn move_to_cpu(cpu: usize) {
    // SAFETY: the cpu_set_t is ours; sched_getcpu has no arguments.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!(
                "sched_setaffinity to CPU {cpu}: {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(2);
        }
        let now = libc::sched_getcpu();
        if now != cpu as i32 {
            eprintln!("moved to CPU {cpu} but running on {now}");
            std::process::exit(2);
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => serve(
            args[2].parse().expect("port"),
            args[3].clone(),
            args.get(4).cloned(),
        ),
        Some("tls-serve") => tls_serve(
            args[2].parse().expect("port"),
            args[3].clone(),
            &args[4],
            &args[5],
        ),
        Some("silent") => silent(args[2].parse().expect("port")),
        Some("smtp") => smtp(args[2].parse().expect("port")),
        Some("get") => {
            let addr: SocketAddr = args[2].parse().expect("HOST:PORT");
            let count: usize = args[3].parse().expect("count");
            let mut tally: BTreeMap<String, usize> = BTreeMap::new();
            let mut fail = 0;
            for _ in 0..count {
                match one(addr) {
                    Ok(name) => *tally.entry(name).or_default() += 1,
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        fail += 1;
                    }
                }
            }
            for (k, v) in tally {
                println!("{k} {v}");
            }
            println!("fail {fail}");
        }
        Some("get-on-cpus") => {
            let addr: SocketAddr = args[2].parse().expect("HOST:PORT");
            let count: usize = args[3].parse().expect("count");
            let cpus: Vec<usize> = args[4]
                .split(',')
                .map(|c| c.parse().expect("CPU number"))
                .collect();
            for i in 0..count {
                let cpu = cpus[i % cpus.len()];
                move_to_cpu(cpu);
                match one(addr) {
                    Ok(name) => println!("{cpu} {name}"),
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        println!("{cpu} fail");
                    }
                }
            }
        }
        Some("load") => {
            let addr: SocketAddr = args[2].parse().expect("HOST:PORT");
            let secs: f64 = args[3].parse().expect("seconds");
            let gap = Duration::from_millis(args[4].parse().expect("gap ms"));
            let start = std::time::Instant::now();
            let mut tally: BTreeMap<String, usize> = BTreeMap::new();
            let (mut fail, mut first, mut last) = (0, None, None);
            while start.elapsed().as_secs_f64() < secs {
                let t0 = start.elapsed();
                match one_within(addr, Duration::from_millis(500)) {
                    Ok(name) => *tally.entry(name).or_default() += 1,
                    Err(_) => {
                        fail += 1;
                        first.get_or_insert(t0);
                        last = Some(start.elapsed());
                    }
                }
                std::thread::sleep(gap);
            }
            for (k, v) in tally {
                println!("{k} {v}");
            }
            println!("fail {fail}");
            let outage = match (first, last) {
                (Some(a), Some(b)) => (b - a).as_millis(),
                _ => 0,
            };
            println!("outage_ms {outage}");
        }
        Some("hold") => {
            let addr: SocketAddr = args[2].parse().expect("HOST:PORT");
            let s = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            let stdin = std::io::stdin();
            let mut lines = stdin.lock().lines();
            loop {
                let res = w
                    .write_all(b"GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
                    .and_then(|_| response_body(&mut r));
                match res {
                    Ok(b) => println!("{b}"),
                    Err(e) => println!("error {e}"),
                }
                std::io::stdout().flush().unwrap();
                if lines.next().is_none() {
                    break;
                }
            }
        }
        Some("hold-many") => {
            let addr: SocketAddr = args[2].parse().expect("HOST:PORT");
            let conns: usize = args[3].parse().expect("connections");
            let secs: f64 = args[4].parse().expect("seconds");
            let gap = Duration::from_millis(args[5].parse().expect("gap ms"));
            let start = std::time::Instant::now();
            let threads: Vec<_> = (0..conns)
                .map(|_| std::thread::spawn(move || hold_one(addr, start, secs, gap)))
                .collect();
            let (mut resets, mut changed, mut failed) = (0, 0, 0);
            for (i, t) in threads.into_iter().enumerate() {
                let h = t.join().expect("connection thread");
                println!(
                    "conn {i} first={} last={} requests={} changed={} failed={} reset={}",
                    h.first.as_deref().unwrap_or("-"),
                    h.last.as_deref().unwrap_or("-"),
                    h.requests,
                    h.changed,
                    h.failed,
                    u8::from(h.reset)
                );
                resets += u64::from(h.reset);
                changed += h.changed;
                failed += h.failed;
            }
            println!("resets {resets}");
            println!("changed {changed}");
            println!("failed {failed}");
        }
        _ => {
            eprintln!("usage: nsprobe serve PORT NAME | get HOST:PORT COUNT | hold HOST:PORT | hold-many HOST:PORT CONNS SECONDS GAP_MS (see the file's header)");
            std::process::exit(2);
        }
    }
}
