//! The admin socket: how commands reach a process that has a volume open.
//!
//! `VOL/admin.sock` is a unix socket. A client sends one JSON request on a
//! line and reads one JSON response on a line:
//!
//! ```text
//! > {"cmd":"status"}
//! < {"ok":true,"result":{...}}
//! > {"cmd":"snapshot-create","name":"v42"}
//! < {"ok":false,"error":"snapshot \"v42\" already exists"}
//! ```
//!
//! The server is a thread per connection; it knows nothing of what the
//! requests mean (the handler does) and nothing of FUSE. It answers only
//! root and the user it runs as (the peer's credentials, checked on
//! connect).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// File name of the socket inside the volume.
pub const SOCKET: &str = "admin.sock";

/// What a client may ask.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    Status,
    SnapshotCreate {
        name: String,
    },
    SnapshotList,
    SnapshotDelete {
        name: String,
    },
    /// Take the tree back to a position (`SEQ` or a snapshot name).
    Rewind {
        to: String,
    },
    /// Hold a following replica at a position, or (`None`) follow the head.
    Pin {
        until: Option<String>,
    },
    /// Apply the retention policy now: at most
    /// [`TRIM_BATCH`](crate::retention::TRIM_BATCH) segments per request
    /// (the answer says `more`); the asker prunes the attic after.
    Trim {
        #[serde(default)]
        force: bool,
        #[serde(default)]
        dry_run: bool,
    },
    /// Show the retention policy; with a value, change it (`none` clears a
    /// limit, `keep_all` both).
    Retention {
        #[serde(default)]
        max_age: Option<String>,
        #[serde(default)]
        max_size: Option<String>,
        #[serde(default)]
        keep_all: bool,
    },
    /// Write an image of the volume at its applied position to `path` (an
    /// absolute path the serving process can write).
    Image {
        path: String,
    },
}

/// Answers requests; an `Err` is sent back as the error text.
pub type Handler = Arc<dyn Fn(Request) -> Result<Value, String> + Send + Sync>;

/// A running admin socket; dropping it stops the server and removes the file.
pub struct AdminServer {
    path: PathBuf,
    /// The listening socket, to wake the accept loop by shutting it down:
    /// connecting to `path` would not reach it if the file was removed.
    listener: UnixListener,
    /// Device and inode of the socket file made, so that only that file is
    /// removed at the end, not one another process made at the same path.
    file: (u64, u64),
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Serves `VOL/admin.sock`. A socket file left by a process that died is
/// replaced; one a live process answers on is an error.
pub fn serve(volume: &Path, handler: Handler) -> io::Result<AdminServer> {
    let path = volume.join(SOCKET);
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("{} is served by another process", path.display()),
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    let file = identity(&path)?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (stop, listener) = (stop.clone(), listener.try_clone()?);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                if let Ok(conn) = conn {
                    let handler = handler.clone();
                    std::thread::spawn(move || {
                        let _ = answer(conn, &handler);
                    });
                }
            }
        })
    };
    Ok(AdminServer {
        path,
        listener,
        file,
        stop,
        thread: Some(thread),
    })
}

/// Device and inode of the file at `path`.
fn identity(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(path)?;
    Ok((md.dev(), md.ino()))
}

fn answer(conn: UnixStream, handler: &Handler) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut writer = conn.try_clone()?;
    if let Err(refusal) = may_administer(&conn) {
        // The request is read (and dropped) first: a socket closed before
        // the client has written it, or with it unread, would fail the
        // client's write or read before it sees why it was refused.
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        let _ = BufReader::new((&conn).take(MAX_REFUSED_REQUEST)).read_line(&mut String::new());
        let response = serde_json::json!({ "ok": false, "error": refusal });
        return writer.write_all(json_line(&response).as_bytes());
    }
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while reader.read_line(&mut line)? > 0 {
        let response = match serde_json::from_str::<Request>(&line) {
            Ok(req) => match handler(req) {
                Ok(result) => serde_json::json!({ "ok": true, "result": result }),
                Err(error) => serde_json::json!({ "ok": false, "error": error }),
            },
            Err(e) => serde_json::json!({ "ok": false, "error": format!("bad request: {e}") }),
        };
        writer.write_all(json_line(&response).as_bytes())?;
        line.clear();
    }
    Ok(())
}

/// How much of a refused peer's request is read before the answer.
const MAX_REFUSED_REQUEST: u64 = 64 << 10;

