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

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use crate::wire::fileop::Handle;

pub const ROOT: u64 = 1;

struct Node {
    handle: Handle,
    nlookup: u64,
}

pub struct Nodes {
    root: Handle,
    /// The owner's inode number of the root.
    root_ino: u64,
    map: Mutex<HashMap<u64, Node>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each critical section is one map operation.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Nodes {
    pub fn new(root: Handle, root_ino: u64) -> Nodes {
        Nodes {
            root,
            root_ino,
            map: Mutex::new(HashMap::new()),
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
        let n = m.entry(node).or_insert_with(|| Node {
            handle: handle.clone(),
            nlookup: 0,
        });
        if n.handle != *handle {
            n.handle = handle.clone();
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
                m.remove(&node);
            }
        }
    }

    /// Nodes known besides the root.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    #[cfg(test)]
    pub fn nlookup(&self, node: u64) -> u64 {
        lock(&self.map).get(&node).map_or(0, |n| n.nlookup)
    }
}
