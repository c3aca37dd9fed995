//! A tmpfs mounted for a test: a small disk that fills up, or runs out of
//! inodes, on purpose. Unmounted on drop, even when the test failed.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::is_mounted;

pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Creates `dir` and mounts a tmpfs of `size` (as `mount -o size=` takes it) there.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        Tmpfs::mount_with(dir, &format!("size={size}"))
    }

    /// Creates `dir` and mounts a tmpfs there with `options` (`mount -o`),
    /// e.g. `size=64m,nr_inodes=200`.
    pub fn mount_with(dir: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mount -t tmpfs -o {options} {}",
            dir.display()
        );
        Tmpfs(dir.to_owned())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Grows (or shrinks) it to `size`, keeping what it holds.
    pub fn resize(&self, size: &str) {
        self.remount(&format!("size={size}"));
    }

    /// Remounts it with `options` (e.g. `nr_inodes=1000`), keeping what it holds.
    pub fn remount(&self, options: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success(), "remount {} with {options}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let st = Command::new("umount").arg(&self.0).status();
            if !st.is_ok_and(|s| s.success()) {
                let _ = Command::new("umount").arg("-l").arg(&self.0).status();
            }
        }
    }
}
