//! `--dry-run` as a preflight, against real Dovecots: a target whose quota the copy would
//! overflow (by how much), wrong passwords on both sides (each reported), a target with
//! APPENDLIMIT and a message over it, a folder to create, and a batch preflight's table of the
//! accounts that need attention.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{Accounts, Dovecot, mailferry, password};

/// A target whose users may store 100 KiB each (Dovecot 2.3's `count` quota, answered to
/// GETQUOTAROOT through `imap_quota`), and `extra` configuration.
fn quota_server(extra: &str) -> Dovecot {
    Dovecot::start_with(&format!(
        "mail_plugins = $mail_plugins quota\n\
         protocol imap {{\n  mail_plugins = $mail_plugins imap_quota\n}}\n\
         plugin {{\n  quota = count:User quota\n  quota_rule = *:storage=100K\n  quota_vsizes = yes\n{extra}}}\n"
    ))
}

fn message(id: &str) -> Vec<u8> {
    format!("Message-ID: <{id}@preflight.test>\r\nSubject: {id}\r\n\r\nbody\r\n").into_bytes()
}

/// Both test servers' certificates, in one file.
fn certificates(dir: &Path, servers: &[&Dovecot]) -> std::path::PathBuf {
    let path = dir.join("certificates.pem");
    let pem: Vec<u8> = servers
        .iter()
        .flat_map(|server| std::fs::read(server.cert_path()).unwrap())
        .collect();
    std::fs::write(&path, pem).unwrap();
    path
}

/// What a run left: exit code, report, stdout, stderr.
struct Run {
    code: i32,
    report: Value,
    stdout: String,
    stderr: String,
}

