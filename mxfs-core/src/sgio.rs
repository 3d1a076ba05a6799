//! SCSI PERSISTENT RESERVE IN / READ KEYS over SG_IO (what
//! `sg_persist --in --read-keys` does), and the decoders of what comes
//! back.  The decoders take arbitrary bytes and return errors, never
//! panic.
//!
//! References: SPC-4 6.15 (PERSISTENT RESERVE IN), 6.15.2 (READ KEYS
//! parameter data), 4.5 (sense data); `<scsi/sg.h>` (`sg_io_hdr`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `SG_IO` from `<scsi/sg.h>`.
pub const SG_IO: libc::c_ulong = 0x2285;
/// `sg_io_hdr.dxfer_direction`: data from the device.
pub const SG_DXFER_FROM_DEV: libc::c_int = -3;
/// PERSISTENT RESERVE IN.
pub const PERSISTENT_RESERVE_IN: u8 = 0x5e;
/// Service action READ KEYS.
pub const PR_IN_READ_KEYS: u8 = 0x00;

/// SCSI status bytes (SAM-5).
pub const STATUS_GOOD: u8 = 0x00;
pub const STATUS_CHECK_CONDITION: u8 = 0x02;
pub const STATUS_BUSY: u8 = 0x08;
pub const STATUS_RESERVATION_CONFLICT: u8 = 0x18;

/// Sense keys.
pub const SENSE_NOT_READY: u8 = 0x2;
pub const SENSE_ILLEGAL_REQUEST: u8 = 0x5;
pub const SENSE_UNIT_ATTENTION: u8 = 0x6;

/// `struct sg_io_hdr` (interface_id 'S'), as `<scsi/sg.h>` lays it out.
#[repr(C)]
#[derive(Debug)]
pub struct SgIoHdr {
    pub interface_id: libc::c_int,
    pub dxfer_direction: libc::c_int,
    pub cmd_len: libc::c_uchar,
    pub mx_sb_len: libc::c_uchar,
    pub iovec_count: libc::c_ushort,
    pub dxfer_len: libc::c_uint,
    pub dxferp: *mut libc::c_void,
    pub cmdp: *const libc::c_uchar,
    pub sbp: *mut libc::c_uchar,
    pub timeout: libc::c_uint,
    pub flags: libc::c_uint,
    pub pack_id: libc::c_int,
    pub usr_ptr: *mut libc::c_void,
    pub status: libc::c_uchar,
    pub masked_status: libc::c_uchar,
    pub msg_status: libc::c_uchar,
    pub sb_len_wr: libc::c_uchar,
    pub host_status: libc::c_ushort,
    pub driver_status: libc::c_ushort,
    pub resid: libc::c_int,
    pub duration: libc::c_uint,
    pub info: libc::c_uint,
}

/// The 10-byte PERSISTENT RESERVE IN CDB for READ KEYS.
pub fn read_keys_cdb(alloc_len: u16) -> [u8; 10] {
    let len = alloc_len.to_be_bytes();
    [
        PERSISTENT_RESERVE_IN,
        PR_IN_READ_KEYS,
        0,
        0,
        0,
        0,
        0,
        len[0],
        len[1],
        0,
    ]
}

/// What one SG_IO command returned.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScsiResult {
    pub status: u8,
    pub host_status: u16,
    pub driver_status: u16,
    /// Sense bytes the device wrote.
    pub sense: Vec<u8>,
    /// Data bytes transferred (already cut to `dxfer_len - resid`).
    pub data: Vec<u8>,
}

/// `sg_io_hdr.dxfer_direction`: data to the device.
pub const SG_DXFER_TO_DEV: libc::c_int = -2;

/// Which way a command's data goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dxfer {
    /// Data in: the device fills the buffer.
    FromDevice,
    /// Data out: the buffer is the command's parameter list.
    ToDevice,
}

