//! The kernel's table of mounts, as `/proc/self/mountinfo` gives it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// A mount point as the kernel writes it in `/proc/mounts` and
/// `/proc/self/mountinfo`, where space, tab, newline and backslash are
/// escaped in octal (`\040`).
pub fn unescape(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = b[i + 1..i + 4]
                .iter()
                .fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsStr::from_bytes(&out))
}

/// The device (`major:minor`) of the newest mount at `mountpoint` (an
/// absolute path without symlinks), from a mountinfo text.
pub fn device_of(mountinfo: &str, mountpoint: &Path) -> Option<String> {
    // Newest last: the kernel lists mounts in the order they were made.
    mountinfo.lines().rev().find_map(|line| {
        // ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS ...
        let fields: Vec<&str> = line.split(' ').collect();
        (unescape(fields.get(4)?) == mountpoint).then(|| fields.get(2).map(|d| d.to_string()))?
    })
}

/// Read-ahead of a jfs mount, in KiB, where the kernel gives FUSE 128 KiB.
/// The kernel sends a FUSE server reads of at most 1 MiB; with 8 MiB of
/// read-ahead several are in flight at once, so the server reads the tree
/// while the last answer is copied. A cold 1 GiB read through the master's
/// mount took 0.57-0.80 s with 8 MiB, 0.75-0.91 s with 4 MiB (128 KiB
/// reads; with 1 MiB reads 0.61-0.67 s against 0.67-0.83 s) and 0.71-1.42 s
/// with 1 MiB (runs alternated; see docs/PERFORMANCE.md). The replica's
/// read-only mount takes it too, but opens files with direct I/O, so there
/// it serves only mapped files (programs run from a replica, for one).
pub const READ_AHEAD_KB: u32 = 8192;

/// Raises the read-ahead of the FUSE mount at `mountpoint` (absolute,
/// without symlinks) to [`READ_AHEAD_KB`]. FUSE cannot ask for more than
/// the kernel offers at mount time, but the setting of the mount's device
/// in sysfs can be raised after; it is the mount's own, not the machine's.
/// Reads `/proc/self/mountinfo`, never the mount, which may not be serving
/// yet. Best effort: without it, reads take more round trips and nothing
/// else changes.
pub fn raise_read_ahead(mountpoint: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    if let Some(dev) = device_of(&info, mountpoint) {
        let setting = format!("/sys/class/bdi/{dev}/read_ahead_kb");
        let _ = std::fs::write(setting, READ_AHEAD_KB.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_mount_points_and_stacked_mounts() {
        assert_eq!(unescape(r"/mnt/a\040b\134c"), Path::new(r"/mnt/a b\c"));
        let info = "\
22 1 252:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 0:41 / /mnt/a\\040b rw,nosuid - fuse.jfs jfs:/v rw,user_id=0
91 90 0:42 / /mnt/a\\040b rw,nosuid - fuse.jfs jfs:/w rw,user_id=0
92 22 0:43 / /mnt/c rw - fuse.bindfs bindfs rw
";
        assert_eq!(
            device_of(info, Path::new("/mnt/a b")).as_deref(),
            Some("0:42")
        );
        assert_eq!(
            device_of(info, Path::new("/mnt/c")).as_deref(),
            Some("0:43")
        );
        assert_eq!(device_of(info, Path::new("/mnt")), None);
    }
}
