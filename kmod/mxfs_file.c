// SPDX-License-Identifier: GPL-2.0-only
/*
 * MXFS open files.  Each open mxfs file holds an open lower file (a
 * backing file, so /proc/PID/maps shows the mxfs path) and passes reads,
 * writes (buffered and O_DIRECT), splice, mmap, fsync, fallocate, fadvise
 * and llseek (SEEK_DATA/SEEK_HOLE included) to it.  All data pages live
 * in the lower inode's page cache, so read/write/mmap stay coherent.  On
 * the owner a regular file's lower file is opened at its first use
 * (mxfs_lower_file()), so an open and close with no I/O in between opens
 * nothing below.
 *
 * flock() and fcntl() locks on regular files are the cluster's: see
 * mxfs_locks.c.  Directories' locks stay on our inode (node-local).
 *
 * A client's data goes to the owner uncached (FUSE direct I/O); only its
 * read-only mappings and MAP_PRIVATE pages sit in the FUSE inode's page
 * cache.  mxfs_client_drop_pages() keeps them current: after this node's
 * writes, at mmap and when a lock is granted; FUSE drops them itself when
 * an open or a getattr finds the file changed (AUTO_INVAL_DATA).
 */
#include "mxfs_internal.h"	/* first: it defines pr_fmt */
#include <linux/uio.h>
#include <linux/fadvise.h>
#include <linux/falloc.h>
#include <linux/pagemap.h>

/* Flags that fcntl(F_SETFL) may change after open. */
#define MXFS_SETFL_MASK (O_APPEND | O_NONBLOCK | O_NDELAY | O_DIRECT | O_NOATIME)

/*
 * Creation and truncation happened on our file: the lower open does
 * neither.  __O_TMPFILE stays in an O_TMPFILE file's f_flags; a client's
 * FUSE OPEN must not carry it (the owner refuses it: EINVAL).
 */
static int mxfs_lower_flags(struct file *file)
{
	return READ_ONCE(file->f_flags) &
	       ~(O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC | __O_TMPFILE);
}

/* Open the lower file of @file as its opener (f_cred). */
static struct file *mxfs_open_lower(struct file *file)
{
	struct path lower;

	mxfs_lower_path(file->f_path.dentry, &lower);
	if (!lower.dentry || d_really_is_negative(lower.dentry))
		return ERR_PTR(-ESTALE);
	if (d_is_dir(lower.dentry))
		return dentry_open(&lower, mxfs_lower_flags(file), file->f_cred);
	return mxfs_open_backing(file, mxfs_lower_flags(file), &lower,
				 file->f_cred);
}

/*
 * The open lower file of @file, opened now if this is its first use.  Two
 * first uses at once both open one; the loser drops its own.
 */
struct file *mxfs_lower_file(struct file *file)
{
	struct file *lf = READ_ONCE(file->private_data);
	struct file *old;

	if (likely(lf))
		return lf;
	lf = mxfs_open_lower(file);
	if (IS_ERR(lf))
		return lf;
	old = cmpxchg(&file->private_data, NULL, lf);
	if (old) {
		fput(lf);
		return old;
	}
	return lf;
}

/* mxfs_lower_file(), or EIO once the mount is dead (mxfs_check()). */
struct file *mxfs_live_lower_file(struct file *file)
{
	int err = mxfs_check(file_inode(file)->i_sb);

	return err ? ERR_PTR(err) : mxfs_lower_file(file);
}

int mxfs_open(struct inode *inode, struct file *file)
{
	struct dentry *lower = mxfs_lower_dentry(file->f_path.dentry);
	struct file *lf;
	int err;

	err = mxfs_check(inode->i_sb);
	if (err)
		return err;

	/*
	 * An owner opens a regular file's XFS file on first use: an open
	 * that does no I/O (a create, touch, a file only fstat'ed) then costs
	 * one struct file, not two.  XFS's open checks nothing that ours has
	 * not (but a shut-down XFS, whose EIO then comes at first use).  A
	 * client opens at once: its FUSE open is the owner's own check.  And
	 * O_DIRECT needs the lower file's answer at open.
	 */
	if (S_ISREG(inode->i_mode) && !mxfs_is_client(inode->i_sb) &&
	    !(file->f_flags & O_DIRECT)) {
		if (!lower || d_really_is_negative(lower))
			return -ESTALE;
		mxfs_set_xfs_fmode(file);
		return generic_file_open(inode, file);
	}
	lf = mxfs_open_lower(file);
	if (IS_ERR(lf))
		return PTR_ERR(lf);
	file->private_data = lf;
	mxfs_copy_fmode(file, lf);
	return 0;
}

