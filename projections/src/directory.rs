//! The directory: the read model of administration (tenants, roles, groups, users, sessions, devices,
//! storage targets, encryption keys, custom fields, field visibility, evaluation forms), one table each in `rm_directory`.
//! Rows keep the id, the tenant and the columns the API filters on; nothing secret is in the log, so
//! nothing secret is here (credentials appear only as "set").

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use recall_commands::LoggedEvent;
use recall_domain::api_token::ApiTokenEvent;
use recall_domain::custom_field::CustomFieldEvent;
use recall_domain::device::DeviceEvent;
use recall_domain::encryption_key::EncryptionKeyEvent;
use recall_domain::evaluation_form::EvaluationFormEvent;
use recall_domain::field_visibility::FieldVisibilityEvent;
use recall_domain::group::GroupEvent;
use recall_domain::role::RoleEvent;
use recall_domain::session::SessionEvent;
use recall_domain::storage_target::StorageTargetEvent;
use recall_domain::tenant::TenantEvent;
use recall_domain::user::UserEvent;
use serde::Serialize;
use serde_json::Value;
use sqlx::postgres::Postgres;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{payload, Projection, ProjectionError};

#[derive(Debug)]
pub struct Directory;

/// A serde enum's name as stored (`on_demand`, `service_wide`, …).
pub(crate) fn text<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => String::new(),
    }
}

fn json<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

fn aggregate_id(event: &LoggedEvent) -> Result<Uuid, ProjectionError> {
    Uuid::parse_str(&event.event.aggregate_id).map_err(|e| ProjectionError::unreadable(event, e))
}

