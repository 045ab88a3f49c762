-- IPC of paper §4.3 in PL/pgSQL: the Message table, send_message and receive_message.
-- In order: a receiver takes its lowest message_id first (message_id comes from one
-- sequence, so one sender's messages keep their order). Exactly once: taking a
-- message deletes it in the same transaction. Instead of the paper's polling, a send
-- notifies channel mailbox_<receiver> (the trigger-like wake-up of §4.3.2), on which
-- a waiting receiver LISTENs.

CREATE TABLE message (
    receiver_id bigint NOT NULL,
    message_id bigserial,
    sender_id bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (receiver_id, message_id)
);

-- send_message(R, S, data): queue data for receiver r and wake r up.
-- Returns the message_id.
CREATE FUNCTION send_message(r bigint, s bigint, body bytea) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    mid bigint;
BEGIN
    INSERT INTO message (receiver_id, sender_id, data) VALUES (r, s, body)
    RETURNING message_id INTO mid;
    PERFORM pg_notify('mailbox_' || r, '');
    RETURN mid;
END $$;

-- receive_message(R): take receiver r's oldest message, or no row when it has none.
CREATE FUNCTION receive_message(r bigint)
RETURNS TABLE (from_id bigint, id bigint, body bytea)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    DELETE FROM message m
     WHERE (m.receiver_id, m.message_id) =
           (SELECT o.receiver_id, o.message_id FROM message o
             WHERE o.receiver_id = r
             ORDER BY o.message_id
             LIMIT 1
               FOR UPDATE SKIP LOCKED)
    RETURNING m.sender_id, m.message_id, m.data;
END $$;
