//! Signing in and out, passwords, and impersonation. Sign-in answers with the session token (for programs,
//! as a bearer token) and sets it as an HTTP-only, SameSite=Strict cookie (for browsers); a failed sign-in
//! says only "wrong username or password" (or to wait).

use async_graphql::{Context, InputObject, Object, SimpleObject};
use axum::http::header::SET_COOKIE;
use chrono::{DateTime, Utc};
use recall_commands::admin::{AdminCommand, SignInError, SignInRequest};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::{run, Changed, MutationResult};
use crate::auth::{self, viewer_even_if_password_must_change, DEVICE_COOKIE, SESSION_COOKIE};
use crate::error::ApiError;
use crate::ApiState;

/// The device a sign-in comes from.
#[derive(Debug, Default, InputObject)]
pub struct DeviceInput {
    /// The id recall gave this device at an earlier sign-in (browsers keep it in a cookie).
    pub id: Option<Uuid>,
    /// What the device is, e.g. its user agent.
    pub label: Option<String>,
}

/// A started session.
#[derive(Debug, SimpleObject)]
pub struct SignedIn {
    /// The bearer token (`Authorization: Bearer <token>`); browsers get it as an HTTP-only cookie too.
    pub token: String,
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub device_id: Uuid,
    /// The user must change the password (changeOwnPassword) before anything else.
    pub must_change_password: bool,
    pub expires_at: DateTime<Utc>,
}

fn cookie(state: &ApiState, name: &str, value: &str, max_age: i64) -> String {
    let secure = if state.options.secure_cookies { "; Secure" } else { "" };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

#[derive(Debug, Default)]
pub struct SessionMutation;

#[Object]
impl SessionMutation {
    /// Signs in with a username and password and starts a session on the device.
    async fn sign_in(
        &self,
        ctx: &Context<'_>,
        username: String,
        password: String,
        device: Option<DeviceInput>,
    ) -> async_graphql::Result<SignedIn> {
        let state = ctx.data_unchecked::<ApiState>();
        let device = device.unwrap_or_default();
        let request = SignInRequest {
            username,
            password: SecretString::from(password),
            device_id: device.id.or_else(|| auth::device(ctx)),
            device_label: device.label.unwrap_or_default(),
            source_addr: auth::source(ctx),
        };
        let signed_in = state.admin.sign_in(request).await.map_err(|e| match e {
            SignInError::Failed => ApiError::Unauthenticated("wrong username or password".to_owned()),
            SignInError::RateLimited(seconds) => {
                ApiError::Forbidden(format!("too many failed sign-ins; try again in {seconds} seconds"))
            }
            SignInError::Unavailable(cause) => {
                tracing::warn!(cause, "sign-in could not reach the database");
                ApiError::Unavailable
            }
        })?;
        let max_age = (signed_in.expires_at - Utc::now()).num_seconds().max(0);
        ctx.append_http_header(SET_COOKIE, cookie(state, SESSION_COOKIE, signed_in.token.expose_secret(), max_age));
        ctx.append_http_header(
            SET_COOKIE,
            cookie(state, DEVICE_COOKIE, &signed_in.device_id.to_string(), 400 * 86_400),
        );
        Ok(SignedIn {
            token: signed_in.token.expose_secret().to_owned(),
            session_id: signed_in.session_id,
            user_id: signed_in.user_id,
            device_id: signed_in.device_id,
            must_change_password: signed_in.must_change_password,
            expires_at: signed_in.expires_at,
        })
    }

    /// Ends the current session (and clears the session cookie).
    async fn sign_out(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        let viewer = viewer_even_if_password_must_change(ctx)?;
        let state = ctx.data_unchecked::<ApiState>();
        let session_id =
            viewer.principal.caller.session_id.ok_or_else(|| ApiError::invalid("not signed in with a session"))?;
        let mut caller = viewer.principal.caller.clone();
        // Signing out is the signed-in user's act, also during an impersonation.
        caller.user_id = viewer.principal.signed_in_user;
        caller.impersonator = None;
        state.admin.execute(&caller, AdminCommand::TerminateSession { session_id }).await.map_err(ApiError::from)?;
        ctx.append_http_header(SET_COOKIE, cookie(state, SESSION_COOKIE, "", 0));
        Ok(true)
    }

    /// Changes the viewer's own password (also when it must be changed before anything else).
    async fn change_own_password(
        &self,
        ctx: &Context<'_>,
        current_password: String,
        new_password: String,
    ) -> async_graphql::Result<MutationResult> {
        let me = viewer_even_if_password_must_change(ctx)?.authority.user_id;
        let command = AdminCommand::ChangeOwnPassword {
            current: SecretString::from(current_password),
            new: SecretString::from(new_password),
        };
        run(ctx, Changed::User, me, command).await
    }

    /// Sets a new password with the token of a password reset link (no sign-in needed).
    async fn complete_password_reset(
        &self,
        ctx: &Context<'_>,
        token: String,
        new_password: String,
    ) -> async_graphql::Result<bool> {
        let state = ctx.data_unchecked::<ApiState>();
        state
            .admin
            .complete_password_reset(&token, SecretString::from(new_password), auth::source(ctx))
            .await
            .map_err(ApiError::from)?;
        Ok(true)
    }

    /// Starts acting as another user, with exactly their rights. When the user's tenant asks for it, a
    /// verification code is sent first (see verifyImpersonation).
    async fn start_impersonation(&self, ctx: &Context<'_>, user_id: Uuid) -> async_graphql::Result<MutationResult> {
        run(ctx, Changed::Session, user_id, AdminCommand::StartImpersonation { user_id }).await
    }

    /// Enters the verification code sent for a requested impersonation; the right code starts it.
    async fn verify_impersonation(&self, ctx: &Context<'_>, code: String) -> async_graphql::Result<MutationResult> {
        let session = viewer_even_if_password_must_change(ctx)?.principal.caller.session_id.unwrap_or_default();
        run(ctx, Changed::Session, session, AdminCommand::VerifyImpersonation { code: SecretString::from(code) }).await
    }

    /// Issues an API token for a program that acts as `userId` (default: the viewer) with that user's rights.
    /// The token is in `issuedToken`, shown this once.
    async fn issue_api_token(
        &self,
        ctx: &Context<'_>,
        name: String,
        user_id: Option<Uuid>,
        expires_in_days: Option<u32>,
    ) -> async_graphql::Result<MutationResult> {
        let me = viewer_even_if_password_must_change(ctx)?.authority.user_id;
        let user_id = user_id.unwrap_or(me);
        let command = AdminCommand::IssueApiToken { token_id: Uuid::now_v7(), user_id, name, expires_in_days };
        run(ctx, Changed::User, user_id, command).await
    }

    /// Revokes an API token: every request with it is refused from then on.
    async fn revoke_api_token(&self, ctx: &Context<'_>, token_id: Uuid) -> async_graphql::Result<MutationResult> {
        run(ctx, Changed::ApiToken, token_id, AdminCommand::RevokeApiToken { token_id }).await
    }

    /// Stops an impersonation (or withdraws one waiting for its code).
    async fn stop_impersonation(&self, ctx: &Context<'_>) -> async_graphql::Result<MutationResult> {
        let session = viewer_even_if_password_must_change(ctx)?.principal.caller.session_id.unwrap_or_default();
        run(ctx, Changed::Session, session, AdminCommand::StopImpersonation).await
    }
}
