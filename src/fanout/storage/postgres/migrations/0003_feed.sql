-- The news feed on PostgreSQL (scaled mode): posts, likes, comments, affinity, the follow graph
-- and reader activity. Timelines are not here: they are Redis sorted sets.
-- Every list the adapters serve is an index range scan in the order it is returned, so a page
-- costs the same on a table of a thousand rows or a billion. Ids are 64-bit Snowflakes: bigint.

CREATE TABLE posts (
    id bigint PRIMARY KEY,
    author_id bigint NOT NULL,
    text text NOT NULL,
    media_urls text[] NOT NULL DEFAULT '{}',
    created_ms bigint NOT NULL,
    like_count bigint NOT NULL DEFAULT 0,
    comment_count bigint NOT NULL DEFAULT 0,
    deleted boolean NOT NULL DEFAULT false
);
-- An author's live posts, newest first (by_author, by_authors); deleted ones leave the index.
CREATE INDEX posts_live_by_author ON posts (author_id, created_ms DESC, id DESC) WHERE NOT deleted;

-- Authors who ever published a post fan-out did not push: readers pull them, for good.
CREATE TABLE pull_authors (
    author_id bigint PRIMARY KEY,
    since_ms bigint NOT NULL  -- creation time of their first unpushed post
);

CREATE TABLE likes (
    user_id bigint NOT NULL,
    post_id bigint NOT NULL,
    PRIMARY KEY (user_id, post_id)  -- "which of these posts does this user like" is a range
);

CREATE TABLE comments (
    id bigint PRIMARY KEY,
    post_id bigint NOT NULL,
    author_id bigint NOT NULL,
    text text NOT NULL,
    created_ms bigint NOT NULL
);
CREATE INDEX comments_by_post ON comments (post_id, id);

-- How much a viewer interacted with an author: +1 per like and per comment on their posts.
CREATE TABLE affinity (
    viewer_id bigint NOT NULL,
    author_id bigint NOT NULL,
    score double precision NOT NULL,
    PRIMARY KEY (viewer_id, author_id)
);

-- The primary key serves is_following and fan-out (a followee's followers by id); the two
-- other indexes serve the newest-first lists of followers and of followees.
CREATE TABLE follows (
    followee_id bigint NOT NULL,
    follower_id bigint NOT NULL,
    at_ms bigint NOT NULL,
    PRIMARY KEY (followee_id, follower_id)
);
CREATE INDEX follows_by_follower ON follows (follower_id, at_ms DESC, followee_id DESC);
CREATE INDEX follows_by_followee ON follows (followee_id, at_ms DESC, follower_id DESC);

-- Counters kept in the transaction that changes an edge, so counts never need a scan.
CREATE TABLE user_stats (
    user_id bigint PRIMARY KEY,
    followers bigint NOT NULL DEFAULT 0,
    following bigint NOT NULL DEFAULT 0
);

-- When each reader was last active; fan-out skips followers idle for too long.
CREATE TABLE activity (
    user_id bigint PRIMARY KEY,
    last_active_ms bigint NOT NULL
);
