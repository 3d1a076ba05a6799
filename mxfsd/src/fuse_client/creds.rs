//! The caller of a FUSE request as [`Creds`]: uid, gid and pid come in
//! the request header (the kernel's fsuid/fsgid and the calling thread's
//! id), the supplementary groups only from `/proc/<pid>/status`.
//!
//! The status file is trusted only when its fsuid and fsgid are the
//! request's: otherwise the thread is gone and its id reused, or it has
//! changed identity since, and the request goes without supplementary
//! groups (fewer rights, never more).  Groups are cached per (pid, uid,
//! gid) for [`GROUPS_TTL`]: a privilege drop changes uid or gid and so the
//! key; only a process that keeps both and calls setgroups() (which takes
//! CAP_SETGID) can run on its old groups for that long.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::debug;

use crate::wire::fileop::{Creds, MAX_GROUPS};

pub const GROUPS_TTL: Duration = Duration::from_secs(1);
/// Cache entries kept at most; the cache is emptied when it would grow
/// past this (cheap, and a refill costs one read each).
const CACHE_MAX: usize = 4096;

/// What a status file says of a task's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusIds {
    pub fsuid: u32,
    pub fsgid: u32,
    pub groups: Vec<u32>,
}

/// Parse `/proc/<pid>/status`: the fourth id of `Uid:` and `Gid:` (the fs
/// ids) and the `Groups:` list.  None when a line is missing or malformed,
/// or there are more than `NGROUPS_MAX` groups.
pub fn parse_status(text: &str) -> Option<StatusIds> {
    let mut fsuid = None;
    let mut fsgid = None;
    let mut groups = None;
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        match key {
            "Uid" => fsuid = Some(fourth_id(rest)?),
            "Gid" => fsgid = Some(fourth_id(rest)?),
            "Groups" => {
                let g: Vec<u32> = rest
                    .split_ascii_whitespace()
                    .map(|w| w.parse().ok())
                    .collect::<Option<_>>()?;
                if g.len() > MAX_GROUPS {
                    return None;
                }
                groups = Some(g);
            }
            _ => {}
        }
    }
    Some(StatusIds {
        fsuid: fsuid?,
        fsgid: fsgid?,
        groups: groups?,
    })
}

/// `real effective saved fs`: the fs id.
fn fourth_id(rest: &str) -> Option<u32> {
    let ids: Vec<&str> = rest.split_ascii_whitespace().collect();
    if ids.len() != 4 {
        return None;
    }
    ids[3].parse().ok()
}

/// The groups `status` gives a request from (uid, gid): empty unless the
/// status file is of that identity.
pub fn groups_for(status: Option<&StatusIds>, uid: u32, gid: u32) -> Vec<u32> {
    match status {
        Some(s) if s.fsuid == uid && s.fsgid == gid => s.groups.clone(),
        _ => Vec::new(),
    }
}

/// (pid, uid, gid) of a request.
type Caller = (u32, u32, u32);
/// When the groups were read, and what they were.
type Cached = (Instant, Arc<Vec<u32>>);

/// Supplementary groups of request callers, briefly cached.
#[derive(Default)]
pub struct Groups {
    cache: Mutex<HashMap<Caller, Cached>>,
}

impl Groups {
    pub fn creds(&self, uid: u32, gid: u32, pid: u32) -> Creds {
        Creds {
            uid,
            gid,
            pid,
            groups: self.groups(uid, gid, pid).to_vec(),
        }
    }

    fn groups(&self, uid: u32, gid: u32, pid: u32) -> Arc<Vec<u32>> {
        // pid 0: a request the kernel makes on its own (release from a
        // work queue, ...), no process to read.
        if pid == 0 {
            return Arc::new(Vec::new());
        }
        let key = (pid, uid, gid);
        let now = Instant::now();
        {
            let c = lock(&self.cache);
            if let Some((at, g)) = c.get(&key) {
                if now.duration_since(*at) < GROUPS_TTL {
                    return g.clone();
                }
            }
        }
        let status = match std::fs::read_to_string(format!("/proc/{pid}/status")) {
            Ok(text) => parse_status(&text),
            Err(e) => {
                debug!(pid, "no status for a FUSE caller: {e}");
                None
            }
        };
        let g = Arc::new(groups_for(status.as_ref(), uid, gid));
        if status.is_none() {
            // Not cached: a failure says nothing about the next request.
            return g;
        }
        let mut c = lock(&self.cache);
        if c.len() >= CACHE_MAX {
            c.clear();
        }
        c.insert(key, (now, g.clone()));
        g
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one map operation: the data is consistent
    // even after a panic elsewhere.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
