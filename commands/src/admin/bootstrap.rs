//! What a new installation needs before anyone can sign in: the four pre-defined roles, and a first root
//! administrator made from the command line (refused once an active one exists).

use recall_domain::access::PredefinedRole;
use recall_domain::index::{IndexKey, Namespace};
use recall_domain::role::RoleCommand;
use recall_domain::tenant::{RecordingClients, TenantCommand, TenantSettings};
use recall_domain::user::{RoleFacts, UserCommand, UserProfile};
use recall_domain::CommandMeta;
use secrecy::SecretString;
use uuid::Uuid;

use super::{Admin, AdminError};
use crate::credentials;
use crate::secrets::SecretKind;
use crate::service::CommandError;

/// The name of the tenant the embedded default creates for a first run.
pub const DEFAULT_TENANT: &str = "default";

impl Admin {
    /// For the embedded default: a tenant named `default` whose recording clients are this machine
    /// (loopback), so a first run records a local test call with no set-up. Does nothing when a tenant of
    /// that name exists (made earlier, or by an administrator); returns the tenant's id either way.
    pub async fn ensure_default_tenant(&self) -> Result<Uuid, AdminError> {
        let key = IndexKey::name(Namespace::TenantName, DEFAULT_TENANT);
        if let Some(holder) = self.index.holder(&key).await? {
            if let Ok(tenant_id) = Uuid::parse_str(&holder.aggregate_id) {
                return Ok(tenant_id);
            }
        }
        let tenant_id = Uuid::now_v7();
        let meta = || CommandMeta::system("bootstrap").in_tenant(tenant_id);
        let create = TenantCommand::CreateTenant(TenantSettings::named(DEFAULT_TENANT));
        match self.tenants.execute(&tenant_id.to_string(), create, meta()).await {
            Ok(_) => {}
            // Another process made it at the same moment: use that one.
            Err(CommandError::Taken(_)) => return Box::pin(self.ensure_default_tenant()).await,
            Err(e) => return Err(e.into()),
        }
        let v4 = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(127, 0, 0, 0), 8)
            .map_err(|e| AdminError::Internal(e.to_string()))?;
        let v6 = ipnet::IpNet::from(std::net::IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        let loopback = RecordingClients { networks: vec![ipnet::IpNet::V4(v4), v6], sip_domains: Vec::new() };
        let set = TenantCommand::SetRecordingClients(loopback);
        self.tenants.execute(&tenant_id.to_string(), set, meta()).await?;
        Ok(tenant_id)
    }

    /// Defines the pre-defined roles that do not exist yet (every start calls this; it is idempotent).
    pub async fn seed_roles(&self) -> Result<(), AdminError> {
        for role in PredefinedRole::ALL {
            let role_id = role.role_id();
            if self.load(&self.roles, role_id).await?.is_defined() {
                continue;
            }
            let define =
                RoleCommand::DefineRole { name: role.name().to_owned(), grants: role.grants(), predefined: Some(role) };
            match self.roles.execute(&role_id.to_string(), define, CommandMeta::system("bootstrap")).await {
                // Another recall process seeded it at the same moment.
                Ok(_) | Err(CommandError::Conflict { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Whether an active user holds the Root Administrator role.
    pub async fn has_active_root(&self) -> Result<bool, AdminError> {
        Ok(self.active_root().await?.is_some())
    }

    /// One active root administrator of the installation, if there is any.
    pub async fn active_root(&self) -> Result<Option<Uuid>, AdminError> {
        let holders = self
            .index
            .with_prefix(&Namespace::RoleHolders(PredefinedRole::RootAdministrator.role_id()), "", 10_000)
            .await?;
        for (_, holder) in holders {
            let Ok(user_id) = Uuid::parse_str(&holder.aggregate_id) else { continue };
            if self.load(&self.users, user_id).await?.is_active() {
                return Ok(Some(user_id));
            }
        }
        Ok(None)
    }

    /// Creates the first root administrator of an installation, with web login and the given password.
    /// Refused when an active root administrator exists: from then on, administrators create users.
    pub async fn create_root(&self, username: &str, password: SecretString) -> Result<Uuid, AdminError> {
        self.seed_roles().await?;
        if self.has_active_root().await? {
            return Err(AdminError::Invalid(
                "an active root administrator exists already; sign in as that user to create others".to_owned(),
            ));
        }
        credentials::check_policy(&password, username).map_err(|e| AdminError::Invalid(e.to_string()))?;
        let user_id = Uuid::now_v7();
        let hash = credentials::hash_password(password).await.map_err(|e| AdminError::Internal(e.to_string()))?;
        let secret =
            self.secrets.put(SecretKind::PasswordHash, None, &format!("User/{user_id}"), hash.as_bytes()).await?;
        let root = PredefinedRole::RootAdministrator;
        let mut profile = UserProfile::new(username, root.role_id());
        profile.login_enabled = true;
        profile.password = Some(secret);
        let command = UserCommand::CreateUser {
            user_id,
            tenant_id: None,
            profile: Box::new(profile),
            role: RoleFacts { role_id: root.role_id(), scope: root.grants().scope },
        };
        if let Err(e) = self.run(&self.users, user_id, command, CommandMeta::system("cli:create-root")).await {
            let _ = self.secrets.destroy(secret).await;
            return Err(e);
        }
        Ok(user_id)
    }
}
