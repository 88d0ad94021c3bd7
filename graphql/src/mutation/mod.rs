//! The write side of the API: every mutation is a command of the administration service. A mutation
//! returns the log position of what it appended and, once the projections show it (waited for, with a
//! limit), the changed object, so the read that follows sees the change.

mod admin;
mod config;
mod jobs;
mod keys;
mod session;
mod users;

use async_graphql::{ComplexObject, Context, MergedObject, SimpleObject};
use recall_commands::admin::{AdminCommand, Done};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::auth::viewer_even_if_password_must_change;
use crate::error::ApiError;
use crate::query::directory::{CustomField, EvaluationForm, Group, Role, StorageTarget, Tenant, User};
use crate::ApiState;

#[derive(MergedObject, Default, Debug)]
pub struct Mutation(
    session::SessionMutation,
    admin::AdminMutation,
    users::UserMutation,
    config::ConfigMutation,
    keys::KeysMutation,
    jobs::JobsMutation,
);

/// The id given for a new thing (so a retried request cannot create twice), or a new one.
fn new_id(id: Option<Uuid>) -> Uuid {
    id.unwrap_or_else(Uuid::now_v7)
}

/// What a changed object is.
#[derive(async_graphql::Enum, Copy, Clone, Debug, Eq, PartialEq)]
pub enum Changed {
    Tenant,
    Role,
    Group,
    User,
    Session,
    Device,
    Call,
    StorageTarget,
    CustomField,
    FieldVisibility,
    EvaluationForm,
    ApiToken,
    EncryptionKey,
    Job,
}

/// What a mutation did.
#[derive(Debug, SimpleObject)]
#[graphql(complex)]
pub struct MutationResult {
    /// What kind of object changed, and its id.
    pub changed: Changed,
    pub id: Uuid,
    /// The log position of the last event the mutation appended (null when it changed nothing).
    pub position: Option<u64>,
    /// Whether the projections showed the change before the mutation returned.
    pub visible: bool,
    /// What is handed out once (a password reset link's token, an exported key's PEM), shown only here.
    pub issued_token: Option<String>,
}

#[ComplexObject]
impl MutationResult {
    async fn tenant(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Tenant>> {
        if self.changed != Changed::Tenant {
            return Ok(None);
        }
        crate::query::directory::DirectoryQuery.tenant_by_id(ctx, self.id).await
    }
    async fn role(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Role>> {
        if self.changed != Changed::Role {
            return Ok(None);
        }
        crate::query::directory::DirectoryQuery.role_by_id(ctx, self.id).await
    }
    async fn group(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<Group>> {
        if self.changed != Changed::Group {
            return Ok(None);
        }
        crate::query::directory::DirectoryQuery.group_by_id(ctx, self.id).await
    }
    async fn user(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<User>> {
        if self.changed != Changed::User {
            return Ok(None);
        }
        let v = viewer_even_if_password_must_change(ctx)?;
        Ok(crate::query::directory::user_by_id(ctx, v, self.id).await?)
    }
    async fn storage_target(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<StorageTarget>> {
        if self.changed != Changed::StorageTarget {
            return Ok(None);
        }
        crate::query::directory::DirectoryQuery.storage_target_by_id(ctx, self.id).await
    }
    async fn custom_field(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<CustomField>> {
        if self.changed != Changed::CustomField {
            return Ok(None);
        }
        crate::query::directory::DirectoryQuery.custom_field_by_id(ctx, self.id).await
    }
    /// The call, after an assignment (seen with the viewer's rights).
    async fn call(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<crate::query::calls::Call>> {
        if self.changed != Changed::Call {
            return Ok(None);
        }
        crate::query::calls::CallsQuery.call_by_id(ctx, self.id).await
    }
    async fn encryption_key(
        &self,
        ctx: &Context<'_>,
    ) -> async_graphql::Result<Option<crate::query::keys::EncryptionKey>> {
        if self.changed != Changed::EncryptionKey {
            return Ok(None);
        }
        crate::query::keys::KeysQuery.encryption_key_by_id(ctx, self.id).await
    }
    async fn job(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<crate::query::jobs::Job>> {
        if self.changed != Changed::Job {
            return Ok(None);
        }
        crate::query::jobs::JobsQuery.job_by_id(ctx, self.id).await
    }
    async fn evaluation_form(&self, ctx: &Context<'_>) -> async_graphql::Result<Option<EvaluationForm>> {
        if self.changed != Changed::EvaluationForm {
            return Ok(None);
        }
        crate::query::directory::DirectoryQuery.evaluation_form_by_id(ctx, self.id).await
    }
}

/// Runs `command` as the viewer and waits (with a limit) until the projections show its effect.
pub(crate) async fn run(
    ctx: &Context<'_>,
    changed: Changed,
    id: Uuid,
    command: AdminCommand,
) -> async_graphql::Result<MutationResult> {
    let viewer = viewer_even_if_password_must_change(ctx)?;
    let state = ctx.data_unchecked::<ApiState>();
    let done = state.admin.execute(&viewer.principal.caller, command).await.map_err(ApiError::from)?;
    Ok(settle(state, changed, id, done).await)
}

pub(crate) async fn settle(state: &ApiState, changed: Changed, id: Uuid, done: Done) -> MutationResult {
    let limit = state.options.read_your_writes;
    let mut position = None;
    if let Some(last) = done.event_ids().last() {
        position = state.log.wait_for_position(last, limit).await.ok().flatten();
    }
    let visible = match position {
        Some(p) => state.projector.wait_for(p, limit).await,
        None => true,
    };
    let issued_token = done.issued.as_ref().map(|t| t.expose_secret().to_owned());
    MutationResult { changed, id, position, visible, issued_token }
}