/*
 * A client's open(O_CREAT) of a name it has no dentry for: create and open
 * the lower file in one step, as FUSE's own atomic_open does (one FUSE
 * CREATE, which the owner runs as one open(O_CREAT) for the creator).  A
 * MKNOD and then an OPEN would have the owner check that OPEN against the
 * new file's mode, and open(O_CREAT | O_RDWR, 0) must succeed.  With O_EXCL
 * below: a name that exists (another node's file, a symlink) is -EEXIST
 * and the caller opens it the usual way.  The lower file is FUSE's own,
 * not a backing file; runs as the opener (current, @file's f_cred).
 */
struct file *mxfs_create_lower_file(struct dentry *dentry, struct file *file,
				    umode_t mode)
{
	struct path lparent = {
		.mnt = mxfs_lower_mnt(dentry->d_sb),
		.dentry = mxfs_lower_dentry(dentry->d_parent),
	};

	if (!lparent.dentry)
		return ERR_PTR(-ESTALE);
	/* d_name is stable: the VFS holds our parent's lock for O_CREAT */
	return mxfs_file_open_at(&lparent, dentry->d_name.name,
				 mxfs_lower_flags(file) | O_CREAT | O_EXCL,
				 mode);
}

/* finish_open()'s ->open for mxfs_finish_created(): @file has its lower. */
static int mxfs_open_created(struct inode *inode, struct file *file)
{
	mxfs_copy_fmode(file, file->private_data);
	return 0;
}

/*
 * Open @file on @dentry, whose file this open created below as @lf
 * (mxfs_create_lower_file()).  Consumes @lf.
 */
int mxfs_finish_created(struct file *file, struct dentry *dentry,
			struct file *lf)
{
	int err;

	file->f_mode |= FMODE_CREATED;
	file->private_data = lf;
	err = finish_open(file, dentry, mxfs_open_created);
	/* once FMODE_OPENED is set, mxfs_release() drops @lf */
	if (err && !(file->f_mode & FMODE_OPENED)) {
		file->private_data = NULL;
		fput(lf);
	}
	return err;
}

int mxfs_release(struct inode *inode, struct file *file)
{
	struct file *lf = file->private_data;

	if (lf)
		fput(lf);
	file->private_data = NULL;
	return 0;
}

/* Carry fcntl(F_SETFL) changes of our file over to the lower one. */
static int mxfs_sync_flags(struct file *file, struct file *lf)
{
	unsigned int flags = READ_ONCE(file->f_flags) & MXFS_SETFL_MASK;

	if (((flags ^ lf->f_flags) & MXFS_SETFL_MASK) == 0)
		return 0;
	if ((flags & O_DIRECT) && !mxfs_can_odirect(lf))
		return -EINVAL;
	if (lf->f_op->check_flags) {
		int err = lf->f_op->check_flags(flags);

		if (err)
			return err;
	}
	spin_lock(&lf->f_lock);
	lf->f_flags = (lf->f_flags & ~MXFS_SETFL_MASK) | flags;
	spin_unlock(&lf->f_lock);
	return 0;
}

static rwf_t mxfs_iocb_to_rwf(int ki_flags)
{
	rwf_t flags = 0;

	if (ki_flags & IOCB_DSYNC)
		flags |= RWF_DSYNC;
	if (ki_flags & IOCB_SYNC)
		flags |= RWF_SYNC;
	if (ki_flags & IOCB_APPEND)
		flags |= RWF_APPEND;
	return flags;
}

static ssize_t mxfs_read_iter(struct kiocb *iocb, struct iov_iter *iter)
{
	struct file *file = iocb->ki_filp;
	struct file *lf;
	ssize_t ret;

	ret = mxfs_check(file_inode(file)->i_sb);
	if (ret)
		return ret;
	if (!iov_iter_count(iter))
		return 0;
	lf = mxfs_lower_file(file);
	if (IS_ERR(lf))
		return PTR_ERR(lf);
	ret = mxfs_sync_flags(file, lf);
	if (ret)
		return ret;
	return vfs_iter_read(lf, iter, &iocb->ki_pos,
			     mxfs_iocb_to_rwf(iocb->ki_flags));
}

