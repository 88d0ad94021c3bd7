//! The calls query: recorded calls the viewer may see (all service-wide, the tenant's, those of users in
//! managed groups, or one's own), filtered by time, user, group, extension, direction, duration, custom
//! fields and free text; "not assigned to users" for those whose scope reaches the whole tenant.

use async_graphql::connection::Connection;
use async_graphql::{Context, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use recall_domain::access::Scope;
use serde_json::Value;
use sqlx::{PgPool, QueryBuilder};
use uuid::Uuid;

use super::directory::{user_by_id, User, DIRECTORY};
use crate::auth::viewer;
use crate::error::ApiError;
use crate::page::{connection, Page};
use crate::scope;
use crate::types::{gql, AudioFormatGql, CallDirectionGql, CallEndReasonGql};
use crate::ApiState;

pub(crate) const CALLS: &str = "rm_calls";

fn pool<'a>(ctx: &'a Context<'_>) -> &'a PgPool {
    ctx.data_unchecked::<ApiState>().admin.log().pool()
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Call {
    call_id: Uuid,
    tenant_id: Uuid,
    sip_call_id: String,
    direction: String,
    participants: Value,
    extension: Option<String>,
    user_id: Option<Uuid>,
    site: String,
    recorder_node: String,
    started_at: DateTime<Utc>,
    ended_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    custom: Value,
    end_reason: Option<String>,
    paused_since: Option<DateTime<Utc>>,
    paused_ms: i64,
    dtmf: String,
    recording: Option<Value>,
    failures: Value,
}

/// The stored file of a call's recording.
#[derive(Debug, Clone, SimpleObject)]
pub struct Recording {
    /// The storage target holding it (none: the installation's own recordings directory).
    pub storage_target_id: Option<Uuid>,
    /// The object's path within the storage target.
    pub location: String,
    pub format: Option<AudioFormatGql>,
    pub size_bytes: i64,
    pub duration_ms: i64,
    /// Hex SHA-256 of the stored bytes.
    pub sha256: String,
    /// The tenant key the file is encrypted with; null for a file stored in plain.
    pub encryption_key_id: Option<Uuid>,
    /// Set when the file was stored without its end after a recorder crash: the sealed chunks it holds.
    pub unterminated_chunks: Option<i64>,
    /// Where to play it back (`GET`, HTTP Range; with the session cookie or a bearer token).
    pub audio_url: String,
    /// Where to download it (decrypted, as an attachment).
    pub download_url: String,
}

/// A recorded call.
#[Object]
impl Call {
    async fn id(&self) -> Uuid {
        self.call_id
    }
    async fn tenant_id(&self) -> Uuid {
        self.tenant_id
    }
    async fn sip_call_id(&self) -> &str {
        &self.sip_call_id
    }
    async fn direction(&self) -> Option<CallDirectionGql> {
        gql::<recall_domain::call::CallDirection, _>(&self.direction)
    }
    /// The parties, each with a name (if known) and an address of record.
    async fn participants(&self) -> Json<Value> {
        Json(self.participants.clone())
    }
    async fn extension(&self) -> Option<&str> {
        self.extension.as_deref()
    }
    /// The user the call is assigned to; null for a call not assigned to users.
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        match self.user_id {
            Some(id) => Ok(user_by_id(ctx, viewer(ctx)?, id).await?),
            None => Ok(None),
        }
    }
    async fn user_id(&self) -> Option<Uuid> {
        self.user_id
    }
    async fn site(&self) -> &str {
        &self.site
    }
    async fn recorder_node(&self) -> &str {
        &self.recorder_node
    }
    async fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }
    async fn ended_at(&self) -> Option<DateTime<Utc>> {
        self.ended_at
    }
    async fn duration_ms(&self) -> Option<i64> {
        self.duration_ms
    }
    /// Custom field values by field id.
    async fn custom_fields(&self) -> Json<Value> {
        Json(self.custom.clone())
    }
    /// Why the recording ended; null while the call goes on.
    async fn end_reason(&self) -> Option<CallEndReasonGql> {
        self.end_reason.as_deref().and_then(gql::<recall_domain::call::CallEndReason, _>)
    }
    /// Since when the recording is paused, while it is.
    async fn paused_since(&self) -> Option<DateTime<Utc>> {
        self.paused_since
    }
    /// How long the recording was paused in all (silence in the file).
    async fn paused_ms(&self) -> i64 {
        self.paused_ms
    }
    /// The DTMF digits received, in order.
    async fn dtmf(&self) -> &str {
        &self.dtmf
    }
    /// The stored file; null until it is stored.
    async fn recording(&self) -> Option<Recording> {
        let stored: recall_domain::call::StoredRecording = serde_json::from_value(self.recording.clone()?).ok()?;
        Some(Recording {
            storage_target_id: stored.storage_target_id,
            location: stored.location,
            format: Some(stored.format.into()),
            size_bytes: i64::try_from(stored.size_bytes).unwrap_or(i64::MAX),
            duration_ms: i64::try_from(stored.duration_ms).unwrap_or(i64::MAX),
            sha256: stored.sha256,
            encryption_key_id: stored.encryption.as_ref().map(|e| e.key_id),
            unterminated_chunks: stored
                .encryption
                .and_then(|e| e.unterminated_chunks)
                .map(|k| i64::try_from(k).unwrap_or(i64::MAX)),
            audio_url: format!("/recordings/{}/audio", self.call_id),
            download_url: format!("/recordings/{}/download", self.call_id),
        })
    }
    /// What could not be kept of the recording and why: `[{lost, reason, at}]`.
    async fn failures(&self) -> Json<Value> {
        Json(self.failures.clone())
    }
}

