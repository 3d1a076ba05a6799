/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * MXFS: shared-disk cluster filesystem, kernel part.
 *
 * One mxfs superblock stacks over one lower filesystem (on the owner: the
 * volume's XFS, mounted privately by this module).  Each mxfs dentry holds
 * its lower dentry in d_fsdata (set once, at lookup or creation, dropped in
 * d_release); each mxfs inode holds its lower inode.  Open files hold an
 * open lower ("backing") file in private_data: from open on a client and
 * for directories, from first use for an owner's regular files
 * (mxfs_lower_file()).
 */
#ifndef _MXFS_INTERNAL_H
#define _MXFS_INTERNAL_H

#ifndef pr_fmt
#define pr_fmt(fmt) "mxfs: " fmt
#endif

#include <linux/fs.h>
#include <linux/fs_context.h>
#include <linux/mount.h>
#include <linux/dcache.h>
#include <linux/kref.h>
#include <linux/completion.h>
#include <linux/list.h>
#include <linux/spinlock.h>
#include <linux/pid.h>
#include <linux/version.h>

#include "mxfs_uapi.h"

#define MXFS_DEFAULT_DAEMON_TIMEOUT 30	/* seconds */

/*
 * dead_interval= mount option (seconds, passed to mxfsd as
 * --dead-interval): how long a member may be silent, on the network and
 * on its disk heartbeat, before the survivors declare it dead and fence
 * it.  More than the 2 s disk heartbeat interval.
 */
#define MXFS_DEFAULT_DEAD_INTERVAL 6
#define MXFS_MIN_DEAD_INTERVAL 3
#define MXFS_MAX_DEAD_INTERVAL 300

/* fence= mount option: how mxfsd fences this node (passed as --fence). */
enum mxfs_fence_mode {
	MXFS_FENCE_SCSI = 0,	/* SCSI-3 persistent reservations (default) */
	MXFS_FENCE_NONE = 1,	/* none: split brain is not prevented */
};
#define MXFS_MAX_DAEMON_TIMEOUT 3600
#define MXFS_SHUTDOWN_TIMEOUT 15	/* seconds for mxfsd to exit */
#define MXFS_RESERVED_NAME ".mxfs"

enum mxfs_vol_state {
	MXFS_VOL_SPAWNING,	/* waiting for DAEMON_READY */
	MXFS_VOL_READY,		/* daemon ready, mount in progress or done */
	MXFS_VOL_STOPPING,	/* SHUTDOWN sent (or about to be) */
};

/*
 * One mounted (or mounting) volume on this node.  Lives on mxfs_volumes
 * while its mount exists, which is how a second mount of the same volume
 * is refused and how netlink messages find their mount.
 */
struct mxfs_volume {
	struct list_head list;		/* on mxfs_volumes, under mxfs_vol_mutex */
	struct kref ref;
	u8 uuid[MXFS_UUID_LEN];
	dev_t dev;
	u64 token;

	spinlock_t lock;		/* protects the fields below */
	enum mxfs_vol_state state;
	u32 portid;			/* daemon's netlink port, 0 if none */
	u32 role;
	u64 epoch;
	u64 node_id;
	struct pid *daemon_pid;		/* spawned, then DAEMON_READY's sender */
	bool dead;			/* operations fail with -EIO */
	bool daemon_gone;		/* its netlink socket closed */
	int ready_err;			/* DAEMON_READY refused the mount */
	char reason[MXFS_REASON_MAX];
	/* client: LOWER_PATH of the accepted DAEMON_READY, until mount takes it */
	char *lower_path;

	struct completion ready;	/* DAEMON_READY accepted */
	struct completion exited;	/* DAEMON_EXITED or socket closed */
	/* a mounted volume's daemon is gone: dead unless one re-attaches */
	struct delayed_work reattach_work;

	/* under lock: FILE_LOCK calls awaiting FILE_LOCK_DONE (mxfs_locks.c) */
	struct list_head lock_calls;
	u64 last_lock_id;
	/* the daemon arbitrates file locks (DAEMON_READY's FILE_LOCKS) */
	bool file_locks;
	/* under lock: the mounted superblock, for reclaim_work */
	struct super_block *sb;
	/* a restarted daemon is given this node's locks again */
	struct work_struct reclaim_work;
};

/* A FILE_LOCK message to the daemon (mxfs_uapi.h). */
struct mxfs_lock_msg {
	u32 op;				/* enum mxfs_file_lock_op */
	u32 flags;			/* MXFS_FILE_LOCK_* */
	u32 type;			/* F_RDLCK, F_WRLCK (F_UNLCK: unused) */
	u32 pid;
	u64 ino;
	u64 owner;			/* hashed lock owner */
	u64 start, end;			/* bytes, end inclusive */
};

/* Its FILE_LOCK_DONE. */
struct mxfs_lock_answer {
	int err;			/* 0 or a negative errno */
	/* a TEST's conflicting lock (type F_UNLCK: none) */
	u32 type;
	u64 start, end;
	s32 pid;
	u64 node;
};

/* One FILE_LOCK call waiting for its answer, on its caller's stack. */
struct mxfs_lock_call {
	struct list_head list;		/* on vol->lock_calls, under vol->lock */
	u64 id;
	bool answered;
	struct mxfs_lock_answer answer;
	struct completion done;
};

/* mxfs_sb_info.flags bits */
#define MXFS_SBI_WARNED_SHARED_MMAP 0	/* client: shared writable mmap logged */

struct mxfs_sb_info {
	struct mxfs_volume *vol;
	/*
	 * Private mount of the lower fs: the owner's XFS (vfs_kern_mount) or
	 * a client's clone of mxfsd's FUSE mount (clone_private_mount); either
	 * way released with kern_unmount().
	 */
	struct vfsmount *lower_mnt;
	u32 role;			/* MXFS_ROLE_OWNER or MXFS_ROLE_CLIENT */
	char *lower_path;		/* client: where mxfsd mounted FUSE */
	unsigned long flags;		/* MXFS_SBI_* */
	unsigned int daemon_timeout;	/* seconds */
	char *mountpoint;		/* from the mountpoint= option */
	int fence;			/* enum mxfs_fence_mode, fence= option */
	unsigned int dead_interval;	/* seconds, dead_interval= option */
	char *devpath;			/* canonical path of the device */
	dev_t dev;
	u8 uuid[MXFS_UUID_LEN];
};

struct mxfs_inode {
	struct inode vfs_inode;
	struct inode *lower;		/* referenced; never changes */
};

static inline struct mxfs_inode *MXFS_I(struct inode *inode)
{
	return container_of(inode, struct mxfs_inode, vfs_inode);
}

static inline struct mxfs_sb_info *MXFS_SB(struct super_block *sb)
{
	return sb->s_fs_info;
}

static inline struct inode *mxfs_lower_inode(struct inode *inode)
{
	return MXFS_I(inode)->lower;
}

static inline struct dentry *mxfs_lower_dentry(const struct dentry *dentry)
{
	return READ_ONCE(dentry->d_fsdata);
}

static inline struct vfsmount *mxfs_lower_mnt(struct super_block *sb)
{
	return MXFS_SB(sb)->lower_mnt;
}

static inline void mxfs_lower_path(const struct dentry *dentry,
				   struct path *path)
{
	path->mnt = mxfs_lower_mnt(dentry->d_sb);
	path->dentry = mxfs_lower_dentry(dentry);
}

/* True if the mount is dead (daemon gone or fenced): callers return -EIO. */
static inline bool mxfs_is_dead(struct super_block *sb)
{
	struct mxfs_sb_info *sbi = MXFS_SB(sb);

	return sbi && sbi->vol && READ_ONCE(sbi->vol->dead);
}

/* A client's mount: the lower is mxfsd's FUSE mount, not XFS. */
static inline bool mxfs_is_client(struct super_block *sb)
{
	struct mxfs_sb_info *sbi = MXFS_SB(sb);

	return sbi && sbi->role == MXFS_ROLE_CLIENT;
}

/*
 * The client's private requests to its mxfsd, for what FUSE has no request
 * for (mxfs_uapi.h): FIEMAP and fallocate modes beyond FUSE's three.  They
 * travel as extended attribute calls on the FUSE mount under names no
 * filesystem accepts, which users therefore may not use (mxfs_xattr_get()).
 */
struct mxfs_fiemap_extent {
	__u64 logical;
	__u64 physical;
	__u64 length;
	__u32 flags;
	__u32 zero;
};

struct mxfs_fallocate_req {
	__u64 offset;
	__u64 length;
	__u32 mode;
	__u32 zero;
};

static inline bool mxfs_is_private_xattr(const char *name)
{
	return !strncmp(name, MXFS_PRIVATE_XATTR_PREFIX,
			sizeof(MXFS_PRIVATE_XATTR_PREFIX) - 1);
}

static inline bool mxfs_is_dead_vol(struct mxfs_volume *vol)
{
	return READ_ONCE(vol->dead);
}

static inline int mxfs_check(struct super_block *sb)
{
	return mxfs_is_dead(sb) ? -EIO : 0;
}

/* /.mxfs belongs to the daemon: hidden from lookup and readdir. */
static inline bool mxfs_is_reserved_name(const struct dentry *parent,
					 const char *name, unsigned int len)
{
	return parent == parent->d_sb->s_root &&
	       len == sizeof(MXFS_RESERVED_NAME) - 1 &&
	       !memcmp(name, MXFS_RESERVED_NAME, len);
}

/* mxfs_cache.c */
int mxfs_init_inodecache(void);
void mxfs_destroy_inodecache(void);
struct inode *mxfs_alloc_inode(struct super_block *sb);
void mxfs_free_inode(struct inode *inode);
void mxfs_evict_inode(struct inode *inode);
struct inode *mxfs_get_inode(struct super_block *sb, struct inode *lower);
struct inode *mxfs_get_created_inode(struct super_block *sb,
				     struct inode *lower);
void mxfs_copy_attr(struct inode *inode);
struct dentry *mxfs_obtain_alias(struct super_block *sb, struct dentry *lower);

/* mxfs_inode.c */
extern const struct inode_operations mxfs_file_iops;
extern const struct inode_operations mxfs_symlink_iops;
extern const struct inode_operations mxfs_special_iops;
extern const struct xattr_handler *mxfs_xattr_handlers[];
ssize_t mxfs_listxattr(struct dentry *dentry, char *list, size_t size);

/* mxfs_dir.c */
extern const struct inode_operations mxfs_dir_iops;
extern const struct file_operations mxfs_dir_fops;
extern const struct dentry_operations mxfs_dentry_ops;

/* mxfs_file.c */
extern const struct file_operations mxfs_file_fops;
extern const struct address_space_operations mxfs_aops;
int mxfs_open(struct inode *inode, struct file *file);
struct file *mxfs_lower_file(struct file *file);
struct file *mxfs_create_lower_file(struct dentry *dentry, struct file *file,
				    umode_t mode);
int mxfs_finish_created(struct file *file, struct dentry *dentry,
			struct file *lf);
struct file *mxfs_live_lower_file(struct file *file);
int mxfs_release(struct inode *inode, struct file *file);
loff_t mxfs_llseek(struct file *file, loff_t offset, int whence);
int mxfs_fsync(struct file *file, loff_t start, loff_t end, int datasync);
void mxfs_client_drop_pages(struct inode *inode, loff_t start, loff_t end);

/* mxfs_super.c */
extern struct file_system_type mxfs_fs_type;
extern const struct export_operations mxfs_export_ops;

/* mxfs_netlink.c */
int mxfs_netlink_init(void);
void mxfs_netlink_exit(void);
struct mxfs_volume *mxfs_volume_register(const u8 *uuid, dev_t dev);
void mxfs_volume_unregister(struct mxfs_volume *vol);
void mxfs_volume_put(struct mxfs_volume *vol);
void mxfs_volume_get(struct mxfs_volume *vol);
int mxfs_send_shutdown(struct mxfs_volume *vol, const char *reason);
int mxfs_send_file_lock(struct mxfs_volume *vol, u32 portid, u64 id,
			const struct mxfs_lock_msg *msg);

/* mxfs_locks.c */
void mxfs_lock_calls_fail(struct mxfs_volume *vol, int err);
void mxfs_reclaim_work(struct work_struct *work);
void mxfs_locks_attach(struct mxfs_volume *vol, struct super_block *sb);
void mxfs_locks_detach(struct mxfs_volume *vol);
void mxfs_lock_answer(struct mxfs_volume *vol, u64 id,
		      const struct mxfs_lock_answer *ans);
void mxfs_volume_mark_dead(struct mxfs_volume *vol, const char *why);

#include "mxfs_compat.h"

/* mxfs_inode.c (signatures depend on mxfs_compat.h) */
int mxfs_permission(MXFS_IDMAP_PARAM struct inode *inode, int mask);
int mxfs_getattr(MXFS_IDMAP_PARAM const struct path *path, struct kstat *stat,
		 u32 request_mask, unsigned int flags);
int mxfs_setattr(MXFS_IDMAP_PARAM struct dentry *dentry, struct iattr *attr);

/* mxfs_locks.c (struct file_lock comes from mxfs_compat.h's includes) */
int mxfs_posix_lock(struct file *file, int cmd, struct file_lock *fl);
int mxfs_flock_lock(struct file *file, int cmd, struct file_lock *fl);

#endif /* _MXFS_INTERNAL_H */
