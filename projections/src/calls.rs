//! The calls read model (`rm_calls.calls`): one row per recorded call, with its tenant, direction, parties,
//! extension, the user it is assigned to (none: "not assigned to users"), and a text-search vector over
//! the parties and numbers. Call starts arrive by the thousand: consecutive starts go in one statement.
//! An encrypted recording's key (and, for a file stored without its final chunk, its chunk count) has columns
//! of its own, so the calls a key opens are found without reading the recording's JSON. A call a restore job
//! added (`CallRestored`) has its whole row at once, and `restored` says where it came from.

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use recall_commands::LoggedEvent;
use recall_domain::call::{CallEvent, Participant, RestoredCall};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::directory::text;
use crate::{payload, Projection, ProjectionError};

#[derive(Debug)]
pub struct Calls;

/// Columns of call starts waiting to be inserted together.
#[derive(Default)]
struct Starts {
    call_id: Vec<Uuid>,
    tenant_id: Vec<Uuid>,
    sip_call_id: Vec<String>,
    direction: Vec<String>,
    participants: Vec<String>,
    extension: Vec<Option<String>>,
    user_id: Vec<Option<Uuid>>,
    site: Vec<String>,
    recorder: Vec<String>,
    started_at: Vec<DateTime<Utc>>,
    search: Vec<String>,
}

impl Starts {
    async fn flush(&mut self, conn: &mut PgConnection, s: &str) -> Result<(), ProjectionError> {
        if self.call_id.is_empty() {
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO {s}.calls (call_id, tenant_id, sip_call_id, direction, participants, extension, user_id,
                 site, recorder_node, started_at, search)
             SELECT c.call_id, c.tenant_id, c.sip_call_id, c.direction, c.participants::jsonb, c.extension, c.user_id,
                 c.site, c.recorder, c.started_at, to_tsvector('simple', c.search)
               FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::text[], $7::uuid[],
                           $8::text[], $9::text[], $10::timestamptz[], $11::text[])
                 AS c(call_id, tenant_id, sip_call_id, direction, participants, extension, user_id, site, recorder,
                      started_at, search)
             ON CONFLICT (call_id) DO NOTHING"
        ))
        .bind(std::mem::take(&mut self.call_id))
        .bind(std::mem::take(&mut self.tenant_id))
        .bind(std::mem::take(&mut self.sip_call_id))
        .bind(std::mem::take(&mut self.direction))
        .bind(std::mem::take(&mut self.participants))
        .bind(std::mem::take(&mut self.extension))
        .bind(std::mem::take(&mut self.user_id))
        .bind(std::mem::take(&mut self.site))
        .bind(std::mem::take(&mut self.recorder))
        .bind(std::mem::take(&mut self.started_at))
        .bind(std::mem::take(&mut self.search))
        .execute(conn)
        .await?;
        Ok(())
    }
}