impl Projection for Directory {
    fn name(&self) -> &'static str {
        "directory"
    }

    fn version(&self) -> i32 {
        4
    }

    fn create(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE {s}.tenants (
                    tenant_id uuid PRIMARY KEY, name text NOT NULL, timezone text NOT NULL,
                    default_record text NOT NULL, default_direction text NOT NULL, unassigned_calls text NOT NULL,
                    storage_option text NOT NULL, file_encryption boolean NOT NULL, audio_format text NOT NULL,
                    recordings_days integer, audit_days integer NOT NULL DEFAULT 365,
                    impersonation_verification boolean NOT NULL DEFAULT false, active boolean NOT NULL,
                    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
                    recording_networks text[] NOT NULL DEFAULT '{{}}', sip_domains text[] NOT NULL DEFAULT '{{}}',
                    encryption_key_id uuid)"
            ),
            format!("CREATE UNIQUE INDEX ON {s}.tenants (lower(name))"),
            format!(
                "CREATE TABLE {s}.roles (
                    role_id uuid PRIMARY KEY, name text NOT NULL, scope text NOT NULL, permissions text[] NOT NULL,
                    predefined text, deleted boolean NOT NULL DEFAULT false,
                    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"
            ),
            format!(
                "CREATE TABLE {s}.groups (
                    group_id uuid PRIMARY KEY, tenant_id uuid NOT NULL, name text NOT NULL, timezone text,
                    deleted boolean NOT NULL DEFAULT false, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"
            ),
            format!("CREATE INDEX ON {s}.groups (tenant_id, lower(name))"),
            format!(
                "CREATE TABLE {s}.users (
                    user_id uuid PRIMARY KEY, tenant_id uuid, username text NOT NULL, full_name text, email text,
                    timezone text, active boolean NOT NULL, role_id uuid NOT NULL, groups uuid[] NOT NULL,
                    managed_groups uuid[] NOT NULL, record_mode text NOT NULL, record_direction text NOT NULL,
                    extensions text[] NOT NULL, login_enabled boolean NOT NULL, has_password boolean NOT NULL,
                    must_change_password boolean NOT NULL, screen_login text, screen_domain text,
                    licence_audio boolean NOT NULL, licence_screen boolean NOT NULL, licence_evaluate boolean NOT NULL,
                    last_sign_in_at timestamptz, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL,
                    key_fingerprint text)"
            ),
            format!("CREATE INDEX ON {s}.users (tenant_id, lower(username))"),
            format!("CREATE INDEX ON {s}.users USING gin (groups)"),
            format!("CREATE INDEX ON {s}.users USING gin (extensions)"),
            format!("CREATE INDEX ON {s}.users (role_id)"),
            format!(
                "CREATE TABLE {s}.sessions (
                    session_id uuid PRIMARY KEY, user_id uuid NOT NULL, tenant_id uuid, device_id uuid NOT NULL,
                    source_addr inet, started_at timestamptz NOT NULL, expires_at timestamptz NOT NULL,
                    ended_at timestamptz, end_reason text, impersonating uuid)"
            ),
            format!("CREATE INDEX ON {s}.sessions (user_id, started_at DESC)"),
            format!(
                "CREATE TABLE {s}.devices (
                    device_id uuid PRIMARY KEY, user_id uuid NOT NULL, tenant_id uuid, label text NOT NULL,
                    registered_at timestamptz NOT NULL, last_used_at timestamptz, revoked_at timestamptz)"
            ),
            format!("CREATE INDEX ON {s}.devices (user_id)"),
            format!(
                "CREATE TABLE {s}.storage_targets (
                    target_id uuid PRIMARY KEY, tenant_id uuid NOT NULL, name text NOT NULL, kind text NOT NULL,
                    settings jsonb NOT NULL, state text NOT NULL, last_test_ok boolean, last_test_detail text,
                    last_tested_at timestamptz, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"
            ),
            format!("CREATE INDEX ON {s}.storage_targets (tenant_id)"),
            format!(
                "CREATE TABLE {s}.encryption_keys (
                    key_id uuid PRIMARY KEY, tenant_id uuid NOT NULL, name text NOT NULL, fingerprint text NOT NULL,
                    origin text NOT NULL, with_private boolean NOT NULL, holders uuid[] NOT NULL DEFAULT '{{}}',
                    last_exported_at timestamptz, destroyed_at timestamptz,
                    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"
            ),
            format!("CREATE INDEX ON {s}.encryption_keys (tenant_id)"),
            format!("CREATE INDEX ON {s}.encryption_keys USING gin (holders)"),
            format!(
                "CREATE TABLE {s}.custom_fields (
                    field_id uuid PRIMARY KEY, tenant_id uuid NOT NULL, name text NOT NULL, definition jsonb NOT NULL,
                    state text NOT NULL, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"
            ),
            format!("CREATE INDEX ON {s}.custom_fields (tenant_id)"),
            format!(
                "CREATE TABLE {s}.field_visibility (
                    tenant_id uuid NOT NULL, layout text NOT NULL, hidden text[] NOT NULL,
                    updated_at timestamptz NOT NULL, PRIMARY KEY (tenant_id, layout))"
            ),
            format!(
                "CREATE TABLE {s}.evaluation_forms (
                    form_id uuid PRIMARY KEY, tenant_id uuid NOT NULL, name text NOT NULL, definition jsonb NOT NULL,
                    version integer NOT NULL, cloned_from uuid, state text NOT NULL,
                    created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"
            ),
            format!("CREATE INDEX ON {s}.evaluation_forms (tenant_id)"),
            format!(
                "CREATE TABLE {s}.api_tokens (
                    token_id uuid PRIMARY KEY, user_id uuid NOT NULL, tenant_id uuid, name text NOT NULL,
                    issued_at timestamptz NOT NULL, expires_at timestamptz, revoked_at timestamptz)"
            ),
            format!("CREATE INDEX ON {s}.api_tokens (user_id)"),
        ]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        schema: &'a str,
        events: &'a [LoggedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            for event in events {
                let at = event.event.recorded_at;
                match event.event.aggregate_type.as_str() {
                    "Tenant" => tenant(conn, schema, aggregate_id(event)?, payload(event)?, at).await?,
                    "Role" => role(conn, schema, aggregate_id(event)?, payload(event)?, at).await?,
                    "Group" => group(conn, schema, aggregate_id(event)?, payload(event)?, at).await?,
                    "User" => user(conn, schema, aggregate_id(event)?, payload(event)?, at).await?,
                    "Session" => session(conn, schema, event, aggregate_id(event)?, payload(event)?).await?,
                    "Device" => device(conn, schema, aggregate_id(event)?, payload(event)?).await?,
                    "StorageTarget" => storage_target(conn, schema, aggregate_id(event)?, payload(event)?, at).await?,
                    "EncryptionKey" => encryption_key(conn, schema, aggregate_id(event)?, payload(event)?, at).await?,
                    "CustomField" => custom_field(conn, schema, aggregate_id(event)?, payload(event)?, at).await?,
                    "FieldVisibility" => field_visibility(conn, schema, payload(event)?, at).await?,
                    "EvaluationForm" => {
                        evaluation_form(conn, schema, aggregate_id(event)?, payload(event)?, at).await?
                    }
                    "ApiToken" => api_token(conn, schema, aggregate_id(event)?, payload(event)?).await?,
                    _ => {}
                }
            }
            Ok(())
        })
    }
}

