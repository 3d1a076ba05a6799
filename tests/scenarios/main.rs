//! Scenario tests: a real virtual cluster (QEMU nodes booting Debian's
//! kernel with systemd, a shared iSCSI LUN with SCSI-3 PR, a private
//! network). Run by `cargo xtask test`; needs root.
//!
//! `cargo test --release -p mxfs-testbed --test scenarios -- NAME` runs the
//! steps whose names contain NAME.

use mxfs_testbed::checks;
use mxfs_testbed::cluster::{self, Cluster, Options};
use mxfs_testbed::host;
use mxfs_testbed::kernel::Series;
use mxfs_testbed::scenario::Runner;

const TESTBED_STEPS: &[&str] = &[
    "testbed_two_nodes_boot",
    "testbed_nodes_share_one_lun",
    "testbed_scsi3_pr_fencing",
    "testbed_multicast_and_tcp",
    "testbed_network_cut_and_restore",
    "testbed_pause_and_resume",
    "testbed_power_off_and_restart",
];

fn main() {
    let mut r = Runner::from_args();
    if TESTBED_STEPS.iter().any(|s| r.wants(s)) {
        let opts = Options {
            nodes: 2,
            artifacts: host::project_artifacts(),
            ..Options::default()
        };
        match cluster::prepare(Series::V6_1).and_then(|a| Cluster::start(&a, &opts)) {
            Err(e) => r.fail_all(TESTBED_STEPS, &e),
            Ok(mut c) => {
                r.step(TESTBED_STEPS[0], || checks::all_booted(&mut c));
                r.step(TESTBED_STEPS[1], || checks::same_lun(&mut c));
                r.step(TESTBED_STEPS[2], || checks::pr_fencing(&mut c));
                r.step(TESTBED_STEPS[3], || checks::network(&mut c));
                r.step(TESTBED_STEPS[4], || checks::network_cut(&mut c));
                r.step(TESTBED_STEPS[5], || checks::pause_resume(&mut c));
                r.step(TESTBED_STEPS[6], || checks::power_cycle(&mut c));
            }
        }
    }
    std::process::exit(r.finish());
}
