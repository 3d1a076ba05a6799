//! The virtual cluster: N nodes on one private network sharing one iSCSI
//! LUN, with faults on demand (power-off, restart, pause, network cut).
//! Each run keeps its logs (consoles, journals, target log) in its own
//! directory under `target/testbed/runs/`.

use crate::accel::{self, Accel};
use crate::host::{self, say, step, testbed_dir};
use crate::initramfs;
use crate::kernel::{self, Kernel, Series};
use crate::net::Network;
use crate::node::{Node, NodeConfig};
use crate::rootfs::{self, ARTIFACTS_LABEL, MAX_NODES};
use crate::target::Target;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Everything a cluster boots from, prepared once and cached.
#[derive(Clone, Debug)]
pub struct Assets {
    pub kernel: Kernel,
    pub initramfs: PathBuf,
    pub base_image: PathBuf,
    pub accel: Accel,
}

/// Installs host packages and fetches or builds whatever is missing.
pub fn prepare(series: Series) -> Result<Assets> {
    if !host::is_root() {
        bail!("the testbed needs root (network namespaces, taps, iSCSI target)");
    }
    host::ensure_sbin_path();
    host::ensure_host_packages()?;
    let kernel = kernel::ensure(series)?;
    let base_image = rootfs::ensure_image(&kernel)?;
    let initramfs = initramfs::ensure(&kernel)?;
    let accel = accel::choose(&kernel.vmlinuz())?;
    Ok(Assets {
        kernel,
        initramfs,
        base_image,
        accel,
    })
}

#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: usize,
    pub lun_bytes: u64,
    pub memory_mib: u32,
    /// Files copied onto every node's artifacts disk (mounted read-only at
    /// `/opt/mxfs`): (path on the host, name on the disk).
    pub artifacts: Vec<(PathBuf, String)>,
    pub boot_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 2,
            lun_bytes: 2 << 30,
            memory_mib: 1024,
            artifacts: Vec::new(),
            boot_timeout: Duration::from_secs(240),
        }
    }
}

pub struct Cluster {
    pub run_dir: PathBuf,
    // Field order is drop order: nodes go before the target, the target
    // before the network namespace it lives in.
    nodes: Vec<Node>,
    pub target: Target,
    pub net: Network,
}

/// Keeps the newest runs' directories and removes older ones.
fn prune_runs(runs: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(runs) else {
        return;
    };
    let mut dirs: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    if dirs.len() > keep {
        for d in &dirs[..dirs.len() - keep] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Cluster {
    /// Sets up network, target and nodes, boots every node, and waits until
    /// each has reached systemd's multi-user target.
    pub fn start(assets: &Assets, opts: &Options) -> Result<Cluster> {
        if opts.nodes == 0 || opts.nodes > MAX_NODES {
            bail!("a cluster has 1 to {MAX_NODES} nodes, not {}", opts.nodes);
        }
        let runs = testbed_dir().join("runs");
        prune_runs(&runs, 8);
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let run_dir = runs.join(format!("{stamp}-{}", std::process::id()));
        std::fs::create_dir_all(&run_dir)?;
        say(format!("run directory (logs): {}", run_dir.display()));

        let artifacts = run_dir.join("artifacts");
        std::fs::create_dir_all(&artifacts)?;
        for (from, name) in &opts.artifacts {
            std::fs::copy(from, artifacts.join(name))
                .with_context(|| format!("copying artifact {}", from.display()))?;
        }
        let artifacts_image = run_dir.join("artifacts.img");
        rootfs::make_ext4(&artifacts, &artifacts_image, ARTIFACTS_LABEL, "256M")?;

        let net = Network::create()?;
        let target = Target::start(
            &net,
            &run_dir.join("lun.img"),
            opts.lun_bytes,
            &run_dir.join("tgtd.log"),
        )?;
        let mut cluster = Cluster {
            run_dir: run_dir.clone(),
            nodes: Vec::new(),
            target,
            net,
        };
        for n in 1..=opts.nodes {
            cluster.net.add_tap(n)?;
            cluster.nodes.push(Node::new(NodeConfig {
                index: n,
                vmlinuz: assets.kernel.vmlinuz(),
                initramfs: assets.initramfs.clone(),
                base_image: assets.base_image.clone(),
                artifacts_image: artifacts_image.clone(),
                accel: assets.accel,
                memory_mib: opts.memory_mib,
                dir: run_dir.join(format!("node{n}")),
            })?);
        }
        step(
            &format!("booting {} nodes ({:?})", opts.nodes, assets.accel),
            || {
                let t = Instant::now();
                for node in cluster.nodes.iter_mut() {
                    node.start(&cluster.net)?;
                }
                for node in cluster.nodes.iter_mut() {
                    let took = node.wait_ready(t, opts.boot_timeout)?;
                    say(format!(
                        "{} reached multi-user in {:.1} s",
                        node.name(),
                        took.as_secs_f64()
                    ));
                }
                Ok(())
            },
        )?;
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `n` (1-based).
    pub fn node(&mut self, n: usize) -> &mut Node {
        &mut self.nodes[n - 1]
    }

    /// Hard power-off of node `n`.
    pub fn power_off(&mut self, n: usize) -> Result<()> {
        say(format!("node{n}: power off"));
        self.nodes[n - 1].power_off()
    }

    /// Boots node `n` again and waits for multi-user.
    pub fn boot(&mut self, n: usize, timeout: Duration) -> Result<Duration> {
        let node = &mut self.nodes[n - 1];
        node.start(&self.net)?;
        let took = node.wait_ready(Instant::now(), timeout)?;
        say(format!("node{n}: back in {:.1} s", took.as_secs_f64()));
        Ok(took)
    }

    /// Restart = power off, then boot.
    pub fn restart(&mut self, n: usize, timeout: Duration) -> Result<Duration> {
        self.power_off(n)?;
        self.boot(n, timeout)
    }

    pub fn cut_network(&self, n: usize) -> Result<()> {
        say(format!("node{n}: network cut"));
        self.net.cut(n)
    }

    pub fn restore_network(&self, n: usize) -> Result<()> {
        say(format!("node{n}: network restored"));
        self.net.restore(n)
    }

    /// Saves every running node's journal into the run directory.
    pub fn save_logs(&mut self) {
        for node in self.nodes.iter_mut() {
            if node.is_running() {
                let path = node.cfg.dir.join("journal.txt");
                if let Err(e) = node.save_journal(&path) {
                    say(format!("{}: journal not saved: {e:#}", node.name()));
                }
                if let Ok(out) = node.sh(
                    "systemd-analyze; systemd-analyze critical-chain; systemd-analyze blame | head -n 25",
                    Duration::from_secs(60),
                ) {
                    let _ = std::fs::write(node.cfg.dir.join("boot-analysis.txt"), out.stdout);
                }
            }
        }
        if let Ok(show) = self.target.show() {
            let _ = std::fs::write(self.run_dir.join("target-show.txt"), show);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.save_logs();
        say(format!("logs kept in {}", self.run_dir.display()));
    }
}
