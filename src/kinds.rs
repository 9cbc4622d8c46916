//! Coder's notification kinds, in one table: which are about a workspace (so they can gather
//! in that workspace's thread) and which are urgent (so they are never hidden in a thread);
//! and, in one more, the labels that name a workspace and its owner; and which notifications
//! carry a secret (so they go to their recipient alone, never to a shared channel); and who
//! Coder sends each kind to (a role broadcast reaches every admin, one identical copy each,
//! which a route can gather in one channel).
//! A kind is known by its template ID, fixed in Coder's source (`coderd/notifications/events.go`
//! and the migrations that insert `notification_templates`); its name is the fallback, since
//! Coder renames templates but keeps their IDs, and its test fixtures zero the ID.

use crate::act::Act;
use crate::coder::Notification;

/// One kind of notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The template's ID in Coder.
    pub template_id: &'static str,
    /// Its names, newest first (Coder renamed some: the older names still arrive from older
    /// deployments).
    pub names: &'static [&'static str],
    /// Whether it is about one workspace, named in its labels.
    pub about_workspace: bool,
    /// Whether it asks for attention now (a build failed, resources ran out, the workspace is
    /// about to stop or go away).
    pub urgent: bool,
    /// Who Coder sends it to.
    pub audience: Audience,
}

/// Who Coder sends a kind of notification to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// The person it is about, or who asked for it.
    Person,
    /// Every holder of a role (owners, user admins, template admins), one identical copy
    /// each: a role broadcast.
    Role,
    /// The workspace's owner, and a copy to every template admin that names the owner in its
    /// labels: the admins' copies are a role broadcast, the owner's is not.
    AdminCopies,
}

const fn kind(
    template_id: &'static str,
    names: &'static [&'static str],
    about_workspace: bool,
    urgent: bool,
    audience: Audience,
) -> Kind {
    Kind {
        template_id,
        names,
        about_workspace,
        urgent,
        audience,
    }
}

const WORKSPACE: bool = true;
const OTHER: bool = false;
const URGENT: bool = true;
const ROUTINE: bool = false;
const PERSON: Audience = Audience::Person;
const ROLE: Audience = Audience::Role;
const ADMIN_COPIES: Audience = Audience::AdminCopies;

/// Coder's One-Time Passcode (a password reset someone asked for): its label and its button's
/// URL carry the passcode, and whoever has them can set the account's password.
pub const ONE_TIME_PASSCODE: &str = "62f86a30-2330-4b61-a26d-311ff3b608cf";

