//! Adapts recall's pure aggregates (`recall_domain::Aggregate`: decide + apply) to cqrs-es, which wants an
//! async `handle` writing into an `EventSink`. The domain crate cannot name cqrs-es (it pulls tokio).

use serde::{Deserialize, Serialize};

/// A domain aggregate as cqrs-es sees it. Serialized exactly like the inner aggregate (snapshots).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Adapted<A>(pub A);

/// A domain event as cqrs-es sees it. Serialized exactly like the inner event (payloads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventOf<E>(pub E);

impl<E: recall_domain::DomainEvent> cqrs_es::DomainEvent for EventOf<E> {
    fn event_type(&self) -> String {
        self.0.event_type().to_owned()
    }

    fn event_version(&self) -> String {
        self.0.event_version().to_owned()
    }
}

impl<A> cqrs_es::Aggregate for Adapted<A>
where
    A: recall_domain::Aggregate,
{
    const TYPE: &'static str = A::TYPE;
    type Command = A::Command;
    type Event = EventOf<A::Event>;
    type Error = A::Error;
    type Services = A::Services;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &cqrs_es::event_sink::EventSink<Self>,
    ) -> Result<(), Self::Error> {
        let events = self.0.decide(command, services).await?;
        for event in events {
            sink.write(EventOf(event), self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        self.0.apply(event.0);
    }
}
