/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Every kernel-version difference MXFS meets lives here, nowhere else.
 *
 * Built and checked against Debian's 5.10 (bullseye), 6.1 (bookworm) and
 * 6.12 (bookworm-backports) headers.  The version cut-offs below are the
 * upstream releases where each interface changed; kernels between the
 * three checked ones are expected to work but are not verified.
 *
 * Included at the end of mxfs_internal.h, so it may use its declarations.
 */
#ifndef _MXFS_COMPAT_H
#define _MXFS_COMPAT_H

#include <linux/version.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/file.h>
#include <linux/namei.h>
#include <linux/xattr.h>
#include <linux/exportfs.h>
#include <linux/posix_acl.h>
#include <linux/posix_acl_xattr.h>
#include <linux/splice.h>
#include <linux/cred.h>

#define MXFS_KV(a, b, c) (LINUX_VERSION_CODE >= KERNEL_VERSION(a, b, c))

/*
 * ---- File locks.  6.3 moved their declarations to <linux/filelock.h>;
 * 6.9 moved the fields every kind of lock shares into struct
 * file_lock_core (fl->c.flc_owner, ...).  MXFS_FL(fl, owner) names one;
 * MXFS_FL_MEMBER(list) is the member for list_for_each_entry().
 */
#if MXFS_KV(6, 3, 0)
#include <linux/filelock.h>
#endif
#if MXFS_KV(6, 9, 0)
#define MXFS_FL(fl, field) ((fl)->c.flc_##field)
#define MXFS_FL_MEMBER(field) c.flc_##field
#else
#define MXFS_FL(fl, field) ((fl)->fl_##field)
#define MXFS_FL_MEMBER(field) fl_##field
#endif

/* get_unaligned_be32() and friends moved to <linux/unaligned.h> in 6.12 */
#if MXFS_KV(6, 12, 0)
#include <linux/unaligned.h>
#else
#include <asm/unaligned.h>
#endif

/*
 * ---- Inode allocation. From 5.18 an inode must come from alloc_inode_sb()
 * so the superblock's memcg-aware inode LRU has a list for the memcg the
 * inode is charged to; a plain kmem_cache_alloc() of an SLAB_ACCOUNT cache
 * oopses in list_lru_add() when the inode is later cached on the LRU.
 */
#if MXFS_KV(5, 18, 0)
#define mxfs_alloc_inode_sb(sb, cache, gfp) alloc_inode_sb(sb, cache, gfp)
#else
#define mxfs_alloc_inode_sb(sb, cache, gfp) kmem_cache_alloc(cache, gfp)
#endif

/* ---- ID-mapped mounts: nothing (5.10), user_namespace (5.12), mnt_idmap (6.3) */
#if MXFS_KV(6, 3, 0)
#define MXFS_IDMAP_PARAM struct mnt_idmap *idmap,
#define MXFS_IDMAP_ARG(mnt) mnt_idmap(mnt),
#elif MXFS_KV(5, 12, 0)
#define MXFS_IDMAP_PARAM struct user_namespace *idmap,
#define MXFS_IDMAP_ARG(mnt) mnt_user_ns(mnt),
#else
#define MXFS_IDMAP_PARAM
#define MXFS_IDMAP_ARG(mnt)
#endif

static inline int mxfs_vfs_rename(struct vfsmount *mnt, struct inode *old_dir,
				  struct dentry *old, struct inode *new_dir,
				  struct dentry *new, unsigned int flags)
{
	struct renamedata rd = {
#if MXFS_KV(6, 3, 0)
		.old_mnt_idmap = mnt_idmap(mnt),
		.new_mnt_idmap = mnt_idmap(mnt),
#elif MXFS_KV(5, 12, 0)
		.old_mnt_userns = mnt_user_ns(mnt),
		.new_mnt_userns = mnt_user_ns(mnt),
#endif
		.old_dir = old_dir,
		.old_dentry = old,
		.new_dir = new_dir,
		.new_dentry = new,
		.flags = flags,
	};

	return vfs_rename(&rd);
}

/* ---- readdir actors return int (5.10) or bool (6.1+) */
#if MXFS_KV(6, 1, 0)
#define MXFS_FILLDIR_RET bool
#define MXFS_FILLDIR_CONTINUE true
#else
#define MXFS_FILLDIR_RET int
#define MXFS_FILLDIR_CONTINUE 0
#endif

