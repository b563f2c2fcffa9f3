//! The `mailferry` binary: parse the command line, run, print one error line, exit.

use std::process::ExitCode;

use clap::Parser;
use mailferry::cli::{self, Cli};

fn main() -> ExitCode {
    let code = match cli::run(Cli::parse()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            if let Some(hint) = error.hint() {
                eprintln!("hint: {hint}");
            }
            error.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}
