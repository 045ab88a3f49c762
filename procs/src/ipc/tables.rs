//! The IPC tables of one partition (paper §4.3.1):
//!
//! ```text
//! Message(receiver_id, sender_id, message_id, data)   key and order: (receiver_id, message_id)
//! Mailbox(receiver_id, next_message_id, queued_count) one row per receiver with queued messages
//! ```
//!
//! Both are partitioned on `receiver_id`. A receiver's message ids start at its
//! mailbox's `next_message_id` and rise by one per message. A mailbox row exists only
//! while its receiver has messages queued, so the table stays bounded by the messages;
//! a new mailbox starts above every id the partition ever assigned
//! (`next_id_floor`), so each receiver's ids rise strictly over its whole life.

use std::sync::Arc;

use crate::schema::DbLimits;
use tabos_engine::{ConsistencyError, Row, Schema, Table};
use tabos_transport::Status;

/// One queued message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MessageRow {
    /// The mailbox it waits in (partitioning key).
    pub receiver_id: u64,
    /// Who sent it, as the sender said.
    pub sender_id: u64,
    /// Its place in the receiver's queue; strictly increasing per receiver.
    pub message_id: u64,
    /// The payload, shared by every copy a multicast queued on this partition (and by
    /// the undo log, so a receive does not copy it twice).
    #[serde(with = "shared_bytes")]
    pub data: Arc<[u8]>,
}

/// Serde for a shared payload as one byte string (a snapshot copies it with one
/// `memcpy`, not byte by byte as a sequence).
mod shared_bytes {
    use std::sync::Arc;

    pub fn serialize<S: serde::Serializer>(data: &Arc<[u8]>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Arc<[u8]>, D::Error> {
        let bytes: serde_bytes::ByteBuf = serde::Deserialize::deserialize(d)?;
        Ok(Arc::from(bytes.into_vec()))
    }
}

impl Row for MessageRow {
    type Key = (u64, u64);
    type SortKey = (u64, u64);

    fn key(&self) -> (u64, u64) {
        (self.receiver_id, self.message_id)
    }

    fn sort_key(&self) -> Option<(u64, u64)> {
        Some((self.receiver_id, self.message_id))
    }
}

/// The per-receiver counters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MailboxRow {
    pub receiver_id: u64,
    /// Id of the next message sent to this receiver.
    pub next_message_id: u64,
    /// Messages queued; at least 1 (an empty mailbox has no row).
    pub queued_count: u64,
}

impl Row for MailboxRow {
    type Key = u64;
    type SortKey = ();

    fn key(&self) -> u64 {
        self.receiver_id
    }
}

/// This service's tables on one partition.
#[derive(Debug)]
pub struct IpcTables {
    /// Every queued message.
    pub messages: Table<MessageRow>,
    /// Counters of receivers with queued messages.
    pub mailboxes: Table<MailboxRow>,
    /// Above every message id assigned on this partition; where a new mailbox starts.
    next_id_floor: u64,
    /// `next_id_floor` as of the last commit, restored by a rollback.
    committed_next_id_floor: u64,
}

impl IpcTables {
    /// Empty tables: at most `limits.messages_max` messages (and so mailboxes).
    pub fn new(limits: &DbLimits) -> Self {
        IpcTables {
            messages: Table::new("ipc_message", limits.messages_max),
            mailboxes: Table::new("ipc_mailbox", limits.messages_max),
            next_id_floor: 1,
            committed_next_id_floor: 1,
        }
    }

    /// The id floor, for snapshots.
    pub fn next_id_floor(&self) -> u64 {
        self.next_id_floor
    }

    /// Restore the id floor from a snapshot (nothing may be uncommitted).
    pub fn restore_next_id_floor(&mut self, floor: u64) {
        assert!(
            !self.has_uncommitted_rows(),
            "restore into a committed state"
        );
        assert!(floor >= 1, "message ids start at 1");
        self.next_id_floor = floor;
        self.committed_next_id_floor = floor;
    }

    fn has_uncommitted_rows(&self) -> bool {
        self.messages.has_uncommitted() || self.mailboxes.has_uncommitted()
    }

    /// Messages queued for `receiver_id`.
    pub fn queued_count(&self, receiver_id: u64) -> u64 {
        self.mailboxes
            .get(&receiver_id)
            .map_or(0, |m| m.queued_count)
    }

