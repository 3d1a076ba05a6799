//! `cargo xtask`: the project's task runner.
//!
//! - `cargo xtask demo [--nodes N] [--kernel 6.1]`: set up what is missing,
//!   bring up a virtual cluster and show MXFS working in it.
//! - `cargo xtask test`: set up what is missing and run every test the
//!   project has (format, lints, unit tests, 3 s of fuzzing per decoder,
//!   cluster scenarios).
//! - `cargo xtask test --long`: the same with the long tier's sizes
//!   (fsx 100,000 operations per run instead of 10,000, 60 s of fuzzing
//!   per decoder) and the failover soak (20 owner failovers).
//! - `cargo xtask soak [--rounds N]`: only the three-node failover
//!   scenarios and the failover soak (N owner failovers under a write
//!   load, 20 by default): boots three nodes, installs MXFS on each.
//! - `cargo xtask setup [--kernel 6.1]`: only the set-up.
//! - `cargo xtask run [--nodes N] -- SCRIPT`: boot a cluster with MXFS
//!   installed on every node, run SCRIPT with `sh -c` on node 1, print
//!   its output, tear down (for poking at a problem).
//! - `cargo xtask kmod [--kernel 6.1]`: build mxfs.ko against that kernel's
//!   headers (W=1, -Werror); `--kernel all` builds for 5.10, 6.1 and 6.12.
//! - `cargo xtask deb`: build the `mxfs` and `mxfs-dkms` Debian packages
//!   into `target/deb/` and check them with lintian.

use anyhow::{bail, Context, Result};
use mxfs_testbed::cluster::{self, Cluster, Options};
use mxfs_testbed::host::{self, say, step, workspace_root};
use mxfs_testbed::kernel::Series;
use mxfs_testbed::{checks, single};
use std::process::Command;
use std::time::Instant;

const USAGE: &str = "usage: cargo xtask <demo|test|soak|setup|kmod|deb|run> [--nodes N] \
     [--kernel 5.10|6.1|6.12|all] [--long] [--rounds N]";

/// Owner failovers in the soak: `cargo xtask soak` (unless `--rounds`)
/// and the long tier.
const SOAK_ROUNDS: usize = 20;

struct Args {
    cmd: String,
    nodes: usize,
    series: Series,
    all_kernels: bool,
    long: bool,
    rounds: usize,
    script: Option<String>,
}

fn parse_args() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().context(USAGE)?;
    let mut args = Args {
        cmd,
        nodes: 2,
        series: Series::V6_1,
        all_kernels: false,
        long: false,
        rounds: SOAK_ROUNDS,
        script: None,
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--nodes" => {
                args.nodes = it
                    .next()
                    .context("--nodes needs a number")?
                    .parse()
                    .context("--nodes")?
            }
            "--kernel" => match it.next().context("--kernel needs a series")?.as_str() {
                "all" => args.all_kernels = true,
                s => args.series = Series::parse(s)?,
            },
            "--long" => args.long = true,
            "--rounds" => {
                args.rounds = it
                    .next()
                    .context("--rounds needs a number")?
                    .parse()
                    .context("--rounds")?
            }
            "--" => args.script = Some(it.by_ref().collect::<Vec<_>>().join(" ")),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(args)
}

fn cargo(args: &[&str]) -> Result<()> {
    cargo_with(args, &[])
}

fn cargo_with(args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    say(format!("cargo {}", args.join(" ")));
    let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(workspace_root())
        .status()?;
    if !st.success() {
        bail!("cargo {} failed ({st})", args.join(" "));
    }
    Ok(())
}

fn build_artifacts() -> Result<()> {
    step("building the project's binaries", || {
        cargo(&["build", "--release", "--workspace", "--bins"])
    })
}

fn demo(args: &Args) -> Result<()> {
    let assets = cluster::prepare(args.series)?;
    build_artifacts()?;
    let mut artifacts = host::project_artifacts();
    artifacts.extend(mxfs_testbed::deb::artifacts()?);
    let opts = Options {
        nodes: args.nodes,
        artifacts,
        ..Options::default()
    };
    let mut c = Cluster::start(&assets, &opts)?;
    checks::all_booted(&mut c)?;
    if c.len() >= 2 {
        checks::same_lun(&mut c)?;
        checks::pr_fencing(&mut c)?;
        checks::network(&mut c)?;
    }
    say("installing MXFS on every node (apt install of the .debs; DKMS builds the module)");
    for n in 1..=c.len() {
        single::install(c.node(n))?;
    }
    let dev = single::fresh_volume(c.node(1))?;
    let m = single::MNT;
    // node1 mounts first and owns the volume; the others are its clients
    for n in 1..=c.len() {
        let dev_n = checks::lun_device(c.node(n))?;
        let shown = c.node(n).must(&format!(
            "set -e; mount -t mxfs {dev_n} {m}; echo \"hello from $(hostname)\" > {m}/hello-$(hostname); \
             grep ' {m} ' /proc/mounts; \
             echo \"role: $(busctl get-property org.mxfs1.Volume.U$(blkid -s UUID -o value {dev_n} | tr -d -) \
             /org/mxfs1/Volume org.mxfs1.Volume Role)\"; cat {m}/hello-*"
        ))?;
        say(format!("node{n}:"));
        println!("{shown}");
    }
    // clients first, then the owner (the owner does not hand over yet)
    for n in (1..=c.len()).rev() {
        c.node(n).must(&format!("umount {m}"))?;
    }
    let shown = c.node(1).must(&format!(
        "echo \"after umount on every node, mxfsd processes on node1: $(pgrep -c -x mxfsd || true)\"; \
         xfs_repair -n {dev} >/dev/null && echo 'xfs_repair -n: clean'"
    ))?;
    println!("{shown}");
    say("demo done; tearing the cluster down");
    Ok(())
}

