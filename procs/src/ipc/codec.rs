//! Argument and reply layouts of the IPC procedures, shared by the procedures, the
//! client library and benchmarks. Integers are little-endian; `bytes` is a `u32`
//! length then the bytes (see [`tabos_engine::args`]).
//!
//! | procedure        | arguments                                                | reply                     |
//! |------------------|----------------------------------------------------------|---------------------------|
//! | `ipc_send`       | sender u64, receiver u64, bytes(data)                    | message_id u64            |
//! | `ipc_recv`       | receiver u64, timeout_ms u32                             | one message               |
//! | `ipc_recv_batch` | receiver u64, max_count u32, timeout_ms u32              | count u32, count messages |
//! | `ipc_multicast`  | sender u64, count u32, count × receiver u64, bytes(data) | count × message_id u64    |
//!
//! A message in a reply is `sender u64, message_id u64, bytes(data)`.

use tabos_engine::{put_bytes, put_u32, put_u64, ArgReader};
use tabos_transport::Status;

/// Most receivers in one `ipc_multicast` call (the client splits longer lists).
pub const MULTICAST_RECEIVERS_MAX: usize = 4096;

/// Bytes a message takes in a reply besides its data.
pub const MESSAGE_REPLY_OVERHEAD_BYTES: usize = 8 + 8 + 4;

/// Append the arguments of `ipc_send` to `out`.
pub fn put_send_args(out: &mut Vec<u8>, sender_id: u64, receiver_id: u64, data: &[u8]) {
    put_u64(out, sender_id);
    put_u64(out, receiver_id);
    put_bytes(out, data);
}

/// The arguments of `ipc_send`.
pub fn send_args(sender_id: u64, receiver_id: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(20 + data.len());
    put_send_args(&mut out, sender_id, receiver_id, data);
    out
}

/// The arguments of `ipc_recv`.
pub fn recv_args(receiver_id: u64, timeout_ms: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    put_u64(&mut out, receiver_id);
    put_u32(&mut out, timeout_ms);
    out
}

/// The arguments of `ipc_recv_batch`.
pub fn recv_batch_args(receiver_id: u64, max_count: u32, timeout_ms: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    put_u64(&mut out, receiver_id);
    put_u32(&mut out, max_count);
    put_u32(&mut out, timeout_ms);
    out
}

/// Append the arguments of `ipc_multicast` to `out`. Every receiver must live on the
/// partition the call goes to; at most [`MULTICAST_RECEIVERS_MAX`] of them.
pub fn put_multicast_args(out: &mut Vec<u8>, sender_id: u64, receivers: &[u64], data: &[u8]) {
    assert!(receivers.len() <= MULTICAST_RECEIVERS_MAX);
    put_u64(out, sender_id);
    put_u32(out, receivers.len() as u32);
    for receiver_id in receivers {
        put_u64(out, *receiver_id);
    }
    put_bytes(out, data);
}

/// The arguments of `ipc_multicast`.
pub fn multicast_args(sender_id: u64, receivers: &[u64], data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 8 * receivers.len() + data.len());
    put_multicast_args(&mut out, sender_id, receivers, data);
    out
}

/// Decoded `ipc_send` arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendArgs<'a> {
    pub sender_id: u64,
    pub receiver_id: u64,
    pub data: &'a [u8],
}

impl<'a> SendArgs<'a> {
    pub fn decode(args: &'a [u8]) -> Result<Self, Status> {
        let mut r = ArgReader::new(args);
        let decoded = SendArgs {
            sender_id: r.u64()?,
            receiver_id: r.u64()?,
            data: r.bytes()?,
        };
        r.finish()?;
        Ok(decoded)
    }
}

/// Decoded `ipc_recv` / `ipc_recv_batch` arguments (`max_count` is 1 for `ipc_recv`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecvArgs {
    pub receiver_id: u64,
    pub max_count: u32,
    pub timeout_ms: u32,
}

impl RecvArgs {
    pub fn decode_one(args: &[u8]) -> Result<Self, Status> {
        let mut r = ArgReader::new(args);
        let receiver_id = r.u64()?;
        let timeout_ms = r.u32()?;
        r.finish()?;
        Ok(RecvArgs {
            receiver_id,
            max_count: 1,
            timeout_ms,
        })
    }