/// Every template Coder ships, by its ID in Coder's source.
#[rustfmt::skip]
pub const KINDS: &[Kind] = &[
    kind("281fdf73-c6d6-4cbb-8ff5-888baf8a2fff", &["Workspace Created"], WORKSPACE, ROUTINE, ADMIN_COPIES),
    kind("d089fe7b-d5c5-4c0c-aaf5-689859f7d392", &["Workspace Manually Updated"], WORKSPACE, ROUTINE, ADMIN_COPIES),
    kind("f517da0b-cdc9-410f-ab89-a86107c420ed", &["Workspace Deleted"], WORKSPACE, URGENT, PERSON),
    kind("381df2a9-c0c0-4749-420f-80a9280c66f9", &["Workspace Autobuild Failed"], WORKSPACE, URGENT, PERSON),
    kind("0ea69165-ec14-4314-91f1-69566ac3c5a0", &["Workspace Marked as Dormant"], WORKSPACE, URGENT, PERSON),
    kind("c34a0c09-0704-4cac-bd1c-0c0146811c2b", &["Workspace Updated Automatically"], WORKSPACE, ROUTINE, PERSON),
    kind("51ce2fdf-c9ca-4be1-8d70-628674f9bc42", &["Workspace Marked for Deletion"], WORKSPACE, URGENT, PERSON),
    kind("6f6cb984-c167-4fa5-bb87-1058dd642779", &["Workspace Autostop Reminder"], WORKSPACE, URGENT, PERSON),
    kind("2faeee0f-26cb-4e96-821c-85ccb9f71513", &["Workspace Manual Build Failed"], WORKSPACE, URGENT, ADMIN_COPIES),
    kind("a9d027b4-ac49-4fb1-9f6d-45af15f64e7a", &["Workspace Out Of Memory", "Workspace Reached Resource Threshold"], WORKSPACE, URGENT, PERSON),
    kind("f047f6a3-5713-40f7-85aa-0394cce9fa3a", &["Workspace Out Of Disk"], WORKSPACE, URGENT, PERSON),
    kind("bb2bb51b-5d40-4e33-ae8b-f40f13bfcd24", &["Workspace Agent Restarted"], WORKSPACE, ROUTINE, PERSON),
    kind("89d9745a-816e-4695-a17f-3d0a229e2b8d", &["Prebuilt Workspace Resource Replaced"], WORKSPACE, ROUTINE, ROLE),
    kind("8c5a4d12-9f7e-4b3a-a1c8-6e4f2d9b5a7c", &["Task Completed"], WORKSPACE, ROUTINE, PERSON),
    kind("3b7e8f1a-4c2d-49a6-b5e9-7f3a1c8d6b4e", &["Task Failed"], WORKSPACE, ROUTINE, PERSON),
    kind("d4a6271c-cced-4ed0-84ad-afd02a9c7799", &["Task Idle"], WORKSPACE, ROUTINE, PERSON),
    kind("bd4b7168-d05e-4e19-ad0f-3593b77aa90f", &["Task Working"], WORKSPACE, ROUTINE, PERSON),
    kind("2a74f3d3-ab09-4123-a4a5-ca238f4f65a1", &["Task Paused"], WORKSPACE, ROUTINE, PERSON),
    kind("843ee9c3-a8fb-4846-afa9-977bec578649", &["Task Resumed"], WORKSPACE, ROUTINE, PERSON),
    kind("4e19c0ac-94e1-4532-9515-d1801aa283b2", &["User account created"], OTHER, ROUTINE, ROLE),
    kind("f44d9314-ad03-4bc8-95d0-5cad491da6b6", &["User account deleted"], OTHER, ROUTINE, ROLE),
    kind("b02ddd82-4733-4d02-a2d7-c36f3598997d", &["User account suspended"], OTHER, ROUTINE, ROLE),
    kind("9f5af851-8408-4e73-a7a1-c6502ba46689", &["User account activated"], OTHER, ROUTINE, ROLE),
    kind("6a2f0609-9b69-4d36-a989-9f5925b6cbff", &["Your account has been suspended"], OTHER, ROUTINE, PERSON),
    kind("1a6a6bea-ee0a-43e2-9e7c-eabdb53730e4", &["Your account has been activated"], OTHER, ROUTINE, PERSON),
    kind(ONE_TIME_PASSCODE, &["One-Time Passcode"], OTHER, ROUTINE, PERSON),
    // `labels.name` here is the template's name, not a workspace's.
    kind("29a09665-2a4c-403f-9648-54301670e7be", &["Template Deleted"], OTHER, ROUTINE, ROLE),
    kind("f40fae84-55a2-42cd-99fa-b41c1ca64894", &["Template Deprecated"], OTHER, ROUTINE, PERSON),
    kind("34a20db2-e9cc-4a93-b0e4-8569699d7a00", &["Report: Workspace Builds Failed", "Report: Workspace Builds Failed For Template"], OTHER, ROUTINE, ROLE),
    kind("414d9331-c1fc-4761-b40c-d1f4702279eb", &["Prebuild Failure Limit Reached"], OTHER, ROUTINE, ROLE),
    kind("c425f63e-716a-4bf4-ae24-78348f706c3f", &["Troubleshooting Notification", "Test Notification"], OTHER, ROUTINE, PERSON),
    kind("39b1e189-c857-4b0c-877a-511144c18516", &["Custom Notification"], OTHER, ROUTINE, PERSON),
    kind("764031be-4863-4220-867b-6ce1a1b7a5f5", &["Chats Auto-Archived"], OTHER, ROUTINE, PERSON),
    kind("b789bd75-d7c6-4cab-9757-1147ab184903", &["Chat Shared"], OTHER, ROUTINE, PERSON),
    kind("3f1c6d8a-5b2e-4f7a-9c0d-7e8b2a4c6d1f", &["Chat Project Shared"], OTHER, ROUTINE, PERSON),
    kind("b5db9597-de2a-4dea-87e9-25cee6906b86", &["AI Budget Warning"], OTHER, ROUTINE, PERSON),
    kind("cdcf2ecd-f003-4169-9800-abb2661ea522", &["AI Budget Limit Reached"], OTHER, ROUTINE, PERSON),
    kind("2a7b0ac1-00e1-4625-9cd5-1e5933972c77", &["User Approaching AI Budget Limit"], OTHER, ROUTINE, ROLE),
    kind("0bafe0ea-a78b-4217-ad05-1ef12e92e025", &["User Reached AI Budget Limit"], OTHER, ROUTINE, ROLE),
    kind("1b7d9fa7-f5a8-4e46-8078-5cf53abfed94", &["Missing AI Model Prices", "Report: Unpriced AI Models"], OTHER, ROUTINE, ROLE),
    kind("b02d53fd-477d-4a65-8d42-1b7e4b38f8c3", &["Changelog"], OTHER, ROUTINE, PERSON),
    // A tool call in the workspace (`labels.workspace_name`) waits for the person's approval.
    kind("d2209b6a-3ac7-4560-8de3-cc9024cc5708", &["MCP Tool Call Awaiting Approval"], WORKSPACE, ROUTINE, PERSON),
];

