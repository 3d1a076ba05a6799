// SPDX-License-Identifier: GPL-2.0-only
/*
 * MXFS file locks: fcntl record locks (OFD locks included) and flock()
 * locks on regular files, arbitrated cluster-wide by mxfsd's DLM.
 *
 * As fs/dlm/plock.c does for GFS2: each lock call goes to the daemon as
 * a FILE_LOCK message and waits for its FILE_LOCK_DONE; a granted lock
 * is then also recorded on our inode with the VFS's own lock code, so
 * that close(), exit, F_GETLK of this node's processes and /proc/locks
 * work as on a local filesystem, and the VFS's cleanup at close comes
 * back here as an unlock that goes on to the daemon.  An unlock is
 * applied here first and sent after, a lock the other way round: what
 * this node records is never more than what the DLM granted it.
 *
 * The locks live in the DLM, not in the owner's kernel, so they outlast
 * a change of owner.  A daemon that systemd restarts starts with none:
 * once it re-attaches, this node's locks are taken again from our
 * records (mxfs_reclaim_work(), as an NFS client reclaims its locks
 * after a server restart); one that another node took meanwhile is lost,
 * and the kernel log says so.
 *
 * A daemon that does not arbitrate (DAEMON_READY without FILE_LOCKS,
 * under fence=none) leaves the locks to this node's VFS, on our inode.
 */
#include "mxfs_internal.h"	/* first: it defines pr_fmt */
#include <linux/siphash.h>
#include <linux/once.h>
#include <linux/random.h>
#include <linux/fcntl.h>
#include <linux/slab.h>

/* How long a withdrawn lock call waits for the daemon's last word. */
#define MXFS_LOCK_CANCEL_WAIT (30 * HZ)

/* Lock owners go to the daemon hashed, never as kernel addresses. */
static siphash_key_t mxfs_lock_owner_key;

static u64 mxfs_lock_owner_id(const void *owner)
{
	get_random_once(&mxfs_lock_owner_key, sizeof(mxfs_lock_owner_key));
	return siphash_1u64((u64)(unsigned long)owner, &mxfs_lock_owner_key);
}

/* Fail every call still waiting for an answer.  Caller holds vol->lock. */
void mxfs_lock_calls_fail(struct mxfs_volume *vol, int err)
{
	struct mxfs_lock_call *call;

	list_for_each_entry(call, &vol->lock_calls, list) {
		if (call->answered)
			continue;
		call->answered = true;
		call->answer.err = err;
		complete(&call->done);
	}
}

/* FILE_LOCK_DONE for call @id. */
void mxfs_lock_answer(struct mxfs_volume *vol, u64 id,
		      const struct mxfs_lock_answer *ans)
{
	struct mxfs_lock_call *call;

	spin_lock(&vol->lock);
	list_for_each_entry(call, &vol->lock_calls, list) {
		if (call->id != id || call->answered)
			continue;
		call->answer = *ans;
		call->answered = true;
		complete(&call->done);
		break;
	}
	spin_unlock(&vol->lock);
}

/*
 * Send @msg and wait for its answer: 0 or a negative errno.  A LOCK
 * interrupted by a signal is withdrawn (CANCEL) and its last answer
 * awaited: a grant that came first stands (0), else -ERESTARTSYS as a
 * local wait gives.  Only a LOCK that waits (MXFS_FILE_LOCK_WAIT) is
 * interruptible; the others only by a fatal signal.
 */
static int mxfs_lock_call(struct mxfs_volume *vol, struct mxfs_lock_msg *msg,
			  struct mxfs_lock_answer *ans)
{
	struct mxfs_lock_call call = { .answered = false };
	bool interruptible = msg->op == MXFS_FILE_LOCK_LOCK &&
			     (msg->flags & MXFS_FILE_LOCK_WAIT);
	bool interrupted = false;
	u32 portid;
	int err;

	init_completion(&call.done);
	spin_lock(&vol->lock);
	portid = vol->portid;
	if (!portid || vol->dead) {
		spin_unlock(&vol->lock);
		return -ENOLCK;
	}
	call.id = ++vol->last_lock_id;
	list_add_tail(&call.list, &vol->lock_calls);
	spin_unlock(&vol->lock);

