//! Code shared by `mxfsd` and `mount.mxfs`.
//!
//! - [`identity`]: the node identity (`/etc/mxfs/node.uuid`, FNV-1a node
//!   id), made on first use by whichever of the two runs first.
//! - [`xfs_probe`]: the minimal XFS superblock check `mount.mxfs` does
//!   before it calls `mount(2)` (magic and volume UUID).

pub mod identity;
pub mod xfs_probe;
