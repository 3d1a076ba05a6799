//! The testbed's private network: a network namespace of its own, held by
//! a child process, with a bridge and one tap per node. QEMU and `tgtd` run
//! inside it, so guest traffic and iSCSI stay on that namespace's bridge and
//! loopback and never leave the machine.
//!
//! The namespace belongs to a process, not a name in `/var/run/netns`, so
//! when the testbed dies (even by SIGKILL) the holder dies with it
//! (parent-death signal) and the kernel removes the namespace, its bridge
//! and its taps: nothing is left to clean up.

use crate::host::run;
use crate::rootfs::NET_PREFIX;
use anyhow::{Context, Result};
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

/// Makes `cmd` die with the testbed and, if given, enter a namespace.
pub fn supervise(cmd: &mut Command, netns: Option<&File>) {
    let fd = netns.map(|f| f.as_raw_fd());
    // SAFETY: only async-signal-safe calls (prctl, setns, getppid) run
    // between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() == 1 {
                // The parent is already gone.
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            if let Some(fd) = fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

pub struct Network {
    holder: Child,
    ns: File,
}

pub const BRIDGE: &str = "mxbr0";

pub fn tap_name(node: usize) -> String {
    format!("mxtap{node}")
}

impl Network {
    /// Creates the namespace with its loopback and bridge up.
    pub fn create() -> Result<Network> {
        let mut cmd = Command::new("unshare");
        cmd.args(["--net", "--", "sleep", "infinity"])
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        supervise(&mut cmd, None);
        let holder = cmd
            .spawn()
            .context("starting the network namespace holder")?;
        let path = format!("/proc/{}/ns/net", holder.id());
        // unshare needs a moment to switch namespaces before exec'ing sleep.
        let own = std::fs::read_link("/proc/self/ns/net")?;
        let mut tries = 0;
        while std::fs::read_link(&path).ok().as_ref() == Some(&own)
            || !std::path::Path::new(&path).exists()
        {
            tries += 1;
            if tries > 200 {
                anyhow::bail!("the namespace holder never entered its own network namespace");
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let ns = File::open(&path).with_context(|| format!("opening {path}"))?;
        let net = Network { holder, ns };
        net.ip(&["link", "set", "lo", "up"])?;
        net.ip(&[
            "link",
            "add",
            BRIDGE,
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ])?;
        net.ip(&["addr", "add", &format!("{NET_PREFIX}.1/24"), "dev", BRIDGE])?;
        net.ip(&["link", "set", BRIDGE, "up"])?;
        Ok(net)
    }

    /// The namespace, for [`supervise`].
    pub fn ns(&self) -> &File {
        &self.ns
    }

    /// Runs `ip` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(args);
        supervise(&mut cmd, Some(&self.ns));
        Ok(String::from_utf8_lossy(&run(&mut cmd)?.stdout).into_owned())
    }

    pub fn add_tap(&self, node: usize) -> Result<String> {
        let tap = tap_name(node);
        self.ip(&["tuntap", "add", "dev", &tap, "mode", "tap"])?;
        self.ip(&["link", "set", &tap, "master", BRIDGE])?;
        self.ip(&["link", "set", &tap, "up"])?;
        Ok(tap)
    }

    /// Cuts a node off the network (its tap goes down; the disk path, on
    /// the namespace's loopback, stays).
    pub fn cut(&self, node: usize) -> Result<()> {
        self.ip(&["link", "set", &tap_name(node), "down"])
            .map(|_| ())
    }

    pub fn restore(&self, node: usize) -> Result<()> {
        self.ip(&["link", "set", &tap_name(node), "up"]).map(|_| ())
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}
