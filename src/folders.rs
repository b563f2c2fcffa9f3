//! Folder mapping: which source folders are copied, and under which name on the target.
//!
//! Pure: folder lists and rules in, a mapping out. Names are compared in a normalised form
//! whose hierarchy separator is `/`, whatever each server uses, and without the source's
//! personal namespace prefix (RFC 2342: `INBOX.` on Courier), so `--include`, `--exclude`
//! and `--map` read the same on every server; the result is written with the target's
//! separator, under the target's personal namespace prefix.

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
}

/// A server's personal namespace (RFC 2342): what the names of the user's own folders start
/// with (`INBOX.` on Courier, and on Cyrus without altnamespace; nothing on Dovecot's default),
/// and its separator. A server that does not say has the empty one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    /// The prefix in UTF-8, as the server writes it (usually ending in the separator); empty
    /// when the user's folders sit at the top.
    pub prefix: String,
    /// The namespace's hierarchy separator, if it has one.
    pub delimiter: Option<char>,
}

impl Namespace {
    /// The prefix's components, the trailing separator dropped: `["INBOX"]` for `INBOX.`,
    /// none for the empty prefix.
    fn components(&self) -> Vec<&str> {
        let prefix = match self.delimiter {
            Some(d) => self.prefix.strip_suffix(d).unwrap_or(&self.prefix),
            None => &self.prefix,
        };
        match (prefix.is_empty(), self.delimiter) {
            (true, _) => Vec::new(),
            (false, Some(d)) => prefix.split(d).collect(),
            (false, None) => vec![prefix],
        }
    }

    /// A folder's name as the user's rules see it: `/` as separator and, for a folder of this
    /// namespace, without the prefix (`INBOX.Archive` under `INBOX.` is `Archive`). INBOX keeps
    /// its name. Folders outside the namespace (other users' and shared ones, `#shared.x`)
    /// keep their whole name too: stripped, they would pass for the user's own folders.
    fn logical(&self, folder: &FolderInfo) -> String {
        let components = folder.components();
        match components.strip_prefix(self.components().as_slice()) {
            Some(rest) if !rest.is_empty() => rest.join("/"),
            _ => components.join("/"),
        }
    }

    /// The server's name for a logical (`/`-separated) name: under the prefix, with
    /// `delimiter` as separator (see [`with_delimiter`]). INBOX is INBOX on every server, and
    /// a name the user already put inside the namespace (`--target-prefix INBOX`, the way
    /// round before namespaces were read) does not get the prefix twice.
    fn server_name(&self, path: &str, delimiter: char) -> String {
        let prefix = self.components();
        let components: Vec<&str> = path.split('/').collect();
        if path.eq_ignore_ascii_case("INBOX") || components.starts_with(&prefix) {
            return with_delimiter(components, delimiter);
        }
        with_delimiter(prefix.into_iter().chain(components), delimiter)
    }
}

/// A server's folders and the personal namespace they live in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderList {
    /// Every folder, as listed.
    pub folders: Vec<FolderInfo>,
    /// The user's own namespace.
    pub personal: Namespace,
}

