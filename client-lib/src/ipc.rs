//! Typed client API of the IPC service: messages between tasks, queued in mailboxes
//! (u64 receiver ids) on the receiver's partition.
//!
//! ```no_run
//! # use std::time::Duration;
//! let mut client = tabos_client::Client::connect("/tmp/tabos.sock")?;
//! let id = client.send(1, 2, b"hello")?;
//! let message = client.recv(2, Duration::from_secs(1))?;
//! assert_eq!((message.message_id, &message.data[..]), (id, &b"hello"[..]));
//! # Ok::<(), tabos_client::Error>(())
//! ```
//!
//! A receive with a timeout waits at the partition (the client sleeps on its futex
//! meanwhile), so neither side polls. Benchmarks that pipeline raw submits build
//! arguments with [`send_args`] and friends and route them with
//! [`Client::mailbox_partition`].

use crate::{Client, Completion, Error};
use std::time::Duration;
use tabos_procs::ipc::{self, ids};

pub use tabos_procs::ipc::{
    multicast_args, recv_args, recv_batch_args, send_args, MULTICAST_RECEIVERS_MAX,
};

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who sent it (as the sender said).
    pub sender_id: u64,
    /// The mailbox it was taken from.
    pub receiver_id: u64,
    /// Its id: strictly increasing per receiver.
    pub message_id: u64,
    pub data: Vec<u8>,
}

impl Message {
    fn from_reply(receiver_id: u64, m: &ipc::ReplyMessage<'_>) -> Message {
        Message {
            sender_id: m.sender_id,
            receiver_id,
            message_id: m.message_id,
            data: m.data.to_vec(),
        }
    }
}

/// A timeout as whole milliseconds for the wire: rounded up (so a non-zero wait never
/// becomes "do not wait"), at most `u32::MAX` (49 days).
pub fn timeout_ms(timeout: Duration) -> u32 {
    let ms = timeout.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX)
}

fn malformed(what: &str) -> Error {
    Error::Transport(format!(
        "malformed {what} reply from tabosd (a server of another version?)"
    ))
}

impl Client {
    /// The partition that holds `receiver_id`'s mailbox.
    pub fn mailbox_partition(&self, receiver_id: u64) -> u32 {
        ipc::mailbox_partition(receiver_id, self.partition_count())
    }

    /// Queue `data` for `to`; returns its message id. `PayloadTooLarge` beyond the
    /// node's message size, `QueueFull` when `to` has its maximum queued, `TableFull`
    /// when its partition holds its maximum: nothing is queued then.
    pub fn send(&mut self, from: u64, to: u64, data: &[u8]) -> Result<u64, Error> {
        let partition = self.mailbox_partition(to);
        let reply = self.call(ids::SEND, partition, &send_args(from, to, data))?;
        ipc::decode_send_reply(&reply).map_err(|_| malformed("ipc_send"))
    }

    /// Take the oldest message queued for `receiver`, waiting up to `timeout` for one
    /// to arrive: `Status::Timeout` when none did, `Status::QueueEmpty` at once for a
    /// zero timeout (or when the partition cannot park more waiters).
    pub fn recv(&mut self, receiver: u64, timeout: Duration) -> Result<Message, Error> {
        let partition = self.mailbox_partition(receiver);
        let args = recv_args(receiver, timeout_ms(timeout));
        let reply = self.call(ids::RECV, partition, &args)?;
        let m = ipc::decode_recv_reply(&reply).map_err(|_| malformed("ipc_recv"))?;
        Ok(Message::from_reply(receiver, &m))
    }

    /// Take up to `max` of the oldest messages queued for `receiver` in one call
    /// (fewer when they would not fit one reply), waiting up to `timeout` for the
    /// first as [`Client::recv`] does. `max` must be at least 1 (else `BadArgs`).
    pub fn recv_batch(
        &mut self,
        receiver: u64,
        max: usize,
        timeout: Duration,
    ) -> Result<Vec<Message>, Error> {
        let partition = self.mailbox_partition(receiver);
        let max_count = u32::try_from(max).unwrap_or(u32::MAX);
        let args = recv_batch_args(receiver, max_count, timeout_ms(timeout));
        let reply = self.call(ids::RECV_BATCH, partition, &args)?;
        let batch =
            ipc::decode_recv_batch_reply(&reply).map_err(|_| malformed("ipc_recv_batch"))?;
        if batch.is_empty() || batch.len() > max {
            return Err(malformed("ipc_recv_batch"));
        }
        Ok(batch
            .iter()
            .map(|m| Message::from_reply(receiver, m))
            .collect())
    }

