//! The generic netlink channel to the mxfs kernel module.
//!
//! neli resolves the family and encodes what we send; what we receive is
//! decoded by the small pure functions below, which return errors on any
//! malformed input and never panic (they are unit-tested on bad input).

use std::io::{self, Cursor};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use neli::{
    consts::{
        nl::{NlmF, NlmFFlags},
        socket::NlFamily,
    },
    genl::{Genlmsghdr, Nlattr},
    nl::{NlPayload, Nlmsghdr},
    socket::{NlSocket, NlSocketHandle},
    types::{Buffer, GenlBuffer},
    ToBytes,
};

use crate::uapi::*;

const NLMSG_HDRLEN: usize = 16;
const GENL_HDRLEN: usize = 4;
const NLA_HDRLEN: usize = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_TYPE_MASK: u16 = 0x3fff;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("netlink message truncated: {0}")]
    Truncated(&'static str),
    #[error("attribute {attr}: expected {expected} bytes, got {got}")]
    BadLength {
        attr: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("attribute {0}: not a NUL-terminated UTF-8 string")]
    BadString(&'static str),
    #[error("missing attribute {0}")]
    Missing(&'static str),
    #[error("attribute {0}: value out of range")]
    Invalid(&'static str),
    #[error("message is for another volume or token")]
    NotOurs,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message of a received datagram.
#[derive(Debug, PartialEq, Eq)]
pub struct RawMessage<'a> {
    pub msg_type: u16,
    pub flags: u16,
    pub seq: u32,
    pub pid: u32,
    pub payload: &'a [u8],
}

/// Split a datagram into netlink messages.
pub fn split_messages(mut buf: &[u8]) -> Result<Vec<RawMessage<'_>>, WireError> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        if buf.len() < NLMSG_HDRLEN {
            return Err(WireError::Truncated("nlmsghdr"));
        }
        let len = u32::from_ne_bytes(
            buf[0..4]
                .try_into()
                .map_err(|_| WireError::Truncated("len"))?,
        ) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(WireError::Truncated("nlmsg_len"));
        }
        out.push(RawMessage {
            msg_type: u16::from_ne_bytes([buf[4], buf[5]]),
            flags: u16::from_ne_bytes([buf[6], buf[7]]),
            seq: u32::from_ne_bytes([buf[8], buf[9], buf[10], buf[11]]),
            pid: u32::from_ne_bytes([buf[12], buf[13], buf[14], buf[15]]),
            payload: &buf[NLMSG_HDRLEN..len],
        });
        buf = &buf[align4(len).min(buf.len())..];
    }
    Ok(out)
}

