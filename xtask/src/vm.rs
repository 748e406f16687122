//! The emulated virtual machine with ipvs: Debian's stock kernel under qemu
//! (TCG: the host kernel has no IP_VS and no usable KVM) with the host's
//! root filesystem read-only over 9p. `cargo xtask bench --ipvs` measures
//! ipvs there, `cargo xtask conformance` plays ipvsadm there. Emulation is
//! 25–45× slower than the host: one boot runs a whole job.
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _};

use crate::util::{exec, output, root};

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

/// Kernel, modules and initramfs under `dir` (kept between runs): the
/// kernel image and the gzipped initramfs.
fn prepare(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let k = dir.join("k");
    let version_file = dir.join("kernel-version");
    if !version_file.exists() {
        let pkg = kernel_package()?;
        eprintln!("VM: fetching {pkg}");
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

/// A prepared VM: kernel and initramfs under `target/ipvs-vm`.
pub struct Vm {
    dir: PathBuf,
    vmlinuz: PathBuf,
    initrd: PathBuf,
}

impl Vm {
    /// Fetches the kernel package and builds the initramfs on first use
    /// (kept in `target/ipvs-vm` afterwards).
    pub fn prepare() -> anyhow::Result<Vm> {
        let dir = root().join("target/ipvs-vm");
        let (vmlinuz, initrd) = prepare(&dir)?;
        Ok(Vm {
            dir,
            vmlinuz,
            initrd,
        })
    }

    /// The directory the VM's files live in (scripts, console logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The shell lines every job starts with: the usual mounts (/tmp, /run
    /// tmpfs; bpffs), the kernel's module helper pointed at the VM kernel's
    /// modules, a sane PATH and locale, and one `LBVM: kernel …` line.
    fn prelude(&self) -> String {
        format!(
            "#!/bin/sh\n\
             export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C\n\
             mount -t proc proc /proc\nmount -t sysfs sys /sys\nmount -t devtmpfs dev /dev\n\
             mount -t tmpfs tmp /tmp\nmount -t tmpfs run /run\nmount -t bpf bpf /sys/fs/bpf\n\
             echo '{wrapper}' > /proc/sys/kernel/modprobe\n\
             echo \"LBVM: kernel $(uname -r), $(nproc) CPUs\"\n",
            wrapper = self.dir.join("modprobe.sh").display(),
        )
    }

    /// `modprobe` for the VM's kernel, for use in a job's script.
    pub fn modprobe(&self) -> PathBuf {
        self.dir.join("modprobe.sh")
    }

    /// Boots the VM and runs `job` (shell, after the prelude) as its init;
    /// the VM powers off when `job` ends. With `out`, that host directory is
    /// mounted writable at `/tmp/out` inside (results come back there).
    /// Returns the console text (carriage returns removed) and what the VM
    /// said of itself (`RELEASE, N CPUs`); fails past `limit`, or when qemu cannot start.
    pub fn run(
        &self,
        name: &str,
        job: &str,
        out: Option<&Path>,
        limit: Duration,
    ) -> anyhow::Result<(String, String)> {
        let script = self.dir.join(format!("{name}.sh"));
        let mut body = self.prelude();
        if out.is_some() {
            body.push_str(
                "mkdir -p /tmp/out\n\
                 mount -t 9p -o trans=virtio,version=9p2000.L out /tmp/out || poweroff -f\n",
            );
        }
        body.push_str(job);
        body.push_str("\npoweroff -f\n");
        std::fs::write(&script, body)?;
        std::fs::set_permissions(
            &script,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
        )?;
        let console = self.dir.join(format!("{name}-console.log"));
        let log = std::fs::File::create(&console)?;
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
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
        .arg(&self.vmlinuz)
        .arg("-initrd")
        .arg(&self.initrd)
        .arg("-append")
        .arg(format!(
            "console=ttyS0 quiet panic=-1 lbvm={}",
            script.display()
        ))
        .args([
            "-virtfs",
            "local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap",
        ]);
        if let Some(out) = out {
            std::fs::create_dir_all(out)?;
            cmd.arg("-virtfs").arg(format!(
                "local,path={},mount_tag=out,security_model=none",
                out.display()
            ));
        }
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting qemu-system-x86_64")?;
        let start = std::time::Instant::now();
        loop {
            if child.try_wait()?.is_some() {
                break;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "the VM ran past {limit:?}; console in {}",
                    console.display()
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        let text = std::fs::read_to_string(&console)?.replace('\r', "");
        // Console lines may start with terminal escapes.
        let kernel = text
            .lines()
            .find_map(|l| l.split("LBVM: kernel ").nth(1))
            .unwrap_or("?")
            .to_string();
        Ok((text, kernel))
    }
}

/// The last `n` lines of `text`, for error messages.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
