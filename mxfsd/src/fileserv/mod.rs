//! The owner's file service (being written).