impl Projection for Calls {
    fn name(&self) -> &'static str {
        "calls"
    }

    fn version(&self) -> i32 {
        4
    }

    fn create(&self, s: &str) -> Vec<String> {
        vec![
            format!(
                "CREATE TABLE {s}.calls (
                    call_id uuid PRIMARY KEY, tenant_id uuid NOT NULL, sip_call_id text NOT NULL, direction text NOT NULL,
                    participants jsonb NOT NULL, extension text, user_id uuid, site text NOT NULL,
                    recorder_node text NOT NULL, started_at timestamptz NOT NULL, ended_at timestamptz,
                    duration_ms bigint, custom jsonb NOT NULL DEFAULT '{{}}', assigned_at timestamptz,
                    search tsvector NOT NULL, end_reason text, paused_since timestamptz,
                    paused_ms bigint NOT NULL DEFAULT 0, dtmf text NOT NULL DEFAULT '',
                    recording jsonb, failures jsonb NOT NULL DEFAULT '[]', encryption_key_id uuid,
                    encrypted_chunks bigint, restored jsonb)"
            ),
        ]
    }

    fn indexes(&self, s: &str) -> Vec<String> {
        vec![
            format!("CREATE INDEX ON {s}.calls (tenant_id, started_at DESC, call_id DESC)"),
            format!("CREATE INDEX ON {s}.calls (user_id, started_at DESC, call_id DESC)"),
            format!("CREATE INDEX ON {s}.calls (tenant_id, extension, started_at DESC)"),
            format!("CREATE INDEX ON {s}.calls (tenant_id, started_at DESC, call_id DESC) WHERE user_id IS NULL"),
            format!("CREATE INDEX ON {s}.calls USING gin (search)"),
        ]
    }

    fn apply<'a>(
        &'a self,
        conn: &'a mut PgConnection,
        s: &'a str,
        events: &'a [LoggedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let mut starts = Starts::default();
            for event in events.iter().filter(|e| e.event.aggregate_type == "Call") {
                let (call_id, start, restored) = match payload::<CallEvent>(event)? {
                    CallEvent::CallStarted { call_id, start } => (call_id, start, None),
                    CallEvent::CallRestored(restored) => {
                        let RestoredCall { call_id, start, end, paused_ms, recording, source } = *restored;
                        (call_id, start, Some((end, paused_ms, recording, source)))
                    }
                    other => {
                        starts.flush(conn, s).await?;
                        let call_id = Uuid::parse_str(&event.event.aggregate_id)
                            .map_err(|e| ProjectionError::unreadable(event, e))?;
                        update(conn, s, call_id, event.event.recorded_at, other).await?;
                        continue;
                    }
                };
                {
                    starts.search.push(search_text(
                        &start.sip_call_id,
                        start.extension.as_deref(),
                        &start.participants,
                    ));
                    starts.call_id.push(call_id);
                    starts.tenant_id.push(start.tenant_id);
                    starts.direction.push(text(&start.direction));
                    starts.participants.push(serde_json::to_string(&start.participants).unwrap_or_default());
                    starts.extension.push(start.extension);
                    starts.user_id.push(start.user_id);
                    starts.site.push(start.site);
                    starts.recorder.push(start.recorder_node);
                    starts.started_at.push(start.started_at);
                    starts.sip_call_id.push(start.sip_call_id);
                }
                if let Some((end, paused_ms, recording, source)) = restored {
                    // A restored call arrives whole: its start with the others, then the rest of its row.
                    starts.flush(conn, s).await?;
                    let at = event.event.recorded_at;
                    let ended = CallEvent::CallEnded { reason: end.reason, at: end.at, duration_ms: end.duration_ms };
                    update(conn, s, call_id, at, ended).await?;
                    update(conn, s, call_id, at, CallEvent::RecordingStored { recording }).await?;
                    sqlx::query(&format!("UPDATE {s}.calls SET paused_ms = $2, restored = $3 WHERE call_id = $1"))
                        .bind(call_id)
                        .bind(i64::try_from(paused_ms).unwrap_or(i64::MAX))
                        .bind(serde_json::to_value(&source).unwrap_or_default())
                        .execute(&mut *conn)
                        .await?;
                }
            }
            starts.flush(conn, s).await
        })
    }
}

/// The words a call is found by: its SIP Call-ID, extension, and the parties' names and addresses.
fn search_text(sip_call_id: &str, extension: Option<&str>, participants: &[Participant]) -> String {
    let mut search: Vec<&str> = vec![sip_call_id];
    search.extend(extension);
    for p in participants {
        search.extend(p.name.as_deref());
        search.push(&p.aor);
    }
    search.join(" ")
}