static ssize_t mxfs_write_iter(struct kiocb *iocb, struct iov_iter *iter)
{
	struct file *file = iocb->ki_filp;
	struct inode *inode = file_inode(file);
	struct file *lf;
	ssize_t ret;

	ret = mxfs_check(inode->i_sb);
	if (ret)
		return ret;
	if (!iov_iter_count(iter))
		return 0;
	lf = mxfs_lower_file(file);
	if (IS_ERR(lf))
		return PTR_ERR(lf);

	inode_lock(inode);
	ret = mxfs_sync_flags(file, lf);
	if (!ret) {
		file_start_write(lf);
		ret = vfs_iter_write(lf, iter, &iocb->ki_pos,
				     mxfs_iocb_to_rwf(iocb->ki_flags));
		file_end_write(lf);
	}
	if (ret > 0)
		mxfs_client_drop_pages(inode, iocb->ki_pos - ret,
				       iocb->ki_pos - 1);
	/* size, times, and the mode if the write cleared set-id bits */
	mxfs_copy_attr(inode);
	inode_unlock(inode);
	return ret;
}

/*
 * Drop a client's cached pages of @inode's file in [@start, @end] (bytes,
 * inclusive), so that its mappings fault in the owner's current data.
 * Nothing to do on the owner, whose page cache is XFS's own, nor when the
 * FUSE inode caches nothing.  A page being read in is in the cache, locked,
 * before its READ goes out: it is waited for and dropped too.  Only clean
 * pages can be cached (nothing maps them writable), so the drop cannot
 * fail but for a racing fault, whose page is then current anyway.
 */
void mxfs_client_drop_pages(struct inode *inode, loff_t start, loff_t end)
{
	struct inode *lower = mxfs_lower_inode(inode);
	struct address_space *mapping;

	if (!mxfs_is_client(inode->i_sb) || !lower || start > end)
		return;
	mapping = lower->i_mapping;
	if (!READ_ONCE(mapping->nrpages))
		return;
	invalidate_inode_pages2_range(mapping, start >> PAGE_SHIFT,
				      end >> PAGE_SHIFT);
}

/*
 * A client's shared mappings.  Its writes go to the owner uncached, and
 * stores through a shared writable mapping (which other nodes must see)
 * would need client caching: mmap gives ENODEV (what mmap returns when a
 * filesystem does not support the mapping, and what FUSE itself returns for
 * shared mappings of direct-I/O files), logged once per mount.
 *
 * A read-only shared mapping is served from the FUSE inode's page cache
 * (generic_file_readonly_mmap(); FUSE's own mmap refuses every shared
 * mapping of a direct-I/O file before 6.6), made unable to become writable
 * (mprotect(PROT_WRITE) then gives EACCES), and starts from the owner's
 * current data.  It then follows this node's writes at once and other
 * nodes' writes when this node next opens or stats the file or takes a lock
 * on it: NFS's rule (README).  Private mappings are FUSE's.
 */
static int mxfs_client_shared_mmap(struct file *file,
				   struct vm_area_struct *vma, struct file *lf)
{
	struct inode *inode = file_inode(file);
	struct mxfs_sb_info *sbi = MXFS_SB(inode->i_sb);

	if (vma->vm_flags & VM_WRITE) {
		if (!test_and_set_bit(MXFS_SBI_WARNED_SHARED_MMAP, &sbi->flags))
			pr_warn_ratelimited("volume %pU: %s[%d]: shared writable mmap of %pD is not supported on a client until client caching exists; mmap returns ENODEV (logged once per mount)\n",
					    sbi->uuid, current->comm,
					    task_pid_nr(current), file);
		return -ENODEV;
	}
	mxfs_vma_clear_maywrite(vma);
	mxfs_client_drop_pages(inode, 0, LLONG_MAX);
	return mxfs_mmap_lower(file, vma, lf, generic_file_readonly_mmap);
}

static int mxfs_mmap(struct file *file, struct vm_area_struct *vma)
{
	struct file *lf = mxfs_live_lower_file(file);

	if (IS_ERR(lf))
		return PTR_ERR(lf);
	if (!lf->f_op->mmap)
		return -ENODEV;
	if (WARN_ON(file != vma->vm_file))
		return -EIO;
	if (mxfs_is_client(file_inode(file)->i_sb) &&
	    (vma->vm_flags & VM_MAYSHARE))
		return mxfs_client_shared_mmap(file, vma, lf);
	return mxfs_mmap_lower(file, vma, lf, lf->f_op->mmap);
}

