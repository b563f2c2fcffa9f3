//! Child processes that cannot hang a test: every run is killed after its timeout.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

pub(super) struct Finished {
    pub(super) status: ExitStatus,
    pub(super) stdout: Vec<u8>,
    pub(super) stderr: Vec<u8>,
}

/// Runs `command` to completion or kills it after `timeout`. Output goes to unnamed files,
/// not pipes: `dovecot.sh up` leaves daemons behind, and a daemon holding a pipe open would
/// make reading it to EOF hang.
pub(super) fn run_bounded(
    mut command: Command,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Finished, String> {
    let describe = format!("{command:?}");
    let stdout = tempfile::tempfile().expect("create a temporary file");
    let stderr = tempfile::tempfile().expect("create a temporary file");
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(stdout.try_clone().expect("clone file handle"))
        .stderr(stderr.try_clone().expect("clone file handle"));
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run {describe}: {e}"))?;
    let status = thread::scope(|scope| {
        if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
            // A child that exits early makes this fail with EPIPE; its exit status tells why.
            scope.spawn(move || {
                let _ = pipe.write_all(input);
            });
        }
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return Ok(status),
                Ok(None) if started.elapsed() < timeout => thread::sleep(Duration::from_millis(10)),
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("{describe} did not finish within {timeout:?}"));
                }
                Err(e) => return Err(format!("waiting for {describe}: {e}")),
            }
        }
    })?;
    Ok(Finished {
        status,
        stdout: read_all(stdout),
        stderr: read_all(stderr),
    })
}

fn read_all(mut file: File) -> Vec<u8> {
    let mut bytes = Vec::new();
    file.rewind().expect("rewind temporary file");
    file.read_to_end(&mut bytes).expect("read temporary file");
    bytes
}
