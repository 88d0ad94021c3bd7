//! The recording server's SIP transactions (RFC 3261 §17.2, UAS side), sans-IO: requests and the time go
//! in; what to send again, and when a 2xx was never acknowledged, come out. The driver owns the sockets
//! and the clock and calls [`ServerTransactions::poll`] at [`ServerTransactions::next_timeout`].
//!
//! - A retransmitted request (same branch and method) gets the last response again and never reaches
//!   the dialog a second time.
//! - A final non-2xx response to an INVITE is retransmitted on unreliable transports (timer G, doubling
//!   from T1 up to T2) until its ACK arrives or timer H (64·T1) gives up (RFC 3261 §17.2.1).
//! - A 2xx to an INVITE is the dialog's to retransmit until the ACK (§13.3.1.4); it is kept here too,
//!   keyed by Call-ID and CSeq, and reported as [`Event::AckTimeout`] when no ACK came within 64·T1.
//! - A final response to any other request is kept for timer J (64·T1 on unreliable transports) to answer
//!   retransmissions, then forgotten.
//!
//! `P` is how the driver names the peer (a socket address, a connection); it is only handed back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::sip::{Message, Method};

/// RFC 3261 §17.1.1.1 timer values.
pub const T1: Duration = Duration::from_millis(500);
pub const T2: Duration = Duration::from_secs(4);
/// Timers H, J and the 2xx give-up (64·T1).
pub const TIMEOUT: Duration = Duration::from_secs(32);
/// An INVITE transaction without any response for this long (the dialog never answered) is dropped.
const ABANDONED: Duration = Duration::from_secs(64);

