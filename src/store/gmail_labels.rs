//! Gmail's labels as a Google Takeout mbox carries them (`X-Gmail-Labels: Inbox,Opened,Work`),
//! turned into folders and flags the way Gmail's IMAP server shows them:
//!
//! - `Inbox` is INBOX; `Sent`, `Drafts`, `Trash` and `Spam` are folders of those names with
//!   their special-use role, so they meet the target's folders of the same role;
//! - `Starred` is the `\Flagged` flag, and a message is `\Seen` unless labelled `Unread`;
//! - `Important`, `Opened`, `Unread`, `Archived` and the `Category …` tabs place nothing, as
//!   Gmail's IMAP lists no folder for them (or only a view of messages stored elsewhere);
//! - any other label is a folder of that name (`/` between levels, as Gmail nests labels);
//! - a message that no label places in a folder is archived mail, which Gmail's IMAP shows in
//!   All Mail alone: it goes to a folder `Archive` with the `\Archive` role, so it lands in the
//!   target's archive folder.
//!
//! A Takeout writes a label that is not ASCII as RFC 2047 encoded words
//! (`=?UTF-8?Q?Factures_re=C3=A7ues?=`); they are decoded with the `rfc2047-decoder` crate.

use crate::folders::{FolderInfo, FolderList, Namespace};
use crate::header;

/// The separator of nested labels.
const SEPARATOR: char = '/';
/// The folder of messages that no label places anywhere.
pub const ARCHIVE: &str = "Archive";

/// Where one message goes and which flags it has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The folders (at least one).
    pub folders: Vec<String>,
    /// `\Seen`, `\Flagged` as the labels say.
    pub flags: Vec<String>,
}

/// A label's folder and role attribute, or `None` for a label that places nothing.
fn folder_of(label: &str) -> Option<(&str, Option<&'static str>)> {
    match label {
        "Inbox" => Some(("INBOX", None)),
        "Sent" => Some(("Sent", Some("\\Sent"))),
        "Drafts" => Some(("Drafts", Some("\\Drafts"))),
        "Trash" => Some(("Trash", Some("\\Trash"))),
        "Spam" => Some(("Spam", Some("\\Junk"))),
        ARCHIVE => Some((ARCHIVE, Some("\\Archive"))),
        "Starred" | "Important" | "Opened" | "Unread" | "Archived" => None,
        category if category.starts_with("Category ") => None,
        "" => None,
        label => Some((label, None)),
    }
}

/// The labels of a header's `X-Gmail-Labels` field: comma-separated, a label holding a comma
/// in double quotes; encoded words decoded (a value that does not decode is taken as it is).
fn labels(header: &[u8]) -> Vec<String> {
    let Some(field) = header::first(header, "X-Gmail-Labels") else {
        return Vec::new();
    };
    let value = field.value();
    // A Takeout writes the whole list as one encoded word, often longer than RFC 2047's 75
    // characters: decoded all the same.
    let value = rfc2047_decoder::Decoder::new()
        .too_long_encoded_word_strategy(rfc2047_decoder::RecoverStrategy::Decode)
        .decode(&value)
        .unwrap_or_else(|_| String::from_utf8_lossy(&value).into_owned());
    let mut labels = vec![String::new()];
    let mut quoted = false;
    for c in value.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => labels.push(String::new()),
            c => labels.last_mut().expect("one label at least").push(c),
        }
    }
    labels.into_iter().map(|l| l.trim().to_owned()).collect()
}

/// Where the message with this header goes, and its flags.
pub fn placement(header: &[u8]) -> Placement {
    let labels = labels(header);
    let has = |name: &str| labels.iter().any(|l| l == name);
    let mut folders: Vec<String> = labels
        .iter()
        .filter_map(|label| folder_of(label).map(|(folder, _)| folder.to_owned()))
        .collect();
    folders.dedup();
    if folders.is_empty() {
        folders.push(ARCHIVE.to_owned());
    }
    let mut flags = Vec::new();
    if has("Starred") {
        flags.push("\\Flagged".to_owned());
    }
    if !has("Unread") {
        flags.push("\\Seen".to_owned());
    }
    Placement { folders, flags }
}

/// The folders `names` as a server would list them: with `/` between levels and each role
/// folder with its special-use attribute.
pub fn folder_list<'a>(names: impl IntoIterator<Item = &'a String>) -> FolderList {
    let mut folders: Vec<FolderInfo> = names
        .into_iter()
        .map(|name| {
            let role = folder_of(name).and_then(|(_, role)| role);
            let attributes: Vec<String> = role.into_iter().map(str::to_owned).collect();
            FolderInfo::from_list(name.clone(), Some(SEPARATOR), &attributes)
        })
        .collect();
    if !folders.iter().any(|f| f.name == "INBOX") {
        folders.push(FolderInfo::from_list("INBOX".into(), Some(SEPARATOR), &[]));
    }
    folders.sort_by(|a, b| a.name.cmp(&b.name));
    FolderList {
        folders,
        personal: Namespace {
            prefix: String::new(),
            delimiter: Some(SEPARATOR),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::folders::SpecialUse;

    fn placed(labels: &str) -> Placement {
        placement(format!("Subject: x\r\nX-Gmail-Labels: {labels}\r\n\r\n").as_bytes())
    }

    #[test]
    fn labels_give_folders_and_flags() {
        let p = placed("Inbox,Starred,Opened,Category Updates,\"Clients, big\",Work/2020");
        assert_eq!(p.folders, ["INBOX", "Clients, big", "Work/2020"]);
        assert_eq!(p.flags, ["\\Flagged", "\\Seen"]);
        let p = placed("Sent,Unread,Important");
        assert_eq!(p.folders, ["Sent"]);
        assert!(p.flags.is_empty());
        assert_eq!(placed("Archived,Opened").folders, [ARCHIVE]);
        let unlabelled = placement(b"Subject: x\r\n\r\n");
        assert_eq!(unlabelled.folders, [ARCHIVE]);
    }

    #[test]
    fn labels_in_encoded_words_are_decoded_and_other_text_is_kept() {
        let p = placed("Inbox,=?UTF-8?Q?Factures_re=C3=A7ues?=,\r\n =?UTF-8?B?0J/RgNC+0LXQutGC?=");
        assert_eq!(p.folders, ["INBOX", "Factures reçues", "Проект"]);
        let long = placed(
            "=?UTF-8?Q?Archived,Important,Category_Updates,Opened,Inbox,Factures_re=C3=A7ues?=",
        );
        assert_eq!(long.folders, ["INBOX", "Factures reçues"]);
        assert_eq!(placed("Work,=?broken").folders, ["Work", "=?broken"]);
    }

    #[test]
    fn role_folders_are_listed_with_their_role() {
        let names = ["Spam".to_owned(), ARCHIVE.to_owned(), "Work".to_owned()];
        let list = folder_list(&names);
        let role = |name: &str| {
            let folder = list.folders.iter().find(|f| f.name == name).unwrap();
            folder.special_use
        };
        assert_eq!(role("Spam"), Some(SpecialUse::Junk));
        assert_eq!(role(ARCHIVE), Some(SpecialUse::Archive));
        assert_eq!(role("Work"), None);
        assert_eq!(role("INBOX"), None);
    }
}
