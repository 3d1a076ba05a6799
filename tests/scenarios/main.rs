//! Scenario tests: a real virtual cluster (QEMU nodes booting Debian's
//! kernel with systemd, a shared iSCSI LUN with SCSI-3 PR, a private
//! network). Run by `cargo xtask test`; needs root.
//!
//! `cargo test --release -p mxfs-testbed --test scenarios -- NAME` runs the
//! steps whose names contain NAME.

use anyhow::Result;
use mxfs_testbed::cluster::{self, Assets, Cluster, Options};
use mxfs_testbed::kernel::{self, Series};
use mxfs_testbed::scenario::Runner;
use mxfs_testbed::{
    checks, dbus, deb, failover, fencing, host, kmod, multinode, packages, single, supervision,
    tools,
};
use std::path::PathBuf;

const TESTBED_STEPS: &[&str] = &[
    "testbed_two_nodes_boot",
    "testbed_nodes_share_one_lun",
    "testbed_scsi3_pr_fencing",
    "testbed_multicast_and_tcp",
    "testbed_network_cut_and_restore",
    "testbed_pause_and_resume",
    "testbed_power_off_and_restart",
];

const SINGLE_STEPS: &[&str] = &[
    "mxfs_installs_from_debian_packages",
    "mxfs_mount_and_umount",
    "mxfs_refuses_bad_input",
    "mxfs_registers_pr_key",
    "mxfs_fences_itself_when_preempted",
    "mxfs_refuses_foreign_reservation",
    "mxfs_hides_dot_mxfs",
    "mxfs_operation_groups",
    "mxfs_fsx_buffered_and_direct",
    "mxfs_pjdfstest_matches_xfs",
    "mxfs_benchmark_against_xfs",
    "mxfs_volume_on_dbus",
    "mxfs_daemon_restarts_and_reattaches",
    "mxfs_no_reattach_means_eio",
    "mxfs_reboot_with_fstab_entry",
    "mxfs_udev_rules",
    "mxfs_packages_remove_cleanly",
];

/// Several nodes on one volume (issue 4): run on nodes 1 and 2 (and 3
/// for the three-node step; it boots with the others and idles until
/// then), after the single-node steps and before node 1's packages are
/// removed.
const CLUSTER_STEPS: &[&str] = &[
    "cluster_two_nodes_share_files",
    "cluster_client_conformance",
    "cluster_locks_across_nodes",
    "cluster_daemons_restart_and_reattach",
    "cluster_hand_over",
    "cluster_three_nodes",
    "cluster_client_benchmark_against_owner",
];

/// Failover (issue 5): three nodes, one of them powered off, paused or
/// cut off the network; run right after the cluster steps, on the same
/// three nodes.
const FAILOVER_STEPS: &[&str] = &[
    "failover_owner_power_off",
    "failover_paused_owner_is_fenced",
    "failover_client_power_off",
    "failover_network_partition",
];

/// The soak (`failover_soak_N_rounds`, after the failover steps) runs
/// only when this is set to its number of rounds: `cargo xtask soak`
/// and the long tier set 20.
const SOAK_ROUNDS_VAR: &str = "MXFS_SOAK_ROUNDS";

/// Benchmark: files per metadata round, and rounds (medians are
/// reported).  Five rounds: with three, one round disturbed by other
/// work on the host (a metadata ratio of 0.51 next to 0.95 and 0.94)
/// moved a median by 0.06.
const BENCH_FILES: usize = 4000;
const BENCH_ROUNDS: usize = 5;
/// Passes per round of the sequential and metadata jobs (a few seconds
/// each; the round's figures are their medians): one pass is about a
/// second's work on the emulated machine, and the same code's figures
/// moved by a third from one pass to the next.
const BENCH_PASSES: usize = 3;
/// Sets the benchmark's rounds instead (for a quicker look while working
/// on speed; the tiers keep five).
const BENCH_ROUNDS_VAR: &str = "MXFS_BENCH_ROUNDS";

/// The client-against-owner benchmark: fewer files (every metadata op
/// of a client is a round trip to the owner), two rounds.
const CLIENT_BENCH_FILES: usize = 300;
const CLIENT_BENCH_ROUNDS: usize = 2;
/// One pass per round on a client, of the sequential and the metadata
/// jobs alike: a pass takes minutes there.
const CLIENT_BENCH_PASSES: usize = 1;

