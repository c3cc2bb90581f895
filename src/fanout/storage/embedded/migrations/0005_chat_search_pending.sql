-- Messages not in chat_search yet: a send records its id here (cheap) and the index is brought
-- up to date in batches, and always before a search runs.
CREATE TABLE chat_search_pending (
    message_id INTEGER PRIMARY KEY
);
