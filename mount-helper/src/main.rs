//! mount.mxfs: what `mount -t mxfs` runs first (see `mount.mxfs.8`).

fn main() {
    let code = mount_mxfs::main_with(std::env::args_os().skip(1));
    std::process::exit(code);
}
