//! Provider presets (`--from-preset`, `--to-preset`): what is known of big providers and not
//! learned from their servers, in one table per provider.

use crate::folders::SpecialUse;

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
    /// label views, which show again messages that are in other folders already, and the
    /// `[Gmail]` parent, which holds no mail and whose other children map by role.
    pub fn source_excludes(self) -> &'static [&'static str] {
        match self {
            Preset::Gmail => &[r"^\[(Gmail|Google Mail)\](/(All Mail|Important|Starred))?$"],
            Preset::Office365 => &[],
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
        for name in [
            "[Gmail]",
            "[Gmail]/All Mail",
            "[Google Mail]/Starred",
            "[Gmail]/Important",
        ] {
            assert!(exclude.is_match(name), "{name}");
        }
        for name in ["INBOX", "[Gmail]/Sent Mail", "Work/[Gmail]/All Mail"] {
            assert!(!exclude.is_match(name), "{name}");
        }
    }
}