/// `UPDATE <table> SET <assignment>, updated_at = $3 WHERE <key> = $1` with `$2` bound to `value`.
async fn set<T>(
    conn: &mut PgConnection,
    sql: String,
    id: Uuid,
    value: T,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError>
where
    T: Send + for<'q> sqlx::Encode<'q, Postgres> + sqlx::Type<Postgres>,
{
    sqlx::query(&sql).bind(id).bind(value).bind(at).execute(conn).await?;
    Ok(())
}

async fn tenant(
    conn: &mut PgConnection,
    s: &str,
    id: Uuid,
    event: TenantEvent,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let upd = |assignment: &str| format!("UPDATE {s}.tenants SET {assignment}, updated_at = $3 WHERE tenant_id = $1");
    match event {
        TenantEvent::TenantCreated(t) => {
            sqlx::query(&format!(
                "INSERT INTO {s}.tenants (tenant_id, name, timezone, default_record, default_direction, unassigned_calls,
                     storage_option, file_encryption, audio_format, active, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, true, $10, $10) ON CONFLICT (tenant_id) DO NOTHING"
            ))
            .bind(id)
            .bind(&t.name)
            .bind(&t.timezone)
            .bind(text(&t.default_rule.record))
            .bind(text(&t.default_rule.direction))
            .bind(text(&t.default_rule.unassigned_calls))
            .bind(text(&t.storage))
            .bind(t.file_encryption)
            .bind(text(&t.audio_format))
            .bind(at)
            .execute(conn)
            .await?;
        }
        TenantEvent::TenantRenamed { name } => set(conn, upd("name = $2"), id, name, at).await?,
        TenantEvent::TenantTimezoneChanged { timezone } => set(conn, upd("timezone = $2"), id, timezone, at).await?,
        TenantEvent::DefaultRecordingRuleChanged { rule } => {
            let values = vec![text(&rule.record), text(&rule.direction), text(&rule.unassigned_calls)];
            let sql = upd("default_record = $2[1], default_direction = $2[2], unassigned_calls = $2[3]");
            set(conn, sql, id, values, at).await?;
        }
        TenantEvent::StorageOptionChanged { option } => {
            set(conn, upd("storage_option = $2"), id, text(&option), at).await?
        }
        TenantEvent::FileEncryptionSwitched { enabled } => {
            set(conn, upd("file_encryption = $2"), id, enabled, at).await?
        }
        TenantEvent::EncryptionKeyActivated { key_id } => {
            set(conn, upd("encryption_key_id = $2"), id, key_id, at).await?
        }
        TenantEvent::EncryptionKeyDeactivated { .. } => {
            set(conn, upd("encryption_key_id = $2"), id, None::<Uuid>, at).await?
        }
        TenantEvent::AudioFormatChanged { format } => {
            set(conn, upd("audio_format = $2"), id, text(&format), at).await?
        }
        TenantEvent::RetentionPolicySet { policy } => {
            let days = [policy.recordings_days.map(i64::from), Some(i64::from(policy.audit_days))];
            set(conn, upd("recordings_days = $2[1], audit_days = $2[2]"), id, days.to_vec(), at).await?;
        }
        TenantEvent::ImpersonationVerificationSet { required } => {
            set(conn, upd("impersonation_verification = $2"), id, required, at).await?;
        }
        TenantEvent::RecordingClientsSet(clients) => {
            let networks: Vec<String> = clients.networks.iter().map(ToString::to_string).collect();
            sqlx::query(&upd("recording_networks = $2, sip_domains = $4"))
                .bind(id)
                .bind(networks)
                .bind(at)
                .bind(clients.sip_domains)
                .execute(conn)
                .await?;
        }
        TenantEvent::TenantDeactivated => set(conn, upd("active = $2"), id, false, at).await?,
        TenantEvent::TenantReactivated => set(conn, upd("active = $2"), id, true, at).await?,
    }
    Ok(())
}

