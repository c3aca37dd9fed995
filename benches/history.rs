//! History benchmark: what rewinding costs, beside the usual way back.
//!
//! 1. A tree of 100,000 small files (scaled by `JFS_BENCH_SCALE`) in a master
//!    volume, snapshot `v1`, then 100 files changed, and later a tenth of
//!    them. Rewinding the volume to `v1` (journaled, durable) beside
//!    restoring the same tree from a backup copy with `rsync -a --delete`,
//!    which must look at every file.
//! 2. Materialize throughput: the journal rebuilt at `v1` into a fresh
//!    directory.
//! 3. What history costs on disk: a real source tree copied in and edited
//!    (rewrites, truncates, deletes, renames), once with history on and once
//!    off; journal and attic bytes of each.
//!
//! Library calls, no FUSE: the figures are the core's. Run with
//! `cargo bench --bench history`; scratch space under `JFS_BENCH_DIR`.

#[path = "common/mod.rs"]
mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use libjfs::materialize::materialize;
use libjfs::{NewNode, Op, RelPath, Role, Volume};

use common::{bench_base, loadavg, machine, mb, scale, secs};

const NODE: NewNode = NewNode {
    mode: 0o644,
    uid: 0,
    gid: 0,
};

fn rel(s: &str) -> RelPath {
    RelPath::new(s.as_bytes()).expect("valid path")
}

/// Disk space under `path`, by `du`.
fn du(path: &Path) -> u64 {
    du_with(path, &[])
}

/// Bytes of the journal's segments: their length, not the space the active
/// segment sets aside for records to come (a segment's worth, see
/// docs/SEMANTICS.md), which `du` counts.
fn journal_bytes(vol: &Path) -> u64 {
    du_with(&vol.join("journal"), &["--apparent-size"])
}

