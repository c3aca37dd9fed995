//! Reading the tree's files to answer a mount's reads.
//!
//! A FUSE read of a large file goes through two page caches: the tree's,
//! where the server reads, and the mount's, where the kernel keeps the
//! answer for the reader. The second is the one readers hit again, so for
//! the large reads the kernel's read-ahead sends, a handle of the master
//! reads what the tree does not already cache with direct I/O
//! ([`DirectFile`]): one copy of each byte fewer, no page cache filled
//! twice, and about half the server's CPU for a cold read of a large file
//! (docs/PERFORMANCE.md). What the tree caches (a file just written in
//! small pieces, whose data the kernel did not keep on the mount's side)
//! is read from its cache as before; large writes do not stay in the
//! tree's cache (`Tree`'s uncached writes), so such a file is read from
//! the disk.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::sync::OnceLock;

use crate::master::{errno_of, Result};

/// Reads of at least this many bytes may go around the tree's page cache:
/// the kernel's read-ahead of a sequential reader asks for up to 1 MiB at
/// a time. Smaller reads (a reader jumping about, the first read of a
/// file) keep the tree's own read-ahead.
const DIRECT_READ_BYTES: usize = 256 << 10;

/// Offsets, lengths and buffers of direct reads are multiples of this:
/// a page, which covers every logical block size Linux filesystems use.
/// A filesystem that wants more refuses (`EINVAL`) and is read through
/// its page cache.
const DIRECT_ALIGN: usize = 4096;

/// A handle's file opened a second time with `O_DIRECT`, at its first
/// large read. Opened through `/proc/self/fd`, so it is the same inode
/// even after the file was renamed or unlinked.
#[derive(Default)]
pub(crate) struct DirectFile(OnceLock<Option<File>>);

impl DirectFile {
    /// Whether opening it was tried and refused.
    fn refused(&self) -> bool {
        matches!(self.0.get(), Some(None))
    }

    /// The direct file, or `None` where the filesystem of the tree (or a
    /// missing `/proc`) does not allow it; then every read goes through
    /// the page cache.
    fn get(&self, file: &File) -> Option<&File> {
        self.0
            .get_or_init(|| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_DIRECT)
                    .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
                    .ok()
            })
            .as_ref()
    }
}

/// Reads up to `size` bytes of `file` at `offset` (fewer only at its end)
/// into a buffer each thread keeps, and hands them to `f`, which answers
/// the kernel. A FUSE read asks for up to 1 MiB: a fresh zeroed buffer for
/// each took a tenth of the server's CPU when reading a large file. `f`
/// must not read through here again.
///
/// With `direct`, a large aligned read of a range the tree's page cache
/// holds nothing of is read with direct I/O; anything that does not fit
/// (an unaligned end, a refusal) is read through the page cache.
pub(crate) fn read_reusing<T>(
    file: &File,
    direct: Option<&DirectFile>,
    offset: u64,
    size: u32,
    f: impl FnOnce(Result<&[u8]>) -> T,
) -> T {
    thread_local! {
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    BUF.with_borrow_mut(|buf| {
        let size = size as usize;
        if buf.len() < size + DIRECT_ALIGN {
            buf.resize(size + DIRECT_ALIGN, 0);
        }
        let skew = buf.as_ptr().align_offset(DIRECT_ALIGN);
        let buf = &mut buf[skew..skew + size];
        let mut got = 0;
        let mut end = false;
        if let Some(direct) = direct
            .filter(|d| !d.refused() && goes_direct(file, offset, size))
            .and_then(|d| d.get(file))
        {
            (got, end) = read_direct(direct, buf, offset);
        }
        while got < size && !end {
            match file.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => end = true,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return f(Err(errno_of(&e))),
            }
        }
        f(Ok(&buf[..got]))
    })
}

/// Whether a read of `size` bytes at `offset` is large and aligned enough
/// for direct I/O, and the tree caches none of it.
fn goes_direct(file: &File, offset: u64, size: usize) -> bool {
    size >= DIRECT_READ_BYTES
        && offset.is_multiple_of(DIRECT_ALIGN as u64)
        && size.is_multiple_of(DIRECT_ALIGN)
        && cached_pages(file, offset, size as u64) == Some(0)
}

