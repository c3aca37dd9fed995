//! How a FUSE mount spreads the kernel's requests over threads.
//!
//! Most requests a program makes on a mount are synchronous and short: the
//! caller sleeps until the answer comes, and the server's work (a `stat`, a
//! journal append to the page cache) takes a few microseconds. What such a
//! request costs is then mostly two wakeups: the server thread reading
//! `/dev/fuse`, and the caller when the answer comes. Where each side is
//! woken decides how long that takes (docs/PERFORMANCE.md measures it): on
//! another vCPU it is an interrupt between vCPUs, tens of microseconds on a
//! VM whose idle vCPUs halt; on the vCPU that is about to sleep anyway it is
//! a context switch.
//!
//! Some kernels can be told to wake the other side on the waking CPU (the
//! `fuse` module parameter `wake_here`, see [`wakes_here`]). Then one thread
//! reading `/dev/fuse` is fastest: the caller's request puts it on the
//! caller's vCPU and its answer puts the caller back, so a small file costs
//! less than half of what it costs with eight readers, which gain little
//! from the setting (another reader is woken elsewhere, as without it).
//! One reader must not sleep on the disk, or every request behind it
//! waits: so with one reader, requests that can take long (an `fsync`,
//! large reads and writes, truncates, copies, allocations) go to a pool of
//! [`Workers`] and are answered from there.
//! Without the setting, several threads read `/dev/fuse` and answer what
//! they read themselves, and nothing is handed on.
//!
//! This module only decides and runs threads; it knows nothing of jfs.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Where this kernel says whether FUSE wakes the other side on the waking CPU.
pub const WAKE_HERE_PARAMETER: &str = "/sys/module/fuse/parameters/wake_here";

/// The kernel's `wake_here` setting: `Some(true)` when FUSE wakes the
/// other side of a request on the waking CPU, `None` when this kernel has
/// no such setting (or it cannot be read).
pub fn wakes_here() -> Option<bool> {
    read_flag(Path::new(WAKE_HERE_PARAMETER))
}

/// One line for a tool to print when it mounts with `readers`: how this
/// kernel's setting serves the mount, or how to make small-file work
/// faster where the kernel has the setting and it is off. `None` where the
/// kernel has none.
pub fn advice(readers: Readers) -> Option<String> {
    wakes_here().map(|wake_here| advice_for(wake_here, readers))
}

/// [`advice`] for the setting `wake_here`.
fn advice_for(wake_here: bool, readers: Readers) -> String {
    let here = "the kernel wakes each side of a FUSE request on the CPU that answers it \
                (fuse wake_here=Y)";
    match (wake_here, readers) {
        (true, Readers::Auto | Readers::Count(1)) => {
            format!("{here}: one thread reads requests, long ones run beside it")
        }
        (true, Readers::Count(n)) => {
            format!("{here}, but {n} threads read requests: with one (--fuse-readers auto) it gains more")
        }
        (false, _) => format!(
            "small-file work on FUSE mounts is about twice as fast with \
             `echo Y > {WAKE_HERE_PARAMETER}` (see docs/PERFORMANCE.md)"
        ),
    }
}

/// A boolean module parameter: `Y` or `N` (`1` or `0` on some kernels).
fn read_flag(path: &Path) -> Option<bool> {
    match std::fs::read_to_string(path).ok()?.trim() {
        "Y" | "y" | "1" => Some(true),
        "N" | "n" | "0" => Some(false),
        _ => None,
    }
}

/// Requests that move at least this many bytes count as long (see
/// [`Threads::long`]): a read or write of 64 KiB or more is a large file's
/// read-ahead or a bulk copy, not a small file's one request.
pub const LONG_IO_BYTES: usize = 64 << 10;

/// How many threads read `/dev/fuse`, as a mount is told (`--fuse-readers`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Readers {
    /// One where the kernel wakes callers on the waking CPU
    /// ([`wakes_here`]), the mount's usual number otherwise.
    #[default]
    Auto,
    /// This many (at least one).
    Count(usize),
}

impl std::str::FromStr for Readers {
    type Err = String;

    fn from_str(s: &str) -> Result<Readers, String> {
        match s {
            "auto" => Ok(Readers::Auto),
            n => match n.parse::<usize>() {
                Ok(n) if (1..=256).contains(&n) => Ok(Readers::Count(n)),
                _ => Err(format!(
                    "{s:?} is not a number of threads (use auto, or 1 to 256)"
                )),
            },
        }
    }
}

impl std::fmt::Display for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Readers::Auto => f.write_str("auto"),
            Readers::Count(n) => write!(f, "{n}"),
        }
    }
}

/// How one mount answers the kernel: how many threads read `/dev/fuse`, and
/// where long requests run. One reader hands long requests to workers;
/// several readers answer everything they read themselves.
pub struct Threads {
    readers: usize,
    workers: Option<Workers>,
}

impl Threads {
    /// The plan for `readers` on this kernel: [`Readers::Auto`] is one
    /// reader where FUSE wakes callers on the waking CPU and `usual`
    /// otherwise. With one reader, `workers` threads named after `name`
    /// run the long requests.
    pub fn new(
        name: &str,
        readers: Readers,
        usual: usize,
        workers: usize,
    ) -> std::io::Result<Threads> {
        let readers = match readers {
            Readers::Auto if wakes_here() == Some(true) => 1,
            Readers::Auto => usual,
            Readers::Count(n) => n,
        };
        Threads::with_readers(name, readers, workers)
    }

