//! The administration service against a real Postgres: bootstrap, uniqueness under concurrency, the rules
//! about roles and groups in use, refusals written to the audit trail and nowhere else, passwords kept out
//! of the log, sign-in and sessions, impersonation, call assignment, storage credentials, and replays.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::world::{self, id, secret, Person, World, PASSWORD};
use recall_commands::admin::{
    AdminCommand, AdminError, AuthError, EvaluationFormRequest, GroupRequest, NewUser, RoleRequest, SignInError,
    SignInRequest, StorageSettings, StorageTargetRequest, UserRequest,
};
use recall_commands::{CommandService, LoggedEvent};
use recall_domain::access::{Grants, Permission, PredefinedRole, Scope};
use recall_domain::call::{Call, CallCommand, CallDirection, CallStart};
use recall_domain::evaluation_form::{Answer, FormDefinition, Question, Section};
use recall_domain::index::{IndexKey, Namespace};
use recall_domain::tenant::TenantCommand;
use recall_domain::CommandMeta;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use uuid::Uuid;

fn user(user_id: Uuid, request: UserRequest) -> AdminCommand {
    AdminCommand::User { user_id, request }
}

async fn all_events(world: &World) -> Vec<LoggedEvent> {
    common::wait_until_sequenced(&world.log, Duration::from_secs(20)).await;
    common::read_all(&world.log).await
}

async fn events_of(world: &World, aggregate_type: &str, aggregate_id: Uuid) -> Vec<LoggedEvent> {
    all_events(world)
        .await
        .into_iter()
        .filter(|e| e.event.aggregate_type == aggregate_type && e.event.aggregate_id == aggregate_id.to_string())
        .collect()
}

fn refusals(events: &[LoggedEvent]) -> Vec<serde_json::Value> {
    events
        .iter()
        .filter(|e| e.event.event_type == "CommandRefused")
        .map(|e| e.event.payload_json().expect("payload")["CommandRefused"].clone())
        .collect()
}

