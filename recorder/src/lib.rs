//! recall's recorder. Built so far: the media core (RTP in, aligned PCM and DTMF out, sans-IO), the
//! encoder (PCM to MP3/WAV), the outbox (call events journaled on disk until the log has them), the spool
//! (recordings written to local disk as the call goes, found again after a restart) and the uploader
//! (spool → the tenant's storage target, with retries, removing the spool copy only once the upload is
//! confirmed and reported). Signalling comes next; nothing runs this crate yet but its tests.

pub mod encode;
pub mod media;
pub mod outbox;
pub mod spool;
pub mod upload;
