//! Code shared by `mxfsd` and `mount.mxfs`.
//!
//! - [`identity`]: the node identity (`/etc/mxfs/node.uuid`, FNV-1a node
//!   id), made on first use by whichever of the two runs first.
//! - [`xfs_probe`]: the minimal XFS superblock check `mount.mxfs` does
//!   before it calls `mount(2)` (magic and volume UUID).
//! - [`sgio`]: SCSI commands over SG_IO, sense data, READ KEYS.
//! - [`reservation`]: SCSI-3 persistent reservations (register, reserve,
//!   release, preempt, read), over SG_IO or `linux/pr.h`.

pub mod identity;
pub mod reservation;
pub mod sgio;
pub mod xfs_probe;