	err = mxfs_send_file_lock(vol, portid, call.id, msg);
	if (err) {
		pr_warn_ratelimited("volume %pU: a file lock call could not be sent to mxfsd (%d)\n",
				    vol->uuid, err);
		err = -ENOLCK;
		goto out;
	}
	if (interruptible)
		err = wait_for_completion_interruptible(&call.done);
	else
		err = wait_for_completion_killable(&call.done);
	interrupted = err != 0;
	if (interrupted && msg->op == MXFS_FILE_LOCK_LOCK) {
		struct mxfs_lock_msg cancel = { .op = MXFS_FILE_LOCK_CANCEL };

		if (!mxfs_send_file_lock(vol, portid, call.id, &cancel))
			wait_for_completion_timeout(&call.done,
						    MXFS_LOCK_CANCEL_WAIT);
	}
out:
	spin_lock(&vol->lock);
	list_del(&call.list);
	spin_unlock(&vol->lock);
	if (!call.answered)
		return interrupted ? -ERESTARTSYS : -ENOLCK;
	*ans = call.answer;
	if (ans->err == -EINTR)
		return -ERESTARTSYS;
	return ans->err;
}

static struct mxfs_volume *mxfs_file_volume(struct file *file)
{
	return MXFS_SB(file_inode(file)->i_sb)->vol;
}

/* Does the daemon arbitrate?  -EIO once the mount is dead. */
static int mxfs_locks_are_cluster_wide(struct mxfs_volume *vol)
{
	if (mxfs_is_dead_vol(vol))
		return -EIO;
	return READ_ONCE(vol->file_locks);
}

static void mxfs_lock_msg_init(struct mxfs_lock_msg *msg, struct file *file,
			       const void *owner, struct file_lock *fl)
{
	msg->ino = file_inode(file)->i_ino;
	msg->owner = mxfs_lock_owner_id(owner);
	msg->pid = MXFS_FL(fl, pid);
	msg->type = MXFS_FL(fl, type);
}

/*
 * An unlock, already applied to our records (always: the VFS's cleanup
 * at close must find them gone, dead mount or not), goes on to the
 * daemon.  Our records are what the application sees, so it is done
 * whatever the daemon says; a daemon that cannot be told has lost this
 * node's locks anyway.
 */
static int mxfs_send_unlock(struct mxfs_volume *vol, struct mxfs_lock_msg *msg)
{
	struct mxfs_lock_answer ans = {};
	int err;

	if (mxfs_locks_are_cluster_wide(vol) <= 0)
		return 0;
	msg->op = MXFS_FILE_LOCK_UNLOCK;
	err = mxfs_lock_call(vol, msg, &ans);
	if (err && err != -ERESTARTSYS)
		pr_warn_ratelimited("volume %pU: an unlock of inode %llu did not reach mxfsd (%d)\n",
				    vol->uuid, msg->ino, err);
	return 0;
}

/* fcntl(): F_GETLK, F_SETLK, F_SETLKW and their OFD forms. */
int mxfs_posix_lock(struct file *file, int cmd, struct file_lock *fl)
{
	struct mxfs_volume *vol = mxfs_file_volume(file);
	struct mxfs_lock_answer ans = {};
	struct mxfs_lock_msg msg = {};
	int cluster, err;

	mxfs_lock_msg_init(&msg, file, MXFS_FL(fl, owner), fl);
	msg.start = fl->fl_start;
	msg.end = fl->fl_end;
	if (!IS_GETLK(cmd) && MXFS_FL(fl, type) == F_UNLCK) {
		err = posix_lock_file(file, fl, NULL);
		return err ? err : mxfs_send_unlock(vol, &msg);
	}
	cluster = mxfs_locks_are_cluster_wide(vol);
	if (cluster < 0)
		return cluster;
	if (!cluster) {
		if (IS_GETLK(cmd)) {
			posix_test_lock(file, fl);
			return 0;
		}
		return posix_lock_file(file, fl, NULL);
	}

	if (IS_GETLK(cmd)) {
		msg.op = MXFS_FILE_LOCK_TEST;
		err = mxfs_lock_call(vol, &msg, &ans);
		if (err)
			return err;
		if (ans.type != F_RDLCK && ans.type != F_WRLCK) {
			MXFS_FL(fl, type) = F_UNLCK;
			return 0;
		}
		MXFS_FL(fl, type) = ans.type;
		fl->fl_start = ans.start;
		fl->fl_end = ans.end;
		/* another node's process: a "remote" pid, as dlm gives */
		MXFS_FL(fl, pid) = ans.node == READ_ONCE(vol->node_id) ?
				   ans.pid : -ans.pid;
		return 0;
	}

	msg.op = MXFS_FILE_LOCK_LOCK;
	if (IS_SETLKW(cmd))
		msg.flags |= MXFS_FILE_LOCK_WAIT;
	err = mxfs_lock_call(vol, &msg, &ans);
	if (err)
		return err;
	MXFS_FL(fl, flags) &= ~FL_SLEEP;
	err = posix_lock_file(file, fl, NULL);
	if (err) {
		/* granted but not recorded: give it back */
		pr_warn_ratelimited("volume %pU: a granted lock on inode %lu could not be recorded (%d); released\n",
				    vol->uuid, file_inode(file)->i_ino, err);
		msg.flags = 0;
		mxfs_send_unlock(vol, &msg);
		return err;
	}
	/* what other nodes wrote under their locks shows in our mappings */
	mxfs_client_drop_pages(file_inode(file), fl->fl_start, fl->fl_end);
	return 0;
}