async fn role(
    conn: &mut PgConnection,
    s: &str,
    id: Uuid,
    event: RoleEvent,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let upd = |assignment: &str| format!("UPDATE {s}.roles SET {assignment}, updated_at = $3 WHERE role_id = $1");
    let permissions = |grants: &recall_domain::access::Grants| -> Vec<String> {
        grants.permissions.iter().map(|p| p.name().to_owned()).collect()
    };
    match event {
        RoleEvent::RoleDefined { name, grants, predefined } => {
            sqlx::query(&format!(
                "INSERT INTO {s}.roles (role_id, name, scope, permissions, predefined, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $6) ON CONFLICT (role_id) DO NOTHING"
            ))
            .bind(id)
            .bind(name)
            .bind(text(&grants.scope))
            .bind(permissions(&grants))
            .bind(predefined.map(|p| text(&p)))
            .bind(at)
            .execute(conn)
            .await?;
        }
        RoleEvent::RoleRenamed { name } => set(conn, upd("name = $2"), id, name, at).await?,
        RoleEvent::RoleGrantsChanged { grants } => {
            let mut values = vec![text(&grants.scope)];
            values.extend(permissions(&grants));
            set(conn, upd("scope = $2[1], permissions = $2[2:]"), id, values, at).await?;
        }
        RoleEvent::RoleDeleted => set(conn, upd("deleted = $2"), id, true, at).await?,
    }
    Ok(())
}

async fn group(
    conn: &mut PgConnection,
    s: &str,
    id: Uuid,
    event: GroupEvent,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let upd = |assignment: &str| format!("UPDATE {s}.groups SET {assignment}, updated_at = $3 WHERE group_id = $1");
    match event {
        GroupEvent::GroupCreated { tenant_id, name, timezone } => {
            sqlx::query(&format!(
                "INSERT INTO {s}.groups (group_id, tenant_id, name, timezone, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (group_id) DO NOTHING"
            ))
            .bind(id)
            .bind(tenant_id)
            .bind(name)
            .bind(timezone)
            .bind(at)
            .execute(conn)
            .await?;
        }
        GroupEvent::GroupRenamed { name } => set(conn, upd("name = $2"), id, name, at).await?,
        GroupEvent::GroupTimezoneChanged { timezone } => set(conn, upd("timezone = $2"), id, timezone, at).await?,
        GroupEvent::GroupDeleted => set(conn, upd("deleted = $2"), id, true, at).await?,
    }
    Ok(())
}

