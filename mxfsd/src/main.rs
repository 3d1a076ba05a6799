//! mxfsd: the MXFS volume daemon (one per mounted volume).
//!
//! Not implemented yet: the kernel-module issue builds its lifecycle.

fn main() {
    eprintln!("mxfsd: not implemented yet (see the kernel-module issue)");
    std::process::exit(1);
}