    /// `BadArgs` for `max_count == 0`.
    pub fn decode_batch(args: &[u8]) -> Result<Self, Status> {
        let mut r = ArgReader::new(args);
        let decoded = RecvArgs {
            receiver_id: r.u64()?,
            max_count: r.u32()?,
            timeout_ms: r.u32()?,
        };
        r.finish()?;
        if decoded.max_count == 0 {
            return Err(Status::BadArgs);
        }
        Ok(decoded)
    }
}

/// Decoded `ipc_multicast` arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MulticastArgs<'a> {
    pub sender_id: u64,
    /// 1..=[`MULTICAST_RECEIVERS_MAX`] receivers, possibly repeated.
    pub receivers: Vec<u64>,
    pub data: &'a [u8],
}

impl<'a> MulticastArgs<'a> {
    pub fn decode(args: &'a [u8]) -> Result<Self, Status> {
        let mut r = ArgReader::new(args);
        let sender_id = r.u64()?;
        let count = r.u32()? as usize;
        if count == 0 || count > MULTICAST_RECEIVERS_MAX {
            return Err(Status::BadArgs);
        }
        let mut receivers = Vec::with_capacity(count);
        for _ in 0..count {
            receivers.push(r.u64()?);
        }
        let data = r.bytes()?;
        r.finish()?;
        assert_eq!(receivers.len(), count);
        Ok(MulticastArgs {
            sender_id,
            receivers,
            data,
        })
    }
}

/// A message as a reply carries it (the receiver is implied by the call).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyMessage<'a> {
    pub sender_id: u64,
    pub message_id: u64,
    pub data: &'a [u8],
}

/// Append one message to a reply.
pub fn put_reply_message(out: &mut Vec<u8>, sender_id: u64, message_id: u64, data: &[u8]) {
    let before = out.len();
    put_u64(out, sender_id);
    put_u64(out, message_id);
    put_bytes(out, data);
    assert_eq!(
        out.len() - before,
        MESSAGE_REPLY_OVERHEAD_BYTES + data.len()
    );
}

fn read_message<'a>(r: &mut ArgReader<'a>) -> Result<ReplyMessage<'a>, Status> {
    Ok(ReplyMessage {
        sender_id: r.u64()?,
        message_id: r.u64()?,
        data: r.bytes()?,
    })
}

/// Decode the reply of `ipc_send`: the message id.
pub fn decode_send_reply(reply: &[u8]) -> Result<u64, Status> {
    let mut r = ArgReader::new(reply);
    let message_id = r.u64()?;
    r.finish()?;
    Ok(message_id)
}

/// Decode the reply of `ipc_recv`.
pub fn decode_recv_reply(reply: &[u8]) -> Result<ReplyMessage<'_>, Status> {
    let mut r = ArgReader::new(reply);
    let message = read_message(&mut r)?;
    r.finish()?;
    Ok(message)
}

/// Decode the reply of `ipc_recv_batch`. `BadArgs` for a malformed reply.
pub fn decode_recv_batch_reply(reply: &[u8]) -> Result<Vec<ReplyMessage<'_>>, Status> {
    let mut r = ArgReader::new(reply);
    let count = r.u32()? as usize;
    // Every message takes at least its overhead: a count beyond that is a lie.
    if count > r.remaining() / MESSAGE_REPLY_OVERHEAD_BYTES {
        return Err(Status::BadArgs);
    }
    let mut messages = Vec::with_capacity(count);
    for _ in 0..count {
        messages.push(read_message(&mut r)?);
    }
    r.finish()?;
    Ok(messages)
}

