//! recall's call recorder. So far only its pure parsing layer: SIP messages, multipart bodies, SDP and
//! SIPREC metadata, from bytes to typed values and back to responses and answers. Nothing here opens a
//! socket, spawns a task or touches a database; the signalling driver that will use it comes later.

pub mod multipart;
pub mod sdp;
pub mod sip;
pub mod siprec;
pub mod siprec_metadata;
