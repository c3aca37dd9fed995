//! Helpers shared by the integration tests of libjfs.
#![allow(dead_code)]

/// Bytes that do not compress (xorshift), the same sequence on every run.
pub struct Noise(u64);

impl Noise {
    pub fn new() -> Noise {
        Noise(0x9e37_79b9_7f4a_7c15)
    }

    /// The next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                self.0 as u8
            })
            .collect()
    }
}

/// A tmpfs (or another filesystem in memory) mounted for a test at a new
/// directory `path` (as root), unmounted on drop.
pub struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    pub fn mount(path: &std::path::Path, options: &str) -> Tmpfs {
        Tmpfs::mount_type(path, "tmpfs", options)
    }

    /// A filesystem of type `fstype` that needs no device, such as ramfs.
    pub fn mount_type(path: &std::path::Path, fstype: &str, options: &str) -> Tmpfs {
        std::fs::create_dir(path).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", fstype, "-o", options, fstype])
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "mount -t {fstype} -o {options} (needs root)");
        Tmpfs(path.to_owned())
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// Takes all the room but `leave` bytes with the file `name`, which
    /// gives it back when removed.
    pub fn fill(&self, name: &str, leave: u64) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        let chunk = vec![1u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        while f.write_all(&chunk[..512]).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(leave)).unwrap();
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}