/// Run one command over SG_IO with `buf` as its data.  An `Err` is the
/// ioctl's own failure (ENOTTY/EINVAL: the device does not take SG_IO at
/// all); SCSI-level failures are in the result's status and sense.
fn sg_io(
    dev: &File,
    cdb: &[u8],
    dir: Dxfer,
    buf: &mut [u8],
    timeout_ms: u32,
) -> io::Result<(ScsiResult, usize)> {
    let mut sense = [0u8; 64];
    let mut hdr = SgIoHdr {
        interface_id: b'S' as libc::c_int,
        dxfer_direction: match dir {
            Dxfer::FromDevice => SG_DXFER_FROM_DEV,
            Dxfer::ToDevice => SG_DXFER_TO_DEV,
        },
        cmd_len: cdb.len() as libc::c_uchar,
        mx_sb_len: sense.len() as libc::c_uchar,
        iovec_count: 0,
        dxfer_len: buf.len() as libc::c_uint,
        dxferp: buf.as_mut_ptr().cast(),
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: timeout_ms,
        flags: 0,
        pack_id: 0,
        usr_ptr: std::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY: hdr points at buffers that live across the call, with the
    // lengths given in it; the kernel reads or writes only within them.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), SG_IO as _, &mut hdr as *mut SgIoHdr) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let resid = usize::try_from(hdr.resid.max(0)).unwrap_or(0);
    let sb = usize::from(hdr.sb_len_wr).min(sense.len());
    Ok((
        ScsiResult {
            status: hdr.status,
            host_status: hdr.host_status,
            driver_status: hdr.driver_status,
            sense: sense[..sb].to_vec(),
            data: Vec::new(),
        },
        buf.len().saturating_sub(resid),
    ))
}

/// Run a data-in command over SG_IO.  An `Err` is the ioctl's own
/// failure (ENOTTY/EINVAL: the device does not take SG_IO at all).
pub fn sg_io_data_in(
    dev: &File,
    cdb: &[u8],
    alloc_len: usize,
    timeout_ms: u32,
) -> io::Result<ScsiResult> {
    let mut data = vec![0u8; alloc_len];
    let (mut r, got) = sg_io(dev, cdb, Dxfer::FromDevice, &mut data, timeout_ms)?;
    data.truncate(got);
    r.data = data;
    Ok(r)
}

/// Run a data-out command over SG_IO with `param` as its parameter list.
pub fn sg_io_data_out(
    dev: &File,
    cdb: &[u8],
    param: &[u8],
    timeout_ms: u32,
) -> io::Result<ScsiResult> {
    let mut data = param.to_vec();
    Ok(sg_io(dev, cdb, Dxfer::ToDevice, &mut data, timeout_ms)?.0)
}

/// The sense key and additional sense code of sense data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

/// Decode fixed (0x70/0x71) or descriptor (0x72/0x73) format sense data;
/// `None` when it is neither or too short.
pub fn parse_sense(sb: &[u8]) -> Option<Sense> {
    let code = sb.first()? & 0x7f;
    match code {
        0x70 | 0x71 => Some(Sense {
            key: sb.get(2)? & 0x0f,
            asc: sb.get(12).copied().unwrap_or(0),
            ascq: sb.get(13).copied().unwrap_or(0),
        }),
        0x72 | 0x73 => Some(Sense {
            key: sb.get(1)? & 0x0f,
            asc: sb.get(2).copied().unwrap_or(0),
            ascq: sb.get(3).copied().unwrap_or(0),
        }),
        _ => None,
    }
}

/// The READ KEYS parameter data: generation and registered keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadKeys {
    /// PRgeneration.
    pub generation: u32,
    /// The keys that fit in the returned data.
    pub keys: Vec<u64>,
    /// ADDITIONAL LENGTH as the device reported it (8 × all its keys).
    pub additional_length: u32,
}

