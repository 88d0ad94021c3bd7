//! recall's recorder: SIP/SIPREC signalling, RTP media, and the recording pipeline.

pub mod media;
