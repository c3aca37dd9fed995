//! Journal a directory into a master volume, ship the journal's segments to
//! a replica volume, replay them there, and check that the trees are equal.
//!
//! ```text
//! cargo run --release -p libjfs --example ship -- SRC WORKDIR
//! ```
//!
//! WORKDIR must not exist; it receives `master/` and `replica/` volumes.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use libjfs::compare::{compare_trees, CompareOptions};
use libjfs::record::MAX_WRITE;
use libjfs::volume::JOURNAL_DIR;
use libjfs::{NewNode, Node, Op, RelPath, Role, Timestamp, Volume};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, work] = args.as_slice() else {
        eprintln!("usage: ship SRC WORKDIR   (WORKDIR must not exist)");
        std::process::exit(2);
    };
    let (src, work) = (Path::new(src), Path::new(work));
    fs::create_dir(work).map_err(|e| format!("create {}: {e}", work.display()))?;

    let t = Instant::now();
    let mut master = Volume::init(&work.join("master"), Role::Master)?;
    let (mut files, mut bytes) = (0u64, 0u64);
    import(&mut master, src, None, &mut files, &mut bytes)?;
    let md = fs::metadata(src)?;
    let mtime = Some(Timestamp::new(md.mtime(), md.mtime_nsec() as u32));
    commit(
        &mut master,
        Op::SetAttr {
            node: Node::Root,
            mode: None,
            uid: None,
            gid: None,
            atime: None,
            mtime,
        },
    )?;
    let id = master.id();
    let head = master.close()?;
    let journaled = t.elapsed();

    // Ship: the sealed segments are plain files, verified when read.
    let t = Instant::now();
    let replica_path = work.join("replica");
    drop(Volume::init_with(
        &replica_path,
        Role::Replica,
        id,
        b"shared secret",
    )?);
    let shipped = replica_path.join(JOURNAL_DIR);
    for e in fs::read_dir(&shipped)? {
        fs::remove_file(e?.path())?;
    }
    let mut journal_bytes = 0;
    for e in fs::read_dir(work.join("master").join(JOURNAL_DIR))? {
        let e = e?;
        journal_bytes += fs::copy(e.path(), shipped.join(e.file_name()))?;
    }
    let mut replica = Volume::open(&replica_path)?;
    replica.replay(None, |_| {})?;
    let applied = replica.sync()?;
    let replayed = t.elapsed();

    let diffs = compare_trees(
        &work.join("master/tree"),
        &replica.tree_path(),
        &CompareOptions::default(),
    )?;
    println!(
        "master   {} files, {} MB journaled in {:.2?} -> {head}",
        files,
        bytes / 1_000_000,
        journaled
    );
    println!(
        "journal  {} MB on disk after sealing (zstd)",
        journal_bytes / 1_000_000
    );
    println!("replica  replayed to {applied} in {replayed:.2?}");
    if diffs.is_empty() {
        println!("trees are identical (paths, types, contents, holes, modes, owners, mtimes, xattrs, hardlinks)");
        Ok(())
    } else {
        for d in diffs.iter().take(20) {
            println!("{d}");
        }
        Err(format!("{} differences", diffs.len()).into())
    }
}

/// Commits `dir` (and below) into the master's tree at `at`.
fn import(
    vol: &mut Volume,
    dir: &Path,
    at: Option<&RelPath>,
    files: &mut u64,
    bytes: &mut u64,
) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let path = match at {
            Some(p) => p.join(name.as_bytes())?,
            None => RelPath::new(name.as_bytes())?,
        };
        let md = fs::symlink_metadata(e.path())?;
        let node = NewNode {
            mode: md.mode() & 0o7777,
            uid: md.uid(),
            gid: md.gid(),
        };
        let ft = md.file_type();
        if ft.is_dir() {
            commit(
                vol,
                Op::Mkdir {
                    path: path.clone(),
                    node,
                },
            )?;
            import(vol, &e.path(), Some(&path), files, bytes)?;
        } else if ft.is_file() {
            commit(
                vol,
                Op::Create {
                    path: path.clone(),
                    node,
                },
            )?;
            let mut f = fs::File::open(e.path())?;
            let mut buf = vec![0u8; MAX_WRITE.min(1 << 20)];
            let mut offset = 0u64;
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                commit(
                    vol,
                    Op::Write {
                        path: path.clone(),
                        offset,
                        data: buf[..n].to_vec(),
                    },
                )?;
                offset += n as u64;
            }
            *files += 1;
            *bytes += offset;
        } else if ft.is_symlink() {
            let target = fs::read_link(e.path())?.as_os_str().as_bytes().to_vec();
            commit(
                vol,
                Op::Symlink {
                    path: path.clone(),
                    target,
                    uid: md.uid(),
                    gid: md.gid(),
                },
            )?;
        } else {
            continue; // sockets, fifos and devices are left out of the demo
        }
        // Keep the source's mtime (a directory's is set after its entries).
        let mtime = Timestamp::new(md.mtime(), md.mtime_nsec() as u32);
        let op = Op::SetAttr {
            node: Node::Path(path),
            mode: None,
            uid: None,
            gid: None,
            atime: None,
            mtime: Some(mtime),
        };
        commit(vol, op)?;
    }
    Ok(())
}

fn commit(vol: &mut Volume, op: Op) -> Result<()> {
    vol.commit(op)?;
    Ok(())
}
