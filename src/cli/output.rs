//! What the user sees at the end of a run: the dry-run plan and preflight, and the summary
//! lines.

use crate::migrate::Planned;
use crate::preflight::{FolderAction, Preflight};
use crate::report::Report;

pub(super) fn print_dry_run(planned: &Planned<'_>, verbose: u8) {
    for folder in &planned.folders {
        let plan = &folder.plan;
        println!(
            "dry run: {} → {}: would copy {} of {} messages ({}), {} already on the target",
            plan.source_folder,
            plan.target_folder,
            plan.to_copy.len(),
            plan.source_messages,
            human_bytes(plan.bytes_to_copy()),
            plan.already_present,
        );
        if verbose > 0 {
            for message in &plan.to_copy {
                println!("  {:>10}  {}", message.size, message.identity);
            }
        }
    }
}

/// The preflight on stdout, and what would fail on stderr (as `problem:` and `hint:` lines,
/// like an error).
pub(super) fn print_preflight(preflight: &Preflight, verbose: u8) {
    println!(
        "preflight: logins: source {}, target {}",
        preflight.logins.source, preflight.logins.target
    );
    if !preflight.target_capabilities.is_empty() {
        let capabilities: Vec<String> = preflight
            .target_capabilities
            .iter()
            .map(|(name, offered)| format!("{name} {}", if *offered { "yes" } else { "no" }))
            .collect();
        println!(
            "preflight: target capabilities: {}",
            capabilities.join(", ")
        );
    }
    match &preflight.quota {
        Some(quota) => println!(
            "preflight: target quota: {} of {} used; the copy adds {}",
            human_bytes(quota.used),
            human_bytes(quota.limit),
            human_bytes(quota.needed)
        ),
        None if preflight.logins.target == "ok" => {
            println!("preflight: target quota: unknown (the target does not say)")
        }
        None => {}
    }
    for folder in &preflight.folders {
        let action = match folder.action {
            FolderAction::Exists => "exists",
            FolderAction::Create => "would be created",
            FolderAction::Refused => "REFUSED",
        };
        println!(
            "preflight: folder {} → {} ({action})",
            folder.source, folder.target
        );
    }
    for dropped in &preflight.dropped_keywords {
        println!(
            "preflight: keyword {} dropped from {} message(s): {} does not store it",
            dropped.keyword, dropped.messages, dropped.folder
        );
    }
    if verbose > 0 {
        for message in &preflight.too_large {
            println!(
                "preflight: too large: {} in {} ({} bytes)",
                message.message, message.folder, message.size
            );
        }
    }
    for problem in &preflight.problems {
        eprintln!("problem: {}", problem.problem);
        eprintln!("hint: {}", problem.fix);
    }
    if preflight.ready {
        println!("preflight: ready");
    } else {
        println!(
            "preflight: NOT READY: {} problem(s) would make the run fail",
            preflight.problems.len()
        );
    }
}

pub(super) fn print_summary(report: &Report) {
    let verified = match report.verified {
        Some(true) => "verified: every source message is on the target",
        Some(false) => "verification FAILED: some source messages are not on the target",
        None => "not verified",
    };
    println!(
        "{} messages on the source, {} already on the target, {} copied ({}), {} failed in {:.1} s; {verified}",
        report.source_messages,
        report.already_present,
        report.copied,
        human_bytes(report.bytes_copied),
        report.failed,
        report.duration_s,
    );
    if report.flags_updated + report.deleted + report.source_deleted > 0 {
        println!(
            "mirror: flags updated on {} message(s), {} copy(ies) deleted from the target, {} message(s) deleted from the source",
            report.flags_updated, report.deleted, report.source_deleted
        );
    }
    for warning in &report.warnings {
        eprintln!("warning: {warning}");
    }
    for folder in report.folders.iter().filter(|f| f.error.is_some()) {
        eprintln!(
            "failed: folder {} → {}: {} message(s) not copied: {}",
            folder.source_folder,
            folder.target_folder,
            folder.source_messages,
            folder.error.as_deref().unwrap_or_default()
        );
    }
    for failed in &report.errors {
        eprintln!(
            "failed: {} in {}: {}",
            failed.message, failed.folder, failed.reason
        );
    }
}

pub(super) fn human_bytes(bytes: u64) -> String {
    indicatif::HumanBytes(bytes).to_string()
}
