//! Who is asking: the bearer token (`Authorization: Bearer …`, for programs) or the session cookie (for
//! browsers), recognised once per request by the administration service, with the caller's rights read
//! fresh. Resolvers ask the context for the viewer; an unknown or ended session is an error there, not
//! a silent anonymous request.

use std::net::IpAddr;
use std::sync::Arc;

use async_graphql::Context;
use axum::http::HeaderMap;
use recall_commands::admin::{Admin, Principal};
use recall_domain::access::{Authority, Permission, Scope};

use crate::error::ApiError;

/// The cookie a browser session lives in (HTTP-only, SameSite=Strict).
pub const SESSION_COOKIE: &str = "recall_session";

/// A signed-in caller with their rights.
#[derive(Debug, Clone)]
pub struct Viewer {
    pub principal: Principal,
    pub authority: Authority,
}

impl Viewer {
    pub fn scope(&self) -> Scope {
        self.authority.grants.scope
    }

    pub fn may(&self, permission: Permission) -> bool {
        self.authority.grants.allows(permission)
    }

    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.may(permission) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!("your role does not permit {permission}")))
        }
    }
}

/// What the request brought: the viewer (or why there is none) and where it came from.
#[derive(Debug, Clone)]
pub struct RequestAuth {
    pub viewer: Result<Option<Arc<Viewer>>, ApiError>,
    pub source: Option<IpAddr>,
    /// The device id a browser keeps in its device cookie.
    pub device: Option<uuid::Uuid>,
}

/// The cookie a browser keeps its device id in, so that its sessions stay on one device.
pub const DEVICE_COOKIE: &str = "recall_device";

fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get_all(axum::http::header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|cookies| {
        cookies.split(';').find_map(|c| c.trim().strip_prefix(name).and_then(|rest| rest.strip_prefix('=')))
    })
}

/// The device id of the device cookie, if it holds one.
pub fn device_from(headers: &HeaderMap) -> Option<uuid::Uuid> {
    cookie(headers, DEVICE_COOKIE).and_then(|id| uuid::Uuid::parse_str(id.trim()).ok())
}

/// The token a request carries: the bearer token first, else the session cookie.
pub fn token_from(headers: &HeaderMap) -> Option<String> {
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned());
    bearer.or_else(|| cookie(headers, SESSION_COOKIE).map(|t| t.trim().to_owned()))
}

/// Recognises the token (if any) and reads the caller's rights.
pub async fn authenticate(
    admin: &Admin,
    token: Option<String>,
    source: Option<IpAddr>,
    device: Option<uuid::Uuid>,
) -> RequestAuth {
    let viewer = match token.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(token) => match admin.recognise(&token, source).await {
            Ok((principal, authority)) => Ok(Some(Arc::new(Viewer { principal, authority }))),
            Err(e) => Err(ApiError::from(e)),
        },
    };
    RequestAuth { viewer, source, device }
}

fn request_auth<'a>(ctx: &'a Context<'_>) -> Result<&'a RequestAuth, ApiError> {
    ctx.data::<RequestAuth>().map_err(|_| ApiError::Internal)
}

/// The signed-in viewer, who may do more than change their password.
pub fn viewer<'a>(ctx: &'a Context<'_>) -> Result<&'a Viewer, ApiError> {
    let viewer = viewer_even_if_password_must_change(ctx)?;
    if viewer.principal.must_change_password && viewer.principal.caller.impersonator.is_none() {
        return Err(ApiError::Forbidden("change your password first (changeOwnPassword)".to_owned()));
    }
    Ok(viewer)
}

/// The signed-in viewer, also while their password must be changed (for `me` and `changeOwnPassword`).
pub fn viewer_even_if_password_must_change<'a>(ctx: &'a Context<'_>) -> Result<&'a Viewer, ApiError> {
    match &request_auth(ctx)?.viewer {
        Ok(Some(viewer)) => Ok(viewer),
        Ok(None) => Err(ApiError::not_signed_in()),
        Err(e) => Err(e.clone()),
    }
}

/// The device cookie's id, if the request brought one.
pub fn device(ctx: &Context<'_>) -> Option<uuid::Uuid> {
    request_auth(ctx).ok().and_then(|auth| auth.device)
}

/// Where the request came from (for sign-in and the audit trail).
pub fn source(ctx: &Context<'_>) -> Option<IpAddr> {
    request_auth(ctx).ok().and_then(|auth| auth.source)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_token_wins_over_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::COOKIE, "a=b; recall_session=from-cookie".parse().expect("header"));
        assert_eq!(token_from(&headers).as_deref(), Some("from-cookie"));
        headers.insert(axum::http::header::AUTHORIZATION, "Bearer from-header".parse().expect("header"));
        assert_eq!(token_from(&headers).as_deref(), Some("from-header"));
        assert_eq!(token_from(&HeaderMap::new()), None);
    }
}
