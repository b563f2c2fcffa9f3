//! Folder mapping: which source folders are copied, and under which name on the target.
//!
//! Pure: folder lists and rules in, a mapping out. Names are compared in a normalised form
//! whose hierarchy separator is `/`, whatever each server uses, so `--include`, `--exclude`
//! and `--map` read the same on every server; the result is written with the target's
//! separator.

use regex::Regex;

/// RFC 6154 special-use roles that mailferry maps between servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    /// `\Sent`
    Sent,
    /// `\Drafts`
    Drafts,
    /// `\Trash`
    Trash,
    /// `\Junk`
    Junk,
    /// `\Archive`
    Archive,
}

impl SpecialUse {
    fn from_attribute(attribute: &str) -> Option<Self> {
        match attribute.to_ascii_lowercase().as_str() {
            "\\sent" => Some(SpecialUse::Sent),
            "\\drafts" => Some(SpecialUse::Drafts),
            "\\trash" => Some(SpecialUse::Trash),
            "\\junk" => Some(SpecialUse::Junk),
            "\\archive" => Some(SpecialUse::Archive),
            _ => None,
        }
    }
}

/// Virtual folders that show messages stored in other folders again (Gmail's label views),
/// by their RFC 6154 / RFC 8457 attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum View {
    /// `\All`: every message of the account (Gmail's All Mail).
    All,
    /// `\Flagged`: the flagged messages (Gmail's Starred).
    Flagged,
    /// `\Important`: Gmail's Important.
    Important,
}

impl View {
    fn from_attribute(attribute: &str) -> Option<Self> {
        match attribute.to_ascii_lowercase().as_str() {
            "\\all" => Some(View::All),
            "\\flagged" => Some(View::Flagged),
            "\\important" => Some(View::Important),
            _ => None,
        }
    }
}

/// A folder as a server lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderInfo {
    /// The full name (UTF-8), with the server's separator.
    pub name: String,
    /// The server's hierarchy separator, if any.
    pub delimiter: Option<char>,
    /// The folder's special-use role, if it has one.
    pub special_use: Option<SpecialUse>,
    /// Whether the folder is a view of messages stored elsewhere, and which.
    pub view: Option<View>,
    /// `false` for `\Noselect` / `\NonExistent` folders, which hold no messages.
    pub selectable: bool,
}

impl FolderInfo {
    /// Builds the description from a LIST answer's name, delimiter and attributes.
    pub fn from_list(name: String, delimiter: Option<char>, attributes: &[String]) -> Self {
        let has = |flag: &str| attributes.iter().any(|a| a.eq_ignore_ascii_case(flag));
        FolderInfo {
            name,
            delimiter,
            special_use: attributes
                .iter()
                .find_map(|a| SpecialUse::from_attribute(a)),
            view: attributes.iter().find_map(|a| View::from_attribute(a)),
            selectable: !has("\\Noselect") && !has("\\NonExistent"),
        }
    }

    /// The name's components (split at the separator).
    fn components(&self) -> Vec<&str> {
        match self.delimiter {
            Some(d) => self.name.split(d).collect(),
            None => vec![self.name.as_str()],
        }
    }

    /// The name with `/` as separator, the form the user's rules are written in.
    pub fn normalized(&self) -> String {
        self.components().join("/")
    }
}

/// The user's folder rules (`--include`, `--exclude`, `--map`, `--target-prefix`).
#[derive(Debug, Clone, Default)]
pub struct FolderRules {
    /// Copy only folders whose normalised name matches one of these (all when empty).
    pub include: Vec<Regex>,
    /// Skip folders whose normalised name matches one of these.
    pub exclude: Vec<Regex>,
    /// `(old, new)` renames of a folder and everything below it, normalised names.
    pub renames: Vec<(String, String)>,
    /// Put every folder below this one on the target (normalised name).
    pub prefix: Option<String>,
    /// Map special-use folders onto the target's folders of the same role.
    pub special_use_map: bool,
    /// Roles of source folders by name (normalised), for a server that lists no special-use
    /// attributes (a `--from-preset`'s folders).
    pub source_roles: Vec<(SpecialUse, String)>,
    /// The target folder of each role (normalised name) when the target lists none with that
    /// role's attribute (a `--to-preset`'s folders).
    pub target_roles: Vec<(SpecialUse, String)>,
    /// Set for sources with views (a Gmail `--from-preset`): views are not copied as folders
    /// of their own, but for the `\All` view's messages that no other copied folder holds
    /// (mail archived without a label), which go to the target's archive. The names are views
    /// by name (normalised), for servers that do not mark them.
    pub views: Option<Vec<(View, String)>>,
}

