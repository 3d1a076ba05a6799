//! mount.mxfs: what `mount -t mxfs` runs first.
//!
//! Not implemented yet: the packaging issue builds it.

fn main() {
    eprintln!("mount.mxfs: not implemented yet (see the packaging issue)");
    std::process::exit(1);
}
