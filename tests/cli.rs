//! The command-line contract, with real processes: init, log, status,
//! snapshot, materialize, replay, verify, and their errors.

mod common;

use std::fs;
use std::path::Path;

use common::{fails, ok};
use libjfs::record::RenameMode;
use libjfs::{NewNode, Node, Op, RelPath, Volume};

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

/// A master volume with a few records, written through the library.
fn populated(vol: &Path) {
    ok("jfs-master", &[&"init", &vol]);
    let mut v = Volume::open(vol).unwrap();
    let node = NewNode {
        mode: 0o644,
        uid: 0,
        gid: 0,
    };
    v.commit(Op::Mkdir {
        path: p("www"),
        node: NewNode {
            mode: 0o755,
            ..node
        },
    })
    .unwrap();
    v.commit(Op::Create {
        path: p("www/index.html"),
        node,
    })
    .unwrap();
    v.commit(Op::Write {
        path: p("www/index.html"),
        offset: 0,
        data: b"<h1>v1</h1>\n".to_vec(),
    })
    .unwrap();
    v.commit(Op::SetXattr {
        node: Node::Path(p("www")),
        name: b"user.owner".to_vec(),
        value: b"web".to_vec(),
    })
    .unwrap();
    v.close().unwrap();
}

#[test]
fn init_log_status_snapshot_materialize_verify() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    populated(&vol);

    let out = ok("jfs-master", &[&"snapshot", &vol, &"create", &"v1"]);
    assert!(out.contains("snapshot v1 at 6:"), "{out}");
    let mut v = Volume::open(&vol).unwrap();
    v.commit(Op::Create {
        path: p("www/new.html"),
        node: NewNode {
            mode: 0o600,
            uid: 0,
            gid: 0,
        },
    })
    .unwrap();
    v.commit(Op::Rename {
        from: p("www/new.html"),
        to: p("www/index.html"),
        mode: RenameMode::Replace,
    })
    .unwrap();
    v.close().unwrap();
    let list = ok("jfs-master", &[&"snapshot", &vol, &"list"]);
    assert!(list.starts_with("v1\t6\t"), "{list}");

    // log: one line per record; JSON lines parse and carry seq and chain.
    let log = ok("jfs-master", &[&"log", &vol]);
    assert_eq!(log.lines().count(), 8, "{log}");
    assert!(log.contains("write www/index.html off=0 len=12"), "{log}");
    let json = ok("jfs-master", &[&"log", &vol, &"--from", &"7", &"--json"]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["seq"], 7);
    assert_eq!(lines[1]["op"], "rename");
    assert_eq!(
        lines[1]["paths"],
        serde_json::json!(["www/new.html", "www/index.html"])
    );
    assert_eq!(lines[1]["chain"].as_str().unwrap().len(), 64);

    // status --json reports the position with its chain.
    let status: serde_json::Value =
        serde_json::from_str(&ok("jfs-master", &[&"status", &vol, &"--json"])).unwrap();
    assert_eq!(status["position"]["seq"], 8);
    assert_eq!(status["journal"]["head"]["seq"], 8);
    assert_eq!(status["position"]["chain"], lines[1]["chain"]);

    // materialize at the snapshot gives the tree as it was then.
    let at_v1 = dir.path().join("at-v1");
    ok(
        "jfs-replica",
        &[&"materialize", &vol, &"--at", &"v1", &at_v1],
    );
    assert_eq!(
        fs::read(at_v1.join("www/index.html")).unwrap(),
        b"<h1>v1</h1>\n"
    );
    let now = dir.path().join("now");
    ok("jfs-replica", &[&"materialize", &vol, &"--at", &"8", &now]);
    assert_eq!(fs::read(now.join("www/index.html")).unwrap(), b"");

    // verify passes (and removes what a verify cut short left behind), then
    // catches an edit made behind the journal's back.
    fs::create_dir_all(vol.join(".jfs-verify-cut/tree/www")).unwrap();
    fs::write(vol.join(".jfs-verify-cut/tree/www/index.html"), b"x").unwrap();
    let out = ok("jfs-replica", &[&"verify", &vol]);
    assert!(out.contains("tree matches the journal at 8:"), "{out}");
    assert!(!vol.join(".jfs-verify-cut").exists());
    fs::write(vol.join("tree/www/index.html"), b"defaced").unwrap();
    let out = common::run("jfs-replica", &[&"verify", &vol]);
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("www/index.html"), "{stdout}");
}