/* Drop @file's flock record: what a refused flock conversion leaves. */
static void mxfs_flock_forget(struct file *file, struct file_lock *fl)
{
	struct file_lock unlock;

	locks_init_lock(&unlock);
	MXFS_FL(&unlock, flags) = FL_FLOCK;
	MXFS_FL(&unlock, type) = F_UNLCK;
	MXFS_FL(&unlock, file) = file;
	MXFS_FL(&unlock, owner) = MXFS_FL(fl, owner);
	MXFS_FL(&unlock, pid) = MXFS_FL(fl, pid);
	unlock.fl_end = OFFSET_MAX;
	locks_lock_file_wait(file, &unlock);
}

/* flock(): whole-file locks owned by the open file. */
int mxfs_flock_lock(struct file *file, int cmd, struct file_lock *fl)
{
	struct mxfs_volume *vol = mxfs_file_volume(file);
	struct mxfs_lock_answer ans = {};
	struct mxfs_lock_msg msg = {};
	int cluster, err;

	mxfs_lock_msg_init(&msg, file, file, fl);
	msg.flags = MXFS_FILE_LOCK_FLOCK;
	msg.start = 0;
	msg.end = OFFSET_MAX;
	if (MXFS_FL(fl, type) == F_UNLCK) {
		err = locks_lock_file_wait(file, fl);
		return err ? err : mxfs_send_unlock(vol, &msg);
	}
	cluster = mxfs_locks_are_cluster_wide(vol);
	if (cluster < 0)
		return cluster;
	if (!cluster)
		return locks_lock_file_wait(file, fl);

	msg.op = MXFS_FILE_LOCK_LOCK;
	if (MXFS_FL(fl, flags) & FL_SLEEP)
		msg.flags |= MXFS_FILE_LOCK_WAIT;
	err = mxfs_lock_call(vol, &msg, &ans);
	if (err) {
		/*
		 * A conversion gives up the lock it had first, also when it
		 * is refused or interrupted (Linux's flock rule, which the
		 * DLM keeps): so does our record of it.
		 */
		mxfs_flock_forget(file, fl);
		return err;
	}
	MXFS_FL(fl, flags) &= ~FL_SLEEP;
	err = locks_lock_file_wait(file, fl);
	if (err) {
		pr_warn_ratelimited("volume %pU: a granted flock on inode %lu could not be recorded (%d); released\n",
				    vol->uuid, file_inode(file)->i_ino, err);
		msg.flags = MXFS_FILE_LOCK_FLOCK;
		mxfs_send_unlock(vol, &msg);
		return err;
	}
	mxfs_client_drop_pages(file_inode(file), 0, LLONG_MAX);
	return 0;
}

/* ---- reclaim: this node's locks, for a restarted daemon */

void mxfs_locks_attach(struct mxfs_volume *vol, struct super_block *sb)
{
	spin_lock(&vol->lock);
	vol->sb = sb;
	spin_unlock(&vol->lock);
}

/* Before the superblock goes: no reclaim runs over its inodes after this. */
void mxfs_locks_detach(struct mxfs_volume *vol)
{
	spin_lock(&vol->lock);
	vol->sb = NULL;
	spin_unlock(&vol->lock);
	cancel_work_sync(&vol->reclaim_work);
}

/* One recorded lock, copied out from under the inode's flc_lock. */
struct mxfs_held_lock {
	const void *owner;
	u32 pid;
	u32 type;
	u64 start, end;
	bool flock;
};

