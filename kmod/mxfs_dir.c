// SPDX-License-Identifier: GPL-2.0-only
/*
 * MXFS directories: dentry operations, lookup, the namespace operations
 * (create and atomic_open, O_TMPFILE, mkdir, mknod, symlink, link, unlink,
 * rmdir, rename) and readdir.  /.mxfs, the daemon's directory, is hidden
 * from lookup and readdir, and nothing can be created under that name
 * through the mount.
 */
#include "mxfs_internal.h"	/* first: it defines pr_fmt */
#include <linux/namei.h>

/* ---- dentry operations */

static int mxfs_d_revalidate(struct dentry *dentry, unsigned int flags)
{
	struct dentry *lower = mxfs_lower_dentry(dentry);
	struct inode *inode, *linode;

	if (!lower)
		return 1;	/* the reserved name, or an alias being set up */
	if (!IS_ROOT(lower) && d_unhashed(lower))
		return 0;	/* renamed over or removed beneath us */
	inode = d_inode_rcu(dentry);
	linode = d_inode_rcu(lower);
	if (!inode != !linode)
		return 0;
	if (inode && READ_ONCE(MXFS_I(inode)->lower) != linode)
		return 0;
	if (lower->d_flags & DCACHE_OP_REVALIDATE) {
		int ret = lower->d_op->d_revalidate(lower, flags);

		/*
		 * A client's FUSE lower revalidates with the owner (entry
		 * timeout 0) and refreshes its inode: refresh ours too, so
		 * that what the VFS checks on it (sticky bit, owner, append
		 * and immutable flags) is what other nodes left.
		 */
		if (ret > 0 && inode && !(flags & LOOKUP_RCU) &&
		    mxfs_is_client(dentry->d_sb))
			mxfs_copy_attr(inode);
		return ret;
	}
	return 1;
}

static void mxfs_d_release(struct dentry *dentry)
{
	dput(dentry->d_fsdata);
	dentry->d_fsdata = NULL;
}

const struct dentry_operations mxfs_dentry_ops = {
	.d_revalidate = mxfs_d_revalidate,
	.d_release = mxfs_d_release,
	MXFS_D_REAL_OP
};

/* ---- lookup */

static struct dentry *mxfs_lookup(struct inode *dir, struct dentry *dentry,
				  unsigned int flags)
{
	struct dentry *lparent = mxfs_lower_dentry(dentry->d_parent);
	struct dentry *lower;
	struct inode *inode;
	int err;

	err = mxfs_check(dir->i_sb);
	if (err)
		return ERR_PTR(err);
	if (mxfs_is_reserved_name(dentry->d_parent, dentry->d_name.name,
				  dentry->d_name.len))
		return d_splice_alias(NULL, dentry);	/* negative, no lower */
	if (!lparent)
		return ERR_PTR(-ESTALE);

	lower = lookup_one_len_unlocked(dentry->d_name.name, lparent,
					dentry->d_name.len);
	if (IS_ERR(lower))
		return ERR_CAST(lower);
	dentry->d_fsdata = lower;
	if (d_really_is_negative(lower))
		return d_splice_alias(NULL, dentry);

	inode = mxfs_get_inode(dir->i_sb, d_inode(lower));
	if (IS_ERR(inode))
		return ERR_CAST(inode);		/* d_release drops @lower */
	return d_splice_alias(inode, dentry);
}

/* ---- namespace operations */

/*
 * Lock the lower parent of @dentry and check that @dentry's lower dentry
 * is still its child there.  The VFS holds our own parent's lock.
 */
static int mxfs_lock_lower_parent(struct dentry *dentry,
				  struct dentry **lparentp)
{
	struct dentry *lower = mxfs_lower_dentry(dentry);
	struct dentry *lparent = mxfs_lower_dentry(dentry->d_parent);

	if (mxfs_is_reserved_name(dentry->d_parent, dentry->d_name.name,
				  dentry->d_name.len))
		return -EPERM;
	if (!lower || !lparent)
		return -ESTALE;
	inode_lock_nested(d_inode(lparent), I_MUTEX_PARENT);
	if (lower->d_parent != lparent || d_unhashed(lower)) {
		inode_unlock(d_inode(lparent));
		return -ESTALE;
	}
	*lparentp = lparent;
	return 0;
}

