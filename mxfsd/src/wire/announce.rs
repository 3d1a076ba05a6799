//! Discovery announcements on the wire (being written).
