// SPDX-License-Identifier: GPL-2.0-only
/*
 * MXFS generic netlink family "mxfs" (mxfs_uapi.h) and the per-volume
 * registry that the mount code and the daemon's messages meet in.
 *
 * The daemon must answer DAEMON_READY with the token it was spawned with;
 * every command needs CAP_SYS_ADMIN.  When the daemon's netlink socket
 * closes while its volume is mounted, the mount is marked dead: its
 * operations fail with EIO and the kernel log says why.
 */
#include "mxfs_internal.h"	/* first: it defines pr_fmt */
#include <linux/slab.h>
#include <linux/random.h>
#include <linux/capability.h>
#include <linux/notifier.h>
#include <linux/moduleparam.h>
#include <linux/workqueue.h>
#include <linux/delay.h>
#include <linux/netlink.h>
#include <net/genetlink.h>
#include <net/net_namespace.h>

static LIST_HEAD(mxfs_volumes);
static DEFINE_MUTEX(mxfs_vol_mutex);	/* protects mxfs_volumes */

/* ---- volume registry */

static void mxfs_volume_release(struct kref *ref)
{
	struct mxfs_volume *vol = container_of(ref, struct mxfs_volume, ref);

	put_pid(vol->daemon_pid);
	kfree(vol->lower_path);
	kfree(vol);
}

void mxfs_volume_get(struct mxfs_volume *vol)
{
	kref_get(&vol->ref);
}

void mxfs_volume_put(struct mxfs_volume *vol)
{
	if (vol)
		kref_put(&vol->ref, mxfs_volume_release);
}

/* Caller holds mxfs_vol_mutex. */
static struct mxfs_volume *mxfs_volume_find(const u8 *uuid)
{
	struct mxfs_volume *vol;

	list_for_each_entry(vol, &mxfs_volumes, list)
		if (!memcmp(vol->uuid, uuid, MXFS_UUID_LEN))
			return vol;
	return NULL;
}

static void mxfs_reattach_expired(struct work_struct *work);

/*
 * Claim @uuid for a new mount on this node.  -EBUSY if it is already
 * mounted (or being mounted) here.
 */
struct mxfs_volume *mxfs_volume_register(const u8 *uuid, dev_t dev)
{
	struct mxfs_volume *vol;

	vol = kzalloc(sizeof(*vol), GFP_KERNEL);
	if (!vol)
		return ERR_PTR(-ENOMEM);
	INIT_LIST_HEAD(&vol->list);
	kref_init(&vol->ref);
	memcpy(vol->uuid, uuid, MXFS_UUID_LEN);
	vol->dev = dev;
	do {
		vol->token = get_random_u64();
	} while (!vol->token);
	spin_lock_init(&vol->lock);
	vol->state = MXFS_VOL_SPAWNING;
	init_completion(&vol->ready);
	init_completion(&vol->exited);
	INIT_DELAYED_WORK(&vol->reattach_work, mxfs_reattach_expired);
	INIT_LIST_HEAD(&vol->lock_calls);
	INIT_WORK(&vol->reclaim_work, mxfs_reclaim_work);

	mutex_lock(&mxfs_vol_mutex);
	if (mxfs_volume_find(uuid)) {
		mutex_unlock(&mxfs_vol_mutex);
		kfree(vol);
		return ERR_PTR(-EBUSY);
	}
	list_add_tail(&vol->list, &mxfs_volumes);
	mutex_unlock(&mxfs_vol_mutex);
	return vol;
}

void mxfs_volume_unregister(struct mxfs_volume *vol)
{
	mutex_lock(&mxfs_vol_mutex);
	list_del_init(&vol->list);
	mutex_unlock(&mxfs_vol_mutex);
	/* Off the list, nothing schedules it again. */
	cancel_delayed_work_sync(&vol->reattach_work);
	mxfs_volume_put(vol);
}

static unsigned int mxfs_reattach_timeout = 30;
module_param_named(reattach_timeout, mxfs_reattach_timeout, uint, 0644);
MODULE_PARM_DESC(reattach_timeout,
		 "Seconds a mounted volume whose mxfsd died waits for a restarted one to re-attach before its operations fail with EIO (0: at once)");

