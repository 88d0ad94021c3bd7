//! Test support (feature `test-support`): a small installation for administration tests: the pre-defined roles, a root administrator, two tenants
//! (A and B) with groups, and in tenant A an administrator, a supervisor managing group A1 and agents in
//! A1 and A2; in tenant B an administrator and an agent. Everyone signs in for real and acts through a
//! real session.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use crate::admin::{Admin, AdminCommand, AdminConfig, Caller, Done, GroupRequest, NewUser, SignInRequest, UserRequest};
use crate::delivery::{CodeDelivery, Recipient};
use crate::secrets::{SecretStore, SecretsKey};
use crate::storage_probe::ConnectionProbe;
use crate::{EventLog, LogConfig, LogMetrics};
use futures::future::BoxFuture;
use recall_domain::access::PredefinedRole;
use recall_domain::tenant::{TenantCommand, TenantSettings};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const PASSWORD: &str = "correct horse battery staple";

/// Codes "sent" by e-mail land here, as an inbox would hold them.
#[derive(Debug, Default)]
pub struct Inbox {
    pub sent: Mutex<Vec<(Recipient, String)>>,
}

impl Inbox {
    pub fn last_code(&self) -> Option<String> {
        self.sent.lock().expect("inbox").last().map(|(_, code)| code.clone())
    }
}

impl CodeDelivery for Inbox {
    fn available(&self) -> bool {
        true
    }

    fn deliver<'a>(&'a self, to: &'a Recipient, code: &'a SecretString) -> BoxFuture<'a, Result<(), String>> {
        self.sent.lock().expect("inbox").push((to.clone(), code.expose_secret().to_owned()));
        Box::pin(async { Ok(()) })
    }
}

/// A signed-in user of the world.
#[derive(Debug, Clone)]
pub struct Person {
    pub user_id: Uuid,
    pub username: String,
    pub caller: Caller,
    pub token: String,
}

#[derive(Debug)]
pub struct World {
    pub admin: Arc<Admin>,
    pub log: Arc<EventLog>,
    pub inbox: Arc<Inbox>,
    pub shutdown: CancellationToken,
    pub root: Person,
    pub tenant_a: Uuid,
    pub tenant_b: Uuid,
    pub group_a1: Uuid,
    pub group_a2: Uuid,
    pub group_b1: Uuid,
    pub admin_a: Person,
    pub supervisor_a: Person,
    pub agent_a1: Person,
    pub agent_a2: Person,
    pub admin_b: Person,
    pub agent_b: Person,
}

pub fn id() -> Uuid {
    Uuid::now_v7()
}

pub fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

/// A unique name with a readable stem.
pub fn unique(stem: &str) -> String {
    format!("{stem}-{}", &Uuid::now_v7().simple().to_string()[20..])
}

pub async fn admin_on(log: Arc<EventLog>, inbox: Arc<Inbox>) -> Arc<Admin> {
    let secrets = SecretStore::new(log.pool().clone(), Some(SecretsKey::generate()));
    Arc::new(Admin::new(log, secrets, inbox, Arc::new(ConnectionProbe::default()), AdminConfig::default()))
}

