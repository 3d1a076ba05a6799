//! One node of the virtual cluster: a QEMU VM booting Debian's kernel with
//! systemd as init, its root a copy-on-write overlay of the base image, the
//! shared LUN on virtio-scsi as a `scsi-block` device reached over iSCSI
//! with its own initiator name, a tap on the private bridge, and two control
//! sockets (guest agent, QMP).

use crate::accel::Accel;
use crate::host::{run, say};
use crate::net::{supervise, Network};
use crate::qga::{Agent, ExecOutput, Qmp};
use crate::rootfs::{node_mac, ARTIFACTS_LABEL, GUEST_ARTIFACTS};
use crate::target::{initiator_iqn, PORTAL, TARGET_IQN};
use anyhow::{bail, Context, Result};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Everything needed to start a node's VM.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// 1-based node number.
    pub index: usize,
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
    pub base_image: PathBuf,
    pub artifacts_image: PathBuf,
    pub accel: Accel,
    pub memory_mib: u32,
    /// The node's own files: overlay, sockets, console log.
    pub dir: PathBuf,
}

pub struct Node {
    pub cfg: NodeConfig,
    qemu: Option<Child>,
    agent: Agent,
    /// How long the last boot took to reach multi-user.
    pub last_boot: Option<Duration>,
    boots: u32,
}

