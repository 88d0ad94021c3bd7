//! The recorder's Prometheus metrics.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Debug, Clone)]
pub struct RecorderMetrics {
    /// RTP datagrams read from the recorder's sockets (from the negotiated source or not).
    pub rtp_packets: IntCounter,
    /// RTP datagrams dropped inside the recorder, by reason (`foreign_source`, `malformed`, `late`,
    /// `refused`, `duplicate`).
    pub rtp_dropped: IntCounterVec,
    pub calls_active: IntGauge,
    pub calls: IntCounter,
    /// INVITEs refused, by reason (`untrusted`, `capacity`, `spool_full`,
    /// `no_encryption_key`, `offer`, `ports`, `journal`).
    pub calls_refused: IntCounterVec,
    pub recordings_spooled: IntCounter,
    pub recording_failures: IntCounter,
    pub sip_messages: IntCounter,
    pub sip_malformed: IntCounter,
}

impl RecorderMetrics {
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.rtp_packets.clone()))?;
        registry.register(Box::new(metrics.rtp_dropped.clone()))?;
        registry.register(Box::new(metrics.calls_active.clone()))?;
        registry.register(Box::new(metrics.calls.clone()))?;
        registry.register(Box::new(metrics.calls_refused.clone()))?;
        registry.register(Box::new(metrics.recordings_spooled.clone()))?;
        registry.register(Box::new(metrics.recording_failures.clone()))?;
        registry.register(Box::new(metrics.sip_messages.clone()))?;
        registry.register(Box::new(metrics.sip_malformed.clone()))?;
        Ok(metrics)
    }

    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(Self {
            rtp_packets: IntCounter::new("recall_recorder_rtp_packets_total", "RTP datagrams read by the recorder")?,
            rtp_dropped: IntCounterVec::new(
                Opts::new("recall_recorder_rtp_dropped_total", "RTP datagrams dropped inside the recorder, by reason"),
                &["reason"],
            )?,
            calls_active: IntGauge::new("recall_recorder_calls_active", "Calls the recorder holds now")?,
            calls: IntCounter::new("recall_recorder_calls_total", "Calls the recorder accepted")?,
            calls_refused: IntCounterVec::new(
                Opts::new("recall_recorder_calls_refused_total", "INVITEs the recorder refused, by reason"),
                &["reason"],
            )?,
            recordings_spooled: IntCounter::new(
                "recall_recorder_recordings_spooled_total",
                "Recordings finished in the spool and handed to the uploader",
            )?,
            recording_failures: IntCounter::new(
                "recall_recorder_recording_failures_total",
                "Recordings (or parts of them) that could not be kept",
            )?,
            sip_messages: IntCounter::new("recall_recorder_sip_messages_total", "SIP messages received")?,
            sip_malformed: IntCounter::new(
                "recall_recorder_sip_malformed_total",
                "SIP datagrams or stream messages that did not parse",
            )?,
        })
    }
}
