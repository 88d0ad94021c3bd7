//! What a new installation needs before anyone can sign in: the four pre-defined roles, and a first root
//! administrator made from the command line (refused once an active one exists).

use recall_domain::access::PredefinedRole;
use recall_domain::index::Namespace;
use recall_domain::role::RoleCommand;
use recall_domain::user::{RoleFacts, UserCommand, UserProfile};
use recall_domain::CommandMeta;
use secrecy::SecretString;
use uuid::Uuid;

use super::{Admin, AdminError};
use crate::credentials;
use crate::secrets::SecretKind;
use crate::service::CommandError;

impl Admin {
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
