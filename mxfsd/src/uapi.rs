//! Mirror of `kmod/mxfs_uapi.h`, the generic netlink interface between the
//! mxfs kernel module and mxfsd (and the module's private requests through
//! a client's FUSE mount, see [`crate::fuse_client`]).  The C header is the source of truth; the
//! test at the bottom parses it and checks that every constant agrees.

// A complete mirror: constants of later steps (locks, direct I/O) are unused yet.
#![allow(dead_code)]

pub const MXFS_GENL_NAME: &str = "mxfs";
pub const MXFS_GENL_VERSION: u8 = 1;
pub const MXFS_FSTYPE_NAME: &str = "mxfs";
pub const MXFS_SUPER_MAGIC: u32 = 0x4d58_4653;
pub const MXFS_UUID_LEN: usize = 16;
pub const MXFS_REASON_MAX: usize = 256;
pub const MXFS_PATH_MAX: usize = 4096;

// enum mxfs_cmd
pub const MXFS_CMD_UNSPEC: u8 = 0;
pub const MXFS_CMD_DAEMON_READY: u8 = 1;
pub const MXFS_CMD_SHUTDOWN: u8 = 2;
pub const MXFS_CMD_DAEMON_EXITED: u8 = 3;
pub const MXFS_CMD_FENCED: u8 = 4;
pub const MXFS_CMD_RECOVERY_START: u8 = 5;
pub const MXFS_CMD_RECOVERY_DONE: u8 = 6;
pub const MXFS_CMD_LOCK_REQ: u8 = 7;
pub const MXFS_CMD_LOCK_GRANT: u8 = 8;
pub const MXFS_CMD_LOCK_RELEASE: u8 = 9;
pub const MXFS_CMD_CACHE_INVAL: u8 = 10;
pub const MXFS_CMD_MAP_BLOCKS: u8 = 11;
pub const MXFS_CMD_COMMIT_BLOCKS: u8 = 12;
pub const MXFS_CMD_FILE_LOCK: u8 = 13;
pub const MXFS_CMD_FILE_LOCK_DONE: u8 = 14;
pub const MXFS_CMD_MAX: u8 = 14;

// enum mxfs_attr
pub const MXFS_A_UNSPEC: u16 = 0;
pub const MXFS_A_PAD: u16 = 1;
pub const MXFS_A_TOKEN: u16 = 2;
pub const MXFS_A_VOLUME_UUID: u16 = 3;
pub const MXFS_A_ROLE: u16 = 4;
pub const MXFS_A_EPOCH: u16 = 5;
pub const MXFS_A_NODE_ID: u16 = 6;
pub const MXFS_A_LOWER_PATH: u16 = 7;
pub const MXFS_A_LOWER_FD: u16 = 8;
pub const MXFS_A_ERROR: u16 = 9;
pub const MXFS_A_REASON: u16 = 10;
pub const MXFS_A_INODE: u16 = 11;
pub const MXFS_A_OFFSET: u16 = 12;
pub const MXFS_A_LENGTH: u16 = 13;
pub const MXFS_A_LOCK_MODE: u16 = 14;
pub const MXFS_A_LOCK_ID: u16 = 15;
pub const MXFS_A_LOCK_OP: u16 = 16;
pub const MXFS_A_LOCK_OWNER: u16 = 17;
pub const MXFS_A_LOCK_PID: u16 = 18;
pub const MXFS_A_LOCK_TYPE: u16 = 19;
pub const MXFS_A_LOCK_FLAGS: u16 = 20;
pub const MXFS_A_LOCK_END: u16 = 21;
pub const MXFS_A_FILE_LOCKS: u16 = 22;
pub const MXFS_A_MAX: u16 = 22;

// enum mxfs_file_lock_op
pub const MXFS_FILE_LOCK_LOCK: u32 = 1;
pub const MXFS_FILE_LOCK_UNLOCK: u32 = 2;
pub const MXFS_FILE_LOCK_TEST: u32 = 3;
pub const MXFS_FILE_LOCK_CANCEL: u32 = 4;
// FILE_LOCK's LOCK_FLAGS
pub const MXFS_FILE_LOCK_FLOCK: u32 = 0x1;
pub const MXFS_FILE_LOCK_WAIT: u32 = 0x2;

// enum mxfs_role
pub const MXFS_ROLE_NONE: u32 = 0;
pub const MXFS_ROLE_OWNER: u32 = 1;
pub const MXFS_ROLE_CLIENT: u32 = 2;

