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
