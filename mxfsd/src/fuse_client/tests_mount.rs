//! Mount tests.
