//! Shared helpers for the end-to-end tests: the real binaries, built once.

#![allow(dead_code)]

pub mod tmpfs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Path of a workspace binary (`jfs-master`, `jfs-replica`). `cargo test`
/// builds only this package's targets, so the binaries are built here once,
/// with the same profile, into the same target directory.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        // Test executables live in target/<profile dir>/deps; binaries one
        // level up. The dev profile's directory is `debug`.
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().to_owned();
        let profile = match dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev".to_owned(),
            Some(other) => other.to_owned(),
        };
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "--workspace", "--bins", "--profile"])
            .arg(&profile)
            .arg("--manifest-path")
            .arg(&manifest)
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build --workspace --bins --profile {profile} failed"
        );
        dir
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

/// The read-ahead (KiB) of the mount at `mnt`, from its device in sysfs.
pub fn read_ahead_kb(mnt: &Path) -> u32 {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(mnt).unwrap().dev();
    let setting = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        rustix::fs::major(dev),
        rustix::fs::minor(dev)
    );
    std::fs::read_to_string(&setting)
        .unwrap_or_else(|e| panic!("read {setting}: {e}"))
        .trim()
        .parse()
        .unwrap()
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

/// A fresh volume mounted at `DIR/mnt`: (dir, vol, mnt, mount).
pub fn mounted() -> (tempfile::TempDir, PathBuf, PathBuf, MountedMaster) {
    mounted_with(&[])
}

/// `jfs-master mount` options for one thread reading requests and handing
/// long ones to workers, what `--fuse-readers auto` picks where the
/// kernel's fuse `wake_here` is on (see libjfs::fuse::threads). Tests of
/// long requests run with it, so both ways are tested on any kernel.
pub const ONE_READER: &[&str] = &["--fuse-readers", "1"];

/// [`mounted`], with `extra` options for `jfs-master mount`.
pub fn mounted_with(extra: &[&str]) -> (tempfile::TempDir, PathBuf, PathBuf, MountedMaster) {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    let mnt = dir.path().join("mnt");
    ok("jfs-master", &[&"init", &vol]);
    std::fs::create_dir(&mnt).unwrap();
    let m = MountedMaster::start(&vol, &mnt, extra);
    (dir, vol, mnt, m)
}

/// Runs a shell script (`sh -e`) and expects it to succeed.
pub fn sh(script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).output().unwrap();
    assert!(
        out.status.success(),
        "script failed: {script}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Crate source directories from the cargo registry, enough for `files` files.
pub fn real_sources(files: usize) -> Vec<PathBuf> {
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cargo"));
    let mut crates: Vec<PathBuf> = std::fs::read_dir(home.join("registry/src"))
        .expect("the cargo registry sources (they exist once the workspace is built)")
        .flat_map(|index| std::fs::read_dir(index.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    crates.sort();
    let mut picked = Vec::new();
    let mut count = 0;
    for c in crates {
        if count >= files {
            break;
        }
        count += walk_count(&c);
        picked.push(c);
    }
    assert!(
        count >= files,
        "only {count} files in the cargo registry sources"
    );
    picked
}

/// Every entry below `p` (directories included), relative to it, sorted.
pub fn walk_paths(p: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            out.push(e.path().strip_prefix(root).unwrap().to_owned());
            if e.file_type().unwrap().is_dir() {
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    walk(p, p, &mut out);
    out.sort();
    out
}

/// Entries below `p`, directories included; 0 when `p` is no directory.
pub fn walk_count(p: &Path) -> usize {
    if p.is_dir() {
        walk_paths(p).len()
    } else {
        0
    }
}

/// What people do to a tree after copying it in, run in `dir` (which holds
/// at least three directories): edits of `edits` source files, renames,
/// removal, hardlinks, symlinks, modes, owners, an old mtime, sparse files,
/// truncation, deep moves, a fifo, setuid.
pub fn everyday_edits(dir: &Path, edits: usize) {
    sh(&format!(
        r#"
        cd '{d}'
        a=$(ls | sed -n 1p); b=$(ls | sed -n 2p); c=$(ls | sed -n 3p)
        find "$a" -name '*.rs' | head -{edits} | xargs sed -i 's/fn /fn  /'
        mv "$a" "$a-renamed"
        rm -rf "$b"
        ln "$a-renamed/Cargo.toml" hardlink
        ln -s "$a-renamed" symlink
        ln -s /nonexistent/target dangling
        chmod -R g+w,o-r "$c"
        chown -R 1234:5678 "$c"
        touch -d '2001-02-03 04:05:06.789' "$c/Cargo.toml"
        dd if=/dev/urandom of=sparse bs=4096 count=3 seek=1000 status=none
        truncate -s 10M sparse2
        head -c 100000 /dev/urandom > shrink && truncate -s 777 shrink
        echo tail >> shrink
        mkdir -p deep/a/b/c/d/e/f && echo deep > deep/a/b/c/d/e/f/g
        mv deep/a/b/c deep/c-moved
        mkfifo fifo
        chmod 4755 shrink
        "#,
        d = dir.display()
    ));
}

/// Asserts that two trees are identical as `compare_trees` sees them,
/// listing the first differences when they are not.
pub fn assert_same_tree(left: &Path, right: &Path) {
    use libjfs::compare::{compare_trees, CompareOptions};
    let diffs = compare_trees(left, right, &CompareOptions::default()).unwrap();
    assert!(
        diffs.is_empty(),
        "{} and {} differ ({} differences):\n{}",
        left.display(),
        right.display(),
        diffs.len(),
        diffs
            .iter()
            .take(30)
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
