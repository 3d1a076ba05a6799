//! SCSI-3 persistent reservations, the first fencing layer (DESIGN.md §5):
//! register a node's key, reserve the LUN Write Exclusive – Registrants
//! Only, release, preempt a dead node's key, read keys and the
//! reservation.
//!
//! Two routes behind one [`PrDevice`]:
//! - SCSI (sd: iSCSI, SAS, FC LUNs): PERSISTENT RESERVE IN/OUT over SG_IO,
//!   as `sg_persist` does, registering without APTPL.  The kernel's
//!   `IOC_PR_REGISTER` always sets APTPL, which some targets (tgt, used by
//!   the testbed) reject, hence SG_IO.
//! - NVMe: the `linux/pr.h` ioctls.  They cannot read keys or the
//!   reservation, so [`PrDevice::read_keys`] says so there.
//!
//! Two numberings of the reservation type exist and are never mixed:
//! SCSI's PR TYPE field (Write Exclusive – Registrants Only is 5h) and
//! `enum pr_type` of `linux/pr.h` (`PR_WRITE_EXCLUSIVE_REG_ONLY` is 3).
//!
//! The decoders take arbitrary bytes and return errors, never panic.
//! References: SPC-4 6.15 (PERSISTENT RESERVE IN), 6.16 (PERSISTENT
//! RESERVE OUT); `include/uapi/linux/pr.h`.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::sgio::{
    self, decode_read_keys, parse_sense, ReadKeys, ScsiResult, PERSISTENT_RESERVE_IN,
    SENSE_ILLEGAL_REQUEST, SENSE_UNIT_ATTENTION, STATUS_BUSY, STATUS_CHECK_CONDITION, STATUS_GOOD,
    STATUS_RESERVATION_CONFLICT,
};

/// PERSISTENT RESERVE OUT.
pub const PERSISTENT_RESERVE_OUT: u8 = 0x5f;
/// PR IN service action READ RESERVATION.
pub const PR_IN_READ_RESERVATION: u8 = 0x01;

/// PR OUT service actions (SPC-4 table 216).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum PrOutAction {
    Register = 0x00,
    Reserve = 0x01,
    Release = 0x02,
    Clear = 0x03,
    Preempt = 0x04,
    PreemptAndAbort = 0x05,
    RegisterAndIgnoreExistingKey = 0x06,
}

/// SCSI PR TYPE 5h: Write Exclusive – Registrants Only.  Only registered
/// I_T nexuses may write: a preempted node's writes fail with
/// RESERVATION CONFLICT.
pub const SCSI_TYPE_WRITE_EXCLUSIVE_REG_ONLY: u8 = 0x5;
/// `PR_WRITE_EXCLUSIVE_REG_ONLY` of `linux/pr.h` (the same reservation in
/// the kernel's numbering).
pub const LINUX_PR_WRITE_EXCLUSIVE_REG_ONLY: u32 = 3;

/// The 10-byte PERSISTENT RESERVE OUT CDB (scope LU_SCOPE, 24-byte basic
/// parameter list).
pub fn pr_out_cdb(action: PrOutAction, pr_type: u8) -> [u8; 10] {
    let len = (PR_OUT_PARAM_LEN as u32).to_be_bytes();
    [
        PERSISTENT_RESERVE_OUT,
        action as u8,
        pr_type & 0x0f,
        0,
        0,
        len[0],
        len[1],
        len[2],
        len[3],
        0,
    ]
}

/// Length of the basic PR OUT parameter list.
pub const PR_OUT_PARAM_LEN: usize = 24;

/// The basic PR OUT parameter list: reservation key, service action
/// reservation key, and the flag byte with SPEC_I_PT, ALL_TG_PT and APTPL
/// all clear (no persistence through power loss: tgt rejects it, and a
/// fence must not outlive the target's own state silently either).
pub fn pr_out_params(key: u64, sa_key: u64) -> [u8; PR_OUT_PARAM_LEN] {
    let mut p = [0u8; PR_OUT_PARAM_LEN];
    p[0..8].copy_from_slice(&key.to_be_bytes());
    p[8..16].copy_from_slice(&sa_key.to_be_bytes());
    p
}

/// The 10-byte PERSISTENT RESERVE IN CDB for READ RESERVATION.
pub fn read_reservation_cdb(alloc_len: u16) -> [u8; 10] {
    let len = alloc_len.to_be_bytes();
    [
        PERSISTENT_RESERVE_IN,
        PR_IN_READ_RESERVATION,
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

/// Who holds the reservation, if anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub key: u64,
    /// SCSI PR TYPE (5 is Write Exclusive – Registrants Only).
    pub pr_type: u8,
    pub scope: u8,
}

/// READ RESERVATION parameter data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reservation {
    pub generation: u32,
    pub holder: Option<Holder>,
}