    fn with_readers(name: &str, readers: usize, workers: usize) -> std::io::Result<Threads> {
        Ok(if readers <= 1 {
            Threads {
                readers: 1,
                workers: Some(Workers::start(name, workers.max(1))?),
            }
        } else {
            Threads {
                readers,
                workers: None,
            }
        })
    }

    /// How many threads read `/dev/fuse` (fuser's `n_threads`).
    pub fn readers(&self) -> usize {
        self.readers
    }

    /// How many workers run long requests (0: the readers run them).
    pub fn workers(&self) -> usize {
        self.workers.as_ref().map_or(0, |w| w.threads.len())
    }

    /// Runs `job`, a request that can take long, on a worker when there are
    /// workers, and here otherwise. `job` must answer its request itself.
    pub fn long(&self, job: impl FnOnce() + Send + 'static) {
        match &self.workers {
            Some(w) => w.run(Box::new(job)),
            None => job(),
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of threads that run jobs in the order they came. Dropping
/// it waits for every job already handed to it.
pub struct Workers {
    queue: Option<mpsc::Sender<Job>>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    fn start(name: &str, n: usize) -> std::io::Result<Workers> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let threads = (0..n)
            .map(|i| {
                let rx = rx.clone();
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || loop {
                        // The lock is held only while waiting for the next job.
                        let job = match rx.lock().unwrap_or_else(|p| p.into_inner()).recv() {
                            Ok(job) => job,
                            Err(_) => return,
                        };
                        // A job that panics has dropped its reply, which
                        // answers EIO; the worker goes on with the next.
                        let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                    })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Workers {
            queue: Some(tx),
            threads,
        })
    }

    fn run(&self, job: Job) {
        if let Some(queue) = &self.queue {
            // Sending fails only once every worker is gone; the job then
            // runs here rather than being lost.
            if let Err(mpsc::SendError(job)) = queue.send(job) {
                job();
            }
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        drop(self.queue.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn without_wake_here_the_readers_answer_everything_themselves() {
        let t = Threads::with_readers("t", 8, 4).unwrap();
        assert_eq!((t.readers(), t.workers()), (8, 0));
        let here = std::thread::current().id();
        let ran_on = Arc::new(Mutex::new(None));
        let r = ran_on.clone();
        t.long(move || *r.lock().unwrap() = Some(std::thread::current().id()));
        assert_eq!(*ran_on.lock().unwrap(), Some(here));
    }

    #[test]
    fn with_wake_here_one_reader_hands_long_requests_to_workers() {
        let t = Threads::with_readers("t", 1, 3).unwrap();
        assert_eq!((t.readers(), t.workers()), (1, 3));
        let here = std::thread::current().id();
        let done = Arc::new(AtomicUsize::new(0));
        let elsewhere = Arc::new(AtomicUsize::new(0));
        for _ in 0..100 {
            let (done, elsewhere) = (done.clone(), elsewhere.clone());
            t.long(move || {
                if std::thread::current().id() != here {
                    elsewhere.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        // Dropping the plan waits for every job handed on.
        drop(t);
        assert_eq!(done.load(Ordering::Relaxed), 100);
        assert_eq!(elsewhere.load(Ordering::Relaxed), 100);
    }

    #[test]
    fn a_job_that_panics_does_not_take_its_worker_with_it() {
        let t = Threads::with_readers("t", 1, 1).unwrap();
        t.long(|| panic!("a job that fails"));
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        t.long(move || {
            d.fetch_add(1, Ordering::Relaxed);
        });
        drop(t);
        assert_eq!(done.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn readers_parse_as_auto_or_a_count() {
        assert_eq!("auto".parse(), Ok(Readers::Auto));
        assert_eq!("1".parse(), Ok(Readers::Count(1)));
        assert_eq!("8".parse(), Ok(Readers::Count(8)));
        for bad in ["0", "-1", "many", "", "257"] {
            let e = bad.parse::<Readers>().unwrap_err();
            assert!(e.contains("not a number of threads"), "{bad:?}: {e}");
        }
        assert_eq!(Readers::Count(3).to_string(), "3");
        assert_eq!(Readers::Auto.to_string(), "auto");
    }

    #[test]
    fn the_advice_says_what_the_setting_and_the_readers_make_of_each_other() {
        let one = advice_for(true, Readers::Auto);
        assert!(one.contains("one thread reads requests"), "{one}");
        assert_eq!(advice_for(true, Readers::Count(1)), one);
        let many = advice_for(true, Readers::Count(8));
        assert!(many.contains("but 8 threads read requests"), "{many}");
        for readers in [Readers::Auto, Readers::Count(1), Readers::Count(8)] {
            let off = advice_for(false, readers);
            assert!(
                off.contains(&format!("echo Y > {WAKE_HERE_PARAMETER}")),
                "{off}"
            );
        }
    }

    #[test]
    fn the_kernel_setting_reads_as_a_flag() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("wake_here");
        for (text, want) in [
            ("Y\n", Some(true)),
            ("N\n", Some(false)),
            ("1", Some(true)),
            ("0\n", Some(false)),
            ("maybe\n", None),
        ] {
            std::fs::write(&p, text).unwrap();
            assert_eq!(read_flag(&p), want, "{text:?}");
        }
        assert_eq!(read_flag(&dir.path().join("missing")), None);
    }
}