    /// Send one message to every receiver in `to` (repeats get one copy each) with one
    /// call per receiver partition, pipelined; returns `(receiver, message id)` in the
    /// order of `to`.
    ///
    /// Each partition's call is all or nothing, but partitions are independent: on an
    /// error (the first in call order) the receivers on other partitions may have
    /// their copy. Calls this client already has in flight are left alone; the calls
    /// are then made one after another instead of pipelined.
    pub fn multicast(
        &mut self,
        from: u64,
        to: &[u64],
        data: &[u8],
    ) -> Result<Vec<(u64, u64)>, Error> {
        let calls = self.multicast_calls(to, data.len());
        let mut ids_out = vec![0u64; to.len()];
        let mut replies: Vec<Result<Vec<u8>, Error>> = Vec::with_capacity(calls.len());
        if self.in_flight() > 0 {
            for call in &calls {
                let args = multicast_args(from, &call.receivers, data);
                replies.push(self.call(ids::MULTICAST, call.partition, &args));
            }
        } else {
            let mut request_ids = Vec::with_capacity(calls.len());
            for call in &calls {
                let args = multicast_args(from, &call.receivers, data);
                request_ids.push(self.submit(ids::MULTICAST, call.partition, &args)?);
            }
            self.flush();
            let mut done: Vec<Completion> = Vec::with_capacity(calls.len());
            while done.len() < calls.len() {
                let missing = calls.len() - done.len();
                self.wait(&mut done, missing)?;
            }
            for request_id in request_ids {
                let pos = done.iter().position(|c| c.request_id == request_id);
                let completion = pos.map(|i| done.swap_remove(i));
                replies.push(
                    completion
                        .ok_or_else(|| malformed("ipc_multicast"))?
                        .into_result(),
                );
            }
        }
        assert_eq!(replies.len(), calls.len());
        for (call, reply) in calls.iter().zip(replies) {
            let reply = reply?;
            let message_ids = ipc::decode_multicast_reply(&reply, call.receivers.len())
                .map_err(|_| malformed("ipc_multicast"))?;
            for (index, message_id) in call.indexes.iter().zip(message_ids) {
                ids_out[*index] = message_id;
            }
        }
        Ok(to.iter().copied().zip(ids_out).collect())
    }

    /// Group `to` by partition, in chunks whose arguments fit one request.
    fn multicast_calls(&self, to: &[u64], data_len: usize) -> Vec<MulticastCall> {
        let room = self.max_payload_bytes().saturating_sub(16 + data_len) / 8;
        let per_call = room.clamp(1, MULTICAST_RECEIVERS_MAX);
        let mut calls: Vec<MulticastCall> = Vec::new();
        let mut open: Vec<Option<MulticastCall>> = Vec::new();
        open.resize_with(self.partition_count() as usize, || None);
        for (index, receiver) in to.iter().enumerate() {
            let partition = self.mailbox_partition(*receiver);
            let slot = &mut open[partition as usize];
            let call = slot.get_or_insert_with(|| MulticastCall::new(partition));
            call.receivers.push(*receiver);
            call.indexes.push(index);
            if call.receivers.len() == per_call {
                calls.extend(slot.take());
            }
        }
        calls.extend(open.into_iter().flatten());
        assert_eq!(
            calls.iter().map(|c| c.receivers.len()).sum::<usize>(),
            to.len()
        );
        calls
    }
}

/// One `ipc_multicast` call: receivers on one partition and their places in `to`.
#[derive(Debug)]
struct MulticastCall {
    partition: u32,
    receivers: Vec<u64>,
    indexes: Vec<usize>,
}

impl MulticastCall {
    fn new(partition: u32) -> Self {
        MulticastCall {
            partition,
            receivers: Vec::new(),
            indexes: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_round_up_and_saturate() {
        assert_eq!(timeout_ms(Duration::ZERO), 0);
        assert_eq!(timeout_ms(Duration::from_nanos(1)), 1);
        assert_eq!(timeout_ms(Duration::from_micros(1500)), 2);
        assert_eq!(timeout_ms(Duration::from_millis(200)), 200);
        assert_eq!(timeout_ms(Duration::MAX), u32::MAX);
    }
}
