//! Shared helpers for the end-to-end tests: the real binaries, built once.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Path of a workspace binary (`jfs-master`, `jfs-replica`). `cargo test`
/// builds only this package's targets, so the binaries are built here once,
/// with the same profile, into the same target directory.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args([
                "build",
                "--quiet",
                "--workspace",
                "--bins",
                "--manifest-path",
            ])
            .arg(&manifest)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --workspace --bins failed");
        // Test executables live in target/<profile>/deps; binaries one level up.
        let exe = std::env::current_exe().unwrap();
        exe.parent().unwrap().parent().unwrap().to_owned()
    });
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// Runs a binary and returns its output.
pub fn run(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut cmd = Command::new(bin(name));
    for a in args {
        cmd.arg(a);
    }
    cmd.output().unwrap_or_else(|e| panic!("run {name}: {e}"))
}

/// Runs a binary and expects success; returns stdout.
pub fn ok(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> String {
    let out = run(name, args);
    assert!(
        out.status.success(),
        "{name} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs a binary and expects exit code `code`; returns stderr.
pub fn fails(name: &str, args: &[&dyn AsRef<std::ffi::OsStr>], code: i32) -> String {
    let out = run(name, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{name} should exit {code}:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// True when `path` is a mount point (as /proc/self/mounts lists it).
pub fn is_mounted(path: &Path) -> bool {
    let want = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .any(|m| Path::new(&m.replace("\\040", " ")) == want)
}

/// A running `jfs-master mount`. Dropping it unmounts (lazily if it must)
/// and reaps the process, even when the test failed half-way.
pub struct MountedMaster {
    pub child: Option<std::process::Child>,
    pub mnt: PathBuf,
    pub vol: PathBuf,
}

impl MountedMaster {
    /// Starts `jfs-master mount VOL MNT [extra...]` and waits until it is mounted.
    pub fn start(vol: &Path, mnt: &Path, extra: &[&str]) -> MountedMaster {
        let child = Command::new(bin("jfs-master"))
            .arg("mount")
            .arg(vol)
            .arg(mnt)
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start jfs-master mount");
        let mut m = MountedMaster {
            child: Some(child),
            mnt: mnt.to_owned(),
            vol: vol.to_owned(),
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !is_mounted(mnt) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                m.child
                    .take()
                    .unwrap()
                    .stderr
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                panic!("jfs-master mount exited with {status}: {err}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} was not mounted in time",
                mnt.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        m
    }

    /// Sends `signal` and waits for the process; returns its exit and stderr.
    pub fn stop_with(
        &mut self,
        signal: rustix::process::Signal,
    ) -> (std::process::ExitStatus, String) {
        let child = self.child.take().expect("already stopped");
        let pid = rustix::process::Pid::from_child(&child);
        rustix::process::kill_process(pid, signal).expect("signal jfs-master");
        finish(child)
    }

    /// Unmounts the way an admin would (fusermount3 -u) and waits for a clean exit.
    pub fn unmount(mut self) -> String {
        // The kernel sends FUSE release requests after close() returns, so a
        // mount can be busy for a moment after the last file is closed.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let out = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .output()
                .expect("run fusermount3");
            if out.status.success() {
                break;
            }
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("busy") && std::time::Instant::now() < deadline,
                "fusermount3 -u {} failed: {err}",
                self.mnt.display()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let (status, err) = finish(self.child.take().unwrap());
        assert!(status.success(), "jfs-master exited with {status}: {err}");
        err
    }
}

/// Waits for `child` and returns its exit status and stderr.
fn finish(mut child: std::process::Child) -> (std::process::ExitStatus, String) {
    let status = child.wait().unwrap();
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, err)
}

impl Drop for MountedMaster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg("-z")
                .arg(&self.mnt)
                .status();
        }
    }
}