/// Why a PR command did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum PrError {
    /// The device does not take the route's ioctl (not SCSI, or not a
    /// block device with PR operations).
    #[error("the device does not take persistent reservation commands: {0}")]
    NoRoute(io::Error),
    /// The device refused the command: it has no (such) PR support.
    #[error("the device does not support this: {0}")]
    Unsupported(String),
    /// RESERVATION CONFLICT: this node is not registered (or is fenced).
    #[error(
        "RESERVATION CONFLICT (this node's key is not registered: it may have been preempted)"
    )]
    Conflict,
    /// The answer's data could not be decoded.
    #[error("bad answer from the device: {0}")]
    Decode(String),
    /// Anything else.
    #[error("{0}")]
    Failed(String),
}

/// Classify a PR command's status: `Ok(())` for GOOD; `Err(None)` for
/// a condition worth a retry (UNIT ATTENTION, BUSY).  Pure: unit-tested.
pub fn classify_status(r: &ScsiResult) -> Result<(), Option<PrError>> {
    let driver = r.driver_status & 0x0f;
    if r.host_status != 0 || (driver != 0 && driver != 0x08) {
        return Err(Some(PrError::Failed(format!(
            "transport error (host status 0x{:x}, driver status 0x{:x})",
            r.host_status, r.driver_status
        ))));
    }
    match r.status & 0x7e {
        STATUS_GOOD => Ok(()),
        STATUS_RESERVATION_CONFLICT => Err(Some(PrError::Conflict)),
        STATUS_BUSY => Err(None),
        STATUS_CHECK_CONDITION => match parse_sense(&r.sense) {
            Some(s) if s.key == SENSE_UNIT_ATTENTION => Err(None),
            Some(s) if s.key == SENSE_ILLEGAL_REQUEST => {
                let what = match s.asc {
                    0x20 => "invalid command operation code",
                    0x24 => "invalid field in CDB",
                    0x26 => "invalid field in parameter list",
                    _ => "illegal request",
                };
                Err(Some(PrError::Unsupported(format!(
                    "{what} (ASC/ASCQ {:02x}/{:02x})",
                    s.asc, s.ascq
                ))))
            }
            Some(s) => Err(Some(PrError::Failed(format!(
                "CHECK CONDITION, sense key 0x{:x}, ASC/ASCQ {:02x}/{:02x}",
                s.key, s.asc, s.ascq
            )))),
            None => Err(Some(PrError::Failed(
                "CHECK CONDITION without usable sense data".to_string(),
            ))),
        },
        other => Err(Some(PrError::Failed(format!("SCSI status 0x{other:02x}")))),
    }
}

/// Decode READ RESERVATION parameter data (SPC-4 6.15.3).
pub fn decode_read_reservation(buf: &[u8]) -> Result<Reservation, PrError> {
    if buf.len() < 8 {
        return Err(PrError::Decode(format!(
            "READ RESERVATION data too short ({} bytes, need 8)",
            buf.len()
        )));
    }
    let generation = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let additional = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let holder = match additional {
        0 => None,
        n if n < 16 => {
            return Err(PrError::Decode(format!(
                "READ RESERVATION additional length {n} (0 or at least 16)"
            )))
        }
        _ if buf.len() < 24 => {
            return Err(PrError::Decode(format!(
                "READ RESERVATION announces a reservation in {} bytes (need 24)",
                buf.len()
            )))
        }
        _ => Some(Holder {
            key: u64::from_be_bytes(buf[8..16].try_into().expect("8 bytes")),
            pr_type: buf[21] & 0x0f,
            scope: buf[21] >> 4,
        }),
    };
    Ok(Reservation { generation, holder })
}

/// Encode READ RESERVATION parameter data (the inverse of
/// [`decode_read_reservation`], for tests).
pub fn encode_read_reservation(r: &Reservation) -> Vec<u8> {
    let mut v = r.generation.to_be_bytes().to_vec();
    match r.holder {
        None => v.extend_from_slice(&0u32.to_be_bytes()),
        Some(h) => {
            v.extend_from_slice(&16u32.to_be_bytes());
            v.extend_from_slice(&h.key.to_be_bytes());
            v.extend_from_slice(&[0; 5]);
            v.push((h.scope << 4) | (h.pr_type & 0x0f));
            v.extend_from_slice(&[0; 2]);
        }
    }
    v
}

