"""The Lua scripts of the Redis timelines; what they keep in a sorted set (entries, the floor
marker, the encoding switch) is described in ``timelines.py``.

Every script is idempotent: run twice, it leaves what it left once (a NOSCRIPT retry and a
redelivered record rely on it).
"""

from __future__ import annotations

__all__ = ["ADD", "INSPECT", "PAGE", "PUSH", "REMOVE", "SKIPLIST_FROM"]

# Members past which a timeline leaves Redis's compact encoding (its marker is made long):
# measured per timeline write, the compact encoding is cheaper up to ~64 entries and ~6x
# smaller, a skiplist cheaper beyond (Redis's own switch is at 128).
SKIPLIST_FROM = 64

# Byte-wise a < b. Lua's own < on strings follows the server's locale (strcoll), which need
# not order arbitrary bytes numerically.
_LT = """
local function lt(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then
      return x < y
    end
  end
  return #a < #b
end
"""

# The marker's rank, member and score (nil for a missing key). Usually rank 0: only entries
# pushed below the floor since the last trim sort under it.
_FIND = (
    f"local SKIPLIST_FROM = {SKIPLIST_FROM}\n"
    + """local NO_FLOOR = string.rep(string.char(0), 65)
local PAD = string.rep(string.char(0), 57)
local function no_floor(marker, score)
  return #marker < 9 or score == '-inf'
end
local function find_marker(key)
  local from, count = 0, 1
  while true do
    local got = redis.call('ZRANGE', key, from, from + count - 1, 'WITHSCORES')
    if #got == 0 then
      return nil
    end
    for i = 1, #got, 2 do
      if #got[i] ~= 8 then
        return from + (i - 1) / 2, got[i], got[i + 1]
      end
    end
    from, count = from + count, 64
  end
end
-- A long marker makes the set a skiplist (see the module docstring); a short one lets Redis
-- keep a small set compact.
local function lengthen(key)
  local _, marker, score = find_marker(key)
  if marker ~= nil and #marker < 65 then
    local long = NO_FLOOR
    if #marker > 8 then
      long = string.sub(marker, 1, 8) .. PAD
    end
    redis.call('ZADD', key, score, long)
    redis.call('ZREM', key, marker)
  end
end
"""
)

# A timeline of n members keeps its newest cap. If entries above the floor go, the newest of
# them becomes the floor (the new marker sorts right above it); if only members below the
# marker go, the floor stays.
_TRIM = (
    _FIND
    + """
local function trim(key, n, cap)
  local cut = n - cap - 1
  local at = find_marker(key)
  if at == nil or at < cut then
    local newest = redis.call('ZRANGE', key, cut, cut, 'WITHSCORES')
    redis.call('ZREMRANGEBYRANK', key, 0, cut)
    redis.call('ZADD', key, newest[2], newest[1] .. PAD)
  elseif at == cut then
    redis.call('ZREMRANGEBYRANK', key, 0, cut - 1)
  else
    redis.call('ZREMRANGEBYRANK', key, 0, cut)
  end
end
"""
)

# KEYS: timelines (of one hash tag on a cluster). ARGV: limit (members before a trim), cap,
# then per key: how many entries, and that many score, member pairs. One ZADD per key, whatever
# the number of entries: in a sorted set past the compact encoding most of a write's cost is
# reaching the key and the command, not the insert (measured: ~6.5 µs of Redis CPU for one
# entry per call, ~2.5 µs an entry at eight).
PUSH = (
    _TRIM
    + """
local limit, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local a = 3
for i = 1, #KEYS do
  local key, n = KEYS[i], tonumber(ARGV[a])
  local added, last = 0, a + 2 * n
  for from = a + 1, last, 400 do  -- 200 entries per ZADD: far below Lua's limit on unpack()
    added = added + redis.call('ZADD', key, unpack(ARGV, from, math.min(from + 399, last)))
  end
  a = last + 1
  if added > 0 then
    local size = redis.call('ZCARD', key)
    if size == added then
      redis.call('ZADD', key, '-inf', '')  -- a new timeline: its marker, short while small
      size = size + 1
    end
    if size > SKIPLIST_FROM and size - added <= SKIPLIST_FROM then
      lengthen(key)
    end
    if size > limit then
      trim(key, size, cap)
    end
  end
end
return 0
"""
)

# KEYS[1]: timeline. ARGV: limit, cap, floor score ('' = no floor), floor marker, then
# score, member pairs. Raises the floor, adds, deletes everything below the marker, trims.
ADD = (
    _LT
    + _TRIM
    + """
local key = KEYS[1]
local limit, cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local _, marker, marker_score = find_marker(key)
if marker == nil then
  marker, marker_score = '', '-inf'
  redis.call('ZADD', key, marker_score, marker)
end
if ARGV[3] ~= '' then
  local raise = no_floor(marker, marker_score)
  if not raise then
    local new, old = tonumber(ARGV[3]), tonumber(marker_score)
    raise = new > old or (new == old and lt(marker, ARGV[4]))
  end
  if raise then
    redis.call('ZREM', key, marker)
    marker = ARGV[4]
    redis.call('ZADD', key, ARGV[3], marker)
  end
end
for i = 5, #ARGV, 400 do  -- 200 entries per ZADD: far below Lua's limit on unpack()
  redis.call('ZADD', key, unpack(ARGV, i, math.min(i + 399, #ARGV)))
end
local below = redis.call('ZRANK', key, marker)
if below > 0 then
  redis.call('ZREMRANGEBYRANK', key, 0, below - 1)
end
local n = redis.call('ZCARD', key)
if n > SKIPLIST_FROM then
  lengthen(key)
end
if n > limit then
  trim(key, n, cap)
end
return 0
"""
)

# KEYS[1]: timeline. ARGV: highest score ('+inf' or before's), before's member ('' = none),
# limit. Returns member, score pairs, newest first, ending at the marker: the range starts at
# the marker's score, so a ``before`` under the floor finds nothing, not the strays down there.
# Entries with before's score are fetched too and filtered by id, so equal scores page exactly.
PAGE = (
    _LT
    + _FIND
    + """
local key, top, before = KEYS[1], ARGV[1], ARGV[2]
local limit = tonumber(ARGV[3])
local at, _, bottom = find_marker(key)
if at == nil then
  return {}
end
local top_score = before ~= '' and tonumber(top)
local out, offset, batch = {}, 0, limit + 1
while true do
  local got = redis.call('ZRANGE', key, top, bottom, 'BYSCORE', 'REV', 'LIMIT', offset, batch,
    'WITHSCORES')
  for i = 1, #got, 2 do
    local member, score = got[i], got[i + 1]
    if #member ~= 8 then
      return out
    end
    if before == '' or tonumber(score) < top_score or lt(member, before) then
      out[#out + 1] = member
      out[#out + 1] = score
      if #out == 2 * limit then
        return out
      end
    end
  end
  if #got < 2 * batch then
    return out
  end
  offset = offset + batch
end
"""
)

# KEYS[1]: timeline. Returns the marker (member, score) or nil, and the entries above it.
INSPECT = (
    _FIND
    + """
local at, marker, score = find_marker(KEYS[1])
if at == nil then
  return {false, false, 0}
end
return {marker, score, redis.call('ZCARD', KEYS[1]) - at - 1}
"""
)

# KEYS: timelines (of one hash tag on a cluster). ARGV[1]: the member to remove.
REMOVE = """
for i = 1, #KEYS do
  redis.call('ZREM', KEYS[i], ARGV[1])
end
return 0
"""
