//! The layouts of the module's private requests (`kmod/mxfs_uapi.h`):
//! the arguments in a fiemap request's name, and the values of the
//! fiemap, birth-time and fallocate requests, which are the C structs
//! there in host byte order (the module and the daemon share the host).
//!
//! The decoders refuse, and never panic on, any bytes the module would
//! not send.  `decode_extents` and `decode_btime` read what we send,
//! as the module does: for the tests and the fuzzer.

use crate::uapi::{MXFS_BTIME_SIZE, MXFS_FALLOCATE_SIZE, MXFS_FIEMAP_EXTENT_SIZE};
use crate::wire::fileop::{Extent, Timespec};

#[cfg(test)]
const NSEC_PER_SEC: u32 = 1_000_000_000;

/// The arguments of getxattr `mxfs.fiemap.START.LENGTH.FLAGS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FiemapRequest {
    pub start: u64,
    pub length: u64,
    /// The call's `FIEMAP_FLAG_*`.
    pub flags: u32,
}

impl FiemapRequest {
    /// `START.LENGTH.FLAGS`, what follows the name's prefix: decimal,
    /// digits only.
    pub fn parse(args: &[u8]) -> Option<Self> {
        fn num<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
            // FromStr alone would take a sign
            if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
                return None;
            }
            std::str::from_utf8(b).ok()?.parse().ok()
        }
        let mut it = args.split(|&c| c == b'.');
        let start = num(it.next()?)?;
        let length = num(it.next()?)?;
        let flags = num(it.next()?)?;
        if it.next().is_some() {
            return None;
        }
        Some(FiemapRequest {
            start,
            length,
            flags,
        })
    }
}

/// A fiemap value: per extent `{ u64 logical, u64 physical, u64 length,
/// u32 flags, u32 zero }`.
pub fn encode_extents(x: &[Extent]) -> Vec<u8> {
    let mut v = Vec::with_capacity(x.len() * MXFS_FIEMAP_EXTENT_SIZE);
    for e in x {
        v.extend_from_slice(&e.logical.to_ne_bytes());
        v.extend_from_slice(&e.physical.to_ne_bytes());
        v.extend_from_slice(&e.length.to_ne_bytes());
        v.extend_from_slice(&e.flags.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
    }
    v
}

/// The extents of a fiemap value; None for a length that is not whole
/// extents or a non-zero reserved u32.
#[cfg(test)]
pub fn decode_extents(v: &[u8]) -> Option<Vec<Extent>> {
    if !v.len().is_multiple_of(MXFS_FIEMAP_EXTENT_SIZE) {
        return None;
    }
    v.chunks_exact(MXFS_FIEMAP_EXTENT_SIZE)
        .map(|e| {
            Fields::whole(e, |f| {
                let x = Extent {
                    logical: f.u64()?,
                    physical: f.u64()?,
                    length: f.u64()?,
                    flags: f.u32()?,
                };
                f.zero()?;
                Some(x)
            })
        })
        .collect()
}

/// A birth-time value: `{ s64 seconds, u32 nanoseconds, u32 zero }`.
pub fn encode_btime(t: Timespec) -> Vec<u8> {
    let mut v = Vec::with_capacity(MXFS_BTIME_SIZE);
    v.extend_from_slice(&t.sec.to_ne_bytes());
    v.extend_from_slice(&t.nsec.to_ne_bytes());
    v.extend_from_slice(&0u32.to_ne_bytes());
    v
}

/// The birth time of a value, as the module takes it: None also for
/// nanoseconds of a second or more.
#[cfg(test)]
pub fn decode_btime(v: &[u8]) -> Option<Timespec> {
    if v.len() != MXFS_BTIME_SIZE {
        return None;
    }
    let t = Fields::whole(v, |f| {
        let t = Timespec {
            sec: f.i64()?,
            nsec: f.u32()?,
        };
        f.zero()?;
        Some(t)
    })?;
    (t.nsec < NSEC_PER_SEC).then_some(t)
}

/// The value of setxattr `mxfs.fallocate`: `{ u64 offset, u64 length,
/// u32 mode, u32 zero }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FallocateRequest {
    pub offset: u64,
    pub length: u64,
    /// fallocate(2)'s `FALLOC_FL_*`.
    pub mode: i32,
}

