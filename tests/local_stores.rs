//! Backups to local disk and back: an IMAP account copied into a Maildir and into a directory
//! of mbox files, a re-run copying nothing, Dovecot serving the Maildir backup as it is, and
//! each backup restored into a fresh IMAP account with every message byte for byte (and, from
//! the Maildir, with its flags, keywords and internal date).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use support::{
    Dovecot, StoredMessage, fixtures, mailferry, normalize_crlf, password, read_maildir,
};

/// A date each message keeps across the round trip (whole seconds: IMAP has no finer).
fn date(days: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_500_000_000 + days * 86_400)
}

/// A message whose body has lines an mbox reader could take for the start of the next
/// message (`From `, and `>From ` lines an mboxrd writer must quote once more), and no final
/// line end.
const FROM_LINES: &[u8] = b"Message-ID: <from-lines@backup.test>\r\nSubject: From lines\r\n\r\n\
From here\r\n>From there\r\n>>From far away\r\n\r\nFrom the end";

/// How many messages [`source`] holds.
fn source_count() -> usize {
    fixtures().len() + 3
}

/// alice's account: the fixtures and [`FROM_LINES`] in INBOX, two flagged messages in
/// Archive/2020.
fn source() -> Dovecot {
    let server = Dovecot::start();
    for (i, (_, raw)) in fixtures().iter().enumerate() {
        server.append("alice", "INBOX", raw, &[], Some(date(i as u64)));
    }
    server.append("alice", "INBOX", FROM_LINES, &[], Some(date(99)));
    server.append(
        "alice",
        "Archive/2020",
        b"Message-ID: <old@backup.test>\r\nSubject: old\r\n\r\nkept\r\n",
        &["\\Seen", "\\Flagged", "$Label1"],
        Some(date(100)),
    );
    server.append(
        "alice",
        "Archive/2020",
        b"Subject: no id\r\nFrom: x@backup.test\r\n\r\nalso kept\r\n",
        &["\\Answered"],
        Some(date(101)),
    );
    server
}

/// `mailferry migrate --from FROM --to TO`, which must exit 0; its report.
fn migrate(server: &Dovecot, from: &str, to: &str, dir: &Path) -> Value {
    let report = dir.join("report.json");
    let output = mailferry("migrate")
        .arg("--from")
        .arg(from)
        .arg("--to")
        .arg(to)
        .arg("--tls-ca")
        .arg(server.cert_path())
        .arg("--report")
        .arg(&report)
        .env("MAILFERRY_FROM_PASSWORD", password("alice"))
        .env("MAILFERRY_TO_PASSWORD", password("carol"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap()
}

fn imaps(server: &Dovecot, user: &str) -> String {
    format!("imaps://{user}@127.0.0.1:{}", server.imaps_port())
}

/// A folder's messages as a user would compare them: bytes (CRLF), flags, date (seconds).
fn contents(server: &Dovecot, user: &str, folder: &str) -> Vec<(Vec<u8>, Vec<String>, SystemTime)> {
    comparable(server.messages(user, folder))
}

/// Messages as a user would compare them: bytes (CRLF), flags, date (seconds); sorted.
fn comparable(messages: Vec<StoredMessage>) -> Vec<(Vec<u8>, Vec<String>, SystemTime)> {
    let mut messages: Vec<_> = messages
        .into_iter()
        .map(
            |StoredMessage {
                 raw,
                 mut flags,
                 internal_date,
             }| {
                flags.sort();
                // IMAP dates have whole seconds; a delivered file's mtime has finer.
                let seconds = internal_date
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap();
                let date = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.as_secs());
                (normalize_crlf(&raw), flags, date)
            },
        )
        .collect();
    messages.sort();
    messages
}

#[test]
fn an_account_backed_up_to_a_maildir_is_served_by_dovecot_and_restored_whole() {
    let server = source();
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("alice-backup");
    let url = format!("maildir://{}", backup.display());
    let messages = source_count();
    let first = migrate(&server, &imaps(&server, "alice"), &url, dir.path());
    assert_eq!(first["copied"], messages);
    assert_eq!(first["verified"], true);
    let again = migrate(&server, &imaps(&server, "alice"), &url, dir.path());
    assert_eq!(again["copied"], 0);

    // Dovecot serves the backup as it is: it becomes bob's Maildir.
    let bob = server.maildir_path("bob", "INBOX");
    let _ = std::fs::remove_dir_all(&bob);
    std::fs::create_dir_all(bob.parent().unwrap()).unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&backup)
        .arg(&bob)
        .status()
        .unwrap();
    assert!(copied.success());
    let chowned = std::process::Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&bob)
        .status()
        .unwrap();
    assert!(chowned.success());
    assert_eq!(server.imap_folders("bob"), server.imap_folders("alice"));
    for folder in ["INBOX", "Archive/2020"] {
        assert_eq!(
            contents(&server, "bob", folder),
            contents(&server, "alice", folder)
        );
    }

    // Restored from the Maildir into carol's account: the same messages, flags and dates.
    let restored = migrate(&server, &url, &imaps(&server, "carol"), dir.path());
    assert_eq!(restored["copied"], messages);
    for folder in ["INBOX", "Archive/2020"] {
        assert_eq!(
            contents(&server, "carol", folder),
            contents(&server, "alice", folder)
        );
    }
}

