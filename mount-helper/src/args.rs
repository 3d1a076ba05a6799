//! The command line mount(8) gives a helper:
//! `mount.mxfs SPEC DIR [-sfnv] [-o OPTS] [-t mxfs]`.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use crate::error::Failure;

pub const USAGE: &str = "usage: mount.mxfs SPEC DIR [-sfnv] [-o OPTIONS]";

/// One parsed invocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invocation {
    pub spec: OsString,
    pub dir: OsString,
    /// `-s`: ignore unknown options (with a warning).
    pub sloppy: bool,
    /// `-f`: do every check, change nothing, do not call mount(2).
    pub fake: bool,
    /// `-n`: do not write mtab (mount.mxfs never does; accepted).
    pub nomtab: bool,
    /// `-v`: say what is done.
    pub verbose: bool,
    /// Every `-o` joined with commas, in order.
    pub options: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Invocation),
    Help,
    Version,
    /// `--udev-probe DEVNODE`: print udev properties for the device (the
    /// udev rules run this; see `udev/64-mxfs.rules`).
    UdevProbe(OsString),
}

/// Parse the arguments after `argv[0]`.
pub fn parse_args<I>(args: I) -> Result<Parsed, Failure>
where
    I: IntoIterator<Item = OsString>,
{
    let mut inv = Invocation::default();
    let mut positional: Vec<OsString> = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let mut it = args.into_iter();
    let mut only_positional = false;

    while let Some(arg) = it.next() {
        let bytes = arg.as_bytes();
        if only_positional || bytes.len() < 2 || bytes[0] != b'-' {
            positional.push(arg);
            continue;
        }
        match bytes {
            b"--" => {
                only_positional = true;
                continue;
            }
            b"--help" => return Ok(Parsed::Help),
            b"--version" => return Ok(Parsed::Version),
            b"--udev-probe" => {
                return match (it.next(), it.next()) {
                    (Some(dev), None) => Ok(Parsed::UdevProbe(dev)),
                    _ => Err(Failure::usage("usage: mount.mxfs --udev-probe DEVNODE")),
                }
            }
            _ if bytes.starts_with(b"--") => {
                return Err(Failure::usage(format!(
                    "unknown flag {}; {USAGE}",
                    arg.to_string_lossy()
                )))
            }
            _ => {}
        }
        // A cluster of short flags: -sfnv, -oOPTS, -o OPTS, -t mxfs.
        let mut i = 1;
        while i < bytes.len() {
            let c = bytes[i];
            i += 1;
            match c {
                b's' => inv.sloppy = true,
                b'f' => inv.fake = true,
                b'n' => inv.nomtab = true,
                b'v' => inv.verbose = true,
                b'h' => return Ok(Parsed::Help),
                b'V' => return Ok(Parsed::Version),
                b'o' | b't' => {
                    let value = if i < bytes.len() {
                        OsStr::from_bytes(&bytes[i..]).to_os_string()
                    } else {
                        it.next().ok_or_else(|| {
                            Failure::usage(format!("-{} needs a value; {USAGE}", c as char))
                        })?
                    };
                    let value = value.into_string().map_err(|v| {
                        Failure::usage(format!(
                            "-{} {}: not valid UTF-8",
                            c as char,
                            v.to_string_lossy()
                        ))
                    })?;
                    if c == b'o' {
                        opts.push(value);
                    } else if value != "mxfs" {
                        return Err(Failure::usage(format!(
                            "-t {value}: this helper mounts only type mxfs"
                        )));
                    }
                    break;
                }
                other => {
                    return Err(Failure::usage(format!(
                        "unknown flag -{}; {USAGE}",
                        String::from_utf8_lossy(&[other])
                    )))
                }
            }
        }
    }

    let mut positional = positional.into_iter();
    let (spec, dir) = match (positional.next(), positional.next(), positional.next()) {
        (Some(s), Some(d), None) => (s, d),
        (_, _, Some(extra)) => {
            return Err(Failure::usage(format!(
                "unexpected argument {}; {USAGE}",
                extra.to_string_lossy()
            )))
        }
        _ => {
            return Err(Failure::usage(format!(
                "SPEC and DIR are required; {USAGE}"
            )))
        }
    };
    if spec.is_empty() || dir.is_empty() {
        return Err(Failure::usage(format!("empty SPEC or DIR; {USAGE}")));
    }
    inv.spec = spec;
    inv.dir = dir;
    inv.options = opts
        .iter()
        .map(|o| o.as_str())
        .filter(|o| !o.is_empty())
        .collect::<Vec<_>>()
        .join(",");
    Ok(Parsed::Run(inv))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Exit;

    fn parse(args: &[&str]) -> Result<Parsed, Failure> {
        parse_args(args.iter().map(OsString::from))
    }

    fn run(args: &[&str]) -> Invocation {
        match parse(args).unwrap() {
            Parsed::Run(i) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn mount8_style() {
        let i = run(&["/dev/sdb", "/mnt", "-o", "rw,_netdev"]);
        assert_eq!(i.spec, "/dev/sdb");
        assert_eq!(i.dir, "/mnt");
        assert_eq!(i.options, "rw,_netdev");
        assert!(!i.sloppy && !i.fake && !i.nomtab && !i.verbose);
    }

    #[test]
    fn flags_clustered_and_separate_and_anywhere() {
        let i = run(&["-sfnv", "/dev/sdb", "/mnt", "-oro", "-o", "noatime"]);
        assert!(i.sloppy && i.fake && i.nomtab && i.verbose);
        assert_eq!(i.options, "ro,noatime");
        let i = run(&["/dev/sdb", "-v", "/mnt", "-s", "-t", "mxfs"]);
        assert!(i.verbose && i.sloppy && !i.fake);
        let i = run(&["-vo", "ro", "/dev/sdb", "/mnt"]);
        assert!(i.verbose);
        assert_eq!(i.options, "ro");
        let i = run(&["--", "-dev", "/mnt"]);
        assert_eq!(i.spec, "-dev");
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["-h"]).unwrap(), Parsed::Help);
        assert_eq!(parse(&["--help"]).unwrap(), Parsed::Help);
        assert_eq!(parse(&["-V"]).unwrap(), Parsed::Version);
        assert_eq!(parse(&["--version"]).unwrap(), Parsed::Version);
        assert_eq!(
            parse(&["--udev-probe", "/dev/sda"]).unwrap(),
            Parsed::UdevProbe("/dev/sda".into())
        );
        assert!(parse(&["--udev-probe"]).is_err());
        assert!(parse(&["--udev-probe", "/dev/sda", "x"]).is_err());
    }

    #[test]
    fn bad_invocations_exit_1() {
        for (args, needle) in [
            (&["/dev/sdb", "/mnt", "-N", "ns"][..], "unknown flag -N"),
            (&["/dev/sdb", "/mnt", "-sx"][..], "unknown flag -x"),
            (&["/dev/sdb", "/mnt", "--bind"][..], "unknown flag --bind"),
            (&["/dev/sdb"][..], "SPEC and DIR are required"),
            (&[][..], "SPEC and DIR are required"),
            (&["/dev/sdb", "/mnt", "/x"][..], "unexpected argument /x"),
            (&["/dev/sdb", "/mnt", "-o"][..], "-o needs a value"),
            (&["/dev/sdb", "/mnt", "-t", "xfs"][..], "only type mxfs"),
            (&["", "/mnt"][..], "empty SPEC"),
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(e.exit, Exit::Usage, "{args:?}");
            assert!(e.msg.contains(needle), "{args:?}: {}", e.msg);
        }
    }
}