    /// Queue `data` for `receiver_id` and return its message id.
    ///
    /// `QueueFull` when the receiver has `limits.queue_len_max` messages queued,
    /// `TableFull` when the partition holds `messages_max`; nothing changes then. The
    /// size of `data` is the caller's to check.
    pub fn enqueue(
        &mut self,
        limits: &DbLimits,
        sender_id: u64,
        receiver_id: u64,
        data: Arc<[u8]>,
    ) -> Result<u64, Status> {
        let mailbox = self.mailboxes.get(&receiver_id).cloned();
        let queued_count = mailbox.as_ref().map_or(0, |m| m.queued_count);
        if queued_count >= limits.queue_len_max as u64 {
            return Err(Status::QueueFull);
        }
        if self.messages.len() >= self.messages.max_rows() {
            return Err(Status::TableFull);
        }
        let message_id = mailbox.map_or(self.next_id_floor, |m| m.next_message_id);
        assert!(message_id >= 1, "message ids start at 1");
        let next_message_id = message_id.checked_add(1).expect("message ids exhausted");
        self.messages.insert(MessageRow {
            receiver_id,
            sender_id,
            message_id,
            data,
        })?;
        self.mailboxes.replace(MailboxRow {
            receiver_id,
            next_message_id,
            queued_count: queued_count + 1,
        })?;
        self.next_id_floor = self.next_id_floor.max(next_message_id);
        assert_eq!(self.queued_count(receiver_id), queued_count + 1);
        Ok(message_id)
    }

    /// The lowest-id message queued for `receiver_id`, in O(log n).
    pub fn first(&self, receiver_id: u64) -> Option<&MessageRow> {
        self.messages
            .first_in((receiver_id, 0)..=(receiver_id, u64::MAX))
    }

    /// Remove and return the lowest-id message queued for `receiver_id`.
    pub fn dequeue(&mut self, receiver_id: u64) -> Option<MessageRow> {
        let key = self.first(receiver_id)?.key();
        let row = self.messages.delete(&key).expect("the first row exists");
        assert_eq!(row.receiver_id, receiver_id);
        let left = self
            .mailboxes
            .update(&receiver_id, |m| {
                assert!(m.queued_count >= 1, "mailbox {receiver_id} count underflow");
                assert!(m.next_message_id > row.message_id);
                m.queued_count -= 1;
                m.queued_count
            })
            .expect("a receiver with messages has a mailbox");
        if left == 0 {
            self.mailboxes.remove(&receiver_id);
        }
        Some(row)
    }
}

impl Schema for IpcTables {
    fn commit(&mut self) {
        self.messages.commit();
        self.mailboxes.commit();
        self.committed_next_id_floor = self.next_id_floor;
    }

    fn rollback(&mut self) {
        self.messages.rollback();
        self.mailboxes.rollback();
        self.next_id_floor = self.committed_next_id_floor;
    }

    fn has_uncommitted(&self) -> bool {
        self.messages.has_uncommitted()
            || self.mailboxes.has_uncommitted()
            || self.next_id_floor != self.committed_next_id_floor
    }

    /// Both tables' indexes, and: every message has a mailbox whose count matches and
    /// whose next id is above it, no mailbox is empty, and the floor is above every id.
    /// O(n log n).
    fn check_consistency(&self) -> Result<(), ConsistencyError> {
        self.messages.check_consistency()?;
        self.mailboxes.check_consistency()?;
        let fail = |what: String| {
            Err(ConsistencyError {
                table: "ipc_mailbox",
                what,
            })
        };
        let mut counted: u64 = 0;
        for mailbox in self.mailboxes.iter() {
            let receiver_id = mailbox.receiver_id;
            let queued = self
                .messages
                .range((receiver_id, 0)..=(receiver_id, u64::MAX));
            let mut count: u64 = 0;
            for message in queued {
                if message.message_id >= mailbox.next_message_id {
                    return fail(format!("message {message:?} not below {mailbox:?}"));
                }
                count += 1;
            }
            if count == 0 || count != mailbox.queued_count {
                return fail(format!("{mailbox:?} but {count} messages queued"));
            }
            if mailbox.next_message_id > self.next_id_floor {
                return fail(format!("{mailbox:?} above floor {}", self.next_id_floor));
            }
            counted += count;
        }
        if counted != self.messages.len() as u64 {
            return fail(format!(
                "{} messages, {counted} in mailboxes",
                self.messages.len()
            ));
        }
        if self.committed_next_id_floor > self.next_id_floor {
            return fail("the id floor went down".into());
        }
        Ok(())
    }
}
