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