/// A custom field's value to match.
#[derive(Debug, InputObject)]
pub struct CustomFieldValue {
    pub field_id: Uuid,
    pub value: String,
}

/// Which calls to list.
#[derive(Debug, Default, InputObject)]
pub struct CallFilter {
    pub tenant_id: Option<Uuid>,
    /// Calls that started at or after this time.
    pub from: Option<DateTime<Utc>>,
    /// Calls that started before this time.
    pub to: Option<DateTime<Utc>>,
    pub user_id: Option<Uuid>,
    /// Calls of the users in this group.
    pub group_id: Option<Uuid>,
    pub extension: Option<String>,
    pub direction: Option<CallDirectionGql>,
    pub min_duration_ms: Option<i64>,
    pub max_duration_ms: Option<i64>,
    pub custom_fields: Option<Vec<CustomFieldValue>>,
    /// Words from the parties' names and numbers, the extension or the SIP Call-ID.
    pub text: Option<String>,
    /// Only calls not assigned to users (administrators: tenant scope or wider).
    pub unassigned: Option<bool>,
}

const CALL_COLUMNS: &str =
    "c.call_id, c.tenant_id, c.sip_call_id, c.direction, c.participants, c.extension, c.user_id, \
     c.site, c.recorder_node, c.started_at, c.ended_at, c.duration_ms, c.custom, c.end_reason, c.paused_since, \
     c.paused_ms, c.dtmf, c.recording, c.failures";

/// A group's or a supervisor's users are merged per user up to this many; beyond, one scan.
const MERGE_AT_MOST: i64 = 100;