fn du_with(path: &Path, options: &[&str]) -> u64 {
    let out = Command::new("du")
        .args(["-s", "-B1"])
        .args(options)
        .arg(path)
        .output()
        .expect("run du");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn drop_caches() {
    let _ = Command::new("sync").status();
    let _ = fs::write("/proc/sys/vm/drop_caches", "3");
}

fn content(i: usize, version: u32, len: usize) -> Vec<u8> {
    let line = format!("file {i} version {version}\n");
    line.repeat(len / line.len() + 1).into_bytes()[..len].to_vec()
}

fn main() -> Result<()> {
    let scale = scale()?;
    let (cpus, kernel, cpu, memory) = machine();
    let base = bench_base().join(format!("jfs-history-bench-{}", std::process::id()));
    fs::create_dir_all(&base)?;
    let _cleanup = Cleanup(base.clone());
    println!("# jfs history benchmark");
    println!(
        "machine: {cpus} cpus, {cpu}, {memory} memory, kernel {}; scratch in {}",
        kernel.trim(),
        base.display()
    );
    println!("load average at start: {}", loadavg());

    let files = ((100_000.0 * scale) as usize).max(1000);
    println!("\n## Rewind changed files in a {files}-file tree\n");
    let vol_path = base.join("vol");
    let mut vol = Volume::init(&vol_path, Role::Master)?;
    let started = Instant::now();
    for d in 0..files.div_ceil(1000) {
        vol.commit(Op::Mkdir {
            path: rel(&format!("d{d}")),
            node: NewNode {
                mode: 0o755,
                ..NODE
            },
        })?;
    }
    for i in 0..files {
        let path = rel(&format!("d{}/f{i}", i / 1000));
        vol.commit(Op::Create {
            path: path.clone(),
            node: NODE,
        })?;
        vol.commit(Op::Write {
            path,
            offset: 0,
            data: content(i, 1, 1024),
        })?;
    }
    let v1 = vol.create_snapshot("v1")?;
    vol.sync()?;
    println!("built in {:.1} s", secs(started.elapsed()));
    // The journal up to v1, which materialize reads below.
    let v1_journal = journal_bytes(&vol_path);
    // The backup an rsync restore starts from: the tree as of v1.
    let backup = base.join("backup");
    cp_a(&vol.tree_path(), &backup)?;
    println!("| way back to v1 | jfs-master rewind (journaled, durable) | rsync -a --delete from a backup copy | rsync / jfs |");
    println!("|---|---:|---:|---:|");
    for changed in [100.min(files), files / 10] {
        let (rewind, rsync) = rewind_vs_rsync(&mut vol, &backup, files, changed)?;
        println!(
            "| after {changed} changed files | {:.1} ms | {:.1} ms | {:.1}x |",
            ms(rewind),
            ms(rsync),
            secs(rsync) / secs(rewind)
        );
    }

    println!("\n## Materialize throughput\n");
    let dest = base.join("materialized");
    drop_caches();
    let t = Instant::now();
    let at = materialize(&vol_path, v1.seq, &dest, |_| {})?;
    let _ = Command::new("sync").arg("-f").arg(&dest).status();
    let took = t.elapsed();
    println!(
        "{} records ({:.1} MB of journal) into a fresh tree in {:.2} s: {:.0} records/s, {:.1} MB/s of journal",
        at.seq,
        mb(v1_journal),
        secs(took),
        at.seq as f64 / secs(took),
        mb(v1_journal) / secs(took)
    );
    let t = Instant::now();
    cp_a(&backup, &base.join("cp-copy"))?;
    let _ = Command::new("sync").arg("-f").arg(&base).status();
    println!(
        "baseline: cp -a of the same tree: {:.2} s",
        secs(t.elapsed())
    );
    drop(vol);

    println!("\n## What history costs on disk (a real workload)\n");
    let sources = source_files(((3000.0 * scale) as usize).max(300))?;
    println!("| history | journal | attic | tree | journal / tree |");
    println!("|---|---:|---:|---:|---:|");
    for on in [false, true] {
        let p = base.join(if on { "space-on" } else { "space-off" });
        let mut v = Volume::init(&p, Role::Master)?;
        if !on {
            v.set_history(false)?;
        }
        workload(&mut v, &sources)?;
        v.close()?;
        let (j, a, t) = (journal_bytes(&p), du(&p.join("attic")), du(&p.join("tree")));
        println!(
            "| {} | {:.1} MB | {:.1} MB | {:.1} MB | {:.2} |",
            if on { "on" } else { "off" },
            mb(j),
            mb(a),
            mb(t),
            j as f64 / t.max(1) as f64
        );
    }
    println!("\nload average at end: {}", loadavg());
    Ok(())
}

/// From a tree as `backup` holds it: rewrites `changed` of the `files` files
/// with 4 KiB, then takes the volume back by a rewind and a copy of the
/// changed tree back by rsync from `backup`; checks both came back the same.
/// Returns their times.
fn rewind_vs_rsync(
    vol: &mut Volume,
    backup: &Path,
    files: usize,
    changed: usize,
) -> Result<(Duration, Duration)> {
    let before = vol.create_snapshot(&format!("before-{changed}"))?;
    let step = files / changed;
    for k in 0..changed {
        let i = k * step;
        vol.commit(Op::Write {
            path: rel(&format!("d{}/f{i}", i / 1000)),
            offset: 0,
            data: content(i, 2, 4096),
        })?;
    }
    vol.sync()?;
    // The same changed tree for rsync to restore.
    let victim = backup.with_file_name(format!("victim-{changed}"));
    cp_a(&vol.tree_path(), &victim)?;

    drop_caches();
    let t = Instant::now();
    let r = vol.rewind(before.seq, |_| {})?;
    vol.sync()?;
    let rewind = t.elapsed();
    ensure!(r.undone == changed as u64, "undid {} records", r.undone);

    drop_caches();
    let t = Instant::now();
    let st = Command::new("rsync")
        .args(["-a", "--delete"])
        .arg(format!("{}/", backup.display()))
        .arg(format!("{}/", victim.display()))
        .status()
        .context("run rsync")?;
    ensure!(st.success(), "rsync failed");
    let _ = Command::new("sync").arg("-f").arg(&victim).status();
    let rsync = t.elapsed();
    let diffs = libjfs::compare::compare_trees(
        &vol.tree_path(),
        &victim,
        &libjfs::compare::CompareOptions {
            ignore_root_mtime: true,
            ..Default::default()
        },
    )?;
    ensure!(
        diffs.is_empty(),
        "rewound and restored trees differ: {diffs:?}"
    );
    fs::remove_dir_all(&victim)?;
    Ok((rewind, rsync))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn cp_a(from: &Path, to: &Path) -> Result<()> {
    let st = Command::new("cp").arg("-a").arg(from).arg(to).status()?;
    ensure!(st.success(), "cp -a {} {}", from.display(), to.display());
    Ok(())
}

/// Regular files from the cargo registry's sources (the same real tree the
/// tests copy), up to `n`.
fn source_files(n: usize) -> Result<Vec<PathBuf>> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        });
    let mut out = Vec::new();
    let mut stack = vec![home.join("registry/src")];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && out.len() < n {
                out.push(e.path());
            }
        }
        if out.len() >= n {
            break;
        }
    }
    ensure!(!out.is_empty(), "no sources under {}", home.display());
    Ok(out)
}

/// Copies `sources` in, then edits: every 5th file rewritten in its middle,
/// every 7th truncated to half, every 11th deleted, every 13th renamed.
fn workload(v: &mut Volume, sources: &[PathBuf]) -> Result<()> {
    for d in 0..sources.len().div_ceil(100) {
        v.commit(Op::Mkdir {
            path: rel(&format!("s{d}")),
            node: NewNode {
                mode: 0o755,
                ..NODE
            },
        })?;
    }
    let path = |i: usize| rel(&format!("s{}/f{i}", i / 100));
    for (i, src) in sources.iter().enumerate() {
        let data = fs::read(src)?;
        v.commit(Op::Create {
            path: path(i),
            node: NODE,
        })?;
        for (k, chunk) in data.chunks(128 << 10).enumerate() {
            v.commit(Op::Write {
                path: path(i),
                offset: (k * (128 << 10)) as u64,
                data: chunk.to_vec(),
            })?;
        }
    }
    for (i, src) in sources.iter().enumerate() {
        let len = fs::metadata(src)?.len();
        if i % 5 == 0 && len > 64 {
            v.commit(Op::Write {
                path: path(i),
                offset: len / 2,
                data: vec![b'x'; (len / 4) as usize],
            })?;
        }
        if i % 7 == 0 {
            v.commit(Op::Truncate {
                path: path(i),
                size: len / 2,
            })?;
        }
        if i % 11 == 0 {
            v.commit(Op::Unlink { path: path(i) })?;
        } else if i % 13 == 0 {
            v.commit(Op::Rename {
                from: path(i),
                to: rel(&format!("s{}/renamed{i}", i / 100)),
                mode: libjfs::record::RenameMode::NoReplace,
            })?;
        }
    }
    Ok(())
}

struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
