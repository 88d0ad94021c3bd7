//! Synthetic installations for benchmarks and demonstrations: tenants with groups, administrators,
//! supervisors and agents, a stream of administrative changes (the audit trail), and calls spread over
//! the past days. Everything goes through the real command path (authorization, decision, envelope,
//! write-side index, append), so the log holds exactly what a real installation of that size would.
//! Names carry a run tag, so generating twice adds a second population beside the first.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recall_domain::access::PredefinedRole;
use recall_domain::call::{Call, CallCommand, CallDirection, CallStart, Participant};
use recall_domain::tenant::{TenantCommand, TenantSettings};
use recall_domain::CommandMeta;
use secrecy::SecretString;
use uuid::Uuid;

use crate::admin::{Admin, AdminCommand, AdminError, Caller, GroupRequest, NewUser, UserRequest};
use crate::service::{CommandError, CommandService};

/// What to generate.
#[derive(Debug, Clone)]
pub struct SyntheticSpec {
    pub tenants: usize,
    pub groups_per_tenant: usize,
    pub agents_per_group: usize,
    /// Calls in all, spread evenly over the tenants' agents and over `days`.
    pub calls: u64,
    /// Administrative changes in all (creating the directory counts towards it).
    pub audit_events: u64,
    /// Calls start within this many days before now.
    pub days: u32,
    /// Share of calls (0 to 1) whose extension belongs to no user: "not assigned to users".
    pub unassigned_share: f64,
    /// Commands in flight at once.
    pub writers: usize,
    /// Password of the generated administrators and supervisors (and of the root administrator the
    /// generator creates when the installation has none). Without one, none of them can sign in.
    pub password: Option<SecretString>,
    /// Seeds the choices (who calls when, what changes); names and ids are new on every run.
    pub seed: u64,
}

impl Default for SyntheticSpec {
    fn default() -> Self {
        Self {
            tenants: 4,
            groups_per_tenant: 25,
            agents_per_group: 10,
            calls: 1_000_000,
            audit_events: 100_000,
            days: 90,
            unassigned_share: 0.1,
            writers: 32,
            password: None,
            seed: 1,
        }
    }
}

/// One generated tenant: who administers it and who works in it.
#[derive(Debug, Clone)]
pub struct SyntheticTenant {
    pub tenant_id: Uuid,
    pub name: String,
    pub administrator: SyntheticUser,
    pub groups: Vec<SyntheticGroup>,
}

#[derive(Debug, Clone)]
pub struct SyntheticGroup {
    pub group_id: Uuid,
    pub name: String,
    /// Manages this group only.
    pub supervisor: SyntheticUser,
    pub agents: Vec<SyntheticUser>,
}

#[derive(Debug, Clone)]
pub struct SyntheticUser {
    pub user_id: Uuid,
    pub username: String,
    /// Agents have one extension each; administrators and supervisors none.
    pub extension: Option<String>,
}

