//! jfs-master: creates and inspects master volumes.
//!
//! Thin: parses arguments and calls libjfs. Exit codes: 0 success, 1 error,
//! 2 bad usage (clap).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use libjfs::inspect::{entry_json, VolumeStatus};
use libjfs::journal::Journal;
use libjfs::volume::JOURNAL_DIR;
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
    #[command(after_help = "Example:\n  jfs-master init /srv/www.jfs")]
    Init { vol: PathBuf },
    /// Print the journal's records, one per line.
    #[command(
        after_help = "Examples:\n  jfs-master log /srv/www.jfs\n  jfs-master log /srv/www.jfs --from 1200 --json | jq .text"
    )]
    Log {
        vol: PathBuf,
        /// First sequence number to print.
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// One JSON object per line: seq, chain, time, op, paths, text, mtimes.
        #[arg(long)]
        json: bool,
    },
    /// Show the volume's position and journal.
    #[command(after_help = "Example:\n  jfs-master status /srv/www.jfs --json")]
    Status {
        vol: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Name the current position, list or delete names.
    #[command(
        after_help = "Examples:\n  jfs-master snapshot /srv/www.jfs create v42\n  jfs-master snapshot /srv/www.jfs list"
    )]
    Snapshot {
        vol: PathBuf,
        #[command(subcommand)]
        action: SnapshotAction,
    },
}

#[derive(Subcommand)]
enum SnapshotAction {
    /// Journal a snapshot marker named NAME at the current position.
    Create { name: String },
    /// List snapshots in position order.
    List,
    /// Forget a snapshot name (its marker stays in the journal).
    Delete { name: String },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jfs-master: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Init { vol } => {
            let v = Volume::init(&vol, Role::Master)
                .with_context(|| format!("init {}", vol.display()))?;
            println!(
                "initialized master volume {} (id {}) at {}",
                vol.display(),
                v.id(),
                v.head()
            );
            Ok(())
        }
        Command::Log { vol, from, json } => log(&vol, from, json),
        Command::Status { vol, json } => {
            let s =
                VolumeStatus::read(&vol).with_context(|| format!("status of {}", vol.display()))?;
            if json {
                let mut v = s.to_json();
                v["role"] = "master".into();
                println!("{v}");
            } else {
                let applied = s.applied.map_or("unknown".into(), |p| p.to_string());
                println!("volume   {}", s.volume_id);
                println!("role     master");
                println!("tree     at {applied}");
                println!(
                    "journal  head {}, {} records from {}",
                    s.head,
                    s.records(),
                    s.first_seq
                );
                println!(
                    "segments {} ({} sealed), {} bytes",
                    s.segments, s.sealed_segments, s.journal_bytes
                );
            }
            Ok(())
        }
        Command::Snapshot { vol, action } => {
            let mut v = Volume::open(&vol).with_context(|| format!("open {}", vol.display()))?;
            match action {
                SnapshotAction::Create { name } => {
                    let pos = v.create_snapshot(&name)?;
                    println!("snapshot {name} at {pos}");
                }
                SnapshotAction::List => {
                    for (name, pos) in v.list_snapshots()? {
                        println!("{name}\t{}\t{}", pos.seq, pos.chain_hex());
                    }
                }
                SnapshotAction::Delete { name } => {
                    v.delete_snapshot(&name)?;
                    println!("deleted snapshot {name}");
                }
            }
            Ok(())
        }
    }
}

fn log(vol: &std::path::Path, from: u64, json: bool) -> Result<()> {
    let journal = Journal::open_read_only(&vol.join(JOURNAL_DIR), None)
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