/// The users whose calls the filter's group and the viewer's scope leave, when they are few enough to
/// read call by call (`None`: too many, scan instead).
async fn members(
    ctx: &Context<'_>,
    v: &crate::auth::Viewer,
    filter: &CallFilter,
) -> Result<Option<Vec<Uuid>>, ApiError> {
    let a = &v.authority;
    let mut qb = QueryBuilder::new(format!("SELECT u.user_id FROM {DIRECTORY}.users u WHERE true"));
    if let Some(group) = filter.group_id {
        qb.push(" AND u.groups @> ARRAY[").push_bind(group).push("]::uuid[]");
    }
    match v.scope() {
        Scope::ServiceWide => {}
        Scope::Tenant => {
            qb.push(" AND u.tenant_id = ").push_bind(a.tenant_id);
        }
        Scope::ManagedGroups => {
            qb.push(" AND u.tenant_id = ").push_bind(a.tenant_id);
            qb.push(" AND (u.user_id = ").push_bind(a.user_id);
            qb.push(" OR u.groups && ").push_bind(a.managed_groups.iter().copied().collect::<Vec<_>>()).push(")");
        }
        Scope::OwnCalls => {
            qb.push(" AND u.user_id = ").push_bind(a.user_id);
        }
    }
    qb.push(" LIMIT ").push_bind(MERGE_AT_MOST + 1);
    let users: Vec<Uuid> = qb.build_query_scalar().fetch_all(pool(ctx)).await.map_err(ApiError::from)?;
    Ok((users.len() as i64 <= MERGE_AT_MOST).then_some(users))
}

/// ` AND …` for every condition on calls `c`: the viewer's scope, the filter and the page's cursor. With
/// `of_member`, the query is one of [`members`]' users, who are within the scope and the group already:
/// only the tenant is checked again, which keeps a merge of many users cheap to plan.
fn conditions(
    qb: &mut QueryBuilder<'_, sqlx::Postgres>,
    v: &crate::auth::Viewer,
    filter: &CallFilter,
    page: &Page,
    of_member: bool,
) -> Result<(), ApiError> {
    if of_member {
        v.require(recall_domain::access::Permission::ViewCalls)?;
        if v.scope() != Scope::ServiceWide {
            qb.push(" AND c.tenant_id = ").push_bind(v.authority.tenant_id);
        }
    } else {
        scope::calls(qb, v, "c", DIRECTORY)?;
    }
    if filter.unassigned.unwrap_or(false) {
        if !matches!(v.scope(), Scope::ServiceWide | Scope::Tenant) {
            return Err(ApiError::Forbidden("calls not assigned to users are for administrators".to_owned()));
        }
        qb.push(" AND c.user_id IS NULL");
    }
    if let Some(tenant) = filter.tenant_id {
        qb.push(" AND c.tenant_id = ").push_bind(tenant);
    }
    if let Some(from) = filter.from {
        qb.push(" AND c.started_at >= ").push_bind(from);
    }
    if let Some(to) = filter.to {
        qb.push(" AND c.started_at < ").push_bind(to);
    }
    if let Some(user) = filter.user_id {
        qb.push(" AND c.user_id = ").push_bind(user);
    }
    if let Some(group) = filter.group_id.filter(|_| !of_member) {
        qb.push(format!(" AND c.user_id IN (SELECT g.user_id FROM {DIRECTORY}.users g WHERE g.groups @> ARRAY["))
            .push_bind(group)
            .push("]::uuid[])");
    }
    if let Some(extension) = filter.extension.clone().filter(|e| !e.trim().is_empty()) {
        qb.push(" AND c.extension = ").push_bind(extension.trim().to_owned());
    }
    if let Some(direction) = filter.direction {
        let direction: recall_domain::call::CallDirection = direction.into();
        qb.push(" AND c.direction = ").push_bind(crate::text_of(&direction));
    }
    if let Some(min) = filter.min_duration_ms {
        qb.push(" AND c.duration_ms >= ").push_bind(min);
    }
    if let Some(max) = filter.max_duration_ms {
        qb.push(" AND c.duration_ms <= ").push_bind(max);
    }
    for custom in filter.custom_fields.iter().flatten() {
        qb.push(" AND c.custom ->> ")
            .push_bind(custom.field_id.to_string())
            .push(" = ")
            .push_bind(custom.value.clone());
    }
    if let Some(text) = filter.text.clone().filter(|t| !t.trim().is_empty()) {
        qb.push(" AND c.search @@ plainto_tsquery('simple', ").push_bind(text).push(")");
    }
    if let (Some(at), Some(id)) = (page.key(0).and_then(Value::as_str), page.key(1).and_then(Value::as_str)) {
        let bad = || ApiError::invalid_field("after", "not a cursor this API gave out");
        let at: DateTime<Utc> = at.parse().map_err(|_| bad())?;
        let id = Uuid::parse_str(id).map_err(|_| bad())?;
        qb.push(" AND (c.started_at, c.call_id) < (").push_bind(at).push(", ").push_bind(id).push(")");
    }
    Ok(())
}

