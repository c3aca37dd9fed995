//! jfs-replica: replays, materializes and verifies volumes.
//!
//! Thin: parses arguments and calls libjfs. Exit codes: 0 success, 1 error,
//! 2 bad usage (clap), 3 `verify` found differences or the replica is
//! broken, 4 it lags past the limits given to `status`, 5 nothing follows.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use libjfs::compare::{compare_trees, CompareOptions};
use libjfs::inspect::{resolve_target, VolumeStatus};
use libjfs::journal::Journal;
use libjfs::materialize::materialize_journal;
use libjfs::ship::follower::{self, FollowConfig, FollowState, Hooks};
use libjfs::volume::{parse_target, JOURNAL_DIR};
use libjfs::{Role, Volume};

#[derive(Parser)]
#[command(
    name = "jfs-replica",
    version,
    about = "The replaying side of a jfs volume"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a replica volume of the volume a master (or replica) serves.
    #[command(
        after_help = "The secret file is the master volume's VOL/secret, copied over a safe channel\n(scp, a config management vault); it never crosses the replication connection.\n\nExample:\n  scp master:/srv/www.jfs/secret /root/www.secret\n  jfs-replica init /srv/www.jfs --master master.example:7420 --secret-file /root/www.secret"
    )]
    Init {
        /// Directory to create the replica volume in (it must not exist, or be empty).
        vol: PathBuf,
        /// The server to follow: HOST or HOST:PORT (default port 7420).
        #[arg(long, value_name = "ADDR")]
        master: String,
        /// File holding the volume's key (the master's VOL/secret).
        #[arg(long, value_name = "FILE")]
        secret_file: PathBuf,
        /// Then build the tree from an image that this replica serves (one
        /// that follows with --listen), instead of from the whole journal.
        #[arg(long, value_name = "ADDR", conflicts_with = "image")]
        from: Option<String>,
        /// Then build the tree from this image file (see `jfs-replica image`).
        #[arg(long, value_name = "FILE")]
        image: Option<PathBuf>,
    },
    /// Write an image of the volume: its tree and attic at its applied position.
    #[command(
        after_help = "A following replica writes it through its running process (applying pauses\nmeanwhile, and status says so; its master is not held up); a volume nothing\nhas open is read directly. A mounted master does not write images: image one\nof its replicas. The file is written beside FILE and renamed, so it is whole\nor absent.\n\nExamples:\n  jfs-replica image /srv/www.jfs /backup/www.jfsimg\n  jfs-replica bootstrap /srv/new.jfs --image /backup/www.jfsimg"
    )]
    Image {
        /// A replica's volume directory, or a master's while it is not mounted.
        vol: PathBuf,
        /// The image file to write.
        file: PathBuf,
    },
    /// Rebuild a replica from an image: tree, attic, journal and position.
    #[command(
        after_help = "For a new replica (made by `jfs-replica init`), or one that broke because its\nmaster trimmed the history it needed. The replica keeps its id, master and key;\nits tree, attic and journal are replaced by the image's, and its journal goes\non right after the image's position. Nothing changes unless the whole image\nchecks. The volume must not be in use (stop `follow` first).\n\nExamples:\n  jfs-replica bootstrap /srv/www.jfs --from replica2.example:7421\n  jfs-replica bootstrap /srv/www.jfs --image /backup/www.jfsimg\n  jfs-replica follow /srv/www.jfs"
    )]
    #[command(group(clap::ArgGroup::new("source").required(true).args(["from", "image"])))]
    Bootstrap {
        /// The replica volume's directory.
        vol: PathBuf,
        /// A replica that serves others (`follow --listen`): HOST or HOST:PORT.
        #[arg(long, value_name = "ADDR")]
        from: Option<String>,
        /// An image file written by `jfs-replica image`.
        #[arg(long, value_name = "FILE")]
        image: Option<PathBuf>,
    },
    /// Follow the master: receive, journal and apply its records until stopped
    /// (SIGTERM, SIGINT, SIGHUP), optionally serving the tree read-only at MOUNTPOINT.
    /// When a process already follows the volume, move its pin instead.
    #[command(
        after_help = "A pinned replica keeps receiving records but moves its tree only once it holds\nevery record up to the pin, and then all at once: readers of the mount see the\nold version or the new one, never a mixture.\n\nExamples:\n  jfs-replica follow /srv/www.jfs --mount /var/www\n  jfs-replica follow /srv/www.jfs --until v42          # apply up to snapshot v42 and hold there\n  jfs-replica follow /srv/www.jfs --until v43          # (while following) move the pin to v43\n  jfs-replica follow /srv/www.jfs                      # (while following) follow the head again\n  jfs-replica follow /srv/www.jfs --listen 0.0.0.0:7421 # serve other replicas (cascade)"
    )]
    Follow {
        /// The replica volume's directory.
        vol: PathBuf,
        /// Serve the tree read-only here (FUSE).
        #[arg(long, value_name = "MOUNTPOINT")]
        mount: Option<PathBuf>,
        /// Apply up to this sequence number or snapshot and hold there.
        #[arg(long, value_name = "SEQ|SNAPSHOT")]
        until: Option<String>,
        /// Serve this replica's journal to other replicas on ADDR.
        #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:7421")]
        listen: Option<String>,
        /// Follow this server instead of the one given at init (and remember it).
        #[arg(long, value_name = "ADDR")]
        master: Option<String>,
        /// With --mount: threads reading the kernel's requests: auto (one where the
        /// kernel's fuse wake_here is Y, else 4) or a number. One thread
        /// hands large reads to others.
        #[arg(long, value_name = "auto|N", default_value = "auto")]
        fuse_readers: libjfs::fuse::threads::Readers,
    },
    /// Take this replica's tree alone back to a position and hold it there
    /// until `follow` moves it again.
    #[command(
        after_help = "The journal keeps every record, so `follow` (or `follow --until`) moves the tree\nforward again. A following process rewinds in one step: readers of its mount\nsee the tree as it was or as it becomes, never between.\n\nExamples:\n  jfs-replica rewind /srv/www.jfs --to v41\n  jfs-replica rewind /srv/www.jfs --to 1200"
    )]
    Rewind {
        /// The replica volume's directory.
        vol: PathBuf,
        /// Sequence number or snapshot name.
        #[arg(long, value_name = "SEQ|SNAPSHOT")]
        to: String,
    },
    /// Rebuild the tree as it was at a position into a fresh directory.
    #[command(
        after_help = "Works on any volume (master or replica), also while it is in use.\n\nExamples:\n  jfs-replica materialize /srv/www.jfs --at v42 /tmp/www-v42\n  jfs-replica materialize /srv/www.jfs --at 1200 /tmp/www-1200"
    )]
    Materialize {
        /// A volume's directory, a replica's or a master's.
        vol: PathBuf,
        /// Sequence number or snapshot name.
        #[arg(long, value_name = "SEQ|SNAPSHOT")]
        at: String,
        /// Directory to create (it must not exist, or be empty).
        dest: PathBuf,
    },
    /// Apply the records the journal holds but the tree does not have yet.
    #[command(
        after_help = "Examples:\n  jfs-replica replay /srv/www.jfs\n  jfs-replica replay /srv/www.jfs --until v42"
    )]
    Replay {
        /// A volume's directory, a replica's or a master's.
        vol: PathBuf,
        /// Stop after this sequence number or snapshot.
        #[arg(long, value_name = "SEQ|SNAPSHOT")]
        until: Option<String>,
    },
    /// Show the replica's position, its master's, the lag and its state.
    #[command(
        after_help = "States: connecting, catching-up, following, pinned, stalled (applying failed,\nretrying: a full disk), broken (diverged, history trimmed, wrong key: needs an\noperator), stopped (no process follows the volume).\n\nExit codes:\n  0  following or catching up within the limits given, or pinned (whatever its lag)\n  1  the status could not be read\n  3  broken\n  4  lags past --max-lag-records or --max-lag-seconds, or stalled\n  5  no process follows the volume\n\nExample:\n  jfs-replica status /srv/www.jfs --max-lag-seconds 30 --json"
    )]
    Status {
        /// The replica volume's directory.
        vol: PathBuf,
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
        /// Exit 4 if the replica lags by more records than this.
        #[arg(long, value_name = "N")]
        max_lag_records: Option<u64>,
        /// Exit 4 if the replica lags by more seconds than this.
        #[arg(long, value_name = "S")]
        max_lag_seconds: Option<f64>,
    },
    /// Show or set how much of its journal the replica keeps.
    #[command(
        after_help = "The same policy as on a master (see `jfs-master retention --help`); the\nreplica's cursors are its own applied position and the replicas that\nfollow it (cascade).\n\nExamples:\n  jfs-replica retention /srv/www.jfs --max-age 7d\n  jfs-replica retention /srv/www.jfs --keep-all"
    )]
    Retention {
        /// The replica volume's directory.
        vol: PathBuf,
        /// Let go sealed segments whose last record is older than AGE (none clears).
        #[arg(long, value_name = "AGE")]
        max_age: Option<String>,
        /// Keep the newest sealed segments that fit in SIZE (none clears).
        #[arg(long, value_name = "SIZE")]
        max_size: Option<String>,
        /// Keep all history (the default).
        #[arg(long, conflicts_with_all = ["max_age", "max_size"])]
        keep_all: bool,
        /// Print the policy as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Apply the retention policy to the replica's own journal now.
    #[command(
        after_help = "Never removes records the replica has not applied. Works while `follow`\nruns (through it) and when it does not; `follow` also applies the policy\nby itself every minute and after each sealed segment.\n\nExamples:\n  jfs-replica trim /srv/www.jfs --dry-run\n  jfs-replica trim /srv/www.jfs --force   # replicas cascading from this one may have to bootstrap again"
    )]
    Trim {
        /// The replica volume's directory.
        vol: PathBuf,
        /// Trim also what replicas following this one still need.
        #[arg(long)]
        force: bool,
        /// Say what would be removed and why, remove nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check that the tree equals the journal replayed to the tree's position.
    #[command(
        after_help = "Exit code 3 when the tree differs; every difference is printed.\n\nExample:\n  jfs-replica verify /srv/www.jfs"
    )]
    Verify {
        /// A volume's directory, a replica's or a master's.
        vol: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("jfs-replica: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} records ({per_sec}, {eta})")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Rewind { vol, to } => {
            replica_only(&vol, "rewind")?;
            let req = libjfs::admin::Request::Rewind { to: to.clone() };
            let answer = match libjfs::admin::request(&vol, &req) {
                Ok(a) => a,
                Err(libjfs::admin::AdminError::NotServed(_)) => {
                    let mut v =
                        Volume::open(&vol).with_context(|| format!("open {}", vol.display()))?;
                    libjfs::admin::answer_with(&mut v, req).map_err(anyhow::Error::msg)?
                }
                Err(e) => return Err(e.into()),
            };
            println!(
                "{} is at {} ({} records undone); `jfs-replica follow {}` moves it on again",
                vol.display(),
                answer["position"]["seq"],
                answer["undone"].as_u64().unwrap_or(0),
                vol.display()
            );
        }
        Command::Materialize { vol, at, dest } => {
            let journal = open_journal(&vol)?;
            outside_volume(&vol, &dest)?;
            let seq = resolve_target(&journal, &parse_target(&at))?;
            let bar = progress(seq, "materialize");
            let pos = materialize_journal(&journal, seq, &dest, |s| bar.set_position(s))
                .with_context(|| {
                    format!(
                        "materialize {} at {at} into {}",
                        vol.display(),
                        dest.display()
                    )
                })?;
            bar.finish_and_clear();
            println!(
                "materialized {} at {pos} into {}",
                vol.display(),
                dest.display()
            );
        }
        Command::Replay { vol, until } => {
            let mut v = Volume::open(&vol).with_context(|| format!("open {}", vol.display()))?;
            let until = match until {
                Some(t) => Some(resolve_target(v.journal(), &parse_target(&t))?),
                None => None,
            };
            let end = until.unwrap_or(u64::MAX).min(v.head().seq);
            let bar = progress(end, "replay");
            bar.set_position(v.applied().seq);
            v.replay(until, |s| bar.set_position(s))?;
            let pos = v.sync()?;
            bar.finish_and_clear();
            println!("{} at {pos}", vol.display());
        }
        Command::Init {
            vol,
            master,
            secret_file,
            from,
            image,
        } => init(&vol, &master, &secret_file, from, image)?,
        Command::Image { vol, file } => write_image(&vol, &file)?,
        Command::Bootstrap { vol, from, image } => bootstrap(&vol, from, image, None)?,
        Command::Follow {
            vol,
            mount,
            until,
            listen,
            master,
            fuse_readers,
        } => return follow(&vol, mount.as_deref(), until, listen, master, fuse_readers),
        Command::Status {
            vol,
            json,
            max_lag_records,
            max_lag_seconds,
        } => return status(&vol, json, max_lag_records, max_lag_seconds),
        Command::Verify { vol } => return verify(&vol),
        Command::Retention {
            vol,
            max_age,
            max_size,
            keep_all,
            json,
        } => {
            replica_only(&vol, "retention")?;
            let answer = asker(&vol)(libjfs::admin::Request::Retention {
                max_age,
                max_size,
                keep_all,
            })
            .map_err(anyhow::Error::msg)?;
            if json {
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
        }
        Command::Trim {
            vol,
            force,
            dry_run,
            json,
        } => {
            replica_only(&vol, "trim")?;
            let report = libjfs::retention::trim_via(&vol, force, dry_run, asker(&vol))
                .map_err(anyhow::Error::msg)
                .with_context(|| format!("trim {}", vol.display()))?;
            if json {
                println!("{report}");
            } else {
                for line in libjfs::retention::describe_trim(&report) {
                    println!("{line}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses a master volume for `command`, which would act on it as on a
/// replica's (a rewind of the tree alone, a trim by a replica's cursors).
fn replica_only(vol: &Path, command: &str) -> Result<()> {
    let role = libjfs::admin::role_of(vol).map_err(anyhow::Error::msg)?;
    libjfs::admin::expect_role(vol, role, Role::Replica, command).map_err(anyhow::Error::msg)
}

/// Asks the process that follows the volume, or, when none does, the
/// volume opened here (once, for every request).
fn asker(
    vol: &Path,
) -> impl FnMut(libjfs::admin::Request) -> Result<serde_json::Value, String> + '_ {
    let mut opened: Option<Volume> = None;
    move |req| {
        if opened.is_none() {
            match libjfs::admin::request(vol, &req) {
                Ok(v) => return Ok(v),
                Err(libjfs::admin::AdminError::NotServed(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
            let v = Volume::open(vol)
                .with_context(|| format!("open {}", vol.display()))
                .map_err(|e| format!("{e:#}"))?;
            if v.role() != Role::Replica {
                return Err(format!(
                    "{} is a {} volume; use jfs-master",
                    vol.display(),
                    v.role()
                ));
            }
            opened = Some(v);
        }
        libjfs::admin::answer_with(opened.as_mut().expect("opened"), req)
    }
}

/// Refuses a destination (of materialize, of an image) inside the volume:
/// files made there would change its tree behind its journal's back.
fn outside_volume(vol: &Path, dest: &Path) -> Result<()> {
    if libjfs::volume::lies_inside(dest, vol) {
        anyhow::bail!(
            "{} is inside the volume {}; write it outside the volume",
            dest.display(),
            vol.display()
        );
    }
    Ok(())
}

fn open_journal(vol: &Path) -> Result<Journal> {
    libjfs::volume::read_journal(vol)
        .with_context(|| format!("open the journal of {}", vol.display()))
}

/// Where verify rebuilds the tree, inside the volume (same filesystem).
const VERIFY_PREFIX: &str = ".jfs-verify-";

fn verify(vol: &Path) -> Result<ExitCode> {
    // Hold the volume so the tree does not move while it is compared.
    let v = Volume::open(vol).with_context(|| format!("open {}", vol.display()))?;
    let at = v.applied();
    // The rebuilt tree of a verify that was cut short (Ctrl-C): none runs
    // now, as this one holds the volume.
    for e in std::fs::read_dir(vol).with_context(|| format!("read {}", vol.display()))? {
        let e = e?;
        if e.file_name()
            .as_encoded_bytes()
            .starts_with(VERIFY_PREFIX.as_bytes())
        {
            std::fs::remove_dir_all(e.path())
                .with_context(|| format!("remove {}", e.path().display()))?;
        }
    }
    let scratch = tempfile::Builder::new()
        .prefix(VERIFY_PREFIX)
        .tempdir_in(vol)
        .context("create a scratch directory in the volume")?;
    let dest = scratch.path().join("tree");
    let bar = progress(at.seq, "rebuild");
    materialize_journal(v.journal(), at.seq, &dest, |s| bar.set_position(s))?;
    bar.finish_and_clear();
    let diffs = compare_trees(&v.tree_path(), &dest, &CompareOptions::default())?;
    if diffs.is_empty() {
        println!("{}: tree matches the journal at {at}", vol.display());
        return Ok(ExitCode::SUCCESS);
    }
    for d in &diffs {
        println!("{d}");
    }
    eprintln!(
        "jfs-replica: {}: {} differences from the journal at {at}",
        vol.display(),
        diffs.len()
    );
    Ok(ExitCode::from(3))
}

fn init(
    vol: &Path,
    master: &str,
    secret_file: &Path,
    from: Option<String>,
    image: Option<PathBuf>,
) -> Result<()> {
    let key = libjfs::ship::read_key(secret_file)
        .with_context(|| format!("read the key from {}", secret_file.display()))?;
    let master = libjfs::ship::with_default_port(master);
    if let Some(file) = &image {
        // Before anything is created: the file must be there.
        std::fs::metadata(file).with_context(|| format!("image {}", file.display()))?;
    }
    let (v, replica_id, head) = follower::init_replica(vol, &master, &key)
        .with_context(|| format!("init {}", vol.display()))?;
    let id = v.id();
    drop(v);
    let made = format!(
        "initialized replica {replica_id} of volume {id} at {}; {master} is at {head}",
        vol.display()
    );
    if from.is_some() || image.is_some() {
        if let Err(e) = bootstrap(vol, from, image, Some(&made)) {
            // The volume was made here and holds nothing yet: leave no half of it.
            let _ = std::fs::remove_dir_all(vol);
            return Err(e.context(format!("{} was not created", vol.display())));
        }
        return Ok(());
    }
    println!("{made}");
    println!("next: jfs-replica follow {}", vol.display());
    Ok(())
}

fn bytes_bar(total: Option<u64>, what: &str) -> ProgressBar {
    let bar = match total {
        Some(t) => ProgressBar::new(t).with_style(
            ProgressStyle::with_template(
                "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {msg} {bytes} ({bytes_per_sec})")
                .expect("the template is valid"),
        ),
    };
    bar.set_message(what.to_owned());
    bar
}

fn write_image(vol: &Path, file: &Path) -> Result<()> {
    libjfs::volume::check_volume_dir(vol)?;
    outside_volume(vol, file)?;
    // Relative to where the command runs, also for the following process.
    let file = std::path::absolute(file).context("resolve the image path")?;
    let req = libjfs::admin::Request::Image {
        path: file.to_string_lossy().into_owned(),
    };
    let bar = bytes_bar(None, "image");
    let partial = libjfs::image::partial_path(&file);
    let asked = {
        let (vol, req) = (vol.to_owned(), req.clone());
        std::thread::spawn(move || {
            libjfs::admin::request_within(&vol, &req, std::time::Duration::from_secs(24 * 3600))
        })
    };
    while !asked.is_finished() {
        if let Ok(m) = std::fs::metadata(&partial) {
            bar.set_position(m.len());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let answer = asked.join().expect("the request thread does not panic");
    bar.finish_and_clear();
    let (position, nodes, data) = match answer {
        Ok(a) => (
            format!(
                "{}:{}",
                a["position"]["seq"],
                a["position"]["chain"].as_str().unwrap_or("")
            ),
            a["nodes"].as_u64().unwrap_or(0),
            a["data_bytes"].as_u64().unwrap_or(0),
        ),
        Err(libjfs::admin::AdminError::NotServed(_)) => {
            let v = Volume::open(vol).with_context(|| format!("open {}", vol.display()))?;
            let total =
                libjfs::image::measure(&v.tree_path(), &v.path().join(libjfs::volume::ATTIC_DIR))?;
            let bar = bytes_bar(Some(total.data_bytes), "image");
            let (header, stats) =
                libjfs::image::write_volume_file(&v, &file, &mut |n| bar.set_position(n))
                    .with_context(|| format!("write an image of {}", vol.display()))?;
            bar.finish_and_clear();
            (header.position.to_string(), stats.nodes, stats.data_bytes)
        }
        Err(e) => return Err(e).with_context(|| format!("write an image of {}", vol.display())),
    };
    let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    println!(
        "image of {} at {position}: {nodes} nodes, {data} bytes of data, {size} bytes in {}",
        vol.display(),
        file.display()
    );
    Ok(())
}

/// Rebuilds `vol` from an image; `made` is what init says once it succeeded.
fn bootstrap(
    vol: &Path,
    from: Option<String>,
    image: Option<PathBuf>,
    made: Option<&str>,
) -> Result<()> {
    let (v, header, source) = match (from, image) {
        (Some(addr), _) => {
            let addr = libjfs::ship::with_default_port(&addr);
            let bar = bytes_bar(None, &format!("image from {addr}"));
            let (v, header) =
                libjfs::ship::bootstrap::bootstrap_from(vol, &addr, &mut |n| bar.set_position(n))
                    .with_context(|| format!("bootstrap {} from {addr}", vol.display()))?;
            bar.finish_and_clear();
            (v, header, addr)
        }
        (None, Some(file)) => {
            let f = std::fs::File::open(&file)
                .with_context(|| format!("open image {}", file.display()))?;
            let size = f.metadata().map(|m| m.len()).ok();
            let bar = bytes_bar(size, "image");
            let (v, header) = libjfs::image::bootstrap(vol, f, &mut |n| bar.set_position(n))
                .with_context(|| format!("bootstrap {} from {}", vol.display(), file.display()))?;
            bar.finish_and_clear();
            (v, header, file.display().to_string())
        }
        (None, None) => anyhow::bail!("give --from ADDR or --image FILE"),
    };
    if let Some(made) = made {
        println!("{made}");
    }
    println!(
        "bootstrapped {} from {source}: tree at {}; its journal goes on from there",
        vol.display(),
        header.position
    );
    drop(v);
    println!("next: jfs-replica follow {}", vol.display());
    Ok(())
}

fn follow(
    vol_path: &Path,
    mount: Option<&Path>,
    until: Option<String>,
    listen: Option<String>,
    master: Option<String>,
    readers: libjfs::fuse::threads::Readers,
) -> Result<ExitCode> {
    // A process follows already: move its pin.
    let pin = libjfs::admin::Request::Pin {
        until: until.clone(),
    };
    match libjfs::admin::request(vol_path, &pin) {
        Ok(answer) => {
            match (&until, answer["pin"].as_u64()) {
                (Some(t), Some(seq)) => println!(
                    "{} now holds at {t} (seq {seq}); it is at {}",
                    vol_path.display(),
                    answer["position"]["seq"]
                ),
                (Some(t), None) => println!(
                    "{} now holds its tree at {} until snapshot {t} arrives (its journal \
                     does not hold it yet)",
                    vol_path.display(),
                    answer["position"]["seq"]
                ),
                (None, _) => println!("{} follows its master's head again", vol_path.display()),
            }
            return Ok(ExitCode::SUCCESS);
        }
        Err(libjfs::admin::AdminError::NotServed(_)) => {}
        Err(e) => return Err(e.into()),
    }
    let v = Volume::open(vol_path).with_context(|| format!("open {}", vol_path.display()))?;
    if v.role() != Role::Replica {
        anyhow::bail!(
            "{} is a {} volume; only replica volumes follow",
            vol_path.display(),
            v.role()
        );
    }
    // Before anything changes: the mount point must be usable.
    if let Some(mnt) = mount {
        libjfs::fuse::check_mountpoint(mnt, vol_path)?;
    }
    if let Some(m) = &master {
        v.set_setting(
            follower::SETTING_MASTER,
            &libjfs::ship::with_default_port(m),
        )?;
    }
    let master = v
        .setting(follower::SETTING_MASTER)?
        .context("the volume names no master; give --master ADDR")?;
    let replica_id = v
        .setting(follower::SETTING_REPLICA_ID)?
        .context("the volume has no replica id (was it made by jfs-replica init?)")?;
    let key = libjfs::ship::read_key(&vol_path.join(libjfs::volume::SECRET_FILE))?;
    let until = until.map(|t| parse_target(&t));
    let gate = std::sync::Arc::new(std::sync::RwLock::new(()));
    let mut hooks = Hooks {
        gate: Some(gate.clone()),
        ..Hooks::default()
    };

    // Serve the tree read-only; records invalidate the kernel's caches as they land.
    let mounted = match mount {
        Some(mnt) => {
            let m = libjfs::rofs::ReadOnlyMount::mount_with(
                &v.tree_path(),
                mnt,
                &format!("jfs:{}", vol_path.display()),
                gate.clone(),
                readers,
            )
            .with_context(|| format!("mount {} at {}", vol_path.display(), mnt.display()))?;
            let inval = m.invalidator();
            hooks.applied = Some(Box::new(move |op: &libjfs::Op| inval.record_applied(op)));
            eprintln!(
                "jfs-replica: serving the tree read-only at {}",
                mnt.display()
            );
            if let Some(advice) = libjfs::fuse::threads::advice(readers) {
                eprintln!("jfs-replica: {advice}");
            }
            Some(m)
        }
        None => None,
    };

    let (head, volume_id) = (libjfs::ship::Head::of(&v), v.id());
    let vol = std::sync::Arc::new(std::sync::Mutex::new(v));
    // Cascade: serve this replica's journal, and images of its tree, to others.
    let server = match &listen {
        Some(addr) => {
            let (tx, rx) = tokio::sync::watch::channel(head);
            hooks.head = Some(tx);
            let s = libjfs::ship::server::Server::start_with_images(
                libjfs::ship::server::ServerConfig {
                    listen: libjfs::ship::with_default_port(addr),
                    journal_dir: vol_path.join(JOURNAL_DIR),
                    volume_id,
                    key: key.clone(),
                    head: rx,
                    registry_file: Some(vol_path.join(libjfs::ship::server::REGISTRY_FILE)),
                    log_name: "jfs-replica",
                },
                std::sync::Arc::new(libjfs::image::LockedVolume(vol.clone())),
            )?;
            eprintln!("jfs-replica: serving replicas on {}", s.local_addr());
            Some(std::sync::Arc::new(s))
        }
        None => None,
    };

    let state = std::sync::Arc::new(std::sync::Mutex::new(FollowState::new(
        &master,
        until.clone(),
    )));
    let (pin_tx, pin_rx) = tokio::sync::watch::channel(until.clone());
    let inval = mounted.as_ref().map(|m| m.invalidator());
    let admin = {
        let (vol, state, server) = (vol.clone(), state.clone(), server.clone());
        let gate = gate.clone();
        let mountpoint = mount.map(|m| m.canonicalize().unwrap_or_else(|_| m.to_owned()));
        let busy = Busy::default();
        libjfs::admin::serve(
            vol_path,
            std::sync::Arc::new(move |req| match req {
                libjfs::admin::Request::Status => {
                    let (mut s, applied) = busy.volume_status(&vol);
                    s["role"] = "replica".into();
                    let f = state.lock().unwrap_or_else(|p| p.into_inner());
                    s["replication"] = f.to_json(applied);
                    s["mountpoint"] = mountpoint.as_ref().map(|m| m.display().to_string()).into();
                    if let Some(server) = &server {
                        s["listen"] = server.local_addr().to_string().into();
                        s["replicas"] = server.replicas();
                    }
                    Ok(s)
                }
                libjfs::admin::Request::Image { path } => {
                    // Holding the volume pauses applying: the tree stays at one position.
                    let v = vol.lock().unwrap_or_else(|p| p.into_inner());
                    let _busy = busy.hold(&v, "writing an image");
                    let (header, stats) =
                        libjfs::image::write_volume_file(&v, Path::new(&path), &mut |_| {})
                            .map_err(|e| format!("{:#}", anyhow::Error::new(e)))?;
                    Ok(serde_json::json!({
                        "position": libjfs::inspect::position_json(header.position),
                        "nodes": stats.nodes,
                        "data_bytes": stats.data_bytes,
                    }))
                }
                libjfs::admin::Request::Rewind { to } => move_pin(
                    &vol,
                    &gate,
                    Some(parse_target(&to)),
                    &pin_tx,
                    inval.as_ref(),
                ),
                libjfs::admin::Request::Pin { until } => move_pin(
                    &vol,
                    &gate,
                    until.map(|t| parse_target(&t)),
                    &pin_tx,
                    inval.as_ref(),
                ),
                req @ (libjfs::admin::Request::Trim { .. }
                | libjfs::admin::Request::Retention { .. }) => {
                    let mut v = vol.lock().unwrap_or_else(|p| p.into_inner());
                    libjfs::admin::answer_with(&mut v, req)
                }
                _ => Err("a replica takes its snapshots from its master; ask the master".into()),
            }),
        )
        .context("serve the admin socket")?
    };

    // Retention on the replica's own journal, beside following.
    let stop_trim = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let auto_trim = {
        let vol = vol.clone();
        libjfs::retention::auto_trim(
            vol_path.to_owned(),
            libjfs::retention::AUTO_TRIM_EVERY,
            "jfs-replica",
            stop_trim.clone(),
            move |req| {
                let mut v = vol.lock().unwrap_or_else(|p| p.into_inner());
                libjfs::admin::answer_with(&mut v, req)
            },
        )
    };

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        // A closed terminal stops it cleanly too, instead of killing it.
        signal_hook::consts::SIGHUP,
    ])
    .context("install signal handlers")?;
    let signal_handle = signals.handle();
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            let _ = stop_tx.send(true);
        }
    });
    {
        let v = vol.lock().unwrap_or_else(|p| p.into_inner());
        eprintln!(
            "jfs-replica: following {master} into {} from {}",
            vol_path.display(),
            v.head()
        );
        if let Some(t @ libjfs::volume::Target::Snapshot(name)) = &until {
            if v.resolve(t).is_err() {
                eprintln!(
                    "jfs-replica: holding the tree at {} until snapshot {name} arrives \
                     (the journal does not hold it yet)",
                    v.applied()
                );
            }
        }
    }
    let cfg = FollowConfig {
        master,
        key,
        replica_id,
        until,
        listen: server.as_ref().map(|s| s.local_addr().to_string()),
        pin: Some(pin_rx),
    };
    let result = follower::follow(vol.clone(), cfg, hooks, state, stop_rx);
    stop_trim.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = auto_trim.join();
    signal_handle.close();
    drop(admin);
    drop(server);
    if let Some(m) = mounted {
        if let Err(e) = m.unmount() {
            eprintln!("jfs-replica: unmount: {e}");
        }
    }
    let at = vol.lock().unwrap_or_else(|p| p.into_inner()).applied();
    match result {
        Ok(()) => {
            eprintln!("jfs-replica: stopped at {at}");
            Ok(ExitCode::SUCCESS)
        }
        Err(follower::FollowError::Broken(reason)) => {
            eprintln!(
                "jfs-replica: {} is broken at {at}: {reason}",
                vol_path.display()
            );
            let tree_refused = reason.starts_with(follower::TREE_REFUSED);
            if tree_refused {
                eprintln!(
                    "jfs-replica: its tree is not what its journal says (changed behind the \
                     journal's back?); `jfs-replica verify {}` lists the differences",
                    vol_path.display()
                );
            }
            if tree_refused || reason.contains(libjfs::ship::wire::Refusal::Trimmed.as_str()) {
                eprintln!(
                    "jfs-replica: to rebuild it: jfs-replica bootstrap {} --from ADDR \
                     (a replica that follows with --listen) or --image FILE",
                    vol_path.display()
                );
            }
            Ok(ExitCode::from(EXIT_BROKEN))
        }
        Err(e) => Err(e.into()),
    }
}

/// Moves a following replica's pin, rewinding first when it goes back.
/// What status says of the volume while a long task (an image) holds it:
/// nothing can change the volume meanwhile, so its figures as the task took
/// it are its figures now, and status answers without waiting for the task.
#[derive(Default)]
struct Busy(std::sync::Arc<BusyNote>);

/// The volume's part of a status, and its applied position, while held.
type BusyNote = std::sync::Mutex<Option<(serde_json::Value, libjfs::Position)>>;

/// Clears the [`Busy`] note when the task ends, however it ends.
struct BusyGuard(std::sync::Arc<BusyNote>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Busy {
    /// The volume's part of a status, and its applied position.
    fn of(v: &Volume) -> (serde_json::Value, libjfs::Position) {
        let mut s = VolumeStatus::of(v).to_json();
        s["retention"] = libjfs::retention::policy_json(v);
        (s, v.applied())
    }

    /// Notes, while `v` is held for `what`, what status should say.
    fn hold(&self, v: &Volume, what: &str) -> BusyGuard {
        let (mut s, applied) = Busy::of(v);
        s["busy"] = serde_json::json!({
            "task": what,
            "since": libjfs::Timestamp::now().to_rfc3339(),
        });
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some((s, applied));
        BusyGuard(self.0.clone())
    }

    /// The volume's part of a status: from the volume, or from the note of
    /// the task that holds it.
    fn volume_status(
        &self,
        vol: &std::sync::Mutex<Volume>,
    ) -> (serde_json::Value, libjfs::Position) {
        loop {
            match vol.try_lock() {
                Ok(v) => return Busy::of(&v),
                Err(std::sync::TryLockError::Poisoned(p)) => return Busy::of(&p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => {}
            }
            if let Some(noted) = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                return noted;
            }
            // Held for a moment (applying a group of records).
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

fn move_pin(
    vol: &std::sync::Mutex<Volume>,
    gate: &std::sync::RwLock<()>,
    target: Option<libjfs::volume::Target>,
    pin: &tokio::sync::watch::Sender<Option<libjfs::volume::Target>>,
    inval: Option<&libjfs::rofs::Invalidator>,
) -> Result<serde_json::Value, String> {
    follower::repin(vol, Some(gate), target, pin, |op| {
        if let Some(i) = inval {
            i.record_applied(op)
        }
    })
    .map_err(|e| e.to_string())
}

const EXIT_BROKEN: u8 = 3;
const EXIT_LAGGING: u8 = 4;
const EXIT_NOT_FOLLOWING: u8 = 5;

fn status(
    vol: &Path,
    json: bool,
    max_lag_records: Option<u64>,
    max_lag_seconds: Option<f64>,
) -> Result<ExitCode> {
    let s = match libjfs::admin::request(vol, &libjfs::admin::Request::Status) {
        Ok(s) => s,
        Err(libjfs::admin::AdminError::NotServed(_)) => {
            let mut s = VolumeStatus::read(vol)
                .with_context(|| format!("status of {}", vol.display()))?
                .to_json();
            if let Some(role) = libjfs::volume::peek_role(vol)? {
                s["role"] = role.as_str().into();
            }
            s["replication"] = follower::idle_state_json(vol);
            s
        }
        Err(e) => return Err(e).with_context(|| format!("status of {}", vol.display())),
    };
    let role = libjfs::admin::status_role(&s);
    libjfs::admin::expect_role(vol, role, Role::Replica, "status").map_err(anyhow::Error::msg)?;
    let mut s = s;
    add_retention_usage(vol, &mut s);
    let r = &s["replication"];
    let state = r["state"].as_str().unwrap_or("stopped");
    if json {
        println!("{s}");
    } else {
        let pos = |v: &serde_json::Value| match v["seq"].as_u64() {
            Some(seq) => format!("{seq}:{}", &v["chain"].as_str().unwrap_or("")[..16]),
            None => "unknown".into(),
        };
        println!("volume   {}", s["volume_id"].as_str().unwrap_or(""));
        println!("state    {state}");
        if let Some(task) = s["busy"]["task"].as_str() {
            println!(
                "busy     {task} since {} (nothing is applied meanwhile)",
                s["busy"]["since"].as_str().unwrap_or("?")
            );
        }
        if let Some(reason) = r["reason"].as_str() {
            println!("reason   {reason}");
        }
        println!("tree     at {}", pos(&s["position"]));
        if let Some(until) = r["until"].as_str() {
            println!("pin      {until}");
        }
        if r["master"].is_object() {
            println!(
                "master   {} at {}{}",
                r["master"]["address"].as_str().unwrap_or("?"),
                pos(&r["master"]["position"]),
                if r["master"]["connected"] == true {
                    ""
                } else {
                    " (not connected)"
                }
            );
            println!(
                "lag      {} records, {:.1} s",
                r["lag"]["records"],
                r["lag"]["seconds"].as_f64().unwrap_or(0.0)
            );
        }
        if let Some(m) = s["mountpoint"].as_str() {
            println!("mounted  read-only at {m}");
        }
        let h = &s["retention"];
        let bytes = |v: &serde_json::Value| libjfs::retention::human_bytes(v.as_u64().unwrap_or(0));
        println!(
            "history  from {}, {} sealed segments, {}; attic {} entries, {}",
            h["first_seq"],
            h["history_segments"],
            bytes(&h["history_bytes"]),
            h["attic_entries"],
            bytes(&h["attic_bytes"])
        );
        println!(
            "retention {}",
            h["policy_text"].as_str().unwrap_or("unknown")
        );
    }
    let lag = &r["lag"];
    let lagging = max_lag_records.is_some_and(|m| lag["records"].as_u64().unwrap_or(0) > m)
        || max_lag_seconds.is_some_and(|m| lag["seconds"].as_f64().unwrap_or(0.0) > m);
    let code = match state {
        "broken" => EXIT_BROKEN,
        "stopped" => EXIT_NOT_FOLLOWING,
        "stalled" => EXIT_LAGGING,
        // Held behind on purpose: its lag is the operator's choice.
        "pinned" => 0,
        _ if lagging => EXIT_LAGGING,
        _ => 0,
    };
    Ok(ExitCode::from(code))
}

/// Adds to a status what the files say of history and the attic, and the
/// policy when the answer did not carry it.
fn add_retention_usage(vol: &Path, s: &mut serde_json::Value) {
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
