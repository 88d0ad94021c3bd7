//! The session aggregate (keyed by session id): one user signed in on one device, until the user signs out,
//! an administrator terminates it or it expires; while live, its administrator may impersonate another user,
//! after a verification code when the tenant asks for one. It never holds a token or a code, only their ids.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{Aggregate, DomainEvent};
use crate::secret::SecretRef;

/// Wrong verification codes a challenge survives: the last one cancels the request.
pub const MAX_VERIFICATION_ATTEMPTS: u32 = 5;

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Session {
    state: SessionState,
    user_id: Option<Uuid>,
    tenant_id: Option<Uuid>,
    device_id: Option<Uuid>,
    token: Option<SecretRef>,
    started_at: Option<DateTime<Utc>>,
    expires_at: Option<DateTime<Utc>>,
    impersonation: Impersonation,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum SessionState {
    #[default]
    New,
    Started,
    Ended(SessionEnd, DateTime<Utc>),
}

/// Who ended a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionEnd {
    /// The user signed out.
    SignedOut,
    /// An administrator terminated it.
    Terminated,
}

/// A verification code sent to the administrator before an impersonation, named by its id in the secret
/// store, and the instant it stops being accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    pub code: SecretRef,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Impersonation {
    #[default]
    None,
    /// Requested, waiting for the verification code.
    Pending {
        target_user_id: Uuid,
        target_tenant_id: Option<Uuid>,
        challenge: Challenge,
        attempts: u32,
    },
    Active {
        target_user_id: Uuid,
        target_tenant_id: Option<Uuid>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub enum SessionCommand {
    /// Records a sign-in the write side has checked; `tenant_id` is `None` for the service provider's users.
    StartSession {
        user_id: Uuid,
        tenant_id: Option<Uuid>,
        device_id: Uuid,
        token: SecretRef,
        at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    /// The user ends the session.
    SignOut { at: DateTime<Utc> },
    /// An administrator ends the session.
    TerminateSession { at: DateTime<Utc> },
    /// The session's user acts as `target_user_id` with exactly that user's rights. Whether they may is
    /// the write side's decision. `challenge` is present when the tenant requires a verification code.
    StartImpersonation {
        target_user_id: Uuid,
        target_tenant_id: Option<Uuid>,
        challenge: Option<Challenge>,
        at: DateTime<Utc>,
    },
    /// `code_matches`: whether the code entered matches the pending challenge (the write side compared it).
    VerifyImpersonation { code_matches: bool, at: DateTime<Utc> },
    /// Ends an active impersonation, or withdraws a request still waiting for its code.
    StopImpersonation { at: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SessionEvent {
    SessionStarted {
        user_id: Uuid,
        tenant_id: Option<Uuid>,
        device_id: Uuid,
        token: SecretRef,
        started_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    },
    SignedOut {
        at: DateTime<Utc>,
    },
    SessionTerminated {
        at: DateTime<Utc>,
    },
    ImpersonationRequested {
        target_user_id: Uuid,
        target_tenant_id: Option<Uuid>,
        code: SecretRef,
        expires_at: DateTime<Utc>,
        at: DateTime<Utc>,
    },
    /// `attempts`: wrong codes entered so far for the pending challenge.
    ImpersonationVerificationFailed {
        attempts: u32,
        at: DateTime<Utc>,
    },
    /// The pending request is gone: too many wrong codes, or the administrator withdrew it.
    ImpersonationRequestCancelled {
        at: DateTime<Utc>,
    },
    /// `verified`: whether a verification code was entered first.
    ImpersonationStarted {
        target_user_id: Uuid,
        target_tenant_id: Option<Uuid>,
        verified: bool,
        at: DateTime<Utc>,
    },
    ImpersonationStopped {
        target_user_id: Uuid,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for SessionEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::SessionStarted { .. } => "SessionStarted",
            Self::SignedOut { .. } => "SignedOut",
            Self::SessionTerminated { .. } => "SessionTerminated",
            Self::ImpersonationRequested { .. } => "ImpersonationRequested",
            Self::ImpersonationVerificationFailed { .. } => "ImpersonationVerificationFailed",
            Self::ImpersonationRequestCancelled { .. } => "ImpersonationRequestCancelled",
            Self::ImpersonationStarted { .. } => "ImpersonationStarted",
            Self::ImpersonationStopped { .. } => "ImpersonationStopped",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("this session already exists")]
    AlreadyExists,
    #[error("no such session")]
    NotFound,
    #[error("a session must expire after it starts")]
    InvalidExpiry,
    #[error("this session has already ended")]
    AlreadyEnded,
    #[error("this session has expired")]
    Expired,
    #[error("this session is already impersonating a user; stop first")]
    AlreadyImpersonating,
    #[error("a user cannot impersonate themself")]
    CannotImpersonateSelf,
    #[error("a verification code must expire after it is sent")]
    InvalidChallengeExpiry,
    #[error("no impersonation is waiting for a verification code")]
    NoImpersonationPending,
    #[error("the verification code has expired; request a new one")]
    VerificationExpired,
    #[error("this session is not impersonating anyone")]
    NotImpersonating,
}

impl Session {
    /// Whether the session was ever started (an ended session still exists).
    pub fn exists(&self) -> bool {
        self.state != SessionState::New
    }

    pub fn user_id(&self) -> Option<Uuid> {
        self.user_id
    }

    /// `None` for an unknown session and for a user of the service provider.
    pub fn tenant_id(&self) -> Option<Uuid> {
        self.tenant_id
    }

    pub fn device_id(&self) -> Option<Uuid> {
        self.device_id
    }

    pub fn token(&self) -> Option<SecretRef> {
        self.token
    }

    pub fn started_at(&self) -> Option<DateTime<Utc>> {
        self.started_at
    }

    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// Whether a request made at `now` may use this session: started, not ended, and `now` before expiry.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.state == SessionState::Started && self.expires_at.is_some_and(|expires_at| now < expires_at)
    }

    /// The user and tenant being impersonated, once verified (a pending request is not an impersonation).
    pub fn impersonating(&self) -> Option<(Uuid, Option<Uuid>)> {
        match self.impersonation {
            Impersonation::Active { target_user_id, target_tenant_id } => Some((target_user_id, target_tenant_id)),
            _ => None,
        }
    }

    /// The challenge a requested impersonation waits for.
    pub fn pending_challenge(&self) -> Option<&Challenge> {
        match &self.impersonation {
            Impersonation::Pending { challenge, .. } => Some(challenge),
            _ => None,
        }
    }

    pub fn ended(&self) -> Option<(SessionEnd, DateTime<Utc>)> {
        match self.state {
            SessionState::Ended(end, at) => Some((end, at)),
            _ => None,
        }
    }

    fn existing(&self) -> Result<(), SessionError> {
        match self.state {
            SessionState::New => Err(SessionError::NotFound),
            SessionState::Ended(..) => Err(SessionError::AlreadyEnded),
            SessionState::Started => Ok(()),
        }
    }

    fn live(&self, at: DateTime<Utc>) -> Result<(), SessionError> {
        self.existing()?;
        if self.is_live(at) {
            Ok(())
        } else {
            Err(SessionError::Expired)
        }
    }
}

impl Aggregate for Session {
    const TYPE: &'static str = "Session";
    type Command = SessionCommand;
    type Event = SessionEvent;
    type Error = SessionError;
    type Services = ();

    async fn decide(&self, command: SessionCommand, _: &()) -> Result<Vec<SessionEvent>, SessionError> {
        use SessionCommand as C;
        use SessionEvent as E;
        match command {
            C::StartSession { user_id, tenant_id, device_id, token, at, expires_at } => {
                if self.exists() {
                    return Err(SessionError::AlreadyExists);
                }
                if expires_at <= at {
                    return Err(SessionError::InvalidExpiry);
                }
                Ok(vec![E::SessionStarted { user_id, tenant_id, device_id, token, started_at: at, expires_at }])
            }
            // An expired session may still be ended: the record says who closed it.
            C::SignOut { at } => {
                self.existing()?;
                Ok(vec![E::SignedOut { at }])
            }
            C::TerminateSession { at } => {
                self.existing()?;
                Ok(vec![E::SessionTerminated { at }])
            }
            C::StartImpersonation { target_user_id, target_tenant_id, challenge, at } => {
                self.live(at)?;
                if matches!(self.impersonation, Impersonation::Active { .. }) {
                    return Err(SessionError::AlreadyImpersonating);
                }
                if self.user_id == Some(target_user_id) {
                    return Err(SessionError::CannotImpersonateSelf);
                }
                // A pending request is simply replaced, by a new code or (the tenant no longer asks for one)
                // by the impersonation itself.
                match challenge {
                    None => Ok(vec![E::ImpersonationStarted { target_user_id, target_tenant_id, verified: false, at }]),
                    Some(Challenge { expires_at, .. }) if expires_at <= at => Err(SessionError::InvalidChallengeExpiry),
                    Some(Challenge { code, expires_at }) => {
                        Ok(vec![E::ImpersonationRequested { target_user_id, target_tenant_id, code, expires_at, at }])
                    }
                }
            }
            C::VerifyImpersonation { code_matches, at } => {
                self.live(at)?;
                let Impersonation::Pending { target_user_id, target_tenant_id, challenge, attempts } =
                    self.impersonation
                else {
                    return Err(SessionError::NoImpersonationPending);
                };
                if at >= challenge.expires_at {
                    return Err(SessionError::VerificationExpired);
                }
                if code_matches {
                    return Ok(vec![E::ImpersonationStarted { target_user_id, target_tenant_id, verified: true, at }]);
                }
                let attempts = attempts + 1;
                let mut events = vec![E::ImpersonationVerificationFailed { attempts, at }];
                if attempts >= MAX_VERIFICATION_ATTEMPTS {
                    events.push(E::ImpersonationRequestCancelled { at });
                }
                Ok(events)
            }
            // Allowed on an expired session, so an administrator can always step out.
            C::StopImpersonation { at } => {
                self.existing()?;
                match self.impersonation {
                    Impersonation::Active { target_user_id, .. } => {
                        Ok(vec![E::ImpersonationStopped { target_user_id, at }])
                    }
                    Impersonation::Pending { .. } => Ok(vec![E::ImpersonationRequestCancelled { at }]),
                    Impersonation::None => Err(SessionError::NotImpersonating),
                }
            }
        }
    }

    fn apply(&mut self, event: SessionEvent) {
        use SessionEvent as E;
        match event {
            E::SessionStarted { user_id, tenant_id, device_id, token, started_at, expires_at } => {
                self.state = SessionState::Started;
                self.user_id = Some(user_id);
                self.tenant_id = tenant_id;
                self.device_id = Some(device_id);
                self.token = Some(token);
                self.started_at = Some(started_at);
                self.expires_at = Some(expires_at);
            }
            // Ending the session ends whatever impersonation it carried.
            E::SignedOut { at } => {
                self.state = SessionState::Ended(SessionEnd::SignedOut, at);
                self.impersonation = Impersonation::None;
            }
            E::SessionTerminated { at } => {
                self.state = SessionState::Ended(SessionEnd::Terminated, at);
                self.impersonation = Impersonation::None;
            }
            E::ImpersonationRequested { target_user_id, target_tenant_id, code, expires_at, .. } => {
                self.impersonation = Impersonation::Pending {
                    target_user_id,
                    target_tenant_id,
                    challenge: Challenge { code, expires_at },
                    attempts: 0,
                };
            }
            E::ImpersonationVerificationFailed { attempts: failed, .. } => {
                if let Impersonation::Pending { attempts, .. } = &mut self.impersonation {
                    *attempts = failed;
                }
            }
            E::ImpersonationRequestCancelled { .. } | E::ImpersonationStopped { .. } => {
                self.impersonation = Impersonation::None;
            }
            E::ImpersonationStarted { target_user_id, target_tenant_id, .. } => {
                self.impersonation = Impersonation::Active { target_user_id, target_tenant_id };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{given, run, when};

    const USER: Uuid = Uuid::from_u128(1);
    const TENANT: Uuid = Uuid::from_u128(7);
    const DEVICE: Uuid = Uuid::from_u128(9);
    const TARGET: Uuid = Uuid::from_u128(2);
    const TARGET_TENANT: Uuid = Uuid::from_u128(8);
    const TOKEN: SecretRef = SecretRef(Uuid::from_u128(100));
    const CODE: SecretRef = SecretRef(Uuid::from_u128(101));
    const OTHER_CODE: SecretRef = SecretRef(Uuid::from_u128(102));

    /// Seconds after the session starts, as an instant.
    fn t(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + seconds, 0).expect("a representable instant")
    }

    /// The session expires an hour after it starts; codes are valid for five minutes.
    const EXPIRES: i64 = 3600;
    const CODE_EXPIRES: i64 = 400;

    fn start() -> SessionCommand {
        SessionCommand::StartSession {
            user_id: USER,
            tenant_id: Some(TENANT),
            device_id: DEVICE,
            token: TOKEN,
            at: t(0),
            expires_at: t(EXPIRES),
        }
    }

    fn started() -> Vec<SessionEvent> {
        vec![SessionEvent::SessionStarted {
            user_id: USER,
            tenant_id: Some(TENANT),
            device_id: DEVICE,
            token: TOKEN,
            started_at: t(0),
            expires_at: t(EXPIRES),
        }]
    }

    fn after(mut events: Vec<SessionEvent>, more: impl IntoIterator<Item = SessionEvent>) -> Vec<SessionEvent> {
        events.extend(more);
        events
    }

    fn impersonate(challenge: Option<Challenge>, at: i64) -> SessionCommand {
        SessionCommand::StartImpersonation {
            target_user_id: TARGET,
            target_tenant_id: Some(TARGET_TENANT),
            challenge,
            at: t(at),
        }
    }

    fn challenge(code: SecretRef) -> Option<Challenge> {
        Some(Challenge { code, expires_at: t(CODE_EXPIRES) })
    }

    fn requested(code: SecretRef) -> SessionEvent {
        SessionEvent::ImpersonationRequested {
            target_user_id: TARGET,
            target_tenant_id: Some(TARGET_TENANT),
            code,
            expires_at: t(CODE_EXPIRES),
            at: t(100),
        }
    }

    fn impersonation_started(verified: bool, at: i64) -> SessionEvent {
        SessionEvent::ImpersonationStarted {
            target_user_id: TARGET,
            target_tenant_id: Some(TARGET_TENANT),
            verified,
            at: t(at),
        }
    }

    fn verify(code_matches: bool, at: i64) -> SessionCommand {
        SessionCommand::VerifyImpersonation { code_matches, at: t(at) }
    }

    fn failed(attempts: u32, at: i64) -> SessionEvent {
        SessionEvent::ImpersonationVerificationFailed { attempts, at: t(at) }
    }

    #[test]
    fn a_session_starts_for_a_user_on_a_device() {
        assert_eq!(when::<Session>([], start(), &()), Ok(started()));
        let session = given::<Session>(started());
        assert!(session.exists());
        assert_eq!(
            (session.user_id(), session.tenant_id(), session.device_id(), session.token()),
            (Some(USER), Some(TENANT), Some(DEVICE), Some(TOKEN))
        );
        assert_eq!((session.started_at(), session.expires_at()), (Some(t(0)), Some(t(EXPIRES))));
        assert_eq!(session.ended(), None);
        assert!(!Session::default().exists());
    }

    #[test]
    fn a_session_cannot_start_twice_or_expire_before_it_starts() {
        assert_eq!(when::<Session>(started(), start(), &()), Err(SessionError::AlreadyExists));
        let ended = after(started(), [SessionEvent::SignedOut { at: t(10) }]);
        assert_eq!(when::<Session>(ended, start(), &()), Err(SessionError::AlreadyExists));
        for expires_at in [t(0), t(-1)] {
            let command = SessionCommand::StartSession {
                user_id: USER,
                tenant_id: None,
                device_id: DEVICE,
                token: TOKEN,
                at: t(0),
                expires_at,
            };
            assert_eq!(when::<Session>([], command, &()), Err(SessionError::InvalidExpiry), "expires {expires_at}");
        }
    }

    #[test]
    fn a_session_is_live_from_its_start_until_the_instant_it_expires() {
        let session = given::<Session>(started());
        assert!(session.is_live(t(0)));
        assert!(session.is_live(t(EXPIRES - 1)));
        assert!(!session.is_live(t(EXPIRES)));
        assert!(!session.is_live(t(EXPIRES + 1)));
        assert!(!Session::default().is_live(t(0)));
    }

    #[test]
    fn an_ended_session_is_no_longer_live_before_it_would_have_expired() {
        for end in [SessionEvent::SignedOut { at: t(10) }, SessionEvent::SessionTerminated { at: t(10) }] {
            assert!(!given::<Session>(after(started(), [end.clone()])).is_live(t(11)), "{end:?}");
        }
    }

    #[test]
    fn the_user_signs_out_and_an_administrator_terminates() {
        assert_eq!(
            when::<Session>(started(), SessionCommand::SignOut { at: t(10) }, &()),
            Ok(vec![SessionEvent::SignedOut { at: t(10) }])
        );
        assert_eq!(
            when::<Session>(started(), SessionCommand::TerminateSession { at: t(10) }, &()),
            Ok(vec![SessionEvent::SessionTerminated { at: t(10) }])
        );
        let signed_out = given::<Session>(after(started(), [SessionEvent::SignedOut { at: t(10) }]));
        assert_eq!(signed_out.ended(), Some((SessionEnd::SignedOut, t(10))));
        assert!(signed_out.exists());
        let terminated = given::<Session>(after(started(), [SessionEvent::SessionTerminated { at: t(20) }]));
        assert_eq!(terminated.ended(), Some((SessionEnd::Terminated, t(20))));
    }

    #[test]
    fn an_unknown_or_ended_session_cannot_be_ended() {
        let sign_out = SessionCommand::SignOut { at: t(30) };
        let terminate = SessionCommand::TerminateSession { at: t(30) };
        assert_eq!(when::<Session>([], sign_out.clone(), &()), Err(SessionError::NotFound));
        assert_eq!(when::<Session>([], terminate.clone(), &()), Err(SessionError::NotFound));
        for end in [SessionEvent::SignedOut { at: t(10) }, SessionEvent::SessionTerminated { at: t(10) }] {
            let ended = after(started(), [end]);
            assert_eq!(when::<Session>(ended.clone(), sign_out.clone(), &()), Err(SessionError::AlreadyEnded));
            assert_eq!(when::<Session>(ended, terminate.clone(), &()), Err(SessionError::AlreadyEnded));
        }
    }

    #[test]
    fn an_expired_session_can_still_be_signed_out_or_terminated() {
        let late = t(EXPIRES + 60);
        assert_eq!(
            when::<Session>(started(), SessionCommand::SignOut { at: late }, &()),
            Ok(vec![SessionEvent::SignedOut { at: late }])
        );
        assert_eq!(
            when::<Session>(started(), SessionCommand::TerminateSession { at: late }, &()),
            Ok(vec![SessionEvent::SessionTerminated { at: late }])
        );
    }

    #[test]
    fn an_administrator_impersonates_at_once_when_no_code_is_required() {
        assert_eq!(
            when::<Session>(started(), impersonate(None, 100), &()),
            Ok(vec![impersonation_started(false, 100)])
        );
        let session = given::<Session>(after(started(), [impersonation_started(false, 100)]));
        assert_eq!(session.impersonating(), Some((TARGET, Some(TARGET_TENANT))));
        assert_eq!(session.pending_challenge(), None);
    }

    #[test]
    fn impersonation_needs_a_live_session() {
        assert_eq!(when::<Session>([], impersonate(None, 100), &()), Err(SessionError::NotFound));
        let ended = after(started(), [SessionEvent::SessionTerminated { at: t(50) }]);
        assert_eq!(when::<Session>(ended, impersonate(None, 100), &()), Err(SessionError::AlreadyEnded));
        assert_eq!(when::<Session>(started(), impersonate(None, EXPIRES), &()), Err(SessionError::Expired));
        assert_eq!(
            when::<Session>(started(), impersonate(None, EXPIRES - 1), &()),
            Ok(vec![impersonation_started(false, EXPIRES - 1)])
        );
    }

    #[test]
    fn an_administrator_cannot_impersonate_twice_or_themself() {
        let impersonating = after(started(), [impersonation_started(false, 100)]);
        assert_eq!(
            when::<Session>(impersonating.clone(), impersonate(None, 200), &()),
            Err(SessionError::AlreadyImpersonating)
        );
        assert_eq!(
            when::<Session>(impersonating, impersonate(challenge(CODE), 200), &()),
            Err(SessionError::AlreadyImpersonating)
        );
        let myself = SessionCommand::StartImpersonation {
            target_user_id: USER,
            target_tenant_id: Some(TENANT),
            challenge: None,
            at: t(100),
        };
        assert_eq!(when::<Session>(started(), myself, &()), Err(SessionError::CannotImpersonateSelf));
    }

    #[test]
    fn with_a_challenge_the_impersonation_waits_for_the_code() {
        assert_eq!(when::<Session>(started(), impersonate(challenge(CODE), 100), &()), Ok(vec![requested(CODE)]));
        let session = given::<Session>(after(started(), [requested(CODE)]));
        assert_eq!(session.impersonating(), None);
        assert_eq!(session.pending_challenge(), Some(&Challenge { code: CODE, expires_at: t(CODE_EXPIRES) }));
    }

    #[test]
    fn a_challenge_must_expire_after_it_is_sent() {
        let stale = Some(Challenge { code: CODE, expires_at: t(100) });
        assert_eq!(when::<Session>(started(), impersonate(stale, 100), &()), Err(SessionError::InvalidChallengeExpiry));
    }

    #[test]
    fn a_new_request_replaces_the_pending_one_and_its_count_of_wrong_codes() {
        let pending =
            after(started(), [requested(CODE), failed(1, 110), failed(2, 120), failed(3, 130), failed(4, 140)]);
        let renewed = when::<Session>(pending.clone(), impersonate(challenge(OTHER_CODE), 150), &());
        let expected = SessionEvent::ImpersonationRequested {
            target_user_id: TARGET,
            target_tenant_id: Some(TARGET_TENANT),
            code: OTHER_CODE,
            expires_at: t(CODE_EXPIRES),
            at: t(150),
        };
        assert_eq!(renewed, Ok(vec![expected.clone()]));
        let replaced = after(pending, [expected]);
        assert_eq!(given::<Session>(replaced.clone()).pending_challenge().map(|c| c.code), Some(OTHER_CODE));
        // Four wrong codes against the old challenge do not count against the new one.
        assert_eq!(when::<Session>(replaced, verify(false, 160), &()), Ok(vec![failed(1, 160)]));
    }

    #[test]
    fn a_request_without_a_challenge_replaces_a_pending_one_by_the_impersonation() {
        let pending = after(started(), [requested(CODE)]);
        assert_eq!(
            when::<Session>(pending.clone(), impersonate(None, 150), &()),
            Ok(vec![impersonation_started(false, 150)])
        );
        let session = given::<Session>(after(pending, [impersonation_started(false, 150)]));
        assert_eq!((session.impersonating(), session.pending_challenge()), (Some((TARGET, Some(TARGET_TENANT))), None));
    }

    #[test]
    fn the_right_code_starts_a_verified_impersonation() {
        let pending = after(started(), [requested(CODE), failed(1, 110)]);
        assert_eq!(
            when::<Session>(pending.clone(), verify(true, 200), &()),
            Ok(vec![impersonation_started(true, 200)])
        );
        let session = given::<Session>(after(pending, [impersonation_started(true, 200)]));
        assert_eq!(session.impersonating(), Some((TARGET, Some(TARGET_TENANT))));
        assert_eq!(session.pending_challenge(), None);
    }

    #[test]
    fn a_wrong_code_is_counted_and_the_request_stays_pending() {
        let pending = after(started(), [requested(CODE)]);
        assert_eq!(when::<Session>(pending.clone(), verify(false, 110), &()), Ok(vec![failed(1, 110)]));
        let once = after(pending, [failed(1, 110)]);
        assert_eq!(when::<Session>(once.clone(), verify(false, 120), &()), Ok(vec![failed(2, 120)]));
        let session = given::<Session>(once);
        assert_eq!(session.pending_challenge().map(|c| c.code), Some(CODE));
        assert_eq!(session.impersonating(), None);
    }

    #[test]
    fn the_fifth_wrong_code_cancels_the_request() {
        let four_wrong =
            after(started(), [requested(CODE), failed(1, 110), failed(2, 120), failed(3, 130), failed(4, 140)]);
        let cancelled =
            vec![failed(MAX_VERIFICATION_ATTEMPTS, 150), SessionEvent::ImpersonationRequestCancelled { at: t(150) }];
        assert_eq!(when::<Session>(four_wrong.clone(), verify(false, 150), &()), Ok(cancelled.clone()));
        // The right code after four wrong ones still counts.
        assert_eq!(
            when::<Session>(four_wrong.clone(), verify(true, 150), &()),
            Ok(vec![impersonation_started(true, 150)])
        );
        let after_fifth = after(four_wrong, cancelled);
        let session = given::<Session>(after_fifth.clone());
        assert_eq!((session.pending_challenge(), session.impersonating()), (None, None));
        assert_eq!(
            when::<Session>(after_fifth.clone(), verify(true, 160), &()),
            Err(SessionError::NoImpersonationPending)
        );
        assert_eq!(when::<Session>(after_fifth, impersonate(challenge(OTHER_CODE), 160), &()).map(|e| e.len()), Ok(1));
    }

    #[test]
    fn a_code_is_refused_when_nothing_is_pending_or_the_challenge_expired() {
        assert_eq!(when::<Session>(started(), verify(true, 110), &()), Err(SessionError::NoImpersonationPending));
        let active = after(started(), [impersonation_started(false, 100)]);
        assert_eq!(when::<Session>(active, verify(true, 110), &()), Err(SessionError::NoImpersonationPending));
        let pending = after(started(), [requested(CODE)]);
        assert_eq!(
            when::<Session>(pending.clone(), verify(true, CODE_EXPIRES), &()),
            Err(SessionError::VerificationExpired)
        );
        assert_eq!(
            when::<Session>(pending.clone(), verify(false, CODE_EXPIRES + 1), &()),
            Err(SessionError::VerificationExpired)
        );
        assert_eq!(
            when::<Session>(pending, verify(true, CODE_EXPIRES - 1), &()),
            Ok(vec![impersonation_started(true, CODE_EXPIRES - 1)])
        );
    }

    #[test]
    fn a_code_is_refused_on_an_unknown_ended_or_expired_session() {
        assert_eq!(when::<Session>([], verify(true, 110), &()), Err(SessionError::NotFound));
        let ended = after(started(), [requested(CODE), SessionEvent::SignedOut { at: t(105) }]);
        assert_eq!(when::<Session>(ended, verify(true, 110), &()), Err(SessionError::AlreadyEnded));
        let long_code = SessionEvent::ImpersonationRequested {
            target_user_id: TARGET,
            target_tenant_id: None,
            code: CODE,
            expires_at: t(EXPIRES + 600),
            at: t(EXPIRES - 10),
        };
        assert_eq!(
            when::<Session>(after(started(), [long_code]), verify(true, EXPIRES), &()),
            Err(SessionError::Expired)
        );
    }

    #[test]
    fn stopping_ends_an_impersonation_or_withdraws_a_pending_request() {
        let stop = |at| SessionCommand::StopImpersonation { at: t(at) };
        let active = after(started(), [impersonation_started(true, 100)]);
        let stopped = SessionEvent::ImpersonationStopped { target_user_id: TARGET, at: t(200) };
        assert_eq!(when::<Session>(active.clone(), stop(200), &()), Ok(vec![stopped.clone()]));
        assert_eq!(given::<Session>(after(active.clone(), [stopped])).impersonating(), None);
        // Stepping out stays possible once the session has expired.
        assert_eq!(
            when::<Session>(active, stop(EXPIRES + 5), &()),
            Ok(vec![SessionEvent::ImpersonationStopped { target_user_id: TARGET, at: t(EXPIRES + 5) }])
        );
        let pending = after(started(), [requested(CODE)]);
        let withdrawn = SessionEvent::ImpersonationRequestCancelled { at: t(200) };
        assert_eq!(when::<Session>(pending.clone(), stop(200), &()), Ok(vec![withdrawn.clone()]));
        assert_eq!(given::<Session>(after(pending, [withdrawn])).pending_challenge(), None);
    }

    #[test]
    fn stopping_is_refused_when_there_is_nothing_to_stop() {
        let stop = SessionCommand::StopImpersonation { at: t(200) };
        assert_eq!(when::<Session>(started(), stop.clone(), &()), Err(SessionError::NotImpersonating));
        assert_eq!(when::<Session>([], stop.clone(), &()), Err(SessionError::NotFound));
        let ended = after(started(), [impersonation_started(false, 100), SessionEvent::SignedOut { at: t(150) }]);
        assert_eq!(when::<Session>(ended, stop, &()), Err(SessionError::AlreadyEnded));
    }

    #[test]
    fn ending_the_session_ends_its_impersonation_and_its_pending_request() {
        for end in [SessionEvent::SignedOut { at: t(150) }, SessionEvent::SessionTerminated { at: t(150) }] {
            let active = given::<Session>(after(started(), [impersonation_started(false, 100), end.clone()]));
            assert_eq!(active.impersonating(), None, "{end:?}");
            let pending = given::<Session>(after(started(), [requested(CODE), end.clone()]));
            assert_eq!(pending.pending_challenge(), None, "{end:?}");
        }
    }

    #[test]
    fn event_types_are_the_names_the_events_are_stored_under() {
        let events = after(
            started(),
            [
                requested(CODE),
                failed(1, 110),
                SessionEvent::ImpersonationRequestCancelled { at: t(120) },
                impersonation_started(false, 130),
                SessionEvent::ImpersonationStopped { target_user_id: TARGET, at: t(140) },
                SessionEvent::SignedOut { at: t(150) },
                SessionEvent::SessionTerminated { at: t(150) },
            ],
        );
        for event in events {
            let json = serde_json::to_value(&event).expect("an event serializes");
            assert!(json.get(event.event_type()).is_some(), "{json}");
        }
    }

    #[test]
    fn replaying_the_events_rebuilds_the_same_session() {
        let (state, events) = run::<Session>(
            [
                start(),
                impersonate(challenge(CODE), 100),
                verify(false, 110),
                impersonate(challenge(OTHER_CODE), 120),
                verify(false, 130),
                verify(true, 140),
                SessionCommand::StopImpersonation { at: t(200) },
                impersonate(None, 300),
                SessionCommand::TerminateSession { at: t(400) },
            ],
            &(),
        );
        assert_eq!(events.len(), 9);
        assert_eq!(given::<Session>(events), state);
        // The state survives its own serialized form (the write side may snapshot it).
        let snapshot = serde_json::to_string(&state).expect("a session serializes");
        assert_eq!(serde_json::from_str::<Session>(&snapshot).expect("a snapshot deserializes"), state);
        assert_eq!(state.ended(), Some((SessionEnd::Terminated, t(400))));
        assert_eq!(state.impersonating(), None);
    }
}
