//! `lb adm` refuses bad command lines as ipvsadm does: same exit status,
//! same message on stderr, nothing on stdout. The reference is real ipvsadm's answer to every
//! step of `tests/conformance/script.txt`, recorded in the ipvs VM by
//! `cargo xtask conformance` (`tests/conformance/ipvsadm/golden.json`).
//!
//! ipvsadm exits with status 2 exactly when it refuses the command line
//! itself (its `fail(2, …)` calls in option parsing), before it talks to
//! the kernel; those steps need no agent, so `lb adm` runs here with
//! `LB_SOCKET` / `LB_BPFFS` naming paths that do not exist: a command line
//! it accepted would fail to reach the agent instead and show up as a
//! difference. Differences `tests/conformance/expected-diffs.toml` explains
//! (with a reason) are allowed for the parts it names.
use std::{path::PathBuf, process::Command};

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/conformance")
}

/// (cmd, section or any, parts) of every expected-diffs.toml entry.
fn expected() -> Vec<(String, Option<String>, Vec<String>)> {
    let text = std::fs::read_to_string(conformance_dir().join("expected-diffs.toml")).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let Some(list) = doc.get("diff").and_then(|d| d.as_array()) else {
        return Vec::new();
    };
    list.iter()
        .map(|e| {
            let s = |k: &str| e.get(k).and_then(|v| v.as_str()).map(String::from);
            let parts = e["parts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap().to_string())
                .collect();
            (s("cmd").unwrap(), s("section"), parts)
        })
        .collect()
}

#[test]
fn bad_arguments_as_ipvsadm() {
    let text = std::fs::read_to_string(conformance_dir().join("ipvsadm/golden.json")).unwrap();
    let golden: serde_json::Value = serde_json::from_str(&text).unwrap();
    let expected = expected();
    let missing = std::env::temp_dir().join(format!("lb-adm-conformance-{}", std::process::id()));
    let mut checked = 0;
    let mut failures = Vec::new();
    for step in golden["steps"].as_array().unwrap() {
        if step["exit"].as_i64() != Some(2) {
            continue;
        }
        let cmd = step["cmd"].as_str().unwrap();
        let section = step["section"].as_str().unwrap();
        let allowed: Vec<&String> = expected
            .iter()
            .filter(|(c, s, _)| c == cmd && s.as_deref().is_none_or(|s| s == section))
            .flat_map(|(_, _, parts)| parts)
            .collect();
        let out = Command::new(env!("CARGO_BIN_EXE_lb"))
            .arg("adm")
            .args(cmd.split_whitespace())
            .env("LB_SOCKET", missing.join("lb.sock"))
            .env("LB_BPFFS", missing.join("bpffs"))
            .output()
            .unwrap();
        checked += 1;
        let exit = out.status.code();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if exit != Some(2) && !allowed.iter().any(|p| *p == "exit") {
            failures.push(format!(
                "`{cmd}`: exit {exit:?}, ipvsadm 2 (stderr {stderr:?})"
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        if stdout != step["stdout"].as_str().unwrap() && !allowed.iter().any(|p| *p == "stdout") {
            failures.push(format!(
                "`{cmd}`: stdout {stdout:?}, ipvsadm {:?}",
                step["stdout"].as_str().unwrap()
            ));
        }
        if stderr != step["stderr"].as_str().unwrap() && !allowed.iter().any(|p| *p == "stderr") {
            failures.push(format!(
                "`{cmd}`: stderr {stderr:?}, ipvsadm {:?}",
                step["stderr"].as_str().unwrap()
            ));
        }
    }
    assert!(
        checked >= 30,
        "only {checked} argument errors in the golden file"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
