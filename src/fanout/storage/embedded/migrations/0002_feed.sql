-- The news feed: posts, likes, comments, affinity, the follow graph, activity, timelines.

CREATE TABLE posts (
    id INTEGER PRIMARY KEY,
    author_id INTEGER NOT NULL,
    text TEXT NOT NULL,
    media_urls TEXT NOT NULL,  -- JSON array
    created_ms INTEGER NOT NULL,
    like_count INTEGER NOT NULL DEFAULT 0,
    comment_count INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX posts_by_author ON posts (author_id, created_ms, id) WHERE deleted = 0;

-- Authors who published a post fan-out did not push: readers pull them.
CREATE TABLE pull_sources (
    author_id INTEGER PRIMARY KEY,
    last_unpushed_ms INTEGER NOT NULL
);

CREATE TABLE likes (
    post_id INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    PRIMARY KEY (post_id, user_id)
) WITHOUT ROWID;

CREATE TABLE comments (
    id INTEGER PRIMARY KEY,
    post_id INTEGER NOT NULL,
    author_id INTEGER NOT NULL,
    text TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX comments_by_post ON comments (post_id, id);

CREATE TABLE affinity (
    viewer_id INTEGER NOT NULL,
    author_id INTEGER NOT NULL,
    score REAL NOT NULL,
    PRIMARY KEY (viewer_id, author_id)
) WITHOUT ROWID;

CREATE TABLE follows (
    followee_id INTEGER NOT NULL,
    follower_id INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (followee_id, follower_id)
) WITHOUT ROWID;
CREATE INDEX follows_by_follower ON follows (follower_id, at_ms, followee_id);
CREATE INDEX follows_by_followee_time ON follows (followee_id, at_ms, follower_id);

CREATE TABLE user_stats (
    user_id INTEGER PRIMARY KEY,
    followers INTEGER NOT NULL DEFAULT 0,
    following INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE activity (
    user_id INTEGER PRIMARY KEY,
    last_active_ms INTEGER NOT NULL
);

CREATE TABLE timelines (
    owner_id INTEGER NOT NULL,
    score_ms INTEGER NOT NULL,
    post_id INTEGER NOT NULL,
    PRIMARY KEY (owner_id, score_ms, post_id)
) WITHOUT ROWID;

CREATE TABLE timeline_meta (
    owner_id INTEGER PRIMARY KEY,
    size INTEGER NOT NULL DEFAULT 0,
    floor_score INTEGER,
    floor_id INTEGER,
    built_ms INTEGER
);
