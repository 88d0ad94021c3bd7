//! The authorization matrix: each pre-defined role × each administrative command × where its target is
//! (the caller's own tenant, another tenant, a group the caller manages, another group of the own tenant),
//! from one table of expected outcomes. Every cell runs the real command through the administration service
//! against a real Postgres, on a target made fresh for it. Allowed means the command succeeds; denied means
//! it is refused as forbidden (and nothing else).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use common::world::{create_user, id, secret, sign_in, unique, World};
use recall_commands::admin::{
    AdminCommand, AdminError, EvaluationFormRequest, GroupRequest, NewUser, RoleRequest, StorageSettings,
    StorageTargetRequest, UserRequest,
};
use recall_commands::CommandService;
use recall_domain::access::{Grants, Permission, PredefinedRole, Scope};
use recall_domain::call::{Call, CallCommand, CallDirection, CallStart};
use recall_domain::custom_field::{CustomFieldCommand, CustomFieldDefinition, FieldType, SearchSettings};
use recall_domain::evaluation_form::{Answer, FormDefinition, Question, Section};
use recall_domain::field_visibility::{FieldVisibilityCommand, Layout};
use recall_domain::recording_policy::{AudioFormat, RetentionPolicy};
use recall_domain::tenant::TenantCommand;
use recall_domain::user::{Licences, RecordingSettings, ScreenLogin};
use recall_domain::CommandMeta;
use sqlx::PgPool;
use uuid::Uuid;

/// Where a command's target is, seen from the caller (the callers all belong to tenant A; the supervisor
/// manages group A1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rel {
    /// Tenant A; for user-level targets, a user of tenant A in no group.
    OwnTenant,
    /// Tenant B; for user-level targets, a user in group B1.
    OtherTenant,
    /// A user in group A1.
    ManagedGroup,
    /// A user in group A2.
    OtherGroup,
}

const RELS: [Rel; 4] = [Rel::OwnTenant, Rel::OtherTenant, Rel::ManagedGroup, Rel::OtherGroup];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    RenameTenant,
    SetTenantAudioFormat,
    SetTenantFileEncryption,
    SetTenantRetention,
    DefineRole,
    CreateGroup,
    RenameGroup,
    DeleteGroup,
    CreateUser,
    RenameUser,
    SetUserEmail,
    SetUserTimezone,
    DeactivateUser,
    AssignUserRole,
    SetUserGroups,
    AddUserExtension,
    SetUserPassword,
    IssueResetLink,
    SetWebAccess,
    SetLicences,
    SetRecordingSettings,
    SetScreenLogin,
    TerminateSession,
    RevokeDevice,
    StartImpersonation,
    AssignCall,
    AddStorageTarget,
    AddCustomField,
    SetFieldVisibility,
    CreateEvaluationForm,
}

/// The one table. Per role (Root, Administrator, Supervisor, Agent), four cells in the order own tenant,
/// other tenant, managed group, other group: `y` allowed, `-` forbidden.
#[rustfmt::skip]
const MATRIX: &[(Kind, [&str; 4])] = &[
    //                                Root    Admin   Superv. Agent
    (Kind::RenameTenant,              ["yyyy", "----", "----", "----"]),
    (Kind::SetTenantAudioFormat,      ["yyyy", "y-yy", "----", "----"]),
    (Kind::SetTenantFileEncryption,   ["yyyy", "y-yy", "----", "----"]),
    (Kind::SetTenantRetention,        ["yyyy", "----", "----", "----"]),
    (Kind::DefineRole,                ["yyyy", "----", "----", "----"]),
    (Kind::CreateGroup,               ["yyyy", "y-yy", "----", "----"]),
    (Kind::RenameGroup,               ["yyyy", "y-yy", "----", "----"]),
    (Kind::DeleteGroup,               ["yyyy", "y-yy", "----", "----"]),
    (Kind::CreateUser,                ["yyyy", "y-yy", "----", "----"]),
    (Kind::RenameUser,                ["yyyy", "y-yy", "----", "----"]),
    (Kind::SetUserEmail,              ["yyyy", "y-yy", "----", "----"]),
    (Kind::SetUserTimezone,           ["yyyy", "y-yy", "----", "----"]),
    (Kind::DeactivateUser,            ["yyyy", "y-yy", "----", "----"]),
    (Kind::AssignUserRole,            ["yyyy", "y-yy", "----", "----"]),
    (Kind::SetUserGroups,             ["yyyy", "y-yy", "----", "----"]),
    (Kind::AddUserExtension,          ["yyyy", "y-yy", "----", "----"]),
    (Kind::SetUserPassword,           ["yyyy", "y-yy", "----", "----"]),
    (Kind::IssueResetLink,            ["yyyy", "y-yy", "----", "----"]),
    (Kind::SetWebAccess,              ["yyyy", "y-yy", "----", "----"]),
    (Kind::SetLicences,               ["yyyy", "y-yy", "----", "----"]),
    (Kind::SetRecordingSettings,      ["yyyy", "y-yy", "----", "----"]),
    (Kind::SetScreenLogin,            ["yyyy", "y-yy", "----", "----"]),
    (Kind::TerminateSession,          ["yyyy", "y-yy", "----", "----"]),
    (Kind::RevokeDevice,              ["yyyy", "y-yy", "----", "----"]),
    (Kind::StartImpersonation,        ["yyyy", "y-yy", "----", "----"]),
    (Kind::AssignCall,                ["yyyy", "y-yy", "--y-", "----"]),
    (Kind::AddStorageTarget,          ["yyyy", "y-yy", "----", "----"]),
    (Kind::AddCustomField,            ["yyyy", "y-yy", "----", "----"]),
    (Kind::SetFieldVisibility,        ["yyyy", "y-yy", "----", "----"]),
    (Kind::CreateEvaluationForm,      ["yyyy", "y-yy", "----", "----"]),
];