async fn user(
    conn: &mut PgConnection,
    s: &str,
    id: Uuid,
    event: UserEvent,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let upd = |assignment: &str| format!("UPDATE {s}.users SET {assignment}, updated_at = $3 WHERE user_id = $1");
    match event {
        UserEvent::UserCreated { tenant_id, profile, .. } => {
            let p = *profile;
            sqlx::query(&format!(
                "INSERT INTO {s}.users (user_id, tenant_id, username, full_name, email, timezone, active, role_id, groups,
                     managed_groups, record_mode, record_direction, extensions, login_enabled, has_password,
                     must_change_password, screen_login, screen_domain, licence_audio, licence_screen, licence_evaluate,
                     created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21,
                     $22, $22) ON CONFLICT (user_id) DO NOTHING"
            ))
            .bind(id)
            .bind(tenant_id)
            .bind(&p.username)
            .bind(&p.full_name)
            .bind(&p.email)
            .bind(&p.timezone)
            .bind(p.active)
            .bind(p.role_id)
            .bind(&p.groups)
            .bind(p.managed_groups.iter().copied().collect::<Vec<_>>())
            .bind(text(&p.recording.record))
            .bind(text(&p.recording.direction))
            .bind(p.extensions.iter().cloned().collect::<Vec<_>>())
            .bind(p.login_enabled)
            .bind(p.password.is_some())
            .bind(p.must_change_password)
            .bind(p.screen_login.as_ref().map(|l| l.login.clone()))
            .bind(p.screen_login.as_ref().and_then(|l| l.domain.clone()))
            .bind(p.licences.audio)
            .bind(p.licences.screen)
            .bind(p.licences.evaluate)
            .bind(at)
            .execute(conn)
            .await?;
        }
        UserEvent::UserRenamed { username } => set(conn, upd("username = $2"), id, username, at).await?,
        UserEvent::FullNameChanged { full_name } => set(conn, upd("full_name = $2"), id, full_name, at).await?,
        UserEvent::EmailChanged { email } => set(conn, upd("email = $2"), id, email, at).await?,
        UserEvent::UserTimezoneChanged { timezone } => set(conn, upd("timezone = $2"), id, timezone, at).await?,
        UserEvent::UserActivated => set(conn, upd("active = $2"), id, true, at).await?,
        UserEvent::UserDeactivated => set(conn, upd("active = $2"), id, false, at).await?,
        UserEvent::RoleAssigned { role_id } => set(conn, upd("role_id = $2"), id, role_id, at).await?,
        UserEvent::GroupsChanged { groups } => set(conn, upd("groups = $2"), id, groups, at).await?,
        UserEvent::ManagedGroupsChanged { groups } => {
            set(conn, upd("managed_groups = $2"), id, groups.into_iter().collect::<Vec<_>>(), at).await?;
        }
        UserEvent::RecordingSettingsChanged { recording } => {
            let values = vec![text(&recording.record), text(&recording.direction)];
            set(conn, upd("record_mode = $2[1], record_direction = $2[2]"), id, values, at).await?;
        }
        UserEvent::ExtensionAdded { extension } => {
            let sql = upd(
                "extensions = (SELECT array_agg(DISTINCT e ORDER BY e) FROM unnest(array_append(extensions, $2)) e)",
            );
            set(conn, sql, id, extension, at).await?;
        }
        UserEvent::ExtensionRemoved { extension } => {
            set(conn, upd("extensions = array_remove(extensions, $2)"), id, extension, at).await?;
        }
        UserEvent::WebAccessChanged { login_enabled } => {
            set(conn, upd("login_enabled = $2"), id, login_enabled, at).await?
        }
        // An administrator's reset leaves the user's key pair behind: its private part was sealed under the
        // old password.
        UserEvent::PasswordSet { must_change, .. } => {
            let sql = upd("has_password = true, must_change_password = $2, key_fingerprint = NULL");
            set(conn, sql, id, must_change, at).await?;
        }
        UserEvent::PasswordReset { .. } => {
            let sql = upd("has_password = true, must_change_password = $2, key_fingerprint = NULL");
            set(conn, sql, id, false, at).await?;
        }
        UserEvent::PasswordChanged { .. } => {
            set(conn, upd("has_password = true, must_change_password = $2"), id, false, at).await?;
        }
        UserEvent::UserKeyPairCreated { fingerprint } => {
            set(conn, upd("key_fingerprint = $2"), id, fingerprint, at).await?
        }
        UserEvent::PasswordResetLinkIssued { .. } => {}
        UserEvent::MustChangePasswordSet { required } => {
            set(conn, upd("must_change_password = $2"), id, required, at).await?
        }
        UserEvent::ScreenRecordingLoginChanged { login } => {
            let values = vec![login.as_ref().map(|l| l.login.clone()), login.and_then(|l| l.domain)];
            set(conn, upd("screen_login = $2[1], screen_domain = $2[2]"), id, values, at).await?;
        }
        UserEvent::LicencesChanged { licences } => {
            let values = vec![licences.audio, licences.screen, licences.evaluate];
            let sql = upd("licence_audio = $2[1], licence_screen = $2[2], licence_evaluate = $2[3]");
            set(conn, sql, id, values, at).await?;
        }
    }
    Ok(())
}

