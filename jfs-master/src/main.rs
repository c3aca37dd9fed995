//! jfs-master: creates and inspects master volumes.
//!
//! Thin: parses arguments and calls libjfs. Exit codes: 0 success, 1 error,
//! 2 bad usage (clap).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use libjfs::admin::{AdminError, Request};
use libjfs::inspect::{entry_json, VolumeStatus};
use libjfs::{Role, Volume};

#[derive(Parser)]
#[command(
    name = "jfs-master",
    version,
    about = "The journaling side of a jfs volume"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a master volume: VOL/tree, VOL/journal, VOL/meta, VOL/secret.
    #[command(
        after_help = "Sizes: 1048576, 64KiB, 512MiB (powers of 1024), 64K, 512M (powers of 1000).\n\nExamples:\n  jfs-master init /srv/www.jfs\n  jfs-master init /srv/small.jfs --segment-size 4MiB\n  jfs-master init /srv/scratch.jfs --no-history"
    )]
    Init {
        /// Directory to create the volume in (it must not exist, or be empty).
        vol: PathBuf,
        /// Seal journal segments at this size (default 64MiB). Retention
        /// removes whole sealed segments, so smaller ones trim finer.
        #[arg(long, value_name = "SIZE")]
        segment_size: Option<String>,
        /// Journal no before-images and keep no attic: smaller journals,
        /// but no rewind (materialize at a position still works).
        #[arg(long)]
        no_history: bool,
    },
    /// Serve the volume's tree at MOUNTPOINT, journaling every change, until
    /// unmounted (fusermount3 -u, umount, SIGTERM, SIGINT or SIGHUP).
    #[command(
        after_help = "Sync policies:\n  fsync         fsync/fdatasync on the mount returns once the journal is durable (default)\n  interval[:MS] the journal is made durable every MS milliseconds (default 100); fsync returns at once\n\nExamples:\n  jfs-master mount /srv/www.jfs /var/www\n  jfs-master mount /srv/www.jfs /var/www --sync interval:50\n  jfs-master mount /srv/www.jfs /var/www --listen 0.0.0.0:7420"
    )]
    Mount {
        /// The master volume's directory.
        vol: PathBuf,
        /// An empty directory to serve the tree at.
        mountpoint: PathBuf,
        /// When the journal is made durable: fsync, interval or interval:MS.
        #[arg(long, default_value = "fsync")]
        sync: libjfs::fuse::SyncPolicy,
        /// Serve the journal to replicas on ADDR (HOST, HOST:PORT; port 0
        /// picks a free one). Without a value: 127.0.0.1:7420.
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:7420")]
        listen: Option<String>,
        /// Threads reading the kernel's requests: auto (one where the
        /// kernel's fuse wake_here is Y, else 8) or a number. One thread
        /// hands long requests (fsync, large reads and writes) to others.
        #[arg(long, value_name = "auto|N", default_value = "auto")]
        fuse_readers: libjfs::fuse::threads::Readers,
    },
    /// Print the journal's records, one per line.
    #[command(
        after_help = "Examples:\n  jfs-master log /srv/www.jfs\n  jfs-master log /srv/www.jfs --from 1200 --json | jq .text"
    )]
    Log {
        /// The master volume's directory.
        vol: PathBuf,
        /// First sequence number to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// One JSON object per line: seq, chain, time, op, paths, text, mtimes.
        #[arg(long)]
        json: bool,
    },
    /// Show the volume's position, journal and replicas.
    #[command(
        after_help = "Exit codes:\n  0  every replica within the limits given (or none given)\n  1  the status could not be read\n  4  a replica lags past --max-lag-records or --max-lag-seconds\n\nExamples:\n  jfs-master status /srv/www.jfs --json\n  jfs-master status /srv/www.jfs --max-lag-seconds 60 || page-the-admin"
    )]
    Status {
        /// The master volume's directory.
        vol: PathBuf,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        /// Exit 4 if a replica lags by more records than this.
        #[arg(long, value_name = "N")]
        max_lag_records: Option<u64>,
        /// Exit 4 if a replica lags by more seconds than this.
        #[arg(long, value_name = "S")]
        max_lag_seconds: Option<f64>,
    },
    /// Bring the tree back to its state at a position, by journaling the undo
    /// of everything after it (replicas follow; a rewind can be rewound).
    #[command(
        after_help = "Works mounted (open files and the kernel's caches follow) and unmounted. The\ncost grows with what is undone, not with the size of the tree.\n\nExamples:\n  jfs-master rewind /srv/www.jfs --to v41\n  jfs-master rewind /srv/www.jfs --to 1200"
    )]
    Rewind {
        /// The master volume's directory.
        vol: PathBuf,
        /// Sequence number or snapshot name.
        #[arg(long, value_name = "SEQ|SNAPSHOT")]
        to: String,
    },
    /// Name the current position, list or delete names.
    #[command(
        after_help = "Examples:\n  jfs-master snapshot /srv/www.jfs create v42\n  jfs-master snapshot /srv/www.jfs list"
    )]
    Snapshot {
        /// The master volume's directory.
        vol: PathBuf,
        #[command(subcommand)]
        action: SnapshotAction,
    },
    /// Show or set how much history the volume keeps.
    #[command(
        after_help = RETENTION_HELP
    )]
    Retention(RetentionArgs),
    /// Apply the retention policy now: remove old sealed segments and the
    /// attic entries of their records.
    #[command(
        after_help = "Works on a mounted volume (through the mount) and on one that is not.\nA mounted master also applies its policy by itself every minute and after\neach sealed segment.\n\nExamples:\n  jfs-master trim /srv/www.jfs --dry-run\n  jfs-master trim /srv/www.jfs\n  jfs-master trim /srv/www.jfs --force   # replicas that fall behind must bootstrap again"
    )]
    Trim(TrimArgs),
}