impl FolderRules {
    /// A folder's view, when views are handled: its attribute, else its name.
    fn view_of(&self, folder: &FolderInfo) -> Option<View> {
        let names = self.views.as_ref()?;
        folder.view.or_else(|| {
            let name = folder.normalized();
            names
                .iter()
                .find(|(_, known)| *known == name)
                .map(|(view, _)| *view)
        })
    }

    /// A folder's role: its attribute, else what the source's preset says of its name. The
    /// all-messages view, copied only for what no other folder holds, is an archive.
    fn role_of(&self, folder: &FolderInfo) -> Option<SpecialUse> {
        if self.view_of(folder) == Some(View::All) {
            return Some(SpecialUse::Archive);
        }
        folder.special_use.or_else(|| {
            let name = folder.normalized();
            self.source_roles
                .iter()
                .find(|(_, known)| *known == name)
                .map(|(role, _)| *role)
        })
    }
}

/// Where one source folder goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderMapping {
    /// The folder on the source (server's name).
    pub source: String,
    /// The folder on the target (server's name, target separator).
    pub target: String,
    /// Whether the source folder can hold messages (else it is only created as a parent).
    pub selectable: bool,
    /// Copy only the messages that no other mapped folder holds (the `\All` view).
    pub remainder: bool,
}

/// Maps the source folders that pass the rules to target names.
pub fn map_folders(
    source: &[FolderInfo],
    target: &[FolderInfo],
    target_delimiter: char,
    rules: &FolderRules,
) -> Vec<FolderMapping> {
    source
        .iter()
        .filter(|folder| {
            let name = folder.normalized();
            (rules.include.is_empty() || rules.include.iter().any(|r| r.is_match(&name)))
                && !rules.exclude.iter().any(|r| r.is_match(&name))
                && matches!(rules.view_of(folder), None | Some(View::All))
        })
        .map(|folder| FolderMapping {
            source: folder.name.clone(),
            target: target_name(folder, target, target_delimiter, rules),
            selectable: folder.selectable,
            remainder: rules.view_of(folder) == Some(View::All),
        })
        .collect()
}