/// Only root and the user this process runs as may use the socket. Its
/// mode (0600) already says so; this holds also while the socket is being
/// set up and if its mode is changed.
fn may_administer(conn: &UnixStream) -> Result<(), String> {
    let peer = rustix::net::sockopt::socket_peercred(conn)
        .map_err(|e| format!("refused: the peer's credentials cannot be read: {e}"))?;
    if peer.uid.is_root() || peer.uid == rustix::process::geteuid() {
        Ok(())
    } else {
        Err(format!(
            "refused: uid {} may not administer this volume (only root or uid {})",
            peer.uid.as_raw(),
            rustix::process::geteuid().as_raw()
        ))
    }
}

/// `value` as one line of JSON, to be sent with one write: formatting
/// straight into the socket sends each token on its own.
fn json_line(value: &impl Serialize) -> String {
    let mut line = serde_json::to_string(value).expect("JSON values and requests always encode");
    line.push('\n');
    line
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag: a listening socket shut
        // down fails its accept (EINVAL), wherever its file went.
        let _ = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if identity(&self.path).is_ok_and(|f| f == self.file) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Why a request did not get an answer, or got a refusal.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Nobody serves the volume: open it directly instead.
    #[error("no process serves {}", .0.display())]
    NotServed(PathBuf),
    #[error("admin socket {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Refused(String),
}

/// Sends `req` to the process serving `volume`.
pub fn request(volume: &Path, req: &Request) -> Result<Value, AdminError> {
    request_within(volume, req, Duration::from_secs(60))
}

/// [`request`], waiting up to `limit` for the answer (an image takes as
/// long as reading the whole tree).
pub fn request_within(volume: &Path, req: &Request, limit: Duration) -> Result<Value, AdminError> {
    let path = volume.join(SOCKET);
    let conn = match UnixStream::connect(&path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::NotADirectory
                    | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(AdminError::NotServed(path));
        }
        Err(source) => return Err(AdminError::Io { path, source }),
    };
    let io_err = |source| AdminError::Io {
        path: path.clone(),
        source,
    };
    conn.set_read_timeout(Some(limit)).map_err(io_err)?;
    let mut writer = conn.try_clone().map_err(io_err)?;
    let line = json_line(req);
    // A server that refuses this peer may answer and close before the
    // request is written: its answer says why, so read it all the same.
    if let Err(e) = writer.write_all(line.as_bytes()) {
        if e.kind() != io::ErrorKind::BrokenPipe {
            return Err(io_err(e));
        }
    }
    let mut answer = String::new();
    BufReader::new(conn)
        .read_line(&mut answer)
        .map_err(io_err)?;
    let v: Value = serde_json::from_str(&answer).map_err(|e| {
        io_err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad answer: {e}"),
        ))
    })?;
    if v["ok"] == Value::Bool(true) {
        Ok(v["result"].clone())
    } else {
        Err(AdminError::Refused(
            v["error"].as_str().unwrap_or("refused").to_owned(),
        ))
    }
}

