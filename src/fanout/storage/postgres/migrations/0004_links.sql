-- Short links and click analytics on PostgreSQL (scaled mode); the same tables as the embedded
-- 0003_links.sql. Codes and other text keys are COLLATE "C": comparison is by bytes, as in
-- SQLite, so codes are case-sensitive and by_owner orders ties on time exactly as embedded mode
-- does (a linguistic collation would sort "a" next to "A"); byte comparison is also the cheapest.

CREATE TABLE links (
    code text COLLATE "C" PRIMARY KEY,
    owner_id bigint NOT NULL,
    url text NOT NULL,
    redirect smallint NOT NULL,  -- 301 or 302
    created_ms bigint NOT NULL,
    expires_ms bigint,
    max_visits integer,
    visits integer NOT NULL DEFAULT 0,
    deleted boolean NOT NULL DEFAULT false
);
-- An owner's live links, newest first (by_owner): one forward range scan per page.
CREATE INDEX links_live_by_owner ON links (owner_id, created_ms DESC, code DESC) WHERE NOT deleted;
-- An owner's newest live link to a URL (find_for_reuse). By the URL's md5, not the URL: a
-- 2048-character URL may take up to 8 kB in UTF-8, beyond what a btree entry may hold (~2.7 kB).
CREATE INDEX links_live_by_url ON links (owner_id, md5(url), created_ms DESC) WHERE NOT deleted;

-- Named counters; 'links' feeds the code permutation in leased blocks (lease_block).
CREATE TABLE counters (
    name text PRIMARY KEY,
    value bigint NOT NULL
);

-- grain: m (minute), h (hour), d (day); bots are counted apart from human clicks.
CREATE TABLE click_counts (
    code text COLLATE "C" NOT NULL,
    grain text COLLATE "C" NOT NULL,
    bucket_ms bigint NOT NULL,
    clicks bigint NOT NULL DEFAULT 0,
    uniques bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (code, grain, bucket_ms)
);

-- Visitors seen per code and hour: a visitor counts once per hour.
CREATE TABLE click_visitors (
    code text COLLATE "C" NOT NULL,
    hour_ms bigint NOT NULL,
    visitor text COLLATE "C" NOT NULL,
    PRIMARY KEY (code, hour_ms, visitor)
);

-- Values are short by construction: hosts <= 253 characters, UTM values <= 100.
CREATE TABLE click_dims (
    code text COLLATE "C" NOT NULL,
    day_ms bigint NOT NULL,
    dim text COLLATE "C" NOT NULL,
    value text COLLATE "C" NOT NULL,
    clicks bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (code, day_ms, dim, value)
);

CREATE TABLE click_totals (
    code text COLLATE "C" PRIMARY KEY,
    clicks bigint NOT NULL DEFAULT 0,
    bots bigint NOT NULL DEFAULT 0
);

-- The last log position applied per consumer group and partition (exactly-once): the offset
-- as (hi, lo), see fanout.core.log.offset_order; (-1, -1) = nothing applied yet.
CREATE TABLE click_watermarks (
    grp text NOT NULL,
    partition integer NOT NULL,
    hi bigint NOT NULL,
    lo bigint NOT NULL,
    PRIMARY KEY (grp, partition)
);
