//! Per-resource queues and the granting rules.
//!
//! Each resource has three queues, as in VMS and Linux DLM:
//!
//! - **granted**: locks holding a mode;
//! - **convert**: granted locks asking for another mode; they keep their
//!   granted mode (and block others with it) until the conversion is
//!   granted or cancelled;
//! - **wait**: new requests not granted yet, in arrival order.
//!
//! Rules (the "holders" of a resource are the granted and converting
//! locks, each with its granted mode):
//!
//! 1. A new request is granted at once when the convert and wait queues
//!    are empty and its mode is compatible with every holder; otherwise it
//!    joins the tail of the wait queue (or fails at once with NOQUEUE).
//!    Waiters never overtake each other: only the head of the wait queue
//!    is ever granted, and only when the convert queue is empty
//!    (conversions go first, as in Linux DLM).
//! 2. A conversion is granted at once when its new mode is compatible with
//!    every other holder, even past queued requests (so a down-conversion
//!    is always immediate); otherwise it joins the tail of the convert
//!    queue (or fails at once with NOQUEUE).
//! 3. A conversion that would wait on a chain of converting locks leading
//!    back to itself (the classic case: two PR holders both converting to
//!    EX) would never be granted; it is refused with
//!    [`DlmError::ConversionDeadlock`] and the lock keeps its granted mode.
//!    Its holder must release or down-convert.  So the convert queue never
//!    holds a cycle, and everything queued is granted once the plain
//!    granted locks blocking it are released.
//! 4. After any change, queued conversions are granted (any that have
//!    become compatible, repeatedly), then wait-queue heads.
//! 5. Every holder whose granted mode blocks a queued request gets one
//!    blocking AST (BAST) naming the requested mode; it is not repeated for
//!    the same mode until the holder's granted mode changes.

use std::collections::{BTreeMap, HashMap};

#[cfg(test)]
use super::NodeId;
use super::{LockId, Mode, MAX_RESOURCE_NAME};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestFlags {
    /// Fail at once with [`DlmError::NotGranted`] instead of queueing.
    pub noqueue: bool,
}

