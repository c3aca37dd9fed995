//! A child process of a test: its stderr collected by a thread (so it never
//! blocks on a full pipe), waited for, signalled, and killed and reaped (its
//! mount lazily unmounted) when dropped, even when the test failed.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

/// A child process whose stderr a thread collects (so it never blocks on a
/// full pipe). Dropping it kills and reaps the process and lazily unmounts
/// its mount point, even when the test failed half-way.
pub struct Proc {
    what: String,
    child: Option<Child>,
    err: Arc<Mutex<String>>,
    mnt: Option<PathBuf>,
    status: Option<ExitStatus>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&dyn AsRef<OsStr>], mnt: Option<&Path>) -> Proc {
        let mut cmd = Command::new(crate::common::bin(name));
        for a in args {
            cmd.arg(a);
        }
        let what = format!(
            "{name} {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {what}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let err = Arc::new(Mutex::new(String::new()));
        let sink = err.clone();
        thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Proc {
            what,
            child: Some(child),
            err,
            mnt: mnt.map(Path::to_owned),
            status: None,
        }
    }

    /// The process id, while it runs.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("the process has exited").id()
    }

    pub fn stderr(&self) -> String {
        self.err.lock().unwrap().clone()
    }

    /// Waits for a stderr line holding `pat`; returns what follows `pat` on it.
    pub fn wait_for(&mut self, pat: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stderr().lines().find(|l| l.contains(pat)) {
                let at = line.find(pat).unwrap() + pat.len();
                return line[at..].trim().to_owned();
            }
            if let Some(st) = self.try_status() {
                // Let the reader thread take the last lines before giving up.
                thread::sleep(Duration::from_millis(200));
                if let Some(line) = self.stderr().lines().find(|l| l.contains(pat)) {
                    let at = line.find(pat).unwrap() + pat.len();
                    return line[at..].trim().to_owned();
                }
                panic!(
                    "{} exited with {st} before saying {pat:?}:\n{}",
                    self.what,
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not say {pat:?} within {timeout:?}:\n{}",
                self.what,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The exit status once the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Some(st) = c.try_wait().unwrap() {
                    self.status = Some(st);
                    self.child = None;
                }
            }
        }
        self.status
    }

    pub fn running(&mut self) -> bool {
        self.try_status().is_none()
    }

    pub fn signal(&self, sig: Signal) {
        let child = self.child.as_ref().expect("the process has exited");
        rustix::process::kill_process(rustix::process::Pid::from_child(child), sig)
            .expect("signal the process");
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                // Let the reader thread take the last lines.
                thread::sleep(Duration::from_millis(50));
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}:\n{}",
                self.what,
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, and the exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::TERM);
        self.wait_exit(Duration::from_secs(60))
    }

    /// SIGKILL; a mount it served is lazily unmounted.
    pub fn kill9(&mut self) {
        self.signal(Signal::KILL);
        self.wait_exit(Duration::from_secs(30));
        self.unmount_dead();
    }

    pub fn unmount_dead(&self) {
        if let Some(m) = &self.mnt {
            if crate::common::is_mounted(m) {
                let _ = Command::new("fusermount3")
                    .arg("-u")
                    .arg("-z")
                    .arg(m)
                    .status();
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.unmount_dead();
    }
}
