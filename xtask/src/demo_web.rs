//! `cargo xtask demo --web`: the DR lab with the web console. The agent
//! serves the console on the director namespace's loopback; a forwarder in
//! this process listens on the host's loopback (127.0.0.1:PORT) and
//! connects each client, from a thread that joined the director's network
//! namespace, to the console there. A one-time password (random, for this
//! lab only, in a users file removed with it) is printed with the address,
//! and light traffic runs through the VIP so that the overview moves.
use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::{bail, Context as _};
use lb_tests::{Lab, VIP};

/// The console's port, in the director's namespace and on the host.
pub const PORT: u16 = 3636;

/// A password of 16 characters from an alphabet without look-alikes.
fn one_time_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyzACDEFGHJKLMNPQRTUVWXY346789";
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect())
}

/// Joins the network namespace `ns` (this thread only).
fn join_netns(ns: &str) -> anyhow::Result<()> {
    let f = std::fs::File::open(format!("/run/netns/{ns}"))
        .with_context(|| format!("opening /run/netns/{ns}"))?;
    // SAFETY: setns on a valid namespace descriptor affects this thread only.
    if unsafe { libc_setns(f.as_raw_fd(), CLONE_NEWNET) } != 0 {
        bail!("setns {ns}: {}", std::io::Error::last_os_error());
    }
    Ok(())
}

const CLONE_NEWNET: i32 = 0x4000_0000;
extern "C" {
    #[link_name = "setns"]
    fn libc_setns(fd: i32, nstype: i32) -> i32;
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

/// Forwards host 127.0.0.1:`port` to 127.0.0.1:[`PORT`] in namespace `ns`
/// until `stop`.
fn forward(ns: String, port: u16, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .with_context(|| format!("binding 127.0.0.1:{port} for the console"))?;
    listener.set_nonblocking(true)?;
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let client = match listener.accept() {
                Ok((c, _)) => c,
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            let ns = ns.clone();
            std::thread::spawn(move || {
                let _ = client.set_nonblocking(false);
                let server =
                    join_netns(&ns).and_then(|()| Ok(TcpStream::connect(("127.0.0.1", PORT))?));
                let Ok(server) = server else { return };
                let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
                    return;
                };
                std::thread::spawn(move || pipe(c2, s2));
                pipe(server, client);
            });
        }
    });
    Ok(())
}

/// Runs the console demo on `lab` (agent not started yet) until `stop`.
pub fn run(mut lab: Lab, conf: &str, port: u16, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let users = lab.workdir.join("web-users");
    let password = one_time_password()?;
    let mut passwd = std::process::Command::new(&lab.bins.lb)
        .args(["passwd", "--file"])
        .arg(&users)
        .args(["admin", "--role", "admin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()?;
    writeln!(
        passwd.stdin.take().context("lb passwd's stdin")?,
        "{password}"
    )?;
    if !passwd.wait()?.success() {
        bail!("lb passwd failed");
    }
    let listen = format!("127.0.0.1:{PORT}");
    let users_s = users.to_string_lossy().into_owned();
    lab.start_agent(
        conf,
        &[
            "--conntrack-size",
            "65536",
            "--web-listen",
            &listen,
            "--web-users",
            &users_s,
        ],
    )?;
    forward(lab.ns("dir"), port, stop.clone())?;
    println!(
        "\n== web console: http://127.0.0.1:{port}/\n   user admin, one-time password {password}\n   (made for this lab only; it goes with the lab when you press Ctrl-C)\n   The first-run wizard is under Setup; traffic runs through {VIP}:80 every second."
    );
    while !stop.load(Ordering::SeqCst) {
        let _ = lab.http_get(&format!("{VIP}:80"), 4);
        for _ in 0..5 {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    println!("\n== removing the lab");
    drop(lab);
    Ok(())
}
