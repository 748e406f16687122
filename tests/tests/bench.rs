//! The benchmark's forwarding-rate harness works: `lb-pps` builds its
//! namespaces, the live-frames generator's frames go through the XDP_TX
//! reflector and through `lb run` (DR) and come back, and everything it made
//! is gone afterwards. Timings are printed, never asserted.
use std::process::Command;

use lb_tests::Bins;

#[test]
fn forwarding_rate_harness_measures_and_cleans_up() {
    let _g = lb_tests::serial();
    let bins = Bins::from_target_dir(env!("CARGO_BIN_EXE_nsprobe"));
    let pps = bins.lb.with_file_name("lb-pps");
    assert!(
        pps.exists(),
        "{} not built (`cargo build -p lb-bench`; `cargo xtask test` does)",
        pps.display()
    );
    let json = std::env::temp_dir().join(format!("lb-pps-test-{}.json", std::process::id()));
    let out = Command::new(&pps)
        .arg("--lb")
        .arg(&bins.lb)
        .args(["--seconds", "0.05", "--rounds", "1", "--flows", "64"])
        .args(["--methods", "floor,dr"])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    println!("{stdout}");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    for m in doc["methods"].as_array().unwrap() {
        // Every generated frame came back: forwarded, not dropped or passed.
        let back = m["delivered"][0].as_f64().unwrap();
        assert!(
            back > 0.99,
            "{}: {back} of the frames came back",
            m["method"]
        );
        assert!(m["median_pps"].as_f64().unwrap() > 0.0);
    }
    let left = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.contains("lbpps-"), "namespaces left behind:\n{left}");
}
