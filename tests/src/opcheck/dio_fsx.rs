//! `--dio-fsx FILE NUMOPS SEED`: an fsx-style random exerciser with
//! O_DIRECT. Every offset and length is a multiple of 4096; the operations
//! are write, read, truncate (growing and shrinking) and fsync. An
//! in-memory model of the file checks every read and the size after every
//! operation; at the end a buffered read of the whole file is checked too.
//! Deterministic per seed.

use super::*;

const BLOCK: usize = DIO_ALIGN;
/// The file never grows past this.
const MAX_SIZE: usize = 1 << 20;
/// The longest single read or write.
const MAX_LEN: usize = 64 * 1024;

#[derive(Debug, Clone, Copy)]
enum Op {
    Write { off: usize, len: usize },
    Read { off: usize, len: usize },
    Truncate { size: usize },
    Fsync,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Write { off, len } => write!(f, "write off={off:#x} len={len:#x}"),
            Op::Read { off, len } => write!(f, "read off={off:#x} len={len:#x}"),
            Op::Truncate { size } => write!(f, "truncate size={size:#x}"),
            Op::Fsync => write!(f, "fsync"),
        }
    }
}

fn next_op(r: &mut XorShift, size: usize) -> Op {
    let blocks =
        |r: &mut XorShift, max: usize| (r.below((max / BLOCK) as u64) as usize + 1) * BLOCK;
    match r.below(100) {
        0..=39 => {
            let off = r.below((MAX_SIZE / BLOCK) as u64) as usize * BLOCK;
            let len = blocks(r, MAX_LEN).min(MAX_SIZE - off);
            Op::Write { off, len }
        }
        40..=74 => {
            // Mostly inside the file, sometimes across or past EOF.
            let limit = if size == 0 || r.below(8) == 0 {
                MAX_SIZE
            } else {
                size
            };
            let off = r.below((limit / BLOCK) as u64) as usize * BLOCK;
            Op::Read {
                off,
                len: blocks(r, MAX_LEN),
            }
        }
        75..=89 => {
            // Shrink or grow, aligned; sometimes to zero.
            let size = if r.below(10) == 0 {
                0
            } else {
                r.below((MAX_SIZE / BLOCK) as u64 + 1) as usize * BLOCK
            };
            Op::Truncate { size }
        }
        _ => Op::Fsync,
    }
}

/// The command: prints `dio-fsx: N ops ok` or the first mismatch.
pub fn cli(path: &Path, numops: u64, seed: u64) -> i32 {
    match run(path, numops, seed) {
        Ok(()) => {
            println!("dio-fsx: {numops} ops ok");
            0
        }
        Err(e) => {
            println!("dio-fsx: {}", format!("{e:#}").replace('\n', " "));
            1
        }
    }
}

/// Runs the exerciser; the error names the op number and offsets.
pub fn run(path: &Path, numops: u64, seed: u64) -> Result<()> {
    let fd = Fd::open(
        path,
        libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_DIRECT,
        0o644,
    )?;
    let mut r = XorShift::new(seed);
    let mut model: Vec<u8> = Vec::new();
    let mut buf = AlignedBuf::new(MAX_LEN);
    let mut recent: Vec<String> = Vec::new();
    for n in 1..=numops {
        let op = next_op(&mut r, model.len());
        recent.push(format!("{n}: {op}"));
        if recent.len() > 8 {
            recent.remove(0);
        }
        let fail = |what: String| -> anyhow::Error {
            anyhow!(
                "op {n} ({op}): {what}; seed {seed}; last ops: {}",
                recent.join(", ")
            )
        };
        match op {
            Op::Write { off, len } => {
                r.fill(&mut buf[..len]);
                // Tag each block with the op number to make mismatches readable.
                for b in (0..len).step_by(BLOCK) {
                    buf[b..b + 8].copy_from_slice(&n.to_le_bytes());
                }
                fd.pwrite_all(&buf[..len], off as u64)
                    .map_err(|e| fail(format!("{e:#}")))?;
                if model.len() < off + len {
                    model.resize(off + len, 0);
                }
                model[off..off + len].copy_from_slice(&buf[..len]);
            }
            Op::Read { off, len } => {
                let got = fd
                    .pread_full(&mut buf[..len], off as u64)
                    .map_err(|e| fail(format!("{e:#}")))?;
                let want = model.len().saturating_sub(off).min(len);
                if got != want {
                    return Err(fail(format!("read returned {got} bytes, expected {want}")));
                }
                if let Some(i) = (0..want).find(|i| buf[*i] != model[off + i]) {
                    let at = off + i;
                    let blk = at / BLOCK * BLOCK;
                    let tag =
                        u64::from_le_bytes(buf[i - (at - blk)..][..8].try_into().unwrap_or([0; 8]));
                    return Err(fail(format!(
                        "mismatch at file offset {at:#x}: got {:#04x}, expected {:#04x} (block at {blk:#x} carries op tag {tag})",
                        buf[i],
                        model[at]
                    )));
                }
            }
            Op::Truncate { size } => {
                fd.truncate(size as u64)
                    .map_err(|e| fail(format!("{e:#}")))?;
                model.resize(size, 0);
            }
            Op::Fsync => fd.fsync().map_err(|e| fail(format!("{e:#}")))?,
        }
        let size = fd.size().map_err(|e| fail(format!("{e:#}")))?;
        if size != model.len() as u64 {
            return Err(fail(format!("size {size:#x}, expected {:#x}", model.len())));
        }
    }
    // A final whole-file check, through the page cache.
    drop(fd);
    let got = read_file(path)?;
    same(
        format_args!("final buffered read of {}", path.display()),
        &got,
        &model,
    )?;
    Ok(())
}
