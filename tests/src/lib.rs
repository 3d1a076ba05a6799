//! The MXFS virtual cluster testbed.
//!
//! Every MXFS promise is about several kernels sharing one disk, so the
//! tests run in a cluster of QEMU VMs booting Debian's own kernel with
//! systemd as init, sharing one iSCSI LUN with real SCSI-3 Persistent
//! Reservations, on a private network inside a network namespace of the
//! testbed's own. Modules, one per concern:
//!
//! - [`host`]: paths under `target/testbed`, host commands, host packages.
//! - [`kernel`]: Debian kernels and headers, fetched with a private apt.
//! - [`kmod`]: builds mxfs.ko against a kernel's headers (W=1, -Werror).
//! - [`rootfs`]: the guest root filesystem image (debootstrap + mkfs.ext4 -d).
//! - [`initramfs`]: the small initramfs that mounts the root.
//! - [`accel`]: KVM when it works, TCG otherwise.
//! - [`net`]: the network namespace, bridge and taps.
//! - [`target`]: the iSCSI target (`tgtd`) serving the shared LUN.
//! - [`qga`]: the guest agent and QMP clients.
//! - [`node`]: one VM.
//! - [`cluster`]: N nodes, their LUN and network, faults on demand.
//! - [`checks`]: checks of the testbed itself (boot, LUN, PR, network).
//! - [`single`]: single-node mxfs checks (mount, bad input, PR key, pjdfstest, fsx).
//! - [`bench`](mod@bench): the benchmark jobs (fio, metadata rates) and their table of ratios.
//! - [`multinode`]: two nodes on one volume: sharing, client conformance, locks, client benchmark.
//! - [`fencing`]: fencing checks that need a second node (self-fencing).
//! - [`failover`]: three nodes, one dies, freezes or is cut off: fencing, take-over, rejoin, soak.
//! - [`deb`]: the `mxfs` and `mxfs-dkms` Debian packages (dpkg-buildpackage, lintian).
//! - [`packages`]: the installed packages: udev rules, removal.
//! - [`supervision`]: mxfsd as a systemd unit: restart and re-attach.
//! - [`dbus`]: the volume's D-Bus object, through busctl.
//! - [`tools`]: pjdfstest and fsx from crates.io, for the guests.
//! - [`scenario`]: a tiny runner for the scenario tests.

pub mod accel;
pub mod bench;
pub mod checks;
pub mod cluster;
pub mod dbus;
pub mod deb;
pub mod failover;
pub mod fencing;
pub mod host;
pub mod initramfs;
pub mod kernel;
pub mod kmod;
pub mod multinode;
pub mod net;
pub mod node;
pub mod opcheck;
pub mod packages;
pub mod qga;
pub mod rootfs;
pub mod scenario;
pub mod single;
pub mod supervision;
pub mod target;
pub mod tools;
