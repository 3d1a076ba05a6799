/* SPDX-License-Identifier: GPL-2.0-only WITH Linux-syscall-note */
/*
 * MXFS kernel <-> mxfsd interface: the generic netlink family "mxfs".
 *
 * This header is the single source of truth.  mxfsd (Rust) mirrors it in
 * mxfsd/src/uapi.rs, and a unit test there parses this text and checks that
 * every constant agrees.  Keep it to plain #defines and enums whose members
 * all carry an explicit "= value": that is what the test parses.
 *
 * Direction of each command:
 *   daemon -> kernel: DAEMON_READY, DAEMON_EXITED, FENCED, RECOVERY_START,
 *                     RECOVERY_DONE, LOCK_GRANT, CACHE_INVAL, FILE_LOCK_DONE
 *   kernel -> daemon: SHUTDOWN, LOCK_REQ, LOCK_RELEASE, MAP_BLOCKS,
 *                     COMMIT_BLOCKS, FILE_LOCK
 * Every daemon -> kernel command needs CAP_SYS_ADMIN (and CAP_NET_ADMIN,
 * through GENL_ADMIN_PERM) in the initial network namespace.
 */
#ifndef _UAPI_LINUX_MXFS_H
#define _UAPI_LINUX_MXFS_H

#define MXFS_GENL_NAME "mxfs"
#define MXFS_GENL_VERSION 1

/* Name of the filesystem type, as in "mount -t mxfs". */
#define MXFS_FSTYPE_NAME "mxfs"
/* statfs(2) f_type of an mxfs mount ("MXFS"). */
#define MXFS_SUPER_MAGIC 0x4d584653

/* Length of a volume UUID (the XFS sb_uuid) in MXFS_A_VOLUME_UUID. */
#define MXFS_UUID_LEN 16
/* Longest reason string the kernel accepts, including the NUL. */
#define MXFS_REASON_MAX 256
/* Longest lower path the kernel accepts, including the NUL. */
#define MXFS_PATH_MAX 4096

enum mxfs_cmd {
	MXFS_CMD_UNSPEC = 0,
	/* daemon -> kernel: TOKEN, VOLUME_UUID, ROLE, EPOCH, NODE_ID;
	 * role CLIENT also LOWER_PATH, the absolute path of the FUSE mount
	 * the daemon made and serves, in the mount(2) caller's mount
	 * namespace (required; LOWER_FD is not taken).  The owner's is
	 * ignored.  Optional FILE_LOCKS: the daemon arbitrates fcntl and
	 * flock locks cluster-wide (without it they stay on this node). */
	MXFS_CMD_DAEMON_READY = 1,
	/* kernel -> daemon: TOKEN, VOLUME_UUID, optional REASON. */
	MXFS_CMD_SHUTDOWN = 2,
	/* daemon -> kernel: TOKEN, VOLUME_UUID, optional ERROR, REASON. */
	MXFS_CMD_DAEMON_EXITED = 3,
	/* daemon -> kernel: TOKEN, VOLUME_UUID, REASON. */
	MXFS_CMD_FENCED = 4,
	MXFS_CMD_RECOVERY_START = 5,
	MXFS_CMD_RECOVERY_DONE = 6,
	MXFS_CMD_LOCK_REQ = 7,
	MXFS_CMD_LOCK_GRANT = 8,
	MXFS_CMD_LOCK_RELEASE = 9,
	MXFS_CMD_CACHE_INVAL = 10,
	MXFS_CMD_MAP_BLOCKS = 11,
	MXFS_CMD_COMMIT_BLOCKS = 12,
	/* kernel -> daemon: an application's fcntl or flock lock call on a
	 * regular file.  VOLUME_UUID, LOCK_ID, LOCK_OP; for LOCK, UNLOCK and
	 * TEST also INODE, LOCK_OWNER, LOCK_PID, LOCK_FLAGS, OFFSET (first
	 * byte), LOCK_END (last byte, inclusive); LOCK and TEST LOCK_TYPE.
	 * CANCEL withdraws the waiting LOCK whose LOCK_ID it carries. */
	MXFS_CMD_FILE_LOCK = 13,
	/* daemon -> kernel: the answer to FILE_LOCK LOCK_ID.  TOKEN,
	 * VOLUME_UUID, LOCK_ID, ERROR (0: done; EAGAIN, EDEADLK, EINTR for a
	 * cancelled wait, ENOLCK); a TEST that found a conflict also
	 * LOCK_TYPE, OFFSET, LOCK_END, LOCK_PID and NODE_ID of that lock. */
	MXFS_CMD_FILE_LOCK_DONE = 14,
	__MXFS_CMD_MAX = 15,
};
#define MXFS_CMD_MAX (__MXFS_CMD_MAX - 1)