/// What an incoming request is to the transaction layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A new request: the dialog layer handles it and answers through [`ServerTransactions::respond`].
    New,
    /// A retransmission of a request already seen: send this again (`None`: no response yet, stay quiet).
    Retransmission(Option<Vec<u8>>),
    /// The ACK of a 2xx (or of an INVITE we do not know): the dialog's.
    AckOf2xx,
    /// The ACK of a non-2xx final response: absorbed here.
    Absorbed,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<P> {
    /// Send these bytes to the peer (a retransmission).
    Send { peer: P, bytes: Vec<u8> },
    /// A 2xx to an INVITE was never acknowledged (RFC 3261 §13.3.1.4: the dialog should end).
    AckTimeout { call_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    branch: String,
    /// ACK and CANCEL have transactions of their own kinds; ACK is matched to the INVITE separately.
    method: String,
}

#[derive(Debug)]
struct Entry<P> {
    peer: P,
    reliable: bool,
    is_invite: bool,
    last: Option<Vec<u8>>,
    /// Final status sent, if any.
    final_status: Option<u16>,
    /// Next retransmission of a final INVITE response (unreliable transports only).
    retransmit_at: Option<Instant>,
    interval: Duration,
    /// When the entry goes.
    expires_at: Instant,
}

#[derive(Debug)]
struct Pending2xx<P> {
    peer: P,
    bytes: Vec<u8>,
    reliable: bool,
    retransmit_at: Instant,
    interval: Duration,
    give_up_at: Instant,
}

/// The server transactions of one recording server.
#[derive(Debug)]
pub struct ServerTransactions<P> {
    entries: HashMap<Key, Entry<P>>,
    /// 2xx responses to INVITEs awaiting their ACK, by (Call-ID, CSeq number).
    pending: HashMap<(String, u32), Pending2xx<P>>,
}

impl<P> Default for ServerTransactions<P> {
    fn default() -> Self {
        Self { entries: HashMap::new(), pending: HashMap::new() }
    }
}

/// RFC 3261 §17.2.3: the branch and the top Via's sent-by identify the transaction when the branch carries
/// the magic cookie; an RFC 2543 peer's requests are identified by what they copy into every retransmission.
fn branch_of(request: &Message) -> String {
    let sent_by = request
        .vias()
        .first()
        .and_then(|via| via.split_whitespace().nth(1))
        .map_or("", |rest| rest.split(';').next().unwrap_or_default());
    match request.via_branch() {
        Some(branch) if branch.starts_with("z9hG4bK") => format!("{branch}|{sent_by}"),
        _ => format!(
            "2543|{}|{}|{}|{}",
            request.call_id(),
            request.cseq().number,
            request.from().tag().unwrap_or_default(),
            request.vias().first().map_or("", String::as_str)
        ),
    }
}

impl<P: Clone> ServerTransactions<P> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Classifies a request that arrived at `now` from `peer`. `reliable` is true for TCP.
    pub fn on_request(&mut self, request: &Message, peer: P, reliable: bool, now: Instant) -> Incoming {
        let branch = branch_of(request);
        if *request.method() == Method::Ack {
            let key = Key { branch, method: Method::Invite.as_str().to_owned() };
            if let Some(entry) = self.entries.get_mut(&key) {
                if entry.final_status.is_some_and(|status| status >= 300) {
                    // Confirmed: absorb further ACKs until timer I (T4 ≈ T2 here) ends it.
                    entry.retransmit_at = None;
                    entry.expires_at = entry.expires_at.min(now + if reliable { Duration::ZERO } else { T2 });
                    return Incoming::Absorbed;
                }
            }
            self.pending.remove(&(request.call_id().to_owned(), request.cseq().number));
            return Incoming::AckOf2xx;
        }
        let key = Key { branch, method: request.method().as_str().to_owned() };
        if let Some(entry) = self.entries.get(&key) {
            return Incoming::Retransmission(entry.last.clone());
        }
        let is_invite = *request.method() == Method::Invite;
        self.entries.insert(
            key,
            Entry {
                peer,
                reliable,
                is_invite,
                last: None,
                final_status: None,
                retransmit_at: None,
                interval: T1,
                expires_at: now + ABANDONED,
            },
        );
        Incoming::New
    }

    /// Records the response sent to `request` (the driver sends `bytes` itself), so retransmissions of the
    /// request get it again and final responses are retransmitted as the transport needs.
    pub fn respond(&mut self, request: &Message, status: u16, bytes: &[u8], now: Instant) {
        let key = Key { branch: branch_of(request), method: request.method().as_str().to_owned() };
        let Some(entry) = self.entries.get_mut(&key) else { return };
        entry.last = Some(bytes.to_vec());
        if status < 200 {
            return;
        }
        entry.final_status = Some(status);
        if entry.is_invite && (200..300).contains(&status) {
            // The INVITE transaction ends with its 2xx; the ACK wait is the dialog's (kept in `pending`).
            entry.expires_at = now + TIMEOUT;
            self.pending.insert(
                (request.call_id().to_owned(), request.cseq().number),
                Pending2xx {
                    peer: entry.peer.clone(),
                    bytes: bytes.to_vec(),
                    reliable: entry.reliable,
                    retransmit_at: now + T1,
                    interval: T1,
                    give_up_at: now + TIMEOUT,
                },
            );
        } else if entry.is_invite {
            entry.expires_at = now + TIMEOUT;
            entry.retransmit_at = (!entry.reliable).then_some(now + T1);
            entry.interval = T1;
        } else {
            entry.expires_at = now + if entry.reliable { Duration::ZERO } else { TIMEOUT };
        }
    }

    /// The earliest time `poll` has something to do.
    pub fn next_timeout(&self) -> Option<Instant> {
        let entries = self.entries.values().flat_map(|e| [e.retransmit_at, Some(e.expires_at)]).flatten();
        let pending = self.pending.values().map(|p| if p.reliable { p.give_up_at } else { p.retransmit_at });
        entries.chain(pending).min()
    }

    /// Retransmits what is due, expires what is over, and reports unacknowledged 2xx responses.
    pub fn poll(&mut self, now: Instant, out: &mut Vec<Event<P>>) {
        self.entries.retain(|_, entry| {
            if entry.expires_at <= now {
                return false;
            }
            if let (Some(at), Some(bytes)) = (entry.retransmit_at, &entry.last) {
                if at <= now {
                    out.push(Event::Send { peer: entry.peer.clone(), bytes: bytes.clone() });
                    entry.interval = (entry.interval * 2).min(T2);
                    entry.retransmit_at = Some(now + entry.interval);
                }
            }
            true
        });
        self.pending.retain(|(call_id, _), pending| {
            if pending.give_up_at <= now {
                out.push(Event::AckTimeout { call_id: call_id.clone() });
                return false;
            }
            if !pending.reliable && pending.retransmit_at <= now {
                out.push(Event::Send { peer: pending.peer.clone(), bytes: pending.bytes.clone() });
                pending.interval = (pending.interval * 2).min(T2);
                pending.retransmit_at = now + pending.interval;
            }
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::{parse, Transport};

    fn request(method: &str, branch: &str, cseq: u32) -> Message {
        let text = format!(
            "{method} sip:rec@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5060;branch={branch}\r\n\
             From: <sip:src@192.0.2.9>;tag=a\r\nTo: <sip:rec@192.0.2.1>\r\nCall-ID: c1\r\n\
             CSeq: {cseq} {method}\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        );
        parse(text.as_bytes(), Transport::Datagram).expect("request parses")
    }

    #[test]
    fn a_retransmitted_request_gets_the_last_response_and_never_reaches_the_dialog_twice() {
        let mut transactions = ServerTransactions::new();
        let now = Instant::now();
        let invite = request("INVITE", "z9hG4bK1", 1);
        assert_eq!(transactions.on_request(&invite, 1, false, now), Incoming::New);
        assert_eq!(transactions.on_request(&invite, 1, false, now), Incoming::Retransmission(None));
        transactions.respond(&invite, 100, b"100", now);
        assert_eq!(transactions.on_request(&invite, 1, false, now), Incoming::Retransmission(Some(b"100".to_vec())));
        let bye = request("BYE", "z9hG4bK2", 2);
        assert_eq!(transactions.on_request(&bye, 1, false, now), Incoming::New);
        transactions.respond(&bye, 200, b"200 bye", now);
        assert_eq!(
            transactions.on_request(&bye, 1, false, now + Duration::from_secs(5)),
            Incoming::Retransmission(Some(b"200 bye".to_vec()))
        );
        // Timer J: after 64·T1 the BYE transaction is gone.
        let mut out = Vec::new();
        transactions.poll(now + TIMEOUT + Duration::from_millis(1), &mut out);
        assert_eq!(transactions.on_request(&bye, 1, false, now + TIMEOUT), Incoming::New);
    }

    #[test]
    fn a_2xx_is_retransmitted_with_doubling_intervals_until_its_ack_or_reported_unacknowledged() {
        let mut transactions = ServerTransactions::new();
        let start = Instant::now();
        let invite = request("INVITE", "z9hG4bK1", 1);
        transactions.on_request(&invite, 7, false, start);
        transactions.respond(&invite, 200, b"200 ok", start);
        let mut sent_at = Vec::new();
        let mut now = start;
        let mut timed_out = false;
        while let Some(at) = transactions.next_timeout() {
            now = at;
            let mut out = Vec::new();
            transactions.poll(now, &mut out);
            for event in out {
                match event {
                    Event::Send { peer, bytes } => {
                        assert_eq!((peer, bytes.as_slice()), (7, &b"200 ok"[..]));
                        sent_at.push(now.duration_since(start));
                    }
                    Event::AckTimeout { call_id } => {
                        assert_eq!(call_id, "c1");
                        timed_out = true;
                    }
                }
            }
            if timed_out {
                break;
            }
        }
        assert!(timed_out);
        assert_eq!(now.duration_since(start), TIMEOUT);
        let ms: Vec<u128> = sent_at.iter().take(5).map(Duration::as_millis).collect();
        assert_eq!(ms, [500, 1500, 3500, 7500, 11500], "T1, then doubling up to T2");

        // With the ACK, nothing more is sent and nothing times out.
        let mut transactions = ServerTransactions::new();
        transactions.on_request(&invite, 7, false, start);
        transactions.respond(&invite, 200, b"200 ok", start);
        assert_eq!(transactions.on_request(&request("ACK", "z9hG4bK9", 1), 7, false, start), Incoming::AckOf2xx);
        let mut out = Vec::new();
        transactions.poll(start + TIMEOUT + Duration::from_secs(1), &mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_non_2xx_final_response_is_retransmitted_until_the_ack_which_is_absorbed() {
        let mut transactions = ServerTransactions::new();
        let start = Instant::now();
        let invite = request("INVITE", "z9hG4bK1", 1);
        transactions.on_request(&invite, 7, false, start);
        transactions.respond(&invite, 503, b"503", start);
        let mut out = Vec::new();
        transactions.poll(start + T1, &mut out);
        assert_eq!(out, vec![Event::Send { peer: 7, bytes: b"503".to_vec() }]);
        // The ACK of a non-2xx carries the INVITE's branch.
        assert_eq!(transactions.on_request(&request("ACK", "z9hG4bK1", 1), 7, false, start + T1), Incoming::Absorbed);
        out.clear();
        transactions.poll(start + T1 * 4, &mut out);
        assert!(out.is_empty(), "{out:?}");
        // On TCP nothing is retransmitted at all.
        let mut reliable = ServerTransactions::new();
        reliable.on_request(&invite, 7, true, start);
        reliable.respond(&invite, 503, b"503", start);
        out.clear();
        reliable.poll(start + T1 * 3, &mut out);
        assert!(out.is_empty());
    }

    /// A client retransmitting over a lossy, duplicating, reordering network (seeded), against the server
    /// transactions on a virtual clock: every request reaches the dialog once, every retransmission that
    /// arrives gets the response again, and the 2xx is retransmitted until an ACK gets through.
    #[test]
    fn over_a_lossy_network_each_request_reaches_the_dialog_once_and_every_response_gets_through() {
        use rand::{Rng, SeedableRng};
        for seed in 0..50u64 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut transactions = ServerTransactions::new();
            let start = Instant::now();
            // (arrival time, datagram) in flight to the server, and to the client.
            let mut to_server: Vec<(Instant, Message)> = Vec::new();
            let mut to_client: Vec<(Instant, Vec<u8>)> = Vec::new();
            let send = |rng: &mut rand::rngs::StdRng, queue: &mut Vec<(Instant, Message)>, at: Instant, m: &Message| {
                if rng.random_bool(0.3) {
                    return; // lost
                }
                for _ in 0..if rng.random_bool(0.1) { 2 } else { 1 } {
                    queue.push((at + Duration::from_millis(rng.random_range(5..400)), m.clone()));
                }
            };
            let invite = request("INVITE", "z9hG4bKinv", 1);
            let bye = request("BYE", "z9hG4bKbye", 2);
            let (mut new_requests, mut invite_answered, mut acked, mut bye_answered) =
                (Vec::new(), false, false, false);
            let mut now = start;
            // Timer A for the INVITE and timer E for the BYE: T1 doubling (E capped at T2).
            let mut next_invite = start;
            let mut invite_interval = T1;
            let mut next_bye: Option<(Instant, Duration)> = None;
            while now < start + Duration::from_secs(40) {
                if !invite_answered && next_invite <= now {
                    send(&mut rng, &mut to_server, now, &invite);
                    next_invite = now + invite_interval;
                    invite_interval *= 2;
                }
                if let Some((_, interval)) = next_bye.filter(|(at, _)| *at <= now && !bye_answered) {
                    send(&mut rng, &mut to_server, now, &bye);
                    next_bye = Some((now + interval, (interval * 2).min(T2)));
                }
                to_server.sort_by_key(|(at, _)| *at);
                while to_server.first().is_some_and(|(at, _)| *at <= now) {
                    let (_, message) = to_server.remove(0);
                    match transactions.on_request(&message, 1, false, now) {
                        Incoming::New => {
                            new_requests.push(message.method().clone());
                            let status = if *message.method() == Method::Ack { continue } else { 200 };
                            let bytes = format!("{status} {}", message.method()).into_bytes();
                            transactions.respond(&message, status, &bytes, now);
                            if !rng.random_bool(0.3) {
                                to_client.push((now + Duration::from_millis(rng.random_range(5..400)), bytes));
                            }
                        }
                        Incoming::Retransmission(Some(bytes)) if !rng.random_bool(0.3) => {
                            to_client.push((now + Duration::from_millis(rng.random_range(5..400)), bytes));
                        }
                        Incoming::AckOf2xx => acked = true,
                        _ => {}
                    }
                }
                let mut events = Vec::new();
                transactions.poll(now, &mut events);
                for event in events {
                    if let Event::Send { bytes, .. } = event {
                        if !rng.random_bool(0.3) {
                            to_client.push((now + Duration::from_millis(rng.random_range(5..400)), bytes));
                        }
                    }
                }
                to_client.sort_by_key(|(at, _)| *at);
                while to_client.first().is_some_and(|(at, _)| *at <= now) {
                    let (_, bytes) = to_client.remove(0);
                    if bytes == b"200 INVITE" {
                        invite_answered = true;
                        // Every 2xx is acknowledged (RFC 3261 §13.2.2.4), so a lost ACK is made good.
                        send(&mut rng, &mut to_server, now, &request("ACK", "z9hG4bKack", 1));
                        if next_bye.is_none() {
                            next_bye = Some((now + Duration::from_secs(2), T1));
                        }
                    } else if bytes == b"200 BYE" {
                        bye_answered = true;
                    }
                }
                now += Duration::from_millis(10);
            }
            assert_eq!(new_requests, vec![Method::Invite, Method::Bye], "seed {seed}: each request once");
            assert!(invite_answered && acked && bye_answered, "seed {seed}: {invite_answered} {acked} {bye_answered}");
        }
    }
}
