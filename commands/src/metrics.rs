//! Prometheus metrics of the write side: commands, the sequencer, and how far the log head lags.

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

#[derive(Debug, Clone)]
pub struct LogMetrics {
    pub head_position: IntGauge,
    pub unsequenced_events: IntGauge,
    pub sequencer_leader: IntGauge,
    pub sequencer_rounds: IntCounter,
    pub sequencer_events: IntCounter,
    pub sequencer_errors: IntCounter,
    pub sequencer_round_seconds: Histogram,
    pub commands: IntCounterVec,
    pub command_seconds: HistogramVec,
}

impl LogMetrics {
    /// Creates the metrics and registers them with `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self::unregistered()?;
        registry.register(Box::new(metrics.head_position.clone()))?;
        registry.register(Box::new(metrics.unsequenced_events.clone()))?;
        registry.register(Box::new(metrics.sequencer_leader.clone()))?;
        registry.register(Box::new(metrics.sequencer_rounds.clone()))?;
        registry.register(Box::new(metrics.sequencer_events.clone()))?;
        registry.register(Box::new(metrics.sequencer_errors.clone()))?;
        registry.register(Box::new(metrics.sequencer_round_seconds.clone()))?;
        registry.register(Box::new(metrics.commands.clone()))?;
        registry.register(Box::new(metrics.command_seconds.clone()))?;
        Ok(metrics)
    }

    /// Metrics that are counted but not exported (tests, tools).
    pub fn unregistered() -> Result<Self, prometheus::Error> {
        Ok(Self {
            head_position: IntGauge::new("recall_log_head_position", "Highest sequenced position of this site's log")?,
            unsequenced_events: IntGauge::new(
                "recall_log_unsequenced_events",
                "Events appended but not yet sequenced (the head lag), as of the last scrape",
            )?,
            sequencer_leader: IntGauge::new(
                "recall_sequencer_leader",
                "1 while this process is the site's sequencer, 0 while it stands by",
            )?,
            sequencer_rounds: IntCounter::new("recall_sequencer_rounds_total", "Sequencer rounds run")?,
            sequencer_events: IntCounter::new("recall_sequencer_events_total", "Events given a log position")?,
            sequencer_errors: IntCounter::new("recall_sequencer_errors_total", "Sequencer rounds that failed")?,
            sequencer_round_seconds: Histogram::with_opts(
                HistogramOpts::new("recall_sequencer_round_seconds", "Duration of one sequencer round")
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0]),
            )?,
            commands: IntCounterVec::new(
                Opts::new("recall_commands_total", "Commands executed, by aggregate type and outcome"),
                &["aggregate_type", "outcome"],
            )?,
            command_seconds: HistogramVec::new(
                HistogramOpts::new("recall_command_seconds", "Duration of a command, load to commit")
                    .buckets(vec![0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]),
                &["aggregate_type"],
            )?,
        })
    }
}