enum mxfs_attr {
	MXFS_A_UNSPEC = 0,
	MXFS_A_PAD = 1,		/* padding for 64-bit attributes */
	MXFS_A_TOKEN = 2,	/* u64: one-time token from --token */
	MXFS_A_VOLUME_UUID = 3,	/* binary, MXFS_UUID_LEN bytes */
	MXFS_A_ROLE = 4,	/* u32: enum mxfs_role */
	MXFS_A_EPOCH = 5,	/* u64: owner epoch */
	MXFS_A_NODE_ID = 6,	/* u64: FNV-1a 64 of the node UUID, never 0 */
	MXFS_A_LOWER_PATH = 7,	/* NUL-terminated string, < MXFS_PATH_MAX */
	MXFS_A_LOWER_FD = 8,	/* u32: fd in the sender (reserved, refused) */
	MXFS_A_ERROR = 9,	/* u32: positive errno */
	MXFS_A_REASON = 10,	/* NUL-terminated string, < MXFS_REASON_MAX */
	MXFS_A_INODE = 11,	/* u64: inode number (lock/cache/map steps) */
	MXFS_A_OFFSET = 12,	/* u64: byte offset */
	MXFS_A_LENGTH = 13,	/* u64: byte length */
	MXFS_A_LOCK_MODE = 14,	/* u32: enum mxfs_lock_mode */
	MXFS_A_LOCK_ID = 15,	/* u64: the kernel's id of a FILE_LOCK call */
	MXFS_A_LOCK_OP = 16,	/* u32: enum mxfs_file_lock_op */
	MXFS_A_LOCK_OWNER = 17,	/* u64: opaque lock owner (a hash) */
	MXFS_A_LOCK_PID = 18,	/* u32: the process that takes (took) it */
	MXFS_A_LOCK_TYPE = 19,	/* u32: F_RDLCK or F_WRLCK */
	MXFS_A_LOCK_FLAGS = 20,	/* u32: MXFS_FILE_LOCK_* bits */
	MXFS_A_LOCK_END = 21,	/* u64: last byte of a range, inclusive */
	MXFS_A_FILE_LOCKS = 22,	/* u32: 1 in DAEMON_READY (see there) */
	__MXFS_A_MAX = 23,
};
#define MXFS_A_MAX (__MXFS_A_MAX - 1)

/* FILE_LOCK's LOCK_OP. */
enum mxfs_file_lock_op {
	MXFS_FILE_LOCK_LOCK = 1,	/* take a lock (F_SETLK(W), flock) */
	MXFS_FILE_LOCK_UNLOCK = 2,	/* remove the owner's locks from the range */
	MXFS_FILE_LOCK_TEST = 3,	/* F_GETLK */
	MXFS_FILE_LOCK_CANCEL = 4,	/* withdraw a waiting LOCK */
};

/* FILE_LOCK's LOCK_FLAGS. */
#define MXFS_FILE_LOCK_FLOCK 0x1	/* flock(2), not a record lock */
#define MXFS_FILE_LOCK_WAIT 0x2		/* LOCK: wait while blocked */

enum mxfs_role {
	MXFS_ROLE_NONE = 0,
	MXFS_ROLE_OWNER = 1,	/* the module mounts XFS as the lower layer */
	MXFS_ROLE_CLIENT = 2,	/* the lower layer is the daemon's FUSE mount */
};

enum mxfs_lock_mode {
	MXFS_LOCK_NL = 0,
	MXFS_LOCK_CR = 1,
	MXFS_LOCK_CW = 2,
	MXFS_LOCK_PR = 3,
	MXFS_LOCK_PW = 4,
	MXFS_LOCK_EX = 5,
};

/*
 * Requests a client's module sends its mxfsd through the FUSE mount, for
 * operations FUSE has no request for.  Each is an extended attribute name
 * outside every namespace a filesystem accepts, so no file can hold one:
 * the module refuses these names from users and mxfsd answers them itself
 * (never forwarding them as xattrs).  Values are in host byte order: the
 * module and the daemon share the host.
 *
 * getxattr "mxfs.fiemap.START.LENGTH.FLAGS" (decimal; FLAGS the call's
 * FIEMAP_FLAG_*): the value is the file's extents from START on, as many
 * as the buffer holds, each MXFS_FIEMAP_EXTENT_SIZE bytes:
 *   { u64 logical, u64 physical, u64 length, u32 flags, u32 zero }
 * (flags are FIEMAP_EXTENT_*).  Fewer than fit: there are no more.
 *
 * getxattr "mxfs.btime": the file's birth time, MXFS_BTIME_SIZE bytes
 *   { s64 seconds, u32 nanoseconds, u32 zero }
 * (statx's STATX_BTIME, which FUSE before 6.6 does not carry); ENODATA if
 * the owner's filesystem keeps none.
 *
 * setxattr "mxfs.fallocate", a value of MXFS_FALLOCATE_SIZE bytes:
 *   { u64 offset, u64 length, u32 mode, u32 zero }
 * fallocate(2) with a mode FUSE does not carry (COLLAPSE_RANGE,
 * INSERT_RANGE, UNSHARE_RANGE), done through a file the node has open
 * for writing.
 */
#define MXFS_PRIVATE_XATTR_PREFIX "mxfs."
#define MXFS_XATTR_FIEMAP "mxfs.fiemap."
#define MXFS_FIEMAP_EXTENT_SIZE 32
#define MXFS_XATTR_BTIME "mxfs.btime"
#define MXFS_BTIME_SIZE 16
#define MXFS_XATTR_FALLOCATE "mxfs.fallocate"
#define MXFS_FALLOCATE_SIZE 24

#endif /* _UAPI_LINUX_MXFS_H */
