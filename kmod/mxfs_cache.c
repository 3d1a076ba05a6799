// SPDX-License-Identifier: GPL-2.0-only
/*
 * MXFS inode cache: allocation, lookup by lower inode, attribute copy,
 * eviction, and disconnected aliases for file handles.
 */
#include "mxfs_internal.h"	/* first: it defines pr_fmt */
#include <linux/slab.h>
#include <linux/fs_stack.h>

static struct kmem_cache *mxfs_inode_cachep;

static void mxfs_inode_init_once(void *obj)
{
	struct mxfs_inode *mi = obj;

	inode_init_once(&mi->vfs_inode);
}

int mxfs_init_inodecache(void)
{
	mxfs_inode_cachep = kmem_cache_create("mxfs_inode",
					      sizeof(struct mxfs_inode), 0,
					      SLAB_RECLAIM_ACCOUNT | SLAB_ACCOUNT,
					      mxfs_inode_init_once);
	return mxfs_inode_cachep ? 0 : -ENOMEM;
}

void mxfs_destroy_inodecache(void)
{
	/* free_inode runs after an RCU grace period */
	rcu_barrier();
	kmem_cache_destroy(mxfs_inode_cachep);
}

struct inode *mxfs_alloc_inode(struct super_block *sb)
{
	struct mxfs_inode *mi;

	mi = mxfs_alloc_inode_sb(sb, mxfs_inode_cachep, GFP_KERNEL);
	if (!mi)
		return NULL;
	mi->lower = NULL;
	return &mi->vfs_inode;
}

void mxfs_free_inode(struct inode *inode)
{
	kmem_cache_free(mxfs_inode_cachep, MXFS_I(inode));
}

void mxfs_evict_inode(struct inode *inode)
{
	struct inode *lower = MXFS_I(inode)->lower;

	truncate_inode_pages_final(&inode->i_data);
	clear_inode(inode);
	MXFS_I(inode)->lower = NULL;
	iput(lower);
}

/*
 * Refresh what the VFS checks on our inode (mode, owner, flags such as
 * S_APPEND/S_IMMUTABLE, link count, size, times) from the lower inode.
 * getattr itself always asks the lower filesystem.
 */
void mxfs_copy_attr(struct inode *inode)
{
	struct inode *lower = MXFS_I(inode)->lower;

	if (!lower)
		return;
	fsstack_copy_attr_all(inode, lower);
	fsstack_copy_inode_size(inode, lower);
	inode->i_blocks = lower->i_blocks;
}

static int mxfs_inode_test(struct inode *inode, void *data)
{
	return MXFS_I(inode)->lower == data;
}

/* Called under the inode hash lock: must not sleep. */
static int mxfs_inode_set(struct inode *inode, void *data)
{
	struct inode *lower = data;

	MXFS_I(inode)->lower = lower;
	inode->i_ino = lower->i_ino;
	ihold(lower);
	return 0;
}

/* Give a new (I_NEW) mxfs inode its type and operations from @lower. */
static struct inode *mxfs_fill_new_inode(struct inode *inode,
					 struct inode *lower)
{
	umode_t mode = lower->i_mode;

	inode->i_mode = mode;
	inode->i_generation = lower->i_generation;
	inode->i_mapping->a_ops = &mxfs_aops;
	mxfs_inode_no_acl_cache(inode);

	switch (mode & S_IFMT) {
	case S_IFREG:
		inode->i_op = &mxfs_file_iops;
		inode->i_fop = &mxfs_file_fops;
		break;
	case S_IFDIR:
		inode->i_op = &mxfs_dir_iops;
		inode->i_fop = &mxfs_dir_fops;
		break;
	case S_IFLNK:
		inode->i_op = &mxfs_symlink_iops;
		break;
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		inode->i_op = &mxfs_special_iops;
		init_special_inode(inode, mode, lower->i_rdev);
		break;
	default:
		pr_warn_ratelimited("inode %lu has unknown type %o\n",
				    lower->i_ino, mode & S_IFMT);
		iget_failed(inode);
		return ERR_PTR(-EIO);
	}
	mxfs_copy_attr(inode);
	unlock_new_inode(inode);
	return inode;
}

static int mxfs_check_lower_inode(struct super_block *sb, struct inode *lower)
{
	if (!lower)
		return -ESTALE;
	if (lower->i_sb != mxfs_lower_mnt(sb)->mnt_sb)
		return -EXDEV;
	return 0;
}

/*
 * The mxfs inode of @lower, made on first use.  Inode numbers are the
 * lower ones, so they are stable across remounts.
 */
struct inode *mxfs_get_inode(struct super_block *sb, struct inode *lower)
{
	struct inode *inode;
	int err;

	err = mxfs_check_lower_inode(sb, lower);
	if (err)
		return ERR_PTR(err);
	inode = iget5_locked(sb, lower->i_ino, mxfs_inode_test,
			     mxfs_inode_set, lower);
	if (!inode)
		return ERR_PTR(-ENOMEM);
	if (!(inode->i_state & I_NEW))
		return inode;
	return mxfs_fill_new_inode(inode, lower);
}

/*
 * mxfs_get_inode() for a @lower that this node has just created below.
 * No mxfs inode can have it yet (each holds a reference on its lower, so
 * the lower could not have been freed and made again), so insert a new
 * one at once instead of searching the hash first, as iget5_locked()
 * does: one pass over the hash per create instead of two.
 */
struct inode *mxfs_get_created_inode(struct super_block *sb,
				     struct inode *lower)
{
	struct inode *inode, *found;
	int err;

	err = mxfs_check_lower_inode(sb, lower);
	if (err)
		return ERR_PTR(err);
	inode = new_inode(sb);
	if (!inode)
		return ERR_PTR(-ENOMEM);
	found = inode_insert5(inode, lower->i_ino, mxfs_inode_test,
			      mxfs_inode_set, lower);
	if (unlikely(found != inode)) {
		/* not expected (see above); then the hashed one is it */
		iput(inode);
		return found ? found : ERR_PTR(-ENOMEM);
	}
	return mxfs_fill_new_inode(inode, lower);
}

/*
 * A (possibly disconnected) mxfs dentry for a lower dentry that came from
 * a file handle.  Consumes the reference on @lower.
 */
struct dentry *mxfs_obtain_alias(struct super_block *sb, struct dentry *lower)
{
	struct inode *inode;
	struct dentry *dentry;

	if (d_really_is_negative(lower)) {
		dput(lower);
		return ERR_PTR(-ESTALE);
	}
	inode = mxfs_get_inode(sb, d_inode(lower));
	if (IS_ERR(inode)) {
		dput(lower);
		return ERR_CAST(inode);
	}
	dentry = d_find_any_alias(inode);
	if (dentry) {
		iput(inode);
		dput(lower);
		return dentry;
	}
	dentry = d_obtain_alias(inode);		/* consumes the inode */
	if (IS_ERR(dentry)) {
		dput(lower);
		return dentry;
	}
	/* Another thread may have raced us to the same new alias. */
	if (cmpxchg(&dentry->d_fsdata, NULL, lower) != NULL)
		dput(lower);
	return dentry;
}