/// Prepares the testbed and hands the scenario tests (a child process)
/// the accelerator probe's answer rather than probing again.
fn prepare_scenarios(args: &Args) -> Result<()> {
    let assets = cluster::prepare(args.series)?;
    let accel = match assets.accel {
        mxfs_testbed::accel::Accel::Kvm => "kvm",
        mxfs_testbed::accel::Accel::Tcg => "tcg",
    };
    std::env::set_var("MXFS_TB_ACCEL", accel);
    Ok(())
}

fn test(args: &Args) -> Result<()> {
    let t = Instant::now();
    prepare_scenarios(args)?;
    if args.long {
        std::env::set_var("MXFS_FSX_OPS", "100000");
        std::env::set_var("MXFS_SOAK_ROUNDS", SOAK_ROUNDS.to_string());
    }
    step("checking formatting", || {
        cargo(&["fmt", "--all", "--", "--check"])
    })?;
    step("running clippy", || {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    // The code's own docs: every intra-doc link resolves.
    step("checking the API docs", || {
        cargo_with(
            &[
                "doc",
                "--workspace",
                "--no-deps",
                "--document-private-items",
            ],
            &[("RUSTDOCFLAGS", "-D warnings")],
        )
    })?;
    // Release throughout, so the unit tests, the binaries the nodes get and
    // the scenario runner share one build of the dependencies.
    step("running unit tests", || {
        cargo(&["test", "--release", "--workspace"])
    })?;
    // mxfsd's decoders of network, netlink and disk input, each fuzzed for
    // a bounded time (issue 4); the targets print their seeds, and a crash
    // prints the input to replay.
    let fuzz_secs = if args.long { "60" } else { "3" };
    step("fuzzing the decoders", || {
        std::env::set_var("MXFS_FUZZ_SECS", fuzz_secs);
        cargo(&[
            "test",
            "--release",
            "-p",
            "mxfsd",
            "fuzz::",
            "--",
            "--ignored",
            "--test-threads",
            "2",
            "--nocapture",
        ])
    })?;
    build_artifacts()?;
    step("running cluster scenarios", || run_scenarios(&[]))?;
    say(format!(
        "all tests passed in {:.0} s",
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The three-node failover scenarios and the soak, nothing else (the
/// scenario runner boots three nodes and installs MXFS on each for
/// them).
/// The scenario tests, those whose names contain one of `filters` (all
/// when empty).
fn run_scenarios(filters: &[&str]) -> Result<()> {
    let mut a = vec![
        "test",
        "--release",
        "-p",
        "mxfs-testbed",
        "--test",
        "scenarios",
    ];
    if !filters.is_empty() {
        a.push("--");
        a.extend_from_slice(filters);
    }
    cargo(&a)
}

fn soak(args: &Args) -> Result<()> {
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let t = Instant::now();
    prepare_scenarios(args)?;
    std::env::set_var("MXFS_SOAK_ROUNDS", args.rounds.to_string());
    build_artifacts()?;
    step(
        &format!(
            "running the failover scenarios and a soak of {} owner failovers",
            args.rounds
        ),
        || run_scenarios(&["failover_"]),
    )?;
    say(format!("soak passed in {:.0} s", t.elapsed().as_secs_f64()));
    Ok(())
}

fn run_script(args: &Args) -> Result<()> {
    let script = args
        .script
        .clone()
        .context("usage: cargo xtask run [--nodes N] -- SCRIPT")?;
    let assets = cluster::prepare(args.series)?;
    build_artifacts()?;
    let mut artifacts = host::project_artifacts();
    artifacts.extend(mxfs_testbed::deb::artifacts()?);
    artifacts.extend(mxfs_testbed::tools::ensure()?);
    let opts = Options {
        nodes: args.nodes,
        artifacts,
        ..Options::default()
    };
    let mut c = Cluster::start(&assets, &opts)?;
    for n in 1..=c.len() {
        single::install(c.node(n))?;
    }
    let out = c
        .node(1)
        .sh(&script, std::time::Duration::from_secs(3600))?;
    print!("{}", out.stdout);
    eprint!("{}", out.stderr);
    say(format!("exit status {}", out.code));
    Ok(())
}

fn build_kmod(args: &Args) -> Result<()> {
    host::ensure_sbin_path();
    host::ensure_host_packages()?;
    let series = if args.all_kernels {
        Series::ALL.to_vec()
    } else {
        vec![args.series]
    };
    for s in series {
        let k = mxfs_testbed::kernel::ensure(s)?;
        let ko = step(&format!("building mxfs.ko for {}", k.release), || {
            mxfs_testbed::kmod::build(&k)
        })?;
        say(format!("{}: {}", k.release, ko.display()));
    }
    Ok(())
}

fn build_debs() -> Result<()> {
    host::ensure_sbin_path();
    host::ensure_host_packages()?;
    build_artifacts()?;
    let debs = step("building the Debian packages", mxfs_testbed::deb::build)?;
    for d in debs {
        say(d.display().to_string());
    }
    Ok(())
}

fn main() {
    let r = parse_args().and_then(|args| match args.cmd.as_str() {
        "setup" => cluster::prepare(args.series).map(|a| {
            say(format!(
                "ready: kernel {}, accelerator {:?}",
                a.kernel.release, a.accel
            ));
        }),
        "demo" => demo(&args),
        "kmod" => build_kmod(&args),
        "deb" => build_debs(),
        "run" => run_script(&args),
        "test" => test(&args),
        "soak" => soak(&args),
        other => Err(anyhow::anyhow!("unknown command {other:?}\n{USAGE}")),
    });
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