impl Node {
    pub fn new(cfg: NodeConfig) -> Result<Node> {
        std::fs::create_dir_all(&cfg.dir)?;
        let overlay = cfg.dir.join("root.qcow2");
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&cfg.base_image)
            .arg(&overlay))?;
        let agent = Agent::new(cfg.dir.join("qga.sock"));
        Ok(Node {
            cfg,
            qemu: None,
            agent,
            last_boot: None,
            boots: 0,
        })
    }

    pub fn name(&self) -> String {
        format!("node{}", self.cfg.index)
    }

    pub fn console_log(&self) -> PathBuf {
        self.cfg
            .dir
            .join(format!("console-{}.log", self.boots.max(1)))
    }

    fn qmp_path(&self) -> PathBuf {
        self.cfg.dir.join("qmp.sock")
    }

    /// Starts the VM (does not wait for it to boot).
    pub fn start(&mut self, net: &Network) -> Result<()> {
        if self.qemu.is_some() {
            bail!("{} is already running", self.name());
        }
        self.boots += 1;
        let c = &self.cfg;
        let n = c.index;
        let d = |name: &str| c.dir.join(name).display().to_string();
        let console = self.console_log();
        let append = format!(
            "console=ttyS0 rw net.ifnames=0 systemd.hostname=node{n} \
             loglevel=4 systemd.show_status=auto panic=-1"
        );
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-name", &format!("mxfs-node{n}"), "-machine", "q35"])
            .args(c.accel.args())
            .args(["-smp", "1", "-m", &c.memory_mib.to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-kernel")
            .arg(&c.vmlinuz)
            .arg("-initrd")
            .arg(&c.initramfs)
            .args(["-append", &append])
            .arg("-drive")
            .arg(format!(
                "file={},if=none,id=root,format=qcow2,cache=writeback,discard=unmap",
                d("root.qcow2")
            ))
            .args(["-device", "virtio-blk-pci,drive=root,serial=mxfs-root"])
            .arg("-drive")
            .arg(format!(
                "file={},if=none,id=artifacts,format=raw,readonly=on",
                c.artifacts_image.display()
            ))
            .args([
                "-device",
                "virtio-blk-pci,drive=artifacts,serial=mxfs-artifacts",
            ])
            .args(["-device", "virtio-scsi-pci,id=scsi0"])
            .arg("-blockdev")
            .arg(format!(
                "driver=iscsi,node-name=lun0,transport=tcp,portal={PORTAL},target={TARGET_IQN},\
                 lun=1,initiator-name={},cache.direct=on",
                initiator_iqn(n)
            ))
            .args(["-device", "scsi-block,bus=scsi0.0,drive=lun0"])
            .arg("-netdev")
            .arg(format!(
                "tap,id=net0,ifname={},script=no,downscript=no",
                crate::net::tap_name(n)
            ))
            .arg("-device")
            .arg(format!("virtio-net-pci,netdev=net0,mac={}", node_mac(n)))
            .arg("-chardev")
            .arg(format!(
                "socket,id=qga,path={},server=on,wait=off",
                d("qga.sock")
            ))
            .args(["-device", "virtio-serial-pci"])
            .args([
                "-device",
                "virtserialport,chardev=qga,name=org.qemu.guest_agent.0",
            ])
            .arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", d("qmp.sock")))
            .arg("-chardev")
            .arg(format!("file,id=console,path={}", console.display()))
            .args(["-serial", "chardev:console"])
            .stdin(Stdio::null())
            .stdout(File::create(d("qemu.log"))?)
            .stderr(File::create(d("qemu.err"))?);
        supervise(&mut cmd, Some(net.ns()));
        self.qemu = Some(cmd.spawn().context("starting qemu-system-x86_64")?);
        self.agent.reset();
        Ok(())
    }

    /// Waits until systemd reports multi-user reached, asking the guest (its
    /// agent, then `systemctl`), never the console text.
    pub fn wait_ready(&mut self, started: Instant, timeout: Duration) -> Result<Duration> {
        let deadline = started + timeout;
        loop {
            self.check_alive()?;
            if self.agent.ping() {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: guest agent never answered; console: {}",
                    self.name(),
                    self.console_log().display()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(5));
        let out = self.sh(
            "systemctl is-system-running --wait; systemctl is-active multi-user.target",
            left,
        )?;
        let state: Vec<&str> = out.stdout.lines().collect();
        if state.last() != Some(&"active") {
            bail!("{}: multi-user.target not active: {:?}", self.name(), state);
        }
        if state.first() != Some(&"running") {
            let failed = self.sh(
                "systemctl --failed --no-legend --plain",
                Duration::from_secs(20),
            )?;
            say(format!(
                "{}: system is {:?}; failed units: {}",
                self.name(),
                state[0],
                failed.stdout.trim()
            ));
        }
        let took = started.elapsed();
        self.last_boot = Some(took);
        // Mounted here rather than from fstab, so a slow udev under TCG
        // cannot fail the boot; mount(8) finds the label through libblkid.
        self.must(&format!(
            "mountpoint -q {GUEST_ARTIFACTS} || mount -o ro LABEL={ARTIFACTS_LABEL} {GUEST_ARTIFACTS}"
        ))?;
        Ok(took)
    }

    /// A clean reboot from inside the guest (`systemctl reboot`, as an
    /// admin would): waits until the node is back with a new boot id and
    /// multi-user reached.
    pub fn reboot(&mut self, timeout: Duration) -> Result<Duration> {
        const BOOT_ID: &str = "cat /proc/sys/kernel/random/boot_id";
        let before = self.must(BOOT_ID)?;
        let started = Instant::now();
        // A moment later, so that this command returns first.
        self.must("systemd-run --quiet --on-active=1 systemctl reboot")?;
        let deadline = started + timeout;
        loop {
            std::thread::sleep(Duration::from_secs(2));
            self.check_alive()?;
            self.agent.reset();
            if self.agent.ping() {
                if let Ok(out) = self.sh(BOOT_ID, Duration::from_secs(5)) {
                    if out.ok() && !out.stdout.trim().is_empty() && out.stdout != before {
                        break;
                    }
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: not back from a reboot in {} s; console: {}",
                    self.name(),
                    timeout.as_secs(),
                    self.console_log().display()
                );
            }
        }
        self.wait_ready(started, timeout)
    }

    fn check_alive(&mut self) -> Result<()> {
        match &mut self.qemu {
            None => bail!("{} is powered off", self.name()),
            Some(child) => {
                if let Some(st) = child.try_wait()? {
                    self.qemu = None;
                    let err =
                        std::fs::read_to_string(self.cfg.dir.join("qemu.err")).unwrap_or_default();
                    bail!("{}: QEMU exited ({st}): {}", self.name(), err.trim());
                }
                Ok(())
            }
        }
    }

    /// True when the guest agent answers within a couple of seconds.
    pub fn responds(&mut self) -> bool {
        self.agent.ping()
    }

    pub fn is_running(&mut self) -> bool {
        self.check_alive().is_ok()
    }

    /// Hard power-off: the QEMU process is killed, nothing in the guest runs
    /// after this.
    pub fn power_off(&mut self) -> Result<()> {
        if let Some(mut child) = self.qemu.take() {
            child.kill()?;
            child.wait()?;
        }
        self.agent.reset();
        Ok(())
    }

    /// Freezes the VM (its CPUs stop; its disk and network state stay).
    pub fn pause(&self) -> Result<()> {
        Qmp::connect(&self.qmp_path())?
            .call("stop", serde_json::Value::Null)
            .map(|_| ())
    }

    pub fn resume(&self) -> Result<()> {
        Qmp::connect(&self.qmp_path())?
            .call("cont", serde_json::Value::Null)
            .map(|_| ())
    }

    /// Runs a shell script in the guest.
    pub fn sh(&mut self, script: &str, timeout: Duration) -> Result<ExecOutput> {
        self.agent
            .exec(script, timeout)
            .with_context(|| format!("on {}", self.name()))
    }

    /// Runs a shell script that must succeed; returns its stdout.
    pub fn must(&mut self, script: &str) -> Result<String> {
        self.must_within(script, Duration::from_secs(120))
    }

    /// [`Node::must`] for a script that may take longer than its 120 s.
    pub fn must_within(&mut self, script: &str, timeout: Duration) -> Result<String> {
        let out = self.sh(script, timeout)?;
        if !out.ok() {
            bail!(
                "{}: `{script}` exited {}:\n{}{}",
                self.name(),
                out.code,
                out.stdout,
                out.stderr
            );
        }
        Ok(out.stdout)
    }

    pub fn write_file(&mut self, path: &str, data: &[u8]) -> Result<()> {
        self.agent.write_file(path, data)
    }

    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>> {
        self.agent.read_file(path)
    }

    /// Saves the guest's journal next to its console log (best effort).
    pub fn save_journal(&mut self, into: &Path) -> Result<()> {
        let out = self.sh(
            "journalctl -b --no-pager -o short-monotonic",
            Duration::from_secs(60),
        )?;
        std::fs::write(into, out.stdout)?;
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.power_off();
    }
}
