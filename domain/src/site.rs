//! The site aggregate: one per site, keyed by the site's name. It records when recall nodes of the site
//! start and stop, so the audit trail shows every start, every clean stop, and every run that ended
//! without one. Long-lived: it is loaded from a snapshot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::aggregate::{Aggregate, DomainEvent};

#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    /// Nodes that started and have not stopped cleanly since, with the version they run.
    running: BTreeMap<String, String>,
    starts: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SiteCommand {
    /// A recall process (`node`) of this site started, running `version`.
    RecordNodeStart { node: String, version: String },
    /// A recall process of this site is stopping cleanly.
    RecordNodeStop { node: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum SiteEvent {
    NodeStarted {
        node: String,
        version: String,
        /// The node's previous run ended without a clean stop (crash, kill, power loss).
        previous_run_unclean: bool,
    },
    NodeStopped {
        node: String,
    },
}

impl DomainEvent for SiteEvent {
    fn event_type(&self) -> &'static str {
        match self {
            Self::NodeStarted { .. } => "NodeStarted",
            Self::NodeStopped { .. } => "NodeStopped",
        }
    }

    fn event_version(&self) -> &'static str {
        "1"
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteError {
    #[error("a node name must be 1 to 200 printable characters")]
    InvalidNodeName,
    #[error("node {0:?} is not running")]
    NodeNotRunning(String),
}

fn valid_node_name(node: &str) -> bool {
    !node.is_empty() && node.len() <= 200 && !node.chars().any(char::is_control)
}

impl Site {
    /// Nodes currently marked as running.
    pub fn running_nodes(&self) -> impl Iterator<Item = &str> {
        self.running.keys().map(String::as_str)
    }

    pub fn starts(&self) -> u64 {
        self.starts
    }
}

impl Aggregate for Site {
    const TYPE: &'static str = "Site";
    type Command = SiteCommand;
    type Event = SiteEvent;
    type Error = SiteError;
    type Services = ();

    async fn decide(&self, command: SiteCommand, _: &()) -> Result<Vec<SiteEvent>, SiteError> {
        match command {
            SiteCommand::RecordNodeStart { node, version } => {
                if !valid_node_name(&node) {
                    return Err(SiteError::InvalidNodeName);
                }
                let previous_run_unclean = self.running.contains_key(&node);
                Ok(vec![SiteEvent::NodeStarted { node, version, previous_run_unclean }])
            }
            SiteCommand::RecordNodeStop { node } => {
                if !self.running.contains_key(&node) {
                    return Err(SiteError::NodeNotRunning(node));
                }
                Ok(vec![SiteEvent::NodeStopped { node }])
            }
        }
    }

    fn apply(&mut self, event: SiteEvent) {
        match event {
            SiteEvent::NodeStarted { node, version, .. } => {
                self.starts += 1;
                self.running.insert(node, version);
            }
            SiteEvent::NodeStopped { node } => {
                self.running.remove(&node);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn given(events: impl IntoIterator<Item = SiteEvent>) -> Site {
        let mut site = Site::default();
        events.into_iter().for_each(|e| site.apply(e));
        site
    }

    fn decide(site: &Site, command: SiteCommand) -> Result<Vec<SiteEvent>, SiteError> {
        crate::testing::resolve(site.decide(command, &()))
    }

    fn started(node: &str, unclean: bool) -> SiteEvent {
        SiteEvent::NodeStarted { node: node.into(), version: "0.1.0".into(), previous_run_unclean: unclean }
    }

    fn start(node: &str) -> SiteCommand {
        SiteCommand::RecordNodeStart { node: node.into(), version: "0.1.0".into() }
    }

    #[test]
    fn a_first_start_is_clean() {
        assert_eq!(decide(&given([]), start("a")), Ok(vec![started("a", false)]));
    }

    #[test]
    fn a_start_after_a_run_without_stop_says_the_previous_run_ended_unclean() {
        let site = given([started("a", false)]);
        assert_eq!(decide(&site, start("a")), Ok(vec![started("a", true)]));
    }

    #[test]
    fn a_start_after_a_clean_stop_is_clean() {
        let site = given([started("a", false), SiteEvent::NodeStopped { node: "a".into() }]);
        assert_eq!(decide(&site, start("a")), Ok(vec![started("a", false)]));
        assert_eq!(site.running_nodes().count(), 0);
        assert_eq!(site.starts(), 1);
    }

    #[test]
    fn stopping_a_node_that_is_not_running_is_refused() {
        let stop = SiteCommand::RecordNodeStop { node: "b".into() };
        assert_eq!(decide(&given([started("a", false)]), stop), Err(SiteError::NodeNotRunning("b".into())));
    }

    #[test]
    fn node_names_must_be_printable_and_bounded() {
        for bad in ["", "a\nb", &"x".repeat(201)] {
            assert_eq!(decide(&given([]), start(bad)), Err(SiteError::InvalidNodeName));
        }
    }
}