async fn sign_in(
    world: &World,
    username: &str,
    password: &str,
) -> Result<recall_commands::admin::SignedIn, SignInError> {
    world
        .admin
        .sign_in(SignInRequest {
            username: username.to_owned(),
            password: secret(password),
            device_id: None,
            device_label: "curl/8".to_owned(),
            source_addr: Some("198.51.100.7".parse().expect("address")),
        })
        .await
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_new_installation_gets_the_predefined_roles_once_and_one_root(pool: PgPool) {
    let world = World::build(pool).await;
    world.admin.seed_roles().await.expect("seeding again is harmless");
    let defined: Vec<_> =
        all_events(&world).await.into_iter().filter(|e| e.event.event_type == "RoleDefined").collect();
    assert_eq!(defined.len(), 4, "each pre-defined role is defined exactly once");
    let again = world.admin.create_root("root2", secret(PASSWORD)).await;
    assert!(matches!(again, Err(AdminError::Invalid(_))), "{again:?}");
    assert!(world.admin.has_active_root().await.expect("lookup"));
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn the_default_tenant_is_made_once_and_trusts_this_machine(pool: PgPool) {
    let world = World::build(pool).await;
    let (first, second) = tokio::join!(world.admin.ensure_default_tenant(), world.admin.ensure_default_tenant());
    let (first, second) = (first.expect("made"), second.expect("made or found"));
    assert_eq!(first, second, "one default tenant, however many processes start at once");
    assert_eq!(world.admin.ensure_default_tenant().await.expect("found"), first);
    let tenants = CommandService::<recall_domain::tenant::Tenant>::new(world.log.clone(), ());
    let tenant = tenants.load(&first.to_string()).await.expect("tenant");
    assert_eq!(tenant.name(), recall_commands::admin::DEFAULT_TENANT);
    let clients = tenant.recording_clients();
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("address");
    for source in ["127.0.0.1", "::1"] {
        assert_eq!(recall_domain::tenant::tenant_for_source(ip(source), [(first, clients)]), Some(first), "{source}");
    }
    assert_eq!(recall_domain::tenant::tenant_for_source(ip("192.0.2.1"), [(first, clients)]), None);
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn racing_creations_of_one_username_leave_exactly_one_user(pool: PgPool) {
    let world = World::build(pool).await;
    let attempts = (0..8).map(|_| {
        let admin = world.admin.clone();
        let caller = world.admin_a.caller.clone();
        let tenant = world.tenant_a;
        tokio::spawn(async move {
            let request = UserRequest::Create {
                tenant_id: Some(tenant),
                user: Box::new(NewUser::new("Carol", PredefinedRole::Agent.role_id())),
            };
            admin.execute(&caller, user(id(), request)).await
        })
    });
    let results = futures::future::join_all(attempts).await;
    let won = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let taken = results.iter().filter(|r| matches!(r, Ok(Err(AdminError::Taken(_))))).count();
    assert_eq!((won, taken), (1, 7), "{results:?}");
    let created = all_events(&world).await.into_iter().filter(|e| e.event.event_type == "UserCreated").count();
    assert_eq!(created, 1 + 6 + 1, "root, the six people of the world, and Carol once");
    // Case does not make another name.
    let request = UserRequest::Create {
        tenant_id: Some(world.tenant_b),
        user: Box::new(NewUser::new("CAROL", PredefinedRole::Agent.role_id())),
    };
    let again = world.as_(&world.admin_b, user(id(), request)).await;
    assert!(matches!(&again, Err(AdminError::Taken(key)) if key.namespace == Namespace::Username), "{again:?}");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn an_extension_belongs_to_one_user_per_tenant(pool: PgPool) {
    let world = World::build(pool).await;
    let add = |ext: &str| UserRequest::AddExtension { extension: ext.to_owned() };
    world.as_(&world.admin_a, user(world.agent_a1.user_id, add("2001"))).await.expect("first holder");
    let second = world.as_(&world.admin_a, user(world.agent_a2.user_id, add("2001"))).await;
    assert!(
        matches!(&second, Err(AdminError::Taken(key)) if key.namespace == Namespace::Extension(world.tenant_a)),
        "{second:?}"
    );
    world.as_(&world.admin_b, user(world.agent_b.user_id, add("2001"))).await.expect("another tenant may use it");
    // Given up, it is free again.
    let clear = UserRequest::SetExtensions { extensions: BTreeSet::new() };
    world.as_(&world.admin_a, user(world.agent_a1.user_id, clear)).await.expect("removed");
    world.as_(&world.admin_a, user(world.agent_a2.user_id, add("2001"))).await.expect("now free");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_role_in_use_and_a_group_with_members_cannot_be_deleted(pool: PgPool) {
    let world = World::build(pool).await;
    let role_id = id();
    let grants = Grants::new(Scope::ManagedGroups, [Permission::ViewCalls, Permission::PlaybackCalls]);
    let define = RoleRequest::Define { name: "QA reviewer".into(), grants };
    world.as_(&world.root, AdminCommand::Role { role_id, request: define }).await.expect("defined");
    world
        .as_(&world.admin_a, user(world.agent_a1.user_id, UserRequest::AssignRole { role_id }))
        .await
        .expect("assigned");
    let delete = || AdminCommand::Role { role_id, request: RoleRequest::Delete };
    let refused = world.as_(&world.root, delete()).await;
    assert!(matches!(&refused, Err(AdminError::Invalid(m)) if m.contains("1 user")), "{refused:?}");
    let back = UserRequest::AssignRole { role_id: PredefinedRole::Agent.role_id() };
    world.as_(&world.admin_a, user(world.agent_a1.user_id, back)).await.expect("reassigned");
    world.as_(&world.root, delete()).await.expect("unused now");

    let group = || AdminCommand::Group { group_id: world.group_a2, request: GroupRequest::Delete };
    assert!(matches!(world.as_(&world.admin_a, group()).await, Err(AdminError::Invalid(_))));
    let move_out = UserRequest::SetGroups { groups: vec![world.group_a1] };
    world.as_(&world.admin_a, user(world.agent_a2.user_id, move_out)).await.expect("moved");
    world.as_(&world.admin_a, group()).await.expect("empty now");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_refused_command_changes_nothing_and_is_in_the_audit_trail_as_a_failure(pool: PgPool) {
    let world = World::build(pool).await;
    let before = events_of(&world, "User", world.agent_b.user_id).await.len();
    let rename = user(world.agent_b.user_id, UserRequest::Rename { username: "hijacked".into() });
    let refused = world.as_(&world.admin_a, rename).await;
    assert!(matches!(refused, Err(AdminError::Forbidden(_))), "{refused:?}");
    let invalid = world
        .as_(&world.admin_a, user(world.agent_a1.user_id, UserRequest::SetEmail { email: Some("nope".into()) }))
        .await;
    assert!(matches!(invalid, Err(AdminError::Invalid(_))), "{invalid:?}");
    let events = all_events(&world).await;
    assert_eq!(events_of(&world, "User", world.agent_b.user_id).await.len(), before);
    let failures = refusals(&events);
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(failures[0]["command"], "User.Rename");
    assert_eq!(failures[0]["target"], format!("User/{}", world.agent_b.user_id));
    assert_eq!(failures[0]["kind"], "forbidden");
    assert_eq!(failures[1]["kind"], "invalid");
    let refusal = events.iter().find(|e| e.event.event_type == "CommandRefused").expect("refusal");
    assert_eq!(refusal.event.actor, format!("user:{}", world.admin_a.user_id));
    assert_eq!(refusal.event.session_id, world.admin_a.caller.session_id);
    assert_eq!(refusal.event.tenant_id, Some(world.tenant_a));
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn nobody_hands_out_or_takes_over_more_rights_than_they_hold(pool: PgPool) {
    let world = World::build(pool).await;
    // A tenant administrator cannot make a root administrator, nor a custom role with provider rights.
    let promote = UserRequest::AssignRole { role_id: PredefinedRole::RootAdministrator.role_id() };
    assert!(matches!(
        world.as_(&world.admin_a, user(world.agent_a1.user_id, promote)).await,
        Err(AdminError::Forbidden(_))
    ));
    let strong = id();
    let grants = Grants::new(Scope::Tenant, [Permission::ConfigureUsers, Permission::ManageRetention]);
    world
        .as_(
            &world.root,
            AdminCommand::Role { role_id: strong, request: RoleRequest::Define { name: "Strong".into(), grants } },
        )
        .await
        .expect("defined");
    let assign = UserRequest::AssignRole { role_id: strong };
    assert!(matches!(
        world.as_(&world.admin_a, user(world.agent_a1.user_id, assign)).await,
        Err(AdminError::Forbidden(_))
    ));
    // A supervisor allowed to configure users cannot reset the password of an administrator in their group
    // (taking over a stronger account), but can an agent's whose rights the supervisor's role includes.
    let helper_role = id();
    let grants = Grants::new(
        Scope::ManagedGroups,
        [Permission::ConfigureUsers, Permission::ViewCalls, Permission::PlaybackCalls],
    );
    world
        .as_(
            &world.root,
            AdminCommand::Role {
                role_id: helper_role,
                request: RoleRequest::Define { name: "Team lead".into(), grants },
            },
        )
        .await
        .expect("defined");
    world
        .as_(&world.admin_a, user(world.supervisor_a.user_id, UserRequest::AssignRole { role_id: helper_role }))
        .await
        .expect("assigned");
    let reset = UserRequest::SetPassword { password: secret("another long password"), must_change: false };
    let taken_over = world.as_(&world.supervisor_a, user(world.admin_a.user_id, reset)).await;
    assert!(matches!(taken_over, Err(AdminError::Forbidden(_))), "{taken_over:?}");
    let reset = UserRequest::SetPassword { password: secret("another long password"), must_change: true };
    world.as_(&world.supervisor_a, user(world.agent_a1.user_id, reset)).await.expect("an agent of the group is fine");
    // Nobody changes their own status or role.
    let myself = world.as_(&world.admin_a, user(world.admin_a.user_id, UserRequest::Deactivate)).await;
    assert!(matches!(myself, Err(AdminError::Forbidden(_))), "{myself:?}");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn passwords_reach_neither_events_nor_logs_and_sign_in_checks_them(pool: PgPool) {
    let world = World::build(pool).await;
    let new_password = "tr0ub4dor&3 is long enough";
    let set = UserRequest::SetPassword { password: secret(new_password), must_change: false };
    world.as_(&world.admin_a, user(world.agent_a1.user_id, set)).await.expect("set");
    assert!(matches!(sign_in(&world, "agent-a1", PASSWORD).await, Err(SignInError::Failed)));
    sign_in(&world, "agent-a1", new_password).await.expect("the new password works");
    for event in all_events(&world).await {
        let text = format!("{}{}", event.event.payload, event.event.metadata);
        assert!(!text.contains(new_password) && !text.contains(PASSWORD), "a password in {}", event.event.event_type);
        assert!(!text.contains("$argon2"), "a password hash in {}", event.event.event_type);
    }
    let failed: Vec<_> =
        all_events(&world).await.into_iter().filter(|e| e.event.event_type == "SignInFailed").collect();
    assert_eq!(failed.len(), 1);
    let payload = failed[0].event.payload_json().expect("payload");
    assert_eq!(payload["SignInFailed"]["failure"], "wrong_password");
    assert_eq!(failed[0].event.source_addr.as_deref(), Some("198.51.100.7"));
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn repeated_failed_sign_ins_are_slowed_down(pool: PgPool) {
    let world = World::build(pool).await;
    for _ in 0..5 {
        assert!(matches!(sign_in(&world, "agent-a2", "wrong password!").await, Err(SignInError::Failed)));
    }
    assert!(matches!(sign_in(&world, "agent-a2", PASSWORD).await, Err(SignInError::RateLimited(_))));
    // Unknown names fail the same way as wrong passwords.
    assert!(matches!(sign_in(&world, "nobody-here", PASSWORD).await, Err(SignInError::Failed)));
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn terminated_sessions_and_revoked_devices_are_refused_on_their_next_request(pool: PgPool) {
    let world = World::build(pool).await;
    let agent = &world.agent_a1;
    let session_id = agent.caller.session_id.expect("session");
    world.as_(&world.admin_a, AdminCommand::TerminateSession { session_id }).await.expect("terminated");
    assert!(matches!(world.admin.authenticate(&agent.token, None).await, Err(AuthError::Ended)));

    let again = world::sign_in(&world.admin, agent.user_id, &agent.username).await;
    let device_id = again.caller.device_id.expect("device");
    // An agent cannot revoke another user's device; the administrator can.
    let other = world.as_(&world.agent_a2, AdminCommand::RevokeDevice { device_id }).await;
    assert!(matches!(other, Err(AdminError::Forbidden(_))), "{other:?}");
    world.as_(&world.admin_a, AdminCommand::RevokeDevice { device_id }).await.expect("revoked");
    assert!(matches!(world.admin.authenticate(&again.token, None).await, Err(AuthError::DeviceRevoked)));
    // A token that was tampered with is no token.
    let mut forged = world.admin_a.token.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    assert!(matches!(world.admin.authenticate(&forged, None).await, Err(AuthError::Invalid)));
    // A deactivated user's sessions stop working at once.
    world.as_(&world.admin_a, user(world.agent_a2.user_id, UserRequest::Deactivate)).await.expect("deactivated");
    assert!(matches!(world.admin.authenticate(&world.agent_a2.token, None).await, Err(AuthError::AccountDisabled)));
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_remembered_token_follows_every_change_to_what_it_was_read_from(pool: PgPool) {
    let world = World::build(pool).await;
    let recognise = |who: &Person, source: &str| {
        let (admin, token, source) = (world.admin.clone(), who.token.clone(), source.parse().ok());
        async move { admin.recognise(&token, source).await }
    };
    let refused = |result: Result<_, AdminError>| matches!(result, Err(AdminError::Unauthenticated(_)));

    // Remembered between requests, with each request's own source address.
    let (first, authority) = recognise(&world.supervisor_a, "192.0.2.1").await.expect("recognised");
    let (second, again) = recognise(&world.supervisor_a, "192.0.2.2").await.expect("recognised again");
    assert_eq!(authority, again);
    assert_eq!(first.caller.source_addr, Some("192.0.2.1".parse().expect("address")));
    assert_eq!(second.caller.source_addr, Some("192.0.2.2".parse().expect("address")));
    // The right id with the wrong secret is no token, remembered or not.
    let mut forged = world.supervisor_a.clone();
    forged.token.replace_range(forged.token.len() - 4.., "AAAA");
    assert!(refused(recognise(&forged, "192.0.2.1").await));

    // The user changed: new managed groups count at once.
    let groups = BTreeSet::from([world.group_a1, world.group_a2]);
    let set = user(world.supervisor_a.user_id, UserRequest::SetManagedGroups { groups: groups.clone() });
    world.as_(&world.admin_a, set).await.expect("managed groups set");
    let (_, authority) = recognise(&world.supervisor_a, "192.0.2.1").await.expect("recognised");
    assert_eq!(authority.managed_groups, groups);

    // The role changed: its new grants count at once.
    let role_id = id();
    let define = RoleRequest::Define {
        name: world::unique("listener"),
        grants: Grants::new(Scope::OwnCalls, [Permission::ViewCalls]),
    };
    world.as_(&world.root, AdminCommand::Role { role_id, request: define }).await.expect("role defined");
    let agent = &world.agent_a2;
    world.as_(&world.root, user(agent.user_id, UserRequest::AssignRole { role_id })).await.expect("assigned");
    let (_, authority) = recognise(agent, "192.0.2.1").await.expect("recognised");
    assert!(!authority.grants.allows(Permission::PlaybackCalls));
    let grants = Grants::new(Scope::OwnCalls, [Permission::ViewCalls, Permission::PlaybackCalls]);
    let change = RoleRequest::ChangeGrants { grants };
    world.as_(&world.root, AdminCommand::Role { role_id, request: change }).await.expect("grants changed");
    let (_, authority) = recognise(agent, "192.0.2.1").await.expect("recognised");
    assert!(authority.grants.allows(Permission::PlaybackCalls));

    // The session ended, the device was revoked, the tenant deactivated: refused on the next request.
    recognise(&world.agent_a1, "192.0.2.1").await.expect("recognised");
    let session_id = world.agent_a1.caller.session_id.expect("session");
    world.as_(&world.admin_a, AdminCommand::TerminateSession { session_id }).await.expect("terminated");
    assert!(refused(recognise(&world.agent_a1, "192.0.2.1").await));

    recognise(&world.admin_a, "192.0.2.1").await.expect("recognised");
    let device_id = world.admin_a.caller.device_id.expect("device");
    world.as_(&world.root, AdminCommand::RevokeDevice { device_id }).await.expect("revoked");
    assert!(refused(recognise(&world.admin_a, "192.0.2.1").await));

    recognise(&world.agent_b, "192.0.2.1").await.expect("recognised");
    let deactivate = AdminCommand::Tenant { tenant_id: world.tenant_b, command: TenantCommand::DeactivateTenant };
    world.as_(&world.root, deactivate).await.expect("deactivated");
    assert!(refused(recognise(&world.agent_b, "192.0.2.1").await));
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_user_who_must_change_the_password_can_do_nothing_else_until_then(pool: PgPool) {
    let world = World::build(pool).await;
    let set = UserRequest::SetPassword { password: secret("temporary password 1"), must_change: true };
    world.as_(&world.root, user(world.admin_b.user_id, set)).await.expect("set");
    let signed_in = sign_in(&world, "admin-b", "temporary password 1").await.expect("signs in");
    assert!(signed_in.must_change_password);
    let principal = world.admin.authenticate(signed_in.token.expose_secret(), None).await.expect("session");
    let blocked = world
        .admin
        .execute(
            &principal.caller,
            AdminCommand::Group {
                group_id: id(),
                request: GroupRequest::Create { tenant_id: world.tenant_b, name: "X".into(), timezone: None },
            },
        )
        .await;
    assert!(matches!(blocked, Err(AdminError::Forbidden(_))), "{blocked:?}");
    let wrong =
        AdminCommand::ChangeOwnPassword { current: secret("not it at all"), new: secret("my own new password") };
    assert!(matches!(world.admin.execute(&principal.caller, wrong).await, Err(AdminError::Invalid(_))));
    let change =
        AdminCommand::ChangeOwnPassword { current: secret("temporary password 1"), new: secret("my own new password") };
    world.admin.execute(&principal.caller, change).await.expect("changed");
    let group = AdminCommand::Group {
        group_id: id(),
        request: GroupRequest::Create { tenant_id: world.tenant_b, name: "X".into(), timezone: None },
    };
    world.admin.execute(&principal.caller, group).await.expect("free to work now");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_reset_link_sets_a_new_password_once(pool: PgPool) {
    let world = World::build(pool).await;
    let done = world
        .as_(&world.admin_a, user(world.agent_a1.user_id, UserRequest::IssuePasswordResetLink))
        .await
        .expect("issued");
    let token = done.issued.expect("a token").expose_secret().to_owned();
    assert!(world.admin.complete_password_reset(&token, secret("short"), None).await.is_err(), "the policy holds");
    world.admin.complete_password_reset(&token, secret("a fresh long password"), None).await.expect("reset");
    sign_in(&world, "agent-a1", "a fresh long password").await.expect("new password");
    let reuse = world.admin.complete_password_reset(&token, secret("yet another password"), None).await;
    assert!(matches!(reuse, Err(AdminError::Invalid(_))), "{reuse:?}");
    assert!(matches!(
        world.admin.complete_password_reset("garbage", secret("yet another password"), None).await,
        Err(AdminError::Invalid(_))
    ));
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn an_impersonating_administrator_has_exactly_the_users_rights_and_both_are_recorded(pool: PgPool) {
    let world = World::build(pool).await;
    let admin = &world.admin_a;
    world.as_(admin, AdminCommand::StartImpersonation { user_id: world.agent_a1.user_id }).await.expect("started");
    let principal = world.admin.authenticate(&admin.token, None).await.expect("session");
    assert_eq!(principal.caller.user_id, world.agent_a1.user_id);
    assert_eq!(principal.caller.impersonator, Some(admin.user_id));
    // As the agent, administration is refused, and the refusal names both.
    let create = AdminCommand::Group {
        group_id: id(),
        request: GroupRequest::Create { tenant_id: world.tenant_a, name: "Z".into(), timezone: None },
    };
    assert!(matches!(world.admin.execute(&principal.caller, create).await, Err(AdminError::Forbidden(_))));
    let events = all_events(&world).await;
    let refusal = events.iter().rev().find(|e| e.event.event_type == "CommandRefused").expect("recorded");
    assert_eq!(refusal.event.actor, format!("user:{}", world.agent_a1.user_id));
    assert_eq!(refusal.event.impersonator, Some(format!("user:{}", admin.user_id)));
    world.admin.execute(&principal.caller, AdminCommand::StopImpersonation).await.expect("stopped");
    let back = world.admin.authenticate(&admin.token, None).await.expect("session");
    assert_eq!((back.caller.user_id, back.caller.impersonator), (admin.user_id, None));
    // Impersonating someone with more rights is taking them over.
    let up = world.as_(admin, AdminCommand::StartImpersonation { user_id: world.root.user_id }).await;
    assert!(matches!(up, Err(AdminError::Forbidden(_))), "{up:?}");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_tenant_may_require_a_verification_code_before_impersonation(pool: PgPool) {
    let world = World::build(pool).await;
    let require = TenantCommand::SetImpersonationVerification { required: true };
    world
        .as_(&world.root, AdminCommand::Tenant { tenant_id: world.tenant_a, command: require })
        .await
        .expect("required");
    let admin = &world.admin_a;
    world.as_(admin, AdminCommand::StartImpersonation { user_id: world.agent_a1.user_id }).await.expect("requested");
    assert_eq!(
        world.admin.authenticate(&admin.token, None).await.expect("session").caller.impersonator,
        None,
        "not before the code"
    );
    let code = world.inbox.last_code().expect("a code was sent");
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let refused = world.as_(admin, AdminCommand::VerifyImpersonation { code: secret(wrong) }).await;
    assert!(matches!(refused, Err(AdminError::Invalid(_))), "{refused:?}");
    world.as_(admin, AdminCommand::VerifyImpersonation { code: secret(&code) }).await.expect("verified");
    let principal = world.admin.authenticate(&admin.token, None).await.expect("session");
    assert_eq!(principal.caller.impersonator, Some(admin.user_id));
}

async fn record_call(world: &World, extension: &str, user_id: Option<Uuid>) -> Uuid {
    let calls = CommandService::<Call>::new(world.log.clone(), ());
    let call_id = id();
    let start = CallStart {
        tenant_id: world.tenant_a,
        sip_call_id: format!("{call_id}@sbc.example"),
        direction: CallDirection::Inbound,
        participants: vec![],
        extension: Some(extension.to_owned()),
        user_id,
        site: "test".into(),
        recorder_node: "rec-1".into(),
        started_at: chrono::Utc::now(),
    };
    let meta = CommandMeta::system("recorder:rec-1").in_tenant(world.tenant_a);
    calls.execute(&call_id.to_string(), CallCommand::RecordCallStart { call_id, start }, meta).await.expect("call");
    call_id
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn assigning_a_call_to_all_similar_calls_assigns_every_unassigned_call_of_that_extension(pool: PgPool) {
    let world = World::build(pool).await;
    let similar = [
        record_call(&world, "5005", None).await,
        record_call(&world, "5005", None).await,
        record_call(&world, "5005", None).await,
    ];
    let other = record_call(&world, "6006", None).await;
    // A supervisor does not reach unassigned calls.
    let by_supervisor = AdminCommand::AssignCall {
        call_id: similar[0],
        user_id: world.agent_a1.user_id,
        extension: None,
        apply_to_similar: false,
    };
    assert!(matches!(world.as_(&world.supervisor_a, by_supervisor).await, Err(AdminError::Forbidden(_))));
    let assign = AdminCommand::AssignCall {
        call_id: similar[0],
        user_id: world.agent_a1.user_id,
        extension: None,
        apply_to_similar: true,
    };
    world.as_(&world.admin_a, assign).await.expect("assigned");
    let calls = CommandService::<Call>::new(world.log.clone(), ());
    for call in similar {
        assert_eq!(calls.load(&call.to_string()).await.expect("call").user_id(), Some(world.agent_a1.user_id));
    }
    assert_eq!(calls.load(&other.to_string()).await.expect("call").user_id(), None);
    let holder =
        world.admin.index().holder(&IndexKey::new(Namespace::Extension(world.tenant_a), "5005")).await.expect("index");
    assert_eq!(
        holder.map(|h| h.aggregate_id),
        Some(world.agent_a1.user_id.to_string()),
        "the extension joined the profile"
    );
    let left =
        world.admin.index().with_prefix(&Namespace::UnassignedCalls(world.tenant_a), "5005/", 10).await.expect("index");
    assert!(left.is_empty(), "{left:?}");
    // A call of another tenant's user cannot be assigned to this tenant's user.
    let foreign = AdminCommand::AssignCall {
        call_id: other,
        user_id: world.agent_b.user_id,
        extension: None,
        apply_to_similar: false,
    };
    assert!(world.as_(&world.root, foreign).await.is_err());
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn storage_credentials_are_sealed_outside_the_log_kept_on_edit_and_destroyed_on_purge(pool: PgPool) {
    let world = World::build(pool.clone()).await;
    let target_id = id();
    let secret_key = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
    let s3 = |key: Option<&str>| StorageSettings::S3 {
        endpoint: Some("http://127.0.0.1:9".into()),
        region: "us-east-1".into(),
        bucket: "recordings".into(),
        prefix: None,
        access_key_id: "AKIAIOSFODNN7EXAMPLE".into(),
        secret_access_key: key.map(secret),
        path_style: true,
    };
    let storage = |request| AdminCommand::StorageTarget { target_id, request };
    let add =
        StorageTargetRequest::Add { tenant_id: world.tenant_a, name: "Archive".into(), settings: s3(Some(secret_key)) };
    world.as_(&world.admin_a, storage(add)).await.expect("added");
    let missing = StorageTargetRequest::Add { tenant_id: world.tenant_a, name: "Other".into(), settings: s3(None) };
    let refused = world.as_(&world.admin_a, AdminCommand::StorageTarget { target_id: id(), request: missing }).await;
    assert!(matches!(refused, Err(AdminError::Invalid(_))), "{refused:?}");
    let edit = StorageTargetRequest::Edit { name: "Archive 2".into(), settings: s3(None) };
    world.as_(&world.admin_a, storage(edit)).await.expect("edited, secret kept");
    for event in all_events(&world).await {
        assert!(!event.event.payload.contains(secret_key), "the secret key in {}", event.event.event_type);
    }
    let sealed: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT value FROM secrets WHERE kind = 'storage_credential' AND value IS NOT NULL")
            .fetch_all(&pool)
            .await
            .expect("secrets");
    assert_eq!(sealed.len(), 1, "the kept secret is the only one");
    assert!(!sealed[0].windows(secret_key.len()).any(|w| w == secret_key.as_bytes()), "sealed, not in clear");
    // The connection test runs and records its result (nothing listens on port 9).
    world.as_(&world.admin_a, storage(StorageTargetRequest::Test)).await.expect("tested");
    let tested = events_of(&world, "StorageTarget", target_id).await;
    let last = tested.last().expect("events").event.payload_json().expect("payload");
    assert_eq!(last["StorageTargetTested"]["ok"], false, "{last}");
    world.as_(&world.admin_a, storage(StorageTargetRequest::Delete)).await.expect("deleted");
    world.as_(&world.admin_a, storage(StorageTargetRequest::Restore)).await.expect("undone");
    world.as_(&world.admin_a, storage(StorageTargetRequest::Delete)).await.expect("deleted");
    world.as_(&world.admin_a, storage(StorageTargetRequest::Purge)).await.expect("purged");
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM secrets WHERE kind = 'storage_credential' AND value IS NOT NULL")
            .fetch_one(&pool)
            .await
            .expect("count");
    assert_eq!(left, 0, "purging destroys the credentials");
}

fn form(name: &str) -> FormDefinition {
    let answers = || vec![Answer { text: "Yes".into(), score_bp: 10_000 }, Answer { text: "No".into(), score_bp: 0 }];
    FormDefinition {
        name: name.into(),
        description: None,
        sections: vec![Section {
            title: "Greeting".into(),
            questions: vec![
                Question { text: "Greeted the caller?".into(), weight_bp: 4_000, answers: answers() },
                Question { text: "Said their name?".into(), weight_bp: 6_000, answers: answers() },
            ],
        }],
    }
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn evaluation_forms_are_created_cloned_and_undeleted_within_their_tenant(pool: PgPool) {
    let world = World::build(pool).await;
    let form_id = id();
    let create = EvaluationFormRequest::Create { tenant_id: world.tenant_a, definition: form("Quality") };
    world.as_(&world.admin_a, AdminCommand::EvaluationForm { form_id, request: create }).await.expect("created");
    let copy = id();
    let clone = EvaluationFormRequest::Clone { source_id: form_id, name: "Quality (copy)".into() };
    world.as_(&world.admin_a, AdminCommand::EvaluationForm { form_id: copy, request: clone }).await.expect("cloned");
    let from_b = EvaluationFormRequest::Clone { source_id: form_id, name: "Stolen".into() };
    assert!(matches!(
        world.as_(&world.admin_b, AdminCommand::EvaluationForm { form_id: id(), request: from_b }).await,
        Err(AdminError::Forbidden(_))
    ));
    let clone_again = EvaluationFormRequest::Clone { source_id: form_id, name: "quality (COPY)".into() };
    assert!(matches!(
        world.as_(&world.admin_a, AdminCommand::EvaluationForm { form_id: id(), request: clone_again }).await,
        Err(AdminError::Taken(_))
    ));
    let mut bad = form("Broken");
    bad.sections[0].questions[0].weight_bp = 3_999;
    let invalid = world
        .as_(
            &world.admin_a,
            AdminCommand::EvaluationForm {
                form_id: id(),
                request: EvaluationFormRequest::Create { tenant_id: world.tenant_a, definition: bad },
            },
        )
        .await;
    assert!(matches!(invalid, Err(AdminError::Invalid(_))), "{invalid:?}");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn every_aggregate_rebuilt_from_the_log_equals_its_loaded_state(pool: PgPool) {
    let world = World::build(pool).await;
    world
        .as_(&world.admin_a, user(world.agent_a1.user_id, UserRequest::AddExtension { extension: "7007".into() }))
        .await
        .expect("ok");
    world
        .as_(
            &world.admin_a,
            user(world.agent_a1.user_id, UserRequest::SetGroups { groups: vec![world.group_a2, world.group_a1] }),
        )
        .await
        .expect("ok");
    let users = CommandService::<recall_domain::user::User>::new(world.log.clone(), ());
    let events = all_events(&world).await;
    let mut checked = 0;
    for person in [
        &world.admin_a,
        &world.supervisor_a,
        &world.agent_a1,
        &world.agent_a2,
        &world.admin_b,
        &world.agent_b,
        &world.root,
    ] {
        let mut rebuilt = recall_domain::user::User::default();
        for logged in events
            .iter()
            .filter(|e| e.event.aggregate_type == "User" && e.event.aggregate_id == person.user_id.to_string())
        {
            let event: recall_domain::user::UserEvent =
                serde_json::from_str(&logged.event.payload).expect("a user event");
            recall_domain::Aggregate::apply(&mut rebuilt, event);
            checked += 1;
        }
        assert_eq!(rebuilt, users.load(&person.user_id.to_string()).await.expect("load"), "{}", person.username);
    }
    assert!(checked >= 9);
    let _: &Person = &world.root;
}