async fn session(
    conn: &mut PgConnection,
    s: &str,
    logged: &LoggedEvent,
    id: Uuid,
    event: SessionEvent,
) -> Result<(), ProjectionError> {
    let end_sql =
        format!("UPDATE {s}.sessions SET ended_at = $2, end_reason = $3, impersonating = NULL WHERE session_id = $1");
    let end = |reason: &'static str, at: DateTime<Utc>| sqlx::query(&end_sql).bind(id).bind(at).bind(reason);
    match event {
        SessionEvent::SessionStarted { user_id, tenant_id, device_id, started_at, expires_at, .. } => {
            let source = logged.event.source_addr.clone();
            sqlx::query(&format!(
                "INSERT INTO {s}.sessions (session_id, user_id, tenant_id, device_id, source_addr, started_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5::inet, $6, $7) ON CONFLICT (session_id) DO NOTHING"
            ))
            .bind(id)
            .bind(user_id)
            .bind(tenant_id)
            .bind(device_id)
            .bind(source)
            .bind(started_at)
            .bind(expires_at)
            .execute(&mut *conn)
            .await?;
            sqlx::query(&format!("UPDATE {s}.users SET last_sign_in_at = $2 WHERE user_id = $1"))
                .bind(user_id)
                .bind(started_at)
                .execute(&mut *conn)
                .await?;
            sqlx::query(&format!("UPDATE {s}.devices SET last_used_at = $2 WHERE device_id = $1"))
                .bind(device_id)
                .bind(started_at)
                .execute(conn)
                .await?;
        }
        SessionEvent::SignedOut { at } => {
            end("signed_out", at).execute(conn).await?;
        }
        SessionEvent::SessionTerminated { at } => {
            end("terminated", at).execute(conn).await?;
        }
        SessionEvent::ImpersonationStarted { target_user_id, .. } => {
            sqlx::query(&format!("UPDATE {s}.sessions SET impersonating = $2 WHERE session_id = $1"))
                .bind(id)
                .bind(target_user_id)
                .execute(conn)
                .await?;
        }
        SessionEvent::ImpersonationStopped { .. } => {
            sqlx::query(&format!("UPDATE {s}.sessions SET impersonating = NULL WHERE session_id = $1"))
                .bind(id)
                .execute(conn)
                .await?;
        }
        SessionEvent::ImpersonationRequested { .. }
        | SessionEvent::ImpersonationVerificationFailed { .. }
        | SessionEvent::ImpersonationRequestCancelled { .. } => {}
    }
    Ok(())
}

