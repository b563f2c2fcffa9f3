//! The completion scripts and the manual page are generated from the same clap definitions as
//! the parser, through the binary: every subcommand and every option must appear in each.

use assert_cmd::Command;
use clap::CommandFactory;
use mailferry::cli::Cli;

/// Every subcommand name and every long option (`--name`) of the command line.
fn words() -> Vec<String> {
    let cli = Cli::command();
    let mut words = Vec::new();
    for sub in cli.get_subcommands() {
        words.push(sub.get_name().to_owned());
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                words.push(format!("--{long}"));
            }
        }
    }
    assert!(words.len() > 40, "the walk found the options: {words:?}");
    words
}

fn generated(args: &[&str]) -> String {
    let output = Command::cargo_bin("mailferry")
        .unwrap()
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "mailferry {args:?}: {output:?}");
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn completions_name_every_subcommand_and_option_in_every_shell() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let script = generated(&["completions", shell]);
        for word in words() {
            let bare = word.trim_start_matches('-');
            assert!(
                script.contains(&word) || script.contains(bare),
                "{shell} completions lack {word}"
            );
        }
    }
}

#[test]
fn the_man_page_documents_every_subcommand_and_option() {
    let page = generated(&["man"]);
    assert!(page.starts_with(".ie") || page.starts_with(".TH"), "roff");
    // roff escapes a dash in running text as \-.
    let page = page.replace("\\-", "-");
    for word in words() {
        assert!(page.contains(&word), "the man page lacks {word}");
    }
    for code in ["Exit codes", "MAILFERRY_FROM_PASSWORD"] {
        assert!(page.contains(code), "the man page lacks {code}");
    }
}
