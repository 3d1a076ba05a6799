//! The benchmark jobs and their report: fio throughput (sequential
//! 1 MiB, random 4 KiB, O_DIRECT) and metadata rates (mxfs-opcheck's
//! create/stat/unlink), run on one directory of a guest, and the table
//! of medians and ratios that compares two runs of them (mxfs against
//! raw XFS on one node; a client against its owner).  Figures are
//! printed, never asserted against a target: the testbed is an emulated
//! machine.

use crate::host::say;
use crate::node::Node;
use crate::opcheck::meta_bench::STAT_PASSES;
use crate::rootfs::GUEST_ARTIFACTS;
use anyhow::{Context, Result};
use std::collections::HashMap;

/// One figure in both runs.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: &'static str,
    pub unit: &'static str,
    /// The run compared against (raw XFS; the owner).
    pub base: f64,
    /// The run measured (mxfs; a client).
    pub measured: f64,
    /// measured / base: the median of the rounds' ratios (see [`rows`]).
    pub ratio: f64,
    /// The target for measured / base, where there is one.
    pub target: Option<f64>,
}

/// fio jobs: (name, rw, block size, extra arguments, metric).
const FIO_JOBS: &[(&str, &str, &str, &str, Metric)] = &[
    (
        "seq-write-1M",
        "write",
        "1M",
        "--size=256M --end_fsync=1",
        Metric::MiBps,
    ),
    ("seq-read-1M", "read", "1M", "--size=256M", Metric::MiBps),
    (
        "rand-write-4k",
        "randwrite",
        "4k",
        "--size=64M --runtime=10 --time_based",
        Metric::Iops,
    ),
    (
        "rand-read-4k",
        "randread",
        "4k",
        "--size=64M --runtime=10 --time_based",
        Metric::Iops,
    ),
];

#[derive(Clone, Copy)]
enum Metric {
    MiBps,
    Iops,
}

/// How long one job may take on a slow node (a client under TCG).
const JOB_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(900);

fn fio(node: &mut Node, dir: &str, rw: &str, bs: &str, extra: &str, metric: Metric) -> Result<f64> {
    let out = node.must_within(
        &format!(
            "fio --name=bench --directory={dir} --filename=bench.dat --rw={rw} --bs={bs} {extra} \
             --direct=1 --ioengine=psync --output-format=json"
        ),
        JOB_TIMEOUT,
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("fio JSON: {out}"))?;
    let side = if rw.contains("write") {
        "write"
    } else {
        "read"
    };
    let job = &v["jobs"][0][side];
    let value = match metric {
        Metric::MiBps => job["bw_bytes"].as_f64().map(|b| b / (1 << 20) as f64),
        Metric::Iops => job["iops"].as_f64(),
    };
    value
        .filter(|v| *v > 0.0)
        .with_context(|| format!("fio reported no {side} figure: {out}"))
}

fn meta_bench(node: &mut Node, dir: &str, files: usize) -> Result<[f64; 3]> {
    let out = node.must_within(
        &format!("{GUEST_ARTIFACTS}/mxfs-opcheck --meta-bench {dir}/meta {files}"),
        JOB_TIMEOUT,
    )?;
    let mut r = [0.0; 3];
    for (i, key) in ["create=", "stat=", "unlink="].iter().enumerate() {
        r[i] = out
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {key} in {out:?}"))?;
    }
    Ok(r)
}

/// Runs every job in `dir` (a fresh filesystem, or a fresh directory
/// of one): the figures in [`rows`] order.  The sequential figures
/// (a fraction of a second each on XFS) and the metadata ones are the
/// medians of `passes` passes; the random jobs run for a fixed time
/// once.  Each metadata pass starts after a `sync`: deleting fio's file
/// (and a pass's files) leaves XFS inode inactivation and log work
/// running in the background, which would otherwise land in the next
/// pass's timed span by chance.
pub fn figures(node: &mut Node, dir: &str, files: usize, passes: usize) -> Result<Vec<f64>> {
    let passes = passes.max(1);
    let mut v = Vec::new();
    for (_, rw, bs, extra, metric) in FIO_JOBS {
        let runs = if matches!(metric, Metric::MiBps) {
            passes
        } else {
            1
        };
        let mut got = Vec::new();
        for _ in 0..runs {
            if *rw == "write" {
                // every pass writes a new file, allocating as it goes
                node.must(&format!("rm -f {dir}/bench.dat"))?;
            }
            got.push(fio(node, dir, rw, bs, extra, *metric)?);
        }
        v.push(median(got));
    }
    node.must(&format!("rm -f {dir}/bench.dat"))?;
    let mut meta = Vec::new();
    for _ in 0..passes {
        node.must("sync")?;
        meta.push(meta_bench(node, dir, files)?.to_vec());
    }
    v.extend(per_figure_medians(&meta));
    Ok(v)
}