static int mxfs_instantiate(struct inode *dir, struct dentry *dentry,
			    struct dentry *lower, bool is_dir)
{
	struct inode *inode;

	if (d_really_is_negative(lower) || d_unhashed(lower)) {
		/*
		 * FUSE's mkdir (as NFS's) may succeed and leave the dentry it
		 * was given unhashed and negative: d_splice_alias() moved an
		 * existing alias of the new directory's inode to that name
		 * instead.  The directory exists; like those filesystems, leave
		 * ours unhashed, and the next lookup finds it.
		 */
		if (is_dir && d_unhashed(lower)) {
			d_drop(dentry);
			return 0;
		}
		/* XFS always instantiates; anything else is a surprise */
		pr_warn_ratelimited("lower create of %pd left no inode\n",
				    dentry);
		d_drop(dentry);
		return -EIO;
	}
	/* a client's FUSE may have found an inode it had: look ours up */
	if (mxfs_is_client(dir->i_sb))
		inode = mxfs_get_inode(dir->i_sb, d_inode(lower));
	else
		inode = mxfs_get_created_inode(dir->i_sb, d_inode(lower));
	if (IS_ERR(inode))
		return PTR_ERR(inode);
	d_instantiate(dentry, inode);
	return 0;
}

enum mxfs_new_kind { MXFS_NEW_CREATE, MXFS_NEW_MKDIR, MXFS_NEW_MKNOD,
		     MXFS_NEW_SYMLINK };

static int mxfs_new_object(struct inode *dir, struct dentry *dentry,
			   enum mxfs_new_kind kind, umode_t mode, dev_t rdev,
			   const char *symname, bool excl)
{
	struct vfsmount *mnt = mxfs_lower_mnt(dir->i_sb);
	struct dentry *lparent, *lower;
	struct inode *ldir;
	int err;

	err = mxfs_check(dir->i_sb);
	if (err)
		return err;
	err = mnt_want_write(mnt);
	if (err)
		return err;
	err = mxfs_lock_lower_parent(dentry, &lparent);
	if (err)
		goto out_drop_write;
	ldir = d_inode(lparent);
	lower = mxfs_lower_dentry(dentry);

	switch (kind) {
	case MXFS_NEW_CREATE:
		err = vfs_create(MXFS_IDMAP_ARG(mnt) ldir, lower, mode, excl);
		break;
	case MXFS_NEW_MKDIR:
		err = vfs_mkdir(MXFS_IDMAP_ARG(mnt) ldir, lower, mode);
		break;
	case MXFS_NEW_MKNOD:
		err = vfs_mknod(MXFS_IDMAP_ARG(mnt) ldir, lower, mode, rdev);
		break;
	case MXFS_NEW_SYMLINK:
		err = vfs_symlink(MXFS_IDMAP_ARG(mnt) ldir, lower, symname);
		break;
	default:
		err = -EINVAL;
	}
	if (!err)
		err = mxfs_instantiate(dir, dentry, lower,
				       kind == MXFS_NEW_MKDIR);
	inode_unlock(ldir);
	mxfs_copy_attr(dir);
out_drop_write:
	mnt_drop_write(mnt);
	return err;
}

static int mxfs_create(MXFS_IDMAP_PARAM struct inode *dir,
		       struct dentry *dentry, umode_t mode, bool excl)
{
	return mxfs_new_object(dir, dentry, MXFS_NEW_CREATE,
			       (mode & 07777) | S_IFREG, 0, NULL, excl);
}

/*
 * Owner: open(O_CREAT) of a name not in our dcache.  Look the name up
 * below and create it there under one lock of the lower parent, and give
 * our dentry its inode at once: the VFS's ->lookup then ->create would
 * look up below without the lock, then lock again to create.  The VFS
 * opens the file (mxfs_open()); FMODE_CREATED if we made it.
 */