impl World {
    pub async fn build(pool: PgPool) -> Self {
        let (log, shutdown) = running_log(pool).await;
        let inbox = Arc::new(Inbox::default());
        let admin = admin_on(log.clone(), inbox.clone()).await;
        let root_id = admin.create_root("root", secret(PASSWORD)).await.expect("root is created");
        let root = sign_in(&admin, root_id, "root").await;
        let tenant_a = create_tenant(&admin, &root.caller, "Tenant A").await;
        let tenant_b = create_tenant(&admin, &root.caller, "Tenant B").await;
        let group_a1 = create_group(&admin, &root.caller, tenant_a, "A1").await;
        let group_a2 = create_group(&admin, &root.caller, tenant_a, "A2").await;
        let group_b1 = create_group(&admin, &root.caller, tenant_b, "B1").await;
        let person = |tenant, role, groups: Vec<Uuid>, managed: Vec<Uuid>, name: &'static str| {
            let admin = admin.clone();
            let root = root.caller.clone();
            async move {
                let user_id = create_user(&admin, &root, tenant, role, groups, managed, name).await;
                sign_in(&admin, user_id, name).await
            }
        };
        let admin_a = person(tenant_a, PredefinedRole::Administrator, vec![group_a1], vec![], "admin-a").await;
        let supervisor_a =
            person(tenant_a, PredefinedRole::Supervisor, vec![group_a1], vec![group_a1], "supervisor-a").await;
        let agent_a1 = person(tenant_a, PredefinedRole::Agent, vec![group_a1], vec![], "agent-a1").await;
        let agent_a2 = person(tenant_a, PredefinedRole::Agent, vec![group_a2], vec![], "agent-a2").await;
        let admin_b = person(tenant_b, PredefinedRole::Administrator, vec![group_b1], vec![], "admin-b").await;
        let agent_b = person(tenant_b, PredefinedRole::Agent, vec![group_b1], vec![], "agent-b").await;
        Self {
            admin,
            log,
            inbox,
            shutdown,
            root,
            tenant_a,
            tenant_b,
            group_a1,
            group_a2,
            group_b1,
            admin_a,
            supervisor_a,
            agent_a1,
            agent_a2,
            admin_b,
            agent_b,
        }
    }

    /// Runs `command` as `who`.
    pub async fn as_(&self, who: &Person, command: AdminCommand) -> Result<Done, crate::admin::AdminError> {
        self.admin.execute(&who.caller, command).await
    }
}

pub async fn create_tenant(admin: &Admin, root: &Caller, name: &str) -> Uuid {
    let tenant_id = id();
    let command =
        AdminCommand::Tenant { tenant_id, command: TenantCommand::CreateTenant(TenantSettings::named(unique(name))) };
    admin.execute(root, command).await.expect("tenant is created");
    tenant_id
}

pub async fn create_group(admin: &Admin, root: &Caller, tenant_id: Uuid, name: &str) -> Uuid {
    let group_id = id();
    let request = GroupRequest::Create { tenant_id, name: unique(name), timezone: None };
    admin.execute(root, AdminCommand::Group { group_id, request }).await.expect("group is created");
    group_id
}

/// A user who may sign in with [`PASSWORD`].
pub async fn create_user(
    admin: &Admin,
    by: &Caller,
    tenant_id: Uuid,
    role: PredefinedRole,
    groups: Vec<Uuid>,
    managed: Vec<Uuid>,
    name: &str,
) -> Uuid {
    let user_id = id();
    let mut user = NewUser::new(name, role.role_id());
    user.groups = groups;
    user.managed_groups = managed.into_iter().collect::<BTreeSet<_>>();
    user.login_enabled = true;
    user.password = Some(secret(PASSWORD));
    let request = UserRequest::Create { tenant_id: Some(tenant_id), user: Box::new(user) };
    admin.execute(by, AdminCommand::User { user_id, request }).await.expect("user is created");
    user_id
}

pub async fn sign_in(admin: &Admin, user_id: Uuid, username: &str) -> Person {
    let signed_in = admin
        .sign_in(SignInRequest {
            username: username.to_owned(),
            password: secret(PASSWORD),
            device_id: None,
            device_label: "test browser".to_owned(),
            source_addr: Some("192.0.2.10".parse().expect("address")),
        })
        .await
        .expect("signs in");
    assert_eq!(signed_in.user_id, user_id);
    let token = signed_in.token.expose_secret().to_owned();
    let principal = admin.authenticate(&token, None).await.expect("the new session is recognised");
    Person { user_id, username: username.to_owned(), caller: principal.caller, token }
}

/// Opens the log of a test database as site `test` and starts its sequencer; cancel the token to stop it.
pub async fn running_log(pool: PgPool) -> (Arc<EventLog>, CancellationToken) {
    let mut config = LogConfig::new("test", "test-node");
    config.follow_poll = std::time::Duration::from_millis(100);
    let log = EventLog::open(pool, config, LogMetrics::unregistered().expect("metrics")).await.expect("the log opens");
    let shutdown = CancellationToken::new();
    log.spawn(true, shutdown.clone());
    (log, shutdown)
}

/// Waits until nothing appended is left unsequenced.
pub async fn wait_until_sequenced(log: &EventLog, limit: std::time::Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let status = log.status().await.expect("status");
        if status.unsequenced == 0 {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {} unsequenced", status.unsequenced);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