/* ---- open the lower file that backs an open mxfs file, as @cred */
#if MXFS_KV(6, 12, 0)
#include <linux/backing-file.h>
static inline struct file *mxfs_open_backing(struct file *file, int flags,
					     const struct path *lower,
					     const struct cred *cred)
{
	return backing_file_open(file, flags, lower, cred);
}
#elif MXFS_KV(6, 6, 0)
#include <linux/backing-file.h>
static inline struct file *mxfs_open_backing(struct file *file, int flags,
					     const struct path *lower,
					     const struct cred *cred)
{
	return backing_file_open(&file->f_path, flags, lower, cred);
}
#else
static inline struct file *mxfs_open_backing(struct file *file, int flags,
					     const struct path *lower,
					     const struct cred *cred)
{
	return open_with_fake_path(&file->f_path, flags, d_inode(lower->dentry),
				   cred);
}

/*
 * A fake-path backing file has the mxfs dentry in f_path and the XFS inode
 * as f_inode; the lower filesystem finds its own dentry with file_dentry(),
 * i.e. d_real().  Without it XFS (fallocate, for one) takes the mxfs
 * dentry for an XFS one.  From 6.6 backing files carry the real path and
 * d_real() is not needed.
 */
static inline struct dentry *mxfs_d_real(struct dentry *dentry,
					 const struct inode *inode)
{
	struct dentry *lower;

	if (!d_is_reg(dentry) || (inode && d_inode(dentry) == inode))
		return dentry;
	lower = mxfs_lower_dentry(dentry);
	if (!lower)
		return dentry;
	return d_real(lower, inode);
}
#define MXFS_D_REAL_OP .d_real = mxfs_d_real,
#endif
#ifndef MXFS_D_REAL_OP
#define MXFS_D_REAL_OP
#endif

/* ---- open a name under a lower directory (5.10: dentry and mount apart) */
static inline struct file *mxfs_file_open_at(const struct path *dir,
					     const char *name, int flags,
					     umode_t mode)
{
#if MXFS_KV(5, 12, 0)
	return file_open_root(dir, name, flags, mode);
#else
	return file_open_root(dir->dentry, dir->mnt, name, flags, mode);
#endif
}

/* O_DIRECT: 6.0+ needs FMODE_CAN_ODIRECT on the mxfs file too. */
static inline void mxfs_copy_fmode(struct file *file, struct file *lower)
{
#ifdef FMODE_CAN_ODIRECT
	if (lower->f_mode & FMODE_CAN_ODIRECT)
		file->f_mode |= FMODE_CAN_ODIRECT;
#endif
}

/*
 * An owner's regular file whose XFS file is not open yet (mxfs_open): XFS's
 * open always allows O_DIRECT, so say so now, for fcntl(F_SETFL, O_DIRECT).
 */
static inline void mxfs_set_xfs_fmode(struct file *file)
{
#ifdef FMODE_CAN_ODIRECT
	file->f_mode |= FMODE_CAN_ODIRECT;
#endif
}

static inline bool mxfs_can_odirect(struct file *lower)
{
#ifdef FMODE_CAN_ODIRECT
	return lower->f_mode & FMODE_CAN_ODIRECT;
#else
	return lower->f_mapping->a_ops && lower->f_mapping->a_ops->direct_IO;
#endif
}

/*
 * ---- mmap: hand the VMA to the lower file (vma_set_file from 5.11) and
 * map it there with @mmap (the lower file's own, or a generic one).
 */
static inline int mxfs_mmap_lower(struct file *file, struct vm_area_struct *vma,
				  struct file *lower,
				  int (*mmap)(struct file *,
					      struct vm_area_struct *))
{
#if MXFS_KV(5, 11, 0)
	vma_set_file(vma, lower);
	return mmap(vma->vm_file, vma);
#else
	int ret;

	vma->vm_file = get_file(lower);
	ret = mmap(vma->vm_file, vma);
	if (ret)
		fput(lower);	/* the caller drops its reference on @file */
	else
		fput(file);	/* the VMA no longer refers to @file */
	return ret;
#endif
}

/*
 * ---- VMA flags: set through vm_flags_clear() from 6.3 (vm_flags became
 * const; the helper also takes the per-VMA lock).  Called from ->mmap,
 * with mmap_lock held for writing.
 */
static inline void mxfs_vma_clear_maywrite(struct vm_area_struct *vma)
{
#if MXFS_KV(6, 3, 0)
	vm_flags_clear(vma, VM_MAYWRITE);
#else
	vma->vm_flags &= ~VM_MAYWRITE;
#endif
}

