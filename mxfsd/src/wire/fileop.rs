//! Forwarded file operations on the wire (being written).