/// Applies one call event other than a start to its row.
async fn update(
    conn: &mut PgConnection,
    s: &str,
    call_id: Uuid,
    recorded_at: DateTime<Utc>,
    event: CallEvent,
) -> Result<(), ProjectionError> {
    let (sql, binds): (String, Vec<Bind>) = match event {
        CallEvent::CallStarted { .. }
        | CallEvent::CallRestored(_)
        | CallEvent::RecordingAccessed { .. }
        | CallEvent::RecordingPutBack { .. } => return Ok(()),
        CallEvent::CallAssigned { user_id, extension, .. } => (
            format!("UPDATE {s}.calls SET user_id = $2, extension = $3, assigned_at = $4 WHERE call_id = $1"),
            vec![Bind::Id(Some(user_id)), Bind::Text(extension), Bind::Time(recorded_at)],
        ),
        CallEvent::ParticipantsIdentified { participants, extension, user_id } => {
            let sip_call_id: Option<String> =
                sqlx::query_scalar(&format!("SELECT sip_call_id FROM {s}.calls WHERE call_id = $1"))
                    .bind(call_id)
                    .fetch_optional(&mut *conn)
                    .await?;
            let search = search_text(sip_call_id.as_deref().unwrap_or_default(), extension.as_deref(), &participants);
            (
                format!(
                    "UPDATE {s}.calls SET participants = $2::jsonb, extension = $3, user_id = $4,
                            search = to_tsvector('simple', $5) WHERE call_id = $1"
                ),
                vec![
                    Bind::Text(Some(serde_json::to_string(&participants).unwrap_or_else(|_| "[]".into()))),
                    Bind::Text(extension),
                    Bind::Id(user_id),
                    Bind::Text(Some(search)),
                ],
            )
        }
        CallEvent::RecordingPaused { at } => {
            (format!("UPDATE {s}.calls SET paused_since = $2 WHERE call_id = $1"), vec![Bind::Time(at)])
        }
        CallEvent::RecordingResumed { paused_ms, .. } => (
            format!("UPDATE {s}.calls SET paused_since = NULL, paused_ms = paused_ms + $2 WHERE call_id = $1"),
            vec![Bind::Number(paused_ms)],
        ),
        CallEvent::DtmfReceived { digit, .. } => (
            format!("UPDATE {s}.calls SET dtmf = dtmf || $2 WHERE call_id = $1"),
            vec![Bind::Text(Some(digit.to_string()))],
        ),
        CallEvent::CallEnded { reason, at, duration_ms } => (
            format!(
                "UPDATE {s}.calls SET ended_at = $2, duration_ms = $3, end_reason = $4, paused_since = NULL
                  WHERE call_id = $1"
            ),
            vec![Bind::Time(at), Bind::Number(duration_ms), Bind::Text(Some(text(&reason)))],
        ),
        // `encrypted_chunks`: the chunk count of an encrypted file stored without its final chunk (a reader
        // must be told it); NULL for a complete or a plain file.
        CallEvent::RecordingStored { recording } => (
            format!(
                "UPDATE {s}.calls SET recording = $2::jsonb, encryption_key_id = $3, encrypted_chunks = $4
                  WHERE call_id = $1"
            ),
            vec![
                Bind::Text(Some(serde_json::to_string(&recording).unwrap_or_default())),
                Bind::Id(recording.encryption.as_ref().map(|e| e.key_id)),
                Bind::OptionalNumber(recording.encryption.as_ref().and_then(|e| e.unterminated_chunks)),
            ],
        ),
        CallEvent::RecordingFailed { lost, reason } => (
            format!(
                "UPDATE {s}.calls SET failures = failures || jsonb_build_array(jsonb_build_object('lost', $2::text,
                        'reason', $3::text, 'at', $4::timestamptz)) WHERE call_id = $1"
            ),
            vec![Bind::Text(Some(lost)), Bind::Text(Some(reason)), Bind::Time(recorded_at)],
        ),
    };
    let mut query = sqlx::query(&sql).bind(call_id);
    for bind in binds {
        query = match bind {
            Bind::Id(id) => query.bind(id),
            Bind::Text(text) => query.bind(text),
            Bind::Time(time) => query.bind(time),
            Bind::Number(n) => query.bind(i64::try_from(n).unwrap_or(i64::MAX)),
            Bind::OptionalNumber(n) => query.bind(n.map(|n| i64::try_from(n).unwrap_or(i64::MAX))),
        };
    }
    query.execute(conn).await?;
    Ok(())
}

/// A parameter of one of [`update`]'s statements.
enum Bind {
    Id(Option<Uuid>),
    Text(Option<String>),
    Time(DateTime<Utc>),
    Number(u64),
    OptionalNumber(Option<u64>),
}