#[test]
fn replay_applies_what_the_journal_holds_and_stops_at_until() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    populated(&vol);
    // A replica-role volume with the master's journal and an empty tree.
    let id = Volume::open(&vol).unwrap().id();
    let rep = dir.path().join("rep");
    drop(Volume::init_with(&rep, libjfs::Role::Replica, id, b"k").unwrap());
    for e in fs::read_dir(rep.join("journal")).unwrap() {
        fs::remove_file(e.unwrap().path()).unwrap();
    }
    for e in fs::read_dir(vol.join("journal")).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), rep.join("journal").join(e.file_name())).unwrap();
    }
    let out = ok("jfs-replica", &[&"replay", &rep, &"--until", &"3"]);
    assert!(out.contains("at 3:"), "{out}");
    assert!(rep.join("tree/www/index.html").exists());
    assert_eq!(fs::read(rep.join("tree/www/index.html")).unwrap(), b"");
    ok("jfs-replica", &[&"replay", &rep]);
    assert_eq!(
        fs::read(rep.join("tree/www/index.html")).unwrap(),
        b"<h1>v1</h1>\n"
    );
    ok("jfs-replica", &[&"verify", &rep]);
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("vol");
    populated(&vol);

    let err = fails("jfs-master", &[&"init", &vol], 1);
    assert!(err.contains("exists and is not empty"), "{err}");
    let err = fails("jfs-master", &[&"log", &dir.path().join("nothing")], 1);
    assert!(err.contains("does not exist"), "{err}");
    let err = fails(
        "jfs-replica",
        &[
            &"materialize",
            &vol,
            &"--at",
            &"nosuch",
            &dir.path().join("x"),
        ],
        1,
    );
    assert!(err.contains("no snapshot named \"nosuch\""), "{err}");
    let err = fails(
        "jfs-replica",
        &[&"materialize", &vol, &"--at", &"99", &dir.path().join("x")],
        1,
    );
    assert!(err.contains("past the end of the journal"), "{err}");
    assert!(
        !dir.path().join("x").exists(),
        "a failed materialize left a directory"
    );
    // Into the volume itself, by its own path or through a link to it: the
    // tree would change behind the journal's back.
    std::os::unix::fs::symlink(vol.join("tree"), dir.path().join("link")).unwrap();
    for dest in [vol.join("tree/www/copy"), dir.path().join("link/copy")] {
        let err = fails(
            "jfs-replica",
            &[&"materialize", &vol, &"--at", &"1", &dest],
            1,
        );
        assert!(err.contains("is inside the volume"), "{err}");
        assert!(!vol.join("tree/copy").exists() && !vol.join("tree/www/copy").exists());
        let err = fails("jfs-replica", &[&"image", &vol, &dest], 1);
        assert!(err.contains("is inside the volume"), "{err}");
        assert!(!vol.join("tree/copy").exists() && !vol.join("tree/www/copy").exists());
    }
    ok("jfs-replica", &[&"verify", &vol]);
    let err = fails("jfs-master", &[&"snapshot", &vol, &"create", &"42"], 1);
    assert!(err.contains("not all digits"), "{err}");
    let err = fails("jfs-master", &[&"snapshot", &vol, &"create", &"../x"], 1);
    assert!(err.contains("snapshot name"), "{err}");
    fails("jfs-master", &[&"log", &vol, &"--from", &"abc"], 2);

    // A flipped byte in the middle of the journal is named, with its offset,
    // by every reader, and the file is left as it was. (close() sealed the
    // records into a .seg file.)
    let sealed = fs::read_dir(vol.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "seg"))
        .expect("a sealed segment");
    let mut bytes = fs::read(&sealed).unwrap();
    let mid =
        libjfs::format::SEALED_HEADER_LEN + (bytes.len() - libjfs::format::SEALED_HEADER_LEN) / 2;
    bytes[mid] ^= 0x40;
    fs::write(&sealed, &bytes).unwrap();
    let err = fails("jfs-master", &[&"log", &vol], 1);
    let name = sealed.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        err.contains(&name) && err.contains("checksum mismatch at offset 168"),
        "{err}"
    );
    let err = fails(
        "jfs-replica",
        &[&"materialize", &vol, &"--at", &"5", &dir.path().join("y")],
        1,
    );
    assert!(err.contains(&name), "{err}");
    assert_eq!(
        fs::read(&sealed).unwrap(),
        bytes,
        "a reader changed the damaged segment"
    );
}