int mxfs_fsync(struct file *file, loff_t start, loff_t end, int datasync)
{
	struct file *lf = mxfs_live_lower_file(file);

	if (IS_ERR(lf))
		return PTR_ERR(lf);
	return vfs_fsync_range(lf, start, end, datasync);
}

/* The fallocate modes the kernel's FUSE carries to mxfsd. */
#define MXFS_FUSE_FALLOC_MODES \
	(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)

/*
 * A client's fallocate in a mode FUSE refuses (COLLAPSE_RANGE,
 * INSERT_RANGE, UNSHARE_RANGE): the private request of mxfs_uapi.h, done
 * on the owner through this node's open file.  vfs_fallocate() on our file
 * made the checks the lower one would.
 */
static long mxfs_client_fallocate(struct file *lf, int mode, loff_t offset,
				  loff_t len)
{
	struct mxfs_fallocate_req req = {
		.offset = offset,
		.length = len,
		.mode = mode,
	};

	BUILD_BUG_ON(sizeof(req) != MXFS_FALLOCATE_SIZE);
	return __vfs_setxattr(MXFS_IDMAP_ARG(lf->f_path.mnt)
			      lf->f_path.dentry, file_inode(lf),
			      MXFS_XATTR_FALLOCATE, &req, sizeof(req), 0);
}

static long mxfs_fallocate(struct file *file, int mode, loff_t offset,
			   loff_t len)
{
	struct inode *inode = file_inode(file);
	struct file *lf = mxfs_live_lower_file(file);
	long ret;

	if (IS_ERR(lf))
		return PTR_ERR(lf);
	inode_lock(inode);
	if (mxfs_is_client(inode->i_sb) && (mode & ~MXFS_FUSE_FALLOC_MODES))
		ret = mxfs_client_fallocate(lf, mode, offset, len);
	else
		ret = vfs_fallocate(lf, mode, offset, len);
	/* to EOF: collapse and insert move all the data after @offset */
	if (!ret)
		mxfs_client_drop_pages(inode, offset, LLONG_MAX);
	mxfs_copy_attr(inode);
	inode_unlock(inode);
	return ret;
}

static int mxfs_fadvise(struct file *file, loff_t offset, loff_t len,
			int advice)
{
	struct file *lf = mxfs_live_lower_file(file);

	if (IS_ERR(lf))
		return PTR_ERR(lf);
	return vfs_fadvise(lf, offset, len, advice);
}

/*
 * llseek through the lower file, so that SEEK_DATA/SEEK_HOLE (and, for
 * directories, the lower cookies) are the lower filesystem's.
 */
loff_t mxfs_llseek(struct file *file, loff_t offset, int whence)
{
	struct inode *inode = file_inode(file);
	struct file *lf;
	loff_t ret;

	ret = mxfs_check(inode->i_sb);
	if (ret)
		return ret;
	/* lseek(fd, 0, SEEK_CUR) only reads the position */
	if (whence == SEEK_CUR && offset == 0)
		return file->f_pos;
	lf = mxfs_lower_file(file);
	if (IS_ERR(lf))
		return PTR_ERR(lf);

	inode_lock(inode);
	lf->f_pos = file->f_pos;
	ret = vfs_llseek(lf, offset, whence);
	file->f_pos = lf->f_pos;
	inode_unlock(inode);
	return ret;
}

/*
 * A close of a FUSE client's file tells mxfsd (FLUSH).  The closer's
 * locks are ours, on our inode: the VFS drops them after this.
 */
static int mxfs_flush(struct file *file, fl_owner_t id)
{
	struct file *lf = READ_ONCE(file->private_data);

	if (lf && lf->f_op->flush)
		return lf->f_op->flush(lf, id);
	return 0;
}

const struct file_operations mxfs_file_fops = {
	.owner = THIS_MODULE,
	.open = mxfs_open,
	.release = mxfs_release,
	.flush = mxfs_flush,
	.llseek = mxfs_llseek,
	.read_iter = mxfs_read_iter,
	.write_iter = mxfs_write_iter,
	.splice_read = MXFS_SPLICE_READ,
	.splice_write = iter_file_splice_write,
	.mmap = mxfs_mmap,
	.fsync = mxfs_fsync,
	.fallocate = mxfs_fallocate,
	.fadvise = mxfs_fadvise,
	.lock = mxfs_posix_lock,
	.flock = mxfs_flock_lock,
};

/* For the O_DIRECT checks that the VFS makes on our own mapping. */
const struct address_space_operations mxfs_aops = {
	.direct_IO = noop_direct_IO,
};