// A notification keeps its kind's index in a byte (`coder::KindSlot`).
const _: () = assert!(KINDS.len() <= u8::MAX as usize);

/// What makes a notification one that nobody but its recipient may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    /// Coder's One-Time Passcode: the code, and a reset link with it.
    OneTimePasscode,
    /// A label named like a secret (see [`is_secret_label`]), in any kind.
    Labelled,
}

/// The secret `notification` carries, if it carries one: the one place this is decided, for
/// every way a notification could reach a shared channel (`FALLBACK_CHANNEL`, a route). Such
/// a notification goes to its recipient's own DM only; a shared channel gets at most a note
/// that it could not be delivered, without the code or the link.
pub fn secret_of(notification: &Notification) -> Option<Secret> {
    if Kind::of(notification).is_some_and(|k| k.template_id == ONE_TIME_PASSCODE) {
        return Some(Secret::OneTimePasscode);
    }
    let labelled = notification.labels.keys().any(is_secret_label);
    labelled.then_some(Secret::Labelled)
}

/// Words that, in a label's name, say its value is a secret: `one_time_passcode`,
/// `reset_token`, `otp`, `password`, `client_secret`, … (any case; `otp` as a word, or at
/// either end of one, since it is a part of other words).
const SECRET_WORDS: &[&str] = &["passcode", "password", "passwd", "token", "secret"];

/// Whether a label named `name` holds a secret, by its name.
pub fn is_secret_label(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    name.split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| {
            word.starts_with("otp")
                || word.ends_with("otp")
                || SECRET_WORDS.iter().any(|secret| word.contains(secret))
        })
}

/// What a label says about the workspace a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// The workspace's name.
    Workspace,
    /// Its owner's Coder username, when Coder says whose it is (the recipient may be
    /// someone else: a template admin).
    Owner,
}

/// The labels that name a notification's workspace and its owner, each tried in this order;
/// they count only for kinds about a workspace (Template Deleted's `name` is a template's).
#[rustfmt::skip]
pub const WORKSPACE_LABELS: &[(&str, Names)] = &[
    ("workspace", Names::Workspace),          // most kinds
    ("name", Names::Workspace),               // the older ones: autobuild failed, dormant, deleted, …
    ("workspace_name", Names::Workspace),     // MCP Tool Call Awaiting Approval
    ("workspace_owner_username", Names::Owner), // template admins' copies: created, manually updated, manual build failed
    ("claimant", Names::Owner),               // Prebuilt Workspace Resource Replaced (sent to template admins)
];