// enum mxfs_lock_mode
pub const MXFS_LOCK_NL: u32 = 0;
pub const MXFS_LOCK_CR: u32 = 1;
pub const MXFS_LOCK_CW: u32 = 2;
pub const MXFS_LOCK_PR: u32 = 3;
pub const MXFS_LOCK_PW: u32 = 4;
pub const MXFS_LOCK_EX: u32 = 5;

// Private requests through a client's FUSE mount (extended-attribute
// calls with reserved names, answered by mxfsd, never forwarded as xattrs)
pub const MXFS_PRIVATE_XATTR_PREFIX: &str = "mxfs.";
/// getxattr `mxfs.fiemap.START.LENGTH.FLAGS`: the file's extents.
pub const MXFS_XATTR_FIEMAP: &str = "mxfs.fiemap.";
/// Bytes of one extent in the fiemap value.
pub const MXFS_FIEMAP_EXTENT_SIZE: usize = 32;
/// getxattr `mxfs.btime`: the file's birth time.
pub const MXFS_XATTR_BTIME: &str = "mxfs.btime";
/// Bytes of the birth time value.
pub const MXFS_BTIME_SIZE: usize = 16;
/// setxattr `mxfs.fallocate`: fallocate(2) with any mode.
pub const MXFS_XATTR_FALLOCATE: &str = "mxfs.fallocate";
/// Bytes of the fallocate value.
pub const MXFS_FALLOCATE_SIZE: usize = 24;

/// Every numeric constant by its C name, for the agreement test.
pub const NUMERIC: &[(&str, u64)] = &[
    ("MXFS_GENL_VERSION", MXFS_GENL_VERSION as u64),
    ("MXFS_SUPER_MAGIC", MXFS_SUPER_MAGIC as u64),
    ("MXFS_UUID_LEN", MXFS_UUID_LEN as u64),
    ("MXFS_REASON_MAX", MXFS_REASON_MAX as u64),
    ("MXFS_PATH_MAX", MXFS_PATH_MAX as u64),
    ("MXFS_CMD_UNSPEC", MXFS_CMD_UNSPEC as u64),
    ("MXFS_CMD_DAEMON_READY", MXFS_CMD_DAEMON_READY as u64),
    ("MXFS_CMD_SHUTDOWN", MXFS_CMD_SHUTDOWN as u64),
    ("MXFS_CMD_DAEMON_EXITED", MXFS_CMD_DAEMON_EXITED as u64),
    ("MXFS_CMD_FENCED", MXFS_CMD_FENCED as u64),
    ("MXFS_CMD_RECOVERY_START", MXFS_CMD_RECOVERY_START as u64),
    ("MXFS_CMD_RECOVERY_DONE", MXFS_CMD_RECOVERY_DONE as u64),
    ("MXFS_CMD_LOCK_REQ", MXFS_CMD_LOCK_REQ as u64),
    ("MXFS_CMD_LOCK_GRANT", MXFS_CMD_LOCK_GRANT as u64),
    ("MXFS_CMD_LOCK_RELEASE", MXFS_CMD_LOCK_RELEASE as u64),
    ("MXFS_CMD_CACHE_INVAL", MXFS_CMD_CACHE_INVAL as u64),
    ("MXFS_CMD_MAP_BLOCKS", MXFS_CMD_MAP_BLOCKS as u64),
    ("MXFS_CMD_COMMIT_BLOCKS", MXFS_CMD_COMMIT_BLOCKS as u64),
    ("MXFS_CMD_FILE_LOCK", MXFS_CMD_FILE_LOCK as u64),
    ("MXFS_CMD_FILE_LOCK_DONE", MXFS_CMD_FILE_LOCK_DONE as u64),
    ("__MXFS_CMD_MAX", MXFS_CMD_MAX as u64 + 1),
    ("MXFS_CMD_MAX", MXFS_CMD_MAX as u64),
    ("MXFS_A_UNSPEC", MXFS_A_UNSPEC as u64),
    ("MXFS_A_PAD", MXFS_A_PAD as u64),
    ("MXFS_A_TOKEN", MXFS_A_TOKEN as u64),
    ("MXFS_A_VOLUME_UUID", MXFS_A_VOLUME_UUID as u64),
    ("MXFS_A_ROLE", MXFS_A_ROLE as u64),
    ("MXFS_A_EPOCH", MXFS_A_EPOCH as u64),
    ("MXFS_A_NODE_ID", MXFS_A_NODE_ID as u64),
    ("MXFS_A_LOWER_PATH", MXFS_A_LOWER_PATH as u64),
    ("MXFS_A_LOWER_FD", MXFS_A_LOWER_FD as u64),
    ("MXFS_A_ERROR", MXFS_A_ERROR as u64),
    ("MXFS_A_REASON", MXFS_A_REASON as u64),
    ("MXFS_A_INODE", MXFS_A_INODE as u64),
    ("MXFS_A_OFFSET", MXFS_A_OFFSET as u64),
    ("MXFS_A_LENGTH", MXFS_A_LENGTH as u64),
    ("MXFS_A_LOCK_MODE", MXFS_A_LOCK_MODE as u64),
    ("MXFS_A_LOCK_ID", MXFS_A_LOCK_ID as u64),
    ("MXFS_A_LOCK_OP", MXFS_A_LOCK_OP as u64),
    ("MXFS_A_LOCK_OWNER", MXFS_A_LOCK_OWNER as u64),
    ("MXFS_A_LOCK_PID", MXFS_A_LOCK_PID as u64),
    ("MXFS_A_LOCK_TYPE", MXFS_A_LOCK_TYPE as u64),
    ("MXFS_A_LOCK_FLAGS", MXFS_A_LOCK_FLAGS as u64),
    ("MXFS_A_LOCK_END", MXFS_A_LOCK_END as u64),
    ("MXFS_A_FILE_LOCKS", MXFS_A_FILE_LOCKS as u64),
    ("__MXFS_A_MAX", MXFS_A_MAX as u64 + 1),
    ("MXFS_A_MAX", MXFS_A_MAX as u64),
    ("MXFS_ROLE_NONE", MXFS_ROLE_NONE as u64),
    ("MXFS_ROLE_OWNER", MXFS_ROLE_OWNER as u64),
    ("MXFS_ROLE_CLIENT", MXFS_ROLE_CLIENT as u64),
    ("MXFS_LOCK_NL", MXFS_LOCK_NL as u64),
    ("MXFS_LOCK_CR", MXFS_LOCK_CR as u64),
    ("MXFS_LOCK_CW", MXFS_LOCK_CW as u64),
    ("MXFS_LOCK_PR", MXFS_LOCK_PR as u64),
    ("MXFS_LOCK_PW", MXFS_LOCK_PW as u64),
    ("MXFS_LOCK_EX", MXFS_LOCK_EX as u64),
    ("MXFS_FILE_LOCK_LOCK", MXFS_FILE_LOCK_LOCK as u64),
    ("MXFS_FILE_LOCK_UNLOCK", MXFS_FILE_LOCK_UNLOCK as u64),
    ("MXFS_FILE_LOCK_TEST", MXFS_FILE_LOCK_TEST as u64),
    ("MXFS_FILE_LOCK_CANCEL", MXFS_FILE_LOCK_CANCEL as u64),
    ("MXFS_FILE_LOCK_FLOCK", MXFS_FILE_LOCK_FLOCK as u64),
    ("MXFS_FILE_LOCK_WAIT", MXFS_FILE_LOCK_WAIT as u64),
    ("MXFS_FIEMAP_EXTENT_SIZE", MXFS_FIEMAP_EXTENT_SIZE as u64),
    ("MXFS_FALLOCATE_SIZE", MXFS_FALLOCATE_SIZE as u64),
    ("MXFS_BTIME_SIZE", MXFS_BTIME_SIZE as u64),
];