impl FallocateRequest {
    /// None for a value of another size or a non-zero reserved u32.
    pub fn decode(v: &[u8]) -> Option<Self> {
        if v.len() != MXFS_FALLOCATE_SIZE {
            return None;
        }
        Fields::whole(v, |f| {
            let r = FallocateRequest {
                offset: f.u64()?,
                length: f.u64()?,
                // the u32's bits: the module copies an int
                mode: f.i32()?,
            };
            f.zero()?;
            Some(r)
        })
    }

    #[cfg(test)]
    pub fn encode(&self) -> [u8; MXFS_FALLOCATE_SIZE] {
        let mut v = Vec::with_capacity(MXFS_FALLOCATE_SIZE);
        v.extend_from_slice(&self.offset.to_ne_bytes());
        v.extend_from_slice(&self.length.to_ne_bytes());
        v.extend_from_slice(&self.mode.to_ne_bytes());
        v.extend_from_slice(&0u32.to_ne_bytes());
        v.try_into().expect("the fields fill MXFS_FALLOCATE_SIZE")
    }
}

/// Reads a value's fields in order, as far as there are bytes.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    /// What `read` makes of all of `v`: None if it leaves bytes over.
    fn whole<T>(v: &[u8], read: impl FnOnce(&mut Fields<'_>) -> Option<T>) -> Option<T> {
        let mut f = Fields(v);
        let t = read(&mut f)?;
        f.0.is_empty().then_some(t)
    }

    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (field, rest) = self.0.split_at_checked(N)?;
        self.0 = rest;
        field.try_into().ok()
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_ne_bytes)
    }

    #[cfg(test)]
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_ne_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_ne_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_ne_bytes)
    }

    /// A reserved u32, which must be zero.
    fn zero(&mut self) -> Option<()> {
        (self.u32()? == 0).then_some(())
    }
}

#[cfg(test)]
/// Fuzzing: every decoder on any bytes; what one accepts encodes back to
/// the same bytes (a fiemap name to the same numbers: "01" is 1).
pub fn fuzz_decode(b: &[u8]) -> bool {
    let name = FiemapRequest::parse(b).inspect(|r| {
        let again = format!("{}.{}.{}", r.start, r.length, r.flags);
        assert_eq!(FiemapRequest::parse(again.as_bytes()), Some(*r));
    });
    let extents = decode_extents(b).inspect(|x| assert_eq!(encode_extents(x), b));
    let btime = decode_btime(b).inspect(|t| assert_eq!(encode_btime(*t), b));
    let fallocate = FallocateRequest::decode(b).inspect(|r| assert_eq!(r.encode(), b));
    name.is_some() || extents.is_some() || btime.is_some() || fallocate.is_some()
}

