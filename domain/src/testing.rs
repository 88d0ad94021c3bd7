//! Given/when/then for aggregates, for this crate's tests: state from past events, a command decided
//! against it, and replays that rebuild the state from the events the commands produced.

use std::future::Future;

use crate::aggregate::Aggregate;

/// The domain has no executor and its decisions never wait, so one poll finishes them.
pub(crate) fn resolve<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => panic!("a domain decision waited"),
    }
}

/// The state after `events`.
pub(crate) fn given<A: Aggregate>(events: impl IntoIterator<Item = A::Event>) -> A {
    let mut state = A::default();
    events.into_iter().for_each(|event| state.apply(event));
    state
}

/// Decides `command` against the state after `events`.
pub(crate) fn when<A: Aggregate>(
    events: impl IntoIterator<Item = A::Event>,
    command: A::Command,
    services: &A::Services,
) -> Result<Vec<A::Event>, A::Error> {
    resolve(given::<A>(events).decide(command, services))
}

/// Runs `commands` in order (each must succeed), applying their events; returns the state and all events.
pub(crate) fn run<A: Aggregate>(
    commands: impl IntoIterator<Item = A::Command>,
    services: &A::Services,
) -> (A, Vec<A::Event>)
where
    A::Error: std::fmt::Debug,
{
    let mut state = A::default();
    let mut all = Vec::new();
    for command in commands {
        let events = resolve(state.decide(command, services)).expect("every command of the script succeeds");
        for event in events {
            state.apply(event.clone());
            all.push(event);
        }
    }
    (state, all)
}
