//! What the user sees at the end of a run: the dry-run plan and the summary lines.

use crate::migrate::Planned;
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