static int mxfs_owner_create_open(struct inode *dir, struct dentry *dentry,
				  struct file *file, unsigned int flags,
				  umode_t mode, struct dentry **resp)
{
	struct vfsmount *mnt = mxfs_lower_mnt(dir->i_sb);
	struct dentry *lparent = mxfs_lower_dentry(dentry->d_parent);
	struct dentry *lower, *res;
	struct inode *ldir, *inode;
	bool created = false;
	int err;

	if (!lparent)
		return -ESTALE;
	ldir = d_inode(lparent);
	err = mnt_want_write(mnt);
	if (err)
		return err;
	inode_lock_nested(ldir, I_MUTEX_PARENT);
	lower = lookup_one_len(dentry->d_name.name, lparent,
			       dentry->d_name.len);
	if (IS_ERR(lower)) {
		err = PTR_ERR(lower);
		goto out_unlock;
	}
	/* an in-lookup dentry is ours alone; d_release drops @lower */
	dentry->d_fsdata = lower;
	if (d_really_is_negative(lower)) {
		err = vfs_create(MXFS_IDMAP_ARG(mnt) ldir, lower,
				 (mode & 07777) | S_IFREG, flags & O_EXCL);
		if (err)
			goto out_unlock;
		created = true;
		if (d_really_is_negative(lower)) {
			/* XFS always instantiates */
			pr_warn_ratelimited("lower create of %pd left no inode\n",
					    dentry);
			err = -EIO;
			goto out_unlock;
		}
	}
	if (created)
		inode = mxfs_get_created_inode(dir->i_sb, d_inode(lower));
	else
		inode = mxfs_get_inode(dir->i_sb, d_inode(lower));
	if (IS_ERR(inode))
		err = PTR_ERR(inode);
out_unlock:
	inode_unlock(ldir);
	if (created)
		mxfs_copy_attr(dir);
	mnt_drop_write(mnt);
	if (err)
		return err;
	res = d_splice_alias(inode, dentry);	/* a directory's alias */
	if (IS_ERR(res))
		return PTR_ERR(res);
	*resp = res;
	if (created)
		file->f_mode |= FMODE_CREATED;
	return 0;
}

/*
 * Client: open(O_CREAT) of a name not in our dcache is one FUSE CREATE
 * below (see mxfs_create_lower_file() for why), and opens our file.
 * -EEXIST if the name exists below: the caller opens it as any other.
 */
static int mxfs_client_create_open(struct inode *dir, struct dentry *dentry,
				   struct file *file, umode_t mode)
{
	struct inode *inode;
	struct file *lf;

	lf = mxfs_create_lower_file(dentry, file, mode);
	if (IS_ERR(lf))
		return PTR_ERR(lf);
	inode = mxfs_get_inode(dir->i_sb, file_inode(lf));
	if (IS_ERR(inode)) {
		fput(lf);
		return PTR_ERR(inode);
	}
	/* an in-lookup dentry is ours alone: set its lower once */
	dentry->d_fsdata = dget(lf->f_path.dentry);
	d_add(dentry, inode);
	mxfs_copy_attr(dir);
	return mxfs_finish_created(file, dentry, lf);
}

/*
 * Opens of names not in our dcache (and of cached negative ones).  An
 * O_CREAT open of a new name is the role's create_open above; the rest
 * is what the VFS does without ->atomic_open: look up, create if still
 * negative and O_CREAT, and let the VFS open.
 */
static int mxfs_atomic_open(struct inode *dir, struct dentry *dentry,
			    struct file *file, unsigned int flags,
			    umode_t mode)
{
	struct dentry *res = NULL;
	int err;

	err = mxfs_check(dir->i_sb);
	if (err)
		return err;
	if ((flags & O_CREAT) && d_in_lookup(dentry) &&
	    !mxfs_is_reserved_name(dentry->d_parent, dentry->d_name.name,
				   dentry->d_name.len)) {
		if (!mxfs_is_client(dir->i_sb)) {
			err = mxfs_owner_create_open(dir, dentry, file, flags,
						     mode, &res);
			return err ? err : finish_no_open(file, res);
		}
		err = mxfs_client_create_open(dir, dentry, file, mode);
		if (err != -EEXIST || (flags & O_EXCL))
			return err;
		/* it exists: open it as any existing file */
	}
	if (d_in_lookup(dentry)) {
		res = mxfs_lookup(dir, dentry, 0);
		if (IS_ERR(res))
			return PTR_ERR(res);
		if (res)
			dentry = res;
	}
	if ((flags & O_CREAT) && d_really_is_negative(dentry)) {
		/* a cached negative dentry, or the name went meanwhile */
		err = mxfs_new_object(dir, dentry, MXFS_NEW_CREATE,
				      (mode & 07777) | S_IFREG, 0, NULL,
				      flags & O_EXCL);
		if (err) {
			dput(res);
			return err;
		}
		file->f_mode |= FMODE_CREATED;
	}
	return finish_no_open(file, res);
}