#[derive(Debug, Default)]
pub struct CallsQuery;

#[Object]
impl CallsQuery {
    /// Recorded calls the viewer may see, newest first.
    async fn calls(
        &self,
        ctx: &Context<'_>,
        filter: Option<CallFilter>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Call>> {
        let v = viewer(ctx)?;
        let page = Page::new(first, after)?;
        let filter = filter.unwrap_or_default();
        let members = match (filter.user_id, filter.group_id, v.scope()) {
            _ if filter.unassigned.unwrap_or(false) => None,
            (None, Some(_), _) | (None, None, Scope::ManagedGroups) => members(ctx, v, &filter).await?,
            _ => None,
        };
        let qb = match members {
            Some(users) if users.is_empty() => {
                conditions(&mut QueryBuilder::new(""), v, &filter, &page, false)?;
                return Ok(connection(&page, Vec::<Call>::new(), |_| Vec::new()));
            }
            Some(users) => {
                // One ordered branch per user, merged: the database reads about one page of rows in all,
                // where one scan over the tenant's calls would read and discard every other user's.
                let mut qb = QueryBuilder::new("SELECT * FROM (");
                for (i, user) in users.iter().enumerate() {
                    if i > 0 {
                        qb.push(" UNION ALL ");
                    }
                    qb.push(format!("(SELECT {CALL_COLUMNS} FROM {CALLS}.calls c WHERE c.user_id = ")).push_bind(*user);
                    conditions(&mut qb, v, &filter, &page, true)?;
                    qb.push(" ORDER BY c.started_at DESC, c.call_id DESC LIMIT ").push_bind(page.limit()).push(")");
                }
                qb.push(") c ORDER BY c.started_at DESC, c.call_id DESC LIMIT ").push_bind(page.limit());
                qb
            }
            None => {
                let mut qb = QueryBuilder::new(format!("SELECT {CALL_COLUMNS} FROM {CALLS}.calls c WHERE true"));
                conditions(&mut qb, v, &filter, &page, false)?;
                qb.push(" ORDER BY c.started_at DESC, c.call_id DESC LIMIT ").push_bind(page.limit());
                qb
            }
        };
        let mut qb = qb;
        let rows: Vec<Call> = qb.build_query_as().fetch_all(pool(ctx)).await.map_err(ApiError::from)?;
        Ok(connection(&page, rows, |c| {
            vec![
                Value::from(c.started_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
                Value::from(c.call_id.to_string()),
            ]
        }))
    }

    async fn call(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Call>> {
        self.call_by_id(ctx, id).await
    }
}

impl CallsQuery {
    /// One call, if the viewer may see it (also for mutation results).
    pub(crate) async fn call_by_id(&self, ctx: &Context<'_>, id: Uuid) -> async_graphql::Result<Option<Call>> {
        let v = viewer(ctx)?;
        let mut qb = QueryBuilder::new(format!("SELECT {CALL_COLUMNS} FROM {CALLS}.calls c WHERE c.call_id = "));
        qb.push_bind(id);
        scope::calls(&mut qb, v, "c", DIRECTORY)?;
        Ok(qb.build_query_as().fetch_optional(pool(ctx)).await.map_err(ApiError::from)?)
    }
}