#[test]
fn an_account_backed_up_to_mbox_files_is_restored_byte_for_byte_with_its_dates() {
    let server = source();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mbox://{}/mbox/", dir.path().display());
    let messages = source_count();
    let first = migrate(&server, &imaps(&server, "alice"), &url, dir.path());
    assert_eq!(first["copied"], messages);
    assert_eq!(first["verified"], true);
    assert!(dir.path().join("mbox/INBOX").is_file());
    assert!(dir.path().join("mbox/Archive.2020").is_file());
    let again = migrate(&server, &imaps(&server, "alice"), &url, dir.path());
    assert_eq!(again["copied"], 0);

    let restored = migrate(&server, &url, &imaps(&server, "carol"), dir.path());
    assert_eq!(restored["copied"], messages);
    // mbox keeps no flags: bytes and dates only.
    let without_flags = |user| {
        let mut all = Vec::new();
        for folder in ["INBOX", "Archive/2020"] {
            all.extend(
                contents(&server, user, folder)
                    .into_iter()
                    .map(|(raw, _, date)| (folder, raw, date)),
            );
        }
        all
    };
    // mbox cannot keep the absence of a final line end: such a message gains one.
    let mut original = without_flags("alice");
    for (_, raw, _) in &mut original {
        if !raw.ends_with(b"\n") {
            raw.extend_from_slice(b"\r\n");
        }
    }
    let mut restored = without_flags("carol");
    restored.sort();
    original.sort();
    assert_eq!(restored, original);
}