/// Every command given a path that is not a volume (missing, a file, an
/// empty directory, a directory of someone's files) says so and leaves the
/// path as it was: no lock file, no metadata store appears in it.
#[test]
fn a_path_that_is_not_a_volume_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let file = dir.path().join("file");
    fs::write(&file, b"not a volume\n").unwrap();
    let empty = dir.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let files = dir.path().join("files");
    fs::create_dir_all(files.join("journal")).unwrap();
    fs::write(files.join("notes"), b"mine\n").unwrap();
    let out = dir.path().join("out");
    let commands: &[(&str, &[&str])] = &[
        ("jfs-master", &["status"]),
        ("jfs-master", &["log"]),
        ("jfs-master", &["rewind", "--to", "1"]),
        ("jfs-master", &["snapshot", "list"]),
        ("jfs-master", &["retention"]),
        ("jfs-master", &["trim"]),
        ("jfs-replica", &["status"]),
        ("jfs-replica", &["rewind", "--to", "1"]),
        ("jfs-replica", &["replay"]),
        ("jfs-replica", &["retention"]),
        ("jfs-replica", &["trim"]),
        ("jfs-replica", &["verify"]),
        ("jfs-replica", &["follow"]),
        ("jfs-replica", &["materialize", "--at", "1"]),
    ];
    for (path, why) in [
        (&missing, "does not exist"),
        (&file, "is not a directory"),
        (&empty, "is not a jfs volume"),
        (&files, "is not a jfs volume"),
    ] {
        let before = common::walk_paths(dir.path());
        for (tool, cmd) in commands {
            // The volume is the first argument after the subcommand, except
            // for `snapshot VOL list`.
            let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![&cmd[0], path];
            for a in &cmd[1..] {
                args.push(a);
            }
            if cmd[0] == "materialize" {
                args.push(&out);
            }
            let err = fails(tool, &args, 1);
            assert!(
                err.contains(why),
                "{tool} {cmd:?} {}: {err}",
                path.display()
            );
        }
        assert_eq!(common::walk_paths(dir.path()), before, "{}", path.display());
    }
    assert_eq!(fs::read(&file).unwrap(), b"not a volume\n");
}

#[test]
fn replica_volumes_refuse_what_only_a_master_may_do() {
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("replica");
    let id = libjfs::VolumeId([3; 16]);
    drop(Volume::init_with(&vol, libjfs::Role::Replica, id, b"0123456789abcdef0123").unwrap());
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    // A writable mount of a replica would fork its history from the master's.
    let err = fails("jfs-master", &[&"mount", &vol, &mnt], 1);
    assert!(err.contains("is a replica volume"), "{err}");
    assert!(!common::is_mounted(&mnt));
    let err = fails("jfs-master", &[&"snapshot", &vol, &"create", &"v1"], 1);
    assert!(err.contains("create it there"), "{err}");
    // Nothing follows it: status says so with its exit code.
    let out = common::run("jfs-replica", &[&"status", &vol, &"--json"]);
    assert_eq!(out.status.code(), Some(5));
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["replication"]["state"], "stopped");
    // A replica made without `init --master` names no master to follow.
    let err = fails("jfs-replica", &[&"follow", &vol], 1);
    assert!(err.contains("names no master"), "{err}");
    // Its read-only mount cannot go inside the volume, where it would hide
    // the tree or the attic from the process that applies records to them.
    for inside in [vol.join("tree"), vol.join("attic")] {
        let err = fails("jfs-replica", &[&"follow", &vol, &"--mount", &inside], 1);
        assert!(err.contains("is inside the volume"), "{err}");
        assert!(!common::is_mounted(&inside));
    }
    // A master volume does not follow anything.
    let master = dir.path().join("master");
    ok("jfs-master", &[&"init", &master]);
    let err = fails("jfs-replica", &[&"follow", &master], 1);
    assert!(err.contains("only replica volumes follow"), "{err}");
}