const RETENTION_HELP: &str = "Without a policy (the default) all history is kept: rewind and materialize\nneed it. With one, whole sealed segments go, oldest first, once their last\nrecord is older than --max-age or they do not fit in --max-size with the\nnewer ones. The active segment always stays, and so does every record a\nregistered replica still needs (see `trim --force`).\n\nExamples:\n  jfs-master retention /srv/www.jfs                       # show\n  jfs-master retention /srv/www.jfs --max-age 30d --max-size 10GiB\n  jfs-master retention /srv/www.jfs --max-size none       # clear one limit\n  jfs-master retention /srv/www.jfs --keep-all";

#[derive(Args)]
struct TrimArgs {
    /// The master volume's directory.
    vol: PathBuf,
    /// Trim also what registered replicas still need; they will have to
    /// bootstrap again. Never what the volume's own tree has not applied.
    #[arg(long)]
    force: bool,
    /// Say what would be removed and why, remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct RetentionArgs {
    /// The master volume's directory.
    vol: PathBuf,
    /// Let go sealed segments whose last record is older than AGE
    /// (30d, 12h, 2weeks; none clears).
    #[arg(long, value_name = "AGE")]
    max_age: Option<String>,
    /// Keep the newest sealed segments that fit in SIZE (10GiB, 500MB;
    /// none clears).
    #[arg(long, value_name = "SIZE")]
    max_size: Option<String>,
    /// Keep all history (clears both limits; the default).
    #[arg(long, conflicts_with_all = ["max_age", "max_size"])]
    keep_all: bool,
    /// Print the policy as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum SnapshotAction {
    /// Journal a snapshot marker named NAME at the current position.
    Create {
        /// The new snapshot's name.
        name: String,
    },
    /// List snapshots in position order.
    List,
    /// Forget a snapshot name (its marker stays in the journal).
    Delete {
        /// The snapshot to forget.
        name: String,
    },
}

