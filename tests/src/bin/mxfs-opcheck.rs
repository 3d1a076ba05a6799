//! `mxfs-opcheck`: the guest-side checker of every operation a local
//! filesystem offers; see [`mxfs_testbed::opcheck`].
//!
//! - `mxfs-opcheck DIR [GROUP...]`: runs all (or the named) groups in a
//!   fresh subdirectory of DIR and prints `group NAME ok`,
//!   `group NAME skipped: REASON` or `group NAME FAILED: REASON` per group
//!   (after any `note NAME: TEXT` lines); exit 0 only if none failed.
//! - `mxfs-opcheck --dio-fsx FILE NUMOPS SEED`: O_DIRECT fsx-style run.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(mxfs_testbed::opcheck::main_cli(&args));
}
