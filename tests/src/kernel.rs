//! Guest kernels: Debian's own, fetched with `apt-get download` through a
//! private apt configuration (the host's apt state is never touched) and
//! unpacked with `dpkg-deb -x` under `target/testbed/kernels/`.
//!
//! One unpacked root per kernel release holds the image, its modules, and
//! the headers (`-amd64`, `-common`, `linux-kbuild-*`) so `kmod/` can be
//! built against the very kernel the guests boot.

use crate::host::{debian_mirror, run, run_shown, run_text, say, step, testbed_dir, Stamp};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A kernel series the testbed knows how to fetch: which Debian suites
/// carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Series {
    /// Debian 11 bullseye.
    V5_10,
    /// Debian 12 bookworm (the default guest kernel).
    V6_1,
    /// bookworm-backports.
    V6_12,
}

impl Series {
    pub const ALL: [Series; 3] = [Series::V5_10, Series::V6_1, Series::V6_12];

    pub fn parse(s: &str) -> Result<Series> {
        match s {
            "5.10" => Ok(Series::V5_10),
            "6.1" => Ok(Series::V6_1),
            "6.12" => Ok(Series::V6_12),
            _ => bail!("unknown kernel series {s:?}: expected 5.10, 6.1 or 6.12"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Series::V5_10 => "5.10",
            Series::V6_1 => "6.1",
            Series::V6_12 => "6.12",
        }
    }

    fn sources(self, mirror: &str) -> String {
        let security = mirror.replace("/debian", "/debian-security");
        let line =
            |uri: &str, suite: &str| format!("deb [signed-by={KEYRING}] {uri} {suite} main\n");
        match self {
            Series::V5_10 => line(mirror, "bullseye") + &line(&security, "bullseye-security"),
            Series::V6_1 => line(mirror, "bookworm") + &line(&security, "bookworm-security"),
            Series::V6_12 => line(mirror, "bookworm-backports"),
        }
    }
}

const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// An unpacked Debian kernel.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub series: Series,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-amd64`.
    pub release: String,
    /// Where the packages were unpacked.
    pub root: PathBuf,
}

impl Kernel {
    pub fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }
    pub fn modules_dir(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{}", self.release))
    }
    /// The downloaded header packages (`linux-headers-*`, `linux-kbuild-*`)
    /// of this kernel, to install in a guest.
    pub fn header_debs(&self) -> Result<Vec<PathBuf>> {
        let dir = self
            .root
            .parent()
            .context("kernel root has no parent")?
            .join("debs")
            .join(&self.release);
        let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                (n.starts_with("linux-headers-") || n.starts_with("linux-kbuild-"))
                    && n.ends_with(".deb")
            })
            .collect();
        v.sort();
        if v.is_empty() {
            anyhow::bail!("no header packages in {}", dir.display());
        }
        Ok(v)
    }
    /// The kbuild tree to pass as `make -C`.
    pub fn headers_dir(&self) -> PathBuf {
        self.root
            .join(format!("usr/src/linux-headers-{}", self.release))
    }
}

/// apt-get/apt-cache with the testbed's private state for one series.
struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    fn new(series: Series) -> Result<Self> {
        let dir = testbed_dir().join("apt").join(series.name());
        for sub in [
            "lists/partial",
            "cache/archives/partial",
            "etc/preferences.d",
        ] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(
            dir.join("etc/sources.list"),
            series.sources(&debian_mirror()),
        )?;
        std::fs::write(dir.join("status"), b"")?;
        Ok(PrivateApt { dir })
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        let d = |s: &str| self.dir.join(s).display().to_string();
        c.arg("-o")
            .arg(format!("Dir::Etc::sourcelist={}", d("etc/sources.list")))
            .arg("-o")
            .arg("Dir::Etc::sourceparts=-")
            .arg("-o")
            .arg(format!(
                "Dir::Etc::preferencesparts={}",
                d("etc/preferences.d")
            ))
            .arg("-o")
            .arg(format!("Dir::State::Lists={}", d("lists")))
            .arg("-o")
            .arg(format!("Dir::State::status={}", d("status")))
            .arg("-o")
            .arg(format!("Dir::Cache={}", d("cache")))
            .arg("-o")
            .arg("APT::Get::List-Cleanup=0")
            .arg("-o")
            .arg("Debug::NoLocking=1")
            .arg("-o")
            .arg("APT::Sandbox::User=root");
        c
    }

    fn update(&self) -> Result<()> {
        run(self.cmd("apt-get").args(["update", "-q"])).map(|_| ())
    }

    /// The packages `pkg` depends on whose names start with `prefix`.
    fn depends(&self, pkg: &str, prefix: &str) -> Result<Vec<String>> {
        let text = run_text(self.cmd("apt-cache").args(["depends", "--important", pkg]))?;
        Ok(text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Depends:"))
            .map(|s| s.trim().trim_matches(|c| c == '<' || c == '>').to_string())
            .filter(|s| s.starts_with(prefix))
            .collect())
    }

    fn download(&self, pkgs: &[String], into: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(into)?;
        run_shown(
            self.cmd("apt-get")
                .arg("download")
                .args(pkgs)
                .current_dir(into),
        )?;
        let mut debs = Vec::new();
        for entry in std::fs::read_dir(into)? {
            let p = entry?.path();
            if p.extension().is_some_and(|e| e == "deb") {
                debs.push(p);
            }
        }
        Ok(debs)
    }
}

