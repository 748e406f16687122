//! `cargo xtask bench --ipvs`: ipvs side by side with lb in one virtual
//! machine. The host kernel has no IP_VS and no usable KVM, so Debian's
//! stock kernel boots under qemu (TCG emulation) with the host's root
//! filesystem read-only over 9p; inside, `lb-pps` measures the XDP_TX floor,
//! lb DR / NAT, ipvs DR / NAT and nftables on the same topology with the
//! same generator, interleaved. Emulation is 25–45× slower than the host:
//! only ratios inside the VM mean anything.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _};

use crate::util::{exec, output, root};

/// Markers around the JSON the VM prints on its console.
const BEGIN: &str = "LBVM-JSON-BEGIN";
const END: &str = "LBVM-JSON-END";

/// Modules the initramfs loads to mount the host's filesystem over 9p.
const INITRD_MODULES: [&str; 3] = ["virtio_pci", "9pnet_virtio", "9p"];

/// The VM's kernel package: what Debian's `linux-image-amd64` points at.
fn kernel_package() -> anyhow::Result<String> {
    let deps = output(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    deps.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with("linux-image-") && p.ends_with("-amd64"))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("no kernel image behind linux-image-amd64:\n{deps}"))
}

/// Kernel, modules and initramfs under `dir` (kept between runs).
fn prepare(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let k = dir.join("k");
    let version_file = dir.join("kernel-version");
    if !version_file.exists() {
        let pkg = kernel_package()?;
        eprintln!("ipvs VM: fetching {pkg}");
        exec(
            Command::new("apt-get")
                .args(["download", &pkg])
                .current_dir(dir),
        )?;
        let deb = std::fs::read_dir(dir)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name().is_some_and(|n| {
                    n.to_string_lossy().starts_with(&pkg) && n.to_string_lossy().ends_with(".deb")
                })
            })
            .ok_or_else(|| anyhow!("apt-get download left no {pkg}*.deb"))?;
        exec(Command::new("dpkg").arg("-x").arg(&deb).arg(&k))?;
        std::fs::remove_file(&deb)?;
        let version = std::fs::read_dir(k.join("lib/modules"))?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .next()
            .ok_or_else(|| anyhow!("no modules in {pkg}"))?;
        exec(Command::new("depmod").arg("-b").arg(&k).arg(&version))?;
        std::fs::write(&version_file, &version)?;
    }
    let version = std::fs::read_to_string(&version_file)?.trim().to_string();
    let vmlinuz = k.join("boot").join(format!("vmlinuz-{version}"));

    // The initramfs: static busybox, the 9p modules in load order, an init
    // that mounts the host's / and switches into the script named on the
    // kernel command line.
    let initrd = dir.join("initrd.gz");
    if !initrd.exists() {
        let ir = dir.join("initramfs");
        let _ = std::fs::remove_dir_all(&ir);
        for d in ["bin", "mods", "proc", "sys", "dev", "host"] {
            std::fs::create_dir_all(ir.join(d))?;
        }
        std::fs::copy("/bin/busybox", ir.join("bin/busybox"))
            .context("/bin/busybox (busybox-static)")?;
        let mut cmd = Command::new("modprobe");
        cmd.arg("-d")
            .arg(&k)
            .args(["-S", &version, "-a", "--show-depends"]);
        cmd.args(INITRD_MODULES);
        let deps = output(&mut cmd)?;
        let mut seen = Vec::new();
        for path in deps.lines().filter_map(|l| l.strip_prefix("insmod ")) {
            let path = path.split_whitespace().next().unwrap_or_default();
            if !seen.iter().any(|s| s == path) {
                seen.push(path.to_string());
            }
        }
        for (i, m) in seen.iter().enumerate() {
            let name = Path::new(m)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            std::fs::copy(m, ir.join("mods").join(format!("{i:02}-{name}")))?;
        }
        let init = "#!/bin/busybox sh\n\
            /bin/busybox mount -t proc proc /proc\n\
            /bin/busybox mount -t sysfs sys /sys\n\
            /bin/busybox mount -t devtmpfs dev /dev\n\
            for m in /mods/*.ko; do /bin/busybox insmod $m || echo \"insmod $m failed\"; done\n\
            /bin/busybox mount -t 9p -o trans=virtio,version=9p2000.L,ro host /host || /bin/busybox poweroff -f\n\
            SCRIPT=$(/bin/busybox sed -n 's/.*lbvm=\\([^ ]*\\).*/\\1/p' /proc/cmdline)\n\
            /bin/busybox umount /proc /sys /dev\n\
            exec /bin/busybox switch_root /host \"$SCRIPT\"\n";
        let init_path = ir.join("init");
        std::fs::write(&init_path, init)?;
        std::fs::set_permissions(
            &init_path,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )?;
        let cpio = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cd '{}' && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -9 > '{}'",
                ir.display(),
                initrd.display()
            ))
            .status()?;
        if !cpio.success() {
            bail!("building the initramfs failed");
        }
    }
    // The kernel asks this wrapper for modules (veth, ip_vs, nf_tables…).
    let wrapper = dir.join("modprobe.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec /sbin/modprobe -d '{}' \"$@\"\n",
            k.display()
        ),
    )?;
    std::fs::set_permissions(
        &wrapper,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )?;
    Ok((vmlinuz, initrd))
}

