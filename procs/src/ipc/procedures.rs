//! The IPC procedures. Each runs on the partition of the receiver(s) it names
//! ([`mailbox_partition`]) and answers `WrongPartition` anywhere else.
//!
//! - `ipc_send`: queue one message and notify the receiver's key, so a parked receive
//!   runs again after the commit.
//! - `ipc_recv`, `ipc_recv_batch`: take the lowest-id message(s), deleting them, so each
//!   is delivered in order and once. On an empty queue with `timeout_ms > 0` they ask
//!   to park on the receiver's key (`ctx.wait`) and return `QueueEmpty`.
//! - `ipc_multicast`: queue one shared copy of the data for every receiver listed (all
//!   on this partition), all or nothing.

use std::sync::Arc;

use super::codec::{
    put_reply_message, MulticastArgs, RecvArgs, SendArgs, MESSAGE_REPLY_OVERHEAD_BYTES,
};
use crate::schema::PartitionDb;
use tabos_engine::{put_u32, put_u64, Ctx, WaitFor};
use tabos_transport::wire::partition_for_key;
use tabos_transport::Status;

/// The partition that holds `receiver_id`'s mailbox, of `partition_count`.
pub fn mailbox_partition(receiver_id: u64, partition_count: u32) -> u32 {
    partition_for_key(&receiver_id.to_le_bytes(), partition_count)
}

fn check_local(ctx: &Ctx<'_, PartitionDb>, receiver_id: u64) -> Result<(), Status> {
    if mailbox_partition(receiver_id, ctx.partition_count) == ctx.partition {
        Ok(())
    } else {
        Err(Status::WrongPartition)
    }
}

fn check_size(ctx: &Ctx<'_, PartitionDb>, data: &[u8]) -> Result<(), Status> {
    if data.len() > ctx.db.limits.message_bytes_max {
        Err(Status::PayloadTooLarge)
    } else {
        Ok(())
    }
}

pub(super) fn send(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let args = SendArgs::decode(ctx.args)?;
    check_local(ctx, args.receiver_id)?;
    check_size(ctx, args.data)?;
    let db = &mut *ctx.db;
    let message_id = db.ipc.enqueue(
        &db.limits,
        args.sender_id,
        args.receiver_id,
        Arc::from(args.data),
    )?;
    ctx.notify.push(args.receiver_id);
    put_u64(ctx.reply, message_id);
    assert_eq!(ctx.reply.len(), 8);
    Ok(())
}

/// Empty queue: park on the receiver's key when the caller will wait.
fn queue_empty(ctx: &mut Ctx<'_, PartitionDb>, args: &RecvArgs) -> Result<(), Status> {
    assert!(ctx.db.ipc.first(args.receiver_id).is_none());
    if args.timeout_ms > 0 {
        ctx.wait = Some(WaitFor {
            key: args.receiver_id,
            timeout_ms: args.timeout_ms,
        });
    }
    Err(Status::QueueEmpty)
}

pub(super) fn recv(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let args = RecvArgs::decode_one(ctx.args)?;
    check_local(ctx, args.receiver_id)?;
    let Some(message) = ctx.db.ipc.dequeue(args.receiver_id) else {
        return queue_empty(ctx, &args);
    };
    put_reply_message(
        ctx.reply,
        message.sender_id,
        message.message_id,
        &message.data,
    );
    Ok(())
}

/// Takes up to `max_count` messages, and stops early before the one that would push
/// the reply past `ctx.max_reply_bytes` (the first is always taken: a message fits a
/// reply by the server's configuration, and if not the call fails and keeps it).
pub(super) fn recv_batch(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let args = RecvArgs::decode_batch(ctx.args)?;
    check_local(ctx, args.receiver_id)?;
    assert!(ctx.reply.is_empty());
    put_u32(ctx.reply, 0);
    let mut count: u32 = 0;
    while count < args.max_count {
        let Some(first) = ctx.db.ipc.first(args.receiver_id) else {
            break;
        };
        let size = MESSAGE_REPLY_OVERHEAD_BYTES + first.data.len();
        if count > 0 && ctx.reply.len() + size > ctx.max_reply_bytes {
            break;
        }
        let message = ctx.db.ipc.dequeue(args.receiver_id).expect("first exists");
        put_reply_message(
            ctx.reply,
            message.sender_id,
            message.message_id,
            &message.data,
        );
        count += 1;
    }
    if count == 0 {
        ctx.reply.clear();
        return queue_empty(ctx, &args);
    }
    ctx.reply[..4].copy_from_slice(&count.to_le_bytes());
    assert!(count <= args.max_count);
    Ok(())
}

pub(super) fn multicast(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let args = MulticastArgs::decode(ctx.args)?;
    for receiver_id in &args.receivers {
        check_local(ctx, *receiver_id)?;
    }
    check_size(ctx, args.data)?;
    let data: Arc<[u8]> = Arc::from(args.data);
    let db = &mut *ctx.db;
    for receiver_id in &args.receivers {
        // An error returns before the reply is used; `execute` rolls back every row.
        let message_id = db
            .ipc
            .enqueue(&db.limits, args.sender_id, *receiver_id, data.clone())?;
        put_u64(ctx.reply, message_id);
    }
    assert_eq!(ctx.reply.len(), 8 * args.receivers.len());
    let mut woken = args.receivers;
    woken.sort_unstable();
    woken.dedup();
    ctx.notify.extend_from_slice(&woken);
    Ok(())
}