const ROLES: [&str; 4] = ["root", "administrator", "supervisor", "agent"];

fn tenant(world: &World, rel: Rel) -> Uuid {
    if rel == Rel::OtherTenant {
        world.tenant_b
    } else {
        world.tenant_a
    }
}

fn groups(world: &World, rel: Rel) -> Vec<Uuid> {
    match rel {
        Rel::OwnTenant => vec![],
        Rel::OtherTenant => vec![world.group_b1],
        Rel::ManagedGroup => vec![world.group_a1],
        Rel::OtherGroup => vec![world.group_a2],
    }
}

/// A fresh agent where `rel` says, who may sign in; returns the id and the username.
async fn fresh_user(world: &World, rel: Rel) -> (Uuid, String) {
    let name = unique("target");
    let user_id = create_user(
        &world.admin,
        &world.root.caller,
        tenant(world, rel),
        PredefinedRole::Agent,
        groups(world, rel),
        vec![],
        &name,
    )
    .await;
    (user_id, name)
}

fn user(user_id: Uuid, request: UserRequest) -> AdminCommand {
    AdminCommand::User { user_id, request }
}

fn form(name: String) -> FormDefinition {
    let answers = vec![Answer { text: "Yes".into(), score_bp: 10_000 }, Answer { text: "No".into(), score_bp: 0 }];
    FormDefinition {
        name,
        description: None,
        sections: vec![Section {
            title: "Opening".into(),
            questions: vec![Question { text: "Greeted the caller?".into(), weight_bp: 10_000, answers }],
        }],
    }
}