/// Boots the VM, runs lb-pps there and returns its JSON document.
pub fn run(seconds: f64, rounds: u32) -> anyhow::Result<serde_json::Value> {
    let dir = root().join("target/ipvs-vm");
    let (vmlinuz, initrd) = prepare(&dir)?;
    let bin = root().join("target/release");
    let script = dir.join("inner.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n\
             mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
             mount -t tmpfs tmp /tmp\nmount -t tmpfs run /run\nmount -t bpf bpf /sys/fs/bpf\n\
             echo '{wrapper}' > /proc/sys/kernel/modprobe\n\
             echo \"LBVM: kernel $(uname -r), $(nproc) CPUs\"\n\
             cd /tmp\n\
             '{pps}' --lb '{lb}' --seconds {seconds} --rounds {rounds} \
             --methods floor,dr,nat,ipvs-dr,ipvs-nat,nft --json /tmp/ipvs.json 2>&1\n\
             echo {BEGIN}\ncat /tmp/ipvs.json\necho\necho {END}\n\
             poweroff -f\n",
            wrapper = dir.join("modprobe.sh").display(),
            pps = bin.join("lb-pps").display(),
            lb = bin.join("lb").display(),
        ),
    )?;
    std::fs::set_permissions(
        &script,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )?;
    let console = dir.join("console.log");
    eprintln!("ipvs VM: booting (emulated; the run takes a minute or two)");
    let log = std::fs::File::create(&console)?;
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "2048",
            "-nographic",
            "-nic",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&vmlinuz)
        .arg("-initrd")
        .arg(&initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 lbvm={}",
            script.display()
        ))
        .args([
            "-virtfs",
            "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let start = std::time::Instant::now();
    let limit = Duration::from_secs(900);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the ipvs VM ran past {limit:?}; console in {}",
                console.display()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let text = std::fs::read_to_string(&console)?.replace('\r', "");
    let json = text
        .split(BEGIN)
        .nth(1)
        .and_then(|t| t.split(END).next())
        .ok_or_else(|| {
            anyhow!(
                "the VM printed no results; console in {}:\n{}",
                console.display(),
                text.lines()
                    .rev()
                    .take(30)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
    let mut doc: serde_json::Value = serde_json::from_str(json.trim())
        .with_context(|| format!("the VM's JSON (console in {})", console.display()))?;
    // Console lines may start with terminal escapes.
    let kernel = text
        .lines()
        .find_map(|l| l.split("LBVM: kernel ").nth(1))
        .unwrap_or("?")
        .to_string();
    doc["vm_kernel"] = kernel.into();
    doc["date"] = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))
        .unwrap_or_default()
        .trim()
        .into();
    Ok(doc)
}
