//! Helpers both benchmarks use to describe the machine and format figures.

#![allow(dead_code)]

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

/// The three load averages, as /proc/loadavg gives them.
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Cores, kernel release, CPU model and memory, as /proc tells them.
pub fn machine() -> (usize, String, String, String) {
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let field = |file: &str, key: &str| {
        fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix(key)
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            })
            .unwrap_or_else(|| "?".into())
    };
    (
        nproc,
        kernel,
        field("/proc/cpuinfo", "model name"),
        field("/proc/meminfo", "MemTotal"),
    )
}

/// Bytes as decimal megabytes.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// `JFS_BENCH_SCALE` (default 1): how much of each workload to run.
pub fn scale() -> anyhow::Result<f64> {
    let scale: f64 = match std::env::var("JFS_BENCH_SCALE") {
        Ok(s) => s
            .parse()
            .map_err(|_| anyhow::anyhow!("JFS_BENCH_SCALE={s:?} is not a number"))?,
        Err(_) => 1.0,
    };
    if !(scale > 0.0 && scale.is_finite()) {
        anyhow::bail!("JFS_BENCH_SCALE must be a positive number, not {scale}");
    }
    Ok(scale)
}

/// `JFS_BENCH_DIR` (default /var/tmp): where benchmarks make their scratch directory.
pub fn bench_base() -> PathBuf {
    std::env::var_os("JFS_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

/// Builds the workspace's binaries in this profile's target directory (as
/// the tests do) and returns the path of each of `names`.
pub fn build_binaries<const N: usize>(names: [&str; N]) -> anyhow::Result<[PathBuf; N]> {
    use anyhow::{ensure, Context};
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--quiet", "--workspace", "--bins"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let status = cmd
        .arg("--manifest-path")
        .arg(&manifest)
        .status()
        .context("run cargo build")?;
    ensure!(status.success(), "cargo build --workspace --bins failed");
    // Bench executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .context("bench executable has no target directory")?;
    let paths = names.map(|n| dir.join(n));
    for p in &paths {
        ensure!(p.exists(), "{} was not built", p.display());
    }
    Ok(paths)
}

/// The kernel's FUSE `wake_here` setting for one run (see
/// `libjfs::fuse::threads`): `JFS_BENCH_WAKE_HERE=Y` or `N` sets it before
/// anything is mounted, and dropping the guard puts the old value back;
/// unset, the machine's setting stands. Mounts choose their threads when
/// they start, so this must come before the first mount.
pub struct WakeHere {
    before: Option<String>,
}

impl WakeHere {
    pub fn from_env() -> anyhow::Result<WakeHere> {
        use libjfs::fuse::threads::WAKE_HERE_PARAMETER;
        let Ok(want) = std::env::var("JFS_BENCH_WAKE_HERE") else {
            return Ok(WakeHere { before: None });
        };
        if want != "Y" && want != "N" {
            anyhow::bail!("JFS_BENCH_WAKE_HERE must be Y or N, not {want:?}");
        }
        let before = fs::read_to_string(WAKE_HERE_PARAMETER).map_err(|e| {
            anyhow::anyhow!(
                "JFS_BENCH_WAKE_HERE is set, but this kernel has no {WAKE_HERE_PARAMETER}: {e}"
            )
        })?;
        fs::write(WAKE_HERE_PARAMETER, &want)
            .map_err(|e| anyhow::anyhow!("set {WAKE_HERE_PARAMETER} to {want}: {e}"))?;
        Ok(WakeHere {
            before: Some(before.trim().to_owned()),
        })
    }

    /// What the header says of the setting in force.
    pub fn describe(&self) -> String {
        let now = match libjfs::fuse::threads::wakes_here() {
            Some(true) => "Y (each jfs mount has one thread reading its requests)",
            Some(false) => "N",
            None => "not in this kernel",
        };
        match &self.before {
            Some(before) => {
                format!("{now}, set by JFS_BENCH_WAKE_HERE for this run (it was {before})")
            }
            None => format!(
                "{now}, as the machine is set up (JFS_BENCH_WAKE_HERE=Y|N changes it for a run)"
            ),
        }
    }
}

impl Drop for WakeHere {
    fn drop(&mut self) {
        if let Some(before) = &self.before {
            let _ = fs::write(libjfs::fuse::threads::WAKE_HERE_PARAMETER, before);
        }
    }
}