static unsigned int mxfs_copy_locks(struct list_head *head, bool flock,
				    struct mxfs_held_lock *held,
				    unsigned int n, unsigned int max)
{
	struct file_lock *fl;

	list_for_each_entry(fl, head, MXFS_FL_MEMBER(list)) {
		if (n == max)
			break;
		held[n].owner = flock ? (const void *)MXFS_FL(fl, file) :
					(const void *)MXFS_FL(fl, owner);
		held[n].pid = MXFS_FL(fl, pid);
		held[n].type = MXFS_FL(fl, type);
		held[n].start = flock ? 0 : fl->fl_start;
		held[n].end = flock ? OFFSET_MAX : fl->fl_end;
		held[n].flock = flock;
		n++;
	}
	return n;
}

/* Take @inode's recorded locks again; counts what was and was not. */
static void mxfs_reclaim_inode(struct mxfs_volume *vol, struct inode *inode,
			       unsigned int *taken, unsigned int *lost)
{
	struct file_lock_context *ctx = smp_load_acquire(&inode->i_flctx);
	struct mxfs_held_lock *held;
	struct file_lock *fl;
	unsigned int max = 0, n, i;

	if (!ctx)
		return;
	spin_lock(&ctx->flc_lock);
	list_for_each_entry(fl, &ctx->flc_posix, MXFS_FL_MEMBER(list))
		max++;
	list_for_each_entry(fl, &ctx->flc_flock, MXFS_FL_MEMBER(list))
		max++;
	spin_unlock(&ctx->flc_lock);
	if (!max)
		return;
	held = kcalloc(max, sizeof(*held), GFP_KERNEL);
	if (!held) {
		*lost += max;
		return;
	}
	spin_lock(&ctx->flc_lock);
	n = mxfs_copy_locks(&ctx->flc_posix, false, held, 0, max);
	n = mxfs_copy_locks(&ctx->flc_flock, true, held, n, max);
	spin_unlock(&ctx->flc_lock);

	for (i = 0; i < n; i++) {
		struct mxfs_lock_msg msg = {
			.op = MXFS_FILE_LOCK_LOCK,
			.flags = held[i].flock ? MXFS_FILE_LOCK_FLOCK : 0,
			.type = held[i].type,
			.pid = held[i].pid,
			.ino = inode->i_ino,
			.owner = mxfs_lock_owner_id(held[i].owner),
			.start = held[i].start,
			.end = held[i].end,
		};
		struct mxfs_lock_answer ans = {};
		int err = mxfs_lock_call(vol, &msg, &ans);

		if (!err) {
			(*taken)++;
			continue;
		}
		(*lost)++;
		pr_warn_ratelimited("volume %pU: the %s lock of pid %u on inode %lu could not be taken again after mxfsd restarted (%d): it no longer keeps other nodes out\n",
				    vol->uuid, held[i].flock ? "flock" : "fcntl",
				    held[i].pid, inode->i_ino, err);
	}
	kfree(held);
}

/*
 * Every inode of the mount that has locks recorded: as drop_pagecache_sb()
 * walks a superblock's inodes, holding each while the list lock is let go.
 */
void mxfs_reclaim_work(struct work_struct *work)
{
	struct mxfs_volume *vol = container_of(work, struct mxfs_volume,
					       reclaim_work);
	struct inode *inode, *prev = NULL;
	unsigned int taken = 0, lost = 0;
	struct super_block *sb;

	spin_lock(&vol->lock);
	sb = vol->sb;	/* alive: mxfs_locks_detach() waits for us */
	spin_unlock(&vol->lock);
	if (!sb)
		return;
	spin_lock(&sb->s_inode_list_lock);
	list_for_each_entry(inode, &sb->s_inodes, i_sb_list) {
		/* a new inode has no locks yet; igrab() skips dying ones */
		if (!S_ISREG(inode->i_mode) || !READ_ONCE(inode->i_flctx) ||
		    !igrab(inode))
			continue;
		spin_unlock(&sb->s_inode_list_lock);
		iput(prev);
		prev = inode;
		mxfs_reclaim_inode(vol, inode, &taken, &lost);
		cond_resched();
		spin_lock(&sb->s_inode_list_lock);
	}
	spin_unlock(&sb->s_inode_list_lock);
	iput(prev);
	if (taken || lost)
		pr_info("volume %pU: mxfsd re-attached: %u file locks taken again, %u lost\n",
			vol->uuid, taken, lost);
}