impl ReadKeys {
    /// The device has more keys than the allocation length let through.
    pub fn truncated(&self) -> bool {
        (self.keys.len() as u64) * 8 < u64::from(self.additional_length)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer than the 8 header bytes.
    Short(usize),
    /// ADDITIONAL LENGTH is not a whole number of 8-byte keys.
    Ragged(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Short(n) => write!(f, "READ KEYS data too short ({n} bytes, need 8)"),
            DecodeError::Ragged(n) => {
                write!(f, "READ KEYS additional length {n} is not a multiple of 8")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decode READ KEYS parameter data (SPC-4 6.16.2).  A response cut short
/// by the allocation length is fine (see [`ReadKeys::truncated`]); only
/// whole keys are returned.
pub fn decode_read_keys(buf: &[u8]) -> Result<ReadKeys, DecodeError> {
    if buf.len() < 8 {
        return Err(DecodeError::Short(buf.len()));
    }
    let generation = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let additional_length = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    if !additional_length.is_multiple_of(8) {
        return Err(DecodeError::Ragged(additional_length));
    }
    let body = &buf[8..];
    // Bytes past the announced keys (padding up to the allocation
    // length) are ignored.
    let announced = usize::try_from(additional_length).unwrap_or(usize::MAX);
    let usable = body.len().min(announced);
    let keys = body[..usable - usable % 8]
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().expect("8-byte chunk")))
        .collect();
    Ok(ReadKeys {
        generation,
        keys,
        additional_length,
    })
}

/// Encode READ KEYS parameter data (the inverse of [`decode_read_keys`];
/// for tests and for a fake target).
pub fn encode_read_keys(generation: u32, keys: &[u64]) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + keys.len() * 8);
    v.extend_from_slice(&generation.to_be_bytes());
    v.extend_from_slice(&((keys.len() as u32).wrapping_mul(8)).to_be_bytes());
    for k in keys {
        v.extend_from_slice(&k.to_be_bytes());
    }
    v
}

/// What a READ KEYS attempt says about PR support.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrProbe {
    /// The device answered: it supports persistent reservations.
    Keys(ReadKeys),
    /// The device refused the command (ILLEGAL REQUEST): no PR.
    Unsupported(String),
    /// The device is momentarily unable to answer (UNIT ATTENTION, BUSY):
    /// try again.
    Retry(String),
    /// Something else went wrong: PR support is unknown.
    Failed(String),
}

/// Classify the outcome of a READ KEYS command.  Pure: unit-tested.
pub fn classify(r: &ScsiResult) -> PrProbe {
    let driver = r.driver_status & 0x0f;
    // DRIVER_SENSE (0x08) only says sense data is present.
    if r.host_status != 0 || (driver != 0 && driver != 0x08) {
        return PrProbe::Failed(format!(
            "transport error (host status 0x{:x}, driver status 0x{:x})",
            r.host_status, r.driver_status
        ));
    }
    match r.status & 0x7e {
        STATUS_GOOD => match decode_read_keys(&r.data) {
            Ok(k) => PrProbe::Keys(k),
            Err(e) => PrProbe::Failed(format!("bad READ KEYS answer: {e}")),
        },
        STATUS_CHECK_CONDITION => match parse_sense(&r.sense) {
            Some(s) if s.key == SENSE_ILLEGAL_REQUEST => {
                let what = match s.asc {
                    0x20 => "invalid command operation code",
                    0x24 => "invalid field in CDB",
                    _ => "illegal request",
                };
                PrProbe::Unsupported(format!(
                    "the device rejects PERSISTENT RESERVE IN ({what}, ASC/ASCQ {:02x}/{:02x})",
                    s.asc, s.ascq
                ))
            }
            Some(s) if s.key == SENSE_UNIT_ATTENTION => PrProbe::Retry(format!(
                "unit attention (ASC/ASCQ {:02x}/{:02x})",
                s.asc, s.ascq
            )),
            Some(s) => PrProbe::Failed(format!(
                "CHECK CONDITION, sense key 0x{:x}, ASC/ASCQ {:02x}/{:02x}",
                s.key, s.asc, s.ascq
            )),
            None => PrProbe::Failed("CHECK CONDITION without usable sense data".to_string()),
        },
        STATUS_BUSY => PrProbe::Retry("device busy".to_string()),
        STATUS_RESERVATION_CONFLICT => PrProbe::Failed(
            "RESERVATION CONFLICT on PERSISTENT RESERVE IN (another reservation type holds the device)"
                .to_string(),
        ),
        other => PrProbe::Failed(format!("SCSI status 0x{other:02x}")),
    }
}

