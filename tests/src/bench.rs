//! The benchmark jobs and their report: fio throughput (sequential
//! 1 MiB, random 4 KiB, O_DIRECT) and metadata rates (mxfs-opcheck's
//! create/stat/unlink), run on one directory of a guest, and the table
//! of medians and ratios that compares two runs of them (mxfs against
//! raw XFS on one node; a client against its owner).  Figures are
//! printed, never asserted against a target: the testbed is an emulated
//! machine.

use crate::host::say;
use crate::node::Node;
use crate::rootfs::GUEST_ARTIFACTS;
use anyhow::{Context, Result};

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

/// The functions a profiled pass times, and only these: the create,
/// stat and unlink system calls, the VFS steps they share, each layer's
/// operation (mxfs's and XFS's) and what the stacking layer adds
/// (the lower lookup, permission checks, its inode cache).  Tracing
/// only these, each with all it calls (untraced, at full speed), keeps
/// the times close to untraced ones; tracing every call below the
/// system calls made a call of a few microseconds cost tens.
/// Names that are not there (mxfs's, on the XFS pass; inlined ones)
/// are skipped.
const PROFILED_FUNCTIONS: &[&str] = &[
    "__x64_sys_openat",
    "__x64_sys_close",
    "__x64_sys_unlink",
    "__x64_sys_newstat",
    "__x64_sys_newfstatat",
    "task_work_run",
    "path_openat",
    "d_alloc_parallel",
    "d_splice_alias",
    "d_instantiate",
    "vfs_create",
    "vfs_unlink",
    "do_dentry_open",
    "__fput",
    "dput",
    "evict",
    "inode_permission",
    "security_inode_alloc",
    "lookup_one_len_unlocked",
    "iget5_locked",
    "mxfs_lookup",
    "mxfs_create",
    "mxfs_get_inode",
    "mxfs_open",
    "mxfs_release",
    "mxfs_flush",
    "mxfs_unlink",
    "mxfs_permission",
    "mxfs_getattr",
    "mxfs_d_revalidate",
    "mxfs_d_release",
    "mxfs_evict_inode",
    "mxfs_alloc_inode",
    "mxfs_copy_attr",
    "xfs_vn_lookup",
    "xfs_vn_create",
    "xfs_vn_unlink",
    "xfs_vn_getattr",
    "xfs_file_open",
    "xfs_file_release",
    "xfs_fs_destroy_inode",
];

/// Files in a profiled pass: fewer than the benchmark's, so that the
/// trace fits its buffer.
const PROFILE_FILES: usize = 1000;

/// One metadata pass on `dir` under the kernel's function-graph tracer
/// (Debian's kernels have no function profiler), limited to the
/// `PROFILED_FUNCTIONS`; prints them by inclusive time (calls, total and
/// mean microseconds), and the CPU time mxfsd used meanwhile (when one
/// runs).  For finding where a filesystem spends its time; the rates of
/// a profiled pass are not compared.
pub fn profile_meta(node: &mut Node, dir: &str, label: &str) -> Result<()> {
    let script = format!(
        r#"set -e
T=/sys/kernel/tracing
[ -e $T/current_tracer ] || mount -t tracefs nodev $T
echo 0 > $T/tracing_on
echo > $T/set_ftrace_filter
for f in {functions}; do echo $f >> $T/set_ftrace_filter 2>/dev/null || true; done
echo "functions traced: $(grep -c . $T/set_ftrace_filter)"
echo function_graph > $T/current_tracer
echo funcgraph-tail > $T/trace_options
echo nofuncgraph-irqs > $T/trace_options
echo 65536 > $T/buffer_size_kb
echo > $T/trace
ticks() {{ p=$(pidof mxfsd || true); [ -n "$p" ] && awk '{{print $14+$15}}' /proc/$p/stat || echo 0; }}
t0=$(ticks)
echo 1 > $T/tracing_on
{GUEST_ARTIFACTS}/mxfs-opcheck --meta-bench {dir}/meta {files}
echo 0 > $T/tracing_on
echo "mxfsd cpu ticks during the pass: $(( $(ticks) - t0 )) (of $(getconf CLK_TCK)/s)"
echo "trace entries lost: $(grep -h 'overrun' $T/per_cpu/cpu*/stats | awk '{{s+=$2}} END {{print s+0}}')"
awk -F'|' '
  $1 ~ /us/ {{
    d = $1; sub(/ *us.*/, "", d); sub(/.*[^0-9.]/, "", d)
    f = $2; gsub(/^ +| +$/, "", f)
    if (f ~ /^\}}/) {{ sub(/^\}} \/\* /, "", f); sub(/ \*\/$/, "", f) }}
    else {{ sub(/\(\);$/, "", f) }}
    t[f] += d; n[f]++
  }}
  END {{ for (f in t) printf "%12.0f us %8d calls %9.2f us/call  %s\n", t[f], n[f], t[f]/n[f], f }}
' $T/trace | sort -rn | head -45
echo 0 > $T/tracing_on
echo nop > $T/current_tracer
echo > $T/set_ftrace_filter
echo > $T/trace
"#,
        functions = PROFILED_FUNCTIONS.join(" "),
        files = PROFILE_FILES,
    );
    let out = node.must_within(&script, JOB_TIMEOUT)?;
    for line in out.lines().filter(|l| !l.trim().is_empty()) {
        say(format!("profile {label}: {line}"));
    }
    Ok(())
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
