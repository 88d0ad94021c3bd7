//! File-encryption key custody through the administration service, against a real Postgres: who may
//! generate, import, grant, revoke, export, activate and destroy a tenant's key; what sign-in, a password
//! change and an administrator's reset do to a user's key pair; and that no key material reaches the log.

mod common;

use std::time::Duration;

use common::world::{id, secret, Person, World, PASSWORD};
use recall_commands::admin::{AdminCommand, AdminError, Done, EncryptionKeyRequest, UserRequest};
use recall_commands::LoggedEvent;
use recall_crypto::file::{decrypt_in_memory, FileSealer};
use recall_crypto::KeyImport;
use recall_domain::tenant::TenantCommand;
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use uuid::Uuid;

fn key(key_id: Uuid, request: EncryptionKeyRequest) -> AdminCommand {
    AdminCommand::EncryptionKey { key_id, request }
}

async fn generate(world: &World, who: &Person, tenant_id: Uuid, name: &str) -> Result<Uuid, AdminError> {
    let key_id = id();
    world.as_(who, key(key_id, EncryptionKeyRequest::Generate { tenant_id, name: name.to_owned() })).await?;
    Ok(key_id)
}

async fn grant(world: &World, by: &Person, key_id: Uuid, user_id: Uuid) -> Result<Done, AdminError> {
    world.as_(by, key(key_id, EncryptionKeyRequest::Grant { user_id })).await
}

async fn events(world: &World) -> Vec<LoggedEvent> {
    common::wait_until_sequenced(&world.log, Duration::from_secs(20)).await;
    common::read_all(&world.log).await
}

