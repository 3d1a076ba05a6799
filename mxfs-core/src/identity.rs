//! Node identity: a UUID kept in `/etc/mxfs/node.uuid`, made on first use.
//!
//! The node id is FNV-1a (64-bit) of the UUID's 16 bytes; it is also the
//! SCSI persistent-reservation key, so it is never 0.  A file that cannot
//! be parsed is an error that names the file: it is never replaced.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use uuid::Uuid;

pub const NODE_UUID_PATH: &str = "/etc/mxfs/node.uuid";

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: not a node UUID ({why}); fix or remove it by hand, MXFS never replaces it")]
    Corrupt { path: PathBuf, why: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeIdentity {
    pub uuid: Uuid,
    pub id: u64,
}

/// FNV-1a, 64-bit.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// The node id of a node UUID; `None` for the (astronomically unlikely)
/// UUID whose hash is 0, which is not a usable identity.
pub fn node_id(uuid: &Uuid) -> Option<u64> {
    match fnv1a64(uuid.as_bytes()) {
        0 => None,
        id => Some(id),
    }
}

/// Parse the contents of a node.uuid file: one UUID, optional whitespace.
pub fn parse_identity(text: &str) -> Result<NodeIdentity, String> {
    let mut words = text.split_whitespace();
    let word = words
        .next()
        .ok_or_else(|| "the file is empty".to_string())?;
    if words.next().is_some() {
        return Err("more than one word".to_string());
    }
    let uuid = Uuid::parse_str(word).map_err(|e| format!("{word:?}: {e}"))?;
    if uuid.is_nil() {
        return Err("the nil UUID is not an identity".to_string());
    }
    let id = node_id(&uuid).ok_or_else(|| "this UUID hashes to node id 0".to_string())?;
    Ok(NodeIdentity { uuid, id })
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Read the node identity at `path` without making it: `Ok(None)` when
/// the file does not exist, an error when it cannot be read or parsed.
pub fn load(path: &Path) -> Result<Option<NodeIdentity>, IdentityError> {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| IdentityError::Corrupt {
                path: path.to_path_buf(),
                why: "not UTF-8 text".to_string(),
            })?;
            parse_identity(&text)
                .map(Some)
                .map_err(|why| IdentityError::Corrupt {
                    path: path.to_path_buf(),
                    why,
                })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Load the node identity at `path`, making it atomically on first use:
/// the UUID is written to a private temporary file, synced, and linked to
/// `path` (which fails if another process won the race; then its identity is
/// used).  An existing file is never overwritten.  Both `mxfsd` and
/// `mount.mxfs` call this, so whichever runs first makes the identity.
pub fn load_or_create(path: &Path) -> Result<NodeIdentity, IdentityError> {
    if let Some(id) = load(path)? {
        return Ok(id);
    }
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;

    let (uuid, id) = loop {
        let uuid = Uuid::new_v4();
        if let Some(id) = node_id(&uuid) {
            break (uuid, id);
        }
    };
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("node.uuid"),
        std::process::id()
    ));
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        writeln!(f, "{}", uuid.hyphenated()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        match fs::hard_link(&tmp, path) {
            Ok(()) => {
                if let Ok(d) = fs::File::open(dir) {
                    let _ = d.sync_all();
                }
                Ok(Some(NodeIdentity { uuid, id }))
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(io_err(path)(e)),
        }
    })();
    let _ = fs::remove_file(&tmp);
    match result? {
        Some(made) => Ok(made),
        // Someone else created it first: theirs is the identity.
        None => load(path)?.ok_or_else(|| IdentityError::Corrupt {
            path: path.to_path_buf(),
            why: "vanished right after it was created".to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "mxfs-core-test-{}-{}-{}",
            tag,
            std::process::id(),
            Uuid::new_v4().simple()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn fnv1a64_reference_values() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn node_id_hashes_the_16_bytes() {
        let u = Uuid::parse_str("00112233-4455-6677-8899-aabbccddeeff").unwrap();
        assert_eq!(node_id(&u), Some(fnv1a64(u.as_bytes())));
        assert_ne!(node_id(&u), Some(0));
    }

    #[test]
    fn parse_accepts_one_uuid_with_whitespace() {
        let id = parse_identity(" 3f2504e0-4f89-41d3-9a0c-0305e82c3301\n").unwrap();
        assert_eq!(id.uuid.to_string(), "3f2504e0-4f89-41d3-9a0c-0305e82c3301");
        assert_eq!(id.id, fnv1a64(id.uuid.as_bytes()));
    }

    #[test]
    fn parse_rejects_garbage() {
        for bad in [
            "",
            "\n",
            "not-a-uuid",
            "3f2504e0-4f89-41d3-9a0c-0305e82c3301 extra",
            "00000000-0000-0000-0000-000000000000",
            "3f2504e0-4f89-41d3-9a0c-0305e82c330",
        ] {
            assert!(parse_identity(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn created_once_then_reloaded() {
        let dir = tempdir("create");
        let path = dir.join("sub/node.uuid");
        let first = load_or_create(&path).unwrap();
        let second = load_or_create(&path).unwrap();
        assert_eq!(first, second);
        assert_ne!(first.id, 0);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim(), first.uuid.hyphenated().to_string());
        // no temporary file left behind
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn corrupt_file_is_an_error_and_is_kept() {
        let dir = tempdir("corrupt");
        let path = dir.join("node.uuid");
        fs::write(&path, "garbage\n").unwrap();
        let err = load_or_create(&path).unwrap_err();
        assert!(matches!(err, IdentityError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("node.uuid"));
        assert_eq!(fs::read_to_string(&path).unwrap(), "garbage\n");
        fs::write(&path, [0xff, 0xfe]).unwrap();
        assert!(matches!(
            load_or_create(&path),
            Err(IdentityError::Corrupt { .. })
        ));
        fs::remove_dir_all(dir).unwrap();
    }
}
