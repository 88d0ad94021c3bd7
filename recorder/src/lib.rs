//! recall's recorder. Built so far, each part tested on its own: the parsing layer (SIP messages,
//! multipart bodies, SDP, SIPREC metadata; pure and bounded), the media core (RTP in, aligned PCM and DTMF
//! out, sans-IO), the encoder (PCM to MP3/WAV), the outbox (call events journaled on disk until the log
//! has them), the spool (recordings on local disk as the call goes, found again after a restart) and the
//! uploader (spool to the tenant's storage target, the spool copy removed only once the upload is
//! confirmed and reported). The signalling driver that ties them to sockets comes next; nothing runs this
//! crate yet but its tests.

mod durable;
pub mod encode;
pub mod media;
pub mod multipart;
pub mod outbox;
pub mod sdp;
pub mod sip;
pub mod siprec;
pub mod siprec_metadata;
pub mod spool;
pub mod upload;