/// Reads `buf` at `offset` with direct I/O for as long as it can: how much
/// it read, and whether it reached the end of the file. It stops at the
/// first error, leaving the rest to the page cache, which reports real
/// errors itself.
fn read_direct(direct: &File, buf: &mut [u8], offset: u64) -> (usize, bool) {
    let mut got = 0;
    while got < buf.len() && got.is_multiple_of(DIRECT_ALIGN) {
        match direct.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => return (got, true),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    (got, false)
}

/// How many pages of `file`'s range the page cache holds (`cachestat`,
/// Linux 6.5), or `None` where the kernel cannot say.
pub fn cached_pages(file: &File, offset: u64, len: u64) -> Option<u64> {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct CacheStat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    // System calls added from Linux 5.1 on have one number on these
    // architectures (MIPS adds an offset per ABI); libc names this one
    // only on some.
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "x86",
        target_arch = "aarch64",
        target_arch = "arm",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64",
    )))]
    return None;
    const SYS_CACHESTAT: libc::c_long = 451;
    let range = Range { off: offset, len };
    let mut stat = CacheStat::default();
    // SAFETY: both pointers are to live values of the layouts the system
    // call reads and writes; the descriptor is open for the call.
    let r = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut CacheStat,
            0u32,
        )
    };
    (r == 0).then_some(stat.nr_cache)
}

/// Calls `nudge`, then `cached_pages`, until it reports `want` or five
/// seconds pass, and returns what it saw last. The kernel finishes work
/// on a file's pages after the calls that start it return: read-ahead
/// goes on past the read that started it (and `fadvise` skips pages under
/// I/O), and written-back uncached pages can be dropped only after the
/// `fsync` that waited for them has woken.
#[cfg(test)]
pub(crate) fn cached_pages_settle(
    file: &File,
    offset: u64,
    len: u64,
    want: u64,
    mut nudge: impl FnMut(),
) -> Option<u64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        nudge();
        let got = cached_pages(file, offset, len);
        if got == Some(want) || std::time::Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file of `len` pseudo-random bytes on a disk-backed filesystem,
    /// written back and dropped from the page cache.
    fn cold_file(len: usize) -> (tempfile::TempDir, File, Vec<u8>) {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..len as u64)
            .map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
            .collect();
        let mut f = File::create(&path).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let f = File::open(&path).unwrap();
        evict(&f);
        (dir, f, data)
    }

    /// Drops `file`'s pages from the page cache, waiting out any I/O on
    /// them (which `fadvise` skips).
    fn evict(file: &File) {
        let drop = || rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert_eq!(
            cached_pages_settle(file, 0, 0, 0, drop),
            Some(0),
            "pages left"
        );
    }

    fn read(file: &File, direct: Option<&DirectFile>, offset: u64, size: u32) -> Vec<u8> {
        read_reusing(file, direct, offset, size, |r| r.unwrap().to_vec())
    }

    #[test]
    fn large_reads_of_an_uncached_range_bypass_the_trees_page_cache() {
        let len = 3 << 20;
        let (_dir, file, data) = cold_file(len + 1000);
        let direct = DirectFile::default();
        let got = read(&file, Some(&direct), 1 << 20, 1 << 20);
        assert_eq!(got, data[1 << 20..2 << 20]);
        assert_eq!(
            cached_pages(&file, 0, 0),
            Some(0),
            "read around the page cache"
        );
        // Across the end of the file: the direct read stops there.
        let got = read(&file, Some(&direct), 2 << 20, 2 << 20);
        assert_eq!(got, data[2 << 20..]);
        // Without `direct` (the replica's mount), the page cache serves.
        let got = read(&file, None, 0, 1 << 20);
        assert_eq!(got, data[..1 << 20]);
        assert_eq!(cached_pages(&file, 0, 1 << 20), Some(256));
    }

    #[test]
    fn cached_small_and_unaligned_reads_use_the_page_cache() {
        let (_dir, file, data) = cold_file(4 << 20);
        let direct = DirectFile::default();
        // A range the tree caches part of is read from the cache.
        read(&file, None, 0, 4096);
        let got = read(&file, Some(&direct), 0, 1 << 20);
        assert_eq!(got, data[..1 << 20]);
        assert_eq!(cached_pages(&file, 0, 1 << 20), Some(256));
        // Small reads and unaligned ones of a cold file too: every page
        // they cover ends up cached.
        evict(&file);
        let got = read(&file, Some(&direct), 2 << 20, 64 << 10);
        assert_eq!(got, data[2 << 20..(2 << 20) + (64 << 10)]);
        assert_eq!(cached_pages(&file, 2 << 20, 64 << 10), Some(16));
        evict(&file);
        let got = read(&file, Some(&direct), (3 << 20) + 1, 512 << 10);
        assert_eq!(got, data[(3 << 20) + 1..(3 << 20) + 1 + (512 << 10)]);
        assert_eq!(cached_pages(&file, 3 << 20, (512 << 10) + 1), Some(129));
    }
}