/* Caller holds vol->lock. */
static void __mxfs_volume_mark_dead(struct mxfs_volume *vol, const char *why)
{
	if (vol->dead)
		return;
	strscpy(vol->reason, why, sizeof(vol->reason));
	WRITE_ONCE(vol->dead, true);
	pr_err("volume %pU: %s; the mount is dead and its operations fail with EIO until it is unmounted\n",
	       vol->uuid, why);
}

void mxfs_volume_mark_dead(struct mxfs_volume *vol, const char *why)
{
	spin_lock(&vol->lock);
	__mxfs_volume_mark_dead(vol, why);
	spin_unlock(&vol->lock);
}

/* No daemon re-attached in time: the mount goes dead. */
static void mxfs_reattach_expired(struct work_struct *work)
{
	struct mxfs_volume *vol = container_of(to_delayed_work(work),
					       struct mxfs_volume,
					       reattach_work);

	spin_lock(&vol->lock);
	if (vol->state == MXFS_VOL_READY && vol->daemon_gone)
		__mxfs_volume_mark_dead(vol,
			"mxfsd exited and no restarted mxfsd re-attached in time (reattach_timeout)");
	spin_unlock(&vol->lock);
}

/* ---- generic netlink family */

static struct genl_family mxfs_genl_family;

static const struct nla_policy mxfs_genl_policy[MXFS_A_MAX + 1] = {
	[MXFS_A_TOKEN] = { .type = NLA_U64 },
	[MXFS_A_VOLUME_UUID] = { .type = NLA_BINARY, .len = MXFS_UUID_LEN },
	[MXFS_A_ROLE] = { .type = NLA_U32 },
	[MXFS_A_EPOCH] = { .type = NLA_U64 },
	[MXFS_A_NODE_ID] = { .type = NLA_U64 },
	[MXFS_A_LOWER_PATH] = { .type = NLA_NUL_STRING,
				.len = MXFS_PATH_MAX - 1 },
	[MXFS_A_LOWER_FD] = { .type = NLA_U32 },
	[MXFS_A_ERROR] = { .type = NLA_U32 },
	[MXFS_A_REASON] = { .type = NLA_NUL_STRING,
			    .len = MXFS_REASON_MAX - 1 },
	[MXFS_A_INODE] = { .type = NLA_U64 },
	[MXFS_A_OFFSET] = { .type = NLA_U64 },
	[MXFS_A_LENGTH] = { .type = NLA_U64 },
	[MXFS_A_LOCK_MODE] = { .type = NLA_U32 },
	[MXFS_A_LOCK_ID] = { .type = NLA_U64 },
	[MXFS_A_LOCK_OP] = { .type = NLA_U32 },
	[MXFS_A_LOCK_OWNER] = { .type = NLA_U64 },
	[MXFS_A_LOCK_PID] = { .type = NLA_U32 },
	[MXFS_A_LOCK_TYPE] = { .type = NLA_U32 },
	[MXFS_A_LOCK_FLAGS] = { .type = NLA_U32 },
	[MXFS_A_LOCK_END] = { .type = NLA_U64 },
	[MXFS_A_FILE_LOCKS] = { .type = NLA_U32 },
};

/*
 * GENL_ADMIN_PERM checks CAP_NET_ADMIN; the family also wants
 * CAP_SYS_ADMIN, which is what mounting took.
 */
static int mxfs_nl_check(struct sk_buff *skb, struct genl_info *info)
{
	if (!netlink_capable(skb, CAP_SYS_ADMIN)) {
		NL_SET_ERR_MSG(info->extack, "mxfs: CAP_SYS_ADMIN required");
		return -EPERM;
	}
	return 0;
}

/*
 * The volume a daemon message is about, checked against its token.
 * Caller holds mxfs_vol_mutex.
 */
static struct mxfs_volume *mxfs_nl_volume(struct genl_info *info)
{
	struct nlattr **a = info->attrs;
	struct mxfs_volume *vol;

