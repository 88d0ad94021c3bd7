//! recall's recorder: a SIP/SIPREC recording server. The parsing layer (SIP messages, multipart bodies,
//! SDP, SIPREC metadata; pure and bounded), the server transactions (`transaction`, sans-IO), the media
//! core (RTP in, aligned PCM and DTMF out, sans-IO), the encoder (PCM to MP3/WAV), the outbox (call events
//! journaled on disk until the log has them), the spool (recordings on local disk as the call goes, found
//! again after a restart), the uploader (spool to the tenant's storage target, the spool copy removed only
//! once the upload is confirmed and reported), and the tokio driver (`server`) that ties them to sockets.
//! What it needs from the rest of recall comes through ports: the `directory`, `outbox::CallLog` and
//! `server::StorageResolver`; the binary wires them.

pub mod directory;
mod durable;
pub mod encode;
pub mod media;
pub mod multipart;
pub mod outbox;
pub mod sdp;
pub mod server;
pub mod sip;
pub mod siprec;
pub mod siprec_metadata;
pub mod spool;
pub mod transaction;
pub mod upload;