#[test]
fn a_mirror_from_a_maildir_deletes_the_copy_of_a_message_whose_file_left() {
    let server = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("maildir");
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(maildir.join(sub)).unwrap();
    }
    for id in ["stays", "leaves"] {
        std::fs::write(
            maildir.join(format!("cur/{id}.M1P1.host:2,S")),
            format!("Message-ID: <{id}@backup.test>\r\nSubject: {id}\r\n\r\nbody\r\n"),
        )
        .unwrap();
    }
    let mirror = || {
        let report = dir.path().join("report.json");
        let output = mailferry("mirror")
            .arg("--from")
            .arg(format!("maildir://{}", maildir.display()))
            .arg("--to")
            .arg(imaps(&server, "carol"))
            .arg("--tls-ca")
            .arg(server.cert_path())
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--report")
            .arg(&report)
            .arg("--delete")
            .env("MAILFERRY_TO_PASSWORD", password("carol"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        serde_json::from_slice::<Value>(&std::fs::read(report).unwrap()).unwrap()
    };
    assert_eq!(mirror()["copied"], 2);
    let carol = server.messages("carol", "INBOX");
    assert_eq!(carol.len(), 2);
    assert!(carol.iter().all(|m| m.flags == ["\\Seen"]));
    std::fs::remove_file(maildir.join("cur/leaves.M1P1.host:2,S")).unwrap();
    let report = mirror();
    assert_eq!(report["deleted"], 1, "{report}");
    let left = server.messages("carol", "INBOX");
    assert_eq!(left.len(), 1);
    assert!(String::from_utf8_lossy(&left[0].raw).contains("<stays@backup.test>"));
}

/// The files of a Maildir folder (`cur/` and `new/`): each one's name and Message-ID.
fn maildir_files(folder: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = ["cur", "new"]
        .iter()
        .flat_map(|sub| std::fs::read_dir(folder.join(sub)).unwrap())
        .map(|entry| {
            let entry = entry.unwrap();
            let raw = std::fs::read(entry.path()).unwrap();
            (
                entry.file_name().to_string_lossy().into_owned(),
                message_id(&raw),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_mirror_into_a_maildir_applies_flag_changes_and_deletes_only_its_own_copies() {
    let server = Dovecot::start();
    for id in ["stays", "leaves"] {
        server.append(
            "alice",
            "INBOX",
            format!("Message-ID: <{id}@backup.test>\r\nSubject: {id}\r\n\r\nbody\r\n").as_bytes(),
            &[],
            None,
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let report = dir.path().join("report.json");
    let mirror = || {
        let output = mailferry("mirror")
            .arg("--from")
            .arg(imaps(&server, "alice"))
            .arg("--to")
            .arg(format!("maildir://{}", backup.display()))
            .arg("--tls-ca")
            .arg(server.cert_path())
            .arg("--state")
            .arg(dir.path().join("state"))
            .arg("--report")
            .arg(&report)
            .arg("--delete")
            .env("MAILFERRY_FROM_PASSWORD", password("alice"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        serde_json::from_slice::<Value>(&std::fs::read(&report).unwrap()).unwrap()
    };
    assert_eq!(mirror()["copied"], 2);
    // Another program's copy of the message that is about to leave: not the mirror's to delete.
    let foreign = "1600000000.other.host";
    std::fs::write(
        backup.join("new").join(foreign),
        "Message-ID: <leaves@backup.test>\r\nSubject: leaves, filed by hand\r\n\r\nx\r\n",
    )
    .unwrap();
    let doveadm = |args: &[&str]| {
        let status = std::process::Command::new("doveadm")
            .arg("-c")
            .arg(server.conf_path())
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "doveadm {args:?}");
    };
    doveadm(&[
        "flags",
        "add",
        "-u",
        "alice",
        "\\Flagged \\Seen",
        "mailbox",
        "INBOX",
        "ALL",
    ]);
    doveadm(&[
        "expunge",
        "-u",
        "alice",
        "mailbox",
        "INBOX",
        "header",
        "Message-ID",
        "leaves",
    ]);

    let report = mirror();
    assert_eq!(
        (&report["flags_updated"], &report["deleted"]),
        (&1.into(), &1.into()),
        "{report}"
    );
    let files = maildir_files(&backup);
    assert_eq!(files.len(), 2, "{files:?}");
    let stays = files
        .iter()
        .find(|(_, id)| id == "Message-ID: <stays@backup.test>")
        .unwrap();
    assert!(stays.0.ends_with(":2,FS"), "{files:?}");
    assert!(files.iter().any(|(name, _)| name == foreign), "{files:?}");

    let again = mirror();
    assert_eq!(
        (&again["copied"], &again["flags_updated"], &again["deleted"]),
        (&0.into(), &0.into(), &0.into()),
        "{again}"
    );
}

#[test]
fn a_maildir_written_by_dovecot_is_read_back_with_folders_flags_keywords_and_dates() {
    let server = source();
    server.append(
        "alice",
        "INBOX",
        b"Message-ID: <draft@backup.test>\r\nSubject: draft\r\n\r\nunfinished\r\n",
        &["\\Draft", "work", "$Label2"],
        Some(date(102)),
    );
    server.append(
        "alice",
        "Lists/rust/announce",
        b"Message-ID: <list@backup.test>\r\nSubject: release\r\n\r\nout now\r\n",
        &["\\Seen", "work"],
        Some(date(103)),
    );
    // Delivered without a session: the file waits in new/, as a local delivery leaves it.
    server.deliver(
        "alice",
        "Lists/rust/announce",
        b"Message-ID: <new@backup.test>\r\nSubject: fresh\r\n\r\nunread\r\n",
    );
    let folders = ["INBOX", "Archive/2020", "Lists/rust/announce"];
    let dir = tempfile::tempdir().unwrap();
    // alice's own Maildir, as Dovecot wrote it (with its index and uidlist files beside).
    let url = format!(
        "maildir://{}",
        server.maildir_path("alice", "INBOX").display()
    );
    let report = migrate(&server, &url, &imaps(&server, "carol"), dir.path());
    assert_eq!(report["copied"], source_count() + 3, "{report}");
    assert_eq!(report["verified"], true);
    for folder in folders {
        assert_eq!(
            contents(&server, "carol", folder),
            contents(&server, "alice", folder),
            "{folder}"
        );
    }
    let again = migrate(&server, &url, &imaps(&server, "carol"), dir.path());
    assert_eq!(again["copied"], 0);
}

/// Python's `mailbox` module (the standard library's mbox reader) reading the mbox files in
/// `dir`: for each file name, its messages' bytes in order, each with one `>` taken off its
/// `>+From ` lines as an mboxrd reader does (`mailbox.mbox` reads mboxo and leaves them).
fn read_with_python(dir: &Path) -> BTreeMap<String, Vec<Vec<u8>>> {
    const SCRIPT: &str = r#"
import base64, json, mailbox, os, re, sys
out = {}
for name in sorted(os.listdir(sys.argv[1])):
    path = os.path.join(sys.argv[1], name)
    if name.startswith(".") or not os.path.isfile(path):
        continue
    box = mailbox.mbox(path, create=False)
    out[name] = [
        base64.b64encode(re.sub(rb"^>(>*From )", rb"\1", box.get_bytes(key), flags=re.M)).decode()
        for key in box.keys()
    ]
print(json.dumps(out))
"#;
    // Installed by tests/run.sh: a missing python3 fails this test rather than skipping it.
    let output = std::process::Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(dir)
        .output()
        .expect("python3 (tests/run.sh installs it)");
    assert!(output.status.success(), "{output:?}");
    let files: BTreeMap<String, Vec<String>> = serde_json::from_slice(&output.stdout).unwrap();
    files
        .into_iter()
        .map(|(name, messages)| {
            let raws = messages.iter().map(|m| STANDARD.decode(m).unwrap());
            (name, raws.collect())
        })
        .collect()
}

#[test]
fn pythons_mailbox_module_reads_the_mbox_files_mailferry_wrote() {
    let server = source();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("mbox://{}/mbox/", dir.path().display());
    migrate(&server, &imaps(&server, "alice"), &url, dir.path());
    let files = read_with_python(&dir.path().join("mbox"));
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["Archive.2020", "INBOX"]);
    for (file, folder) in [("INBOX", "INBOX"), ("Archive.2020", "Archive/2020")] {
        let mut read: Vec<Vec<u8>> = files[file].iter().map(|raw| normalize_crlf(raw)).collect();
        // mbox cannot keep the absence of a final line end: such a message gains one.
        let mut expected: Vec<Vec<u8>> = contents(&server, "alice", folder)
            .into_iter()
            .map(|(mut raw, _, _)| {
                if !raw.ends_with(b"\n") {
                    raw.extend_from_slice(b"\r\n");
                }
                raw
            })
            .collect();
        read.sort();
        expected.sort();
        assert_eq!(read.len(), expected.len(), "{folder}");
        for (read, expected) in read.iter().zip(&expected) {
            assert_eq!(
                String::from_utf8_lossy(read),
                String::from_utf8_lossy(expected),
                "{folder}"
            );
            assert_eq!(read, expected, "{folder}");
        }
    }
}

/// The Message-ID of a message made by [`support::big_message`].
fn message_id(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let line = text.lines().find(|l| l.starts_with("Message-ID: "));
    line.expect("a Message-ID in every message, as in a whole one")
        .to_owned()
}

/// alice's INBOX of `count` messages of `size` bytes backed up to `url` by a run killed
/// (SIGKILL) as soon as `landed` finds something written, then by a run to the end; what the
/// backup then holds (`read`) must be each message exactly once, byte for byte.
fn killed_and_run_again(
    count: u64,
    size: usize,
    url: &str,
    landed: impl Fn() -> bool,
    read: impl Fn() -> Vec<Vec<u8>>,
) {
    let server = Dovecot::start();
    let sources: Vec<Vec<u8>> = (0..count).map(|n| support::big_message(size, n)).collect();
    server.append_many("alice", "INBOX", &sources);
    let mut child = support::mailferry_process("migrate")
        .args(["--from", &imaps(&server, "alice"), "--to", url, "--tls-ca"])
        .arg(server.cert_path())
        .env("MAILFERRY_FROM_PASSWORD", password("alice"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // SIGKILL as soon as the first bytes have landed (bounded: 60 s).
    let started = std::time::Instant::now();
    while !landed() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_micros(200));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before it was killed, so it proves nothing"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(landed(), "nothing written within 60 s");

    let dir = tempfile::tempdir().unwrap();
    let report = migrate(&server, &imaps(&server, "alice"), url, dir.path());
    assert_eq!(report["verified"], true);
    let mut backed_up: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    for raw in read() {
        backed_up.entry(message_id(&raw)).or_default().push(raw);
    }
    assert_eq!(
        backed_up.len(),
        count as usize,
        "every message in the backup"
    );
    for source in &sources {
        let copies = &backed_up[&message_id(source)];
        assert_eq!(copies.len(), 1, "{} more than once", message_id(source));
        assert!(normalize_crlf(&copies[0]) == normalize_crlf(source));
    }
}

/// The files of a directory, if it exists.
fn files_in(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| entries.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_maildir_backup_killed_mid_write_and_run_again_holds_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let backup = dir.path().join("backup");
    let cur = backup.join("cur");
    let tmp = backup.join("tmp");
    // Messages big enough that the kill, as soon as a file appears, lands while one is written.
    killed_and_run_again(
        12,
        8_000_000,
        &format!("maildir://{}", backup.display()),
        || !files_in(&cur).is_empty() || !files_in(&tmp).is_empty(),
        || {
            let new = files_in(&backup.join("new"));
            let files = files_in(&cur).into_iter().chain(new);
            files.map(|f| std::fs::read(f).unwrap()).collect()
        },
    );
}

#[test]
fn an_mbox_backup_killed_mid_write_and_run_again_holds_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let mbox = dir.path().join("mbox");
    killed_and_run_again(
        200,
        150_000,
        &format!("mbox://{}/", mbox.display()),
        || std::fs::metadata(mbox.join("INBOX")).is_ok_and(|m| m.len() > 0),
        || read_with_python(&mbox).remove("INBOX").unwrap_or_default(),
    );
}

/// The date of every message of [`takeout_message`].
fn date_of_takeout() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_649_340_544)
}

/// A message of a Takeout: its Gmail labels (none: no field), its id.
fn takeout_message(labels: Option<&str>, id: &str) -> String {
    let labels = labels.map_or(String::new(), |l| format!("X-Gmail-Labels: {l}\n"));
    format!(
        "From 1662536467063869583@xxx Thu Apr 07 14:09:04 +0000 2022\n\
         X-GM-THRID: 1662536467063869583\n{labels}\
         Message-ID: <{id}@takeout.test>\nDate: Thu, 07 Apr 2022 14:09:04 +0000\n\
         Subject: {id}\n\n>From the body of {id}\n\n"
    )
}

#[test]
fn a_google_takeout_is_imported_into_the_folders_of_its_gmail_labels() {
    let server = Dovecot::start();
    let dir = tempfile::tempdir().unwrap();
    let takeout = dir.path().join("All mail Including Spam and Trash.mbox");
    let messages = [
        (Some("Inbox,Work,Opened,Category Updates"), "inbox-work"),
        (Some("Sent,Opened,Starred"), "sent"),
        (Some("Archived,Unread"), "archived"),
        (None, "unlabelled"),
        (
            Some("Work/2020,\"Clients, big\",Important,Opened"),
            "nested",
        ),
        (Some("Spam,Unread"), "spam"),
    ];
    let text: String = messages
        .iter()
        .map(|(labels, id)| takeout_message(*labels, id))
        .collect();
    std::fs::write(&takeout, text).unwrap();
    let import = || {
        let report = dir.path().join("report.json");
        let output = mailferry("migrate")
            .arg("--from")
            .arg(format!("mbox://{}", takeout.display()))
            .args(["--from-preset", "gmail", "--to-preset", "office365"])
            .arg("--to")
            .arg(imaps(&server, "carol"))
            .arg("--tls-ca")
            .arg(server.cert_path())
            .arg("--report")
            .arg(&report)
            .env("MAILFERRY_TO_PASSWORD", password("carol"))
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(0), "{output:?}");
        serde_json::from_slice::<Value>(&std::fs::read(report).unwrap()).unwrap()
    };
    let report = import();
    // "inbox-work" and "nested" are each in two folders.
    assert_eq!(report["copied"], 8, "{report:#}");
    // (folder, ids, flags): labels through Gmail's roles to Office 365's names; messages
    // with no label that places them are archived.
    let expected: [(&str, &[&str], &[&str]); 7] = [
        // Flags checked below: its two messages differ.
        ("Archive", &["archived", "unlabelled"], &[]),
        ("Clients, big", &["nested"], &["\\Seen"]),
        ("INBOX", &["inbox-work"], &["\\Seen"]),
        ("Junk Email", &["spam"], &[]),
        ("Sent Items", &["sent"], &["\\Flagged", "\\Seen"]),
        ("Work", &["inbox-work"], &["\\Seen"]),
        ("Work/2020", &["nested"], &["\\Seen"]),
    ];
    let mut folders = server.folders("carol");
    folders.sort();
    let mut names: Vec<&str> = expected.iter().map(|(f, _, _)| *f).collect();
    names.sort();
    assert_eq!(folders, names);
    for (folder, ids, flags) in &expected {
        let held = server.messages("carol", folder);
        let mut held_ids: Vec<String> = held
            .iter()
            .map(|m| {
                let text = String::from_utf8_lossy(&m.raw).into_owned();
                let subject = text.lines().find(|l| l.starts_with("Subject: ")).unwrap();
                subject["Subject: ".len()..].to_owned()
            })
            .collect();
        held_ids.sort();
        assert_eq!(held_ids, *ids, "{folder}");
        // The Takeout's envelope dates carry a zone mboxrd has not; the Date field serves.
        assert!(held.iter().all(|m| m.internal_date == date_of_takeout()));
        if folder != &"Archive" {
            let mut held_flags = held[0].flags.clone();
            held_flags.sort();
            assert_eq!(held_flags, *flags, "{folder}");
        }
    }
    // The "archived" one is unread, the unlabelled one read; bytes as in the file, unquoted.
    let archive = server.messages("carol", "Archive");
    for message in &archive {
        let text = String::from_utf8_lossy(&message.raw);
        let seen = message.flags.iter().any(|f| f == "\\Seen");
        assert_eq!(seen, text.contains("Subject: unlabelled"), "{text}");
        assert!(text.contains("\nFrom the body of"), "{text}");
    }
    assert_eq!(import()["copied"], 0);
}

/// A message (CRLF) without mbsync's `X-TUID` field and without lone CRs.
fn without_tuid_and_lone_crs(raw: &[u8]) -> Vec<u8> {
    let mut raw = raw.to_vec();
    let field = b"\r\nX-TUID: ";
    if let Some(at) = raw.windows(field.len()).position(|w| w == field) {
        let end = raw[at + 2..].windows(2).position(|w| w == b"\r\n").unwrap() + at + 2;
        raw.drain(at..end);
    }
    let lone_cr = |i: usize| raw[i] == b'\r' && raw.get(i + 1) != Some(&b'\n');
    (0..raw.len())
        .filter(|&i| !lone_cr(i))
        .map(|i| raw[i])
        .collect()
}

/// alice's account pulled by `mbsync` (isync, installed by tests/run.sh) into a Maildir at
/// `maildir`, laid out as `SubFolders Verbatim` writes it (`INBOX/`, `Archive/2020/`).
fn pulled_by_mbsync(server: &Dovecot, config_dir: &Path, maildir: &Path) {
    // mbsync creates folders but not the store's root.
    std::fs::create_dir_all(maildir).unwrap();
    let config = config_dir.join("mbsyncrc");
    std::fs::write(
        &config,
        format!(
            "IMAPAccount alice\nHost 127.0.0.1\nPort {port}\nUser alice\nPass {password}\n\
             SSLType None\nAuthMechs LOGIN\n\n\
             IMAPStore remote\nAccount alice\n\n\
             MaildirStore local\nPath {path}/\nInbox {path}/INBOX\nSubFolders Verbatim\n\n\
             Channel backup\nFar :remote:\nNear :local:\nPatterns *\nCreate Near\n\
             Sync Pull\nSyncState *\n",
            port = server.imap_port(),
            password = password("alice"),
            path = maildir.display(),
        ),
    )
    .unwrap();
    // Bounded: coreutils' timeout ends an mbsync that hangs.
    let output = std::process::Command::new("timeout")
        .args(["120", "mbsync", "--config"])
        .arg(&config)
        .arg("--all")
        .output()
        .expect("mbsync (tests/run.sh installs isync)");
    assert!(output.status.success(), "{output:?}");
}

#[test]
fn a_maildir_written_by_mbsync_is_read_back_as_a_source() {
    let server = source();
    let dir = tempfile::tempdir().unwrap();
    let maildir = dir.path().join("mbsync");
    pulled_by_mbsync(&server, dir.path(), &maildir);
    assert!(
        maildir.join("Archive/2020/cur").is_dir(),
        "the nested layout"
    );
    let url = format!("maildir://{}", maildir.display());
    let report = migrate(&server, &url, &imaps(&server, "carol"), dir.path());
    assert_eq!(report["copied"], source_count(), "{report}");
    assert_eq!(report["verified"], true);
    assert_eq!(server.imap_folders("carol"), server.imap_folders("alice"));
    for (folder, written) in [("INBOX", "INBOX"), ("Archive/2020", "Archive/2020")] {
        // What mbsync wrote, with its flags and dates, is what arrives.
        let written = read_maildir(&maildir.join(written)).unwrap();
        let carol = contents(&server, "carol", folder);
        assert!(
            carol == comparable(written),
            "{folder}: not as mbsync wrote it"
        );
        // And that is alice's mail byte for byte, but for the X-TUID field mbsync adds and
        // the lone CRs it drops.
        let as_mbsync_keeps = |messages: Vec<(Vec<u8>, _, _)>| {
            let mut raws: Vec<Vec<u8>> = messages
                .into_iter()
                .map(|(raw, _, _)| without_tuid_and_lone_crs(&raw))
                .collect();
            raws.sort();
            raws
        };
        assert!(
            as_mbsync_keeps(carol) == as_mbsync_keeps(contents(&server, "alice", folder)),
            "{folder}: not alice's mail"
        );
    }
}
