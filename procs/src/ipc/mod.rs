//! Inter-process communication (paper §4.3): messages are rows of a `Message` table
//! partitioned on the receiver; sending inserts a row on the receiver's partition,
//! receiving deletes the lowest-id row there. Unlike the paper's polling receiver, a
//! receive on an empty queue parks at the partition and is run again when a send to
//! the same receiver commits (the "trigger" §4.3.2 asks for), or times out.
//!
//! - [`tables`]: `Message` and `Mailbox`, and the invariants between them.
//! - [`procedures`]: `ipc_send`, `ipc_recv`, `ipc_recv_batch`, `ipc_multicast`.
//! - [`codec`]: their argument and reply layouts, shared with the client library.

pub mod codec;
pub mod procedures;
pub mod tables;
#[cfg(test)]
mod tests;

pub use codec::{
    decode_multicast_reply, decode_recv_batch_reply, decode_recv_reply, decode_send_reply,
    multicast_args, put_multicast_args, put_send_args, recv_args, recv_batch_args, send_args,
    ReplyMessage, MESSAGE_REPLY_OVERHEAD_BYTES, MULTICAST_RECEIVERS_MAX,
};
pub use procedures::mailbox_partition;
pub use tables::{IpcTables, MailboxRow, MessageRow};

pub mod ids {
    //! Stable procedure ids of this service (150..=199).

    /// `ipc_send(sender, receiver, bytes(data))` on the receiver's partition → message id.
    pub const SEND: u32 = 150;
    /// `ipc_recv(receiver, timeout_ms)` → the lowest-id message, or parks.
    pub const RECV: u32 = 151;
    /// `ipc_recv_batch(receiver, max_count, timeout_ms)` → up to `max_count` messages.
    pub const RECV_BATCH: u32 = 152;
    /// `ipc_multicast(sender, receivers, bytes(data))` → a message id per receiver.
    pub const MULTICAST: u32 = 153;

    /// Every id of this service lies in `FIRST..=LAST`.
    pub const FIRST: u32 = 150;
    pub const LAST: u32 = 199;

    const _: () = assert!(FIRST <= SEND && MULTICAST <= LAST);
}

use crate::schema::PartitionDb;
use tabos_engine::{Access, ProcDef, ProcFn, Registry, Scope};

/// Register this service's procedures.
pub fn register(registry: &mut Registry<PartitionDb>) {
    let defs: [(u32, &str, ProcFn<PartitionDb>); 4] = [
        (ids::SEND, "ipc_send", procedures::send),
        (ids::RECV, "ipc_recv", procedures::recv),
        (ids::RECV_BATCH, "ipc_recv_batch", procedures::recv_batch),
        (ids::MULTICAST, "ipc_multicast", procedures::multicast),
    ];
    for (id, name, func) in defs {
        assert!((ids::FIRST..=ids::LAST).contains(&id), "{name}: id {id}");
        registry.register(ProcDef {
            id,
            name,
            access: Access::ReadWrite,
            scope: Scope::Single,
            func,
        });
    }
}
