// SPDX-License-Identifier: GPL-2.0-only
/*
 * MXFS inode operations common to every file type: permission, getattr,
 * setattr, extended attributes (every namespace, POSIX ACLs included),
 * symlinks, FIEMAP.  Each one is passed to the lower inode; on a client,
 * FIEMAP and statx's birth time are private requests to mxfsd, FUSE
 * having none.
 */
#include "mxfs_internal.h"	/* first: it defines pr_fmt */
#include <linux/xattr.h>
#include <linux/fiemap.h>

int mxfs_permission(MXFS_IDMAP_PARAM struct inode *inode, int mask)
{
	struct inode *lower = mxfs_lower_inode(inode);
	int err;

	err = mxfs_check(inode->i_sb);
	if (err)
		return err;
	if (!lower)
		return -ESTALE;
	/*
	 * The VFS has just run inode_permission() on our inode: the
	 * read-only, device-cgroup and LSM checks are done.  What can differ
	 * below is the lower filesystem's own answer (its mode, owner and
	 * ACLs may have been changed by the daemon on a client's behalf), so
	 * ask only that, not the whole inode_permission() a second time: on
	 * a path walk this runs once per component.
	 */
	if ((mask & MAY_WRITE) && IS_IMMUTABLE(lower))
		return -EPERM;
	if (lower->i_op->permission)
		return lower->i_op->permission(
			MXFS_IDMAP_ARG(mxfs_lower_mnt(inode->i_sb)) lower, mask);
	return generic_permission(MXFS_IDMAP_ARG(mxfs_lower_mnt(inode->i_sb))
				  lower, mask);
}

/*
 * A client's birth time: FUSE before 6.6 carries none, so ask mxfsd (the
 * private request of mxfs_uapi.h) when the caller wants it.  Without an
 * answer statx just lacks STATX_BTIME, as on a filesystem keeping none.
 */
static void mxfs_client_btime(struct dentry *lower, struct kstat *stat)
{
	struct {
		__s64 sec;
		__u32 nsec;
		__u32 zero;
	} bt;
	ssize_t got;

	BUILD_BUG_ON(sizeof(bt) != MXFS_BTIME_SIZE);
	if (stat->result_mask & STATX_BTIME)
		return;		/* FUSE gave it (6.6+) */
	got = __vfs_getxattr(lower, d_inode(lower), MXFS_XATTR_BTIME, &bt,
			     sizeof(bt));
	if (got != sizeof(bt) || bt.nsec >= NSEC_PER_SEC)
		return;
	stat->btime.tv_sec = bt.sec;
	stat->btime.tv_nsec = bt.nsec;
	stat->result_mask |= STATX_BTIME;
}

int mxfs_getattr(MXFS_IDMAP_PARAM const struct path *path, struct kstat *stat,
		 u32 request_mask, unsigned int flags)
{
	struct super_block *sb = path->dentry->d_sb;
	struct path lower;
	int err;

	err = mxfs_check(sb);
	if (err)
		return err;
	mxfs_lower_path(path->dentry, &lower);
	if (!lower.dentry)
		return -ESTALE;
	/*
	 * st_ino comes from the lower filesystem: XFS's inode number on the
	 * owner, and on a client the one mxfsd gives FUSE (the owner's XFS
	 * inode number).  st_dev is our s_dev, the block device's number:
	 * what the owner's XFS reports too, so both are stable across
	 * remounts and the same on every node, and match /proc/self/mountinfo.
	 * FUSE would report its anonymous device number.  vfs_getattr() ran
	 * the LSM hook on our path already; the lower call skips a second.
	 */
	err = vfs_getattr_nosec(&lower, stat, request_mask, flags);
	if (err)
		return err;
	if (mxfs_is_client(sb)) {
		stat->dev = sb->s_dev;
		/*
		 * FUSE just refreshed its inode from the owner (other nodes
		 * change files too): refresh what the VFS checks on ours.
		 */
		mxfs_copy_attr(d_inode(path->dentry));
		if (request_mask & STATX_BTIME)
			mxfs_client_btime(lower.dentry, stat);
	}
	return 0;
}