async fn device(conn: &mut PgConnection, s: &str, id: Uuid, event: DeviceEvent) -> Result<(), ProjectionError> {
    match event {
        DeviceEvent::DeviceRegistered { user_id, tenant_id, label, at } => {
            sqlx::query(&format!(
                "INSERT INTO {s}.devices (device_id, user_id, tenant_id, label, registered_at)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (device_id) DO NOTHING"
            ))
            .bind(id)
            .bind(user_id)
            .bind(tenant_id)
            .bind(label)
            .bind(at)
            .execute(conn)
            .await?;
        }
        DeviceEvent::DeviceRevoked { at } => {
            sqlx::query(&format!("UPDATE {s}.devices SET revoked_at = $2 WHERE device_id = $1"))
                .bind(id)
                .bind(at)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

async fn encryption_key(
    conn: &mut PgConnection,
    s: &str,
    id: Uuid,
    event: EncryptionKeyEvent,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    use EncryptionKeyEvent as E;
    let upd =
        |assignment: &str| format!("UPDATE {s}.encryption_keys SET {assignment}, updated_at = $3 WHERE key_id = $1");
    let (tenant_id, name, fingerprint, origin, with_private) = match event {
        E::EncryptionKeyGenerated { tenant_id, name, fingerprint } => (tenant_id, name, fingerprint, "generated", true),
        E::EncryptionKeyImported { tenant_id, name, fingerprint, with_private } => {
            (tenant_id, name, fingerprint, "imported", with_private)
        }
        E::EncryptionKeyGranted { user_id } => {
            let sql = upd("holders = array_append(array_remove(holders, $2), $2)");
            return set(conn, sql, id, user_id, at).await;
        }
        E::EncryptionKeyGrantRevoked { user_id, .. } => {
            return set(conn, upd("holders = array_remove(holders, $2)"), id, user_id, at).await;
        }
        E::EncryptionKeyExported { .. } => return set(conn, upd("last_exported_at = $2"), id, at, at).await,
        E::EncryptionKeyRenamed { name } => return set(conn, upd("name = $2"), id, name, at).await,
        E::EncryptionKeyDestroyed => {
            return set(conn, upd("destroyed_at = $2, holders = '{}'"), id, at, at).await;
        }
    };
    sqlx::query(&format!(
        "INSERT INTO {s}.encryption_keys (key_id, tenant_id, name, fingerprint, origin, with_private, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (key_id) DO NOTHING"
    ))
    .bind(id)
    .bind(tenant_id)
    .bind(name)
    .bind(fingerprint)
    .bind(origin)
    .bind(with_private)
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn storage_target(
    conn: &mut PgConnection,
    s: &str,
    id: Uuid,
    event: StorageTargetEvent,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let upd =
        |assignment: &str| format!("UPDATE {s}.storage_targets SET {assignment}, updated_at = $3 WHERE target_id = $1");
    let kind_name = |kind: &recall_domain::storage_target::StorageKind| {
        json(kind).get("type").and_then(Value::as_str).unwrap_or_default().to_owned()
    };
    match event {
        StorageTargetEvent::StorageTargetAdded { tenant_id, name, kind } => {
            sqlx::query(&format!(
                "INSERT INTO {s}.storage_targets (target_id, tenant_id, name, kind, settings, state, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 'active', $6, $6) ON CONFLICT (target_id) DO NOTHING"
            ))
            .bind(id)
            .bind(tenant_id)
            .bind(name)
            .bind(kind_name(&kind))
            .bind(json(&kind))
            .bind(at)
            .execute(conn)
            .await?;
        }
        StorageTargetEvent::StorageTargetEdited { name, kind } => {
            let changed: bool = sqlx::query_scalar(&format!(
                "SELECT settings IS DISTINCT FROM $2 FROM {s}.storage_targets WHERE target_id = $1"
            ))
            .bind(id)
            .bind(json(&kind))
            .fetch_optional(&mut *conn)
            .await?
            .unwrap_or(true);
            // New settings forget the last connection test (it tested the old ones).
            let forget =
                if changed { ", last_test_ok = NULL, last_test_detail = NULL, last_tested_at = NULL" } else { "" };
            sqlx::query(&format!(
                "UPDATE {s}.storage_targets SET name = $2, kind = $3, settings = $4, updated_at = $5{forget} WHERE target_id = $1"
            ))
            .bind(id)
            .bind(name)
            .bind(kind_name(&kind))
            .bind(json(&kind))
            .bind(at)
            .execute(conn)
            .await?;
        }
        StorageTargetEvent::StorageTargetTested { ok, detail, tested_at } => {
            sqlx::query(&format!(
                "UPDATE {s}.storage_targets SET last_test_ok = $2, last_test_detail = $3, last_tested_at = $4 WHERE target_id = $1"
            ))
            .bind(id)
            .bind(ok)
            .bind(detail)
            .bind(tested_at)
            .execute(conn)
            .await?;
        }
        StorageTargetEvent::StorageTargetDeleted => set(conn, upd("state = $2"), id, "deleted", at).await?,
        StorageTargetEvent::StorageTargetRestored => set(conn, upd("state = $2"), id, "active", at).await?,
        StorageTargetEvent::StorageTargetPurged => {
            sqlx::query(&format!("DELETE FROM {s}.storage_targets WHERE target_id = $1"))
                .bind(id)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

async fn custom_field(
    conn: &mut PgConnection,
    s: &str,
    id: Uuid,
    event: CustomFieldEvent,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let upd =
        |assignment: &str| format!("UPDATE {s}.custom_fields SET {assignment}, updated_at = $3 WHERE field_id = $1");
    match event {
        CustomFieldEvent::CustomFieldAdded { tenant_id, definition } => {
            sqlx::query(&format!(
                "INSERT INTO {s}.custom_fields (field_id, tenant_id, name, definition, state, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 'active', $5, $5) ON CONFLICT (field_id) DO NOTHING"
            ))
            .bind(id)
            .bind(tenant_id)
            .bind(&definition.name)
            .bind(json(&definition))
            .bind(at)
            .execute(conn)
            .await?;
        }
        CustomFieldEvent::CustomFieldEdited { definition } => {
            let sql = upd("name = $2->>'name', definition = $2");
            set(conn, sql, id, json(&definition), at).await?;
        }
        CustomFieldEvent::CustomFieldDeleted => set(conn, upd("state = $2"), id, "deleted", at).await?,
        CustomFieldEvent::CustomFieldRestored => set(conn, upd("state = $2"), id, "active", at).await?,
        CustomFieldEvent::CustomFieldPurged => {
            sqlx::query(&format!("DELETE FROM {s}.custom_fields WHERE field_id = $1")).bind(id).execute(conn).await?;
        }
    }
    Ok(())
}

async fn field_visibility(
    conn: &mut PgConnection,
    s: &str,
    event: FieldVisibilityEvent,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let FieldVisibilityEvent::LayoutVisibilitySet { tenant_id, layout, hidden } = event;
    sqlx::query(&format!(
        "INSERT INTO {s}.field_visibility (tenant_id, layout, hidden, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, layout) DO UPDATE SET hidden = EXCLUDED.hidden, updated_at = EXCLUDED.updated_at"
    ))
    .bind(tenant_id)
    .bind(layout.as_str())
    .bind(hidden.into_iter().collect::<Vec<_>>())
    .bind(at)
    .execute(conn)
    .await?;
    Ok(())
}

async fn evaluation_form(
    conn: &mut PgConnection,
    s: &str,
    id: Uuid,
    event: EvaluationFormEvent,
    at: DateTime<Utc>,
) -> Result<(), ProjectionError> {
    let upd =
        |assignment: &str| format!("UPDATE {s}.evaluation_forms SET {assignment}, updated_at = $3 WHERE form_id = $1");
    match event {
        EvaluationFormEvent::FormCreated { tenant_id, definition, cloned_from } => {
            sqlx::query(&format!(
                "INSERT INTO {s}.evaluation_forms (form_id, tenant_id, name, definition, version, cloned_from, state,
                     created_at, updated_at)
                 VALUES ($1, $2, $3, $4, 1, $5, 'active', $6, $6) ON CONFLICT (form_id) DO NOTHING"
            ))
            .bind(id)
            .bind(tenant_id)
            .bind(&definition.name)
            .bind(json(&definition))
            .bind(cloned_from)
            .bind(at)
            .execute(conn)
            .await?;
        }
        EvaluationFormEvent::FormRevised { definition, version } => {
            sqlx::query(&format!(
                "UPDATE {s}.evaluation_forms SET name = $2, definition = $3, version = $4, updated_at = $5 WHERE form_id = $1"
            ))
            .bind(id)
            .bind(&definition.name)
            .bind(json(&definition))
            .bind(i32::try_from(version).unwrap_or(i32::MAX))
            .bind(at)
            .execute(conn)
            .await?;
        }
        EvaluationFormEvent::FormDeleted => set(conn, upd("state = $2"), id, "deleted", at).await?,
        EvaluationFormEvent::FormRestored => set(conn, upd("state = $2"), id, "active", at).await?,
        EvaluationFormEvent::FormPurged => {
            sqlx::query(&format!("DELETE FROM {s}.evaluation_forms WHERE form_id = $1")).bind(id).execute(conn).await?;
        }
    }
    Ok(())
}

async fn api_token(conn: &mut PgConnection, s: &str, id: Uuid, event: ApiTokenEvent) -> Result<(), ProjectionError> {
    match event {
        ApiTokenEvent::ApiTokenIssued { user_id, tenant_id, name, expires_at, at, .. } => {
            sqlx::query(&format!(
                "INSERT INTO {s}.api_tokens (token_id, user_id, tenant_id, name, issued_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (token_id) DO NOTHING"
            ))
            .bind(id)
            .bind(user_id)
            .bind(tenant_id)
            .bind(name)
            .bind(at)
            .bind(expires_at)
            .execute(conn)
            .await?;
        }
        ApiTokenEvent::ApiTokenRevoked { at } => {
            sqlx::query(&format!("UPDATE {s}.api_tokens SET revoked_at = $2 WHERE token_id = $1"))
                .bind(id)
                .bind(at)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}