/// Every string constant by its C name.
pub const STRINGS: &[(&str, &str)] = &[
    ("MXFS_GENL_NAME", MXFS_GENL_NAME),
    ("MXFS_FSTYPE_NAME", MXFS_FSTYPE_NAME),
    ("MXFS_PRIVATE_XATTR_PREFIX", MXFS_PRIVATE_XATTR_PREFIX),
    ("MXFS_XATTR_FIEMAP", MXFS_XATTR_FIEMAP),
    ("MXFS_XATTR_FALLOCATE", MXFS_XATTR_FALLOCATE),
    ("MXFS_XATTR_BTIME", MXFS_XATTR_BTIME),
];

/// Role the daemon reports in DAEMON_READY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Owner,
    Client,
}

impl Role {
    pub fn to_wire(self) -> u32 {
        match self {
            Role::Owner => MXFS_ROLE_OWNER,
            Role::Client => MXFS_ROLE_CLIENT,
        }
    }
}

/// Name of a command number, for logs.
pub fn cmd_name(cmd: u8) -> &'static str {
    match cmd {
        MXFS_CMD_DAEMON_READY => "DAEMON_READY",
        MXFS_CMD_SHUTDOWN => "SHUTDOWN",
        MXFS_CMD_DAEMON_EXITED => "DAEMON_EXITED",
        MXFS_CMD_FENCED => "FENCED",
        MXFS_CMD_RECOVERY_START => "RECOVERY_START",
        MXFS_CMD_RECOVERY_DONE => "RECOVERY_DONE",
        MXFS_CMD_LOCK_REQ => "LOCK_REQ",
        MXFS_CMD_LOCK_GRANT => "LOCK_GRANT",
        MXFS_CMD_LOCK_RELEASE => "LOCK_RELEASE",
        MXFS_CMD_CACHE_INVAL => "CACHE_INVAL",
        MXFS_CMD_MAP_BLOCKS => "MAP_BLOCKS",
        MXFS_CMD_COMMIT_BLOCKS => "COMMIT_BLOCKS",
        MXFS_CMD_FILE_LOCK => "FILE_LOCK",
        MXFS_CMD_FILE_LOCK_DONE => "FILE_LOCK_DONE",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const HEADER: &str = include_str!("../../kmod/mxfs_uapi.h");

    enum Value {
        Num(u64),
        Str(String),
    }

    fn parse_number(s: &str) -> Option<u64> {
        let s = s.trim();
        if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            u64::from_str_radix(hex, 16).ok()
        } else {
            s.parse().ok()
        }
    }

    /// Constants of the header: `#define NAME VALUE` and `NAME = VALUE,`
    /// enum members.  `(OTHER - 1)` is resolved against earlier names.
    fn parse_header(text: &str) -> BTreeMap<String, Value> {
        let mut out = BTreeMap::new();
        let mut in_comment = false;
        for raw in text.lines() {
            let mut line = raw.trim().to_string();
            if in_comment {
                match line.find("*/") {
                    Some(end) => {
                        line = line[end + 2..].to_string();
                        in_comment = false;
                    }
                    None => continue,
                }
            }
            if let Some(start) = line.find("/*") {
                if !line[start..].contains("*/") {
                    in_comment = true;
                }
                line.truncate(start);
            }
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("#define ") {
                let mut parts = rest.splitn(2, char::is_whitespace);
                let name = parts.next().unwrap_or_default();
                let value = parts.next().unwrap_or_default().trim();
                if !name.starts_with("MXFS_") || value.is_empty() {
                    continue;
                }
                if let Some(s) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                    out.insert(name.to_string(), Value::Str(s.to_string()));
                } else if let Some(n) = parse_number(value) {
                    out.insert(name.to_string(), Value::Num(n));
                } else if let Some(inner) = value
                    .strip_prefix('(')
                    .and_then(|v| v.strip_suffix(" - 1)"))
                {
                    let base = match out.get(inner.trim()) {
                        Some(Value::Num(n)) => *n,
                        _ => panic!("{name}: cannot resolve {value}"),
                    };
                    out.insert(name.to_string(), Value::Num(base - 1));
                } else {
                    panic!("{name}: unparsed value {value}");
                }
            } else if let Some((name, value)) = line.split_once('=') {
                let name = name.trim();
                if !name.starts_with("MXFS_") && !name.starts_with("__MXFS_") {
                    continue;
                }
                let value = value.trim().trim_end_matches(',');
                let n = parse_number(value)
                    .unwrap_or_else(|| panic!("{name}: enum member needs a literal value"));
                out.insert(name.to_string(), Value::Num(n));
            }
        }
        out
    }

    #[test]
    fn every_constant_agrees_with_the_c_header() {
        let header = parse_header(HEADER);
        assert!(
            header.len() > 40,
            "parsed too few constants: {}",
            header.len()
        );
        for (name, value) in &header {
            match value {
                Value::Num(n) => {
                    let ours = NUMERIC
                        .iter()
                        .find(|(k, _)| k == name)
                        .unwrap_or_else(|| panic!("{name} is missing from uapi.rs"));
                    assert_eq!(ours.1, *n, "{name} differs");
                }
                Value::Str(s) => {
                    let ours = STRINGS
                        .iter()
                        .find(|(k, _)| k == name)
                        .unwrap_or_else(|| panic!("{name} is missing from uapi.rs"));
                    assert_eq!(ours.1, s, "{name} differs");
                }
            }
        }
        for (name, _) in NUMERIC {
            assert!(header.contains_key(*name), "{name} is not in the C header");
        }
        for (name, _) in STRINGS {
            assert!(header.contains_key(*name), "{name} is not in the C header");
        }
    }

    #[test]
    fn command_names() {
        assert_eq!(cmd_name(MXFS_CMD_SHUTDOWN), "SHUTDOWN");
        assert_eq!(cmd_name(200), "UNKNOWN");
        assert_eq!(Role::Owner.to_wire(), MXFS_ROLE_OWNER);
        assert_eq!(Role::Client.to_wire(), MXFS_ROLE_CLIENT);
    }
}