/// The command of `kind` on a target made fresh where `rel` says.
async fn command_for(world: &World, kind: Kind, rel: Rel) -> AdminCommand {
    let tenant_id = tenant(world, rel);
    let tenant_command = |command| AdminCommand::Tenant { tenant_id, command };
    match kind {
        Kind::RenameTenant => tenant_command(TenantCommand::RenameTenant { name: unique("Tenant") }),
        Kind::SetTenantAudioFormat => tenant_command(TenantCommand::SetAudioFormat { format: AudioFormat::WavStereo }),
        // Switching it on needs an active key first (tests/keys.rs); switching it off asks the same right.
        Kind::SetTenantFileEncryption => tenant_command(TenantCommand::SetFileEncryption { enabled: false }),
        Kind::SetTenantRetention => tenant_command(TenantCommand::SetRetentionPolicy {
            policy: RetentionPolicy { recordings_days: Some(400), audit_days: 800 },
        }),
        Kind::DefineRole => AdminCommand::Role {
            role_id: id(),
            request: RoleRequest::Define {
                name: unique("Role"),
                grants: Grants::new(Scope::OwnCalls, [Permission::ViewCalls]),
            },
        },
        Kind::CreateGroup => AdminCommand::Group {
            group_id: id(),
            request: GroupRequest::Create { tenant_id, name: unique("Group"), timezone: None },
        },
        Kind::RenameGroup | Kind::DeleteGroup => {
            let group_id = common::world::create_group(&world.admin, &world.root.caller, tenant_id, "G").await;
            let request = if kind == Kind::RenameGroup {
                GroupRequest::Rename { name: unique("Renamed") }
            } else {
                GroupRequest::Delete
            };
            AdminCommand::Group { group_id, request }
        }
        Kind::CreateUser => {
            let mut new = NewUser::new(unique("new"), PredefinedRole::Agent.role_id());
            new.groups = groups(world, rel);
            user(id(), UserRequest::Create { tenant_id: Some(tenant_id), user: Box::new(new) })
        }
        Kind::TerminateSession | Kind::RevokeDevice => {
            let (user_id, name) = fresh_user(world, rel).await;
            let person = sign_in(&world.admin, user_id, &name).await;
            match kind {
                Kind::TerminateSession => {
                    AdminCommand::TerminateSession { session_id: person.caller.session_id.expect("session") }
                }
                _ => AdminCommand::RevokeDevice { device_id: person.caller.device_id.expect("device") },
            }
        }
        Kind::StartImpersonation => AdminCommand::StartImpersonation { user_id: fresh_user(world, rel).await.0 },
        Kind::AssignCall => {
            let (owner, _) = fresh_user(world, rel).await;
            let (peer, _) = fresh_user(world, rel).await;
            let call_id = id();
            let start = CallStart {
                tenant_id,
                sip_call_id: format!("{call_id}@sbc"),
                direction: CallDirection::Outbound,
                participants: vec![],
                extension: None,
                user_id: Some(owner),
                site: "test".into(),
                recorder_node: "rec".into(),
                started_at: chrono::Utc::now(),
            };
            CommandService::<Call>::new(world.log.clone(), ())
                .execute(
                    &call_id.to_string(),
                    CallCommand::RecordCallStart { call_id, start },
                    CommandMeta::system("recorder:rec"),
                )
                .await
                .expect("call recorded");
            AdminCommand::AssignCall { call_id, user_id: peer, extension: None, apply_to_similar: false }
        }
        Kind::AddStorageTarget => AdminCommand::StorageTarget {
            target_id: id(),
            request: StorageTargetRequest::Add {
                tenant_id,
                name: unique("Disk"),
                settings: StorageSettings::LocalFilesystem { path: "/var/lib/recall/recordings".into() },
            },
        },
        Kind::AddCustomField => AdminCommand::CustomField {
            field_id: id(),
            command: CustomFieldCommand::AddCustomField {
                tenant_id,
                definition: CustomFieldDefinition {
                    name: unique("Field"),
                    description: None,
                    field_type: FieldType::Text,
                    length: Some(40),
                    editable: true,
                    search: SearchSettings { advanced_search: true, free_text: true },
                },
            },
        },
        Kind::SetFieldVisibility => AdminCommand::FieldVisibility {
            command: FieldVisibilityCommand::SetLayoutVisibility {
                tenant_id,
                layout: Layout::Recordings,
                visible: BTreeMap::from([("notes".to_owned(), false)]),
            },
        },
        Kind::CreateEvaluationForm => AdminCommand::EvaluationForm {
            form_id: id(),
            request: EvaluationFormRequest::Create { tenant_id, definition: form(unique("Form")) },
        },
        user_level => {
            let (user_id, _) = fresh_user(world, rel).await;
            let request = match user_level {
                Kind::RenameUser => UserRequest::Rename { username: unique("renamed") },
                Kind::SetUserEmail => UserRequest::SetEmail { email: Some("someone@example.com".into()) },
                Kind::SetUserTimezone => UserRequest::SetTimezone { timezone: Some("Europe/Paris".into()) },
                Kind::DeactivateUser => UserRequest::Deactivate,
                Kind::AssignUserRole => UserRequest::AssignRole { role_id: PredefinedRole::Supervisor.role_id() },
                Kind::SetUserGroups => UserRequest::SetGroups { groups: groups(world, rel) },
                Kind::AddUserExtension => UserRequest::AddExtension { extension: unique("x").replace('-', "") },
                Kind::SetUserPassword => {
                    UserRequest::SetPassword { password: secret("a brand new password"), must_change: true }
                }
                Kind::IssueResetLink => UserRequest::IssuePasswordResetLink,
                Kind::SetWebAccess => UserRequest::SetWebAccess { login_enabled: false },
                Kind::SetLicences => {
                    UserRequest::SetLicences { licences: Licences { audio: true, screen: true, evaluate: false } }
                }
                Kind::SetRecordingSettings => {
                    UserRequest::SetRecordingSettings { recording: RecordingSettings::default() }
                }
                Kind::SetScreenLogin => UserRequest::SetScreenRecordingLogin {
                    login: Some(ScreenLogin { login: "jdoe".into(), domain: None }),
                },
                other => unreachable!("{other:?} has its own arm"),
            };
            user(user_id, request)
        }
    }
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn each_role_may_do_exactly_what_the_matrix_says(pool: PgPool) {
    let world = World::build(pool).await;
    let people = [&world.root, &world.admin_a, &world.supervisor_a, &world.agent_a1];
    let mut wrong = String::new();
    let mut cells = 0;
    let kinds: BTreeSet<Kind> = MATRIX.iter().map(|(kind, _)| *kind).collect();
    assert_eq!(kinds.len(), MATRIX.len(), "each command appears once in the table");
    for (kind, expected) in MATRIX {
        for (role, (person, row)) in ROLES.iter().zip(people.iter().zip(expected)) {
            for (rel, cell) in RELS.iter().zip(row.chars()) {
                let command = command_for(&world, *kind, *rel).await;
                let outcome = world.admin.execute(&person.caller, command).await;
                cells += 1;
                let fine = matches!((cell, &outcome), ('y', Ok(_)) | ('-', Err(AdminError::Forbidden(_))));
                if !fine {
                    let _ = writeln!(wrong, "{kind:?} by {role} on {rel:?}: expected {cell}, got {outcome:?}");
                }
                if *kind == Kind::StartImpersonation && outcome.is_ok() {
                    let stop = world.admin.execute(&person.caller, AdminCommand::StopImpersonation).await;
                    assert!(stop.is_ok(), "{stop:?}");
                }
            }
        }
    }
    assert_eq!(cells, MATRIX.len() * 16);
    assert!(wrong.is_empty(), "cells that disagree with the matrix:\n{wrong}");
}