/// How many keys one READ KEYS asks room for.
pub const READ_KEYS_MAX: usize = 255;

/// Send READ KEYS (retrying UNIT ATTENTION / BUSY a few times).  `Err`
/// is the ioctl failing: the device does not take SG_IO.
pub fn read_keys(dev: &File) -> io::Result<PrProbe> {
    let alloc = 8 + 8 * READ_KEYS_MAX;
    let cdb = read_keys_cdb(alloc as u16);
    let mut last = PrProbe::Failed("no attempt".to_string());
    for _ in 0..3 {
        let r = sg_io_data_in(dev, &cdb, alloc, 10_000)?;
        last = classify(&r);
        if !matches!(last, PrProbe::Retry(_)) {
            return Ok(last);
        }
    }
    Ok(match last {
        PrProbe::Retry(why) => PrProbe::Failed(format!("{why}, three times")),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sg_io_hdr_has_the_kernel_layout() {
        // x86_64 / aarch64 (LP64): sizeof(struct sg_io_hdr) == 88.
        if cfg!(target_pointer_width = "64") {
            assert_eq!(std::mem::size_of::<SgIoHdr>(), 88);
            assert_eq!(std::mem::offset_of!(SgIoHdr, dxferp), 16);
            assert_eq!(std::mem::offset_of!(SgIoHdr, usr_ptr), 56);
            assert_eq!(std::mem::offset_of!(SgIoHdr, status), 64);
            assert_eq!(std::mem::offset_of!(SgIoHdr, resid), 72);
        }
    }

    #[test]
    fn cdb_is_persistent_reserve_in_read_keys() {
        assert_eq!(
            read_keys_cdb(0x0808),
            [0x5e, 0x00, 0, 0, 0, 0, 0, 0x08, 0x08, 0]
        );
    }

    #[test]
    fn read_keys_round_trip() {
        for keys in [vec![], vec![1], vec![0xaf63_dc4c_8601_ec8c, u64::MAX, 42]] {
            let enc = encode_read_keys(7, &keys);
            let d = decode_read_keys(&enc).unwrap();
            assert_eq!(d.generation, 7);
            assert_eq!(d.keys, keys);
            assert!(!d.truncated());
        }
    }

    #[test]
    fn read_keys_truncated_by_allocation_length() {
        let enc = encode_read_keys(3, &[10, 20, 30]);
        let d = decode_read_keys(&enc[..8 + 12]).unwrap();
        assert_eq!(d.keys, vec![10]);
        assert_eq!(d.additional_length, 24);
        assert!(d.truncated());
    }

    #[test]
    fn read_keys_garbage() {
        assert_eq!(decode_read_keys(&[]), Err(DecodeError::Short(0)));
        assert_eq!(decode_read_keys(&[0; 7]), Err(DecodeError::Short(7)));
        let mut enc = encode_read_keys(1, &[5]);
        enc[7] = 9;
        assert_eq!(decode_read_keys(&enc), Err(DecodeError::Ragged(9)));
        let mut enc = encode_read_keys(1, &[5]);
        enc.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(decode_read_keys(&enc).unwrap().keys, vec![5]);
        enc.push(1);
        assert_eq!(decode_read_keys(&enc).unwrap().keys, vec![5]);
        // a huge announced length with little data: only whole keys
        let mut enc = encode_read_keys(1, &[5]);
        enc[4..8].copy_from_slice(&0xffff_fff8u32.to_be_bytes());
        let d = decode_read_keys(&enc).unwrap();
        assert_eq!(d.keys, vec![5]);
        assert!(d.truncated());
    }

    #[test]
    fn sense_formats() {
        let mut fixed = [0u8; 18];
        fixed[0] = 0x70;
        fixed[2] = 0x05;
        fixed[12] = 0x20;
        assert_eq!(
            parse_sense(&fixed),
            Some(Sense {
                key: 5,
                asc: 0x20,
                ascq: 0
            })
        );
        let desc = [0x72, 0x06, 0x29, 0x00, 0, 0, 0, 0];
        assert_eq!(
            parse_sense(&desc),
            Some(Sense {
                key: 6,
                asc: 0x29,
                ascq: 0
            })
        );
        assert_eq!(parse_sense(&[]), None);
        assert_eq!(parse_sense(&[0x70, 0]), None);
        assert_eq!(parse_sense(&[0x00; 18]), None);
    }

    fn check_condition(key: u8, asc: u8) -> ScsiResult {
        let mut sense = vec![0u8; 18];
        sense[0] = 0x70;
        sense[2] = key;
        sense[12] = asc;
        ScsiResult {
            status: STATUS_CHECK_CONDITION,
            driver_status: 0x08,
            sense,
            ..Default::default()
        }
    }

    #[test]
    fn classification() {
        let good = ScsiResult {
            data: encode_read_keys(2, &[99]),
            ..Default::default()
        };
        match classify(&good) {
            PrProbe::Keys(k) => assert_eq!((k.generation, k.keys), (2, vec![99])),
            other => panic!("{other:?}"),
        }
        let invalid_opcode = classify(&check_condition(SENSE_ILLEGAL_REQUEST, 0x20));
        assert!(
            matches!(&invalid_opcode, PrProbe::Unsupported(m) if m.contains("invalid command operation code")),
            "{invalid_opcode:?}"
        );
        assert!(matches!(
            classify(&check_condition(SENSE_ILLEGAL_REQUEST, 0x24)),
            PrProbe::Unsupported(_)
        ));
        assert!(matches!(
            classify(&check_condition(SENSE_UNIT_ATTENTION, 0x29)),
            PrProbe::Retry(_)
        ));
        assert!(matches!(
            classify(&check_condition(SENSE_NOT_READY, 0x04)),
            PrProbe::Failed(_)
        ));
        let no_sense = ScsiResult {
            status: STATUS_CHECK_CONDITION,
            ..Default::default()
        };
        assert!(matches!(classify(&no_sense), PrProbe::Failed(_)));
        let transport = ScsiResult {
            host_status: 1,
            data: encode_read_keys(2, &[]),
            ..Default::default()
        };
        assert!(matches!(classify(&transport), PrProbe::Failed(_)));
        let busy = ScsiResult {
            status: STATUS_BUSY,
            ..Default::default()
        };
        assert!(matches!(classify(&busy), PrProbe::Retry(_)));
        let short = ScsiResult::default();
        assert!(matches!(classify(&short), PrProbe::Failed(_)));
    }

    #[test]
    fn sg_io_on_a_regular_file_is_an_ioctl_error() {
        // No SCSI device here: SG_IO on a regular file fails with ENOTTY
        // (or EINVAL), which is what "not SCSI" looks like.
        let path = std::env::temp_dir().join(format!("mxfs-sgio-{}", std::process::id()));
        std::fs::write(&path, [0u8; 512]).unwrap();
        let f = File::open(&path).unwrap();
        let e = read_keys(&f).unwrap_err();
        assert!(
            matches!(e.raw_os_error(), Some(libc::ENOTTY) | Some(libc::EINVAL)),
            "{e}"
        );
        std::fs::remove_file(&path).unwrap();
    }

    proptest! {
        #[test]
        fn decode_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            if let Ok(k) = decode_read_keys(&bytes) {
                prop_assert!(k.keys.len() * 8 <= bytes.len() - 8);
            }
        }

        #[test]
        fn sense_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_sense(&bytes);
        }

        #[test]
        fn classify_arbitrary_results_never_panics(
            status in any::<u8>(),
            host in any::<u16>(),
            driver in any::<u16>(),
            sense in proptest::collection::vec(any::<u8>(), 0..64),
            data in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let _ = classify(&ScsiResult { status, host_status: host, driver_status: driver, sense, data });
        }

        #[test]
        fn round_trip_any_keys(gen in any::<u32>(), keys in proptest::collection::vec(any::<u64>(), 0..64)) {
            let d = decode_read_keys(&encode_read_keys(gen, &keys)).unwrap();
            prop_assert_eq!(d.generation, gen);
            prop_assert!(!d.truncated());
            prop_assert_eq!(d.keys, keys);
        }
    }
}
