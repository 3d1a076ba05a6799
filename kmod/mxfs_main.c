// SPDX-License-Identifier: GPL-2.0-only
/*
 * MXFS: shared-disk cluster filesystem for Linux, kernel module.
 *
 * Registers the "mxfs" filesystem type and the "mxfs" generic netlink
 * family through which the module and its per-volume daemon, mxfsd, talk.
 */
#include "mxfs_internal.h"	/* first: it defines pr_fmt */
#include <linux/module.h>
#include <net/genetlink.h>

static int __init mxfs_init(void)
{
	int err;

	err = mxfs_init_inodecache();
	if (err)
		return err;
	err = mxfs_netlink_init();
	if (err)
		goto out_cache;
	err = register_filesystem(&mxfs_fs_type);
	if (err)
		goto out_netlink;
	pr_info("loaded (netlink family %s v%d)\n", MXFS_GENL_NAME,
		MXFS_GENL_VERSION);
	return 0;

out_netlink:
	mxfs_netlink_exit();
out_cache:
	mxfs_destroy_inodecache();
	return err;
}

static void __exit mxfs_exit(void)
{
	/* No mount can exist: each one holds a module reference. */
	unregister_filesystem(&mxfs_fs_type);
	mxfs_netlink_exit();
	mxfs_destroy_inodecache();
}

module_init(mxfs_init);
module_exit(mxfs_exit);

MODULE_DESCRIPTION("MXFS shared-disk cluster filesystem (stacks over XFS)");
MODULE_AUTHOR("MXFS developers");
MODULE_LICENSE("GPL");
MODULE_VERSION("1.0.0");
MODULE_ALIAS_GENL_FAMILY(MXFS_GENL_NAME);