/// fsx operations per run in the default tier; the long tier
/// (`cargo xtask test --long`) sets MXFS_FSX_OPS=100000.
const FSX_OPS: u32 = 10_000;

/// What the nodes get on their artifacts disk: the project's Debian
/// packages, its binaries (mxfs-opcheck), and the test tools.
fn artifacts(assets: &Assets) -> Result<Vec<(PathBuf, String)>> {
    let mut a = host::project_artifacts();
    // The nodes install MXFS from its Debian packages (DKMS builds the
    // module for the guest kernel); the host-side build is checked too.
    kmod::build(&assets.kernel)?;
    a.extend(deb::artifacts()?);
    a.extend(tools::ensure()?);
    Ok(a)
}

fn main() {
    let mut r = Runner::from_args();
    r.step("kmod_builds_for_5.10_6.1_6.12", || {
        for series in Series::ALL {
            let k = kernel::ensure(series)?;
            let ko = kmod::build(&k)?;
            host::say(format!("{}: built {}", k.release, ko.display()));
        }
        Ok(())
    });
    let soak_rounds: Option<usize> = std::env::var(SOAK_ROUNDS_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > 0);
    let soak_name = soak_rounds.map(|n| format!("failover_soak_{n}_rounds"));
    // The steps that need nodes 2 and 3 with MXFS installed.
    let three_node_steps: Vec<&str> = CLUSTER_STEPS
        .iter()
        .chain(FAILOVER_STEPS)
        .copied()
        .chain(soak_name.as_deref())
        .collect();
    let all: Vec<&str> = TESTBED_STEPS
        .iter()
        .chain(SINGLE_STEPS)
        .copied()
        .chain(three_node_steps.iter().copied())
        .collect();
    if all.iter().any(|s| r.wants(s)) {
        // A third node for the three-node steps; it idles until then.
        let cluster_wanted = three_node_steps.iter().any(|s| r.wants(s));
        let nodes = if cluster_wanted { 3 } else { 2 };
        let started = cluster::prepare(Series::V6_1).and_then(|assets| {
            let opts = Options {
                nodes,
                artifacts: artifacts(&assets)?,
                ..Options::default()
            };
            Cluster::start(&assets, &opts)
        });
        match started {
            Err(e) => r.fail_all(&all, &e),
            Ok(mut c) => {
                r.step(TESTBED_STEPS[0], || checks::all_booted(&mut c));
                r.step(TESTBED_STEPS[1], || checks::same_lun(&mut c));
                r.step(TESTBED_STEPS[2], || checks::pr_fencing(&mut c));
                r.step(TESTBED_STEPS[3], || checks::network(&mut c));
                r.step(TESTBED_STEPS[4], || checks::network_cut(&mut c));
                r.step(TESTBED_STEPS[5], || checks::pause_resume(&mut c));
                r.step(TESTBED_STEPS[6], || checks::power_cycle(&mut c));
                match single::install(c.node(1)) {
                    Err(e) => {
                        r.fail_all(SINGLE_STEPS, &e);
                        r.fail_all(&three_node_steps, &e);
                    }
                    Ok(_) => {
                        r.step(SINGLE_STEPS[0], || Ok(()));
                        r.step(SINGLE_STEPS[1], || single::mount_and_umount(c.node(1)));
                        r.step(SINGLE_STEPS[2], || single::bad_input(c.node(1)));
                        r.step(SINGLE_STEPS[3], || single::pr_registration(c.node(1)));
                        r.step(SINGLE_STEPS[4], || {
                            fencing::self_fence_when_preempted(&mut c)
                        });
                        r.step(SINGLE_STEPS[5], || {
                            fencing::refuses_foreign_reservation(&mut c)
                        });
                        r.step(SINGLE_STEPS[6], || single::hides_dot_mxfs(c.node(1)));
                        r.step(SINGLE_STEPS[7], || single::operation_groups(c.node(1)));
                        let ops = std::env::var("MXFS_FSX_OPS")
                            .ok()
                            .and_then(|v| v.parse().ok());
                        r.step(SINGLE_STEPS[8], || {
                            single::fsx(c.node(1), ops.unwrap_or(FSX_OPS))
                        });
                        r.step(SINGLE_STEPS[9], || single::pjdfstest_matches_xfs(c.node(1)));
                        r.step(SINGLE_STEPS[10], || {
                            // The other nodes stand still meanwhile: their
                            // emulated CPUs would take host time from node
                            // 1's rounds, unevenly.
                            let others = 2..=c.len();
                            for n in others.clone() {
                                c.node(n).pause()?;
                            }
                            let rounds = std::env::var(BENCH_ROUNDS_VAR)
                                .ok()
                                .and_then(|v| v.parse().ok())
                                .filter(|n| *n > 0)
                                .unwrap_or(BENCH_ROUNDS);
                            let figures =
                                single::bench(c.node(1), BENCH_FILES, BENCH_PASSES, rounds);
                            for n in others {
                                c.node(n).resume()?;
                            }
                            figures.map(|_| ())
                        });
                        // The other nodes' DKMS builds run meanwhile, after
                        // the benchmark (they would slow it down).
                        let mut installing = Ok(());
                        if cluster_wanted {
                            installing = single::start_install(c.node(2))
                                .and_then(|()| single::start_install(c.node(3)));
                        }
                        r.step(SINGLE_STEPS[11], || dbus::volume_object(c.node(1)));
                        r.step(SINGLE_STEPS[12], || {
                            supervision::restart_and_reattach(c.node(1))
                        });
                        r.step(SINGLE_STEPS[13], || {
                            supervision::no_reattach_means_eio(c.node(1))
                        });
                        r.step(SINGLE_STEPS[14], || {
                            supervision::reboot_with_fstab(c.node(1))
                        });
                        if cluster_wanted {
                            let installed = installing
                                .and_then(|()| single::finish_install(c.node(2)))
                                .and_then(|_| single::finish_install(c.node(3)));
                            match installed {
                                Err(e) => r.fail_all(&three_node_steps, &e),
                                Ok(_) => {
                                    r.step(CLUSTER_STEPS[0], || {
                                        multinode::two_nodes_share_files(&mut c)
                                    });
                                    r.step(CLUSTER_STEPS[1], || {
                                        multinode::client_conformance(
                                            &mut c,
                                            ops.unwrap_or(FSX_OPS),
                                        )
                                    });
                                    r.step(CLUSTER_STEPS[2], || {
                                        multinode::locks_across_nodes(&mut c)
                                    });
                                    r.step(CLUSTER_STEPS[3], || {
                                        supervision::cluster_daemons_restart_and_reattach(&mut c)
                                    });
                                    r.step(CLUSTER_STEPS[4], || multinode::hand_over(&mut c));
                                    r.step(CLUSTER_STEPS[5], || multinode::three_nodes(&mut c));
                                    r.step(CLUSTER_STEPS[6], || {
                                        multinode::client_benchmark(
                                            &mut c,
                                            CLIENT_BENCH_FILES,
                                            CLIENT_BENCH_PASSES,
                                            CLIENT_BENCH_ROUNDS,
                                        )
                                        .map(|_| ())
                                    });
                                    // Failover: the cluster steps left
                                    // every node unmounted; each of these
                                    // mounts a fresh volume itself.
                                    r.step(FAILOVER_STEPS[0], || {
                                        failover::owner_power_off(&mut c).map(|_| ())
                                    });
                                    r.step(FAILOVER_STEPS[1], || {
                                        failover::paused_owner_is_fenced(&mut c)
                                    });
                                    r.step(FAILOVER_STEPS[2], || {
                                        failover::client_power_off(&mut c)
                                    });
                                    r.step(FAILOVER_STEPS[3], || {
                                        failover::network_partition(&mut c)
                                    });
                                    if let (Some(name), Some(rounds)) = (&soak_name, soak_rounds) {
                                        r.step(name, || {
                                            failover::owner_failover_soak(&mut c, rounds)
                                        });
                                    }
                                }
                            }
                        }
                        r.step(SINGLE_STEPS[15], || packages::udev_rules(c.node(1)));
                        // Last: it uninstalls MXFS from node 1.
                        r.step(SINGLE_STEPS[16], || packages::removal(c.node(1)));
                    }
                }
            }
        }
    }
    std::process::exit(r.finish());
}