	if (!a[MXFS_A_TOKEN] || !a[MXFS_A_VOLUME_UUID] ||
	    nla_len(a[MXFS_A_VOLUME_UUID]) != MXFS_UUID_LEN) {
		NL_SET_ERR_MSG(info->extack,
			       "mxfs: TOKEN and a 16-byte VOLUME_UUID are required");
		return ERR_PTR(-EINVAL);
	}
	vol = mxfs_volume_find(nla_data(a[MXFS_A_VOLUME_UUID]));
	if (!vol) {
		NL_SET_ERR_MSG(info->extack,
			       "mxfs: this volume is not being mounted here");
		return ERR_PTR(-ENOENT);
	}
	if (nla_get_u64(a[MXFS_A_TOKEN]) != vol->token) {
		NL_SET_ERR_MSG(info->extack, "mxfs: wrong token");
		return ERR_PTR(-EPERM);
	}
	return vol;
}

/*
 * The sender of this DAEMON_READY (genl runs in its context) becomes the
 * volume's daemon.  Caller holds vol->lock.
 */
static void mxfs_volume_set_daemon(struct mxfs_volume *vol, u32 portid)
{
	struct pid *old = vol->daemon_pid;

	vol->portid = portid;
	vol->daemon_gone = false;
	vol->daemon_pid = get_task_pid(current, PIDTYPE_TGID);
	put_pid(old);
}

/*
 * Why a client's DAEMON_READY cannot be taken, or NULL if it can: the
 * client role needs LOWER_PATH, the absolute path of the FUSE mount that
 * mxfsd made and serves (mxfs_super.c resolves it in the mount(2)
 * caller's context and takes it as the lower layer).
 */
static const char *mxfs_client_ready_problem(struct nlattr **a,
					     const char *lower_path)
{
	if (!a[MXFS_A_LOWER_PATH])
		return a[MXFS_A_LOWER_FD] ?
			"mxfsd sent LOWER_FD for the client role; this module takes the FUSE mount by LOWER_PATH only" :
			"mxfsd reported the client role without LOWER_PATH (the path of its FUSE mount)";
	if (lower_path[0] != '/')
		return "mxfsd reported a relative LOWER_PATH; it must be the absolute path of its FUSE mount";
	return NULL;
}

