// SPDX-License-Identifier: GPL-2.0-only
/*
 * MXFS mount and unmount.
 *
 * mount -t mxfs DEV DIR:
 *   1. read the XFS superblock of DEV, refuse what is not XFS or what
 *      mxfs cannot stack (and say which);
 *   2. claim the volume UUID on this node (a second mount is refused);
 *   3. spawn mxfsd --device DEV --mountpoint DIR --uuid HEX --token T
 *      --fence scsi|none --dead-interval SECONDS and wait (killable,
 *      daemon_timeout=SECONDS) for its DAEMON_READY (or a DAEMON_EXITED
 *      saying why it gave up);
 *   4. owner: mount XFS privately as the lower layer;
 *      client: take mxfsd's FUSE mount, named by DAEMON_READY's
 *      LOWER_PATH, as a private clone (mxfs_take_fuse_lower);
 *      then stack over the lower root.
 * Every failure unwinds all of it (mxfs_sbi_destroy): no daemon, no lower
 * mount, no reference is left, and the kernel log says why.
 *
 * umount: drop our dentries and inodes, drop the lower (owner: XFS is
 * unmounted before umount returns; client: our clone of the FUSE mount is
 * released, the daemon unmounts its own), send SHUTDOWN, wait for mxfsd
 * to exit.
 */
#include "mxfs_internal.h"	/* first: it defines pr_fmt */
#include <linux/module.h>
#include <linux/slab.h>
#include <linux/pagemap.h>
#include <linux/file.h>
#include <linux/namei.h>
#include <linux/umh.h>
#include <linux/sched/signal.h>
#include <linux/delay.h>
#include <linux/statfs.h>
#include <linux/seq_file.h>
#include <linux/fs_parser.h>
#include <linux/exportfs.h>
#include <linux/moduleparam.h>

static char mxfs_daemon_path[256] = "/usr/sbin/mxfsd";
module_param_string(daemon_path, mxfs_daemon_path, sizeof(mxfs_daemon_path),
		    0644);
MODULE_PARM_DESC(daemon_path, "Path of the daemon that mount spawns (default /usr/sbin/mxfsd)");