/* ---- splice_read: generic_file_splice_read went away in 6.5 */
#if MXFS_KV(6, 5, 0)
static inline ssize_t mxfs_splice_read(struct file *in, loff_t *ppos,
				       struct pipe_inode_info *pipe,
				       size_t len, unsigned int flags)
{
	struct file *lower = mxfs_live_lower_file(in);

	if (IS_ERR(lower))
		return PTR_ERR(lower);
	return vfs_splice_read(lower, ppos, pipe, len, flags);
}
#define MXFS_SPLICE_READ mxfs_splice_read
#else
#define MXFS_SPLICE_READ generic_file_splice_read
#endif

/* ---- file handles: exportfs_encode_inode_fh() grew a flags argument (6.5) */
static inline int mxfs_encode_inode_fh(struct inode *inode, struct fid *fid,
				       int *max_len, struct inode *parent)
{
#if MXFS_KV(6, 5, 0)
	return exportfs_encode_inode_fh(inode, fid, max_len, parent,
					parent ? EXPORT_FH_CONNECTABLE : 0);
#else
	return exportfs_encode_inode_fh(inode, fid, max_len, parent);
#endif
}

/* ---- O_TMPFILE: ->tmpfile got a struct file in 6.1 */
static inline void mxfs_tmpfile_link_count(struct inode *inode)
{
	/* d_tmpfile() drops one link; the new lower inode already has none. */
	if (inode->i_nlink == 0)
		set_nlink(inode, 1);
}

#if MXFS_KV(6, 1, 0)
static inline struct file *mxfs_lower_tmpfile_open(struct vfsmount *mnt,
						   const struct path *parent,
						   umode_t mode, int flags)
{
#if MXFS_KV(6, 5, 0)
	return kernel_tmpfile_open(mnt_idmap(mnt), parent, mode, flags,
				   current_cred());
#elif MXFS_KV(6, 3, 0)
	return vfs_tmpfile_open(mnt_idmap(mnt), parent, mode, flags,
				current_cred());
#else
	return vfs_tmpfile_open(mnt_user_ns(mnt), parent, mode, flags,
				current_cred());
#endif
}

static inline int mxfs_tmpfile(MXFS_IDMAP_PARAM struct inode *dir,
			       struct file *file, umode_t mode)
{
	struct super_block *sb = dir->i_sb;
	struct dentry *dentry = file->f_path.dentry;
	struct vfsmount *mnt = mxfs_lower_mnt(sb);
	struct path parent = { .mnt = mnt };
	struct file *lower_file;
	struct dentry *lower;
	struct inode *inode;
	int err;

	err = mxfs_check(sb);
	if (err)
		return err;
	parent.dentry = mxfs_lower_dentry(dentry->d_parent);
	if (!parent.dentry)
		return -ENOENT;
	err = mnt_want_write(mnt);
	if (err)
		return err;
	lower_file = mxfs_lower_tmpfile_open(mnt, &parent, mode, file->f_flags);
	mnt_drop_write(mnt);
	if (IS_ERR(lower_file))
		return PTR_ERR(lower_file);

	lower = lower_file->f_path.dentry;
	inode = mxfs_get_inode(sb, d_inode(lower));
	if (IS_ERR(inode)) {
		fput(lower_file);
		return PTR_ERR(inode);
	}
	dentry->d_fsdata = dget(lower);
	mxfs_tmpfile_link_count(inode);
	d_tmpfile(file, inode);
	/* mxfs_open() opens its own backing file on the lower dentry. */
	err = finish_open(file, dentry, NULL);
	fput(lower_file);
	return err;
}
#else
static inline int mxfs_tmpfile(struct inode *dir, struct dentry *dentry,
			       umode_t mode)
{
	struct super_block *sb = dir->i_sb;
	struct vfsmount *mnt = mxfs_lower_mnt(sb);
	struct dentry *lparent = mxfs_lower_dentry(dentry->d_parent);
	struct dentry *lower;
	struct inode *inode;
	int err;

	err = mxfs_check(sb);
	if (err)
		return err;
	if (!lparent)
		return -ENOENT;
	err = mnt_want_write(mnt);
	if (err)
		return err;
	/* open_flag 0: the lower stays linkable; O_EXCL is enforced above us */
	lower = vfs_tmpfile(lparent, mode, 0);
	mnt_drop_write(mnt);
	if (IS_ERR(lower))
		return PTR_ERR(lower);
	inode = mxfs_get_inode(sb, d_inode(lower));
	if (IS_ERR(inode)) {
		dput(lower);
		return PTR_ERR(inode);
	}
	dentry->d_fsdata = lower;
	mxfs_tmpfile_link_count(inode);
	d_tmpfile(dentry, inode);
	return 0;
}
#endif