static int mxfs_nl_daemon_ready(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr **a = info->attrs;
	struct mxfs_volume *vol;
	char *lower_path = NULL;
	const char *problem;
	u32 role;
	int err;

	err = mxfs_nl_check(skb, info);
	if (err)
		return err;
	if (!a[MXFS_A_ROLE] || !a[MXFS_A_EPOCH]) {
		NL_SET_ERR_MSG(info->extack, "mxfs: ROLE and EPOCH are required");
		return -EINVAL;
	}
	role = nla_get_u32(a[MXFS_A_ROLE]);
	/* The policy checked it: NUL-terminated, < MXFS_PATH_MAX bytes. */
	if (role == MXFS_ROLE_CLIENT && a[MXFS_A_LOWER_PATH]) {
		lower_path = kstrdup(nla_data(a[MXFS_A_LOWER_PATH]), GFP_KERNEL);
		if (!lower_path)
			return -ENOMEM;
	}

	mutex_lock(&mxfs_vol_mutex);
	vol = mxfs_nl_volume(info);
	if (IS_ERR(vol)) {
		err = PTR_ERR(vol);
		goto out;
	}
	spin_lock(&vol->lock);
	if (vol->state == MXFS_VOL_READY && vol->daemon_gone &&
	    role == vol->role) {
		/*
		 * A restarted daemon (systemd) re-attaches to the live mount.
		 * A client's lower stays the FUSE mount taken at mount time:
		 * a LOWER_PATH sent now is ignored (the mount's dentries all
		 * refer to that superblock).
		 */
		mxfs_volume_set_daemon(vol, info->snd_portid);
		reinit_completion(&vol->exited);
		cancel_delayed_work(&vol->reattach_work);
		/* the new daemon's DLM holds none of this node's locks */
		if (vol->file_locks && vol->sb && !vol->dead)
			schedule_work(&vol->reclaim_work);
		pr_info("volume %pU: mxfsd re-attached (pid %d)%s\n", vol->uuid,
			pid_nr(vol->daemon_pid),
			vol->dead ? "; the mount stays dead" : "");
	} else if (vol->state != MXFS_VOL_SPAWNING) {
		err = -EALREADY;
		NL_SET_ERR_MSG(info->extack, "mxfs: daemon already attached");
	} else if (role != MXFS_ROLE_OWNER && role != MXFS_ROLE_CLIENT) {
		/* Fail the mount at once, with a reason, rather than time out. */
		err = -EOPNOTSUPP;
		vol->ready_err = -EOPNOTSUPP;
		strscpy(vol->reason, "mxfsd reported an unknown role",
			sizeof(vol->reason));
		NL_SET_ERR_MSG(info->extack, "mxfs: unknown role");
	} else if (role == MXFS_ROLE_CLIENT &&
		   (problem = mxfs_client_ready_problem(a, lower_path))) {
		err = -EINVAL;
		vol->ready_err = -EINVAL;
		strscpy(vol->reason, problem, sizeof(vol->reason));
		NL_SET_ERR_MSG(info->extack,
			       "mxfs: the client role needs an absolute LOWER_PATH");
	} else {
		/* The sender may be the unit the spawned process handed over to. */
		mxfs_volume_set_daemon(vol, info->snd_portid);
		vol->role = role;
		vol->epoch = nla_get_u64(a[MXFS_A_EPOCH]);
		if (a[MXFS_A_NODE_ID])
			vol->node_id = nla_get_u64(a[MXFS_A_NODE_ID]);
		vol->file_locks = a[MXFS_A_FILE_LOCKS] &&
				  nla_get_u32(a[MXFS_A_FILE_LOCKS]);
		/* owner: LOWER_PATH is not looked at (lower_path is NULL) */
		swap(vol->lower_path, lower_path);
		vol->state = MXFS_VOL_READY;
	}
	spin_unlock(&vol->lock);
	if (!err || vol->ready_err)
		complete_all(&vol->ready);
out:
	mutex_unlock(&mxfs_vol_mutex);
	kfree(lower_path);	/* not taken (or a stale one swapped out) */
	return err;
}

static int mxfs_nl_daemon_exited(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr **a = info->attrs;
	struct mxfs_volume *vol;
	char why[MXFS_REASON_MAX];
	int err;

	err = mxfs_nl_check(skb, info);
	if (err)
		return err;
	mutex_lock(&mxfs_vol_mutex);
	vol = mxfs_nl_volume(info);
	if (IS_ERR(vol)) {
		err = PTR_ERR(vol);
		goto out;
	}
	snprintf(why, sizeof(why), "mxfsd exited (%s)",
		 a[MXFS_A_REASON] ? (char *)nla_data(a[MXFS_A_REASON]) :
				    "no reason given");
	spin_lock(&vol->lock);
	if (vol->state == MXFS_VOL_READY) {
		__mxfs_volume_mark_dead(vol, why);
	} else if (vol->state == MXFS_VOL_SPAWNING && !vol->ready_err) {
		/* It gave up before joining: fail the mount with its reason. */
		vol->ready_err = -EIO;
		if (a[MXFS_A_ERROR] && nla_get_u32(a[MXFS_A_ERROR]) > 0 &&
		    nla_get_u32(a[MXFS_A_ERROR]) < MAX_ERRNO)
			vol->ready_err = -(int)nla_get_u32(a[MXFS_A_ERROR]);
		strscpy(vol->reason, a[MXFS_A_REASON] ?
			(char *)nla_data(a[MXFS_A_REASON]) :
			"mxfsd gave up before it was ready (no reason given)",
			sizeof(vol->reason));
		complete_all(&vol->ready);
	}
	vol->daemon_gone = true;
	spin_unlock(&vol->lock);
	complete_all(&vol->exited);
out:
	mutex_unlock(&mxfs_vol_mutex);
	return err;
}