impl FolderList {
    /// The separator new folders are named with: the personal namespace's, else the one the
    /// folders are listed with, else `/`.
    fn delimiter(&self) -> char {
        self.personal
            .delimiter
            .or_else(|| self.folders.iter().find_map(|f| f.delimiter))
            .unwrap_or('/')
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
    /// A folder's view, when views are handled: its attribute, else its (logical) name.
    fn view_of(&self, folder: &FolderInfo, name: &str) -> Option<View> {
        let names = self.views.as_ref()?;
        folder.view.or_else(|| {
            names
                .iter()
                .find(|(_, known)| known == name)
                .map(|(view, _)| *view)
        })
    }

    /// A folder's role: its attribute, else what the source's preset says of its (logical)
    /// name. The all-messages view, copied only for what no other folder holds, is an archive.
    fn role_of(&self, folder: &FolderInfo, name: &str) -> Option<SpecialUse> {
        if self.view_of(folder, name) == Some(View::All) {
            return Some(SpecialUse::Archive);
        }
        folder.special_use.or_else(|| {
            self.source_roles
                .iter()
                .find(|(_, known)| known == name)
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
    source: &FolderList,
    target: &FolderList,
    rules: &FolderRules,
) -> Vec<FolderMapping> {
    source
        .folders
        .iter()
        .map(|folder| (folder, source.personal.logical(folder)))
        .filter(|(folder, name)| {
            (rules.include.is_empty() || rules.include.iter().any(|r| r.is_match(name)))
                && !rules.exclude.iter().any(|r| r.is_match(name))
                && matches!(rules.view_of(folder, name), None | Some(View::All))
        })
        .map(|(folder, name)| FolderMapping {
            source: folder.name.clone(),
            target: target_name(folder, &name, target, rules),
            selectable: folder.selectable,
            remainder: rules.view_of(folder, &name) == Some(View::All),
        })
        .collect()
}

/// The target's name for `folder`, whose logical name is `name`.
fn target_name(
    folder: &FolderInfo,
    name: &str,
    target: &FolderList,
    rules: &FolderRules,
) -> String {
    let renamed = rules.renames.iter().find_map(|(old, new)| {
        let rest = name.strip_prefix(old.as_str())?;
        (rest.is_empty() || rest.starts_with('/')).then(|| format!("{new}{rest}"))
    });
    let delimiter = target.delimiter();
    if renamed.is_none()
        && rules.special_use_map
        && let Some(role) = rules.role_of(folder, name)
    {
        if let Some(counterpart) = target.folders.iter().find(|t| t.special_use == Some(role)) {
            return counterpart.name.clone();
        }
        if let Some((_, name)) = rules.target_roles.iter().find(|(r, _)| *r == role) {
            return target.personal.server_name(name, delimiter);
        }
    }
    let path = renamed.unwrap_or_else(|| name.to_owned());
    let path = match &rules.prefix {
        Some(prefix) => format!("{}/{path}", prefix.trim_end_matches('/')),
        None => path,
    };
    target.personal.server_name(&path, delimiter)
}

/// Components joined with the target's separator (which, inside a component, becomes `_`).
fn with_delimiter<'a>(components: impl IntoIterator<Item = &'a str>, delimiter: char) -> String {
    components
        .into_iter()
        .map(|component| component.replace(delimiter, "_"))
        .collect::<Vec<_>>()
        .join(&delimiter.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(name: &str, delimiter: char, attributes: &[&str]) -> FolderInfo {
        let attributes: Vec<String> = attributes.iter().map(|a| a.to_string()).collect();
        FolderInfo::from_list(name.into(), Some(delimiter), &attributes)
    }

    /// Folders in the empty personal namespace.
    fn listed(folders: &[FolderInfo]) -> FolderList {
        FolderList {
            folders: folders.to_vec(),
            personal: Namespace::default(),
        }
    }

    /// A target's folders, listed with the empty personal namespace of `delimiter`.
    fn target_with(folders: &[FolderInfo], delimiter: char) -> FolderList {
        FolderList {
            folders: folders.to_vec(),
            personal: Namespace {
                prefix: String::new(),
                delimiter: Some(delimiter),
            },
        }
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
            targets(&map_folders(
                &listed(&source),
                &target_with(&[], '/'),
                &rules
            )),
            [("INBOX", "INBOX"), ("Archive.2019", "Archive/2019")]
        );
        let source = [folder("Lists/dev.rust", '/', &[])];
        assert_eq!(
            targets(&map_folders(
                &listed(&source),
                &target_with(&[], '.'),
                &rules
            )),
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
            targets(&map_folders(
                &listed(&source),
                &target_with(&target, '/'),
                &rules
            )),
            [
                ("Sent Items", "Sent"),
                ("Deleted Items", "Trash"),
                ("Junk", "Junk")
            ]
        );
        rules.special_use_map = false;
        assert_eq!(
            map_folders(&listed(&source), &target_with(&target, '/'), &rules)[0].target,
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
            targets(&map_folders(
                &listed(&source),
                &target_with(&target, '.'),
                &rules
            )),
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
        let mapped = map_folders(&listed(&source), &target_with(&[], '/'), &rules);
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
        assert_eq!(
            map_folders(&listed(&source), &target_with(&[], '/'), &rules).len(),
            5
        );
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
        let mapped = map_folders(&listed(&source), &target_with(&[], '.'), &rules);
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
        assert_eq!(
            map_folders(&listed(&source), &target_with(&[], '/'), &only_old).len(),
            2
        );
    }

    /// Folders listed in the personal namespace `prefix` with separator `delimiter`.
    fn namespaced(folders: &[FolderInfo], prefix: &str, delimiter: char) -> FolderList {
        FolderList {
            folders: folders.to_vec(),
            personal: Namespace {
                prefix: prefix.into(),
                delimiter: Some(delimiter),
            },
        }
    }

    #[test]
    fn the_source_namespace_prefix_is_stripped() {
        let source = [
            folder("INBOX", '.', &[]),
            folder("INBOX.Archive", '.', &[]),
            folder("INBOX.Lists", '.', &["\\Noselect"]),
            folder("INBOX.Lists.dev", '.', &[]),
            // Outside the personal namespace: kept whole.
            folder("#shared.team", '.', &[]),
        ];
        let rules = FolderRules::default();
        assert_eq!(
            targets(&map_folders(
                &namespaced(&source, "INBOX.", '.'),
                &namespaced(&[], "", '/'),
                &rules
            )),
            [
                ("INBOX", "INBOX"),
                ("INBOX.Archive", "Archive"),
                ("INBOX.Lists", "Lists"),
                ("INBOX.Lists.dev", "Lists/dev"),
                ("#shared.team", "#shared/team")
            ]
        );
        // The user's rules see the names without the prefix.
        let rules = FolderRules {
            exclude: vec![Regex::new("^Lists").unwrap()],
            renames: vec![("Archive".into(), "Old/Archive".into())],
            ..FolderRules::default()
        };
        assert_eq!(
            targets(&map_folders(
                &namespaced(&source, "INBOX.", '.'),
                &namespaced(&[], "", '/'),
                &rules
            )),
            [
                ("INBOX", "INBOX"),
                ("INBOX.Archive", "Old/Archive"),
                ("#shared.team", "#shared/team")
            ]
        );
    }

    #[test]
    fn the_target_namespace_prefix_is_added() {
        let source = [
            folder("INBOX", '/', &[]),
            folder("Archive", '/', &[]),
            folder("Lists/dev.rust", '/', &[]),
            folder("Sent Items", '/', &["\\Sent"]),
            folder("Deleted", '/', &["\\Trash"]),
        ];
        let target = [folder("INBOX.Sent", '.', &["\\Sent"])];
        let rules = FolderRules {
            special_use_map: true,
            target_roles: vec![(SpecialUse::Trash, "Trash".into())],
            ..FolderRules::default()
        };
        assert_eq!(
            targets(&map_folders(
                &listed(&source),
                &namespaced(&target, "INBOX.", '.'),
                &rules
            )),
            [
                ("INBOX", "INBOX"),
                ("Archive", "INBOX.Archive"),
                ("Lists/dev.rust", "INBOX.Lists.dev_rust"),
                ("Sent Items", "INBOX.Sent"),
                ("Deleted", "INBOX.Trash")
            ]
        );
    }

    #[test]
    fn from_one_namespace_into_another() {
        // Cyrus with `/` as separator into Courier: prefixes and separators both change.
        let source = [
            folder("INBOX", '/', &[]),
            folder("INBOX/Archive", '/', &[]),
            folder("INBOX/Archive/2019", '/', &[]),
        ];
        let rules = FolderRules::default();
        assert_eq!(
            targets(&map_folders(
                &namespaced(&source, "INBOX/", '/'),
                &namespaced(&[], "INBOX.", '.'),
                &rules
            )),
            [
                ("INBOX", "INBOX"),
                ("INBOX/Archive", "INBOX.Archive"),
                ("INBOX/Archive/2019", "INBOX.Archive.2019")
            ]
        );
        // A prefix of two levels, and one without its trailing separator.
        let source = [folder("Mail/Projects/Old", '/', &[])];
        assert_eq!(
            targets(&map_folders(
                &namespaced(&source, "Mail/Projects", '/'),
                &namespaced(&[], "user.alice.", '.'),
                &rules
            )),
            [("Mail/Projects/Old", "user.alice.Old")]
        );
    }

    #[test]
    fn the_user_prefix_goes_under_the_namespace_prefix_once() {
        let source = [folder("INBOX", '/', &[]), folder("Archive", '/', &[])];
        let target = namespaced(&[], "INBOX.", '.');
        let mut rules = FolderRules {
            prefix: Some("Migrated".into()),
            ..FolderRules::default()
        };
        assert_eq!(
            targets(&map_folders(&listed(&source), &target, &rules)),
            [
                ("INBOX", "INBOX.Migrated.INBOX"),
                ("Archive", "INBOX.Migrated.Archive")
            ]
        );
        // `--target-prefix INBOX`, the way round before namespaces were read, still lands
        // where it did.
        rules.prefix = Some("INBOX".into());
        assert_eq!(
            targets(&map_folders(&listed(&source), &target, &rules)),
            [("INBOX", "INBOX.INBOX"), ("Archive", "INBOX.Archive")]
        );
    }

    #[test]
    fn an_empty_namespace_prefix_changes_nothing() {
        let source = [folder("INBOX", '/', &[]), folder("Archive/2019", '/', &[])];
        let rules = FolderRules::default();
        let mapped = map_folders(
            &namespaced(&source, "", '/'),
            &namespaced(&[], "", '.'),
            &rules,
        );
        assert_eq!(
            targets(&mapped),
            [("INBOX", "INBOX"), ("Archive/2019", "Archive.2019")]
        );
    }

    #[test]
    fn a_rename_does_not_touch_a_folder_that_only_shares_a_prefix() {
        let source = [folder("Olden", '/', &[])];
        let rules = FolderRules {
            renames: vec![("Old".into(), "New".into())],
            ..FolderRules::default()
        };
        assert_eq!(
            map_folders(&listed(&source), &target_with(&[], '/'), &rules)[0].target,
            "Olden"
        );
    }
}
