//! Connection-level service: wrk in the client namespace sends HTTP
//! requests (keep-alive connections) to two real servers through each
//! method in turn, rounds interleaved — no balancer (one real, directly),
//! lb DR, lb NAT, HAProxy in TCP mode and nftables DNAT — and reports
//! requests per second and latency percentiles.
//!
//! Two labs from the integration tests: one segment (direct and DR: the
//! reals carry the VIP on lo) and two subnets (NAT, HAProxy, nftables: the
//! director is the reals' gateway).
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use lb_tests::{private_ip, real_ip, Bins, Lab, AGENT_ARGS, VIP};

pub const METHODS: [&str; 5] = ["direct", "dr", "nat", "haproxy", "nft"];

pub fn label(m: &str) -> &str {
    match m {
        "direct" => "no balancer (one real, directly)",
        "dr" => "lb DR",
        "nat" => "lb NAT",
        "haproxy" => "HAProxy (TCP mode)",
        "nft" => "nftables DNAT + conntrack",
        other => other,
    }
}

/// One wrk run.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub rps: f64,
    /// Latency percentiles 50 / 90 / 99, milliseconds.
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub errors: u64,
}

fn millis(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Reads wrk's `--latency` output.
pub fn parse_wrk(out: &str) -> anyhow::Result<Sample> {
    let mut s = Sample::default();
    for line in out.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["Requests/sec:", v] => s.rps = v.parse()?,
            ["50%", v] => s.p50 = millis(v).ok_or_else(|| anyhow!("latency '{v}'"))?,
            ["90%", v] => s.p90 = millis(v).ok_or_else(|| anyhow!("latency '{v}'"))?,
            ["99%", v] => s.p99 = millis(v).ok_or_else(|| anyhow!("latency '{v}'"))?,
            ["Non-2xx", "or", "3xx", "responses:", v] => s.errors += v.parse::<u64>()?,
            ["Socket", "errors:", rest @ ..] => {
                // connect N, read N, write N, timeout N
                s.errors += rest
                    .iter()
                    .filter_map(|x| x.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    if s.rps == 0.0 {
        bail!("no 'Requests/sec' in wrk's output:\n{out}");
    }
    Ok(s)
}

fn service(kind: &str, reals: [String; 2]) -> String {
    let mut c =
        format!("virtual_server {VIP} 80 {{\n  lb_algo rr\n  lb_kind {kind}\n  protocol TCP\n");
    for r in reals {
        c += &format!("  real_server {r} 80 {{\n    weight 1\n  }}\n");
    }
    c + "}\n"
}

fn wait_port(lab: &Lab, addr: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if lab
            .http_get(addr, 1)
            .is_ok_and(|t| t.get("fail") == Some(&0))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("{addr} does not answer")
}

pub struct Bench {
    one: Lab,
    two: Lab,
    secs: u32,
    conns: u32,
}

impl Bench {
    pub fn new(bins: Bins, secs: u32, conns: u32) -> anyhow::Result<Bench> {
        let mut one = Lab::dr("lbbh1", bins.clone(), 2).context("one-segment lab")?;
        let mut two = Lab::nat("lbbh2", bins, 2).context("two-subnet lab")?;
        // The directors' own test servers would hold port 80 on the VIP.
        for lab in [&mut one, &mut two] {
            lab.stop("dir", "director-httpd")?;
            lab.stop("dir", "director-httpd8080")?;
        }
        // The reals answer before anything is measured (a cold start can
        // take longer than the lab's own pause).
        for i in 1..=2 {
            wait_port(&one, &format!("{}:80", real_ip(i)))?;
        }
        Ok(Bench {
            one,
            two,
            secs,
            conns,
        })
    }

    fn wrk(lab: &Lab, url: &str, secs: u32, conns: u32) -> anyhow::Result<Sample> {
        let out = lab.exec(
            "cl",
            &[
                "wrk",
                "-t1",
                &format!("-c{conns}"),
                &format!("-d{secs}s"),
                "--latency",
                url,
            ],
        )?;
        parse_wrk(&String::from_utf8_lossy(&out.stdout))
    }

    /// Sets the method up, measures, and takes it down again.
    pub fn measure(&mut self, method: &str) -> anyhow::Result<Sample> {
        let (secs, conns) = (self.secs, self.conns);
        let url = format!("http://{VIP}:80/");
        match method {
            "direct" => Self::wrk(
                &self.one,
                &format!("http://{}:80/", real_ip(1)),
                secs,
                conns,
            ),
            "dr" => {
                let lab = &mut self.one;
                lab.start_agent(&service("DR", [real_ip(1), real_ip(2)]), AGENT_ARGS)?;
                let r = wait_port(lab, &format!("{VIP}:80"))
                    .and_then(|_| Self::wrk(lab, &url, secs, conns));
                lab.stop("dir", "lb")?;
                r
            }
            "nat" => {
                let lab = &mut self.two;
                lab.start_agent(&service("NAT", [private_ip(1), private_ip(2)]), AGENT_ARGS)?;
                let r = wait_port(lab, &format!("{VIP}:80"))
                    .and_then(|_| Self::wrk(lab, &url, secs, conns));
                lab.stop("dir", "lb")?;
                r
            }
            "haproxy" => {
                let lab = &mut self.two;
                let cfg = lab.workdir.join("haproxy.cfg");
                std::fs::write(
                    &cfg,
                    format!(
                        "global\n  maxconn 4096\n  nbthread 1\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
                         timeout client 60s\n  timeout server 60s\nfrontend f\n  bind {VIP}:80\n  \
                         default_backend b\nbackend b\n  balance roundrobin\n  server r1 {}:80\n  \
                         server r2 {}:80\n",
                        private_ip(1),
                        private_ip(2)
                    ),
                )?;
                let cfg = cfg.to_string_lossy().into_owned();
                lab.spawn("dir", &["haproxy", "-db", "-f", &cfg], "haproxy")?;
                let r = wait_port(lab, &format!("{VIP}:80"))
                    .with_context(|| format!("HAProxy's log:\n{}", lab.log("dir", "haproxy")))
                    .and_then(|_| Self::wrk(lab, &url, secs, conns));
                lab.stop("dir", "haproxy")?;
                r
            }
            "nft" => {
                let lab = &mut self.two;
                let rules = lab.workdir.join("nft.rules");
                std::fs::write(
                    &rules,
                    format!(
                        "table ip lbbench {{\n  chain pre {{\n    type nat hook prerouting priority dstnat;\n    \
                         ip daddr {VIP} tcp dport 80 dnat to numgen inc mod 2 map {{ 0 : {}, 1 : {} }}\n  }}\n}}\n",
                        private_ip(1),
                        private_ip(2)
                    ),
                )?;
                lab.exec("dir", &["nft", "-f", &rules.to_string_lossy()])?;
                let r = wait_port(lab, &format!("{VIP}:80"))
                    .and_then(|_| Self::wrk(lab, &url, secs, conns));
                lab.exec("dir", &["nft", "delete", "table", "ip", "lbbench"])?;
                r
            }
            other => bail!("unknown method {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_output_is_read() {
        let out = "Running 2s test @ http://10.200.0.100:80/
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.41us  300.12us   9.89ms   90.12%
    Req/Sec    25.10k     1.01k   27.00k    70.00%
  Latency Distribution
     50%  560.00us
     75%  700.00us
     90%    0.90ms
     99%    1.50s
  49951 requests in 2.00s, 4.10MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 4
Requests/sec:  24975.50
Transfer/sec:      2.05MB
";
        let s = parse_wrk(out).unwrap();
        assert_eq!(s.rps, 24975.5);
        assert_eq!((s.p50, s.p90, s.p99), (0.56, 0.9, 1500.0));
        assert_eq!(s.errors, 9);
        assert!(parse_wrk("nothing").is_err());
    }
}