// `linux/pr.h`: _IOW('p', nr, struct ...).
const IOC_PR_REGISTER: libc::c_ulong = 0x4018_70c8;
const IOC_PR_RESERVE: libc::c_ulong = 0x4010_70c9;
const IOC_PR_RELEASE: libc::c_ulong = 0x4010_70ca;
const IOC_PR_PREEMPT: libc::c_ulong = 0x4018_70cb;
const IOC_PR_PREEMPT_ABORT: libc::c_ulong = 0x4018_70cc;
const PR_FL_IGNORE_KEY: u32 = 1;

#[repr(C)]
struct PrRegistration {
    old_key: u64,
    new_key: u64,
    flags: u32,
    pad: u32,
}

#[repr(C)]
struct PrReservationArg {
    key: u64,
    pr_type: u32,
    flags: u32,
}

#[repr(C)]
struct PrPreempt {
    old_key: u64,
    new_key: u64,
    pr_type: u32,
    flags: u32,
}

/// The route PR commands take to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// SG_IO (SCSI disks).
    Scsi,
    /// `linux/pr.h` ioctls (NVMe namespaces).
    LinuxPr,
}

/// A block device opened for persistent reservation commands.
#[derive(Debug)]
pub struct PrDevice {
    file: File,
    route: Route,
}

/// How many times a command is retried on UNIT ATTENTION or BUSY.
const RETRIES: usize = 5;
/// Timeout of one SG_IO command.
const TIMEOUT_MS: u32 = 15_000;

impl PrDevice {
    /// Opens `path` (read-write: PR OUT is a write-class command) and
    /// picks the route from what the device is: NVMe names take the
    /// `linux/pr.h` ioctls, everything else SG_IO.
    pub fn open(path: &Path) -> io::Result<PrDevice> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let name = std::fs::canonicalize(path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let route = if name.starts_with("nvme") {
            Route::LinuxPr
        } else {
            Route::Scsi
        };
        Ok(PrDevice { file, route })
    }

    pub fn route(&self) -> Route {
        self.route
    }