/// Exit code of `status` when a replica lags past the limits given.
const EXIT_LAGGING: u8 = 4;

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("jfs-master: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<u8> {
    match cli.command {
        Command::Init {
            vol,
            segment_size,
            no_history,
        } => {
            let segment_bytes = segment_size
                .as_deref()
                .map(libjfs::retention::parse_size)
                .transpose()?;
            if let Some(b) = segment_bytes.filter(|b| *b < libjfs::volume::MIN_SEGMENT_BYTES) {
                anyhow::bail!(
                    "--segment-size {b} is too small (at least {} bytes)",
                    libjfs::volume::MIN_SEGMENT_BYTES
                );
            }
            let v = Volume::init(&vol, Role::Master)
                .with_context(|| format!("init {}", vol.display()))?;
            if let Some(b) = segment_bytes {
                v.set_setting(libjfs::volume::SETTING_SEGMENT_BYTES, &b.to_string())?;
                println!("journal segments sealed at {b} bytes");
            }
            let mut v = v;
            if no_history {
                v.set_history(false)?;
                println!("history off: records carry no before-images; rewind is not possible");
            }
            println!(
                "initialized master volume {} (id {}) at {}",
                vol.display(),
                v.id(),
                v.head()
            );
            println!(
                "replicas need the key in {}",
                vol.join(libjfs::volume::SECRET_FILE).display()
            );
            Ok(0)
        }
        Command::Mount {
            vol,
            mountpoint,
            sync,
            listen,
            fuse_readers,
        } => mount(&vol, &mountpoint, sync, listen.as_deref(), fuse_readers).map(|_| 0),
        Command::Log { vol, from, json } => log(&vol, from, json).map(|_| 0),
        Command::Status {
            vol,
            json,
            max_lag_records,
            max_lag_seconds,
        } => {
            let mut s = admin(&vol, Request::Status)
                .with_context(|| format!("status of {}", vol.display()))?;
            let role = libjfs::admin::status_role(&s);
            libjfs::admin::expect_role(&vol, role, Role::Master, "status")
                .map_err(anyhow::Error::msg)?;
            add_retention_usage(&vol, &mut s);
            if json {
                println!("{s}");
            } else {
                let pos = |v: &serde_json::Value| {
                    format!("{}:{}", v["seq"], &v["chain"].as_str().unwrap_or("")[..16])
                };
                println!("volume   {}", s["volume_id"].as_str().unwrap_or(""));
                println!(
                    "role     {}",
                    s["role"]
                        .as_str()
                        .unwrap_or("unknown (in use by another process)")
                );
                match s["mountpoint"].as_str() {
                    Some(m) => {
                        println!("mounted  at {m}, sync {}", s["sync"].as_str().unwrap_or(""));
                        let t = &s["fuse_threads"];
                        if let (Some(readers), Some(workers)) =
                            (t["readers"].as_u64(), t["workers"].as_u64())
                        {
                            match workers {
                                0 => println!("threads  {readers} reading and answering requests"),
                                _ => println!(
                                    "threads  {readers} reading requests, {workers} running long ones"
                                ),
                            }
                        }
                    }
                    None => println!("mounted  no"),
                }
                println!("tree     at {}", pos(&s["position"]));
                let j = &s["journal"];
                println!(
                    "journal  head {}, {} records from {}",
                    pos(&j["head"]),
                    j["records"],
                    j["first_seq"]
                );
                println!(
                    "segments {} ({} sealed), {} bytes",
                    j["segments"], j["sealed_segments"], j["bytes"]
                );
                print_retention(&s["retention"]);
                if let Some(on) = s["history"].as_bool() {
                    println!(
                        "history  {}",
                        if on { "on (rewind possible)" } else { "off" }
                    );
                }
                if let Some(addr) = s["listen"].as_str() {
                    println!("serving  replicas on {addr}");
                }
                for r in s["replicas"].as_array().into_iter().flatten() {
                    println!(
                        "replica  {} {} at {}, lag {} records / {:.1} s{}",
                        r["id"].as_str().unwrap_or("?"),
                        r["address"].as_str().unwrap_or("?"),
                        pos(&r["acked"]),
                        r["lag"]["records"],
                        r["lag"]["seconds"].as_f64().unwrap_or(0.0),
                        if r["connected"] == true {
                            ""
                        } else {
                            " (disconnected)"
                        }
                    );
                }
            }
            let lagging = s["replicas"].as_array().into_iter().flatten().any(|r| {
                let lag = &r["lag"];
                max_lag_records.is_some_and(|m| lag["records"].as_u64().unwrap_or(0) > m)
                    || max_lag_seconds.is_some_and(|m| lag["seconds"].as_f64().unwrap_or(0.0) > m)
            });
            Ok(if lagging { EXIT_LAGGING } else { 0 })
        }
        Command::Rewind { vol, to } => {
            master_only(&vol, "rewind")?;
            let answer = admin(&vol, Request::Rewind { to: to.clone() })?;
            println!(
                "rewound {} to {to} (seq {}): {} records undone by {} new ones; now at {}",
                vol.display(),
                answer["to"],
                answer["undone"],
                answer["position"]["seq"].as_u64().unwrap_or(0)
                    - answer["from"]["seq"].as_u64().unwrap_or(0),
                answer["position"]["seq"]
            );
            Ok(0)
        }
        Command::Snapshot { vol, action } => {
            let req = match &action {
                SnapshotAction::Create { name } => Request::SnapshotCreate { name: name.clone() },
                SnapshotAction::List => Request::SnapshotList,
                SnapshotAction::Delete { name } => Request::SnapshotDelete { name: name.clone() },
            };
            let answer = admin(&vol, req)?;
            match action {
                SnapshotAction::Create { name } => {
                    let p = &answer["position"];
                    println!(
                        "snapshot {name} at {}:{}",
                        p["seq"],
                        &p["chain"].as_str().unwrap_or("")[..16]
                    );
                }
                SnapshotAction::List => {
                    for s in answer.as_array().into_iter().flatten() {
                        let p = &s["position"];
                        println!(
                            "{}\t{}\t{}",
                            s["name"].as_str().unwrap_or(""),
                            p["seq"],
                            p["chain"].as_str().unwrap_or("")
                        );
                    }
                }
                SnapshotAction::Delete { name } => println!("deleted snapshot {name}"),
            }
            Ok(0)
        }
        Command::Retention(a) => {
            master_only(&a.vol, "retention")?;
            let answer = admin(
                &a.vol,
                Request::Retention {
                    max_age: a.max_age,
                    max_size: a.max_size,
                    keep_all: a.keep_all,
                },
            )?;
            if a.json {
                println!("{answer}");
            } else {
                println!(
                    "retention {}{}",
                    answer["text"].as_str().unwrap_or("?"),
                    if answer["changed"] == true {
                        " (changed; applied at the next trim)"
                    } else {
                        ""
                    }
                );
            }
            Ok(0)
        }
        Command::Trim(a) => {
            master_only(&a.vol, "trim")?;
            let report = libjfs::retention::trim_via(&a.vol, a.force, a.dry_run, asker(&a.vol))
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("trim {}", a.vol.display()))?;
            if a.json {
                println!("{report}");
            } else {
                for line in libjfs::retention::describe_trim(&report) {
                    println!("{line}");
                }
            }
            Ok(0)
        }
    }
}