#[cfg(test)]
/// Seeds for the fuzzer: a value of each kind, and names.
pub fn fuzz_seeds() -> Vec<Vec<u8>> {
    let extent = |logical, flags| Extent {
        logical,
        physical: 1 << 30,
        length: 4096,
        flags,
    };
    vec![
        b"0.18446744073709551615.1".to_vec(),
        b"4096.100.0".to_vec(),
        encode_extents(&[extent(0, 0)]),
        encode_extents(&[extent(0, 0), extent(4096, 0x801), extent(1 << 20, 1)]),
        encode_btime(Timespec {
            sec: 1_700_000_000,
            nsec: 999_999_999,
        }),
        FallocateRequest {
            offset: 4096,
            length: 8192,
            mode: libc::FALLOC_FL_COLLAPSE_RANGE,
        }
        .encode()
        .to_vec(),
    ]
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fuse_client::tests::ext;

    /// The `N` bytes of `v` at `at`.
    fn at<const N: usize>(v: &[u8], at: usize) -> [u8; N] {
        v[at..at + N].try_into().unwrap()
    }

    // The offsets are struct mxfs_fiemap_extent's and the other C
    // structs' in kmod/mxfs_uapi.h, written out so that a change of the
    // encoders cannot move them unnoticed.

    #[test]
    fn the_extent_layout_is_pinned() {
        let x = [ext(0, 1 << 20, 8192, 0), ext(1 << 20, 1 << 30, 4096, 0x801)];
        let v = encode_extents(&x);
        assert_eq!(v.len(), 2 * MXFS_FIEMAP_EXTENT_SIZE);
        for (e, b) in x.iter().zip(v.chunks(MXFS_FIEMAP_EXTENT_SIZE)) {
            assert_eq!(at(b, 0), e.logical.to_ne_bytes());
            assert_eq!(at(b, 8), e.physical.to_ne_bytes());
            assert_eq!(at(b, 16), e.length.to_ne_bytes());
            assert_eq!(at(b, 24), e.flags.to_ne_bytes());
            assert_eq!(at::<4>(b, 28), [0; 4]);
        }
        assert_eq!(encode_extents(&[]), Vec::<u8>::new());
    }

    #[test]
    fn the_btime_layout_is_pinned() {
        let t = Timespec {
            sec: -2,
            nsec: 123_456_789,
        };
        let v = encode_btime(t);
        assert_eq!(v.len(), MXFS_BTIME_SIZE);
        assert_eq!(at(&v, 0), (-2i64).to_ne_bytes());
        assert_eq!(at(&v, 8), 123_456_789u32.to_ne_bytes());
        assert_eq!(at::<4>(&v, 12), [0; 4]);
    }

    #[test]
    fn the_fallocate_layout_is_pinned() {
        let mut v = [0u8; MXFS_FALLOCATE_SIZE];
        v[0..8].copy_from_slice(&4096u64.to_ne_bytes());
        v[8..16].copy_from_slice(&8192u64.to_ne_bytes());
        v[16..20].copy_from_slice(&(libc::FALLOC_FL_INSERT_RANGE as u32).to_ne_bytes());
        let r = FallocateRequest {
            offset: 4096,
            length: 8192,
            mode: libc::FALLOC_FL_INSERT_RANGE,
        };
        assert_eq!(FallocateRequest::decode(&v), Some(r));
        assert_eq!(r.encode(), v);
    }

    #[test]
    fn fiemap_names_are_three_decimal_numbers() {
        let r = |start, length, flags| {
            Some(FiemapRequest {
                start,
                length,
                flags,
            })
        };
        assert_eq!(
            FiemapRequest::parse(b"0.18446744073709551615.1"),
            r(0, u64::MAX, 1)
        );
        assert_eq!(
            FiemapRequest::parse(b"4096.100.4294967295"),
            r(4096, 100, u32::MAX)
        );
        assert_eq!(FiemapRequest::parse(b"007.0.00"), r(7, 0, 0));
        for bad in [
            "",
            ".",
            "1.2",
            "1.2.3.4",
            "1.2.3.",
            ".1.2.3",
            "1..3",
            "+1.2.3",
            "-1.2.3",
            " 1.2.3",
            "1.2.3 ",
            "0x10.2.3",
            "1.2.3\0",
            "18446744073709551616.2.3",
            "1.18446744073709551616.3",
            "1.2.4294967296",
        ] {
            assert_eq!(FiemapRequest::parse(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn extent_decoding_refuses_partial_extents() {
        let v = encode_extents(&[ext(1, 2, 3, 4), ext(5, 6, 7, 8)]);
        for len in [
            1,
            MXFS_FIEMAP_EXTENT_SIZE - 1,
            MXFS_FIEMAP_EXTENT_SIZE + 1,
            v.len() - 1,
        ] {
            assert_eq!(decode_extents(&v[..len]), None, "{len} bytes");
        }
        let mut long = v.clone();
        long.push(0);
        assert_eq!(decode_extents(&long), None);
        assert_eq!(decode_extents(&[]), Some(vec![]));
    }

    #[test]
    fn extent_decoding_refuses_a_non_zero_reserved_u32() {
        let v = encode_extents(&[ext(1, 2, 3, 4), ext(5, 6, 7, 8)]);
        for i in 0..2 {
            for bad in [1u32, 0x8000_0000, u32::MAX] {
                let mut b = v.clone();
                let zero = i * MXFS_FIEMAP_EXTENT_SIZE + 28;
                b[zero..zero + 4].copy_from_slice(&bad.to_ne_bytes());
                assert_eq!(decode_extents(&b), None, "extent {i}, {bad:#x}");
            }
        }
    }

    #[test]
    fn btime_decoding_refuses_bad_values() {
        let v = encode_btime(Timespec { sec: 5, nsec: 6 });
        for len in [0, 8, MXFS_BTIME_SIZE - 1] {
            assert_eq!(decode_btime(&v[..len]), None, "{len} bytes");
        }
        assert_eq!(decode_btime(&[&v[..], &[0]].concat()), None);
        assert_eq!(decode_btime(&[&v[..], &v[..]].concat()), None);
        let mut b = v.clone();
        b[12..16].copy_from_slice(&1u32.to_ne_bytes());
        assert_eq!(decode_btime(&b), None, "reserved u32");
        // what the module refuses too
        let mut b = v.clone();
        b[8..12].copy_from_slice(&NSEC_PER_SEC.to_ne_bytes());
        assert_eq!(decode_btime(&b), None, "a whole second of nanoseconds");
    }

    #[test]
    fn fallocate_decoding_refuses_bad_values() {
        let v = FallocateRequest {
            offset: 1,
            length: 2,
            mode: 3,
        }
        .encode();
        for len in [0, 8, 16, MXFS_FALLOCATE_SIZE - 1] {
            assert_eq!(FallocateRequest::decode(&v[..len]), None, "{len} bytes");
        }
        assert_eq!(FallocateRequest::decode(&[&v[..], &[0]].concat()), None);
        for bad in [1u32, 0x8000_0000, u32::MAX] {
            let mut b = v;
            b[20..24].copy_from_slice(&bad.to_ne_bytes());
            assert_eq!(FallocateRequest::decode(&b), None, "{bad:#x}");
        }
    }

    #[test]
    fn the_fuzz_seeds_are_accepted() {
        for s in fuzz_seeds() {
            assert!(fuzz_decode(&s), "{s:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn extents_round_trip(x in proptest::collection::vec(
            (any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>()), 0..40)) {
            let x: Vec<Extent> = x.into_iter().map(|(l, p, n, f)| ext(l, p, n, f)).collect();
            let v = encode_extents(&x);
            prop_assert_eq!(v.len(), x.len() * MXFS_FIEMAP_EXTENT_SIZE);
            prop_assert_eq!(decode_extents(&v), Some(x));
        }

        #[test]
        fn btime_round_trips(sec: i64, nsec in 0..NSEC_PER_SEC) {
            let t = Timespec { sec, nsec };
            prop_assert_eq!(decode_btime(&encode_btime(t)), Some(t));
        }

        #[test]
        fn fallocate_round_trips(offset: u64, length: u64, mode: i32) {
            let r = FallocateRequest { offset, length, mode };
            prop_assert_eq!(FallocateRequest::decode(&r.encode()), Some(r));
        }

        #[test]
        fn fiemap_names_round_trip(start: u64, length: u64, flags: u32) {
            let name = format!("{start}.{length}.{flags}");
            prop_assert_eq!(
                FiemapRequest::parse(name.as_bytes()),
                Some(FiemapRequest { start, length, flags })
            );
        }

        #[test]
        fn decoders_never_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            fuzz_decode(&b);
        }
    }
}
