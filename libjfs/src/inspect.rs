//! Reading a volume from the outside: status, records as JSON, snapshot names.
//!
//! Nothing here takes the volume's lock or writes a byte, so every function
//! works on a volume that a master or replica process has open.

use std::path::Path;

use serde_json::{json, Value};

use crate::journal::{Entry, Journal};
use crate::path::{escape_bytes, Node};
use crate::position::Position;
use crate::record::{Marker, Op};
use crate::volume::{peek_applied, Target, VolumeError};

/// A volume's state as its files show it.
#[derive(Clone, Debug)]
pub struct VolumeStatus {
    pub volume_id: crate::VolumeId,
    /// Position of the tree (`None` if the tree was never opened).
    pub applied: Option<Position>,
    /// Position of the journal.
    pub head: Position,
    /// Oldest record held.
    pub first_seq: u64,
    pub segments: usize,
    pub sealed_segments: usize,
    pub journal_bytes: u64,
}

impl VolumeStatus {
    pub fn read(volume: &Path) -> Result<VolumeStatus, VolumeError> {
        let journal = crate::volume::read_journal(volume)?;
        let segments = journal.segments();
        Ok(VolumeStatus {
            volume_id: journal.volume_id(),
            applied: peek_applied(volume)?,
            head: journal.head(),
            first_seq: journal.first_seq(),
            sealed_segments: segments.iter().filter(|s| s.sealed).count(),
            segments: segments.len(),
            journal_bytes: segments.iter().map(|s| s.file_bytes).sum(),
        })
    }

    /// The status of a volume this process has open.
    pub fn of(vol: &crate::Volume) -> VolumeStatus {
        let segments = vol.journal().segments();
        VolumeStatus {
            volume_id: vol.id(),
            applied: Some(vol.applied()),
            head: vol.head(),
            first_seq: vol.journal().first_seq(),
            sealed_segments: segments.iter().filter(|s| s.sealed).count(),
            segments: segments.len(),
            journal_bytes: segments.iter().map(|s| s.file_bytes).sum(),
        }
    }

    /// Records held in the journal.
    pub fn records(&self) -> u64 {
        self.head.seq + 1 - self.first_seq
    }

    pub fn to_json(&self) -> Value {
        json!({
            "volume_id": self.volume_id.to_string(),
            "position": position_json(self.applied.unwrap_or(Position::ZERO)),
            "journal": {
                "head": position_json(self.head),
                "first_seq": self.first_seq,
                "records": self.records(),
                "segments": self.segments,
                "sealed_segments": self.sealed_segments,
                "bytes": self.journal_bytes,
            },
        })
    }
}

pub fn position_json(p: Position) -> Value {
    json!({ "seq": p.seq, "chain": p.chain_hex() })
}

fn node_str(n: &Node) -> String {
    match n {
        Node::Root => "/".into(),
        Node::Path(p) => escape_bytes(p.as_bytes()),
    }
}

/// The paths an operation names, in order.
pub fn op_paths(op: &Op) -> Vec<Node> {
    let p = |r: &crate::RelPath| Node::Path(r.clone());
    match op {
        Op::Create { path, .. }
        | Op::Mkdir { path, .. }
        | Op::Mknod { path, .. }
        | Op::Symlink { path, .. }
        | Op::Unlink { path }
        | Op::Rmdir { path }
        | Op::Write { path, .. }
        | Op::Truncate { path, .. }
        | Op::Fallocate { path, .. }
        | Op::Restore { path, .. } => vec![p(path)],
        Op::Link { from, to } | Op::Rename { from, to, .. } => vec![p(from), p(to)],
        Op::CopyRange { src, dst, .. } => vec![p(src), p(dst)],
        Op::SetAttr { node, .. } | Op::SetXattr { node, .. } | Op::RemoveXattr { node, .. } => {
            vec![node.clone()]
        }
        Op::Marker(_) => vec![],
    }
}

/// `op` without its data payloads (writes, xattr values): what naming the
/// nodes an operation touched needs, kept cheaply.
pub fn paths_only(op: &Op) -> Op {
    match op {
        Op::Write { path, offset, .. } => Op::Write {
            path: path.clone(),
            offset: *offset,
            data: Vec::new(),
        },
        Op::SetXattr { node, name, .. } => Op::SetXattr {
            node: node.clone(),
            name: name.clone(),
            value: Vec::new(),
        },
        other => other.clone(),
    }
}

/// One record as a JSON object: `seq`, `chain`, `time`, `op`, `paths`
/// (escaped as in [`escape_bytes`]), `text` (the one-line description),
/// `mtimes`. Data payloads appear only as lengths in `text`.
pub fn entry_json(e: &Entry) -> Value {
    let r = &e.record;
    json!({
        "seq": r.seq,
        "chain": e.position.chain_hex(),
        "time": r.time.to_rfc3339(),
        "op": r.op.name(),
        "paths": op_paths(&r.op).iter().map(node_str).collect::<Vec<_>>(),
        "text": r.op.to_string(),
        "mtimes": r.mtimes.iter().map(|m| json!({"node": node_str(&m.node), "mtime": m.mtime.to_string()})).collect::<Vec<_>>(),
    })
}

/// Resolves `SEQ` or a snapshot name against the journal itself (snapshot
/// markers are records), so it works on masters and replicas alike. The
/// latest marker of that name wins.
pub fn resolve_target(journal: &Journal, target: &Target) -> Result<u64, VolumeError> {
    match target {
        Target::Seq(seq) => Ok(*seq),
        Target::Snapshot(name) => {
            let mut found = None;
            for e in journal.read_from(journal.first_seq())? {
                let e = e?;
                if let Op::Marker(Marker::Snapshot { name: n }) = &e.record.op {
                    if n == name {
                        found = Some(e.record.seq);
                    }
                }
            }
            found.ok_or_else(|| {
                VolumeError::Snapshot(format!("no snapshot named {name:?} in the journal"))
            })
        }
    }
}