/// The environment variable that asks [`profile_meta`] for a profiled
/// metadata pass after the benchmark's rounds.
pub const PROFILE_VAR: &str = "MXFS_BENCH_PROFILE";

/// Files in a profiled pass: as many as in the benchmark's.
const PROFILE_FILES: usize = 4000;
/// perf's sampling rate in a profiled pass (Hz).
const PROFILE_HZ: u64 = 2999;

/// The kernel functions a profile is split by, with how many calls of
/// each a pass makes per file: the work of open(O_CREAT), of the close
/// after it, of stat (`STAT_PASSES` passes) and of unlink.
const PROFILE_ROOTS: &[(&str, usize)] = &[
    ("path_openat", 1),
    ("__fput", 1),
    ("vfs_statx", STAT_PASSES),
    ("do_unlinkat", 1),
];

/// Functions shown per root in a profile comparison.
const PROFILE_TOP: usize = 25;

/// The sampled kernel call stacks of one profiled metadata pass: those
/// of the benchmark's own process from the outermost `PROFILE_ROOTS`
/// function down (";"-joined, outermost first) with their sample
/// counts, and every process's samples (mxfsd's threads among them).
#[derive(Debug, Default)]
pub struct Profile {
    pub label: String,
    pub rates: String,
    pub stacks: Vec<(String, u64)>,
    pub by_process: Vec<(String, u64)>,
}

/// One metadata pass on `dir` under `perf record -a -g` (sampling, so a
/// small function costs what it costs; the function-graph tracer this
/// replaced inflated them): the stacks, folded in the guest.  For
/// finding where a filesystem spends its time; perf slows the guest
/// down, so the pass's rates are not comparable with the benchmark's.
pub fn profile_meta(node: &mut Node, dir: &str, label: &str) -> Result<Profile> {
    let roots: Vec<String> = PROFILE_ROOTS
        .iter()
        .map(|(r, _)| format!("s[i] == \"{r}\""))
        .collect();
    let script = format!(
        r#"set -e
echo -1 > /proc/sys/kernel/perf_event_paranoid
echo 0 > /proc/sys/kernel/kptr_restrict
sync
perf record -q -F {hz} -a -g -o /tmp/perf.data -- {GUEST_ARTIFACTS}/mxfs-opcheck --meta-bench {dir}/meta {files} 2>&1
perf script -i /tmp/perf.data -F comm,ip,sym 2>/dev/null | awk '
  /^\t/ {{ n++; s[n] = ($1 ~ /^[0-9a-f]+$/) ? $2 : $1; next }}
  /^ *[^ \t]/ {{ n = 0; comm = $1; next }}
  /^$/ {{
    procs[comm]++
    if (comm == "mxfs-opcheck") {{
      st = ""; on = 0
      for (i = n; i >= 1; i--) {{
        if (!on && ({roots})) on = 1
        if (on) st = st (st == "" ? "" : ";") s[i]
      }}
      if (st != "") c[st]++
    }}
    n = 0
  }}
  END {{
    for (k in c) print "stack", c[k], k
    for (p in procs) print "process", procs[p], p
  }}'
rm -f /tmp/perf.data
"#,
        hz = PROFILE_HZ,
        files = PROFILE_FILES,
        roots = roots.join(" || "),
    );
    let out = node.must_within(&script, JOB_TIMEOUT)?;
    parse_profile(label, &out)
}

/// [`profile_meta`]'s guest output: the pass's rates line, then
/// `stack N a;b;c` and `process N name` lines.
fn parse_profile(label: &str, out: &str) -> Result<Profile> {
    let mut p = Profile {
        label: label.to_string(),
        ..Profile::default()
    };
    for line in out.lines() {
        if line.starts_with("meta ") {
            p.rates = line.trim().to_string();
            continue;
        }
        let mut w = line.splitn(3, ' ');
        let (Some(kind), Some(n), Some(what)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match kind {
            "stack" => p.stacks.push((what.trim().to_string(), n)),
            "process" => p.by_process.push((what.trim().to_string(), n)),
            _ => {}
        }
    }
    anyhow::ensure!(
        !p.rates.is_empty() && !p.stacks.is_empty(),
        "profile {label}: no rates or no samples in:\n{out}"
    );
    p.by_process
        .sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    Ok(p)
}

/// Samples of each function in the stacks under `root` (each stack
/// counts once per function in it, recursion or not), `root` included.
fn inclusive<'a>(stacks: &'a [(String, u64)], root: &str) -> HashMap<&'a str, u64> {
    let mut counts = HashMap::new();
    for (stack, n) in stacks {
        let mut frames: Vec<&str> = stack.split(';').collect();
        if frames.first() != Some(&root) {
            continue;
        }
        frames.sort_unstable();
        frames.dedup();
        for f in frames {
            *counts.entry(f).or_default() += n;
        }
    }
    counts
}