int mxfs_setattr(MXFS_IDMAP_PARAM struct dentry *dentry, struct iattr *attr)
{
	struct vfsmount *mnt = mxfs_lower_mnt(dentry->d_sb);
	struct dentry *lower = mxfs_lower_dentry(dentry);
	struct inode *inode = d_inode(dentry);
	struct iattr la = *attr;
	int err;

	err = mxfs_check(dentry->d_sb);
	if (err)
		return err;
	if (!lower || d_really_is_negative(lower))
		return -ESTALE;

	/*
	 * notify_change() on the lower recomputes the mode from the KILL
	 * bits and BUG()s if it also gets ATTR_MODE with them.
	 */
	if (la.ia_valid & (ATTR_KILL_SUID | ATTR_KILL_SGID))
		la.ia_valid &= ~ATTR_MODE;
	/*
	 * ia_file (ftruncate, open's O_TRUNC) is our file: pass down its
	 * lower file when it is open for writing.  A client's FUSE SETATTR
	 * then carries that file's handle and the owner truncates through
	 * it, checked at open like a local ftruncate (a file created with
	 * mode 0 and opened for writing can be truncated; by path it could
	 * not).  XFS ignores it; an owner's XFS file not opened yet
	 * (mxfs_lower_file()) is not opened for this.
	 */
	la.ia_file = NULL;
	if (la.ia_valid & ATTR_FILE) {
		struct file *lf = READ_ONCE(attr->ia_file->private_data);

		if (lf && (lf->f_mode & FMODE_WRITE))
			la.ia_file = lf;
	}
	if (!la.ia_file)
		la.ia_valid &= ~ATTR_FILE;
	/*
	 * ATTR_OPEN says the open already truncated: our lower open never has
	 * O_TRUNC, so this truncate must reach the lower.  FUSE with
	 * atomic_o_trunc skips it on ATTR_OPEN (and the file would keep its
	 * data); XFS ignores the flag.
	 */
	la.ia_valid &= ~ATTR_OPEN;

	err = mnt_want_write(mnt);
	if (err)
		return err;
	inode_lock(d_inode(lower));
	err = notify_change(MXFS_IDMAP_ARG(mnt) lower, &la, NULL);
	inode_unlock(d_inode(lower));
	mnt_drop_write(mnt);
	mxfs_copy_attr(inode);
	return err;
}

static const char *mxfs_get_link(struct dentry *dentry, struct inode *inode,
				 struct delayed_call *done)
{
	struct dentry *lower;
	int err;

	if (!dentry)
		return ERR_PTR(-ECHILD);
	err = mxfs_check(dentry->d_sb);
	if (err)
		return ERR_PTR(err);
	lower = mxfs_lower_dentry(dentry);
	if (!lower)
		return ERR_PTR(-ESTALE);
	return vfs_get_link(lower, done);
}

/* Extents per request to mxfsd: a 4 KiB answer. */
#define MXFS_FIEMAP_BATCH 128

/*
 * FIEMAP on a client.  FUSE has no request for it: ask mxfsd with the
 * private getxattr (mxfs_uapi.h), which the owner answers from XFS, a
 * batch at a time from where the last one ended, and give each extent to
 * fiemap_fill_next_extent() as XFS would (it stops at the caller's count
 * or at the extent flagged LAST).
 */
static int mxfs_client_fiemap(struct inode *inode,
			      struct fiemap_extent_info *fi, u64 start, u64 len)
{
	struct inode *lower = mxfs_lower_inode(inode);
	struct mxfs_fiemap_extent *ext;
	struct dentry *alias;
	char name[80];
	u64 end;
	int err;

	BUILD_BUG_ON(sizeof(*ext) != MXFS_FIEMAP_EXTENT_SIZE);
	/* XFS's flags: SYNC is done on the owner, XATTR maps the attr fork */
	err = fiemap_prep(inode, fi, start, &len,
			  FIEMAP_FLAG_SYNC | FIEMAP_FLAG_XATTR);
	if (err)
		return err;
	alias = d_find_any_alias(lower);
	if (!alias)
		return -ESTALE;
	ext = kmalloc_array(MXFS_FIEMAP_BATCH, sizeof(*ext), GFP_KERNEL);
	if (!ext) {
		dput(alias);
		return -ENOMEM;
	}
	end = start + len;	/* fiemap_prep() keeps it below the max size */
	for (;;) {
		ssize_t got;
		u64 next;
		int i, n;

		snprintf(name, sizeof(name), MXFS_XATTR_FIEMAP "%llu.%llu.%u",
			 start, end - start, fi->fi_flags);
		got = __vfs_getxattr(alias, lower, name, ext,
				     MXFS_FIEMAP_BATCH * sizeof(*ext));
		if (got < 0) {
			err = got;
			break;
		}
		if (got % sizeof(*ext)) {
			pr_warn_ratelimited("FIEMAP: a %zd-byte answer from mxfsd\n",
					    got);
			err = -EIO;
			break;
		}
		n = got / sizeof(*ext);
		for (i = 0; i < n && !err; i++)
			err = fiemap_fill_next_extent(fi, ext[i].logical,
						      ext[i].physical,
						      ext[i].length,
						      ext[i].flags);
		if (err || n < MXFS_FIEMAP_BATCH)
			break;
		next = ext[n - 1].logical + ext[n - 1].length;
		if (next <= start || next >= end)
			break;
		start = next;
	}
	kfree(ext);
	dput(alias);
	return err < 0 ? err : 0;	/* 1: the caller's array is full */
}