/// Status lines about history: where it starts, what it takes, the policy.
fn print_retention(r: &serde_json::Value) {
    use libjfs::retention::human_bytes;
    let bytes = |v: &serde_json::Value| human_bytes(v.as_u64().unwrap_or(0));
    println!(
        "history  from {}, {} sealed segments, {}; attic {} entries, {}",
        r["first_seq"],
        r["history_segments"],
        bytes(&r["history_bytes"]),
        r["attic_entries"],
        bytes(&r["attic_bytes"])
    );
    println!(
        "retention {}",
        r["policy_text"].as_str().unwrap_or("unknown")
    );
}

/// Adds to a status what the files say of history and the attic, and the
/// policy when the answer did not carry it.
fn add_retention_usage(vol: &std::path::Path, s: &mut serde_json::Value) {
    let mut r = libjfs::retention::usage_json(vol);
    let policy = match s["retention"]["policy"].is_object() {
        true => s["retention"]["policy"].clone(),
        false => {
            libjfs::retention::peek_policy(vol).map_or(serde_json::Value::Null, |p| p.to_json())
        }
    };
    r["policy_text"] = libjfs::retention::policy_text(&policy).into();
    r["policy"] = policy;
    s["retention"] = r;
}

/// Asks the process that serves the volume, or, when none does, the volume
/// opened here (once, for every request).
fn asker(
    vol: &std::path::Path,
) -> impl FnMut(Request) -> std::result::Result<serde_json::Value, String> + '_ {
    let mut opened: Option<Volume> = None;
    move |req| {
        if opened.is_none() {
            match libjfs::admin::request(vol, &req) {
                Ok(v) => return Ok(v),
                Err(AdminError::NotServed(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
            let v = Volume::open(vol)
                .with_context(|| format!("open {}", vol.display()))
                .map_err(|e| format!("{e:#}"))?;
            opened = Some(v);
        }
        libjfs::admin::answer_with(opened.as_mut().expect("opened"), req)
    }
}

/// Refuses a replica volume for `command`, which would act on it as on a
/// master's (a rewind journaled, a trim by the master's cursors).
fn master_only(vol: &std::path::Path, command: &str) -> Result<()> {
    let role = libjfs::admin::role_of(vol).map_err(anyhow::Error::msg)?;
    libjfs::admin::expect_role(vol, role, Role::Master, command).map_err(anyhow::Error::msg)
}

/// Asks the process that has the volume mounted, or, when none does, opens
/// the volume and answers the same way.
fn admin(vol: &std::path::Path, req: Request) -> Result<serde_json::Value> {
    match libjfs::admin::request(vol, &req) {
        Ok(v) => Ok(v),
        Err(AdminError::NotServed(_)) => {
            if req == Request::Status {
                // Read the files without taking the lock: works while another
                // process holds the volume without serving it.
                let mut s = VolumeStatus::read(vol)?.to_json();
                if let Some(role) = libjfs::volume::peek_role(vol)? {
                    s["role"] = role.as_str().into();
                }
                // What the server knew of its replicas when it last ran.
                let head = s["journal"]["head"]["seq"].as_u64().unwrap_or(0);
                s["replicas"] = libjfs::ship::server::known_replicas(vol, head);
                return Ok(s);
            }
            let mut v = Volume::open(vol).with_context(|| format!("open {}", vol.display()))?;
            libjfs::admin::answer_with(&mut v, req).map_err(anyhow::Error::msg)
        }
        Err(e) => Err(e.into()),
    }
}

fn mount(
    vol_path: &std::path::Path,
    mountpoint: &std::path::Path,
    sync: libjfs::fuse::SyncPolicy,
    listen: Option<&str>,
    readers: libjfs::fuse::threads::Readers,
) -> Result<()> {
    let mut vol = Volume::open(vol_path).with_context(|| format!("open {}", vol_path.display()))?;
    if vol.role() != Role::Master {
        anyhow::bail!(
            "{} is a {} volume: its changes come from its master; serve it read-only with `jfs-replica follow {} --mount {}`",
            vol_path.display(),
            vol.role(),
            vol_path.display(),
            mountpoint.display()
        );
    }
    if let Some((seg, offset, bytes, why)) = &vol.recovery().torn_tail {
        eprintln!(
            "jfs-master: cut a torn tail of {bytes} bytes at offset {offset} of {} ({why})",
            seg.display()
        );
    }
    // Records journaled but not applied before a crash reach the tree now.
    let before = vol.applied();
    let at = vol
        .replay(None, |_| {})
        .context("replay the journal into the tree")?;
    if at != before {
        eprintln!(
            "jfs-master: applied records {} to {} that a crash left unapplied",
            before.seq + 1,
            at.seq
        );
    }
    vol.sync()?;
    let head = vol.head();
    // Retention runs beside the mount and asks it through the admin socket,
    // so each step holds the volume only briefly.
    let stop_trim = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut auto_trim = None;
    let vol = libjfs::fuse::serve(
        vol,
        mountpoint,
        sync,
        listen,
        readers,
        |mut unmounter, addr| {
            let path = vol_path.to_owned();
            auto_trim = Some(libjfs::retention::auto_trim(
                vol_path.to_owned(),
                libjfs::retention::AUTO_TRIM_EVERY,
                "jfs-master",
                stop_trim.clone(),
                move |req| libjfs::admin::request(&path, &req).map_err(|e| e.to_string()),
            ));
            eprintln!(
                "jfs-master: {} mounted at {} ({head}, sync {sync})",
                vol_path.display(),
                mountpoint.display()
            );
            if let Some(advice) = libjfs::fuse::threads::advice(readers) {
                eprintln!("jfs-master: {advice}");
            }
            if let Some(addr) = addr {
                eprintln!("jfs-master: serving replicas on {addr}");
            }
            let mut signals = signal_hook::iterator::Signals::new([
                signal_hook::consts::SIGTERM,
                signal_hook::consts::SIGINT,
                // A closed terminal stops it cleanly too, instead of killing it.
                signal_hook::consts::SIGHUP,
            ])
            .expect("install signal handlers");
            std::thread::spawn(move || {
                if signals.forever().next().is_some() {
                    if let Err(e) = unmounter.unmount() {
                        eprintln!("jfs-master: unmount: {e}");
                    }
                }
            });
        },
    )
    .with_context(|| format!("mount {} at {}", vol_path.display(), mountpoint.display()));
    stop_trim.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(t) = auto_trim {
        let _ = t.join();
    }
    let vol = vol?;
    let pos = vol.close().context("sync and seal the journal")?;
    eprintln!("jfs-master: unmounted; journal synced and sealed at {pos}");
    Ok(())
}

fn log(vol: &std::path::Path, from: u64, json: bool) -> Result<()> {
    let journal = libjfs::volume::read_journal(vol)
        .with_context(|| format!("open the journal of {}", vol.display()))?;
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    for entry in journal.read_from(from.max(journal.first_seq()))? {
        let e = entry?;
        let r = if json {
            writeln!(out, "{}", entry_json(&e))
        } else {
            writeln!(
                out,
                "{:>8} {} {} {}",
                e.record.seq,
                e.record.time.to_rfc3339(),
                &e.position.chain_hex()[..12],
                e.record.op
            )
        };
        if let Err(err) = r {
            // A closed pipe (`| head`) is a normal way to stop reading.
            if err.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(err.into());
        }
    }
    out.flush().or_else(|e| {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    Ok(())
}