static int mxfs_mkdir(MXFS_IDMAP_PARAM struct inode *dir,
		      struct dentry *dentry, umode_t mode)
{
	return mxfs_new_object(dir, dentry, MXFS_NEW_MKDIR,
			       (mode & 07777) | S_IFDIR, 0, NULL, false);
}

static int mxfs_mknod(MXFS_IDMAP_PARAM struct inode *dir,
		      struct dentry *dentry, umode_t mode, dev_t rdev)
{
	return mxfs_new_object(dir, dentry, MXFS_NEW_MKNOD, mode, rdev, NULL,
			       false);
}

static int mxfs_symlink(MXFS_IDMAP_PARAM struct inode *dir,
			struct dentry *dentry, const char *symname)
{
	return mxfs_new_object(dir, dentry, MXFS_NEW_SYMLINK, S_IFLNK | 0777,
			       0, symname, false);
}

static int mxfs_link(struct dentry *old_dentry, struct inode *dir,
		     struct dentry *new_dentry)
{
	struct vfsmount *mnt = mxfs_lower_mnt(dir->i_sb);
	struct dentry *lold = mxfs_lower_dentry(old_dentry);
	struct inode *inode = d_inode(old_dentry);
	struct dentry *lparent, *lnew;
	int err;

	err = mxfs_check(dir->i_sb);
	if (err)
		return err;
	if (!lold || d_really_is_negative(lold))
		return -ESTALE;
	err = mnt_want_write(mnt);
	if (err)
		return err;
	err = mxfs_lock_lower_parent(new_dentry, &lparent);
	if (err)
		goto out_drop_write;
	lnew = mxfs_lower_dentry(new_dentry);
	err = vfs_link(lold, MXFS_IDMAP_ARG(mnt) d_inode(lparent), lnew, NULL);
	if (!err) {
		if (d_inode(lnew) == d_inode(lold)) {
			ihold(inode);
			d_instantiate(new_dentry, inode);
		} else {
			err = -EIO;
			d_drop(new_dentry);
		}
	}
	inode_unlock(d_inode(lparent));
	mxfs_copy_attr(inode);
	mxfs_copy_attr(dir);
out_drop_write:
	mnt_drop_write(mnt);
	return err;
}

static int mxfs_remove(struct inode *dir, struct dentry *dentry, bool is_dir)
{
	struct vfsmount *mnt = mxfs_lower_mnt(dir->i_sb);
	struct inode *inode = d_inode(dentry);
	struct dentry *lparent, *lower;
	int err;

	err = mxfs_check(dir->i_sb);
	if (err)
		return err;
	err = mnt_want_write(mnt);
	if (err)
		return err;
	err = mxfs_lock_lower_parent(dentry, &lparent);
	if (err)
		goto out_drop_write;
	lower = dget(mxfs_lower_dentry(dentry));
	if (is_dir)
		err = vfs_rmdir(MXFS_IDMAP_ARG(mnt) d_inode(lparent), lower);
	else
		err = vfs_unlink(MXFS_IDMAP_ARG(mnt) d_inode(lparent), lower,
				 NULL);
	inode_unlock(d_inode(lparent));
	dput(lower);
	mxfs_copy_attr(dir);
	if (!err) {
		mxfs_copy_attr(inode);
		if (is_dir)
			clear_nlink(inode);
		/* the lower dentry is now unhashed: never reuse this one */
		d_drop(dentry);
	}
out_drop_write:
	mnt_drop_write(mnt);
	return err;
}

static int mxfs_unlink(struct inode *dir, struct dentry *dentry)
{
	return mxfs_remove(dir, dentry, false);
}

static int mxfs_rmdir(struct inode *dir, struct dentry *dentry)
{
	return mxfs_remove(dir, dentry, true);
}

static int mxfs_rename(MXFS_IDMAP_PARAM struct inode *old_dir,
		       struct dentry *old, struct inode *new_dir,
		       struct dentry *new, unsigned int flags)
{
	struct vfsmount *mnt = mxfs_lower_mnt(old_dir->i_sb);
	struct dentry *lold = mxfs_lower_dentry(old);
	struct dentry *lnew = mxfs_lower_dentry(new);
	struct dentry *lold_dir = mxfs_lower_dentry(old->d_parent);
	struct dentry *lnew_dir = mxfs_lower_dentry(new->d_parent);
	struct dentry *trap;
	int err;