/// The workspace a notification is about, when it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace<'a> {
    pub name: &'a str,
    /// Its owner's Coder username: the one Coder names, else the recipient's (their Coder
    /// username, else their e-mail address).
    pub owner: &'a str,
    /// Whether it is the recipient's own: Coder names no owner, or names the recipient.
    /// Not so for an admin's copy of an event about someone else's workspace.
    pub recipients: bool,
}

impl Kind {
    /// The kind of `notification`: by template ID, else by name; `None` for a kind this
    /// build does not know (a newer Coder's), which is then treated as about no workspace.
    pub fn of(notification: &Notification) -> Option<&'static Kind> {
        let index = notification
            .kind
            .get_or_init(|| Self::index_of(notification));
        index.and_then(|i| KINDS.get(usize::from(i)))
    }

    fn index_of(notification: &Notification) -> Option<u8> {
        // The table's IDs are lowercase: the ID lowercased once, then plain comparisons.
        let id = notification.template_id.as_deref().map(str::trim);
        let id = id.map(str::to_ascii_lowercase).unwrap_or_default();
        let by_id = KINDS.iter().position(|k| k.template_id == id);
        let index = by_id.or_else(|| {
            let name = notification.notification_name.trim();
            let same = |n: &&str| n.len() == name.len() && n.eq_ignore_ascii_case(name);
            KINDS.iter().position(|k| k.names.iter().any(same))
        });
        index.and_then(|i| u8::try_from(i).ok())
    }

    /// The act its notifications offer on their workspace (with `CODER_TOKEN`): extend on
    /// the autostop reminder, start on a failed autobuild, keep on dormancy and deletion.
    pub fn act(&self) -> Option<Act> {
        match self.names[0] {
            "Workspace Autostop Reminder" => Some(Act::Extend),
            "Workspace Autobuild Failed" => Some(Act::Start),
            "Workspace Marked as Dormant" | "Workspace Marked for Deletion" => Some(Act::Keep),
            _ => None,
        }
    }
}

/// The workspace `notification` is about: for kinds about a workspace, the one its labels
/// name (see [`WORKSPACE_LABELS`]), with whose it is.
pub fn workspace_of(notification: &Notification) -> Option<Workspace<'_>> {
    if !Kind::of(notification).is_some_and(|k| k.about_workspace) {
        return None;
    }
    let label = |names: Names| {
        WORKSPACE_LABELS
            .iter()
            .filter(|(_, n)| *n == names)
            .find_map(|(key, _)| notification.labels.get(key))
    };
    let name = label(Names::Workspace)?;
    let recipient = notification.user_username.as_deref();
    // Coder's usernames are case-insensitive ("Bobby" in a label is the user "bobby").
    let (owner, recipients) = match (label(Names::Owner), recipient) {
        (Some(named), Some(recipient)) if named.eq_ignore_ascii_case(recipient) => {
            (recipient, true)
        }
        (Some(named), _) => (named, false),
        (None, _) => (recipient.unwrap_or(&notification.user_email), true),
    };
    Some(Workspace {
        name,
        owner,
        recipients,
    })
}

/// Whether `notification` is a copy of a role broadcast (one of the identical copies Coder
/// sends every admin): a kind sent to a role, or an admin's copy of an event about someone
/// else's workspace. The owner's own copy of such an event is not one.
pub fn is_role_broadcast(notification: &Notification) -> bool {
    match Kind::of(notification).map(|k| k.audience) {
        Some(Audience::Role) => true,
        Some(Audience::AdminCopies) => workspace_of(notification).is_some_and(|w| !w.recipients),
        Some(Audience::Person) | None => false,
    }
}