/* ---- POSIX ACLs: inode operations from 6.2, xattr handlers before */
#if MXFS_KV(6, 2, 0)
static inline const char *mxfs_acl_name(int type)
{
	return type == ACL_TYPE_ACCESS ? XATTR_NAME_POSIX_ACL_ACCESS :
					 XATTR_NAME_POSIX_ACL_DEFAULT;
}

static inline struct posix_acl *mxfs_get_acl(MXFS_IDMAP_PARAM
					     struct dentry *dentry, int type)
{
	struct dentry *lower = mxfs_lower_dentry(dentry);
	struct posix_acl *acl;
	int err;

	err = mxfs_check(dentry->d_sb);
	if (err)
		return ERR_PTR(err);
	if (!lower)
		return ERR_PTR(-ESTALE);
	acl = vfs_get_acl(MXFS_IDMAP_ARG(mxfs_lower_mnt(dentry->d_sb)) lower,
			  mxfs_acl_name(type));
	if (acl == ERR_PTR(-ENODATA) || acl == ERR_PTR(-EOPNOTSUPP))
		return NULL;
	return acl;
}

static inline int mxfs_set_acl(MXFS_IDMAP_PARAM struct dentry *dentry,
			       struct posix_acl *acl, int type)
{
	struct vfsmount *mnt = mxfs_lower_mnt(dentry->d_sb);
	struct dentry *lower = mxfs_lower_dentry(dentry);
	int err;

	err = mxfs_check(dentry->d_sb);
	if (err)
		return err;
	if (!lower)
		return -ESTALE;
	err = mnt_want_write(mnt);
	if (err)
		return err;
	if (acl)
		err = vfs_set_acl(MXFS_IDMAP_ARG(mnt) lower,
				  mxfs_acl_name(type), acl);
	else
		err = vfs_remove_acl(MXFS_IDMAP_ARG(mnt) lower,
				     mxfs_acl_name(type));
	mnt_drop_write(mnt);
	if (!err || err == -ENODATA)
		mxfs_copy_attr(d_inode(dentry));
	if (!acl && err == -ENODATA)
		err = 0;
	return err;
}
#define MXFS_ACL_IOPS .get_acl = mxfs_get_acl, .set_acl = mxfs_set_acl,
#else
#define MXFS_ACL_IOPS
#endif

/* Our inodes never cache ACLs: the lower filesystem is the only truth. */
static inline void mxfs_inode_no_acl_cache(struct inode *inode)
{
#ifdef CONFIG_FS_POSIX_ACL
	inode->i_acl = ACL_DONT_CACHE;
	inode->i_default_acl = ACL_DONT_CACHE;
#endif
}

/* ---- chattr/lsattr (FS_IOC_[GS]ETFLAGS, FS_IOC_FS[GS]ETXATTR): fileattr from 5.13 */
#if MXFS_KV(5, 13, 0)
#include <linux/fileattr.h>
static inline int mxfs_fileattr_get(struct dentry *dentry, struct fileattr *fa)
{
	struct dentry *lower = mxfs_lower_dentry(dentry);
	int err = mxfs_check(dentry->d_sb);

	if (err)
		return err;
	if (!lower)
		return -ESTALE;
	return vfs_fileattr_get(lower, fa);
}

static inline int mxfs_fileattr_set(MXFS_IDMAP_PARAM struct dentry *dentry,
				    struct fileattr *fa)
{
	struct vfsmount *mnt = mxfs_lower_mnt(dentry->d_sb);
	struct dentry *lower = mxfs_lower_dentry(dentry);
	int err = mxfs_check(dentry->d_sb);

	if (err)
		return err;
	if (!lower)
		return -ESTALE;
	err = mnt_want_write(mnt);
	if (err)
		return err;
	err = vfs_fileattr_set(MXFS_IDMAP_ARG(mnt) lower, fa);
	mnt_drop_write(mnt);
	mxfs_copy_attr(d_inode(dentry));
	return err;
}
#define MXFS_FILEATTR_IOPS \
	.fileattr_get = mxfs_fileattr_get, .fileattr_set = mxfs_fileattr_set,
#else
/* 5.10: no fileattr interface; chattr/lsattr give ENOTTY (not forwarded). */
#define MXFS_FILEATTR_IOPS
#endif

#endif /* _MXFS_COMPAT_H */