/// Split an attribute stream into (type, payload) pairs.
pub fn split_attrs(mut buf: &[u8]) -> Result<Vec<(u16, &[u8])>, WireError> {
    let mut out = Vec::new();
    while buf.len() >= NLA_HDRLEN {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > buf.len() {
            return Err(WireError::Truncated("nlattr"));
        }
        out.push((ty, &buf[NLA_HDRLEN..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    if !buf.is_empty() {
        return Err(WireError::Truncated("trailing bytes"));
    }
    Ok(out)
}

/// Attributes of one mxfs message.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Attrs {
    pub token: Option<u64>,
    pub volume_uuid: Option<[u8; MXFS_UUID_LEN]>,
    pub role: Option<u32>,
    pub epoch: Option<u64>,
    pub node_id: Option<u64>,
    pub error: Option<u32>,
    pub reason: Option<String>,
    pub lower_path: Option<String>,
    pub inode: Option<u64>,
    pub offset: Option<u64>,
    pub lock_id: Option<u64>,
    pub lock_op: Option<u32>,
    pub lock_owner: Option<u64>,
    pub lock_pid: Option<u32>,
    pub lock_type: Option<u32>,
    pub lock_flags: Option<u32>,
    pub lock_end: Option<u64>,
}

fn fixed<const N: usize>(attr: &'static str, p: &[u8]) -> Result<[u8; N], WireError> {
    p.try_into().map_err(|_| WireError::BadLength {
        attr,
        expected: N,
        got: p.len(),
    })
}

fn string(attr: &'static str, p: &[u8]) -> Result<String, WireError> {
    let (last, body) = p.split_last().ok_or(WireError::BadString(attr))?;
    if *last != 0 || body.contains(&0) {
        return Err(WireError::BadString(attr));
    }
    String::from_utf8(body.to_vec()).map_err(|_| WireError::BadString(attr))
}

/// Decode mxfs attributes.  Unknown attributes are skipped (a newer
/// module may add some); known ones must be well formed.
pub fn decode_attrs<'a>(
    attrs: impl IntoIterator<Item = (u16, &'a [u8])>,
) -> Result<Attrs, WireError> {
    let mut a = Attrs::default();
    for (ty, p) in attrs {
        match ty {
            MXFS_A_TOKEN => a.token = Some(u64::from_ne_bytes(fixed("TOKEN", p)?)),
            MXFS_A_VOLUME_UUID => a.volume_uuid = Some(fixed("VOLUME_UUID", p)?),
            MXFS_A_ROLE => a.role = Some(u32::from_ne_bytes(fixed("ROLE", p)?)),
            MXFS_A_EPOCH => a.epoch = Some(u64::from_ne_bytes(fixed("EPOCH", p)?)),
            MXFS_A_NODE_ID => a.node_id = Some(u64::from_ne_bytes(fixed("NODE_ID", p)?)),
            MXFS_A_ERROR => a.error = Some(u32::from_ne_bytes(fixed("ERROR", p)?)),
            MXFS_A_REASON => a.reason = Some(string("REASON", p)?),
            MXFS_A_LOWER_PATH => a.lower_path = Some(string("LOWER_PATH", p)?),
            MXFS_A_INODE => a.inode = Some(u64::from_ne_bytes(fixed("INODE", p)?)),
            MXFS_A_OFFSET => a.offset = Some(u64::from_ne_bytes(fixed("OFFSET", p)?)),
            MXFS_A_LOCK_ID => a.lock_id = Some(u64::from_ne_bytes(fixed("LOCK_ID", p)?)),
            MXFS_A_LOCK_OP => a.lock_op = Some(u32::from_ne_bytes(fixed("LOCK_OP", p)?)),
            MXFS_A_LOCK_OWNER => a.lock_owner = Some(u64::from_ne_bytes(fixed("LOCK_OWNER", p)?)),
            MXFS_A_LOCK_PID => a.lock_pid = Some(u32::from_ne_bytes(fixed("LOCK_PID", p)?)),
            MXFS_A_LOCK_TYPE => a.lock_type = Some(u32::from_ne_bytes(fixed("LOCK_TYPE", p)?)),
            MXFS_A_LOCK_FLAGS => a.lock_flags = Some(u32::from_ne_bytes(fixed("LOCK_FLAGS", p)?)),
            MXFS_A_LOCK_END => a.lock_end = Some(u64::from_ne_bytes(fixed("LOCK_END", p)?)),
            _ => {}
        }
    }
    Ok(a)
}

/// What the kernel said to us.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Reply to one of our requests: 0 (ACK) or a negative errno.
    Ack { seq: u32, error: i32 },
    /// A command from the module.
    Command { cmd: u8, attrs: Box<Attrs> },
}

/// Decode one received message of family `family`.
pub fn decode_message(msg: &RawMessage<'_>, family: u16) -> Result<Option<Incoming>, WireError> {
    match msg.msg_type {
        NLMSG_ERROR => {
            let code = msg
                .payload
                .get(0..4)
                .ok_or(WireError::Truncated("nlmsgerr"))?;
            Ok(Some(Incoming::Ack {
                seq: msg.seq,
                error: i32::from_ne_bytes([code[0], code[1], code[2], code[3]]),
            }))
        }
        NLMSG_DONE => Ok(None),
        t if t == family => {
            if msg.payload.len() < GENL_HDRLEN {
                return Err(WireError::Truncated("genlmsghdr"));
            }
            let cmd = msg.payload[0];
            let attrs = decode_attrs(split_attrs(&msg.payload[GENL_HDRLEN..])?)?;
            Ok(Some(Incoming::Command {
                cmd,
                attrs: Box::new(attrs),
            }))
        }
        _ => Ok(None),
    }
}

/// A SHUTDOWN for our volume and token?  `Ok(reason)` if so.
pub fn check_shutdown(
    attrs: &Attrs,
    token: u64,
    uuid: &[u8; MXFS_UUID_LEN],
) -> Result<Option<String>, WireError> {
    check_session(attrs, token, uuid)?;
    Ok(attrs.reason.clone())
}

/// Is a command from the module for our volume and token?
pub fn check_session(
    attrs: &Attrs,
    token: u64,
    uuid: &[u8; MXFS_UUID_LEN],
) -> Result<(), WireError> {
    let t = attrs.token.ok_or(WireError::Missing("TOKEN"))?;
    let u = attrs.volume_uuid.ok_or(WireError::Missing("VOLUME_UUID"))?;
    if t != token || &u != uuid {
        return Err(WireError::NotOurs);
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("generic netlink family \"{MXFS_GENL_NAME}\" not found (is mxfs.ko loaded?): {0}")]
    NoFamily(String),
    #[error("netlink I/O: {0}")]
    Io(#[from] io::Error),
    #[error("encoding a netlink message: {0}")]
    Encode(String),
    #[error("the kernel refused {cmd}: {err}")]
    Refused { cmd: &'static str, err: io::Error },
    #[error("the kernel closed the netlink channel")]
    Closed,
}

/// Our volume, as the kernel knows it.
#[derive(Debug, Clone, Copy)]
pub struct Session {
    pub token: u64,
    pub uuid: [u8; MXFS_UUID_LEN],
}

pub struct Channel {
    sock: NlSocket,
    family: u16,
    seq: u32,
    buf: Vec<u8>,
    pending: Vec<(u8, Attrs)>,
}

fn attr<P: neli::Size + ToBytes>(ty: u16, p: P) -> Result<Nlattr<u16, Buffer>, ChannelError> {
    Nlattr::new(false, false, ty, p).map_err(|e| ChannelError::Encode(e.to_string()))
}

/// A REASON attribute: NUL-terminated, cut at a character boundary to fit
/// the kernel's MXFS_REASON_MAX bytes (NUL included).
pub fn reason_attr(reason: &str) -> Vec<u8> {
    let mut end = 0;
    for (i, ch) in reason.char_indices() {
        if i + ch.len_utf8() > MXFS_REASON_MAX - 1 {
            break;
        }
        end = i + ch.len_utf8();
    }
    let mut v = reason.as_bytes()[..end].to_vec();
    v.push(0);
    v
}

/// A LOWER_PATH attribute: the absolute path of the client's FUSE mount,
/// NUL-terminated, at most MXFS_PATH_MAX bytes with the NUL (the kernel's
/// policy).  Any bytes but NUL; not cut, since a cut path names something
/// else.
pub fn lower_path_attr(path: &Path) -> Result<Vec<u8>, ChannelError> {
    let bytes = path.as_os_str().as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(ChannelError::Encode(format!(
            "LOWER_PATH {} is not absolute",
            path.display()
        )));
    }
    if bytes.contains(&0) {
        return Err(ChannelError::Encode("LOWER_PATH contains a NUL".into()));
    }
    if bytes.len() > MXFS_PATH_MAX - 1 {
        return Err(ChannelError::Encode(format!(
            "LOWER_PATH is {} bytes; the kernel takes at most {}",
            bytes.len(),
            MXFS_PATH_MAX - 1
        )));
    }
    let mut v = bytes.to_vec();
    v.push(0);
    Ok(v)
}

impl Channel {
    pub fn open() -> Result<Self, ChannelError> {
        let mut resolver = NlSocketHandle::connect(NlFamily::Generic, None, &[])?;
        let family = resolver
            .resolve_genl_family(MXFS_GENL_NAME)
            .map_err(|e| ChannelError::NoFamily(e.to_string()))?;
        drop(resolver);
        let sock = NlSocket::connect(NlFamily::Generic, None, &[])?;
        Ok(Channel {
            sock,
            family,
            seq: 0,
            buf: vec![0; 64 * 1024],
            pending: Vec::new(),
        })
    }

    fn base_attrs(s: &Session) -> Result<GenlBuffer<u16, Buffer>, ChannelError> {
        let mut attrs = GenlBuffer::new();
        attrs.push(attr(MXFS_A_TOKEN, s.token)?);
        attrs.push(attr(MXFS_A_VOLUME_UUID, Buffer::from(&s.uuid[..]))?);
        Ok(attrs)
    }

    /// Send `cmd` and wait for the kernel's answer; commands that arrive
    /// meanwhile are kept for [`Channel::next_command`].
    fn request(&mut self, cmd: u8, attrs: GenlBuffer<u16, Buffer>) -> Result<(), ChannelError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = Nlmsghdr::new(
            None,
            self.family,
            NlmFFlags::new(&[NlmF::Request, NlmF::Ack]),
            Some(seq),
            None,
            NlPayload::Payload(Genlmsghdr::new(cmd, MXFS_GENL_VERSION, attrs)),
        );
        let mut out = Cursor::new(Vec::new());
        msg.to_bytes(&mut out)
            .map_err(|e| ChannelError::Encode(e.to_string()))?;
        self.sock.send(out.get_ref(), 0)?;
        loop {
            for incoming in self.receive()? {
                match incoming {
                    Incoming::Ack { seq: s, error } if s == seq => {
                        return if error == 0 {
                            Ok(())
                        } else {
                            Err(ChannelError::Refused {
                                cmd: cmd_name(cmd),
                                err: io::Error::from_raw_os_error(-error),
                            })
                        };
                    }
                    Incoming::Ack { .. } => {}
                    Incoming::Command { cmd, attrs } => self.pending.push((cmd, *attrs)),
                }
            }
        }
    }

    /// Read one datagram; messages that do not decode are logged and dropped.
    fn receive(&mut self) -> Result<Vec<Incoming>, ChannelError> {
        let n = self.sock.recv(&mut self.buf[..], 0)?;
        if n == 0 {
            return Err(ChannelError::Closed);
        }
        let mut out = Vec::new();
        match split_messages(&self.buf[..n]) {
            Ok(msgs) => {
                // Only the kernel and CAP_NET_ADMIN processes can send to
                // our port (generic netlink has no NL_CFG_F_NONROOT_SEND);
                // nlmsg_pid is no sender check (ACKs carry our own port).
                for m in msgs {
                    match decode_message(&m, self.family) {
                        Ok(Some(i)) => out.push(i),
                        Ok(None) => {}
                        Err(e) => tracing::warn!("ignoring a malformed message: {e}"),
                    }
                }
            }
            Err(e) => tracing::warn!("ignoring a malformed datagram: {e}"),
        }
        Ok(out)
    }

    /// DAEMON_READY for the owner role.  `file_locks`: this daemon
    /// serves the module's FILE_LOCK calls (through the DLM).
    pub fn daemon_ready(
        &mut self,
        s: &Session,
        role: Role,
        epoch: u64,
        node_id: u64,
        file_locks: bool,
    ) -> Result<(), ChannelError> {
        let mut attrs = Self::base_attrs(s)?;
        attrs.push(attr(MXFS_A_ROLE, role.to_wire())?);
        attrs.push(attr(MXFS_A_EPOCH, epoch)?);
        attrs.push(attr(MXFS_A_NODE_ID, node_id)?);
        if file_locks {
            attrs.push(attr(MXFS_A_FILE_LOCKS, 1u32)?);
        }
        self.request(MXFS_CMD_DAEMON_READY, attrs)
    }

    /// DAEMON_READY for the client role.  `lower` is the FUSE mount this
    /// daemon made and serves: the module stacks the volume's mxfs mount
    /// over it.  It must already be mounted (and served) in the initial
    /// mount namespace, where mount.mxfs runs, and stay mounted until
    /// SHUTDOWN.
    // Called by the client's FUSE server, which is being written.
    #[allow(dead_code)]
    pub fn daemon_ready_client(
        &mut self,
        s: &Session,
        epoch: u64,
        node_id: u64,
        lower: &Path,
        file_locks: bool,
    ) -> Result<(), ChannelError> {
        let mut attrs = Self::base_attrs(s)?;
        attrs.push(attr(MXFS_A_ROLE, Role::Client.to_wire())?);
        attrs.push(attr(MXFS_A_EPOCH, epoch)?);
        attrs.push(attr(MXFS_A_NODE_ID, node_id)?);
        if file_locks {
            attrs.push(attr(MXFS_A_FILE_LOCKS, 1u32)?);
        }
        attrs.push(attr(
            MXFS_A_LOWER_PATH,
            Buffer::from(lower_path_attr(lower)?),
        )?);
        self.request(MXFS_CMD_DAEMON_READY, attrs)
    }

    pub fn daemon_exited(
        &mut self,
        s: &Session,
        error: u32,
        reason: &str,
    ) -> Result<(), ChannelError> {
        let mut attrs = Self::base_attrs(s)?;
        attrs.push(attr(MXFS_A_ERROR, error)?);
        attrs.push(attr(MXFS_A_REASON, Buffer::from(reason_attr(reason)))?);
        self.request(MXFS_CMD_DAEMON_EXITED, attrs)
    }

    /// Tell the kernel this node has been fenced: the mount fails with
    /// EIO from now on.
    pub fn fenced(&mut self, s: &Session, reason: &str) -> Result<(), ChannelError> {
        let mut attrs = Self::base_attrs(s)?;
        attrs.push(attr(MXFS_A_REASON, Buffer::from(reason_attr(reason)))?);
        self.request(MXFS_CMD_FENCED, attrs)
    }

    /// FILE_LOCK_DONE: the answer to the module's FILE_LOCK call `id`.
    pub fn file_lock_done(
        &mut self,
        s: &Session,
        id: u64,
        answer: &crate::file_locks::KernelLockAnswer,
    ) -> Result<(), ChannelError> {
        use crate::file_locks::KernelLockAnswer as A;
        let mut attrs = Self::base_attrs(s)?;
        attrs.push(attr(MXFS_A_LOCK_ID, id)?);
        match *answer {
            A::Done => attrs.push(attr(MXFS_A_ERROR, 0u32)?),
            A::Errno(e) => attrs.push(attr(MXFS_A_ERROR, e.unsigned_abs())?),
            A::Conflict {
                typ,
                start,
                end,
                pid,
                node,
            } => {
                attrs.push(attr(MXFS_A_ERROR, 0u32)?);
                attrs.push(attr(MXFS_A_LOCK_TYPE, typ)?);
                attrs.push(attr(MXFS_A_OFFSET, start)?);
                attrs.push(attr(MXFS_A_LOCK_END, end)?);
                attrs.push(attr(MXFS_A_LOCK_PID, pid)?);
                attrs.push(attr(MXFS_A_NODE_ID, node)?);
            }
        }
        self.request(MXFS_CMD_FILE_LOCK_DONE, attrs)
    }

    /// Block until the kernel sends a command.
    pub fn next_command(&mut self) -> Result<(u8, Attrs), ChannelError> {
        loop {
            if !self.pending.is_empty() {
                return Ok(self.pending.remove(0));
            }
            for incoming in self.receive()? {
                if let Incoming::Command { cmd, attrs } = incoming {
                    self.pending.push((cmd, *attrs));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((NLA_HDRLEN + payload.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn nlmsg(ty: u16, seq: u32, pid: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&0u16.to_ne_bytes());
        v.extend_from_slice(&seq.to_ne_bytes());
        v.extend_from_slice(&pid.to_ne_bytes());
        v.extend_from_slice(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    fn shutdown_payload(token: u64, uuid: &[u8; 16], reason: &[u8]) -> Vec<u8> {
        let mut p = vec![MXFS_CMD_SHUTDOWN, MXFS_GENL_VERSION, 0, 0];
        p.extend(nla(MXFS_A_TOKEN, &token.to_ne_bytes()));
        p.extend(nla(MXFS_A_VOLUME_UUID, uuid));
        p.extend(nla(MXFS_A_REASON, reason));
        p
    }

    #[test]
    fn reasons_fit_the_kernel_limit() {
        assert_eq!(reason_attr("fenced"), b"fenced\0");
        let long = "é".repeat(400);
        let a = reason_attr(&long);
        assert!(a.len() <= MXFS_REASON_MAX);
        assert_eq!(a.last(), Some(&0));
        assert!(std::str::from_utf8(&a[..a.len() - 1]).is_ok());
        assert_eq!(reason_attr(&"x".repeat(300)).len(), MXFS_REASON_MAX);
    }

    #[test]
    fn lower_paths_are_absolute_nul_terminated_and_bounded() {
        assert_eq!(
            lower_path_attr(Path::new("/run/mxfs/lower")).unwrap(),
            b"/run/mxfs/lower\0"
        );
        assert!(lower_path_attr(Path::new("run/mxfs")).is_err());
        assert!(lower_path_attr(Path::new("")).is_err());
        let nul = std::ffi::OsStr::from_bytes(b"/a\0b");
        assert!(lower_path_attr(Path::new(nul)).is_err());
        let longest = format!("/{}", "x".repeat(MXFS_PATH_MAX - 2));
        assert_eq!(
            lower_path_attr(Path::new(&longest)).unwrap().len(),
            MXFS_PATH_MAX
        );
        let too_long = format!("/{}", "x".repeat(MXFS_PATH_MAX - 1));
        assert!(lower_path_attr(Path::new(&too_long)).is_err());
        // what the kernel decodes back
        let a = lower_path_attr(Path::new("/run/mxfs/lower")).unwrap();
        assert_eq!(
            decode_attrs([(MXFS_A_LOWER_PATH, &a[..])])
                .unwrap()
                .lower_path
                .as_deref(),
            Some("/run/mxfs/lower")
        );
    }

    #[test]
    fn decodes_a_shutdown() {
        let uuid = [7u8; 16];
        let dgram = nlmsg(0x20, 0, 0, &shutdown_payload(42, &uuid, b"unmount\0"));
        let msgs = split_messages(&dgram).unwrap();
        assert_eq!(msgs.len(), 1);
        let Some(Incoming::Command { cmd, attrs }) = decode_message(&msgs[0], 0x20).unwrap() else {
            panic!("not a command")
        };
        assert_eq!(cmd, MXFS_CMD_SHUTDOWN);
        assert_eq!(
            check_shutdown(&attrs, 42, &uuid).unwrap().as_deref(),
            Some("unmount")
        );
        assert_eq!(check_shutdown(&attrs, 43, &uuid), Err(WireError::NotOurs));
        assert_eq!(
            check_shutdown(&attrs, 42, &[0; 16]),
            Err(WireError::NotOurs)
        );
    }

    #[test]
    fn decodes_acks_and_errors() {
        let mut dgram = nlmsg(NLMSG_ERROR, 5, 0, &0i32.to_ne_bytes());
        dgram.extend(nlmsg(NLMSG_ERROR, 6, 0, &(-1i32).to_ne_bytes()));
        let msgs = split_messages(&dgram).unwrap();
        assert_eq!(
            decode_message(&msgs[0], 0x20).unwrap(),
            Some(Incoming::Ack { seq: 5, error: 0 })
        );
        assert_eq!(
            decode_message(&msgs[1], 0x20).unwrap(),
            Some(Incoming::Ack { seq: 6, error: -1 })
        );
    }

    #[test]
    fn missing_attributes_are_errors() {
        let attrs = decode_attrs([(MXFS_A_TOKEN, &1u64.to_ne_bytes()[..])]).unwrap();
        assert_eq!(
            check_shutdown(&attrs, 1, &[0; 16]),
            Err(WireError::Missing("VOLUME_UUID"))
        );
    }

    #[test]
    fn bad_attributes_are_errors_not_panics() {
        assert!(matches!(
            decode_attrs([(MXFS_A_TOKEN, &[1u8, 2, 3][..])]),
            Err(WireError::BadLength { .. })
        ));
        assert!(matches!(
            decode_attrs([(MXFS_A_VOLUME_UUID, &[0u8; 15][..])]),
            Err(WireError::BadLength { .. })
        ));
        for bad in [&b""[..], b"no nul", b"a\0b\0", b"\xff\0"] {
            assert_eq!(
                decode_attrs([(MXFS_A_REASON, bad)]),
                Err(WireError::BadString("REASON"))
            );
        }
        // unknown attributes are skipped
        assert_eq!(decode_attrs([(999, &b"x"[..])]), Ok(Attrs::default()));
    }

    #[test]
    fn truncated_input_is_an_error() {
        let uuid = [1u8; 16];
        let full = nlmsg(0x20, 0, 0, &shutdown_payload(1, &uuid, b"r\0"));
        for cut in 1..full.len() {
            let part = &full[..cut];
            // must not panic; most prefixes are errors
            if let Ok(msgs) = split_messages(part) {
                for m in msgs {
                    let _ = decode_message(&m, 0x20);
                }
            }
        }
        assert!(split_messages(&full[..10]).is_err());
        assert!(split_attrs(&[8, 0, 2, 0, 1]).is_err());
        assert!(split_attrs(&[2, 0, 2, 0]).is_err());
        assert!(split_attrs(&[1, 2]).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        // a small deterministic fuzz over random bytes
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for _ in 0..2000 {
            let mut buf = Vec::new();
            let len = (x % 96) as usize;
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            if let Ok(msgs) = split_messages(&buf) {
                for m in msgs {
                    let _ = decode_message(&m, m.msg_type);
                }
            }
            let _ = split_attrs(&buf).map(decode_attrs);
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        }
    }
}