	err = mxfs_check(old_dir->i_sb);
	if (err)
		return err;
	if (mxfs_is_reserved_name(new->d_parent, new->d_name.name,
				  new->d_name.len) ||
	    mxfs_is_reserved_name(old->d_parent, old->d_name.name,
				  old->d_name.len))
		return -EPERM;
	if (!lold || !lnew || !lold_dir || !lnew_dir)
		return -ESTALE;

	err = mnt_want_write(mnt);
	if (err)
		return err;
	trap = lock_rename(lnew_dir, lold_dir);
	if (IS_ERR(trap)) {
		err = PTR_ERR(trap);
		goto out_drop_write;
	}
	err = -ESTALE;
	if (lold->d_parent != lold_dir || d_unhashed(lold) ||
	    lnew->d_parent != lnew_dir || d_unhashed(lnew))
		goto out_unlock;
	err = -EINVAL;
	if (lold == trap)
		goto out_unlock;
	err = -ENOTEMPTY;
	if (lnew == trap)
		goto out_unlock;

	dget(lold);
	dget(lnew);
	err = mxfs_vfs_rename(mnt, d_inode(lold_dir), lold, d_inode(lnew_dir),
			      lnew, flags);
	dput(lnew);
	dput(lold);
out_unlock:
	unlock_rename(lnew_dir, lold_dir);
	mxfs_copy_attr(old_dir);
	if (new_dir != old_dir)
		mxfs_copy_attr(new_dir);
	if (d_really_is_positive(old))
		mxfs_copy_attr(d_inode(old));
	if (d_really_is_positive(new))
		mxfs_copy_attr(d_inode(new));
out_drop_write:
	mnt_drop_write(mnt);
	return err;
}

const struct inode_operations mxfs_dir_iops = {
	.lookup = mxfs_lookup,
	.create = mxfs_create,
	.atomic_open = mxfs_atomic_open,
	.link = mxfs_link,
	.unlink = mxfs_unlink,
	.symlink = mxfs_symlink,
	.mkdir = mxfs_mkdir,
	.rmdir = mxfs_rmdir,
	.mknod = mxfs_mknod,
	.rename = mxfs_rename,
	.tmpfile = mxfs_tmpfile,
	.permission = mxfs_permission,
	.getattr = mxfs_getattr,
	.setattr = mxfs_setattr,
	.listxattr = mxfs_listxattr,
	MXFS_ACL_IOPS
	MXFS_FILEATTR_IOPS
};

/* ---- readdir */

struct mxfs_readdir {
	struct dir_context ctx;
	struct dir_context *caller;
	bool is_root;
};

static MXFS_FILLDIR_RET mxfs_filldir(struct dir_context *ctx,
				     const char *name, int namelen,
				     loff_t offset, u64 ino,
				     unsigned int d_type)
{
	struct mxfs_readdir *rd = container_of(ctx, struct mxfs_readdir, ctx);

	if (rd->is_root && namelen == sizeof(MXFS_RESERVED_NAME) - 1 &&
	    !memcmp(name, MXFS_RESERVED_NAME, namelen))
		return MXFS_FILLDIR_CONTINUE;
	rd->caller->pos = ctx->pos;
	return rd->caller->actor(rd->caller, name, namelen, offset, ino,
				 d_type);
}

/*
 * Positions are the lower filesystem's own directory cookies, so
 * telldir()/seekdir() keep working across calls and reopenings.
 */
static int mxfs_iterate(struct file *file, struct dir_context *ctx)
{
	struct dentry *dentry = file->f_path.dentry;
	struct file *lower = file->private_data;
	struct mxfs_readdir rd = {
		.ctx.actor = mxfs_filldir,
		.caller = ctx,
		.is_root = dentry == dentry->d_sb->s_root,
	};
	int err;

	err = mxfs_check(dentry->d_sb);
	if (err)
		return err;
	lower->f_pos = ctx->pos;
	err = iterate_dir(lower, &rd.ctx);
	ctx->pos = lower->f_pos;
	return err;
}

const struct file_operations mxfs_dir_fops = {
	.owner = THIS_MODULE,
	.open = mxfs_open,
	.release = mxfs_release,
	.llseek = mxfs_llseek,
	.read = generic_read_dir,
	.iterate_shared = mxfs_iterate,
	.fsync = mxfs_fsync,
};