fn target_name(
    folder: &FolderInfo,
    target: &[FolderInfo],
    target_delimiter: char,
    rules: &FolderRules,
) -> String {
    let normalized = folder.normalized();
    let renamed = rules.renames.iter().find_map(|(old, new)| {
        let rest = normalized.strip_prefix(old.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then(|| format!("{new}{rest}"))
    });
    if renamed.is_none()
        && rules.special_use_map
        && let Some(role) = rules.role_of(folder)
    {
        if let Some(counterpart) = target.iter().find(|t| t.special_use == Some(role)) {
            return counterpart.name.clone();
        }
        if let Some((_, name)) = rules.target_roles.iter().find(|(r, _)| *r == role) {
            return with_delimiter(name, target_delimiter);
        }
    }
    let path = renamed.unwrap_or(normalized);
    let path = match &rules.prefix {
        Some(prefix) => format!("{}/{path}", prefix.trim_end_matches('/')),
        None => path,
    };
    with_delimiter(&path, target_delimiter)
}

/// A normalised name written with the target's separator (which, inside a component, becomes
/// `_`).
fn with_delimiter(path: &str, target_delimiter: char) -> String {
    path.split('/')
        .map(|component| component.replace(target_delimiter, "_"))
        .collect::<Vec<_>>()
        .join(&target_delimiter.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str, delimiter: char, attributes: &[&str]) -> FolderInfo {
        let attributes: Vec<String> = attributes.iter().map(|a| a.to_string()).collect();
        FolderInfo::from_list(name.into(), Some(delimiter), &attributes)
    }

    fn targets(mappings: &[FolderMapping]) -> Vec<(&str, &str)> {
        mappings
            .iter()
            .map(|m| (m.source.as_str(), m.target.as_str()))
            .collect()
    }

    #[test]
    fn separators_are_translated_both_ways() {
        let source = [folder("INBOX", '.', &[]), folder("Archive.2019", '.', &[])];
        let rules = FolderRules::default();
        assert_eq!(
            targets(&map_folders(&source, &[], '/', &rules)),
            [("INBOX", "INBOX"), ("Archive.2019", "Archive/2019")]
        );
        let source = [folder("Lists/dev.rust", '/', &[])];
        assert_eq!(
            targets(&map_folders(&source, &[], '.', &rules)),
            [("Lists/dev.rust", "Lists.dev_rust")]
        );
    }

    #[test]
    fn special_use_folders_meet_their_counterparts() {
        let source = [
            folder("Sent Items", '/', &["\\HasNoChildren", "\\Sent"]),
            folder("Deleted Items", '/', &["\\Trash"]),
            folder("Junk", '/', &["\\Junk"]),
        ];
        let target = [
            folder("Sent", '/', &["\\Sent"]),
            folder("Trash", '/', &["\\Trash"]),
        ];
        let mut rules = FolderRules {
            special_use_map: true,
            ..FolderRules::default()
        };
        assert_eq!(
            targets(&map_folders(&source, &target, '/', &rules)),
            [
                ("Sent Items", "Sent"),
                ("Deleted Items", "Trash"),
                ("Junk", "Junk")
            ]
        );
        rules.special_use_map = false;
        assert_eq!(
            map_folders(&source, &target, '/', &rules)[0].target,
            "Sent Items"
        );
    }

    #[test]
    fn preset_folder_names_stand_in_for_missing_attributes() {
        let source = [
            folder("Sent Items", '/', &[]),
            folder("Junk Email", '/', &[]),
            folder("Deleted Items", '/', &["\\Trash"]),
        ];
        let target = [folder("[Gmail]/Bin", '/', &["\\Trash"])];
        let rules = FolderRules {
            special_use_map: true,
            source_roles: crate::preset::Preset::Office365
                .role_folders()
                .iter()
                .map(|(role, name)| (*role, name.to_string()))
                .collect(),
            target_roles: crate::preset::Preset::Gmail
                .role_folders()
                .iter()
                .map(|(role, name)| (*role, name.to_string()))
                .collect(),
            ..FolderRules::default()
        };
        // The attribute the target lists wins over the preset's English name.
        assert_eq!(
            targets(&map_folders(&source, &target, '.', &rules)),
            [
                ("Sent Items", "[Gmail].Sent Mail"),
                ("Junk Email", "[Gmail].Spam"),
                ("Deleted Items", "[Gmail]/Bin")
            ]
        );
    }

    #[test]
    fn views_are_skipped_but_for_the_remainder_of_all_mail() {
        let source = [
            folder("INBOX", '/', &[]),
            folder("[Gmail]/All Mail", '/', &[]),
            folder("[Gmail]/Alle Nachrichten", '/', &["\\All"]),
            folder("[Gmail]/Starred", '/', &[]),
            folder("[Gmail]/Wichtig", '/', &["\\Important"]),
        ];
        let mut rules = FolderRules {
            special_use_map: true,
            views: Some(vec![
                (View::All, "[Gmail]/All Mail".into()),
                (View::Flagged, "[Gmail]/Starred".into()),
            ]),
            target_roles: vec![(SpecialUse::Archive, "Archive".into())],
            ..FolderRules::default()
        };
        let mapped = map_folders(&source, &[], '/', &rules);
        assert_eq!(
            targets(&mapped),
            [
                ("INBOX", "INBOX"),
                ("[Gmail]/All Mail", "Archive"),
                ("[Gmail]/Alle Nachrichten", "Archive")
            ]
        );
        assert_eq!(
            mapped.iter().map(|m| m.remainder).collect::<Vec<_>>(),
            [false, true, true]
        );
        // Without the preset, views are folders like any other.
        rules.views = None;
        assert_eq!(map_folders(&source, &[], '/', &rules).len(), 5);
    }

    #[test]
    fn include_exclude_map_and_prefix() {
        let source = [
            folder("INBOX", '/', &[]),
            folder("Old", '/', &["\\Noselect"]),
            folder("Old/Projects", '/', &[]),
            folder("Spam", '/', &[]),
        ];
        let rules = FolderRules {
            exclude: vec![Regex::new("^Spam$").unwrap()],
            renames: vec![("Old".into(), "Archive/Old".into())],
            prefix: Some("Migrated".into()),
            ..FolderRules::default()
        };
        let mapped = map_folders(&source, &[], '.', &rules);
        assert_eq!(
            targets(&mapped),
            [
                ("INBOX", "Migrated.INBOX"),
                ("Old", "Migrated.Archive.Old"),
                ("Old/Projects", "Migrated.Archive.Old.Projects")
            ]
        );
        assert!(!mapped[1].selectable);
        let only_old = FolderRules {
            include: vec![Regex::new("^Old").unwrap()],
            ..FolderRules::default()
        };
        assert_eq!(map_folders(&source, &[], '/', &only_old).len(), 2);
    }

    #[test]
    fn a_rename_does_not_touch_a_folder_that_only_shares_a_prefix() {
        let source = [folder("Olden", '/', &[])];
        let rules = FolderRules {
            renames: vec![("Old".into(), "New".into())],
            ..FolderRules::default()
        };
        assert_eq!(map_folders(&source, &[], '/', &rules)[0].target, "Olden");
    }
}
