//! The `mailferry` binary: parse the command line, run, print one error line, exit.

use std::process::ExitCode;

use clap::Parser;
use mailferry::cli::{self, Cli};

fn main() -> ExitCode {
    fix_mmap_threshold();
    let code = cli::exit_code_of(|| cli::run(Cli::parse()));
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

/// Keeps glibc's malloc handing every block of 128 KiB or more to `mmap`, so that a large
/// message body goes back to the system when freed. By default glibc raises that threshold to
/// the size of each large block freed (up to 32 MiB): once a big index table is dropped, the
/// message bodies of up to its size come from the heap instead, where the ones in flight
/// fragment it, and peak RSS grows with the mailbox (about 10 MB more at 10,000 messages).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn fix_mmap_threshold() {
    /// glibc's default, here made fixed.
    const THRESHOLD: libc::c_int = 128 * 1024;
    // SAFETY: mallopt only changes allocator settings; it runs before any other thread exists.
    // A refusal (it returns 0) leaves glibc's default, which is only slower to give memory back.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn fix_mmap_threshold() {}
