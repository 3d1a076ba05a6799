//! The node table: FUSE node id → the owner's file handle.
//!
//! A node id is the owner's inode number, except that the root is FUSE's
//! 1: the owner's root number and 1 swap places, so the map stays one to
//! one (XFS and ext4 never show an inode 1, but nothing relies on that).
//! Each node counts the kernel's lookups (every entry reply adds one, a
//! forget takes its count away) and goes when it reaches 0, as FUSE's
//! protocol wants; forgets are not forwarded, handles being stateless on
//! the owner.  The root is never forgotten.
//!
//! One count per node id, whatever the generation: when the owner reuses
//! an inode number, the kernel marks its old inode stale and forgets it
//! later with its own count, so the sum is what the kernel still holds.
//! The handle is always the latest one given.
//!
//! With a [`Keep`], each node's handle is also kept for a daemon that
//! systemd restarts; the counts are not (a kept count would cost a write
//! per lookup): a node read back from the keep stays until unmount.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::keep::{Keep, Kept};
use crate::wire::fileop::Handle;

/// The count of a node read back from the keep: never forgotten to 0.
const KEPT_COUNT: u64 = u64::MAX / 2;

pub const ROOT: u64 = 1;

struct Node {
    handle: Handle,
    nlookup: u64,
    /// Its slot in the keep.
    slot: Option<u32>,
}

pub struct Nodes {
    root: Handle,
    /// The owner's inode number of the root.
    root_ino: u64,
    map: Mutex<HashMap<u64, Node>>,
    keep: Option<Arc<Keep>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is one map operation.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Nodes {
    #[cfg(test)]
    pub fn new(root: Handle, root_ino: u64) -> Nodes {
        Nodes::with_keep(root, root_ino, None)
    }

    pub fn with_keep(root: Handle, root_ino: u64, keep: Option<Arc<Keep>>) -> Nodes {
        Nodes {
            root,
            root_ino,
            map: Mutex::new(HashMap::new()),
            keep,
        }
    }

    /// The nodes a dead daemon kept.
    pub fn restore(&self, kept: &Kept) {
        let mut m = lock(&self.map);
        for (slot, node, handle) in &kept.nodes {
            m.insert(
                *node,
                Node {
                    handle: handle.clone(),
                    nlookup: KEPT_COUNT,
                    slot: Some(*slot),
                },
            );
        }
    }

    /// The node id of the owner's inode `ino` (also the d_ino of
    /// directory entries).  Its own inverse.
    pub fn fuse_ino(&self, ino: u64) -> u64 {
        if ino == self.root_ino {
            ROOT
        } else if ino == ROOT {
            self.root_ino
        } else {
            ino
        }
    }

    pub fn handle(&self, node: u64) -> Option<Handle> {
        if node == ROOT {
            return Some(self.root.clone());
        }
        lock(&self.map).get(&node).map(|n| n.handle.clone())
    }

    /// An entry reply for `node` goes to the kernel: one more lookup.
    pub fn remember(&self, node: u64, handle: &Handle) {
        if node == ROOT {
            return;
        }
        let mut m = lock(&self.map);
        let mut new = false;
        let n = m.entry(node).or_insert_with(|| {
            new = true;
            Node {
                handle: handle.clone(),
                nlookup: 0,
                slot: None,
            }
        });
        if n.handle != *handle {
            n.handle = handle.clone();
            new = true;
        }
        if new {
            if let Some(k) = &self.keep {
                n.slot = k.put_node(n.slot, node, handle);
            }
        }
        n.nlookup = n.nlookup.saturating_add(1);
    }

    pub fn forget(&self, node: u64, nlookup: u64) {
        if node == ROOT {
            return;
        }
        let mut m = lock(&self.map);
        if let Some(n) = m.get_mut(&node) {
            n.nlookup = n.nlookup.saturating_sub(nlookup);
            if n.nlookup == 0 {
                if let (Some(k), Some(slot)) = (&self.keep, n.slot) {
                    k.drop_node(slot);
                }
                m.remove(&node);
            }
        }
    }

    /// Nodes known besides the root.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    #[cfg(test)]
    pub fn nlookup(&self, node: u64) -> u64 {
        lock(&self.map).get(&node).map_or(0, |n| n.nlookup)
    }
}