/// The recipient's own workspace `notification` is about: the one its thread, card, snooze
/// and buttons are for. An admin's copy of an event about someone else's workspace has none:
/// it is a plain top-level message, and the thread stays the owner's.
pub fn own_workspace_of(notification: &Notification) -> Option<Workspace<'_>> {
    workspace_of(notification).filter(|w| w.recipients)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_samples::{sample_bytes, sample_path};

    fn parse(bytes: &[u8]) -> Notification {
        Notification::parse(bytes, None).expect("a valid sample")
    }

    #[test]
    fn a_kind_is_found_by_its_id_in_any_case_and_the_table_is_lowercase() {
        for kind in KINDS {
            assert_eq!(kind.template_id, kind.template_id.to_ascii_lowercase());
        }
        let path = sample_path("TemplateWorkspaceAutobuildFailed.json.golden");
        let mut notification = parse(&std::fs::read(path).expect("a sample"));
        notification.template_id = Some(" 381DF2A9-C0C0-4749-420F-80A9280C66F9 ".into());
        notification.notification_name = "renamed".into();
        let kind = Kind::of(&notification).map(|k| k.names[0]);
        assert_eq!(kind, Some("Workspace Autobuild Failed"));
    }

    #[test]
    fn every_sample_is_a_known_kind() {
        for (name, bytes) in sample_bytes() {
            let notification = parse(&bytes);
            assert!(
                Kind::of(&notification).is_some(),
                "{name}: {:?} is not in the table",
                notification.notification_name
            );
        }
    }

    /// Every sample that names a workspace: (file, workspace, owner, the recipient's own).
    /// The samples' recipient is bobby; Coder's fixtures name owners in other cases and
    /// other people.
    #[rustfmt::skip]
    const ABOUT_A_WORKSPACE: &[(&str, &str, &str, bool)] = &[
        ("TemplateMCPGatewayEscalationRequested.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateTaskCompleted.json.golden", "my-workspace", "bobby", true),
        ("TemplateTaskFailed.json.golden", "my-workspace", "bobby", true),
        ("TemplateTaskIdle.json.golden", "my-workspace", "bobby", true),
        ("TemplateTaskPaused.json.golden", "my-workspace", "bobby", true),
        ("TemplateTaskResumed.json.golden", "my-workspace", "bobby", true),
        ("TemplateTaskWorking.json.golden", "my-workspace", "bobby", true),
        ("TemplateWorkspaceAgentRestarted.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceAutoUpdated.golden.json", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceAutoUpdated.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceAutoUpdated_NoMessage.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceAutobuildFailed.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceAutostopReminder.json.golden", "bobby-workspace", "bobby", true),
        // `workspace_owner_username` "Bobby": the recipient bobby, in other capitals.
        ("TemplateWorkspaceCreated.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceDeleted.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceDeleted_CustomAppearance.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceDormant.golden.json", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceDormant.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceDormant_NoAutoDelete.json.golden", "bobby-workspace", "bobby", true),
        // A template admin's copy of mrbobby's failed build.
        ("TemplateWorkspaceManualBuildFailed.json.golden", "bobby-workspace", "mrbobby", false),
        ("TemplateWorkspaceManuallyUpdated.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceMarkedForDeletion.golden.json", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceMarkedForDeletion.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceOutOfDisk.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceOutOfDisk_MultipleVolumes.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceOutOfMemory.json.golden", "bobby-workspace", "bobby", true),
        ("TemplateWorkspaceReachedResourceThreshold.json.golden", "bobby-workspace", "bobby", true),
        // A template admin's copy: `claimant` owns the workspace.
        ("TemplateWorkspaceResourceReplaced.json.golden", "my-workspace", "prebuilds-claimer", false),
    ];

    #[test]
    fn each_sample_names_the_workspace_and_owner_the_table_says_and_no_other_does() {
        let samples = sample_bytes();
        for (file, ..) in ABOUT_A_WORKSPACE {
            assert!(
                samples.iter().any(|(name, _)| name == file),
                "{file} is gone"
            );
        }
        for (name, bytes) in &samples {
            let notification = parse(bytes);
            let expected = ABOUT_A_WORKSPACE
                .iter()
                .find(|(file, ..)| file == name)
                .map(|&(_, name, owner, recipients)| Workspace {
                    name,
                    owner,
                    recipients,
                });
            assert_eq!(workspace_of(&notification), expected, "{name}");
            let kind = Kind::of(&notification).expect("known");
            assert_eq!(kind.about_workspace, expected.is_some(), "{name}");
            let own = expected.filter(|w| w.recipients);
            assert_eq!(own_workspace_of(&notification), own, "{name}");
        }
    }

    #[test]
    fn ids_and_names_are_unique_and_the_id_wins_over_a_renamed_name() {
        for (i, a) in KINDS.iter().enumerate() {
            for b in &KINDS[i + 1..] {
                assert_ne!(a.template_id, b.template_id);
                assert!(
                    a.names.iter().all(|n| !b.names.contains(n)),
                    "{n:?}",
                    n = a.names
                );
            }
        }
        let body = serde_json::json!({
            "msg_id": "m",
            "payload": {
                "notification_name": "Workspace Reached Resource Threshold",
                "notification_template_id": "A9D027B4-AC49-4FB1-9F6D-45AF15F64E7A",
                "user_email": "a@b.c",
                "labels": {"workspace": "dev", "threshold": "90%"},
            },
        });
        let notification = parse(body.to_string().as_bytes());
        let kind = Kind::of(&notification).expect("known by its ID");
        assert_eq!(kind.names[0], "Workspace Out Of Memory");
        assert!(kind.urgent);
        let workspace = workspace_of(&notification).expect("about a workspace");
        // No Coder username: the recipient's address owns it.
        assert_eq!((workspace.owner, workspace.name), ("a@b.c", "dev"));
    }

    #[test]
    fn template_names_are_not_workspaces() {
        let deleted = parse(
            &std::fs::read(sample_path("TemplateTemplateDeleted.json.golden")).expect("a sample"),
        );
        assert!(deleted.labels.get("name").is_some());
        assert_eq!(workspace_of(&deleted), None);
    }

    #[test]
    fn an_owner_named_in_any_owner_label_is_compared_with_the_recipient() {
        let about = |labels: serde_json::Value, username: Option<&str>| {
            let body = serde_json::json!({
                "msg_id": "m",
                "payload": {
                    "notification_name": "Prebuilt Workspace Resource Replaced",
                    "user_email": "admin@example.com",
                    "user_username": username,
                    "labels": labels,
                },
            });
            parse(body.to_string().as_bytes())
        };
        let cases = [
            (
                serde_json::json!({"workspace": "w", "claimant": "alice"}),
                Some("admin"),
                ("alice", false),
            ),
            (
                serde_json::json!({"workspace": "w", "claimant": "ADMIN"}),
                Some("admin"),
                ("admin", true),
            ),
            (
                serde_json::json!({"workspace": "w", "workspace_owner_username": "alice"}),
                Some("admin"),
                ("alice", false),
            ),
            (
                serde_json::json!({"workspace": "w"}),
                Some("admin"),
                ("admin", true),
            ),
            // Without the recipient's username, a named owner cannot be theirs.
            (
                serde_json::json!({"workspace": "w", "claimant": "alice"}),
                None,
                ("alice", false),
            ),
            (
                serde_json::json!({"workspace": "w"}),
                None,
                ("admin@example.com", true),
            ),
        ];
        for (labels, username, (owner, recipients)) in cases {
            let notification = about(labels.clone(), username);
            let workspace = workspace_of(&notification).expect("about a workspace");
            assert_eq!(
                (workspace.name, workspace.owner, workspace.recipients),
                ("w", owner, recipients),
                "{labels} to {username:?}"
            );
        }
    }

    #[test]
    fn four_kinds_offer_an_act() {
        let acts: Vec<_> = KINDS
            .iter()
            .filter_map(|k| Some((k.names[0], k.act()?)))
            .collect();
        assert_eq!(
            acts,
            [
                ("Workspace Autobuild Failed", Act::Start),
                ("Workspace Marked as Dormant", Act::Keep),
                ("Workspace Marked for Deletion", Act::Keep),
                ("Workspace Autostop Reminder", Act::Extend),
            ]
        );
    }

    #[test]
    fn the_one_time_passcode_and_secret_labels_are_secrets_and_nothing_else_is() {
        for (name, bytes) in sample_bytes() {
            let expected = name
                .starts_with("TemplateUserRequestedOneTimePasscode")
                .then_some(Secret::OneTimePasscode);
            assert_eq!(secret_of(&parse(&bytes)), expected, "{name}");
        }
        for label in [
            "one_time_passcode",
            "otp",
            "OTP_code",
            "reset_token",
            "Password",
            "client-secret",
            "emailOtp",
        ] {
            assert!(is_secret_label(label), "{label}");
        }
        for label in [
            "workspace",
            "name",
            "claimant",
            "hotpath",
            "reason",
            "template",
        ] {
            assert!(!is_secret_label(label), "{label}");
        }
        let body = serde_json::json!({
            "msg_id": "m",
            "payload": {
                "notification_name": "Something New",
                "user_email": "a@b.c",
                "labels": {"workspace": "dev", "recovery_token": "t0k3n"},
            },
        });
        assert_eq!(
            secret_of(&parse(body.to_string().as_bytes())),
            Some(Secret::Labelled)
        );
    }

    /// The samples that are copies of a role broadcast; every other sample is not one.
    const ROLE_BROADCASTS: &[&str] = &[
        "PrebuildFailureLimitReached.json.golden",
        "TemplateAIBudgetLimitReachedAdmin.json.golden",
        "TemplateAIBudgetWarningAdmin.json.golden",
        "TemplateAIModelsUnpricedReport.json.golden",
        "TemplateServiceAccountCreated.json.golden",
        "TemplateTemplateDeleted.golden.json",
        "TemplateTemplateDeleted.json.golden",
        "TemplateUserAccountActivated.golden.json",
        "TemplateUserAccountActivated.json.golden",
        "TemplateUserAccountActivatedServiceAccount.json.golden",
        "TemplateUserAccountCreated.golden.json",
        "TemplateUserAccountCreated.json.golden",
        "TemplateUserAccountCreatedServiceAccount.json.golden",
        "TemplateUserAccountDeleted.golden.json",
        "TemplateUserAccountDeleted.json.golden",
        "TemplateUserAccountDeletedServiceAccount.json.golden",
        "TemplateUserAccountSuspended.golden.json",
        "TemplateUserAccountSuspended.json.golden",
        "TemplateUserAccountSuspendedServiceAccount.json.golden",
        "TemplateWorkspaceBuildsFailedReport.golden.json",
        "TemplateWorkspaceBuildsFailedReport.json.golden",
        // A template admin's copy of mrbobby's failed build.
        "TemplateWorkspaceManualBuildFailed.json.golden",
        // Sent to template admins; `claimant` owns the workspace.
        "TemplateWorkspaceResourceReplaced.json.golden",
    ];

    #[test]
    fn role_broadcasts_are_the_kinds_sent_to_a_role_and_the_admins_copies_about_others() {
        let samples = sample_bytes();
        for file in ROLE_BROADCASTS {
            assert!(
                samples.iter().any(|(name, _)| name == file),
                "{file} is gone"
            );
        }
        for (name, bytes) in &samples {
            let expected = ROLE_BROADCASTS.contains(&name.as_str());
            assert_eq!(is_role_broadcast(&parse(bytes)), expected, "{name}");
        }
        // The owner's own copy of a manual build failure is not a broadcast; an admin's is.
        let build_failed = |owner: &str| {
            let body = serde_json::json!({
                "msg_id": "m",
                "payload": {
                    "notification_name": "Workspace Manual Build Failed",
                    "user_email": "alice@example.com",
                    "user_username": "alice",
                    "labels": {"name": "dev", "workspace_owner_username": owner},
                },
            });
            parse(body.to_string().as_bytes())
        };
        assert!(!is_role_broadcast(&build_failed("Alice")));
        assert!(is_role_broadcast(&build_failed("bob")));
    }

    #[test]
    fn unknown_kinds_are_about_no_workspace() {
        let body = serde_json::json!({
            "msg_id": "m",
            "payload": {
                "notification_name": "Something New",
                "notification_template_id": "00000000-0000-0000-0000-000000000001",
                "user_email": "a@b.c",
                "labels": {"workspace": "dev"},
            },
        });
        let notification = parse(body.to_string().as_bytes());
        assert_eq!(Kind::of(&notification), None);
        assert_eq!(workspace_of(&notification), None);
    }
}
