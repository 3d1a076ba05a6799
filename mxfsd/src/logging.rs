//! Logging through `tracing`: to journald (with MXFS_VOLUME= and
//! MXFS_NODE= on every record) when the journal socket exists, else to
//! stderr; when the kernel spawned us without a stderr, to /dev/kmsg so
//! the messages still reach the kernel log.

use std::fs::OpenOptions;
use std::path::Path;
use std::sync::Mutex;

use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Registry};

const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

fn filter() -> EnvFilter {
    EnvFilter::try_from_env("MXFSD_LOG").unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Where logs went, for the first message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Journald,
    Stderr,
    Kmsg,
}

/// Set up the global subscriber.  `stderr_open` tells whether fd 2 was
/// open when we started.
pub fn init(volume: &str, node: Option<&str>, stderr_open: bool) -> Sink {
    if Path::new(JOURNAL_SOCKET).exists() {
        if let Ok(layer) = tracing_journald::layer() {
            let mut fields = vec![("MXFS_VOLUME", volume.to_string())];
            if let Some(node) = node {
                fields.push(("MXFS_NODE", node.to_string()));
            }
            let layer = layer
                .with_field_prefix(None)
                .with_syslog_identifier("mxfsd".to_string())
                .with_custom_fields(fields);
            if Registry::default()
                .with(filter())
                .with(layer)
                .try_init()
                .is_ok()
            {
                return Sink::Journald;
            }
        }
    }
    if !stderr_open {
        if let Ok(kmsg) = OpenOptions::new().write(true).open("/dev/kmsg") {
            let _ = fmt()
                .with_env_filter(filter())
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .with_writer(Mutex::new(kmsg))
                .try_init();
            return Sink::Kmsg;
        }
    }
    let _ = fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        .try_init();
    Sink::Stderr
}
