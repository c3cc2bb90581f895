-- Short links and click analytics.

CREATE TABLE links (
    code TEXT PRIMARY KEY,
    owner_id INTEGER NOT NULL,
    url TEXT NOT NULL,
    redirect INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    max_visits INTEGER,
    visits INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX links_by_owner ON links (owner_id, created_ms, code) WHERE deleted = 0;
CREATE INDEX links_by_url ON links (owner_id, url, created_ms) WHERE deleted = 0;

CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- grain: m (minute), h (hour), d (day); bots are counted apart from human clicks.
CREATE TABLE click_counts (
    code TEXT NOT NULL,
    grain TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    clicks INTEGER NOT NULL DEFAULT 0,
    uniques INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (code, grain, bucket_ms)
) WITHOUT ROWID;

-- Visitors seen per code and hour: a visitor counts once per hour.
CREATE TABLE click_visitors (
    code TEXT NOT NULL,
    hour_ms INTEGER NOT NULL,
    visitor TEXT NOT NULL,
    PRIMARY KEY (code, hour_ms, visitor)
) WITHOUT ROWID;

CREATE TABLE click_dims (
    code TEXT NOT NULL,
    day_ms INTEGER NOT NULL,
    dim TEXT NOT NULL,
    value TEXT NOT NULL,
    clicks INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (code, day_ms, dim, value)
) WITHOUT ROWID;

CREATE TABLE click_totals (
    code TEXT PRIMARY KEY,
    clicks INTEGER NOT NULL DEFAULT 0,
    bots INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- The last log position applied per consumer group and partition (exactly-once).
CREATE TABLE click_watermarks (
    grp TEXT NOT NULL,
    partition INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    lo INTEGER NOT NULL,
    PRIMARY KEY (grp, partition)
) WITHOUT ROWID;