static int mxfs_fiemap(struct inode *inode, struct fiemap_extent_info *fi,
		       u64 start, u64 len)
{
	struct inode *lower = mxfs_lower_inode(inode);
	int err;

	err = mxfs_check(inode->i_sb);
	if (err)
		return err;
	if (!lower)
		return -ESTALE;
	if (mxfs_is_client(inode->i_sb))
		return mxfs_client_fiemap(inode, fi, start, len);
	if (!lower->i_op->fiemap)
		return -EOPNOTSUPP;
	return lower->i_op->fiemap(lower, fi, start, len);
}

/*
 * Drop trusted.* names from a listxattr answer, in place: XFS lists them
 * only to CAP_SYS_ADMIN, but a client's come from the owner's mxfsd,
 * which has it.  This runs as the caller, so capable() is exact.
 */
static ssize_t mxfs_xattr_drop_trusted(char *list, ssize_t len)
{
	char *src = list, *dst = list, *end = list + len;

	while (src < end) {
		size_t n = min_t(size_t, strnlen(src, end - src) + 1,
				 end - src);

		if (strncmp(src, XATTR_TRUSTED_PREFIX,
			    XATTR_TRUSTED_PREFIX_LEN)) {
			memmove(dst, src, n);
			dst += n;
		}
		src += n;
	}
	return dst - list;
}

ssize_t mxfs_listxattr(struct dentry *dentry, char *list, size_t size)
{
	struct dentry *lower = mxfs_lower_dentry(dentry);
	ssize_t len;
	int err;

	err = mxfs_check(dentry->d_sb);
	if (err)
		return err;
	if (!lower)
		return -ESTALE;
	len = vfs_listxattr(lower, list, size);
	/* a size query may overstate, as overlayfs's does */
	if (len <= 0 || !size || !mxfs_is_client(dentry->d_sb) ||
	    capable(CAP_SYS_ADMIN))
		return len;
	return mxfs_xattr_drop_trusted(list, len);
}

/*
 * One catch-all handler (empty prefix): the full name goes to the lower
 * filesystem, which applies its own namespace rules; but the private
 * requests' names are refused here (EOPNOTSUPP, as XFS does), since FUSE
 * would pass them to mxfsd.  Before 6.2 this also carries
 * system.posix_acl_*; from 6.2 the VFS sends those to ->get_acl/->set_acl
 * (mxfs_compat.h).
 */
static int mxfs_xattr_get(const struct xattr_handler *handler,
			  struct dentry *dentry, struct inode *inode,
			  const char *name, void *buffer, size_t size)
{
	struct dentry *lower = dentry ? mxfs_lower_dentry(dentry) : NULL;
	int err;

	err = mxfs_check(inode->i_sb);
	if (err)
		return err;
	if (!lower || mxfs_is_private_xattr(name))
		return -EOPNOTSUPP;
	return vfs_getxattr(MXFS_IDMAP_ARG(mxfs_lower_mnt(inode->i_sb))
			    lower, name, buffer, size);
}

static int mxfs_xattr_set(const struct xattr_handler *handler,
			  MXFS_IDMAP_PARAM struct dentry *dentry,
			  struct inode *inode, const char *name,
			  const void *value, size_t size, int flags)
{
	struct vfsmount *mnt = mxfs_lower_mnt(inode->i_sb);
	struct dentry *lower = dentry ? mxfs_lower_dentry(dentry) : NULL;
	int err;

	err = mxfs_check(inode->i_sb);
	if (err)
		return err;
	if (!lower || mxfs_is_private_xattr(name))
		return -EOPNOTSUPP;
	err = mnt_want_write(mnt);
	if (err)
		return err;
	if (value)
		err = vfs_setxattr(MXFS_IDMAP_ARG(mnt) lower, name, value, size,
				   flags);
	else
		err = vfs_removexattr(MXFS_IDMAP_ARG(mnt) lower, name);
	mnt_drop_write(mnt);
	mxfs_copy_attr(inode);
	return err;
}

static const struct xattr_handler mxfs_xattr_handler = {
	.prefix = "",
	.get = mxfs_xattr_get,
	.set = mxfs_xattr_set,
};

const struct xattr_handler *mxfs_xattr_handlers[] = {
	&mxfs_xattr_handler,
	NULL,
};

const struct inode_operations mxfs_file_iops = {
	.permission = mxfs_permission,
	.getattr = mxfs_getattr,
	.setattr = mxfs_setattr,
	.listxattr = mxfs_listxattr,
	.fiemap = mxfs_fiemap,
	MXFS_ACL_IOPS
	MXFS_FILEATTR_IOPS
};

const struct inode_operations mxfs_symlink_iops = {
	.get_link = mxfs_get_link,
	.getattr = mxfs_getattr,
	.setattr = mxfs_setattr,
	.listxattr = mxfs_listxattr,
};

const struct inode_operations mxfs_special_iops = {
	.permission = mxfs_permission,
	.getattr = mxfs_getattr,
	.setattr = mxfs_setattr,
	.listxattr = mxfs_listxattr,
	MXFS_ACL_IOPS
};