/// Prints two profiles side by side: per root, its samples and mean
/// time per call on each side, then the functions under it with the
/// most samples on either side (inclusive), with the difference; and
/// each side's samples per process.
pub fn print_profiles(base: &Profile, measured: &Profile) {
    for p in [base, measured] {
        say(format!("profile {}: {}", p.label, p.rates));
    }
    for (root, calls_per_file) in PROFILE_ROOTS {
        let b = inclusive(&base.stacks, root);
        let m = inclusive(&measured.stacks, root);
        let of = |v: &HashMap<&str, u64>, f: &str| v.get(f).copied().unwrap_or(0);
        let per_call =
            |n: u64| n as f64 * 1e6 / PROFILE_HZ as f64 / (PROFILE_FILES * calls_per_file) as f64;
        let (bn, mn) = (of(&b, root), of(&m, root));
        say(format!(
            "profile {root}: {} {bn} samples ({:.1} us/call), {} {mn} ({:.1} us/call), {:+.1}%",
            base.label,
            per_call(bn),
            measured.label,
            per_call(mn),
            if bn > 0 {
                (mn as f64 / bn as f64 - 1.0) * 100.0
            } else {
                f64::NAN
            },
        ));
        let mut names: Vec<&str> = b.keys().chain(m.keys()).copied().collect();
        names.sort_unstable();
        names.dedup();
        names.sort_by_key(|f| std::cmp::Reverse(of(&b, f).max(of(&m, f))));
        for f in names.into_iter().take(PROFILE_TOP) {
            let (x, y) = (of(&b, f), of(&m, f));
            say(format!(
                "profile {root}:   {x:6} {y:6} {:+6}  {f}",
                y as i64 - x as i64
            ));
        }
    }
    for p in [base, measured] {
        let procs: Vec<String> = p
            .by_process
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        say(format!(
            "profile {} samples by process: {}",
            p.label,
            procs.join(", ")
        ));
    }
}

/// The median of some figures (the mean of the middle two for an even
/// count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Each figure's median over several runs of the same figures.
fn per_figure_medians(runs: &[Vec<f64>]) -> Vec<f64> {
    (0..runs.first().map_or(0, Vec::len))
        .map(|i| median(runs.iter().map(|r| r[i]).collect()))
        .collect()
}

/// One round's ratios, measured / base, figure by figure.
fn round_ratios(base: &[f64], measured: &[f64]) -> Vec<f64> {
    base.iter().zip(measured).map(|(b, m)| m / b).collect()
}

/// Prints one round's ratios (measured / base).
pub fn say_round(round: usize, base: &[f64], measured: &[f64]) {
    let ratios: Vec<String> = round_ratios(base, measured)
        .iter()
        .map(|r| format!("{r:.2}"))
        .collect();
    say(format!(
        "bench round {}: ratios {}",
        round + 1,
        ratios.join(" ")
    ));
}

/// Each figure's medians over the rounds, and its ratio: the median of
/// the rounds' own ratios.  A round measures both sides back to back, so
/// its ratio is paired: the emulated machine's speed drifts between
/// rounds (the same code's create rate varied by a third), and a ratio
/// of two medians can pair one side's fast round with the other's slow
/// one.  Targets (mxfs against raw XFS: 0.95 for data, 0.90 for
/// metadata) only when asked.
pub fn rows(base_runs: &[Vec<f64>], measured_runs: &[Vec<f64>], targets: bool) -> Vec<Row> {
    let base = per_figure_medians(base_runs);
    let measured = per_figure_medians(measured_runs);
    let paired: Vec<Vec<f64>> = base_runs
        .iter()
        .zip(measured_runs)
        .map(|(b, m)| round_ratios(b, m))
        .collect();
    let ratio = per_figure_medians(&paired);
    FIO_JOBS
        .iter()
        .map(|(n, _, _, _, m)| {
            (
                *n,
                if matches!(m, Metric::MiBps) {
                    "MiB/s"
                } else {
                    "IOPS"
                },
                0.95,
            )
        })
        .chain([
            ("create", "files/s", 0.90),
            ("stat", "files/s", 0.90),
            ("unlink", "files/s", 0.90),
        ])
        .zip(base.iter().zip(&measured).zip(&ratio))
        .map(|((name, unit, target), ((b, m), r))| Row {
            name,
            unit,
            base: *b,
            measured: *m,
            ratio: *r,
            target: targets.then_some(target),
        })
        .collect()
}