static int mxfs_nl_fenced(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr **a = info->attrs;
	struct mxfs_volume *vol;
	char why[MXFS_REASON_MAX];
	int err;

	err = mxfs_nl_check(skb, info);
	if (err)
		return err;
	mutex_lock(&mxfs_vol_mutex);
	vol = mxfs_nl_volume(info);
	if (IS_ERR(vol)) {
		err = PTR_ERR(vol);
		goto out;
	}
	snprintf(why, sizeof(why), "this node was fenced (%s)",
		 a[MXFS_A_REASON] ? (char *)nla_data(a[MXFS_A_REASON]) :
				    "no reason given");
	mxfs_volume_mark_dead(vol, why);
out:
	mutex_unlock(&mxfs_vol_mutex);
	return err;
}

/* The daemon's answer to one of our FILE_LOCK calls. */
static int mxfs_nl_file_lock_done(struct sk_buff *skb, struct genl_info *info)
{
	struct nlattr **a = info->attrs;
	struct mxfs_lock_answer ans = { .type = F_UNLCK };
	struct mxfs_volume *vol;
	u32 error;
	int err;

	err = mxfs_nl_check(skb, info);
	if (err)
		return err;
	if (!a[MXFS_A_LOCK_ID] || !a[MXFS_A_ERROR]) {
		NL_SET_ERR_MSG(info->extack, "mxfs: LOCK_ID and ERROR are required");
		return -EINVAL;
	}
	error = nla_get_u32(a[MXFS_A_ERROR]);
	if (error >= MAX_ERRNO) {
		NL_SET_ERR_MSG(info->extack, "mxfs: ERROR is not an errno");
		return -EINVAL;
	}
	ans.err = -(int)error;
	if (a[MXFS_A_LOCK_TYPE]) {
		if (!a[MXFS_A_OFFSET] || !a[MXFS_A_LOCK_END] ||
		    !a[MXFS_A_LOCK_PID] || !a[MXFS_A_NODE_ID]) {
			NL_SET_ERR_MSG(info->extack,
				       "mxfs: a conflicting lock needs OFFSET, LOCK_END, LOCK_PID and NODE_ID");
			return -EINVAL;
		}
		ans.type = nla_get_u32(a[MXFS_A_LOCK_TYPE]);
		ans.start = nla_get_u64(a[MXFS_A_OFFSET]);
		ans.end = nla_get_u64(a[MXFS_A_LOCK_END]);
		ans.pid = (s32)nla_get_u32(a[MXFS_A_LOCK_PID]);
		ans.node = nla_get_u64(a[MXFS_A_NODE_ID]);
		if ((ans.type != F_RDLCK && ans.type != F_WRLCK) ||
		    ans.start > ans.end || ans.end > OFFSET_MAX || ans.pid < 0) {
			NL_SET_ERR_MSG(info->extack, "mxfs: bad conflicting lock");
			return -EINVAL;
		}
	}
	mutex_lock(&mxfs_vol_mutex);
	vol = mxfs_nl_volume(info);
	if (IS_ERR(vol))
		err = PTR_ERR(vol);
	else
		mxfs_lock_answer(vol, nla_get_u64(a[MXFS_A_LOCK_ID]), &ans);
	mutex_unlock(&mxfs_vol_mutex);
	return err;
}

/* Commands of later steps (recovery, locks, caching, direct I/O). */
static int mxfs_nl_unsupported(struct sk_buff *skb, struct genl_info *info)
{
	int err = mxfs_nl_check(skb, info);

	if (err)
		return err;
	NL_SET_ERR_MSG(info->extack,
		       "mxfs: command not implemented by this module version");
	return -EOPNOTSUPP;
}

#define MXFS_OP(_cmd, _doit) {						\
	.cmd = (_cmd),							\
	.doit = (_doit),						\
	.flags = GENL_ADMIN_PERM,					\
	.policy = mxfs_genl_policy,					\
	.maxattr = MXFS_A_MAX,						\
}

