//! Queries of administration: the viewer, tenants, roles, groups and their members, users (search by name,
//! group, role, extension) with their sessions and devices, storage targets, custom fields, field visibility
//! and evaluation forms. Every query goes through `scope`: nothing outside the viewer's reach comes back.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::connection::Connection;
use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{ComplexObject, Context, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use recall_domain::access::{Permission, Resource, Scope};
use serde_json::Value;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::auth::{viewer, viewer_even_if_password_must_change, Viewer};
use crate::error::ApiError;
use crate::page::{connection, Page};
use crate::scope;
use crate::types::{
    gql, AudioFormatGql, LayoutGql, PermissionGql, RecordDirectionGql, RecordModeGql, ScopeGql, StorageOptionGql,
    UnassignedCallRuleGql,
};
use crate::ApiState;

pub(crate) const DIRECTORY: &str = "rm_directory";

fn pool<'a>(ctx: &'a Context<'_>) -> &'a PgPool {
    ctx.data_unchecked::<ApiState>().admin.log().pool()
}

fn like(search: &str) -> String {
    let escaped = search.trim().to_lowercase().replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
    format!("%{escaped}%")
}

/// ` AND (<name key>, <id>) > (<cursor>)`: the page after the cursor of a list ordered by name, then id.
fn after_name(qb: &mut QueryBuilder<'_, Postgres>, page: &Page, name: &str, id: &str) -> Result<(), ApiError> {
    if let (Some(after_name), Some(after_id)) =
        (page.key(0).and_then(Value::as_str), page.key(1).and_then(Value::as_str))
    {
        let after_id = Uuid::parse_str(after_id)
            .map_err(|_| ApiError::invalid_field("after", "not a cursor this API gave out"))?;
        qb.push(format!(" AND ({name}, {id}) > ("))
            .push_bind(after_name.to_owned())
            .push(", ")
            .push_bind(after_id)
            .push(")");
    }
    Ok(())
}

/// A tenant's own rows (custom fields, layouts, forms): service-wide everything, others their tenant.
fn tenant_member(qb: &mut QueryBuilder<'_, Postgres>, v: &Viewer, column: &str) {
    if v.scope() != Scope::ServiceWide {
        qb.push(format!(" AND {column} = ")).push_bind(v.authority.tenant_id);
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Tenant {
    tenant_id: Uuid,
    name: String,
    timezone: String,
    default_record: String,
    default_direction: String,
    unassigned_calls: String,
    storage_option: String,
    file_encryption: bool,
    audio_format: String,
    recordings_days: Option<i32>,
    audit_days: i32,
    impersonation_verification: bool,
    active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    recording_networks: Vec<String>,
    sip_domains: Vec<String>,
    encryption_key_id: Option<Uuid>,
}

/// How long a tenant's data is kept.
#[derive(Debug, SimpleObject)]
pub struct RetentionPolicy {
    /// Days recordings are kept; null keeps them until deleted.
    recordings_days: Option<i32>,
    /// Days audit-trail events are kept (at least 365).
    audit_days: i32,
}

/// A customer organisation of the service.
#[Object]
impl Tenant {
    async fn id(&self) -> Uuid {
        self.tenant_id
    }
    async fn name(&self) -> &str {
        &self.name
    }
    async fn timezone(&self) -> &str {
        &self.timezone
    }
    /// The record mode of users set to "tenant default".
    async fn default_record_mode(&self) -> Option<RecordModeGql> {
        gql::<recall_domain::recording_policy::RecordMode, _>(&self.default_record)
    }
    async fn default_record_direction(&self) -> Option<RecordDirectionGql> {
        gql::<recall_domain::recording_policy::RecordDirection, _>(&self.default_direction)
    }
    async fn unassigned_calls(&self) -> Option<UnassignedCallRuleGql> {
        gql::<recall_domain::recording_policy::UnassignedCallRule, _>(&self.unassigned_calls)
    }
    async fn storage_option(&self) -> Option<StorageOptionGql> {
        gql::<recall_domain::recording_policy::StorageOption, _>(&self.storage_option)
    }
    async fn file_encryption(&self) -> bool {
        self.file_encryption
    }
    /// The key new recordings are encrypted with (older files keep the key they were written with).
    async fn encryption_key_id(&self) -> Option<Uuid> {
        self.encryption_key_id
    }
    async fn audio_format(&self) -> Option<AudioFormatGql> {
        gql::<recall_domain::recording_policy::AudioFormat, _>(&self.audio_format)
    }
    async fn retention_policy(&self) -> RetentionPolicy {
        RetentionPolicy { recordings_days: self.recordings_days, audit_days: self.audit_days }
    }
    /// Whether impersonating this tenant's users needs a verification code.
    async fn impersonation_verification(&self) -> bool {
        self.impersonation_verification
    }
    /// Networks (CIDR) of the recording clients (SBCs, PBXs) whose calls belong to this tenant.
    async fn recording_networks(&self) -> &[String] {
        &self.recording_networks
    }
    /// SIP domains this tenant owns.
    async fn sip_domains(&self) -> &[String] {
        &self.sip_domains
    }
    async fn active(&self) -> bool {
        self.active
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
}

#[derive(Debug, Clone, sqlx::FromRow, SimpleObject)]
#[graphql(complex)]
pub struct Role {
    #[graphql(name = "id")]
    role_id: Uuid,
    name: String,
    #[graphql(skip)]
    scope: String,
    #[graphql(skip)]
    permissions: Vec<String>,
    /// Which pre-defined role this is, if it is one (`root_administrator`, `administrator`, `supervisor`, `agent`).
    predefined: Option<String>,
    deleted: bool,
}

#[ComplexObject]
impl Role {
    async fn scope(&self) -> Option<ScopeGql> {
        gql::<recall_domain::access::Scope, _>(&self.scope)
    }
    async fn permissions(&self) -> Vec<PermissionGql> {
        self.permissions.iter().filter_map(|p| gql::<Permission, _>(p)).collect()
    }
}

#[derive(Debug, Clone, sqlx::FromRow, SimpleObject)]
#[graphql(complex)]
pub struct Group {
    #[graphql(name = "id")]
    group_id: Uuid,
    tenant_id: Uuid,
    name: String,
    timezone: Option<String>,
}

#[ComplexObject]
impl Group {
    /// The group's members the viewer may see.
    async fn members(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, User>> {
        let filter = UserFilter { group_id: Some(self.group_id), ..UserFilter::default() };
        Ok(list_users(ctx, viewer(ctx)?, filter, Page::new(first, after)?).await?)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    user_id: Uuid,
    tenant_id: Option<Uuid>,
    username: String,
    full_name: Option<String>,
    email: Option<String>,
    timezone: Option<String>,
    active: bool,
    role_id: Uuid,
    groups: Vec<Uuid>,
    managed_groups: Vec<Uuid>,
    record_mode: String,
    record_direction: String,
    extensions: Vec<String>,
    login_enabled: bool,
    has_password: bool,
    must_change_password: bool,
    screen_login: Option<String>,
    screen_domain: Option<String>,
    licence_audio: bool,
    licence_screen: bool,
    licence_evaluate: bool,
    last_sign_in_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

/// The add-on licences a user holds.
#[derive(Debug, SimpleObject)]
pub struct Licences {
    audio: bool,
    screen: bool,
    evaluate: bool,
}

#[derive(Debug, Clone, sqlx::FromRow, SimpleObject)]
pub struct Session {
    #[graphql(name = "id")]
    session_id: Uuid,
    device_id: Uuid,
    /// Where the sign-in came from.
    source_address: Option<String>,
    started_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    /// `signed_out` or `terminated`.
    end_reason: Option<String>,
    /// The user the session's administrator is impersonating now.
    impersonating: Option<Uuid>,
}

/// An API token a program uses (the token itself is shown only when issued).
#[derive(Debug, Clone, sqlx::FromRow, SimpleObject)]
pub struct ApiTokenInfo {
    #[graphql(name = "id")]
    token_id: Uuid,
    name: String,
    issued_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, sqlx::FromRow, SimpleObject)]
pub struct Device {
    #[graphql(name = "id")]
    device_id: Uuid,
    label: String,
    registered_at: DateTime<Utc>,
    last_used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

impl User {
    fn resource(&self) -> Resource {
        Resource::User { tenant: self.tenant_id, user: self.user_id, groups: self.groups.iter().copied().collect() }
    }

    /// Sessions and devices: the user's own, or anyone's the viewer may configure.
    fn security_visible(&self, viewer: &Viewer) -> Result<(), ApiError> {
        if viewer.authority.user_id == self.user_id {
            return Ok(());
        }
        viewer
            .authority
            .authorize(Permission::ConfigureUsers, &self.resource())
            .map_err(|e| ApiError::Forbidden(e.to_string()))
    }
}

/// A user account.
#[Object]
impl User {
    async fn id(&self) -> Uuid {
        self.user_id
    }
    /// Null for the service provider's own users.
    async fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }
    async fn username(&self) -> &str {
        &self.username
    }
    async fn full_name(&self) -> Option<&str> {
        self.full_name.as_deref()
    }
    async fn email(&self) -> Option<&str> {
        self.email.as_deref()
    }
    /// The user's own time zone setting (null: the primary group's, then the tenant's).
    async fn timezone(&self) -> Option<&str> {
        self.timezone.as_deref()
    }
    /// The time zone the user sees times in.
    async fn effective_timezone(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        if let Some(tz) = &self.timezone {
            return Ok(tz.clone());
        }
        let found: Option<String> = sqlx::query_scalar(&format!(
            "SELECT coalesce((SELECT timezone FROM {DIRECTORY}.groups WHERE group_id = $1 AND NOT deleted),
                             (SELECT timezone FROM {DIRECTORY}.tenants WHERE tenant_id = $2), 'UTC')"
        ))
        .bind(self.groups.first())
        .bind(self.tenant_id)
        .fetch_one(pool(ctx))
        .await
        .map_err(ApiError::from)?;
        Ok(found.unwrap_or_else(|| "UTC".to_owned()))
    }
    async fn active(&self) -> bool {
        self.active
    }
    async fn role(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Role>> {
        Ok(role_by_id(ctx, self.role_id).await?)
    }
    /// The user's groups, the primary group first.
    async fn groups(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Group>> {
        Ok(groups_by_id(ctx, &self.groups).await?)
    }
    async fn managed_groups(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Group>> {
        Ok(groups_by_id(ctx, &self.managed_groups).await?)
    }
    async fn record_mode(&self) -> Option<RecordModeGql> {
        gql::<recall_domain::recording_policy::RecordMode, _>(&self.record_mode)
    }
    async fn record_direction(&self) -> Option<RecordDirectionGql> {
        gql::<recall_domain::recording_policy::RecordDirection, _>(&self.record_direction)
    }
    async fn extensions(&self) -> &[String] {
        &self.extensions
    }
    async fn login_enabled(&self) -> bool {
        self.login_enabled
    }
    async fn has_password(&self) -> bool {
        self.has_password
    }
    async fn must_change_password(&self) -> bool {
        self.must_change_password
    }
    async fn screen_recording_login(&self) -> Option<&str> {
        self.screen_login.as_deref()
    }
    async fn screen_recording_domain(&self) -> Option<&str> {
        self.screen_domain.as_deref()
    }
    async fn licences(&self) -> Licences {
        Licences { audio: self.licence_audio, screen: self.licence_screen, evaluate: self.licence_evaluate }
    }
    async fn last_sign_in_at(&self) -> Option<DateTime<Utc>> {
        self.last_sign_in_at
    }
    async fn created_at(&self) -> DateTime<Utc> {
        self.created_at
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        self.updated_at
    }
    /// Recent web sessions, newest first (the user's own, or anyone's the viewer configures).
    async fn sessions(&self, ctx: &Context<'_>, first: Option<i32>) -> async_graphql::Result<Vec<Session>> {
        self.security_visible(viewer_even_if_password_must_change(ctx)?)?;
        let limit = Page::new(first, None)?.first as i64;
        let rows = sqlx::query_as::<_, Session>(&format!(
            "SELECT session_id, device_id, host(source_addr) AS source_address, started_at, expires_at, ended_at,
                    end_reason, impersonating
               FROM {DIRECTORY}.sessions WHERE user_id = $1 ORDER BY started_at DESC LIMIT $2"
        ))
        .bind(self.user_id)
        .bind(limit)
        .fetch_all(pool(ctx))
        .await
        .map_err(ApiError::from)?;
        Ok(rows)
    }
    /// The API tokens issued for this user (the user's own, or anyone's the viewer configures).
    async fn api_tokens(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ApiTokenInfo>> {
        self.security_visible(viewer_even_if_password_must_change(ctx)?)?;
        let rows = sqlx::query_as::<_, ApiTokenInfo>(&format!(
            "SELECT token_id, name, issued_at, expires_at, revoked_at FROM {DIRECTORY}.api_tokens
              WHERE user_id = $1 ORDER BY issued_at DESC"
        ))
        .bind(self.user_id)
        .fetch_all(pool(ctx))
        .await
        .map_err(ApiError::from)?;
        Ok(rows)
    }

    /// The devices the user signed in from.
    async fn devices(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<Device>> {
        self.security_visible(viewer_even_if_password_must_change(ctx)?)?;
        let rows = sqlx::query_as::<_, Device>(&format!(
            "SELECT device_id, label, registered_at, last_used_at, revoked_at FROM {DIRECTORY}.devices
              WHERE user_id = $1 ORDER BY registered_at DESC"
        ))
        .bind(self.user_id)
        .fetch_all(pool(ctx))
        .await
        .map_err(ApiError::from)?;
        Ok(rows)
    }
}

/// Which users to list.
#[derive(Debug, Default, InputObject)]
pub struct UserFilter {
    pub tenant_id: Option<Uuid>,
    /// Part of the username, full name or e-mail address (case-insensitive).
    pub search: Option<String>,
    pub group_id: Option<Uuid>,
    pub role_id: Option<Uuid>,
    /// An extension the user holds (exactly).
    pub extension: Option<String>,
    pub active: Option<bool>,
}

const USER_COLUMNS: &str =
    "u.user_id, u.tenant_id, u.username, u.full_name, u.email, u.timezone, u.active, u.role_id, \
     u.groups, u.managed_groups, u.record_mode, u.record_direction, u.extensions, u.login_enabled, u.has_password, \
     u.must_change_password, u.screen_login, u.screen_domain, u.licence_audio, u.licence_screen, u.licence_evaluate, \
     u.last_sign_in_at, u.created_at, u.updated_at";

pub(crate) async fn list_users(
    ctx: &Context<'_>,
    v: &Viewer,
    filter: UserFilter,
    page: Page,
) -> Result<Connection<String, User>, ApiError> {
    let mut qb = QueryBuilder::new(format!("SELECT {USER_COLUMNS} FROM {DIRECTORY}.users u WHERE true"));
    scope::users(&mut qb, v, "u");
    if let Some(tenant) = filter.tenant_id {
        qb.push(" AND u.tenant_id = ").push_bind(tenant);
    }
    if let Some(search) = filter.search.filter(|s| !s.trim().is_empty()) {
        let pattern = like(&search);
        qb.push(" AND (lower(u.username) LIKE ").push_bind(pattern.clone());
        qb.push(" OR lower(coalesce(u.full_name, '')) LIKE ").push_bind(pattern.clone());
        qb.push(" OR lower(coalesce(u.email, '')) LIKE ").push_bind(pattern).push(")");
    }
    if let Some(group) = filter.group_id {
        qb.push(" AND u.groups @> ARRAY[").push_bind(group).push("]::uuid[]");
    }
    if let Some(role) = filter.role_id {
        qb.push(" AND u.role_id = ").push_bind(role);
    }
    if let Some(extension) = filter.extension.filter(|e| !e.trim().is_empty()) {
        qb.push(" AND u.extensions @> ARRAY[").push_bind(extension.trim().to_owned()).push("]::text[]");
    }
    if let Some(active) = filter.active {
        qb.push(" AND u.active = ").push_bind(active);
    }
    after_name(&mut qb, &page, "lower(u.username)", "u.user_id")?;
    qb.push(" ORDER BY lower(u.username), u.user_id LIMIT ").push_bind(page.limit());
    let rows: Vec<User> = qb.build_query_as().fetch_all(pool(ctx)).await?;
    Ok(connection(&page, rows, |u| vec![Value::from(u.username.to_lowercase()), Value::from(u.user_id.to_string())]))
}

pub(crate) async fn user_by_id(ctx: &Context<'_>, v: &Viewer, id: Uuid) -> Result<Option<User>, ApiError> {
    let mut qb = QueryBuilder::new(format!("SELECT {USER_COLUMNS} FROM {DIRECTORY}.users u WHERE u.user_id = "));
    qb.push_bind(id);
    scope::users(&mut qb, v, "u");
    Ok(qb.build_query_as().fetch_optional(pool(ctx)).await?)
}

async fn role_by_id(ctx: &Context<'_>, id: Uuid) -> Result<Option<Role>, ApiError> {
    Ok(sqlx::query_as(&format!(
        "SELECT role_id, name, scope, permissions, predefined, deleted FROM {DIRECTORY}.roles WHERE role_id = $1"
    ))
    .bind(id)
    .fetch_optional(pool(ctx))
    .await?)
}

/// The groups with these ids that the viewer reaches, in the order given. Within an HTTP request the
/// lookups of all the users of a page go to the database together (see [`GroupLoader`]).
async fn groups_by_id(ctx: &Context<'_>, ids: &[Uuid]) -> Result<Vec<Group>, ApiError> {
    let rows: HashMap<Uuid, Group> = match ctx.data_opt::<DataLoader<GroupLoader>>() {
        Some(loader) => loader.load_many(ids.iter().copied()).await?,
        None => {
            let v = viewer_even_if_password_must_change(ctx)?;
            reachable_groups(pool(ctx), v, ids).await?
        }
    };
    Ok(ids.iter().filter_map(|id| rows.get(id).cloned()).collect())
}

/// The groups among `ids` that `v` reaches.
async fn reachable_groups(pool: &PgPool, v: &Viewer, ids: &[Uuid]) -> Result<HashMap<Uuid, Group>, ApiError> {
    let mut qb = QueryBuilder::new(format!(
        "SELECT g.group_id, g.tenant_id, g.name, g.timezone FROM {DIRECTORY}.groups g WHERE NOT g.deleted AND g.group_id = ANY("
    ));
    qb.push_bind(ids.to_vec()).push(")");
    scope::groups(&mut qb, v, "g", own_groups(pool, v).await?).await;
    let rows: Vec<Group> = qb.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(|g| (g.group_id, g)).collect())
}

/// Loads groups for one request's viewer, many ids at a time.
pub(crate) struct GroupLoader {
    pool: PgPool,
    viewer: Arc<Viewer>,
}

impl GroupLoader {
    /// A loader for the request of `viewer`, to put into the request's data.
    pub(crate) fn for_request(pool: PgPool, viewer: Arc<Viewer>) -> DataLoader<GroupLoader> {
        DataLoader::new(Self { pool, viewer }, tokio::spawn)
    }
}

impl Loader<Uuid> for GroupLoader {
    type Value = Group;
    type Error = ApiError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Group>, ApiError> {
        reachable_groups(&self.pool, &self.viewer, keys).await
    }
}

async fn own_groups(pool: &PgPool, v: &Viewer) -> Result<Vec<Uuid>, ApiError> {
    if matches!(v.scope(), Scope::ServiceWide | Scope::Tenant) {
        return Ok(Vec::new());
    }
    let groups: Option<Vec<Uuid>> =
        sqlx::query_scalar(&format!("SELECT groups FROM {DIRECTORY}.users WHERE user_id = $1"))
            .bind(v.authority.user_id)
            .fetch_optional(pool)
            .await?;
    Ok(groups.unwrap_or_default())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StorageTarget {
    target_id: Uuid,
    tenant_id: Uuid,
    name: String,
    kind: String,
    settings: Value,
    state: String,
    last_test_ok: Option<bool>,
    last_test_detail: Option<String>,
    last_tested_at: Option<DateTime<Utc>>,
}

/// The outcome of a storage target's last connection test.
#[derive(Debug, SimpleObject)]
pub struct ConnectionTest {
    ok: bool,
    detail: String,
    tested_at: DateTime<Utc>,
}

/// Where a tenant's recordings are written.
#[Object]
impl StorageTarget {
    async fn id(&self) -> Uuid {
        self.target_id
    }
    async fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }
    async fn name(&self) -> &str {
        &self.name
    }
    /// `local_filesystem`, `s3`, `ftp` or `sftp`.
    async fn kind(&self) -> &str {
        &self.kind
    }
    /// The settings, with each credential shown only as `"set"`.
    async fn settings(&self) -> Json<Value> {
        Json(mask_secrets(&self.settings))
    }
    /// `active` or `deleted` (deleted targets can be restored until purged).
    async fn state(&self) -> &str {
        &self.state
    }
    async fn last_test(&self) -> Option<ConnectionTest> {
        match (self.last_test_ok, &self.last_test_detail, self.last_tested_at) {
            (Some(ok), Some(detail), Some(tested_at)) => Some(ConnectionTest { ok, detail: detail.clone(), tested_at }),
            _ => None,
        }
    }
}

/// Credentials are secret references in the log; the API says only that one is set.
fn mask_secrets(settings: &Value) -> Value {
    let mut masked = settings.clone();
    if let Value::Object(map) = &mut masked {
        for key in ["secret_access_key", "password", "private_key"] {
            if let Some(value) = map.get_mut(key) {
                *value = if value.is_null() { Value::Null } else { Value::from("set") };
            }
        }
    }
    masked
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CustomField {
    field_id: Uuid,
    tenant_id: Uuid,
    name: String,
    definition: Value,
    state: String,
}

/// An extra field administrators define on calls.
#[Object]
impl CustomField {
    async fn id(&self) -> Uuid {
        self.field_id
    }
    async fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }
    async fn name(&self) -> &str {
        &self.name
    }
    /// Type (`text`, `date`, `option` with its options), length, editable, search settings.
    async fn definition(&self) -> Json<Value> {
        Json(self.definition.clone())
    }
    async fn state(&self) -> &str {
        &self.state
    }
}

/// One field of a layout and whether it shows.
#[derive(Debug, SimpleObject)]
pub struct FieldShown {
    field: String,
    visible: bool,
}

/// Which fields a view shows.
#[derive(Debug, SimpleObject)]
pub struct LayoutVisibility {
    layout: LayoutGql,
    /// The built-in fields and the tenant's custom fields (as `custom:<id>`), each with whether it shows.
    fields: Vec<FieldShown>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EvaluationForm {
    form_id: Uuid,
    tenant_id: Uuid,
    name: String,
    definition: Value,
    version: i32,
    cloned_from: Option<Uuid>,
    state: String,
}

/// A form supervisors score calls with.
#[Object]
impl EvaluationForm {
    async fn id(&self) -> Uuid {
        self.form_id
    }
    async fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }
    async fn name(&self) -> &str {
        &self.name
    }
    /// Sections, questions (weights in hundredths of a percent, totalling 10000) and answers.
    async fn definition(&self) -> Json<Value> {
        Json(self.definition.clone())
    }
    async fn version(&self) -> i32 {
        self.version
    }
    async fn cloned_from(&self) -> Option<Uuid> {
        self.cloned_from
    }
    async fn state(&self) -> &str {
        &self.state
    }
}

#[derive(Debug, Default)]
pub struct DirectoryQuery;

/// Lookups by id for mutation results (the same scoping as the queries).
impl DirectoryQuery {
    pub(crate) async fn tenant_by_id(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Tenant>> {
        let v = viewer_even_if_password_must_change(ctx)?;
        let mut qb =
            QueryBuilder::new(format!("SELECT {TENANT_COLUMNS} FROM {DIRECTORY}.tenants t WHERE t.tenant_id = "));
        qb.push_bind(id);
        scope::tenants(&mut qb, v, "t");
        Ok(qb.build_query_as().fetch_optional(pool(ctx)).await.map_err(ApiError::from)?)
    }

    pub(crate) async fn role_by_id(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Role>> {
        viewer_even_if_password_must_change(ctx)?;
        Ok(role_by_id(ctx, id).await?)
    }

    pub(crate) async fn group_by_id(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Group>> {
        Ok(groups_by_id(ctx, &[id]).await?.into_iter().next())
    }

    pub(crate) async fn storage_target_by_id(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Option<StorageTarget>> {
        let v = viewer_even_if_password_must_change(ctx)?;
        let mut qb = QueryBuilder::new(format!(
            "SELECT target_id, tenant_id, name, kind, settings, state, last_test_ok, last_test_detail, last_tested_at
               FROM {DIRECTORY}.storage_targets s WHERE s.target_id = "
        ));
        qb.push_bind(id);
        scope::tenant_config(&mut qb, v, "s.tenant_id", Permission::ManageStorage, false)?;
        Ok(qb.build_query_as().fetch_optional(pool(ctx)).await.map_err(ApiError::from)?)
    }

    pub(crate) async fn custom_field_by_id(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Option<CustomField>> {
        let v = viewer_even_if_password_must_change(ctx)?;
        let mut qb = QueryBuilder::new(format!(
            "SELECT field_id, tenant_id, name, definition, state FROM {DIRECTORY}.custom_fields f WHERE f.field_id = "
        ));
        qb.push_bind(id);
        tenant_member(&mut qb, v, "f.tenant_id");
        Ok(qb.build_query_as().fetch_optional(pool(ctx)).await.map_err(ApiError::from)?)
    }

    pub(crate) async fn evaluation_form_by_id(
        &self,
        ctx: &Context<'_>,
        id: Uuid,
    ) -> async_graphql::Result<Option<EvaluationForm>> {
        let v = viewer_even_if_password_must_change(ctx)?;
        let mut qb = QueryBuilder::new(format!(
            "SELECT form_id, tenant_id, name, definition, version, cloned_from, state FROM {DIRECTORY}.evaluation_forms f
              WHERE f.form_id = "
        ));
        qb.push_bind(id);
        tenant_member(&mut qb, v, "f.tenant_id");
        Ok(qb.build_query_as().fetch_optional(pool(ctx)).await.map_err(ApiError::from)?)
    }
}

const TENANT_COLUMNS: &str =
    "t.tenant_id, t.name, t.timezone, t.default_record, t.default_direction, t.unassigned_calls, \
     t.storage_option, t.file_encryption, t.audio_format, t.recordings_days, t.audit_days, \
     t.impersonation_verification, t.active, t.created_at, t.updated_at, t.recording_networks, t.sip_domains, \
     t.encryption_key_id";

#[Object]
impl DirectoryQuery {
    /// The signed-in user (during an impersonation: the impersonated user), also while a password change is due.
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        let v = viewer_even_if_password_must_change(ctx)?;
        Ok(user_by_id(ctx, v, v.authority.user_id).await?)
    }

    /// The administrator impersonating the current user, if any.
    async fn impersonator(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Uuid>> {
        Ok(viewer_even_if_password_must_change(ctx)?.principal.caller.impersonator)
    }

    /// Tenants the viewer reaches (all of them service-wide, else their own).
    async fn tenants(
        &self,
        ctx: &Context<'_>,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Tenant>> {
        let v = viewer(ctx)?;
        let page = Page::new(first, after)?;
        let mut qb = QueryBuilder::new(format!("SELECT {TENANT_COLUMNS} FROM {DIRECTORY}.tenants t WHERE true"));
        scope::tenants(&mut qb, v, "t");
        if let Some(search) = search.filter(|s| !s.trim().is_empty()) {
            qb.push(" AND lower(t.name) LIKE ").push_bind(like(&search));
        }
        after_name(&mut qb, &page, "lower(t.name)", "t.tenant_id")?;
        qb.push(" ORDER BY lower(t.name), t.tenant_id LIMIT ").push_bind(page.limit());
        let rows: Vec<Tenant> = qb.build_query_as().fetch_all(pool(ctx)).await.map_err(ApiError::from)?;
        Ok(connection(&page, rows, |t| vec![Value::from(t.name.to_lowercase()), Value::from(t.tenant_id.to_string())]))
    }

    async fn tenant(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Tenant>> {
        viewer(ctx)?;
        self.tenant_by_id(ctx, id).await
    }

    /// The roles (with their permissions and scope); deleted ones only when asked.
    async fn roles(&self, ctx: &Context<'_>, include_deleted: Option<bool>) -> async_graphql::Result<Vec<Role>> {
        viewer(ctx)?;
        let rows = sqlx::query_as::<_, Role>(&format!(
            "SELECT role_id, name, scope, permissions, predefined, deleted FROM {DIRECTORY}.roles
              WHERE $1 OR NOT deleted ORDER BY lower(name), role_id"
        ))
        .bind(include_deleted.unwrap_or(false))
        .fetch_all(pool(ctx))
        .await
        .map_err(ApiError::from)?;
        Ok(rows)
    }

    async fn role(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Role>> {
        viewer(ctx)?;
        Ok(role_by_id(ctx, id).await?)
    }

    /// Groups the viewer reaches.
    async fn groups(
        &self,
        ctx: &Context<'_>,
        tenant_id: Option<Uuid>,
        search: Option<String>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Group>> {
        let v = viewer(ctx)?;
        let page = Page::new(first, after)?;
        let mut qb = QueryBuilder::new(format!(
            "SELECT g.group_id, g.tenant_id, g.name, g.timezone FROM {DIRECTORY}.groups g WHERE NOT g.deleted"
        ));
        scope::groups(&mut qb, v, "g", own_groups(pool(ctx), v).await?).await;
        if let Some(tenant) = tenant_id {
            qb.push(" AND g.tenant_id = ").push_bind(tenant);
        }
        if let Some(search) = search.filter(|s| !s.trim().is_empty()) {
            qb.push(" AND lower(g.name) LIKE ").push_bind(like(&search));
        }
        after_name(&mut qb, &page, "lower(g.name)", "g.group_id")?;
        qb.push(" ORDER BY lower(g.name), g.group_id LIMIT ").push_bind(page.limit());
        let rows: Vec<Group> = qb.build_query_as().fetch_all(pool(ctx)).await.map_err(ApiError::from)?;
        Ok(connection(&page, rows, |g| vec![Value::from(g.name.to_lowercase()), Value::from(g.group_id.to_string())]))
    }

    async fn group(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Group>> {
        viewer(ctx)?;
        Ok(groups_by_id(ctx, &[id]).await?.into_iter().next())
    }

    /// Users the viewer reaches, by name, group, role or extension.
    async fn users(
        &self,
        ctx: &Context<'_>,
        filter: Option<UserFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, User>> {
        let v = viewer(ctx)?;
        Ok(list_users(ctx, v, filter.unwrap_or_default(), Page::new(first, after)?).await?)
    }

    async fn user(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<User>> {
        let v = viewer(ctx)?;
        Ok(user_by_id(ctx, v, id).await?)
    }

    /// Storage targets of the tenants whose storage the viewer manages.
    async fn storage_targets(
        &self,
        ctx: &Context<'_>,
        tenant_id: Option<Uuid>,
        search: Option<String>,
        include_deleted: Option<bool>,
    ) -> async_graphql::Result<Vec<StorageTarget>> {
        let v = viewer(ctx)?;
        let mut qb = QueryBuilder::new(format!(
            "SELECT target_id, tenant_id, name, kind, settings, state, last_test_ok, last_test_detail, last_tested_at
               FROM {DIRECTORY}.storage_targets s WHERE true"
        ));
        scope::tenant_config(&mut qb, v, "s.tenant_id", Permission::ManageStorage, false)?;
        if let Some(tenant) = tenant_id {
            qb.push(" AND s.tenant_id = ").push_bind(tenant);
        }
        if let Some(search) = search.filter(|s| !s.trim().is_empty()) {
            qb.push(" AND lower(s.name) LIKE ").push_bind(like(&search));
        }
        if !include_deleted.unwrap_or(false) {
            qb.push(" AND s.state = 'active'");
        }
        qb.push(" ORDER BY lower(s.name), s.target_id LIMIT 500");
        Ok(qb.build_query_as().fetch_all(pool(ctx)).await.map_err(ApiError::from)?)
    }

    /// The custom fields of the viewer's tenant (or of `tenantId`, service-wide); deleted ones for their managers.
    async fn custom_fields(
        &self,
        ctx: &Context<'_>,
        tenant_id: Option<Uuid>,
        include_deleted: Option<bool>,
    ) -> async_graphql::Result<Vec<CustomField>> {
        let v = viewer(ctx)?;
        let mut qb = QueryBuilder::new(format!(
            "SELECT field_id, tenant_id, name, definition, state FROM {DIRECTORY}.custom_fields f WHERE true"
        ));
        tenant_member(&mut qb, v, "f.tenant_id");
        if let Some(tenant) = tenant_id {
            qb.push(" AND f.tenant_id = ").push_bind(tenant);
        }
        if !(include_deleted.unwrap_or(false) && v.may(Permission::ManageCustomization)) {
            qb.push(" AND f.state = 'active'");
        }
        qb.push(" ORDER BY lower(f.name), f.field_id LIMIT 1000");
        Ok(qb.build_query_as().fetch_all(pool(ctx)).await.map_err(ApiError::from)?)
    }

    /// Which fields each view shows, for a tenant (the viewer's own unless service-wide).
    async fn field_visibility(
        &self,
        ctx: &Context<'_>,
        tenant_id: Option<Uuid>,
    ) -> async_graphql::Result<Vec<LayoutVisibility>> {
        let v = viewer(ctx)?;
        let tenant =
            tenant_id.or(v.authority.tenant_id).ok_or_else(|| ApiError::invalid_field("tenantId", "name a tenant"))?;
        if v.scope() != Scope::ServiceWide && v.authority.tenant_id != Some(tenant) {
            return Err(ApiError::Forbidden("this is outside what your role's scope reaches".to_owned()).into());
        }
        let hidden: Vec<(String, Vec<String>)> =
            sqlx::query_as(&format!("SELECT layout, hidden FROM {DIRECTORY}.field_visibility WHERE tenant_id = $1"))
                .bind(tenant)
                .fetch_all(pool(ctx))
                .await
                .map_err(ApiError::from)?;
        let custom: Vec<Uuid> = sqlx::query_scalar(&format!(
            "SELECT field_id FROM {DIRECTORY}.custom_fields WHERE tenant_id = $1 AND state = 'active' ORDER BY lower(name)"
        ))
        .bind(tenant)
        .fetch_all(pool(ctx))
        .await
        .map_err(ApiError::from)?;
        use recall_domain::field_visibility::{custom_field, Layout};
        Ok(Layout::ALL
            .iter()
            .map(|layout| {
                let hidden_here =
                    hidden.iter().find(|(l, _)| l == layout.as_str()).map(|(_, h)| h.as_slice()).unwrap_or_default();
                let mut names: Vec<String> = layout.fields().iter().map(|f| (*f).to_owned()).collect();
                if layout.shows_custom_fields() {
                    names.extend(custom.iter().map(|id| custom_field(*id)));
                }
                let fields = names
                    .into_iter()
                    .map(|field| FieldShown { visible: !hidden_here.contains(&field), field })
                    .collect();
                LayoutVisibility { layout: (*layout).into(), fields }
            })
            .collect())
    }

    /// Evaluation forms of the viewer's tenant (or of `tenantId`, service-wide).
    async fn evaluation_forms(
        &self,
        ctx: &Context<'_>,
        tenant_id: Option<Uuid>,
        include_deleted: Option<bool>,
    ) -> async_graphql::Result<Vec<EvaluationForm>> {
        let v = viewer(ctx)?;
        let mut qb = QueryBuilder::new(format!(
            "SELECT form_id, tenant_id, name, definition, version, cloned_from, state FROM {DIRECTORY}.evaluation_forms f WHERE true"
        ));
        tenant_member(&mut qb, v, "f.tenant_id");
        if let Some(tenant) = tenant_id {
            qb.push(" AND f.tenant_id = ").push_bind(tenant);
        }
        if !(include_deleted.unwrap_or(false) && v.may(Permission::ManageEvaluationForms)) {
            qb.push(" AND f.state = 'active'");
        }
        qb.push(" ORDER BY lower(f.name), f.form_id LIMIT 1000");
        Ok(qb.build_query_as().fetch_all(pool(ctx)).await.map_err(ApiError::from)?)
    }

    async fn evaluation_form(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<EvaluationForm>> {
        viewer(ctx)?;
        self.evaluation_form_by_id(ctx, id).await
    }
}