/// Prints the table: both figures (medians), the paired ratio and the
/// target.
pub fn print(rows: &[Row], base_label: &str, measured_label: &str, rounds: usize) {
    for r in rows {
        let ratio = r.ratio;
        let target = match r.target {
            Some(t) if ratio >= t => format!("target >= {t:.2}, "),
            Some(t) => format!("target >= {t:.2}: BELOW TARGET, "),
            None => String::new(),
        };
        println!(
            "bench {:14} {base_label} {:10.1} {:7}  {measured_label} {:10.1} {:7}  ratio {:.3} ({target}medians of {rounds} rounds; the ratio is paired per round)",
            r.name, r.base, r.unit, r.measured, r.unit, ratio,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_is_parsed_and_counted_inclusively_per_root() {
        let out = "noise\nmeta create=10 stat=20 unlink=30\n\
                   stack 5 do_unlinkat;vfs_unlink;xfs_remove\n\
                   stack 2 do_unlinkat;dput;dput;__dentry_kill\n\
                   stack 7 path_openat;xfs_create\n\
                   stack x not;a;count\n\
                   process 3 mxfsd\nprocess 14 mxfs-opcheck\n";
        let p = parse_profile("mxfs", out).unwrap();
        assert_eq!(p.rates, "meta create=10 stat=20 unlink=30");
        assert_eq!(p.stacks.len(), 3);
        assert_eq!(
            p.by_process,
            vec![("mxfs-opcheck".to_string(), 14), ("mxfsd".to_string(), 3)]
        );
        let unlink = inclusive(&p.stacks, "do_unlinkat");
        assert_eq!(unlink.get("do_unlinkat"), Some(&7));
        assert_eq!(unlink.values().max(), Some(&7), "the root has them all");
        // a function twice in one stack counts that stack once
        assert_eq!(unlink.get("dput"), Some(&2));
        assert_eq!(unlink.get("xfs_remove"), Some(&5));
        assert!(!unlink.contains_key("xfs_create"));
        assert_eq!(inclusive(&p.stacks, "path_openat").len(), 2);
        assert!(parse_profile("xfs", "stack 1 a;b\n").is_err(), "no rates");
        assert!(
            parse_profile("xfs", "meta create=1\n").is_err(),
            "no samples"
        );
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![7.0]), 7.0);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn rows_take_medians_per_figure_and_targets_only_when_asked() {
        let base = vec![vec![10.0; 7], vec![20.0; 7], vec![30.0; 7]];
        let measured = vec![vec![5.0; 7], vec![40.0; 7], vec![9.0; 7]];
        let rows = rows(&base, &measured, true);
        assert_eq!(rows.len(), 7);
        assert_eq!((rows[0].base, rows[0].measured), (20.0, 9.0));
        // the rounds' ratios are 0.5, 2.0 and 0.3: their median, not
        // the medians' ratio (0.45)
        assert_eq!(rows[0].ratio, 0.5);
        assert_eq!(rows[0].target, Some(0.95));
        assert_eq!(rows[4].name, "create");
        assert_eq!(rows[4].target, Some(0.90));
        assert!(super::rows(&base, &measured, false)
            .iter()
            .all(|r| r.target.is_none()));
    }

    #[test]
    fn paired_ratios_cancel_a_drifting_machine() {
        // the machine halves its speed between rounds; mxfs is 0.9 of
        // XFS in each round, but the fast XFS round meets the slow mxfs one
        let base = vec![vec![100.0; 7], vec![50.0; 7], vec![100.0; 7], vec![50.0; 7]];
        let measured = vec![vec![90.0; 7], vec![45.0; 7], vec![90.0; 7], vec![45.0; 7]];
        let rows = rows(&base, &measured, true);
        assert!(rows.iter().all(|r| (r.ratio - 0.9).abs() < 1e-9));
    }

    #[test]
    fn metadata_passes_are_reduced_to_medians() {
        let passes = vec![
            vec![1.0, 30.0, 5.0],
            vec![3.0, 10.0, 6.0],
            vec![2.0, 20.0, 4.0],
        ];
        assert_eq!(per_figure_medians(&passes), vec![2.0, 20.0, 5.0]);
        assert!(per_figure_medians(&[]).is_empty());
    }
}