static const struct genl_ops mxfs_genl_ops[] = {
	MXFS_OP(MXFS_CMD_DAEMON_READY, mxfs_nl_daemon_ready),
	MXFS_OP(MXFS_CMD_SHUTDOWN, mxfs_nl_unsupported),
	MXFS_OP(MXFS_CMD_DAEMON_EXITED, mxfs_nl_daemon_exited),
	MXFS_OP(MXFS_CMD_FENCED, mxfs_nl_fenced),
	MXFS_OP(MXFS_CMD_RECOVERY_START, mxfs_nl_unsupported),
	MXFS_OP(MXFS_CMD_RECOVERY_DONE, mxfs_nl_unsupported),
	MXFS_OP(MXFS_CMD_LOCK_REQ, mxfs_nl_unsupported),
	MXFS_OP(MXFS_CMD_LOCK_GRANT, mxfs_nl_unsupported),
	MXFS_OP(MXFS_CMD_LOCK_RELEASE, mxfs_nl_unsupported),
	MXFS_OP(MXFS_CMD_CACHE_INVAL, mxfs_nl_unsupported),
	MXFS_OP(MXFS_CMD_MAP_BLOCKS, mxfs_nl_unsupported),
	MXFS_OP(MXFS_CMD_COMMIT_BLOCKS, mxfs_nl_unsupported),
	MXFS_OP(MXFS_CMD_FILE_LOCK, mxfs_nl_unsupported),
	MXFS_OP(MXFS_CMD_FILE_LOCK_DONE, mxfs_nl_file_lock_done),
};

static struct genl_family mxfs_genl_family = {
	.name = MXFS_GENL_NAME,
	.version = MXFS_GENL_VERSION,
	.maxattr = MXFS_A_MAX,
	.netnsok = false,
	.parallel_ops = true,
	.module = THIS_MODULE,
	.ops = mxfs_genl_ops,
	.n_ops = ARRAY_SIZE(mxfs_genl_ops),
};

/* Ask the daemon of @vol to stop.  Marks the volume as stopping. */
int mxfs_send_shutdown(struct mxfs_volume *vol, const char *reason)
{
	struct sk_buff *skb;
	void *hdr;
	u32 portid;

	spin_lock(&vol->lock);
	vol->state = MXFS_VOL_STOPPING;
	portid = vol->portid;
	spin_unlock(&vol->lock);
	if (!portid)
		return -ENOTCONN;

	skb = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
	if (!skb)
		return -ENOMEM;
	hdr = genlmsg_put(skb, 0, 0, &mxfs_genl_family, 0, MXFS_CMD_SHUTDOWN);
	if (!hdr)
		goto too_big;
	if (nla_put_u64_64bit(skb, MXFS_A_TOKEN, vol->token, MXFS_A_PAD) ||
	    nla_put(skb, MXFS_A_VOLUME_UUID, MXFS_UUID_LEN, vol->uuid) ||
	    (reason && nla_put_string(skb, MXFS_A_REASON, reason)))
		goto too_big;
	genlmsg_end(skb, hdr);
	return genlmsg_unicast(&init_net, skb, portid);

too_big:
	nlmsg_free(skb);
	return -EMSGSIZE;
}

/*
 * A FILE_LOCK call to the daemon at @portid.  The daemon's socket may be
 * full for a moment: a lock call waits for room rather than fail.
 */