/// Fetches (once) and returns the newest kernel of a series, with headers.
pub fn ensure(series: Series) -> Result<Kernel> {
    let kernels = testbed_dir().join("kernels");
    std::fs::create_dir_all(&kernels)?;
    // Reuse a complete unpack without asking the mirror: runs must work
    // offline once the cache is warm. `MXFS_TB_REFRESH=1` asks for newer.
    let pointer = kernels.join(format!("{}.release", series.name()));
    if std::env::var_os("MXFS_TB_REFRESH").is_none() {
        if let Ok(release) = std::fs::read_to_string(&pointer) {
            let k = Kernel {
                series,
                release: release.trim().to_string(),
                root: kernels.join(release.trim()),
            };
            if Stamp::new(&k.root).done() {
                return Ok(k);
            }
        }
    }
    step(
        &format!("fetching Debian's {} kernel", series.name()),
        || {
            let apt = PrivateApt::new(series)?;
            apt.update()?;
            let image = apt
                .depends("linux-image-amd64", "linux-image-")?
                .into_iter()
                .next()
                .context("linux-image-amd64 names no kernel package")?;
            let release = image
                .trim_start_matches("linux-image-")
                .trim_end_matches("-unsigned");
            let release = release.to_string();
            let headers = format!("linux-headers-{release}");
            let mut pkgs = vec![image.clone(), headers.clone()];
            pkgs.extend(apt.depends(&headers, "linux-headers-")?);
            pkgs.extend(apt.depends(&headers, "linux-kbuild-")?);
            let common: Vec<String> = pkgs
                .iter()
                .filter(|p| p.ends_with("-common"))
                .cloned()
                .collect();
            for c in &common {
                pkgs.extend(apt.depends(c, "linux-kbuild-")?);
            }
            pkgs.sort();
            pkgs.dedup();
            say(format!("kernel {release}: {}", pkgs.join(" ")));
            let root = kernels.join(&release);
            if root.exists() {
                std::fs::remove_dir_all(&root)?;
            }
            let debs = apt.download(&pkgs, &kernels.join("debs").join(&release))?;
            for deb in &debs {
                run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
            }
            let k = Kernel {
                series,
                release: release.clone(),
                root,
            };
            fix_headers(&k)?;
            // The package leaves modules.dep to depmod at install time.
            run(Command::new("depmod")
                .arg("-b")
                .arg(&k.root)
                .arg(&k.release))?;
            if !k.vmlinuz().exists() || !k.modules_dir().join("modules.dep").exists() {
                bail!("unpacked kernel {release} lacks its image or modules.dep");
            }
            Stamp::new(&k.root).mark()?;
            std::fs::write(&pointer, &release)?;
            Ok(k)
        },
    )
}

/// Unpacked header trees refer to `/usr/src/...` by absolute path: point
/// them at the unpacked tree instead, and make `lib/modules/*/build` work.
fn fix_headers(k: &Kernel) -> Result<()> {
    let src = k.root.join("usr/src");
    let makefile = k.headers_dir().join("Makefile");
    let text = std::fs::read_to_string(&makefile)
        .with_context(|| format!("reading {}", makefile.display()))?;
    let fixed = text.replace("/usr/src/", &format!("{}/", src.display()));
    std::fs::write(&makefile, fixed)?;
    let build = k.modules_dir().join("build");
    let _ = std::fs::remove_file(&build);
    std::os::unix::fs::symlink(k.headers_dir(), &build)?;
    Ok(())
}
