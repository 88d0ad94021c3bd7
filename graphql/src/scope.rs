//! What a viewer's role and scope let them see, as SQL conditions on the read model. Every list and every
//! lookup goes through these, so no query returns a row outside the caller's reach: service-wide sees all;
//! tenant scope its own tenant; managed groups the users (and their calls) of the groups managed, plus
//! oneself; own calls oneself only.

use recall_domain::access::{Permission, Scope};
use sqlx::{Postgres, QueryBuilder};
use uuid::Uuid;

use crate::auth::Viewer;
use crate::error::ApiError;

fn managed(viewer: &Viewer) -> Vec<Uuid> {
    viewer.authority.managed_groups.iter().copied().collect()
}

/// ` AND (<users `u` the viewer reaches>)`.
pub fn users(qb: &mut QueryBuilder<'_, Postgres>, viewer: &Viewer, u: &str) {
    let a = &viewer.authority;
    match a.grants.scope {
        Scope::ServiceWide => {}
        Scope::Tenant => {
            qb.push(format!(" AND {u}.tenant_id = ")).push_bind(a.tenant_id);
        }
        Scope::ManagedGroups => {
            qb.push(format!(" AND {u}.tenant_id = ")).push_bind(a.tenant_id);
            qb.push(format!(" AND ({u}.groups && ")).push_bind(managed(viewer));
            qb.push(format!(" OR {u}.user_id = ")).push_bind(a.user_id).push(")");
        }
        Scope::OwnCalls => {
            qb.push(format!(" AND {u}.user_id = ")).push_bind(a.user_id);
        }
    }
}

/// ` AND (<groups `g` the viewer reaches>)`: their tenant's (tenant scope), managed and own groups.
pub async fn groups(qb: &mut QueryBuilder<'_, Postgres>, viewer: &Viewer, g: &str, own_groups: Vec<Uuid>) {
    let a = &viewer.authority;
    match a.grants.scope {
        Scope::ServiceWide => {}
        Scope::Tenant => {
            qb.push(format!(" AND {g}.tenant_id = ")).push_bind(a.tenant_id);
        }
        Scope::ManagedGroups | Scope::OwnCalls => {
            let mut reach = own_groups;
            if a.grants.scope == Scope::ManagedGroups {
                reach.extend(managed(viewer));
            }
            qb.push(format!(" AND {g}.group_id = ANY(")).push_bind(reach).push(")");
        }
    }
}

/// ` AND (<tenants `t` the viewer reaches>)`.
pub fn tenants(qb: &mut QueryBuilder<'_, Postgres>, viewer: &Viewer, t: &str) {
    if viewer.scope() != Scope::ServiceWide {
        qb.push(format!(" AND {t}.tenant_id = ")).push_bind(viewer.authority.tenant_id);
    }
}

/// ` AND (<tenant-wide things of tenant column `column` the viewer's scope reaches with `permission`>)`:
/// service-wide everything; tenant (and, for `shared` things, managed groups) the own tenant.
pub fn tenant_config(
    qb: &mut QueryBuilder<'_, Postgres>,
    viewer: &Viewer,
    column: &str,
    permission: Permission,
    shared: bool,
) -> Result<(), ApiError> {
    viewer.require(permission)?;
    match viewer.scope() {
        Scope::ServiceWide => {}
        Scope::Tenant => {
            qb.push(format!(" AND {column} = ")).push_bind(viewer.authority.tenant_id);
        }
        Scope::ManagedGroups if shared => {
            qb.push(format!(" AND {column} = ")).push_bind(viewer.authority.tenant_id);
        }
        _ => return Err(ApiError::Forbidden("this is outside what your role's scope reaches".to_owned())),
    }
    Ok(())
}

/// ` AND (<calls `c` the viewer may see>)`; calls assigned to nobody only from tenant scope up.
pub fn calls(qb: &mut QueryBuilder<'_, Postgres>, viewer: &Viewer, c: &str, directory: &str) -> Result<(), ApiError> {
    viewer.require(Permission::ViewCalls)?;
    let a = &viewer.authority;
    match a.grants.scope {
        Scope::ServiceWide => {}
        Scope::Tenant => {
            qb.push(format!(" AND {c}.tenant_id = ")).push_bind(a.tenant_id);
        }
        Scope::ManagedGroups => {
            qb.push(format!(" AND {c}.tenant_id = ")).push_bind(a.tenant_id);
            qb.push(format!(" AND ({c}.user_id = ")).push_bind(a.user_id);
            qb.push(format!(" OR {c}.user_id IN (SELECT m.user_id FROM {directory}.users m WHERE m.groups && "))
                .push_bind(managed(viewer))
                .push("))");
        }
        Scope::OwnCalls => {
            qb.push(format!(" AND {c}.user_id = ")).push_bind(a.user_id);
        }
    }
    Ok(())
}

/// ` AND (<audit rows `r` the viewer may see>)`: the whole trail service-wide, the own tenant's from tenant
/// scope, and below that only the viewer's own actions.
pub fn audit(qb: &mut QueryBuilder<'_, Postgres>, viewer: &Viewer, r: &str) -> Result<(), ApiError> {
    viewer.require(Permission::ViewAuditTrail)?;
    let a = &viewer.authority;
    match a.grants.scope {
        Scope::ServiceWide => {}
        Scope::Tenant => {
            qb.push(format!(" AND {r}.tenant_id = ")).push_bind(a.tenant_id);
        }
        Scope::ManagedGroups | Scope::OwnCalls => {
            qb.push(format!(" AND {r}.actor = ")).push_bind(format!("user:{}", a.user_id));
        }
    }
    Ok(())
}
