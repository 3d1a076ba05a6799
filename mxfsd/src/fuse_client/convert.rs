//! Pure conversions between the forwarded file operations' types and
//! fuser's, and the checks that turn an owner's reply into either a value
//! or an errno for the kernel.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{Errno, FileAttr, FileType, INodeNo, TimeOrNow};
use tracing::warn;

use crate::wire::fileop::{Attr, FileReply, Handle, TimeSet, Timespec, MAX_HANDLE};

/// Errnos the kernel accepts in a FUSE reply: it refuses the write of any
/// other (and the request then never completes).
const MAX_ERRNO: i32 = 511;

/// The owner's errno as the kernel's.  ENOSYS is never passed on: to the
/// FUSE kernel it means "this server does not implement the operation,
/// never ask again", and for some operations it then assumes success
/// (access, flush, fsync): a transient ENOSYS must not switch permission
/// checks off for the life of the mount.
pub fn errno(e: i32) -> Errno {
    if e == libc::ENOSYS || !(1..=MAX_ERRNO).contains(&e) {
        warn!(
            errno = e,
            "owner answered an errno the kernel must not get; EIO"
        );
        return Errno::EIO;
    }
    Errno::from_i32(e)
}

/// EIO for a reply that does not fit the request.
pub fn unexpected(op: &'static str, r: &FileReply) -> Errno {
    if let FileReply::Errno(e) = r {
        return errno(*e);
    }
    warn!(
        op,
        reply = reply_kind(r),
        "unexpected reply from the owner; EIO"
    );
    Errno::EIO
}

/// The reply's kind, for logs (never its data).
pub fn reply_kind(r: &FileReply) -> &'static str {
    match r {
        FileReply::Ok => "Ok",
        FileReply::Entry { .. } => "Entry",
        FileReply::Attr(_) => "Attr",
        FileReply::Data(_) => "Data",
        FileReply::Written(_) => "Written",
        FileReply::Opened { .. } => "Opened",
        FileReply::Created { .. } => "Created",
        FileReply::Dirents(_) => "Dirents",
        FileReply::Statfs(_) => "Statfs",
        FileReply::XattrSize(_) => "XattrSize",
        FileReply::Offset(_) => "Offset",
        FileReply::Extents(_) => "Extents",
        FileReply::Birthtime(_) => "Birthtime",
        FileReply::Errno(_) => "Errno",
    }
}

/// A handle as the wire allows it (the loopback does not encode, so
/// check here what the wire decoder would).
pub fn check_handle(op: &'static str, h: &Handle) -> Result<(), Errno> {
    if h.bytes.is_empty() || h.bytes.len() > MAX_HANDLE {
        warn!(
            op,
            len = h.bytes.len(),
            "owner sent a malformed file handle; EIO"
        );
        return Err(Errno::EIO);
    }
    Ok(())
}

pub fn file_type(mode: u32) -> Option<FileType> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => FileType::RegularFile,
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFSOCK => FileType::Socket,
        _ => return None,
    })
}

/// A directory entry's `d_type`; None for DT_UNKNOWN (and junk).
pub fn dirent_type(d_type: u8) -> Option<FileType> {
    Some(match d_type {
        libc::DT_REG => FileType::RegularFile,
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_SOCK => FileType::Socket,
        _ => return None,
    })
}

pub fn system_time(t: Timespec) -> SystemTime {
    let base = if t.sec >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(t.sec as u64))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(t.sec.unsigned_abs()))
    };
    base.and_then(|b| b.checked_add(Duration::from_nanos(u64::from(t.nsec.min(999_999_999)))))
        .unwrap_or(UNIX_EPOCH)
}

pub fn timespec(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timespec {
            sec: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            nsec: d.subsec_nanos(),
        },
        Err(e) => {
            let d = e.duration();
            let sec = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
            match d.subsec_nanos() {
                0 => Timespec { sec: -sec, nsec: 0 },
                n => Timespec {
                    sec: -sec - 1,
                    nsec: 1_000_000_000 - n,
                },
            }
        }
    }
}

/// A time that fuser parsed from a kernel request (setattr).  fuser 0.18
/// turns the kernel's (sec, nsec) with a negative sec into the epoch less
/// (-sec s + nsec ns), where the kernel means sec s plus nsec ns, so
/// before 1970 it is undone here; the mount test
/// `pre_1970_times_through_the_mount` checks the round trip through the
/// kernel, so a fuser that fixes this is noticed.
pub fn timespec_from_kernel(t: SystemTime) -> Timespec {
    match t.duration_since(UNIX_EPOCH) {
        Ok(_) => timespec(t),
        Err(e) => Timespec {
            sec: -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
            nsec: e.duration().subsec_nanos(),
        },
    }
}

pub fn time_set(t: TimeOrNow) -> TimeSet {
    match t {
        TimeOrNow::Now => TimeSet::Now,
        TimeOrNow::SpecificTime(t) => TimeSet::At(timespec_from_kernel(t)),
    }
}

/// FUSE's 32-bit rdev (the kernel's `new_encode_dev`) from a userspace
/// 64-bit `dev_t` (glibc `makedev`): the same number while the major is
/// below 4096 and the minor below 2^20, which is all the kernel has.
pub fn fuse_rdev(dev: u64) -> Option<u32> {
    u32::try_from(dev).ok()
}

/// The attributes of FUSE node `ino` (the kernel's st_ino is the
/// attribute's ino, so the node id throughout).
pub fn file_attr(op: &'static str, ino: u64, a: &Attr) -> Result<FileAttr, Errno> {
    let Some(kind) = file_type(a.mode) else {
        warn!(op, mode = a.mode, "owner sent an unknown file type; EIO");
        return Err(Errno::EIO);
    };
    let Some(rdev) = fuse_rdev(a.rdev) else {
        warn!(
            op,
            rdev = a.rdev,
            "owner sent a device number FUSE cannot carry; EIO"
        );
        return Err(Errno::EIO);
    };
    Ok(FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.blocks,
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: UNIX_EPOCH,
        kind,
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev,
        blksize: a.blksize,
        flags: 0,
    })
}