/// A file written under the key's public part reads back with what `who` opens from their grant.
async fn can_play(world: &World, who: &Person, key_id: Uuid) -> Result<(), AdminError> {
    let private = world.admin.open_tenant_key(&who.caller, key_id).await?;
    let (mut sealer, mut stored) = FileSealer::new(&private.public(), key_id, Uuid::now_v7()).expect("sealer");
    sealer.push(b"a recorded call", &mut stored).expect("push");
    sealer.finish(&[], &mut stored).expect("finish");
    assert_eq!(*decrypt_in_memory(&stored, &private, None).expect("decrypts"), b"a recorded call");
    Ok(())
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn the_creator_of_a_key_holds_it_and_grants_it_to_whom_they_choose(pool: PgPool) {
    let world = World::build(pool).await;
    let key_id = generate(&world, &world.admin_a, world.tenant_a, "Main key").await.expect("generated");
    can_play(&world, &world.admin_a, key_id).await.expect("the creator holds the key");
    let refused = can_play(&world, &world.supervisor_a, key_id).await;
    assert!(matches!(refused, Err(AdminError::Forbidden(_))), "{refused:?}");

    grant(&world, &world.admin_a, key_id, world.supervisor_a.user_id).await.expect("granted");
    can_play(&world, &world.supervisor_a, key_id).await.expect("the grantee opens the key");
    let again = grant(&world, &world.admin_a, key_id, world.supervisor_a.user_id).await.expect("granted again");
    assert!(again.receipts.is_empty(), "granting to a holder is no event");

    let types: Vec<String> = events(&world)
        .await
        .into_iter()
        .filter(|e| e.event.aggregate_type == "EncryptionKey")
        .map(|e| e.event.event_type)
        .collect();
    assert_eq!(types, ["EncryptionKeyGenerated", "EncryptionKeyGranted", "EncryptionKeyGranted"]);
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_root_administrator_without_a_grant_cannot_grant_or_export_the_key(pool: PgPool) {
    let world = World::build(pool).await;
    let key_id = generate(&world, &world.admin_a, world.tenant_a, "Main key").await.expect("generated");
    let refused = grant(&world, &world.root, key_id, world.root.user_id).await;
    assert!(matches!(refused, Err(AdminError::Forbidden(_))), "{refused:?}");
    let export = EncryptionKeyRequest::Export { passphrase: Some(secret("a long export passphrase")) };
    let refused = world.as_(&world.root, key(key_id, export)).await;
    assert!(matches!(refused, Err(AdminError::Forbidden(_))), "{refused:?}");
    let refused = can_play(&world, &world.root, key_id).await;
    assert!(matches!(refused, Err(AdminError::Forbidden(_))), "{refused:?}");
    // The public part is no secret: anyone who manages keys may export it.
    let public =
        world.as_(&world.root, key(key_id, EncryptionKeyRequest::Export { passphrase: None })).await.expect("public");
    assert!(public.issued.expect("pem").expose_secret().starts_with("-----BEGIN PUBLIC KEY-----"));
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn roles_and_tenants_bound_who_may_manage_keys(pool: PgPool) {
    let world = World::build(pool).await;
    let refused = generate(&world, &world.supervisor_a, world.tenant_a, "Supervisor's key").await;
    assert!(matches!(refused, Err(AdminError::Forbidden(_))), "{refused:?}");
    let refused = generate(&world, &world.admin_b, world.tenant_a, "Another tenant's key").await;
    assert!(matches!(refused, Err(AdminError::Forbidden(_))), "{refused:?}");
    let key_id = generate(&world, &world.admin_a, world.tenant_a, "Main key").await.expect("generated");
    let refused = grant(&world, &world.admin_a, key_id, world.agent_b.user_id).await;
    assert!(matches!(refused, Err(AdminError::Invalid(_))), "a user of another tenant: {refused:?}");
    let refused = grant(&world, &world.admin_b, key_id, world.admin_b.user_id).await;
    assert!(matches!(refused, Err(AdminError::Forbidden(_))), "{refused:?}");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_revoked_grant_stops_playback_at_once_even_in_a_session_that_opened_the_key(pool: PgPool) {
    let world = World::build(pool).await;
    let key_id = generate(&world, &world.admin_a, world.tenant_a, "Main key").await.expect("generated");
    grant(&world, &world.admin_a, key_id, world.agent_a1.user_id).await.expect("granted");
    can_play(&world, &world.agent_a1, key_id).await.expect("opens");
    world
        .as_(&world.admin_a, key(key_id, EncryptionKeyRequest::Revoke { user_id: world.agent_a1.user_id }))
        .await
        .expect("revoked");
    let refused = can_play(&world, &world.agent_a1, key_id).await;
    assert!(matches!(refused, Err(AdminError::Forbidden(_))), "{refused:?}");
    let refused =
        world.as_(&world.admin_a, key(key_id, EncryptionKeyRequest::Revoke { user_id: world.agent_a1.user_id })).await;
    assert!(matches!(refused, Err(AdminError::Invalid(_))), "revoking twice: {refused:?}");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_sessions_data_keys_are_unwrapped_once_and_gone_with_the_grant(pool: PgPool) {
    let world = World::build(pool).await;
    let key_id = generate(&world, &world.admin_a, world.tenant_a, "Main key").await.expect("generated");
    grant(&world, &world.admin_a, key_id, world.agent_a1.user_id).await.expect("granted");
    let public = world.admin.open_tenant_key(&world.admin_a.caller, key_id).await.expect("opens").public();
    let (mut sealer, mut stored) = FileSealer::new(&public, key_id, Uuid::now_v7()).expect("sealer");
    sealer.push(b"a recorded call", &mut stored).expect("push");
    sealer.finish(&[], &mut stored).expect("finish");
    let header = recall_crypto::file::FileHeader::parse(&stored).expect("a header");
    let (agent, admin) = (&world.agent_a1.caller, &world.admin_a.caller);
    let first = world.admin.open_data_key(agent, key_id, &header).await.expect("allowed").expect("unwraps");
    let again = world.admin.open_data_key(agent, key_id, &header).await.expect("allowed").expect("unwraps");
    assert!(std::sync::Arc::ptr_eq(&first, &again), "the second range request reuses the unwrapped key");
    // Another session of someone else unwraps its own copy.
    let other = world.admin.open_data_key(admin, key_id, &header).await.expect("allowed").expect("unwraps");
    assert!(!std::sync::Arc::ptr_eq(&first, &other));
    world
        .as_(&world.admin_a, key(key_id, EncryptionKeyRequest::Revoke { user_id: world.agent_a1.user_id }))
        .await
        .expect("revoked");
    let refused = world.admin.open_data_key(agent, key_id, &header).await.map(|_| ());
    assert!(matches!(refused, Err(AdminError::Forbidden(_))), "no cached key outlives the grant: {refused:?}");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn an_administrators_password_reset_destroys_the_users_grants_and_a_new_grant_works_after_sign_in(pool: PgPool) {
    let world = World::build(pool).await;
    let key_id = generate(&world, &world.admin_a, world.tenant_a, "Main key").await.expect("generated");
    let supervisor = world.supervisor_a.user_id;
    grant(&world, &world.admin_a, key_id, supervisor).await.expect("granted");
    let reset = UserRequest::SetPassword { password: secret("a brand new password 1"), must_change: false };
    world.as_(&world.admin_a, AdminCommand::User { user_id: supervisor, request: reset }).await.expect("reset");
    let refused = can_play(&world, &world.supervisor_a, key_id).await;
    assert!(matches!(refused, Err(AdminError::Forbidden(_))), "the old session's key is gone: {refused:?}");
    let revoked: Vec<serde_json::Value> = events(&world)
        .await
        .into_iter()
        .filter(|e| e.event.event_type == "EncryptionKeyGrantRevoked")
        .map(|e| e.event.payload_json().expect("payload"))
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(revoked[0]["EncryptionKeyGrantRevoked"]["reason"], "password_reset");
    // Until the user signs in again there is no key pair to grant to.
    let refused = grant(&world, &world.admin_a, key_id, supervisor).await;
    assert!(matches!(refused, Err(AdminError::Invalid(_))), "{refused:?}");
    let again = sign_in_with(&world, supervisor, "supervisor-a", "a brand new password 1").await;
    grant(&world, &world.admin_a, key_id, supervisor).await.expect("granted again");
    can_play(&world, &again, key_id).await.expect("plays again");
}

async fn sign_in_with(world: &World, user_id: Uuid, username: &str, password: &str) -> Person {
    let signed_in = world
        .admin
        .sign_in(recall_commands::admin::SignInRequest {
            username: username.to_owned(),
            password: secret(password),
            device_id: None,
            device_label: "test browser".to_owned(),
            source_addr: None,
        })
        .await
        .expect("signs in");
    let token = signed_in.token.expose_secret().to_owned();
    let principal = world.admin.authenticate(&token, None).await.expect("recognised");
    Person { user_id, username: username.to_owned(), caller: principal.caller, token }
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn a_users_own_password_change_keeps_their_keys(pool: PgPool) {
    let world = World::build(pool).await;
    let key_id = generate(&world, &world.admin_a, world.tenant_a, "Main key").await.expect("generated");
    let change =
        AdminCommand::ChangeOwnPassword { current: secret(PASSWORD), new: secret("an entirely new passphrase 7") };
    world.as_(&world.admin_a, change).await.expect("changed");
    let again = sign_in_with(&world, world.admin_a.user_id, "admin-a", "an entirely new passphrase 7").await;
    can_play(&world, &again, key_id).await.expect("the key pair opens with the new password");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn an_exported_key_imports_elsewhere_and_a_public_import_records_without_playing(pool: PgPool) {
    let world = World::build(pool).await;
    let key_id = generate(&world, &world.admin_a, world.tenant_a, "Main key").await.expect("generated");
    let short = EncryptionKeyRequest::Export { passphrase: Some(secret("short")) };
    assert!(matches!(world.as_(&world.admin_a, key(key_id, short)).await, Err(AdminError::Invalid(_))));
    let passphrase = "export passphrase for the vault";
    let export = EncryptionKeyRequest::Export { passphrase: Some(secret(passphrase)) };
    let pem = world.as_(&world.admin_a, key(key_id, export)).await.expect("exported").issued.expect("pem");
    assert!(pem.expose_secret().starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let original = world.admin.open_tenant_key(&world.admin_a.caller, key_id).await.expect("open");
    let imported = KeyImport::from_pem(pem.expose_secret(), Some(passphrase)).expect("imports");
    assert_eq!(imported.public, original.public());

    // The same key brought into tenant B with its private part: admin B holds it there.
    let copy = id();
    let import = EncryptionKeyRequest::Import {
        tenant_id: world.tenant_b,
        name: "Restored key".to_owned(),
        pem: pem.clone(),
        passphrase: Some(secret(passphrase)),
    };
    world.as_(&world.admin_b, key(copy, import)).await.expect("imported");
    can_play(&world, &world.admin_b, copy).await.expect("the importer holds it");
    let wrong = EncryptionKeyRequest::Import {
        tenant_id: world.tenant_b,
        name: "Wrong passphrase".to_owned(),
        pem: pem.clone(),
        passphrase: Some(secret("not it")),
    };
    assert!(matches!(world.as_(&world.admin_b, key(id(), wrong)).await, Err(AdminError::Invalid(_))));

    // Only the public part: the tenant can record with it, nobody can play.
    let public_only = id();
    let import = EncryptionKeyRequest::Import {
        tenant_id: world.tenant_b,
        name: "Public only".to_owned(),
        pem: SecretString::from(original.public().to_pem()),
        passphrase: None,
    };
    world.as_(&world.admin_b, key(public_only, import)).await.expect("imported");
    let refused = can_play(&world, &world.admin_b, public_only).await;
    assert!(matches!(refused, Err(AdminError::Forbidden(_))), "{refused:?}");
    let activate = world.as_(&world.admin_b, key(public_only, EncryptionKeyRequest::Activate)).await;
    activate.expect("a public key is enough to record with");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn encryption_needs_an_active_key_and_the_key_in_use_cannot_be_destroyed(pool: PgPool) {
    let world = World::build(pool).await;
    let tenant_a = world.tenant_a;
    let switch_on =
        || AdminCommand::Tenant { tenant_id: tenant_a, command: TenantCommand::SetFileEncryption { enabled: true } };
    let refused = world.as_(&world.admin_a, switch_on()).await;
    assert!(matches!(refused, Err(AdminError::Invalid(_))), "{refused:?}");
    let key_id = generate(&world, &world.admin_a, world.tenant_a, "Main key").await.expect("generated");
    world.as_(&world.admin_a, key(key_id, EncryptionKeyRequest::Activate)).await.expect("activated");
    world.as_(&world.admin_a, switch_on()).await.expect("switched on");
    let refused = world.as_(&world.admin_a, key(key_id, EncryptionKeyRequest::Destroy)).await;
    assert!(matches!(refused, Err(AdminError::Invalid(_))), "{refused:?}");
    can_play(&world, &world.admin_a, key_id).await.expect("still there");

    // Rotation: a second key becomes the active one; the first can then be destroyed (crypto-shredding).
    let second = generate(&world, &world.admin_a, world.tenant_a, "Second key").await.expect("generated");
    world.as_(&world.admin_a, key(second, EncryptionKeyRequest::Activate)).await.expect("rotated");
    world.as_(&world.admin_a, key(key_id, EncryptionKeyRequest::Destroy)).await.expect("destroyed");
    let gone = can_play(&world, &world.admin_a, key_id).await;
    assert!(matches!(gone, Err(AdminError::NotFound(_))), "{gone:?}");
    let grants: i64 = sqlx::query_scalar("SELECT count(*) FROM key_grants WHERE key_id = $1")
        .bind(key_id)
        .fetch_one(world.log.pool())
        .await
        .expect("count");
    assert_eq!(grants, 0, "no sealed copy of the destroyed key is left");
    // A key of another tenant cannot be activated.
    let other = generate(&world, &world.admin_b, world.tenant_b, "B key").await.expect("generated");
    let raw = TenantCommand::UseEncryptionKey {
        tenant_id: world.tenant_a,
        key_id: other,
        key_tenant: world.tenant_a,
        key_destroyed: false,
    };
    let refused = world.as_(&world.root, AdminCommand::Tenant { tenant_id: world.tenant_a, command: raw }).await;
    assert!(matches!(refused, Err(AdminError::Invalid(_))), "the caller's facts are not trusted: {refused:?}");
}

#[sqlx::test(migrator = "recall_migrations::MIGRATOR")]
async fn no_key_material_or_password_reaches_the_log(pool: PgPool) {
    let world = World::build(pool).await;
    let key_id = generate(&world, &world.admin_a, world.tenant_a, "Main key").await.expect("generated");
    grant(&world, &world.admin_a, key_id, world.supervisor_a.user_id).await.expect("granted");
    let passphrase = "vault passphrase number nine";
    let export = EncryptionKeyRequest::Export { passphrase: Some(secret(passphrase)) };
    let pem = world.as_(&world.admin_a, key(key_id, export)).await.expect("exported").issued.expect("pem");
    let private = world.admin.open_tenant_key(&world.admin_a.caller, key_id).await.expect("open");
    let public_pem = private.public().to_pem();
    // Every base64 line of the PEMs, the passwords and the passphrase are checked against every event.
    let mut needles: Vec<String> =
        pem.expose_secret().lines().filter(|l| !l.starts_with("-----")).map(str::to_owned).collect();
    needles.extend(public_pem.lines().filter(|l| !l.starts_with("-----") && l.len() > 40).map(str::to_owned));
    needles.push(passphrase.to_owned());
    needles.push(PASSWORD.to_owned());
    let sealed: Vec<String> =
        sqlx::query_scalar("SELECT sealed::text FROM key_grants UNION ALL SELECT sealed::text FROM user_keys")
            .fetch_all(world.log.pool())
            .await
            .expect("sealed rows");
    for row in &sealed {
        let value: serde_json::Value = serde_json::from_str(row).expect("json");
        for field in ["sealed_private_key", "wrapped_key"] {
            if let Some(hex) = value[field].as_str() {
                needles.push(hex[..64].to_owned());
            }
        }
    }
    assert!(needles.len() > 20);
    let all = events(&world).await;
    assert!(all.len() > 20);
    for event in &all {
        let text = format!("{} {}", event.event.payload, event.event.metadata);
        for needle in &needles {
            assert!(!text.contains(needle.as_str()), "{} holds key material or a password", event.event.event_type);
        }
    }
}
