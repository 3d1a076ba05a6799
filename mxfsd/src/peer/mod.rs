//! Peer links between mxfsd daemons (being written).
