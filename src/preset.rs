//! Provider presets (`--from-preset`, `--to-preset`): what is known of big providers and not
//! learned from their servers, in one table per provider.

use crate::folders::{SpecialUse, View};

/// A mail provider with known folder names and limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    /// Gmail / Google Workspace.
    Gmail,
    /// Microsoft 365 / Exchange Online.
    Office365,
}

/// 1 MiB.
const MIB: u64 = 1024 * 1024;

impl std::str::FromStr for Preset {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "gmail" => Ok(Preset::Gmail),
            "office365" => Ok(Preset::Office365),
            other => Err(format!("unknown preset {other:?}: use gmail or office365")),
        }
    }
}

impl Preset {
    /// The name users write.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Gmail => "gmail",
            Preset::Office365 => "office365",
        }
    }

    /// The largest message the provider accepts by APPEND: Gmail's 25 MB; Exchange Online's
    /// default of 35 MB (a tenant can change it).
    pub fn max_message_size(self) -> u64 {
        match self {
            Preset::Gmail => 25 * MIB,
            Preset::Office365 => 35 * MIB,
        }
    }

    /// The provider's (English) folder of each role, for a server that lists no special-use
    /// attributes; the attributes win when it does.
    pub fn role_folders(self) -> &'static [(SpecialUse, &'static str)] {
        match self {
            Preset::Gmail => &[
                (SpecialUse::Sent, "[Gmail]/Sent Mail"),
                (SpecialUse::Drafts, "[Gmail]/Drafts"),
                (SpecialUse::Trash, "[Gmail]/Trash"),
                (SpecialUse::Junk, "[Gmail]/Spam"),
                // A message stored into All Mail is archived: in no label, not in INBOX.
                (SpecialUse::Archive, "[Gmail]/All Mail"),
            ],
            Preset::Office365 => &[
                (SpecialUse::Sent, "Sent Items"),
                (SpecialUse::Drafts, "Drafts"),
                (SpecialUse::Trash, "Deleted Items"),
                (SpecialUse::Junk, "Junk Email"),
                (SpecialUse::Archive, "Archive"),
            ],
        }
    }

    /// Source folders skipped by default (normalised names, as `--exclude` patterns): Gmail's
    /// `[Gmail]` parent, which holds no mail and whose children map by role or are views.
    pub fn source_excludes(self) -> &'static [&'static str] {
        match self {
            Preset::Gmail => &[r"^\[(Gmail|Google Mail)\]$"],
            Preset::Office365 => &[],
        }
    }

    /// The provider's views (folders showing messages stored in other folders again) by
    /// (English) name, for a server that does not mark them with attributes; `None` for a
    /// provider without views. Gmail's are label views: a message shows in INBOX or under
    /// each of its labels, and again in All Mail (Starred, Important when so marked).
    pub fn views(self) -> Option<Vec<(View, String)>> {
        match self {
            Preset::Gmail => Some(
                ["Gmail", "Google Mail"]
                    .into_iter()
                    .flat_map(|root| {
                        [
                            (View::All, format!("[{root}]/All Mail")),
                            (View::Flagged, format!("[{root}]/Starred")),
                            (View::Important, format!("[{root}]/Important")),
                        ]
                    })
                    .collect(),
            ),
            Preset::Office365 => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_knows_its_limits() {
        assert_eq!("Gmail".parse(), Ok(Preset::Gmail));
        assert_eq!("office365".parse(), Ok(Preset::Office365));
        assert!("yahoo".parse::<Preset>().is_err());
        assert_eq!(Preset::Gmail.max_message_size(), 26_214_400);
        let exclude = regex::Regex::new(Preset::Gmail.source_excludes()[0]).unwrap();
        for name in ["[Gmail]", "[Google Mail]"] {
            assert!(exclude.is_match(name), "{name}");
        }
        for name in [
            "INBOX",
            "[Gmail]/Sent Mail",
            "[Gmail]/All Mail",
            "Work/[Gmail]",
        ] {
            assert!(!exclude.is_match(name), "{name}");
        }
        assert_eq!(Preset::Gmail.views().unwrap().len(), 6);
        assert_eq!(Preset::Office365.views(), None);
    }
}