    /// Runs one SG_IO command (`send`), again on UNIT ATTENTION or BUSY.
    fn scsi_retried(
        &self,
        what: &str,
        send: impl Fn() -> io::Result<ScsiResult>,
    ) -> Result<ScsiResult, PrError> {
        for _ in 0..RETRIES {
            let r = send().map_err(PrError::NoRoute)?;
            match classify_status(&r) {
                Ok(()) => return Ok(r),
                Err(Some(e)) => return Err(e),
                Err(None) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        }
        Err(PrError::Failed(format!(
            "{what}: unit attention or busy {RETRIES} times"
        )))
    }

    fn scsi_out(
        &self,
        action: PrOutAction,
        pr_type: u8,
        key: u64,
        sa_key: u64,
    ) -> Result<(), PrError> {
        let cdb = pr_out_cdb(action, pr_type);
        let params = pr_out_params(key, sa_key);
        self.scsi_retried(&format!("{action:?}"), || {
            sgio::sg_io_data_out(&self.file, &cdb, &params, TIMEOUT_MS)
        })
        .map(|_| ())
    }

    fn scsi_in(&self, cdb: &[u8], alloc: usize) -> Result<Vec<u8>, PrError> {
        self.scsi_retried("PERSISTENT RESERVE IN", || {
            sgio::sg_io_data_in(&self.file, cdb, alloc, TIMEOUT_MS)
        })
        .map(|r| r.data)
    }

    fn linux_ioctl<T>(&self, req: libc::c_ulong, arg: &T) -> Result<(), PrError> {
        // SAFETY: `arg` is the #[repr(C)] structure `req` names, alive
        // across the call; the kernel only reads it.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), req as _, arg as *const T) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        Err(match e.raw_os_error() {
            Some(libc::ENOTTY) | Some(libc::EOPNOTSUPP) => PrError::NoRoute(e),
            // The block layer maps RESERVATION CONFLICT to EBADE.
            Some(libc::EBADE) => PrError::Conflict,
            _ => PrError::Failed(e.to_string()),
        })
    }

    /// Registers `key` for this node whatever key it had before
    /// (REGISTER AND IGNORE EXISTING KEY); `key` 0 unregisters.
    pub fn register(&self, key: u64) -> Result<(), PrError> {
        match self.route {
            Route::Scsi => self.scsi_out(PrOutAction::RegisterAndIgnoreExistingKey, 0, 0, key),
            Route::LinuxPr => self.linux_ioctl(
                IOC_PR_REGISTER,
                &PrRegistration {
                    old_key: 0,
                    new_key: key,
                    flags: PR_FL_IGNORE_KEY,
                    pad: 0,
                },
            ),
        }
    }

    /// Reserves the device Write Exclusive – Registrants Only with `key`.
    /// Reserving again what this key already holds is GOOD (SPC-4).
    pub fn reserve(&self, key: u64) -> Result<(), PrError> {
        match self.route {
            Route::Scsi => self.scsi_out(
                PrOutAction::Reserve,
                SCSI_TYPE_WRITE_EXCLUSIVE_REG_ONLY,
                key,
                0,
            ),
            Route::LinuxPr => self.linux_ioctl(
                IOC_PR_RESERVE,
                &PrReservationArg {
                    key,
                    pr_type: LINUX_PR_WRITE_EXCLUSIVE_REG_ONLY,
                    flags: 0,
                },
            ),
        }
    }

    /// Releases the reservation if `key` holds it (a no-op otherwise).
    pub fn release(&self, key: u64) -> Result<(), PrError> {
        match self.route {
            Route::Scsi => self.scsi_out(
                PrOutAction::Release,
                SCSI_TYPE_WRITE_EXCLUSIVE_REG_ONLY,
                key,
                0,
            ),
            Route::LinuxPr => self.linux_ioctl(
                IOC_PR_RELEASE,
                &PrReservationArg {
                    key,
                    pr_type: LINUX_PR_WRITE_EXCLUSIVE_REG_ONLY,
                    flags: 0,
                },
            ),
        }
    }

    /// Removes `victim`'s registration using this node's `key`
    /// (PREEMPT AND ABORT when `abort`, which also aborts its queued
    /// commands).  The device then rejects the victim's writes.
    pub fn preempt(&self, key: u64, victim: u64, abort: bool) -> Result<(), PrError> {
        match self.route {
            Route::Scsi => self.scsi_out(
                if abort {
                    PrOutAction::PreemptAndAbort
                } else {
                    PrOutAction::Preempt
                },
                SCSI_TYPE_WRITE_EXCLUSIVE_REG_ONLY,
                key,
                victim,
            ),
            Route::LinuxPr => self.linux_ioctl(
                if abort {
                    IOC_PR_PREEMPT_ABORT
                } else {
                    IOC_PR_PREEMPT
                },
                &PrPreempt {
                    old_key: key,
                    new_key: victim,
                    pr_type: LINUX_PR_WRITE_EXCLUSIVE_REG_ONLY,
                    flags: 0,
                },
            ),
        }
    }

    /// The registered keys (SCSI only).
    pub fn read_keys(&self) -> Result<ReadKeys, PrError> {
        match self.route {
            Route::Scsi => {
                let alloc = 8 + 8 * sgio::READ_KEYS_MAX;
                let data = self.scsi_in(&sgio::read_keys_cdb(alloc as u16), alloc)?;
                decode_read_keys(&data).map_err(|e| PrError::Decode(e.to_string()))
            }
            Route::LinuxPr => Err(PrError::Unsupported(
                "linux/pr.h has no command to read registered keys".to_string(),
            )),
        }
    }

    /// The reservation and its holder (SCSI only).
    pub fn read_reservation(&self) -> Result<Reservation, PrError> {
        match self.route {
            Route::Scsi => {
                let data = self.scsi_in(&read_reservation_cdb(24), 24)?;
                decode_read_reservation(&data)
            }
            Route::LinuxPr => Err(PrError::Unsupported(
                "linux/pr.h has no command to read the reservation".to_string(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pr_out_cdbs() {
        assert_eq!(
            pr_out_cdb(PrOutAction::RegisterAndIgnoreExistingKey, 0),
            [0x5f, 0x06, 0x00, 0, 0, 0, 0, 0, 24, 0]
        );
        assert_eq!(
            pr_out_cdb(PrOutAction::Reserve, SCSI_TYPE_WRITE_EXCLUSIVE_REG_ONLY),
            [0x5f, 0x01, 0x05, 0, 0, 0, 0, 0, 24, 0]
        );
        assert_eq!(
            pr_out_cdb(PrOutAction::PreemptAndAbort, 5)[..3],
            [0x5f, 0x05, 0x05]
        );
    }

    #[test]
    fn pr_out_params_carry_keys_and_no_aptpl() {
        let p = pr_out_params(0x0102_0304_0506_0708, 0xa1a2_a3a4_a5a6_a7a8);
        assert_eq!(&p[0..8], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&p[8..16], &[0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8]);
        // SPEC_I_PT, ALL_TG_PT and APTPL clear
        assert_eq!(p[20], 0);
    }

    #[test]
    fn linux_pr_ioctl_numbers_match_the_header() {
        // _IOW('p', nr, T) = 1 << 30 | sizeof(T) << 16 | 'p' << 8 | nr
        let iow = |nr: libc::c_ulong, size: usize| -> libc::c_ulong {
            (1 << 30) | ((size as libc::c_ulong) << 16) | (0x70 << 8) | nr
        };
        assert_eq!(
            IOC_PR_REGISTER,
            iow(200, std::mem::size_of::<PrRegistration>())
        );
        assert_eq!(
            IOC_PR_RESERVE,
            iow(201, std::mem::size_of::<PrReservationArg>())
        );
        assert_eq!(
            IOC_PR_RELEASE,
            iow(202, std::mem::size_of::<PrReservationArg>())
        );
        assert_eq!(IOC_PR_PREEMPT, iow(203, std::mem::size_of::<PrPreempt>()));
        assert_eq!(
            IOC_PR_PREEMPT_ABORT,
            iow(204, std::mem::size_of::<PrPreempt>())
        );
    }

    #[test]
    fn read_reservation_round_trip() {
        for r in [
            Reservation {
                generation: 9,
                holder: None,
            },
            Reservation {
                generation: 1,
                holder: Some(Holder {
                    key: 0xaf63_dc4c_8601_ec8c,
                    pr_type: 5,
                    scope: 0,
                }),
            },
        ] {
            assert_eq!(
                decode_read_reservation(&encode_read_reservation(&r)).unwrap(),
                r
            );
        }
    }

    #[test]
    fn read_reservation_garbage() {
        assert!(decode_read_reservation(&[]).is_err());
        assert!(decode_read_reservation(&[0; 7]).is_err());
        let mut v = vec![0, 0, 0, 1, 0, 0, 0, 8];
        assert!(decode_read_reservation(&v).is_err());
        v[7] = 16;
        assert!(decode_read_reservation(&v).is_err(), "announced but absent");
    }

    fn result(status: u8, sense_key: u8, asc: u8) -> ScsiResult {
        let mut sense = vec![0u8; 18];
        sense[0] = 0x70;
        sense[2] = sense_key;
        sense[12] = asc;
        ScsiResult {
            status,
            sense,
            ..Default::default()
        }
    }

    #[test]
    fn status_classification() {
        assert!(classify_status(&ScsiResult::default()).is_ok());
        assert!(matches!(
            classify_status(&result(STATUS_RESERVATION_CONFLICT, 0, 0)),
            Err(Some(PrError::Conflict))
        ));
        assert!(matches!(
            classify_status(&result(STATUS_BUSY, 0, 0)),
            Err(None)
        ));
        assert!(matches!(
            classify_status(&result(STATUS_CHECK_CONDITION, SENSE_UNIT_ATTENTION, 0x29)),
            Err(None)
        ));
        match classify_status(&result(STATUS_CHECK_CONDITION, SENSE_ILLEGAL_REQUEST, 0x26)) {
            Err(Some(PrError::Unsupported(m))) => assert!(m.contains("parameter list"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify_status(&ScsiResult {
                host_status: 7,
                ..Default::default()
            }),
            Err(Some(PrError::Failed(_)))
        ));
    }

    #[test]
    fn a_regular_file_has_no_scsi_route() {
        let path = std::env::temp_dir().join(format!("mxfs-pr-{}", std::process::id()));
        std::fs::write(&path, [0u8; 512]).unwrap();
        let d = PrDevice::open(&path).unwrap();
        assert_eq!(d.route(), Route::Scsi);
        assert!(matches!(d.register(7), Err(PrError::NoRoute(_))));
        assert!(matches!(d.read_reservation(), Err(PrError::NoRoute(_))));
        std::fs::remove_file(&path).unwrap();
    }

    proptest! {
        #[test]
        fn read_reservation_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_read_reservation(&bytes);
        }

        #[test]
        fn classify_status_never_panics(
            status in any::<u8>(),
            host in any::<u16>(),
            driver in any::<u16>(),
            sense in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let _ = classify_status(&ScsiResult { status, host_status: host, driver_status: driver, sense, data: vec![] });
        }
    }
}