/// Decode the reply of `ipc_multicast` to a call that named `count` receivers.
pub fn decode_multicast_reply(reply: &[u8], count: usize) -> Result<Vec<u64>, Status> {
    if reply.len() != count.saturating_mul(8) {
        return Err(Status::BadArgs);
    }
    let mut r = ArgReader::new(reply);
    let ids = (0..count)
        .map(|_| r.u64())
        .collect::<Result<Vec<u64>, _>>()?;
    r.finish()?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_round_trip() {
        let send = send_args(1, u64::MAX, b"hi");
        assert_eq!(
            SendArgs::decode(&send),
            Ok(SendArgs {
                sender_id: 1,
                receiver_id: u64::MAX,
                data: b"hi"
            })
        );
        let recv = RecvArgs::decode_one(&recv_args(9, 250)).unwrap();
        assert_eq!(
            (recv.receiver_id, recv.max_count, recv.timeout_ms),
            (9, 1, 250)
        );
        let batch = RecvArgs::decode_batch(&recv_batch_args(9, 7, 0)).unwrap();
        assert_eq!((batch.max_count, batch.timeout_ms), (7, 0));
        assert_eq!(
            RecvArgs::decode_batch(&recv_batch_args(9, 0, 0)),
            Err(Status::BadArgs)
        );
        let bytes = multicast_args(3, &[4, 5, 4], b"");
        let multi = MulticastArgs::decode(&bytes).unwrap();
        assert_eq!((multi.sender_id, &multi.receivers[..]), (3, &[4, 5, 4][..]));
        assert_eq!(
            MulticastArgs::decode(&multicast_args(3, &[], b"x")),
            Err(Status::BadArgs)
        );
    }

    #[test]
    fn truncated_or_extended_arguments_are_bad_args() {
        let encodings = [
            send_args(1, 2, b"abc"),
            recv_args(1, 2),
            recv_batch_args(1, 2, 3),
            multicast_args(1, &[2, 3], b"abc"),
        ];
        for (i, full) in encodings.iter().enumerate() {
            let decode = |bytes: &[u8]| match i {
                0 => SendArgs::decode(bytes).map(drop),
                1 => RecvArgs::decode_one(bytes).map(drop),
                2 => RecvArgs::decode_batch(bytes).map(drop),
                _ => MulticastArgs::decode(bytes).map(drop),
            };
            assert_eq!(decode(full), Ok(()));
            for cut in 0..full.len() {
                assert_eq!(decode(&full[..cut]), Err(Status::BadArgs), "{i} cut {cut}");
            }
            let mut longer = full.clone();
            longer.push(0);
            assert_eq!(decode(&longer), Err(Status::BadArgs), "{i} longer");
        }
        // A receiver count far beyond the bytes present fails without allocating it.
        let mut huge = Vec::new();
        put_u64(&mut huge, 1);
        put_u32(&mut huge, u32::MAX);
        assert_eq!(MulticastArgs::decode(&huge), Err(Status::BadArgs));
    }

    #[test]
    fn replies_round_trip_and_reject_garbage() {
        let mut one = Vec::new();
        put_reply_message(&mut one, 5, 6, b"data");
        let m = decode_recv_reply(&one).unwrap();
        assert_eq!((m.sender_id, m.message_id, m.data), (5, 6, &b"data"[..]));
        let mut batch = Vec::new();
        put_u32(&mut batch, 2);
        put_reply_message(&mut batch, 1, 1, b"");
        put_reply_message(&mut batch, 2, 3, b"x");
        let ms = decode_recv_batch_reply(&batch).unwrap();
        assert_eq!(ms.len(), 2);
        assert_eq!(
            (ms[1].sender_id, ms[1].message_id, ms[1].data),
            (2, 3, &b"x"[..])
        );
        let mut lie = Vec::new();
        put_u32(&mut lie, u32::MAX);
        assert_eq!(decode_recv_batch_reply(&lie), Err(Status::BadArgs));
        assert_eq!(
            decode_recv_batch_reply(&batch[..batch.len() - 1]),
            Err(Status::BadArgs)
        );
        assert_eq!(decode_send_reply(&7u64.to_le_bytes()), Ok(7));
        assert_eq!(decode_send_reply(&[1, 2]), Err(Status::BadArgs));
        assert_eq!(decode_multicast_reply(&[0; 16], 2), Ok(vec![0, 0]));
        assert_eq!(decode_multicast_reply(&[0; 16], 3), Err(Status::BadArgs));
        assert_eq!(
            decode_multicast_reply(&[], usize::MAX),
            Err(Status::BadArgs)
        );
    }
}
