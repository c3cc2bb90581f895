-- A chat send in one round trip (fanout.storage.postgres.chat_messages): the transaction that
-- was seven statements from the adapter (begin, seq, event, outbox, membership, message,
-- commit) runs inside the server. Same locks in the same order as the other writers: the
-- channel row first (edits and deletes take their message row before it), then new rows.
--
-- The event's body depends on the seq it takes, so the adapter sends it cut where the seq goes
-- (body_parts: the body is part 1, the seq's digits, part 2, the digits again, ... last part).
--
-- Outcome: 'sent' (new_seq, new_msg_no: the new event's), or with both NULL and nothing
-- written: 'repeat' (a message with this (channel, sender, client_msg_id) exists),
-- 'not_member', 'no_channel'. A taken message id raises unique_violation on chat_messages_pkey.

CREATE FUNCTION chat_send(
    p_id bigint,
    p_channel bigint,
    p_sender bigint,
    p_client_msg_id text,
    p_text text,
    p_attachments bigint[],
    p_created_ms bigint,
    p_words text,
    p_body_parts bytea[],
    p_topic text,
    OUT outcome text,
    OUT new_seq bigint,
    OUT new_msg_no bigint
) LANGUAGE plpgsql AS $$
DECLARE
    v_body bytea;
    v_digits bytea;
BEGIN
    -- The lock an UPDATE takes, taken first: no increment to undo when nothing is written.
    SELECT c.last_seq + 1, c.msg_count + 1 INTO new_seq, new_msg_no
        FROM channels c WHERE c.id = p_channel FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        outcome := 'no_channel';
        RETURN;
    END IF;
    -- Under the channel's lock: membership changes take it too, and each statement here sees
    -- what committed before it (read committed), so a removal or an earlier send of the same
    -- client_msg_id that finished while this one waited is seen.
    PERFORM FROM channel_members m WHERE m.channel_id = p_channel AND m.user_id = p_sender;
    IF NOT FOUND THEN
        outcome := 'not_member';
        new_seq := NULL;
        new_msg_no := NULL;
        RETURN;
    END IF;
    PERFORM FROM chat_messages m WHERE m.channel_id = p_channel AND m.sender_id = p_sender
        AND m.client_msg_id = p_client_msg_id;
    IF FOUND THEN
        outcome := 'repeat';
        new_seq := NULL;
        new_msg_no := NULL;
        RETURN;
    END IF;

    UPDATE channels SET last_seq = new_seq, msg_count = new_msg_no,
        last_event_ms = p_created_ms WHERE id = p_channel;
    v_digits := convert_to(new_seq::text, 'UTF8');
    v_body := p_body_parts[1];
    FOR i IN 2 .. array_length(p_body_parts, 1) LOOP
        v_body := v_body || v_digits || p_body_parts[i];
    END LOOP;
    INSERT INTO chat_events (channel_id, seq, msg_no, body)
        VALUES (p_channel, new_seq, new_msg_no, v_body);
    -- No NOTIFY: chat events are relayed by the relay's next poll (fanout.storage.postgres.outbox).
    INSERT INTO log_outbox (topic, key, payload) VALUES (p_topic, p_channel::text, v_body);
    INSERT INTO chat_messages (id, channel_id, seq, sender_id, client_msg_id, text, attachments,
            created_ms, search)
        VALUES (p_id, p_channel, new_seq, p_sender, p_client_msg_id, p_text,
            p_attachments, p_created_ms, to_tsvector('simple', p_words));
    INSERT INTO chat_attachments (upload_id, message_id, channel_id)
        SELECT DISTINCT u, p_id, p_channel FROM unnest(p_attachments) AS u
        ON CONFLICT DO NOTHING;
    -- Sending marks the sender's own read position.
    UPDATE channel_members m SET last_read_seq = new_seq, read_msg_no = new_msg_no
        WHERE m.channel_id = p_channel AND m.user_id = p_sender
        AND m.last_read_seq < new_seq;
    outcome := 'sent';
END
$$;

-- Several sends in one round trip and one transaction (the adapter joins the sends that arrive
-- while one is in flight). Item k is argument k of each array; its attachments are
-- p_attachments[p_attachments_from[k] : p_attachments_from[k] + p_attachment_counts[k] - 1]
-- and its body parts p_body_parts[(k - 1) * p_parts_each + 1 : k * p_parts_each]. Items run
-- in channel order (then in the order given): every writer of several channels locks them
-- in one order, so two batches never wait for each other in a cycle. One row per item, n = k.
-- Any error undoes the whole batch (the adapter then sends its items one by one).

CREATE FUNCTION chat_send_many(
    p_ids bigint[],
    p_channels bigint[],
    p_senders bigint[],
    p_client_msg_ids text[],
    p_texts text[],
    p_attachments bigint[],
    p_attachments_from integer[],
    p_attachment_counts integer[],
    p_created_ms bigint[],
    p_words text[],
    p_body_parts bytea[],
    p_parts_each integer,
    p_topic text
) RETURNS TABLE (n integer, outcome text, new_seq bigint, new_msg_no bigint)
LANGUAGE plpgsql AS $$
DECLARE
    k integer;
    v_from integer;
BEGIN
    FOR k IN SELECT i FROM generate_subscripts(p_ids, 1) AS i ORDER BY p_channels[i], i LOOP
        v_from := p_attachments_from[k];
        n := k;
        SELECT s.outcome, s.new_seq, s.new_msg_no INTO outcome, new_seq, new_msg_no
            FROM chat_send(p_ids[k], p_channels[k], p_senders[k], p_client_msg_ids[k],
                p_texts[k], p_attachments[v_from : v_from + p_attachment_counts[k] - 1],
                p_created_ms[k], p_words[k],
                p_body_parts[(k - 1) * p_parts_each + 1 : k * p_parts_each], p_topic) AS s;
        RETURN NEXT;
    END LOOP;
END
$$;