/// What the caller must deliver, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Completion AST: `lock` now holds `mode`.
    Grant {
        lock: LockId,
        resource: Vec<u8>,
        mode: Mode,
    },
    /// Blocking AST: `lock`, granted in `granted`, blocks a request for
    /// `requested`; its holder should release or down-convert.
    Blocking {
        lock: LockId,
        resource: Vec<u8>,
        granted: Mode,
        requested: Mode,
    },
    /// Completion AST of a cancel: a waiting request is gone (`mode`
    /// None) or a conversion was abandoned and the lock still holds
    /// `mode`.
    Cancelled {
        lock: LockId,
        resource: Vec<u8>,
        mode: Option<Mode>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DlmError {
    #[error("resource name of {0} bytes (1 to {MAX_RESOURCE_NAME})")]
    BadName(usize),
    #[error("lock {0:?} already exists")]
    Exists(LockId),
    #[error("no lock {0:?}")]
    NoSuchLock(LockId),
    #[error("not grantable now and NOQUEUE was asked")]
    NotGranted,
    #[error("conversion deadlock: the conversion would wait for itself")]
    ConversionDeadlock,
    #[error("lock {0:?} is {1}")]
    WrongState(LockId, &'static str),
    #[error("imported state is inconsistent: {0}")]
    BadImport(String),
}

/// A lock as it stands, for export to a new master and for inspection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockState {
    pub id: LockId,
    /// None while waiting for its first grant.
    pub granted: Option<Mode>,
    /// Some while converting or waiting.
    pub requested: Option<Mode>,
}

#[derive(Debug, Clone)]
struct Held {
    id: LockId,
    mode: Mode,
    /// Modes already announced to this holder by a BAST (bit per mode).
    basts: u8,
}

#[derive(Debug, Clone)]
struct Converting {
    held: Held,
    requested: Mode,
}

#[derive(Debug, Clone)]
struct Waiting {
    id: LockId,
    requested: Mode,
}

#[derive(Debug, Clone, Default)]
struct Resource {
    granted: Vec<Held>,
    converting: Vec<Converting>,
    waiting: Vec<Waiting>,
}

impl Resource {
    fn holders(&self) -> impl Iterator<Item = &Held> {
        self.granted
            .iter()
            .chain(self.converting.iter().map(|c| &c.held))
    }

    fn compatible_with_holders(&self, mode: Mode, except: Option<LockId>) -> bool {
        self.holders()
            .filter(|h| Some(h.id) != except)
            .all(|h| mode.compatible(h.mode))
    }

    fn is_empty(&self) -> bool {
        self.granted.is_empty() && self.converting.is_empty() && self.waiting.is_empty()
    }

    /// Would converting lock `start` (already in the convert queue, or
    /// about to be with `extra`) wait on a chain of conversions that leads
    /// back to itself?
    fn conversion_cycle(&self, start: LockId, extra: Option<&Converting>) -> bool {
        let convs: Vec<&Converting> = self.converting.iter().chain(extra).collect();
        // edges: X waits for converting Y when Y's granted mode blocks X's
        // requested mode.  Plain granted locks wait for nothing here.
        let mut stack = vec![start];
        let mut seen = vec![start];
        while let Some(x) = stack.pop() {
            let Some(cx) = convs.iter().find(|c| c.held.id == x) else {
                continue;
            };
            for cy in &convs {
                if cy.held.id == x || cx.requested.compatible(cy.held.mode) {
                    continue;
                }
                if cy.held.id == start {
                    return true;
                }
                if !seen.contains(&cy.held.id) {
                    seen.push(cy.held.id);
                    stack.push(cy.held.id);
                }
            }
        }
        false
    }
}

/// The resources one node masters, with their locks.
#[derive(Debug, Default)]
pub struct LockSpace {
    resources: BTreeMap<Vec<u8>, Resource>,
    /// Which resource each lock is on.
    index: HashMap<LockId, Vec<u8>>,
}

fn check_name(name: &[u8]) -> Result<(), DlmError> {
    if name.is_empty() || name.len() > MAX_RESOURCE_NAME {
        return Err(DlmError::BadName(name.len()));
    }
    Ok(())
}

impl LockSpace {
    pub fn new() -> Self {
        Self::default()
    }

    /// Ask for a new lock `lock` on `resource` in `mode`.
    pub fn request(
        &mut self,
        resource: &[u8],
        lock: LockId,
        mode: Mode,
        flags: RequestFlags,
    ) -> Result<Vec<Event>, DlmError> {
        check_name(resource)?;
        if self.index.contains_key(&lock) {
            return Err(DlmError::Exists(lock));
        }
        let res = self.resources.entry(resource.to_vec()).or_default();
        let mut events = Vec::new();
        if res.converting.is_empty()
            && res.waiting.is_empty()
            && res.compatible_with_holders(mode, None)
        {
            res.granted.push(Held {
                id: lock,
                mode,
                basts: 0,
            });
            events.push(Event::Grant {
                lock,
                resource: resource.to_vec(),
                mode,
            });
        } else if flags.noqueue {
            if res.is_empty() {
                self.resources.remove(resource);
            }
            return Err(DlmError::NotGranted);
        } else {
            res.waiting.push(Waiting {
                id: lock,
                requested: mode,
            });
            send_basts(resource, res, &mut events);
        }
        self.index.insert(lock, resource.to_vec());
        Ok(events)
    }

    /// Change the mode of a granted lock (up or down).
    pub fn convert(
        &mut self,
        lock: LockId,
        mode: Mode,
        flags: RequestFlags,
    ) -> Result<Vec<Event>, DlmError> {
        let name = self
            .index
            .get(&lock)
            .ok_or(DlmError::NoSuchLock(lock))?
            .clone();
        let res = self
            .resources
            .get_mut(&name)
            .ok_or(DlmError::NoSuchLock(lock))?;
        let Some(pos) = res.granted.iter().position(|h| h.id == lock) else {
            let state = if res.converting.iter().any(|c| c.held.id == lock) {
                "already converting"
            } else {
                "waiting for its first grant"
            };
            return Err(DlmError::WrongState(lock, state));
        };
        let mut events = Vec::new();
        if res.compatible_with_holders(mode, Some(lock)) {
            let h = &mut res.granted[pos];
            if h.mode != mode {
                h.mode = mode;
                h.basts = 0;
            }
            events.push(Event::Grant {
                lock,
                resource: name.clone(),
                mode,
            });
            // A down-conversion may unblock others.
            grant_pending(&name, res, &mut events);
            return Ok(events);
        }
        if flags.noqueue {
            return Err(DlmError::NotGranted);
        }
        let conv = Converting {
            held: res.granted[pos].clone(),
            requested: mode,
        };
        if res.conversion_cycle(lock, Some(&conv)) {
            return Err(DlmError::ConversionDeadlock);
        }
        res.granted.remove(pos);
        res.converting.push(conv);
        send_basts(&name, res, &mut events);
        Ok(events)
    }

    /// Withdraw a waiting request or a queued conversion.
    pub fn cancel(&mut self, lock: LockId) -> Result<Vec<Event>, DlmError> {
        let name = self
            .index
            .get(&lock)
            .ok_or(DlmError::NoSuchLock(lock))?
            .clone();
        let res = self
            .resources
            .get_mut(&name)
            .ok_or(DlmError::NoSuchLock(lock))?;
        let mut events = Vec::new();
        if let Some(pos) = res.waiting.iter().position(|w| w.id == lock) {
            res.waiting.remove(pos);
            self.index.remove(&lock);
            events.push(Event::Cancelled {
                lock,
                resource: name.clone(),
                mode: None,
            });
        } else if let Some(pos) = res.converting.iter().position(|c| c.held.id == lock) {
            let c = res.converting.remove(pos);
            events.push(Event::Cancelled {
                lock,
                resource: name.clone(),
                mode: Some(c.held.mode),
            });
            res.granted.push(c.held);
        } else {
            return Err(DlmError::WrongState(
                lock,
                "granted, with nothing to cancel",
            ));
        }
        grant_pending(&name, res, &mut events);
        if res.is_empty() {
            self.resources.remove(&name);
        }
        Ok(events)
    }

    /// Release a granted (or converting) lock.  A waiting request is
    /// cancelled with [`LockSpace::cancel`] instead.
    pub fn unlock(&mut self, lock: LockId) -> Result<Vec<Event>, DlmError> {
        let name = self
            .index
            .get(&lock)
            .ok_or(DlmError::NoSuchLock(lock))?
            .clone();
        let res = self
            .resources
            .get_mut(&name)
            .ok_or(DlmError::NoSuchLock(lock))?;
        if let Some(pos) = res.granted.iter().position(|h| h.id == lock) {
            res.granted.remove(pos);
        } else if let Some(pos) = res.converting.iter().position(|c| c.held.id == lock) {
            res.converting.remove(pos);
        } else {
            return Err(DlmError::WrongState(lock, "waiting; cancel it instead"));
        }
        self.index.remove(&lock);
        let mut events = Vec::new();
        grant_pending(&name, res, &mut events);
        if res.is_empty() {
            self.resources.remove(&name);
        }
        Ok(events)
    }

    /// Drop every lock of a departed node, granting what that unblocks.
    #[cfg(test)]
    pub fn purge_node(&mut self, node: NodeId) -> Vec<Event> {
        let mut events = Vec::new();
        self.index.retain(|id, _| id.node != node);
        self.resources.retain(|name, res| {
            let before = res.granted.len() + res.converting.len() + res.waiting.len();
            res.granted.retain(|h| h.id.node != node);
            res.converting.retain(|c| c.held.id.node != node);
            res.waiting.retain(|w| w.id.node != node);
            if res.granted.len() + res.converting.len() + res.waiting.len() != before {
                grant_pending(name, res, &mut events);
            }
            !res.is_empty()
        });
        events
    }

    /// The state of one lock.
    pub fn lock_state(&self, lock: LockId) -> Option<LockState> {
        let res = self.resources.get(self.index.get(&lock)?)?;
        export(res).into_iter().find(|l| l.id == lock)
    }

    #[cfg(test)]
    pub fn resource_names(&self) -> impl Iterator<Item = &[u8]> {
        self.resources.keys().map(|k| k.as_slice())
    }

    /// Remove a resource to hand it to its new master: its locks in queue
    /// order (granted, converting, waiting).
    #[cfg(test)]
    pub fn export_resource(&mut self, name: &[u8]) -> Option<Vec<LockState>> {
        let res = self.resources.remove(name)?;
        let locks = export(&res);
        for l in &locks {
            self.index.remove(&l.id);
        }
        Some(locks)
    }

    /// Take over a resource from its previous master (or rebuild it from
    /// the locks the members report).  Refuses state that breaks the
    /// engine's invariants; grants what has become grantable.
    pub fn import_resource(
        &mut self,
        name: &[u8],
        locks: Vec<LockState>,
    ) -> Result<Vec<Event>, DlmError> {
        check_name(name)?;
        if self.resources.contains_key(name) {
            return Err(DlmError::BadImport(
                "the resource exists here already".into(),
            ));
        }
        let mut res = Resource::default();
        let mut ids = Vec::new();
        for l in locks {
            if self.index.contains_key(&l.id) || ids.contains(&l.id) {
                return Err(DlmError::Exists(l.id));
            }
            ids.push(l.id);
            match (l.granted, l.requested) {
                (Some(mode), None) => res.granted.push(Held {
                    id: l.id,
                    mode,
                    basts: 0,
                }),
                (Some(mode), Some(requested)) => res.converting.push(Converting {
                    held: Held {
                        id: l.id,
                        mode,
                        basts: 0,
                    },
                    requested,
                }),
                (None, Some(requested)) => res.waiting.push(Waiting {
                    id: l.id,
                    requested,
                }),
                (None, None) => {
                    return Err(DlmError::BadImport(format!("lock {:?} has no mode", l.id)))
                }
            }
        }
        let holders: Vec<&Held> = res.holders().collect();
        for (i, a) in holders.iter().enumerate() {
            for b in &holders[i + 1..] {
                if !a.mode.compatible(b.mode) {
                    return Err(DlmError::BadImport(format!(
                        "{:?} in {:?} and {:?} in {:?} are both granted",
                        a.id, a.mode, b.id, b.mode
                    )));
                }
            }
        }
        if let Some(c) = res
            .converting
            .iter()
            .find(|c| res.conversion_cycle(c.held.id, None))
        {
            return Err(DlmError::BadImport(format!(
                "conversion deadlock involving {:?}",
                c.held.id
            )));
        }
        let mut events = Vec::new();
        grant_pending(name, &mut res, &mut events);
        send_basts(name, &mut res, &mut events);
        for id in ids {
            self.index.insert(id, name.to_vec());
        }
        if !res.is_empty() {
            self.resources.insert(name.to_vec(), res);
        }
        Ok(events)
    }
}

fn export(res: &Resource) -> Vec<LockState> {
    let g = res.granted.iter().map(|h| LockState {
        id: h.id,
        granted: Some(h.mode),
        requested: None,
    });
    let c = res.converting.iter().map(|c| LockState {
        id: c.held.id,
        granted: Some(c.held.mode),
        requested: Some(c.requested),
    });
    let w = res.waiting.iter().map(|w| LockState {
        id: w.id,
        granted: None,
        requested: Some(w.requested),
    });
    g.chain(c).chain(w).collect()
}

/// Rules 4 and 5: grant what can be granted, then tell blockers.
fn grant_pending(name: &[u8], res: &mut Resource, events: &mut Vec<Event>) {
    // Conversions first, repeatedly: granting one can change nothing for
    // the others' compatibility except by lowering a mode, but a grant
    // of an up-conversion may come before a down-conversion queued later.
    'again: loop {
        for i in 0..res.converting.len() {
            let c = &res.converting[i];
            if res.compatible_with_holders(c.requested, Some(c.held.id)) {
                let c = res.converting.remove(i);
                events.push(Event::Grant {
                    lock: c.held.id,
                    resource: name.to_vec(),
                    mode: c.requested,
                });
                res.granted.push(Held {
                    id: c.held.id,
                    mode: c.requested,
                    basts: if c.requested == c.held.mode {
                        c.held.basts
                    } else {
                        0
                    },
                });
                continue 'again;
            }
        }
        break;
    }
    while res.converting.is_empty() {
        let Some(w) = res.waiting.first() else { break };
        if !res.compatible_with_holders(w.requested, None) {
            break;
        }
        let w = res.waiting.remove(0);
        events.push(Event::Grant {
            lock: w.id,
            resource: name.to_vec(),
            mode: w.requested,
        });
        res.granted.push(Held {
            id: w.id,
            mode: w.requested,
            basts: 0,
        });
    }
    send_basts(name, res, events);
}

fn send_basts(name: &[u8], res: &mut Resource, events: &mut Vec<Event>) {
    let wanted: Vec<(LockId, Mode)> = res
        .converting
        .iter()
        .map(|c| (c.held.id, c.requested))
        .chain(res.waiting.iter().map(|w| (w.id, w.requested)))
        .collect();
    let holders = res
        .granted
        .iter_mut()
        .chain(res.converting.iter_mut().map(|c| &mut c.held));
    for h in holders {
        for &(who, requested) in &wanted {
            let bit = 1u8 << (requested as u8);
            if who != h.id && !requested.compatible(h.mode) && h.basts & bit == 0 {
                h.basts |= bit;
                events.push(Event::Blocking {
                    lock: h.id,
                    resource: name.to_vec(),
                    granted: h.mode,
                    requested,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