/// `mailferry migrate` from `from`'s IMAP account on `source` into `to`'s on `target`.
fn migrate(source: &Dovecot, from: &str, target: &Dovecot, to: &str, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = mailferry("migrate")
        .source_account("imaps", from, source.imaps_port())
        .target_account("imaps", to, target.imaps_port(), "")
        .arg("--tls-ca")
        .arg(certificates(dir.path(), &[source, target]))
        .arg("--report")
        .arg(&report)
        .args(extra)
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap(),
        report: serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn a_copy_over_the_target_quota_is_found_with_how_much_it_lacks() {
    let source = Dovecot::start();
    let raws: Vec<Vec<u8>> = (0..3)
        .map(|seed| support::big_message(50_000, seed))
        .collect();
    source.append_many("alice", "INBOX", &raws);
    let needed: u64 = raws.iter().map(|raw| raw.len() as u64).sum();
    let target = quota_server("");

    let run = migrate(&source, "alice", &target, "bob", &["--dry-run"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let preflight = &run.report["preflight"];
    assert_eq!(preflight["ready"], false, "{preflight:#}");
    let quota = &preflight["quota"];
    assert_eq!(quota["limit"], 100 * 1024, "{quota:#}");
    assert_eq!(quota["used"], 0, "{quota:#}");
    assert_eq!(quota["needed"], needed, "{quota:#}");
    assert_eq!(quota["short_by"], needed - 100 * 1024, "{quota:#}");
    assert_eq!(preflight["logins"]["source"], "ok");
    assert_eq!(preflight["logins"]["target"], "ok");
    assert_eq!(preflight["target_capabilities"]["QUOTA"], true);
    assert!(
        run.stderr
            .contains("problem: the copy would not fit in the target's quota")
            && run
                .stderr
                .contains(&format!("({} bytes)\n", needed - 100 * 1024)),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("preflight: NOT READY"),
        "{}",
        run.stdout
    );
    assert!(
        target.messages("bob", "INBOX").is_empty(),
        "a dry run writes nothing"
    );

    // What the preflight foretold: the real run does not get everything in.
    let real = migrate(&source, "alice", &target, "bob", &[]);
    assert_eq!(real.code, 1, "{}", real.stderr);
    assert!(
        real.report["failed"].as_u64().unwrap() > 0,
        "{:#}",
        real.report
    );
}

#[test]
fn wrong_passwords_on_both_sides_are_both_reported() {
    let server = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let output = mailferry("migrate")
        .source_account("imaps", "alice", server.imaps_port())
        .target_account("imaps", "bob", server.imaps_port(), "")
        .env("MAILFERRY_FROM_PASSWORD", "not-alice's")
        .env("MAILFERRY_TO_PASSWORD", "not-bob's")
        .arg("--tls-ca")
        .arg(server.cert_path())
        .arg("--report")
        .arg(&report)
        .arg("--dry-run")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    let source_url = format!("imaps://alice@127.0.0.1:{}", server.imaps_port());
    let target_url = format!("imaps://bob@127.0.0.1:{}", server.imaps_port());
    assert!(
        stderr.contains(&format!("could not log in to {source_url}"))
            && stderr.contains(&format!("could not log in to {target_url}")),
        "{stderr}"
    );
    assert!(
        stderr.contains("MAILFERRY_FROM_PASSWORD") && stderr.contains("MAILFERRY_TO_PASSWORD"),
        "both hints: {stderr}"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let logins = &report["preflight"]["logins"];
    assert!(
        logins["source"].as_str().unwrap().contains(&source_url)
            && logins["target"].as_str().unwrap().contains(&target_url),
        "{report:#}"
    );
    assert!(
        !String::from_utf8_lossy(&std::fs::read(dir.path().join("report.json")).unwrap())
            .contains("not-bob's")
    );

    // One side wrong: the other is reported logged in.
    let run = migrate(&server, "alice", &server, "bob", &["--dry-run"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let one_side = dir.path().join("one-side.json");
    let output = mailferry("migrate")
        .source_account("imaps", "alice", server.imaps_port())
        .target_account("imaps", "bob", server.imaps_port(), "")
        .env("MAILFERRY_TO_PASSWORD", "not-bob's")
        .arg("--tls-ca")
        .arg(server.cert_path())
        .arg("--report")
        .arg(&one_side)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(3));
    let report: Value = serde_json::from_slice(&std::fs::read(&one_side).unwrap()).unwrap();
    assert_eq!(report["preflight"]["logins"]["source"], "ok", "{report:#}");
    assert!(
        report["preflight"]["logins"]["target"]
            .as_str()
            .unwrap()
            .contains("could not log in"),
        "{report:#}"
    );
}

#[test]
fn a_message_over_the_appendlimit_and_a_folder_to_create_are_listed() {
    let source = Dovecot::start();
    source.append("alice", "INBOX", &message("small"), &[], None);
    let big = support::big_message(200_000, 9);
    source.append("alice", "INBOX", &big, &[], None);
    source.append("alice", "Archive", &message("archived"), &[], None);
    let target = Dovecot::start_with(
        "mail_plugins = quota\nplugin {\n  quota = count:User quota\n  quota_rule = *:storage=1G\n  quota_vsizes = yes\n  quota_max_mail_size = 100k\n}\nimap_capability = +APPENDLIMIT=102400\n",
    );

    let run = migrate(&source, "alice", &target, "bob", &["--dry-run", "-v"]);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    let preflight = &run.report["preflight"];
    assert_eq!(preflight["target_capabilities"]["APPENDLIMIT"], true);
    assert_eq!(preflight["size_limit"], 102400);
    let too_large = preflight["too_large"].as_array().unwrap();
    assert_eq!(too_large.len(), 1, "{preflight:#}");
    assert_eq!(too_large[0]["size"], big.len() as u64);
    assert_eq!(too_large[0]["folder"], "INBOX");
    assert!(
        run.stderr.contains(
            "1 message(s) are larger than the 102400 bytes the target's APPENDLIMIT allows"
        ),
        "{}",
        run.stderr
    );
    let folders: Vec<(String, String)> = preflight["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["target"].as_str().unwrap().to_owned(),
                f["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        folders.contains(&("INBOX".into(), "exists".into())),
        "{folders:?}"
    );
    assert!(
        folders.contains(&("Archive".into(), "create".into())),
        "{folders:?}"
    );
    assert_eq!(
        target.folders("bob"),
        ["INBOX"],
        "a dry run creates nothing"
    );
}

#[test]
fn a_batch_preflight_ends_with_the_accounts_that_need_attention() {
    let server = Dovecot::start();
    server.append("alice", "INBOX", &message("batch"), &[], None);
    server.append("dave", "INBOX", &support::big_message(5000, 3), &[], None);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    for user in ["alice", "bob", "carol", "dave"] {
        write(&format!("{user}.pw"), &password(user));
    }
    write("wrong.pw", "wrong");
    let port = server.imaps_port();
    write(
        "accounts.csv",
        &format!(
            "from,to,from_password_file,to_password_file\n\
             imaps://alice@127.0.0.1:{port},imaps://bob@127.0.0.1:{port},alice.pw,bob.pw\n\
             imaps://alice@127.0.0.1:{port},imaps://carol@127.0.0.1:{port},alice.pw,wrong.pw\n\
             imaps://dave@127.0.0.1:{port},imaps://bob@127.0.0.1:{port},dave.pw,bob.pw\n"
        ),
    );
    let reports = dir.path().join("reports");
    let output = mailferry("batch")
        .arg(dir.path().join("accounts.csv"))
        .arg("--report-dir")
        .arg(&reports)
        .arg("--tls-ca")
        .arg(server.cert_path())
        .args(["--dry-run", "--max-message-size", "4K"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("2 account(s) need attention"), "{stderr}");
    let summary: Value =
        serde_json::from_slice(&std::fs::read(reports.join("summary.json")).unwrap()).unwrap();
    let attention: Vec<&Value> = summary["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r.get("attention").is_some())
        .collect();
    assert_eq!(attention.len(), 2, "{summary:#}");
    let first_problem = |n: usize| attention[n]["attention"][0].as_str().unwrap().to_owned();
    assert!(
        first_problem(0).contains(&format!(
            "could not log in to imaps://carol@127.0.0.1:{port}"
        )),
        "{summary:#}"
    );
    assert_eq!(attention[0]["outcome"], "failed");
    assert!(
        first_problem(1).contains("larger than the 4096 bytes --max-message-size allows"),
        "{summary:#}"
    );
    assert_eq!(attention[1]["outcome"], "partial");
    assert!(server.messages("bob", "INBOX").is_empty());
}