/* Report a mount error in the kernel log, and to an fsopen() caller. */
#define mxfs_mount_err(fc, fmt, ...)					\
	do {								\
		pr_err(fmt "\n", ##__VA_ARGS__);			\
		if ((fc)->log.log)					\
			errorfc(fc, fmt, ##__VA_ARGS__);		\
	} while (0)

/* ---- the XFS superblock */

#define XFS_SB_MAGIC_NUM	0x58465342	/* "XFSB" */
#define XFS_SB_READ_SIZE	512
#define XFS_SB_OFF_MAGIC	0
#define XFS_SB_OFF_RBLOCKS	16
#define XFS_SB_OFF_UUID		32
#define XFS_SB_OFF_LOGSTART	48
#define XFS_SB_OFF_VERSIONNUM	100
#define XFS_SB_OFF_INPROGRESS	126
#define XFS_SB_OFF_INCOMPAT	216
#define XFS_SB_VERSION_NUMBITS	0x000f
#define XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR (1U << 4)

static int mxfs_check_xfs_sb(struct fs_context *fc, const u8 *b,
			     const char *dev)
{
	unsigned int version;

	if (get_unaligned_be32(b + XFS_SB_OFF_MAGIC) != XFS_SB_MAGIC_NUM) {
		mxfs_mount_err(fc, "%s holds no XFS filesystem (no XFS superblock magic); mxfs stacks over a volume made by mkfs.xfs",
			       dev);
		return -EINVAL;
	}
	version = get_unaligned_be16(b + XFS_SB_OFF_VERSIONNUM) &
		  XFS_SB_VERSION_NUMBITS;
	if (version != 4 && version != 5) {
		mxfs_mount_err(fc, "%s: XFS superblock version %u is not supported",
			       dev, version);
		return -EINVAL;
	}
	if (b[XFS_SB_OFF_INPROGRESS]) {
		mxfs_mount_err(fc, "%s: mkfs.xfs did not finish on this device",
			       dev);
		return -EINVAL;
	}
	if (get_unaligned_be64(b + XFS_SB_OFF_LOGSTART) == 0) {
		mxfs_mount_err(fc, "%s: this XFS has an external log device, which mxfs cannot stack",
			       dev);
		return -EOPNOTSUPP;
	}
	if (get_unaligned_be64(b + XFS_SB_OFF_RBLOCKS) != 0) {
		mxfs_mount_err(fc, "%s: this XFS has a realtime section, which mxfs cannot stack",
			       dev);
		return -EOPNOTSUPP;
	}
	if (version == 5 && (get_unaligned_be32(b + XFS_SB_OFF_INCOMPAT) &
			     XFS_SB_FEAT_INCOMPAT_NEEDSREPAIR)) {
		mxfs_mount_err(fc, "%s: this XFS is marked as needing xfs_repair",
			       dev);
		return -EUCLEAN;
	}
	return 0;
}

/* Open DEV, check it is a block device holding a usable XFS, learn its UUID. */
static int mxfs_probe_device(struct fs_context *fc, struct mxfs_sb_info *sbi)
{
	struct file *f;
	char *pathbuf = NULL, *p;
	u8 *buf = NULL;
	loff_t pos = 0;
	ssize_t n;
	int err;

	f = filp_open(fc->source, O_RDONLY | O_LARGEFILE, 0);
	if (IS_ERR(f)) {
		err = PTR_ERR(f);
		mxfs_mount_err(fc, "cannot open device %s: error %d",
			       fc->source, err);
		return err;
	}
	if (!S_ISBLK(file_inode(f)->i_mode)) {
		mxfs_mount_err(fc, "%s is not a block device", fc->source);
		err = -ENOTBLK;
		goto out;
	}
	sbi->dev = file_inode(f)->i_rdev;

	err = -ENOMEM;
	pathbuf = kmalloc(PATH_MAX, GFP_KERNEL);
	buf = kmalloc(XFS_SB_READ_SIZE, GFP_KERNEL);
	if (!pathbuf || !buf)
		goto out;
	p = d_path(&f->f_path, pathbuf, PATH_MAX);
	sbi->devpath = kstrdup(IS_ERR(p) ? fc->source : p, GFP_KERNEL);
	if (!sbi->devpath)
		goto out;

	/* Another node may have written the device: do not trust the cache. */
	invalidate_mapping_pages(f->f_mapping, 0, -1);
	n = kernel_read(f, buf, XFS_SB_READ_SIZE, &pos);
	if (n != XFS_SB_READ_SIZE) {
		err = n < 0 ? (int)n : -EIO;
		mxfs_mount_err(fc, "cannot read the superblock of %s: error %d",
			       sbi->devpath, err);
		goto out;
	}
	err = mxfs_check_xfs_sb(fc, buf, sbi->devpath);
	if (!err)
		memcpy(sbi->uuid, buf + XFS_SB_OFF_UUID, MXFS_UUID_LEN);
out:
	kfree(buf);
	kfree(pathbuf);
	fput(f);
	return err;
}

/* ---- the daemon */

struct mxfs_spawn {
	struct mxfs_volume *vol;	/* referenced */
	char *argv[14];			/* 13 arguments and the NULL */
	char path[sizeof(mxfs_daemon_path)];
	char uuid[2 * MXFS_UUID_LEN + 1];
	char token[17];
	char dead_interval[11];		/* any u32 in decimal */
	char *device;
	char *mountpoint;
};

static char *mxfs_daemon_envp[] = {
	"HOME=/",
	"PATH=/usr/sbin:/usr/bin:/sbin:/bin",
	NULL,
};

static void mxfs_spawn_free(struct mxfs_spawn *sp)
{
	mxfs_volume_put(sp->vol);
	kfree(sp->device);
	kfree(sp->mountpoint);
	kfree(sp);
}

/* Runs in the new process before exec: remember who the daemon is. */
static int mxfs_umh_init(struct subprocess_info *info, struct cred *new)
{
	struct mxfs_spawn *sp = info->data;
	struct mxfs_volume *vol = sp->vol;
	struct pid *pid = get_task_pid(current, PIDTYPE_PID);
	struct pid *old;

	spin_lock(&vol->lock);
	old = vol->daemon_pid;
	vol->daemon_pid = pid;
	spin_unlock(&vol->lock);
	put_pid(old);
	return 0;
}

/* Called once the helper no longer needs its arguments, whatever happened. */
static void mxfs_umh_cleanup(struct subprocess_info *info)
{
	mxfs_spawn_free(info->data);
}

static int mxfs_daemon_spawn(struct fs_context *fc, struct mxfs_sb_info *sbi)
{
	struct mxfs_volume *vol = sbi->vol;
	struct subprocess_info *info;
	struct mxfs_spawn *sp;
	char *path;
	int err;

	sp = kzalloc(sizeof(*sp), GFP_KERNEL);
	if (!sp)
		return -ENOMEM;
	mxfs_volume_get(vol);
	sp->vol = vol;
	kernel_param_lock(THIS_MODULE);
	strscpy(sp->path, mxfs_daemon_path, sizeof(sp->path));
	kernel_param_unlock(THIS_MODULE);
	/* "echo PATH > /sys/module/mxfs/parameters/daemon_path" adds a newline */
	path = strim(sp->path);
	snprintf(sp->uuid, sizeof(sp->uuid), "%*phN", MXFS_UUID_LEN, sbi->uuid);
	snprintf(sp->token, sizeof(sp->token), "%016llx", vol->token);
	snprintf(sp->dead_interval, sizeof(sp->dead_interval), "%u",
		 sbi->dead_interval);
	sp->device = kstrdup(sbi->devpath, GFP_KERNEL);
	/* The kernel does not know the mount point; mount.mxfs passes it. */
	sp->mountpoint = kstrdup(sbi->mountpoint ? sbi->mountpoint : "",
				 GFP_KERNEL);
	if (!sp->device || !sp->mountpoint) {
		mxfs_spawn_free(sp);
		return -ENOMEM;
	}
	sp->argv[0] = path;
	sp->argv[1] = "--device";
	sp->argv[2] = sp->device;
	sp->argv[3] = "--mountpoint";
	sp->argv[4] = sp->mountpoint;
	sp->argv[5] = "--uuid";
	sp->argv[6] = sp->uuid;
	sp->argv[7] = "--token";
	sp->argv[8] = sp->token;
	sp->argv[9] = "--fence";
	sp->argv[10] = sbi->fence == MXFS_FENCE_NONE ? "none" : "scsi";
	sp->argv[11] = "--dead-interval";
	sp->argv[12] = sp->dead_interval;	/* always: the default too */
	sp->argv[13] = NULL;
	BUILD_BUG_ON(ARRAY_SIZE(sp->argv) != 14);	/* the NULL is the last */

	info = call_usermodehelper_setup(path, sp->argv, mxfs_daemon_envp,
					 GFP_KERNEL, mxfs_umh_init,
					 mxfs_umh_cleanup, sp);
	if (!info) {
		mxfs_spawn_free(sp);
		return -ENOMEM;
	}
	/* From here mxfs_umh_cleanup() frees @sp (and @path), on every path. */
	err = call_usermodehelper_exec(info, UMH_WAIT_EXEC | UMH_KILLABLE);
	if (err) {
		kernel_param_lock(THIS_MODULE);
		mxfs_mount_err(fc, "volume %pU: cannot start the daemon %s: error %d",
			       sbi->uuid, strim(mxfs_daemon_path), err);
		kernel_param_unlock(THIS_MODULE);
	}
	return err;
}

static bool mxfs_daemon_alive(struct mxfs_volume *vol)
{
	struct pid *pid;
	bool alive;

	spin_lock(&vol->lock);
	pid = get_pid(vol->daemon_pid);
	spin_unlock(&vol->lock);
	if (!pid)
		return false;
	rcu_read_lock();
	alive = pid_task(pid, PIDTYPE_PID) != NULL;
	rcu_read_unlock();
	put_pid(pid);
	return alive;
}

static int mxfs_daemon_wait(struct fs_context *fc, struct mxfs_sb_info *sbi)
{
	struct mxfs_volume *vol = sbi->vol;
	unsigned long deadline = jiffies + sbi->daemon_timeout * HZ;
	long left, ret;

	for (;;) {
		left = (long)(deadline - jiffies);
		if (left <= 0) {
			mxfs_mount_err(fc, "volume %pU: mxfsd did not report ready within %u s (daemon_timeout=)",
				       sbi->uuid, sbi->daemon_timeout);
			return -ETIMEDOUT;
		}
		ret = wait_for_completion_killable_timeout(&vol->ready,
							   min(left, (long)HZ / 5));
		if (ret < 0) {
			mxfs_mount_err(fc, "volume %pU: mount interrupted while waiting for mxfsd",
				       sbi->uuid);
			return -EINTR;
		}
		if (ret > 0)
			break;
		if (!mxfs_daemon_alive(vol)) {
			mxfs_mount_err(fc, "volume %pU: mxfsd exited before it reported ready (see its log)",
				       sbi->uuid);
			return -EIO;
		}
	}
	if (vol->ready_err) {
		mxfs_mount_err(fc, "volume %pU: %s", sbi->uuid, vol->reason);
		return vol->ready_err;
	}
	return 0;
}

static void mxfs_wait_daemon_gone(struct mxfs_volume *vol, unsigned int secs)
{
	unsigned long deadline = jiffies + secs * HZ;

	while (mxfs_daemon_alive(vol) && time_before(jiffies, deadline))
		msleep(20);
}

/* Stop the daemon of @vol: SHUTDOWN, a bounded wait, then SIGKILL. */
static void mxfs_daemon_stop(struct mxfs_volume *vol, const char *reason)
{
	struct pid *pid;

	if (!mxfs_send_shutdown(vol, reason)) {
		if (!wait_for_completion_timeout(&vol->exited,
						 MXFS_SHUTDOWN_TIMEOUT * HZ))
			pr_warn("volume %pU: mxfsd did not answer SHUTDOWN within %d s\n",
				vol->uuid, MXFS_SHUTDOWN_TIMEOUT);
		mxfs_wait_daemon_gone(vol, 5);
	} else {
		mxfs_wait_daemon_gone(vol, 1);
	}
	if (!mxfs_daemon_alive(vol))
		return;

	spin_lock(&vol->lock);
	pid = get_pid(vol->daemon_pid);
	spin_unlock(&vol->lock);
	pr_warn("volume %pU: killing mxfsd (pid %d)\n", vol->uuid,
		pid_nr(pid));
	kill_pid(pid, SIGKILL, 1);
	put_pid(pid);
	mxfs_wait_daemon_gone(vol, 5);
	if (mxfs_daemon_alive(vol))
		pr_err("volume %pU: mxfsd did not exit after SIGKILL\n",
		       vol->uuid);
}

/* ---- per-mount state */

static void mxfs_sbi_destroy(struct mxfs_sb_info *sbi, const char *why)
{
	if (!sbi)
		return;
	/*
	 * The lower first.  Owner: XFS is cleanly unmounted before the daemon
	 * lets go.  Client: our private clone of mxfsd's FUSE mount goes
	 * (synchronously, see mxfs_take_fuse_lower), so that when mxfsd
	 * unmounts its own FUSE mount on SHUTDOWN, the FUSE superblock ends
	 * and its session with it.  Both are long-term internal mounts:
	 * kern_unmount(), not mntput() (which would leak one whose mnt_ns is
	 * MNT_NS_INTERNAL, as clone_private_mount() makes it from 5.11).
	 */
	if (sbi->lower_mnt)
		kern_unmount(sbi->lower_mnt);
	if (sbi->vol) {
		mxfs_daemon_stop(sbi->vol, why);
		mxfs_volume_unregister(sbi->vol);
	}
	kfree(sbi->lower_path);
	kfree(sbi->mountpoint);
	kfree(sbi->devpath);
	kfree(sbi);
}

static int mxfs_mount_lower(struct fs_context *fc, struct mxfs_sb_info *sbi)
{
	struct file_system_type *type;
	struct vfsmount *mnt;

	type = get_fs_type("xfs");
	if (!type) {
		mxfs_mount_err(fc, "the xfs filesystem is not available in this kernel");
		return -ENODEV;
	}
	/* SB_KERNMOUNT: an internal mount, unmounted synchronously */
	mnt = vfs_kern_mount(type, SB_KERNMOUNT | (fc->sb_flags & SB_RDONLY),
			     sbi->devpath, NULL);
	module_put(type->owner);	/* put_filesystem() is not exported */
	if (IS_ERR(mnt)) {
		mxfs_mount_err(fc, "volume %pU: mounting XFS from %s failed: error %ld (XFS logs why)",
			       sbi->uuid, sbi->devpath, PTR_ERR(mnt));
		return PTR_ERR(mnt);
	}
	sbi->lower_mnt = mnt;
	return 0;
}

/* Is the mount of @path mounted (at any depth) under an mxfs mount? */
static bool mxfs_path_under_mxfs(const struct path *path)
{
	struct path p = *path;
	bool under = false;

	path_get(&p);
	while (follow_up(&p)) {		/* the parent mount, till the ns root */
		if (p.mnt->mnt_sb->s_type == &mxfs_fs_type) {
			under = true;
			break;
		}
	}
	path_put(&p);
	return under;
}

/* Is @path a FUSE mount that a client's mxfs mount may stack over? */
static int mxfs_check_fuse_lower(struct fs_context *fc,
				 struct mxfs_sb_info *sbi,
				 const struct path *path)
{
	struct super_block *lsb = path->mnt->mnt_sb;
	const char *name = sbi->lower_path;

	if (path->dentry != path->mnt->mnt_root) {
		mxfs_mount_err(fc, "volume %pU: mxfsd's LOWER_PATH %s is not the root of a mount (it must name mxfsd's FUSE mount point)",
			       sbi->uuid, name);
		return -EINVAL;
	}
	/* "fuse" also for fuse.SUBTYPE; not "fuseblk", "virtiofs" or others */
	if (strcmp(lsb->s_type->name, "fuse") != 0) {
		mxfs_mount_err(fc, "volume %pU: mxfsd's LOWER_PATH %s is a %s mount, not FUSE; a client stacks only over mxfsd's FUSE mount",
			       sbi->uuid, name, lsb->s_type->name);
		return -EINVAL;
	}
	if (mxfs_path_under_mxfs(path)) {
		mxfs_mount_err(fc, "volume %pU: mxfsd's FUSE mount %s lies under an mxfs mount; it must be mounted outside every mxfs mount",
			       sbi->uuid, name);
		return -EINVAL;
	}
	if (!(fc->sb_flags & SB_RDONLY) &&
	    (sb_rdonly(lsb) || (path->mnt->mnt_flags & MNT_READONLY))) {
		mxfs_mount_err(fc, "volume %pU: mxfsd's FUSE mount %s is read-only; mount mxfs read-only (-o ro) or have mxfsd mount FUSE read-write",
			       sbi->uuid, name);
		return -EROFS;
	}
	return 0;
}

/*
 * Client: the lower layer is the FUSE mount that mxfsd made, serves, and
 * named in DAEMON_READY (LOWER_PATH).  Taken as overlayfs takes its
 * layers: kern_path() + clone_private_mount(), a private mount of the same
 * FUSE superblock that is in no namespace and that only we hold.
 *
 * Mount namespaces: the path is resolved, and clone_private_mount()
 * checks the mount (check_mnt()), in the mount namespace of the task
 * calling mount(2).  On 5.10, 6.1 and 6.12 clone_private_mount() refuses
 * (-EINVAL) a mount that is not in that namespace (6.15 also takes the
 * root of an anonymous one), and recent stable updates also want
 * CAP_SYS_ADMIN over the mount's namespace (-EPERM).  The mount(2) caller
 * is mount.mxfs, in the initial mount namespace; mxfsd (the process
 * call_usermodehelper() started, in init's namespaces, or the systemd unit
 * mxfsd@.service it hands over to) mounts FUSE there too.  So that unit
 * must not get a mount namespace of its own (no PrivateMounts=,
 * ProtectSystem=, ProtectHome=, PrivateTmp=, ReadOnlyPaths= and the like:
 * each makes one, and a FUSE mount made in it would not be found here),
 * and mount.mxfs must not run in another one.
 *
 * The clone is marked MNT_INTERNAL, as a kernel mount (our owner's XFS) is:
 * its last mntput() then ends it at once instead of at the umount caller's
 * return to user space (task_work), i.e. before SHUTDOWN is sent, so that
 * mxfsd's own umount of FUSE ends the FUSE superblock while mxfsd waits
 * for its session to end.  Path-based LSMs (AppArmor, Landlock) also treat
 * an MNT_INTERNAL mount as "not mounted anywhere", as for the owner's XFS,
 * rather than as a disconnected path.  Nobody else holds the clone yet; the
 * only other writer of its mnt_flags would be a read-only remount of the
 * FUSE superblock (MNT_WRITE_HOLD on each of its mounts, under mount_lock,
 * which modules cannot take), which mxfsd does not do while mounting.
 */
static int mxfs_take_fuse_lower(struct fs_context *fc,
				struct mxfs_sb_info *sbi)
{
	const char *name = sbi->lower_path;
	struct vfsmount *mnt;
	struct path path;
	int err;

	err = kern_path(name, LOOKUP_FOLLOW | LOOKUP_DIRECTORY, &path);
	if (err) {
		mxfs_mount_err(fc, "volume %pU: cannot find mxfsd's FUSE mount %s: error %d (it must be mounted in the mount namespace of the mount(2) caller)",
			       sbi->uuid, name, err);
		return err;
	}
	err = mxfs_check_fuse_lower(fc, sbi, &path);
	if (err)
		goto out;
	mnt = clone_private_mount(&path);
	if (IS_ERR(mnt)) {
		err = PTR_ERR(mnt);
		mxfs_mount_err(fc, "volume %pU: cannot take mxfsd's FUSE mount %s: error %d%s",
			       sbi->uuid, name, err,
			       err == -EINVAL ? " (it must be a bindable mount in the mount namespace of the mount(2) caller, with nothing locked on it)" :
			       err == -EPERM ? " (the mount(2) caller needs CAP_SYS_ADMIN over the FUSE mount's namespace)" :
			       "");
		goto out;
	}
	WRITE_ONCE(mnt->mnt_flags, mnt->mnt_flags | MNT_INTERNAL);
	sbi->lower_mnt = mnt;
out:
	path_put(&path);
	return err;
}

/* ---- superblock */

static int mxfs_statfs(struct dentry *dentry, struct kstatfs *buf)
{
	struct vfsmount *mnt = mxfs_lower_mnt(dentry->d_sb);
	struct path lower = { .mnt = mnt, .dentry = mnt->mnt_root };
	int err;

	err = mxfs_check(dentry->d_sb);
	if (err)
		return err;
	err = vfs_statfs(&lower, buf);
	if (err)
		return err;
	buf->f_type = MXFS_SUPER_MAGIC;
	/*
	 * f_fsid as XFS makes it (from the data device's number, our
	 * s_dev), so the owner and every client report the same; FUSE
	 * leaves it 0.
	 */
	if (mxfs_is_client(dentry->d_sb))
		buf->f_fsid = u64_to_fsid(huge_encode_dev(dentry->d_sb->s_dev));
	return 0;
}

static int mxfs_sync_fs(struct super_block *sb, int wait)
{
	struct mxfs_sb_info *sbi = MXFS_SB(sb);
	struct super_block *lsb;
	int err;

	if (!wait || !sbi || !sbi->lower_mnt)
		return 0;
	lsb = sbi->lower_mnt->mnt_sb;
	down_read(&lsb->s_umount);
	err = sync_filesystem(lsb);
	up_read(&lsb->s_umount);
	return err;
}

static int mxfs_show_options(struct seq_file *m, struct dentry *root)
{
	struct mxfs_sb_info *sbi = MXFS_SB(root->d_sb);

	if (sbi->daemon_timeout != MXFS_DEFAULT_DAEMON_TIMEOUT)
		seq_printf(m, ",daemon_timeout=%u", sbi->daemon_timeout);
	if (sbi->mountpoint && *sbi->mountpoint)
		seq_show_option(m, "mountpoint", sbi->mountpoint);
	if (sbi->fence == MXFS_FENCE_NONE)
		seq_puts(m, ",fence=none");
	if (sbi->dead_interval != MXFS_DEFAULT_DEAD_INTERVAL)
		seq_printf(m, ",dead_interval=%u", sbi->dead_interval);
	return 0;
}

static const struct super_operations mxfs_super_ops = {
	.alloc_inode = mxfs_alloc_inode,
	.free_inode = mxfs_free_inode,
	.evict_inode = mxfs_evict_inode,
	.statfs = mxfs_statfs,
	.sync_fs = mxfs_sync_fs,
	.show_options = mxfs_show_options,
};

static int mxfs_set_super(struct super_block *sb, struct fs_context *fc)
{
	struct mxfs_sb_info *sbi = fc->s_fs_info;

	/* st_dev is the device's number, like XFS's, stable across mounts */
	sb->s_dev = sbi->dev;
	return 0;
}

static int mxfs_fill_super(struct super_block *sb, struct fs_context *fc)
{
	struct mxfs_sb_info *sbi = MXFS_SB(sb);
	struct super_block *lsb = sbi->lower_mnt->mnt_sb;
	struct dentry *lroot = sbi->lower_mnt->mnt_root;
	struct inode *inode;

	/* one above the lower: 1 over XFS or FUSE (both 0) */
	sb->s_stack_depth = lsb->s_stack_depth + 1;
	if (sb->s_stack_depth > FILESYSTEM_MAX_STACK_DEPTH) {
		mxfs_mount_err(fc, "the lower filesystem is stacked too deep");
		return -EINVAL;
	}
	sb->s_magic = MXFS_SUPER_MAGIC;
	sb->s_op = &mxfs_super_ops;
	sb->s_d_op = &mxfs_dentry_ops;
	/*
	 * File handles are the lower's: XFS's on the owner; on a client
	 * FUSE's (node id + generation from mxfsd, valid while this mount
	 * lives; decoding needs mxfsd to enable FUSE_EXPORT_SUPPORT, else
	 * ESTALE).  FUSE always has export operations; a lower without them
	 * gets none here (name_to_handle_at: EOPNOTSUPP).
	 */
	if (lsb->s_export_op)
		sb->s_export_op = &mxfs_export_ops;
	sb->s_xattr = mxfs_xattr_handlers;
	sb->s_maxbytes = lsb->s_maxbytes;
	sb->s_blocksize = lsb->s_blocksize;
	sb->s_blocksize_bits = lsb->s_blocksize_bits;
	sb->s_time_gran = lsb->s_time_gran;
	sb->s_time_min = lsb->s_time_min;
	sb->s_time_max = lsb->s_time_max;
	sb->s_flags |= lsb->s_flags & SB_POSIXACL;
	memcpy(&sb->s_uuid, sbi->uuid, MXFS_UUID_LEN);

	inode = mxfs_get_inode(sb, d_inode(lroot));
	if (IS_ERR(inode))
		return PTR_ERR(inode);
	sb->s_root = d_make_root(inode);
	if (!sb->s_root)
		return -ENOMEM;
	sb->s_root->d_fsdata = dget(lroot);
	return 0;
}

static int mxfs_get_tree(struct fs_context *fc)
{
	struct mxfs_sb_info *sbi = fc->s_fs_info;
	struct mxfs_volume *vol;
	struct super_block *sb;
	int err;

	if (!fc->source || !*fc->source) {
		mxfs_mount_err(fc, "no device given");
		return -EINVAL;
	}
	err = mxfs_probe_device(fc, sbi);
	if (err)
		return err;

	vol = mxfs_volume_register(sbi->uuid, sbi->dev);
	if (IS_ERR(vol)) {
		err = PTR_ERR(vol);
		if (err == -EBUSY)
			mxfs_mount_err(fc, "volume %pU (%s) is already mounted on this node",
				       sbi->uuid, sbi->devpath);
		return err;
	}
	sbi->vol = vol;

	err = mxfs_daemon_spawn(fc, sbi);
	if (err)
		return err;	/* fc->ops->free unwinds */
	err = mxfs_daemon_wait(fc, sbi);
	if (err)
		return err;
	/* DAEMON_READY was accepted: the role is set, and no longer changes */
	spin_lock(&vol->lock);
	sbi->role = vol->role;
	swap(sbi->lower_path, vol->lower_path);
	spin_unlock(&vol->lock);
	if (sbi->role == MXFS_ROLE_CLIENT)
		err = mxfs_take_fuse_lower(fc, sbi);
	else
		err = mxfs_mount_lower(fc, sbi);
	if (err)
		return err;
	if (mxfs_is_dead_vol(vol)) {
		mxfs_mount_err(fc, "volume %pU: mxfsd went away during mount",
			       sbi->uuid);
		return -EIO;
	}

	sb = sget_fc(fc, NULL, mxfs_set_super);	/* takes sbi on success */
	if (IS_ERR(sb))
		return PTR_ERR(sb);
	err = mxfs_fill_super(sb, fc);
	if (err) {
		deactivate_locked_super(sb);	/* mxfs_kill_sb unwinds */
		return err;
	}
	sb->s_flags |= SB_ACTIVE;
	fc->root = dget(sb->s_root);
	mxfs_locks_attach(vol, sb);
	if (MXFS_SB(sb)->role == MXFS_ROLE_CLIENT)
		pr_info("volume %pU on %s mounted (client over mxfsd's FUSE mount %s, epoch %llu)\n",
			vol->uuid, MXFS_SB(sb)->devpath,
			MXFS_SB(sb)->lower_path, vol->epoch);
	else
		pr_info("volume %pU on %s mounted (owner, epoch %llu)\n",
			vol->uuid, MXFS_SB(sb)->devpath, vol->epoch);
	return 0;
}

/*
 * Remount changes flags only.  daemon_timeout=, fence= and dead_interval=
 * given on a remount are parsed (a bad value is refused) into the remount
 * context's own mxfs_sb_info, which is then freed unused: the running
 * mxfsd keeps what it was started with.  mount(8) may pass the volume's
 * options again on a remount, so a changed value is ignored, not refused.
 */
static int mxfs_reconfigure(struct fs_context *fc)
{
	struct super_block *sb = fc->root->d_sb;
	struct super_block *lsb = mxfs_lower_mnt(sb)->mnt_sb;
	int err;

	sync_filesystem(sb);
	if (!(fc->sb_flags & SB_RDONLY) && sb_rdonly(lsb)) {
		mxfs_mount_err(fc, "cannot remount read-write: the volume was mounted read-only; unmount and mount it again");
		return -EOPNOTSUPP;
	}
	if (fc->sb_flags & SB_RDONLY) {
		down_read(&lsb->s_umount);
		err = sync_filesystem(lsb);
		up_read(&lsb->s_umount);
		if (err)
			return err;
	}
	return 0;
}

enum { Opt_daemon_timeout, Opt_mountpoint, Opt_fence, Opt_dead_interval };

static const struct constant_table mxfs_fence_modes[] = {
	{ "scsi", MXFS_FENCE_SCSI },
	{ "none", MXFS_FENCE_NONE },
	{}
};

static const struct fs_parameter_spec mxfs_param_specs[] = {
	fsparam_u32("daemon_timeout", Opt_daemon_timeout),
	fsparam_string("mountpoint", Opt_mountpoint),
	fsparam_enum("fence", Opt_fence, mxfs_fence_modes),
	fsparam_u32("dead_interval", Opt_dead_interval),
	{}
};

static int mxfs_parse_param(struct fs_context *fc, struct fs_parameter *param)
{
	struct mxfs_sb_info *sbi = fc->s_fs_info;
	struct fs_parse_result result;
	int opt;

	opt = fs_parse(fc, mxfs_param_specs, param, &result);
	if (opt < 0)
		return opt;
	switch (opt) {
	case Opt_daemon_timeout:
		if (result.uint_32 < 1 ||
		    result.uint_32 > MXFS_MAX_DAEMON_TIMEOUT)
			return invalfc(fc, "daemon_timeout must be 1..%d seconds",
				       MXFS_MAX_DAEMON_TIMEOUT);
		sbi->daemon_timeout = result.uint_32;
		break;
	case Opt_mountpoint:
		kfree(sbi->mountpoint);
		sbi->mountpoint = param->string;
		param->string = NULL;
		break;
	case Opt_fence:
		sbi->fence = result.uint_32;
		break;
	case Opt_dead_interval:
		if (result.uint_32 < MXFS_MIN_DEAD_INTERVAL ||
		    result.uint_32 > MXFS_MAX_DEAD_INTERVAL)
			return invalfc(fc, "dead_interval must be %d..%d seconds",
				       MXFS_MIN_DEAD_INTERVAL,
				       MXFS_MAX_DEAD_INTERVAL);
		sbi->dead_interval = result.uint_32;
		break;
	}
	return 0;
}

static void mxfs_fc_free(struct fs_context *fc)
{
	/* Still ours only if no superblock took it: a failed mount. */
	mxfs_sbi_destroy(fc->s_fs_info, "mount failed");
}

static const struct fs_context_operations mxfs_context_ops = {
	.free = mxfs_fc_free,
	.parse_param = mxfs_parse_param,
	.get_tree = mxfs_get_tree,
	.reconfigure = mxfs_reconfigure,
};

static int mxfs_init_fs_context(struct fs_context *fc)
{
	struct mxfs_sb_info *sbi;

	sbi = kzalloc(sizeof(*sbi), GFP_KERNEL);
	if (!sbi)
		return -ENOMEM;
	sbi->daemon_timeout = MXFS_DEFAULT_DAEMON_TIMEOUT;
	sbi->dead_interval = MXFS_DEFAULT_DEAD_INTERVAL;
	fc->s_fs_info = sbi;
	fc->ops = &mxfs_context_ops;
	return 0;
}

static void mxfs_kill_sb(struct super_block *sb)
{
	struct mxfs_sb_info *sbi = MXFS_SB(sb);

	if (sbi && sbi->vol)
		mxfs_locks_detach(sbi->vol);	/* no reclaim walks our inodes */
	generic_shutdown_super(sb);	/* drops every lower dentry and inode */
	sb->s_fs_info = NULL;
	mxfs_sbi_destroy(sbi, "unmount");
}

struct file_system_type mxfs_fs_type = {
	.owner = THIS_MODULE,
	.name = MXFS_FSTYPE_NAME,
	.init_fs_context = mxfs_init_fs_context,
	.parameters = mxfs_param_specs,
	.kill_sb = mxfs_kill_sb,
};
MODULE_ALIAS_FS(MXFS_FSTYPE_NAME);

/* ---- file handles */

static int mxfs_acceptable(void *ctx, struct dentry *dentry)
{
	return 1;
}

/*
 * Is @lower /.mxfs or under it?  Only provable for connected dentries; a
 * forged handle of a file inside .mxfs (root with CAP_DAC_READ_SEARCH
 * only) is not caught.
 */
static bool mxfs_lower_is_reserved(struct super_block *sb, struct dentry *lower)
{
	struct dentry *lroot = mxfs_lower_mnt(sb)->mnt_root;
	struct dentry *res;
	bool hidden;

	res = lookup_one_len_unlocked(MXFS_RESERVED_NAME, lroot,
				      sizeof(MXFS_RESERVED_NAME) - 1);
	if (IS_ERR(res))
		return true;
	hidden = d_really_is_positive(res) && is_subdir(lower, res);
	dput(res);
	return hidden;
}

static int mxfs_encode_fh(struct inode *inode, __u32 *fh, int *max_len,
			  struct inode *parent)
{
	return mxfs_encode_inode_fh(mxfs_lower_inode(inode), (struct fid *)fh,
				    max_len,
				    parent ? mxfs_lower_inode(parent) : NULL);
}

static struct dentry *mxfs_fh_result(struct super_block *sb,
				     struct dentry *lower)
{
	if (IS_ERR_OR_NULL(lower))
		return lower ? lower : ERR_PTR(-ESTALE);
	if (mxfs_lower_is_reserved(sb, lower)) {
		dput(lower);
		return ERR_PTR(-ESTALE);
	}
	return mxfs_obtain_alias(sb, lower);
}

static struct dentry *mxfs_fh_to_dentry(struct super_block *sb,
					struct fid *fid, int fh_len,
					int fh_type)
{
	int err = mxfs_check(sb);

	if (err)
		return ERR_PTR(err);
	return mxfs_fh_result(sb, exportfs_decode_fh(mxfs_lower_mnt(sb), fid,
						     fh_len, fh_type,
						     mxfs_acceptable, NULL));
}

static struct dentry *mxfs_fh_to_parent(struct super_block *sb,
					struct fid *fid, int fh_len,
					int fh_type)
{
	struct super_block *lsb = mxfs_lower_mnt(sb)->mnt_sb;
	int err = mxfs_check(sb);

	if (err)
		return ERR_PTR(err);
	if (!lsb->s_export_op || !lsb->s_export_op->fh_to_parent)
		return ERR_PTR(-ESTALE);
	return mxfs_fh_result(sb, lsb->s_export_op->fh_to_parent(lsb, fid,
								 fh_len,
								 fh_type));
}

static struct dentry *mxfs_get_parent(struct dentry *child)
{
	struct super_block *sb = child->d_sb;
	struct super_block *lsb = mxfs_lower_mnt(sb)->mnt_sb;
	struct dentry *lower = mxfs_lower_dentry(child);
	int err = mxfs_check(sb);

	if (err)
		return ERR_PTR(err);
	if (!lower)
		return ERR_PTR(-ESTALE);
	if (!lsb->s_export_op || !lsb->s_export_op->get_parent)
		return ERR_PTR(-EACCES);
	return mxfs_fh_result(sb, lsb->s_export_op->get_parent(lower));
}

const struct export_operations mxfs_export_ops = {
	.encode_fh = mxfs_encode_fh,
	.fh_to_dentry = mxfs_fh_to_dentry,
	.fh_to_parent = mxfs_fh_to_parent,
	.get_parent = mxfs_get_parent,
};
