use libjfs::compare::{compare_trees, CompareOptions};
use libjfs::materialize::materialize;
use libjfs::record::{RenameMode, SpecialKind};
use libjfs::{NewNode, Node, Op, RelPath, Role, Volume};

fn p(s: &str) -> RelPath {
    RelPath::new(s).unwrap()
}

#[test]
fn commit_reopen_materialize() {
    let dir = tempfile::tempdir().unwrap();
    let vol_path = dir.path().join("vol");
    let node = NewNode {
        mode: 0o644,
        uid: 1000,
        gid: 1000,
    };
    {
        let mut vol = Volume::init(&vol_path, Role::Master).unwrap();
        vol.commit(Op::Mkdir {
            path: p("d"),
            node: NewNode {
                mode: 0o755,
                ..node
            },
        })
        .unwrap();
        vol.commit(Op::Create {
            path: p("d/f"),
            node,
        })
        .unwrap();
        vol.commit(Op::Write {
            path: p("d/f"),
            offset: 0,
            data: b"hello".to_vec(),
        })
        .unwrap();
        vol.commit(Op::Write {
            path: p("d/f"),
            offset: 1 << 20,
            data: b"sparse".to_vec(),
        })
        .unwrap();
        vol.commit(Op::Link {
            from: p("d/f"),
            to: p("g"),
        })
        .unwrap();
        vol.commit(Op::Symlink {
            path: p("l"),
            target: b"d/f".to_vec(),
            uid: 5,
            gid: 6,
        })
        .unwrap();
        vol.commit(Op::Mknod {
            path: p("fifo"),
            kind: SpecialKind::Fifo,
            node,
        })
        .unwrap();
        vol.commit(Op::SetXattr {
            node: Node::Path(p("g")),
            name: b"user.k".to_vec(),
            value: b"v".to_vec(),
        })
        .unwrap();
        vol.commit(Op::Create { path: p("x"), node }).unwrap();
        vol.commit(Op::Rename {
            from: p("x"),
            to: p("d/f"),
            mode: RenameMode::Replace,
        })
        .unwrap();
        // A refused record is retracted: the journal does not keep it.
        let head = vol.head();
        assert!(vol.commit(Op::Unlink { path: p("missing") }).is_err());
        assert_eq!(vol.head(), head);
        vol.close().unwrap();
    }
    let vol = Volume::open(&vol_path).unwrap();
    let head = vol.head();
    assert_eq!(vol.applied(), head);
    let dest = dir.path().join("copy");
    materialize(&vol_path, head.seq, &dest, |_| {}).unwrap();
    let diffs = compare_trees(&vol.tree_path(), &dest, &CompareOptions::default()).unwrap();
    assert!(diffs.is_empty(), "{diffs:#?}");
    assert!(matches!(
        Volume::open(&vol_path),
        Err(libjfs::VolumeError::InUse { .. })
    ));
}