int mxfs_send_file_lock(struct mxfs_volume *vol, u32 portid, u64 id,
			const struct mxfs_lock_msg *msg)
{
	int tries = 100;
	int err;

	do {
		struct sk_buff *skb = genlmsg_new(NLMSG_DEFAULT_SIZE, GFP_KERNEL);
		void *hdr;

		if (!skb)
			return -ENOMEM;
		hdr = genlmsg_put(skb, 0, 0, &mxfs_genl_family, 0,
				  MXFS_CMD_FILE_LOCK);
		if (!hdr ||
		    nla_put_u64_64bit(skb, MXFS_A_TOKEN, vol->token, MXFS_A_PAD) ||
		    nla_put(skb, MXFS_A_VOLUME_UUID, MXFS_UUID_LEN, vol->uuid) ||
		    nla_put_u64_64bit(skb, MXFS_A_LOCK_ID, id, MXFS_A_PAD) ||
		    nla_put_u32(skb, MXFS_A_LOCK_OP, msg->op) ||
		    nla_put_u32(skb, MXFS_A_LOCK_FLAGS, msg->flags) ||
		    nla_put_u32(skb, MXFS_A_LOCK_TYPE, msg->type) ||
		    nla_put_u32(skb, MXFS_A_LOCK_PID, msg->pid) ||
		    nla_put_u64_64bit(skb, MXFS_A_INODE, msg->ino, MXFS_A_PAD) ||
		    nla_put_u64_64bit(skb, MXFS_A_LOCK_OWNER, msg->owner,
				      MXFS_A_PAD) ||
		    nla_put_u64_64bit(skb, MXFS_A_OFFSET, msg->start, MXFS_A_PAD) ||
		    nla_put_u64_64bit(skb, MXFS_A_LOCK_END, msg->end, MXFS_A_PAD)) {
			nlmsg_free(skb);
			return -EMSGSIZE;
		}
		genlmsg_end(skb, hdr);
		/* consumes the skb, sent or not */
		err = genlmsg_unicast(&init_net, skb, portid);
		if (err != -EAGAIN)
			return err;
		msleep(10);
	} while (--tries);
	return err;
}

/* ---- noticing a daemon whose netlink socket closed */

static int mxfs_nl_notify(struct notifier_block *nb, unsigned long event,
			  void *ptr)
{
	struct netlink_notify *n = ptr;
	struct mxfs_volume *vol;

	if (event != NETLINK_URELEASE || n->protocol != NETLINK_GENERIC ||
	    !net_eq(n->net, &init_net) || !n->portid)
		return NOTIFY_DONE;

	mutex_lock(&mxfs_vol_mutex);
	list_for_each_entry(vol, &mxfs_volumes, list) {
		bool gone = false;

		spin_lock(&vol->lock);
		if (vol->portid == n->portid) {
			unsigned int grace = READ_ONCE(mxfs_reattach_timeout);

			vol->portid = 0;
			vol->daemon_gone = true;
			gone = true;
			/* its answers will not come */
			mxfs_lock_calls_fail(vol, -ENOLCK);
			if (vol->state == MXFS_VOL_READY && !grace) {
				__mxfs_volume_mark_dead(vol,
					"mxfsd closed its netlink socket (it exited or was killed)");
			} else if (vol->state == MXFS_VOL_READY && !vol->dead) {
				/*
				 * The owner's lower XFS needs no daemon:
				 * operations go on.  A client's FUSE lower is
				 * served by mxfsd: once its /dev/fuse is
				 * closed, operations fail with ENOTCONN.
				 */
				pr_warn("volume %pU: mxfsd closed its netlink socket (it exited or was killed); operations go on%s and fail with EIO unless a restarted mxfsd re-attaches within %u s\n",
					vol->uuid,
					vol->role == MXFS_ROLE_CLIENT ?
					" (on this client only while mxfsd's FUSE connection lives)" : "",
					grace);
				schedule_delayed_work(&vol->reattach_work,
						      grace * HZ);
			}
		}
		spin_unlock(&vol->lock);
		if (gone)
			complete_all(&vol->exited);
	}
	mutex_unlock(&mxfs_vol_mutex);
	return NOTIFY_DONE;
}

static struct notifier_block mxfs_nl_notifier = {
	.notifier_call = mxfs_nl_notify,
};

int mxfs_netlink_init(void)
{
	int err;

	err = genl_register_family(&mxfs_genl_family);
	if (err)
		return err;
	err = netlink_register_notifier(&mxfs_nl_notifier);
	if (err)
		genl_unregister_family(&mxfs_genl_family);
	return err;
}

void mxfs_netlink_exit(void)
{
	netlink_unregister_notifier(&mxfs_nl_notifier);
	genl_unregister_family(&mxfs_genl_family);
}
