//! The event bus behind `/events`: subsystems publish Docker-shaped events, API
//! streams subscribe. The last [`HISTORY`] events are kept in memory (as dockerd
//! does) so that `since` can replay them; they do not survive a restart.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::broadcast;

/// How many past events are kept for `since`.
pub const HISTORY: usize = 256;

/// Who an event is about.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Actor {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// One event, in the Docker API's JSON shape.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Event {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Action")]
    pub action: String,
    #[serde(rename = "Actor")]
    pub actor: Actor,
    pub scope: String,
    pub time: i64,
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

impl Event {
    /// A new event stamped with the current time.
    pub fn now(kind: &str, action: &str, id: &str, attributes: &[(&str, &str)]) -> Event {
        let ns = jiff::Timestamp::now().as_nanosecond() as i64;
        Event {
            kind: kind.to_owned(),
            action: action.to_owned(),
            actor: Actor {
                id: id.to_owned(),
                attributes: attributes.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            },
            scope: "local".to_owned(),
            time: ns.div_euclid(1_000_000_000),
            time_nano: ns,
        }
    }
}

/// Publishes events to live subscribers and keeps a bounded history.
#[derive(Debug)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    history: Mutex<VecDeque<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus { tx: broadcast::channel(1024).0, history: Mutex::new(VecDeque::with_capacity(HISTORY)) }
    }
}

impl EventBus {
    /// Records and broadcasts an event.
    pub fn publish(&self, ev: Event) {
        tracing::debug!(kind = %ev.kind, action = %ev.action, id = %ev.actor.id, "event");
        let mut h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        if h.len() == HISTORY {
            h.pop_front();
        }
        h.push_back(ev.clone());
        // Sent under the history lock so that a subscriber sees every event
        // exactly once: either in its snapshot or on its receiver.
        let _ = self.tx.send(ev);
    }

    /// The history so far and a receiver for every later event.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let h = self.history.lock().unwrap_or_else(|p| p.into_inner());
        (h.iter().cloned().collect(), self.tx.subscribe())
    }

    /// Number of live subscribers (Docker's `NEventsListener`).
    pub fn listeners(&self) -> usize {
        self.tx.receiver_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_is_bounded_and_subscribers_miss_nothing() {
        let bus = EventBus::default();
        for i in 0..HISTORY + 10 {
            bus.publish(Event::now("network", "create", &i.to_string(), &[]));
        }
        let (past, mut rx) = bus.subscribe();
        assert_eq!(past.len(), HISTORY);
        assert_eq!(past[0].actor.id, "10");
        assert_eq!(bus.listeners(), 1);
        bus.publish(Event::now("network", "destroy", "x", &[("name", "n")]));
        let ev = rx.try_recv().unwrap();
        assert_eq!((ev.action.as_str(), ev.actor.attributes["name"].as_str()), ("destroy", "n"));
    }

    #[test]
    fn json_shape_matches_docker() {
        let ev = Event::now("network", "create", "abc", &[("name", "bridge"), ("type", "bridge")]);
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v["Type"], "network");
        assert_eq!(v["Action"], "create");
        assert_eq!(v["Actor"]["ID"], "abc");
        assert_eq!(v["Actor"]["Attributes"]["type"], "bridge");
        assert_eq!(v["scope"], "local");
        assert_eq!(v["time"].as_i64().unwrap(), v["timeNano"].as_i64().unwrap() / 1_000_000_000);
    }
}
