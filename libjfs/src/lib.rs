//! libjfs: the core of jfs, a journal-shipping replicated filesystem.
//!
//! Every change to a tree is a [`Record`] in an ordered, chained [`Journal`];
//! the [`Applier`] replays records into a plain directory, and
//! [`materialize`](materialize::materialize) rebuilds a tree at any position.
//! Nothing here knows FUSE or the network.
//!
//! ```no_run
//! use libjfs::{Volume, Op, RelPath, NewNode};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut vol = Volume::init("/srv/vol".as_ref(), libjfs::Role::Master)?;
//! let path = RelPath::new("hello.txt")?;
//! vol.commit(Op::Create { path: path.clone(), node: NewNode { mode: 0o644, uid: 0, gid: 0 } })?;
//! vol.commit(Op::Write { path, offset: 0, data: b"hi\n".to_vec() })?;
//! vol.sync()?;
//! # Ok(()) }
//! ```

pub mod admin;
pub mod applier;
pub mod compare;
pub mod format;
#[cfg(feature = "fuse")]
pub mod fuse;
pub mod history;
pub mod image;
pub mod inspect;
pub mod journal;
pub mod master;
pub mod materialize;
pub mod mounts;
pub mod path;
pub mod position;
pub mod record;
pub mod retention;
#[cfg(feature = "fuse")]
pub mod rofs;
pub mod ship;
pub mod tree;
pub mod treeread;
pub mod volume;

pub use applier::{Applier, ApplyError};
pub use format::VolumeId;
pub use journal::{Entry, Journal, JournalConfig, JournalError};
pub use path::{Node, RelPath};
pub use position::Position;
pub use record::{NewNode, Op, Record, Timestamp};
pub use volume::{Role, Volume, VolumeError};