/// What a run generated.
#[derive(Debug, Clone)]
pub struct SyntheticReport {
    /// Names of this run's tenants, groups and users start with `syn<tag>-`.
    pub tag: String,
    /// The root administrator who created the tenants.
    pub root_user_id: Uuid,
    pub tenants: Vec<SyntheticTenant>,
    /// Events appended by administrative commands (directory and changes).
    pub admin_events: u64,
    pub calls: u64,
    /// When the calls' time span begins and ends.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Which part of the generation a progress report is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Directory,
    Changes,
    Calls,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Directory => "directory",
            Self::Changes => "administrative changes",
            Self::Calls => "calls",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyntheticError {
    #[error("the specification is not usable: {0}")]
    Spec(String),
    #[error("an administrative command failed")]
    Admin(#[from] AdminError),
    #[error("recording a call failed: {0}")]
    Call(String),
}

impl From<CommandError<recall_domain::call::CallError>> for SyntheticError {
    fn from(e: CommandError<recall_domain::call::CallError>) -> Self {
        Self::Call(e.to_string())
    }
}

const FIRST_NAMES: &[&str] = &[
    "Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Klara", "Lukas", "Mia", "Noah",
    "Olga", "Paul", "Rosa", "Simon", "Tara", "Umar", "Vera", "Wim", "Yara", "Zoe",
];
const LAST_NAMES: &[&str] = &[
    "Almeida", "Becker", "Costa", "Dubois", "Eriksen", "Fischer", "García", "Hansen", "Ivanova", "Jansen", "Kowalski",
    "Larsen", "Müller", "Novak", "Olsen", "Petrov", "Quinn", "Rossi", "Schmidt", "Tanaka", "Urban", "Vogel", "Weber",
];

/// Generates an installation as `spec` says, through `admin` (and a call service on the same log).
/// `progress(phase, done, total)` is called now and then. Acts as the first active root administrator,
/// or creates one (`syn<tag>-root`) when there is none.
pub async fn generate(
    admin: &Arc<Admin>,
    spec: &SyntheticSpec,
    progress: impl Fn(Phase, u64, u64) + Send + Sync,
) -> Result<SyntheticReport, SyntheticError> {
    if spec.tenants == 0 || spec.groups_per_tenant == 0 || spec.agents_per_group == 0 {
        return Err(SyntheticError::Spec("tenants, groups and agents must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&spec.unassigned_share) || spec.days == 0 || spec.writers == 0 {
        return Err(SyntheticError::Spec("unassigned share in 0..=1, days and writers at least 1".into()));
    }
    let tag = Uuid::now_v7().simple().to_string()[20..26].to_owned();
    let root_user_id = match admin.active_root().await? {
        Some(root) => root,
        None => {
            let password =
                spec.password.clone().unwrap_or_else(|| SecretString::from(hex::encode(rand::random::<[u8; 24]>())));
            admin.create_root(&format!("syn{tag}-root"), password).await?
        }
    };
    let root = Caller::user(root_user_id);
    let admin_events = AtomicU64::new(0);

    let directory_total = (spec.tenants * (2 + spec.groups_per_tenant * (2 + spec.agents_per_group))) as u64;
    let made = AtomicU64::new(0);
    let tenants: Vec<SyntheticTenant> = stream::iter(0..spec.tenants)
        .map(|t| {
            let (root, tag, made, admin_events, progress) = (&root, &tag, &made, &admin_events, &progress);
            async move {
                let step = |events: u64| {
                    admin_events.fetch_add(events, Ordering::Relaxed);
                    let done = made.fetch_add(1, Ordering::Relaxed) + 1;
                    if done.is_multiple_of(100) {
                        progress(Phase::Directory, done, directory_total);
                    }
                };
                tenant(admin, spec, root, tag, t, &step).await
            }
        })
        .buffered(spec.tenants.min(spec.writers))
        .try_collect()
        .await?;
    progress(Phase::Directory, directory_total, directory_total);

    let directory_events = admin_events.load(Ordering::Relaxed);
    let changes = spec.audit_events.saturating_sub(directory_events);
    changes_run(admin, spec, &tenants, changes, &admin_events, &progress).await?;

    let to = Utc::now();
    let from = to - Duration::days(i64::from(spec.days));
    calls_run(admin, spec, &tenants, from, to, &progress).await?;

    Ok(SyntheticReport {
        tag,
        root_user_id,
        tenants,
        admin_events: admin_events.load(Ordering::Relaxed),
        calls: spec.calls,
        from,
        to,
    })
}

fn full_name(rng: &mut StdRng) -> String {
    let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
    let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
    format!("{first} {last}")
}

/// Creates one tenant with its administrator, groups, supervisors and agents.
async fn tenant(
    admin: &Admin,
    spec: &SyntheticSpec,
    root: &Caller,
    tag: &str,
    t: usize,
    step: &(dyn Fn(u64) + Send + Sync),
) -> Result<SyntheticTenant, SyntheticError> {
    let mut rng = StdRng::seed_from_u64(spec.seed ^ (t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let tenant_id = Uuid::now_v7();
    let name = format!("syn{tag}-tenant-{t}");
    let command = TenantCommand::CreateTenant(TenantSettings::named(name.clone()));
    step(admin.execute(root, AdminCommand::Tenant { tenant_id, command }).await?.event_ids().count() as u64);

    let person =
        |username: String, role: PredefinedRole, groups: Vec<Uuid>, managed: Vec<Uuid>, ext, rng: &mut StdRng| {
            let mut user = NewUser::new(username.clone(), role.role_id());
            user.full_name = Some(full_name(rng));
            user.email = Some(format!("{username}@example.com"));
            user.groups = groups;
            user.managed_groups = managed.into_iter().collect::<BTreeSet<_>>();
            if let Some(ext) = &ext {
                user.extensions = BTreeSet::from([String::clone(ext)]);
            }
            let signs_in = role != PredefinedRole::Agent && spec.password.is_some();
            user.login_enabled = signs_in;
            user.password = spec.password.clone().filter(|_| signs_in);
            (SyntheticUser { user_id: Uuid::now_v7(), username, extension: ext }, user)
        };
    let create = |who: &SyntheticUser, user: NewUser, by: Caller| {
        let request = UserRequest::Create { tenant_id: Some(tenant_id), user: Box::new(user) };
        let user_id = who.user_id;
        async move {
            let done = admin.execute(&by, AdminCommand::User { user_id, request }).await?;
            step(done.event_ids().count() as u64);
            Ok::<_, SyntheticError>(())
        }
    };

    let (administrator, profile) =
        person(format!("syn{tag}-admin-{t}"), PredefinedRole::Administrator, vec![], vec![], None, &mut rng);
    create(&administrator, profile, root.clone()).await?;
    // From here on the tenant's own administrator acts, as one would.
    let by = Caller::user(administrator.user_id);

    let mut groups = Vec::with_capacity(spec.groups_per_tenant);
    let mut extension = 2000;
    for g in 0..spec.groups_per_tenant {
        let group_id = Uuid::now_v7();
        let group_name = format!("syn{tag}-group-{t}-{g}");
        let request = GroupRequest::Create { tenant_id, name: group_name.clone(), timezone: None };
        step(admin.execute(&by, AdminCommand::Group { group_id, request }).await?.event_ids().count() as u64);
        let (supervisor, profile) = person(
            format!("syn{tag}-sup-{t}-{g}"),
            PredefinedRole::Supervisor,
            vec![group_id],
            vec![group_id],
            None,
            &mut rng,
        );
        create(&supervisor, profile, by.clone()).await?;
        let mut agents = Vec::with_capacity(spec.agents_per_group);
        for a in 0..spec.agents_per_group {
            extension += 1;
            let (agent, profile) = person(
                format!("syn{tag}-agent-{t}-{g}-{a}"),
                PredefinedRole::Agent,
                vec![group_id],
                vec![],
                Some(extension.to_string()),
                &mut rng,
            );
            create(&agent, profile, by.clone()).await?;
            agents.push(agent);
        }
        groups.push(SyntheticGroup { group_id, name: group_name, supervisor, agents });
    }
    step(0);
    Ok(SyntheticTenant { tenant_id, name, administrator, groups })
}

/// Tenant administrators change their agents' e-mail addresses and names.
async fn changes_run(
    admin: &Admin,
    spec: &SyntheticSpec,
    tenants: &[SyntheticTenant],
    changes: u64,
    admin_events: &AtomicU64,
    progress: &(impl Fn(Phase, u64, u64) + Send + Sync),
) -> Result<(), SyntheticError> {
    let done = AtomicU64::new(0);
    stream::iter(0..changes)
        .map(|i| {
            let done = &done;
            async move {
                let mut rng = StdRng::seed_from_u64(spec.seed.wrapping_add(i.wrapping_mul(0x2545_f491_4f6c_dd1d)));
                let tenant = &tenants[rng.random_range(0..tenants.len())];
                let group = &tenant.groups[rng.random_range(0..tenant.groups.len())];
                let agent = &group.agents[rng.random_range(0..group.agents.len())];
                let name = full_name(&mut rng);
                // Each change names its number: every one changes something, so each is one event.
                let request = || match i % 2 {
                    0 => UserRequest::SetEmail { email: Some(format!("{}+{i}@example.com", agent.username)) },
                    _ => UserRequest::SetFullName { full_name: Some(format!("{name} {i}")) },
                };
                let by = Caller::user(tenant.administrator.user_id);
                // Two writers may pick the same agent: the loser tries again, as a person would.
                let mut tries = 0;
                let outcome = loop {
                    let command = AdminCommand::User { user_id: agent.user_id, request: request() };
                    match admin.execute(&by, command).await {
                        Err(AdminError::Conflict(_)) if tries < 20 => tries += 1,
                        other => break other?,
                    }
                };
                admin_events.fetch_add(outcome.event_ids().count() as u64, Ordering::Relaxed);
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(1000) {
                    progress(Phase::Changes, n, changes);
                }
                Ok::<_, SyntheticError>(())
            }
        })
        .buffer_unordered(spec.writers)
        .try_collect::<()>()
        .await?;
    progress(Phase::Changes, changes, changes);
    Ok(())
}

/// The recorder's part: one call start per call, as `recorder:synthetic` reports it.
async fn calls_run(
    admin: &Admin,
    spec: &SyntheticSpec,
    tenants: &[SyntheticTenant],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    progress: &(impl Fn(Phase, u64, u64) + Send + Sync),
) -> Result<(), SyntheticError> {
    let calls = CommandService::<Call>::new(admin.log().clone(), ());
    let site = admin.log().config().site.clone();
    let span_ms = (to - from).num_milliseconds().max(1);
    let done = AtomicU64::new(0);
    stream::iter(0..spec.calls)
        .map(|i| {
            let (calls, site, done) = (&calls, &site, &done);
            async move {
                let mut rng = StdRng::seed_from_u64(spec.seed.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) ^ 7);
                let tenant = &tenants[rng.random_range(0..tenants.len())];
                let group = &tenant.groups[rng.random_range(0..tenant.groups.len())];
                let agent = &group.agents[rng.random_range(0..group.agents.len())];
                let (extension, user_id) = if rng.random_bool(spec.unassigned_share) {
                    (format!("{}", 8000 + rng.random_range(0..500)), None)
                } else {
                    (agent.extension.clone().unwrap_or_default(), Some(agent.user_id))
                };
                let direction = match rng.random_range(0..10) {
                    0..=5 => CallDirection::Inbound,
                    6..=8 => CallDirection::Outbound,
                    _ => CallDirection::Internal,
                };
                let caller = format!("+49{}", rng.random_range(3_000_000_000_u64..3_999_999_999));
                let participants = vec![
                    Participant {
                        name: user_id.map(|_| agent.username.clone()),
                        aor: format!("sip:{extension}@pbx.example.com"),
                    },
                    Participant { name: None, aor: format!("tel:{caller}") },
                ];
                let call_id = Uuid::now_v7();
                let start = CallStart {
                    tenant_id: tenant.tenant_id,
                    sip_call_id: format!("{}@sbc.example.com", call_id.simple()),
                    direction,
                    participants,
                    extension: Some(extension),
                    user_id,
                    site: site.clone(),
                    recorder_node: "synthetic".into(),
                    started_at: from + Duration::milliseconds(rng.random_range(0..span_ms)),
                };
                let meta = CommandMeta::system("recorder:synthetic").in_tenant(tenant.tenant_id);
                calls.execute(&call_id.to_string(), CallCommand::RecordCallStart { call_id, start }, meta).await?;
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_multiple_of(10_000) {
                    progress(Phase::Calls, n, spec.calls);
                }
                Ok::<_, SyntheticError>(())
            }
        })
        .buffer_unordered(spec.writers)
        .try_collect::<()>()
        .await?;
    progress(Phase::Calls, spec.calls, spec.calls);
    Ok(())
}
