//! jfs-replica: replays, materializes and verifies volumes.
//!
//! Thin: parses arguments and calls libjfs. Exit codes: 0 success, 1 error,
//! 2 bad usage (clap), 3 `verify` found differences.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use libjfs::compare::{compare_trees, CompareOptions};
use libjfs::inspect::{resolve_target, VolumeStatus};
use libjfs::journal::Journal;
use libjfs::materialize::materialize_journal;
use libjfs::volume::{parse_target, JOURNAL_DIR};
use libjfs::Volume;

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
    /// Rebuild the tree as it was at a position into a fresh directory.
    #[command(
        after_help = "Works on any volume (master or replica), also while it is in use.\n\nExamples:\n  jfs-replica materialize /srv/www.jfs --at v42 /tmp/www-v42\n  jfs-replica materialize /srv/www.jfs --at 1200 /tmp/www-1200"
    )]
    Materialize {
        vol: PathBuf,
        /// Sequence number or snapshot name.
        #[arg(long)]
        at: String,
        /// Directory to create (it must not exist, or be empty).
        dest: PathBuf,
    },
    /// Apply the records the journal holds but the tree does not have yet.
    #[command(
        after_help = "Examples:\n  jfs-replica replay /srv/www.jfs\n  jfs-replica replay /srv/www.jfs --until v42"
    )]
    Replay {
        vol: PathBuf,
        /// Stop after this sequence number or snapshot.
        #[arg(long)]
        until: Option<String>,
    },
    /// Show the volume's position and journal.
    Status {
        vol: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check that the tree equals the journal replayed to the tree's position.
    #[command(
        after_help = "Exit code 3 when the tree differs; every difference is printed.\n\nExample:\n  jfs-replica verify /srv/www.jfs"
    )]
    Verify { vol: PathBuf },
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
        Command::Materialize { vol, at, dest } => {
            let journal = open_journal(&vol)?;
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
        Command::Status { vol, json } => {
            let s =
                VolumeStatus::read(&vol).with_context(|| format!("status of {}", vol.display()))?;
            if json {
                let mut v = s.to_json();
                v["role"] = "replica".into();
                println!("{v}");
            } else {
                let applied = s.applied.map_or("unknown".into(), |p| p.to_string());
                println!("volume   {}", s.volume_id);
                println!("tree     at {applied}");
                println!(
                    "journal  head {}, {} records from {}",
                    s.head,
                    s.records(),
                    s.first_seq
                );
            }
        }
        Command::Verify { vol } => return verify(&vol),
    }
    Ok(ExitCode::SUCCESS)
}

fn open_journal(vol: &Path) -> Result<Journal> {
    Journal::open_read_only(&vol.join(JOURNAL_DIR), None)
        .with_context(|| format!("open the journal of {}", vol.display()))
}

fn verify(vol: &Path) -> Result<ExitCode> {
    // Hold the volume so the tree does not move while it is compared.
    let v = Volume::open(vol).with_context(|| format!("open {}", vol.display()))?;
    let at = v.applied();
    let scratch = tempfile::Builder::new()
        .prefix(".jfs-verify-")
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
