//! Follow-up runs: a plugin's outcome may ask to be run again after a
//! delay (to verify a repair whose effect shows later, such as a WSUS
//! sync). The request becomes a `follow-up` event for the same subject,
//! written to the durable queue with the time it is due in the same
//! commit as the run's record, and held here until then; so a restart
//! neither loses nor repeats it. When it is due it joins the plugin's
//! queue like any event, and coalesces with one already waiting for that
//! subject. A plugin has at most one pending follow-up per subject: a newer
//! request replaces the older. A run outside the agent (`medic approve`)
//! hands its follow-up to the agent as an inbox event of kind
//! `follow-up` whose time is when it is due; the dispatcher holds it the
//! same way.

use super::queue::EventId;
use medic_sandbox::event::FollowUp;
use medic_sandbox::{EventKind, EventRecord};
use std::collections::BTreeMap;

/// The `source` of a follow-up event.
pub const SOURCE: &str = "follow-up";

/// A follow-up event waiting for its time.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    pub id: EventId,
    pub plugin: String,
    pub event: EventRecord,
    pub due_ms: u64,
}

/// The follow-ups not yet due, by due time.
#[derive(Debug, Default)]
pub struct FollowUps {
    by_due: BTreeMap<(u64, EventId), Pending>,
}

/// The event a follow-up request makes: kind `follow-up`, the same subject,
/// the asking run's event id in `follows` and the reason in `reason`.
pub fn event(follows: &EventRecord, request: &FollowUp, due_ms: u64) -> EventRecord {
    let mut fields = BTreeMap::new();
    fields.insert("follows".to_string(), follows.id.clone());
    fields.insert("reason".to_string(), request.reason.clone());
    EventRecord {
        id: String::new(),
        kind: EventKind::FollowUp,
        source: SOURCE.to_string(),
        time_ms: due_ms,
        subject: follows.subject.clone(),
        fields,
    }
    .completed()
}

impl FollowUps {
    /// Hold `pending` until it is due; returns the ids of the follow-ups
    /// it replaces (same plugin and subject), to remove from the durable
    /// queue.
    pub fn hold(&mut self, pending: Pending) -> Vec<EventId> {
        let replaced: Vec<(u64, EventId)> = self
            .by_due
            .iter()
            .filter(|(_, p)| p.plugin == pending.plugin && p.event.subject == pending.event.subject)
            .map(|(key, _)| *key)
            .collect();
        for key in &replaced {
            self.by_due.remove(key);
        }
        self.by_due.insert((pending.due_ms, pending.id), pending);
        replaced.into_iter().map(|(_, id)| id).collect()
    }

    /// Take every follow-up due at `now_ms`, oldest first.
    pub fn take_due(&mut self, now_ms: u64) -> Vec<Pending> {
        let later = self.by_due.split_off(&(now_ms + 1, 0));
        std::mem::replace(&mut self.by_due, later)
            .into_values()
            .collect()
    }

    /// When the next follow-up is due.
    pub fn next_due(&self) -> Option<u64> {
        self.by_due.keys().next().map(|(due, _)| *due)
    }

    /// How many are waiting, per plugin.
    pub fn waiting(&self, plugin: &str) -> usize {
        self.by_due.values().filter(|p| p.plugin == plugin).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(id: EventId, plugin: &str, subject: &str, due_ms: u64) -> Pending {
        let asking = EventRecord {
            id: format!("ev-{id}"),
            kind: EventKind::Manual,
            source: String::new(),
            time_ms: 1,
            subject: subject.into(),
            fields: BTreeMap::new(),
        };
        let request = FollowUp {
            after_seconds: 1,
            reason: "verify".into(),
        };
        Pending {
            id,
            plugin: plugin.into(),
            event: event(&asking, &request, due_ms),
            due_ms,
        }
    }

    #[test]
    fn follow_ups_come_due_in_order_and_a_newer_one_replaces_its_twin() {
        let mut held = FollowUps::default();
        assert!(held.hold(pending(1, "a", "BITS", 300)).is_empty());
        assert!(held.hold(pending(2, "a", "WsusContent", 100)).is_empty());
        assert!(held.hold(pending(3, "b", "BITS", 200)).is_empty());
        assert_eq!(held.hold(pending(4, "a", "BITS", 250)), vec![1]);
        assert_eq!(held.next_due(), Some(100));
        assert!(held.take_due(99).is_empty());
        let due: Vec<EventId> = held.take_due(250).into_iter().map(|p| p.id).collect();
        assert_eq!(due, vec![2, 3, 4]);
        assert_eq!(held.next_due(), None);
    }

    #[test]
    fn a_follow_up_event_names_the_run_it_follows() {
        let p = pending(7, "a", "BITS", 500);
        assert_eq!(p.event.kind, EventKind::FollowUp);
        assert_eq!(p.event.subject, "BITS");
        assert_eq!(p.event.field("follows"), Some("ev-7"));
        assert_eq!(p.event.field("reason"), Some("verify"));
        assert_eq!(p.event.time_ms, 500);
        assert!(p.event.id.starts_with("ev-"));
    }
}