/// The role of the volume at `volume`: as the process serving it says, or
/// read from the volume when none serves it. `None` when a process has it
/// open without serving it: its role cannot be read then without waiting.
pub fn role_of(volume: &Path) -> Result<Option<crate::Role>, String> {
    match request(volume, &Request::Status) {
        Ok(s) => Ok(status_role(&s)),
        Err(AdminError::NotServed(_)) => {
            crate::volume::peek_role(volume).map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// The role a status answer names.
pub fn status_role(status: &Value) -> Option<crate::Role> {
    crate::Role::parse(status["role"].as_str()?.as_bytes())
}

/// Refuses `command` on a volume whose role is known and not `want`,
/// naming the tool that acts on it: run by the tool of the wrong role,
/// a rewind or a trim would act on the volume as on its own kind.
pub fn expect_role(
    volume: &Path,
    role: Option<crate::Role>,
    want: crate::Role,
    command: &str,
) -> Result<(), String> {
    match role {
        Some(r) if r != want => Err(format!(
            "{} is a {r} volume; use `{} {command} {}`",
            volume.display(),
            r.tool(),
            volume.display()
        )),
        _ => Ok(()),
    }
}

/// Answers `req` from an open volume: the part of every answer that does
/// not depend on who serves it (a mount adds its own status fields).
pub fn answer_with(vol: &mut crate::Volume, req: Request) -> Result<Value, String> {
    use crate::inspect::{position_json, VolumeStatus};
    match req {
        Request::Status => {
            let mut s = VolumeStatus::of(vol).to_json();
            s["role"] = vol.role().as_str().into();
            s["history"] = vol.history().into();
            s["retention"] = crate::retention::policy_json(vol);
            Ok(s)
        }
        Request::SnapshotCreate { name } => {
            let pos = vol.create_snapshot(&name).map_err(|e| e.to_string())?;
            Ok(serde_json::json!({ "name": name, "position": position_json(pos) }))
        }
        Request::SnapshotList => {
            let list = vol.list_snapshots().map_err(|e| e.to_string())?;
            Ok(list
                .into_iter()
                .map(|(n, p)| serde_json::json!({ "name": n, "position": position_json(p) }))
                .collect())
        }
        Request::SnapshotDelete { name } => {
            vol.delete_snapshot(&name).map_err(|e| e.to_string())?;
            Ok(serde_json::json!({ "deleted": name }))
        }
        Request::Rewind { to } => {
            let seq = vol
                .resolve(&crate::volume::parse_target(&to))
                .map_err(|e| e.to_string())?;
            let r = match vol.role() {
                crate::Role::Master => vol.rewind(seq, |_| {}),
                crate::Role::Replica => vol.rewind_tree(seq, None, |_| {}),
            }
            .map_err(|e| e.to_string())?;
            vol.sync().map_err(|e| e.to_string())?;
            Ok(rewound_json(&r))
        }
        Request::Pin { .. } => Err(format!(
            "no process follows {}; start one with jfs-replica follow VOL [--until SEQ|SNAPSHOT]",
            vol.path().display()
        )),
        Request::Trim { force, dry_run } => {
            let opts = crate::retention::TrimOptions {
                force,
                dry_run,
                max_segments: (!dry_run).then_some(crate::retention::TRIM_BATCH),
            };
            let report = crate::retention::trim_step(vol, opts).map_err(|e| e.to_string())?;
            Ok(report.to_json())
        }
        Request::Retention {
            max_age,
            max_size,
            keep_all,
        } => crate::retention::set_policy(vol, max_age.as_deref(), max_size.as_deref(), keep_all)
            .map_err(|e| e.to_string()),
        Request::Image { .. } => Err(format!(
            "a running {} does not write images: its tree changes under its writers; \
             image a replica (jfs-replica image), or this volume while nothing has it open",
            vol.role()
        )),
    }
}

/// What a rewind did, as JSON.
pub fn rewound_json(r: &crate::volume::Rewound) -> Value {
    use crate::inspect::position_json;
    serde_json::json!({
        "from": position_json(r.from),
        "to": r.to,
        "undone": r.undone,
        "position": position_json(r.now),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stopping does not depend on the socket's file: removed, or replaced
    /// by another server's, the stop still returns and leaves the other
    /// server's file alone.
    #[test]
    fn a_server_stops_when_its_socket_file_is_gone_or_taken() {
        let dir = tempfile::tempdir().unwrap();
        let handler: Handler = Arc::new(|_| Ok(serde_json::json!({"seq": 1})));
        let stop_within = |server: AdminServer| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                drop(server);
                let _ = tx.send(());
            });
            rx.recv_timeout(Duration::from_secs(10))
                .expect("the server did not stop");
        };
        let server = serve(dir.path(), handler.clone()).unwrap();
        std::fs::remove_file(dir.path().join(SOCKET)).unwrap();
        stop_within(server);

        let first = serve(dir.path(), handler.clone()).unwrap();
        std::fs::remove_file(dir.path().join(SOCKET)).unwrap();
        let second = serve(dir.path(), handler).unwrap();
        stop_within(first);
        assert_eq!(request(dir.path(), &Request::Status).unwrap()["seq"], 1);
        drop(second);
        assert!(!dir.path().join(SOCKET).exists());
    }

    #[test]
    fn requests_and_answers_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let handler: Handler = Arc::new(|req| match req {
            Request::Status => Ok(serde_json::json!({"seq": 7})),
            Request::SnapshotCreate { name } if name == "dup" => {
                Err("snapshot \"dup\" already exists".into())
            }
            other => Ok(serde_json::json!({ "echo": format!("{other:?}") })),
        });
        assert!(matches!(
            request(dir.path(), &Request::Status),
            Err(AdminError::NotServed(_))
        ));
        let server = serve(dir.path(), handler.clone()).unwrap();
        assert_eq!(request(dir.path(), &Request::Status).unwrap()["seq"], 7);
        let err = request(dir.path(), &Request::SnapshotCreate { name: "dup".into() }).unwrap_err();
        assert_eq!(err.to_string(), "snapshot \"dup\" already exists");
        // A second server on the same volume is refused while the first answers.
        assert!(serve(dir.path(), handler.clone()).is_err());
        drop(server);
        assert!(!dir.path().join(SOCKET).exists());
        // A socket file left by a dead process is replaced.
        drop(UnixListener::bind(dir.path().join(SOCKET)).unwrap());
        let _again = serve(dir.path(), handler).unwrap();
        assert!(request(dir.path(), &Request::SnapshotList).is_ok());
    }
}
