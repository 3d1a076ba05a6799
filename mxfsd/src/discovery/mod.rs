//! Discovery of the volume's other members over UDP multicast (design
//! section 6; issue 4).
//!
//! This module owns finding the peers: the multicast socket, announcing
//! ourselves every interval, admitting only announcements made with the
//! volume's secret, and the table of who was heard lately.  It does not
//! connect to anyone: the membership layer takes its [`Event`]s and opens
//! (authenticated) peer links.  Being discovered is no proof of anything
//! but holding the disk's secret at some time; the peer link's handshake
//! is what authenticates a live peer.
//!
//! - [`table`]: the pure peer table (joins, restarts, replays, expiry).
//! - [`runtime`]: the socket and the task that drives the table.
//! - the datagram format is `crate::wire::announce`.

mod ratelimit;
pub mod runtime;
pub mod table;

pub use runtime::{start, Config, Discovery, Local};
pub use table::Event;

#[cfg(test)]
mod tests;
