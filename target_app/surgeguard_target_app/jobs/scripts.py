"""The Lua scripts that change a job's state, each one atomic step in Redis.

Every script that settles an entry first checks that the entry is still pending in
the consumer group (XPENDING) and does nothing if another worker settled it already;
settling acknowledges and deletes the entry (XACK, XDEL) in the same step. Times come
from Redis's own clock (TIME), so workers on machines with skewed clocks agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

_PENDING = "#redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1) > 0"

# KEYS: stream, done, status. ARGV: group, entry id, status ttl (0: none).
# -> {-2} no longer pending, {-1} already done, else {attempts, last error or nil}.
_BEGIN = f"""
if not ({_PENDING}) then return {{-2}} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {{-1}} end
local attempts = redis.call('HINCRBY', KEYS[3], 'attempts', 1)
redis.call('HSET', KEYS[3], 'status', 'processing')
if ARGV[3] ~= '0' then redis.call('EXPIRE', KEYS[3], ARGV[3]) end
return {{attempts, redis.call('HGET', KEYS[3], 'last_error')}}
"""

# The effect and its record in one step: a second run finds the record and skips both.
# KEYS: stream, done, status, effect key. ARGV: group, entry id, done ttl, kind, args...
# -> -2 no longer pending, 0 duplicate (effect skipped), 1 effect applied.
_SUCCEED = f"""
if not ({_PENDING}) then return -2 end
local fresh = redis.call('SET', KEYS[2], 'done', 'NX', 'EX', ARGV[3])
if fresh then
  if ARGV[4] == 'xadd' then
    redis.call('XADD', KEYS[4], '*', unpack(ARGV, 5))
  elseif ARGV[4] == 'hincrby' then
    redis.call('HINCRBY', KEYS[4], ARGV[5], ARGV[6])
  end
  redis.call('HSET', KEYS[3], 'status', 'done')
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if fresh then return 1 end
return 0
"""

# Park the job in the retry set (due at Redis's own clock + delay) and settle the entry.
# KEYS: stream, done, status, retry set. ARGV: group, entry id, delay ms, error, member.
_RETRY = f"""
if not ({_PENDING}) then return -2 end
local parked = 0
if redis.call('EXISTS', KEYS[2]) == 0 then
  local now = redis.call('TIME')
  local due = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + tonumber(ARGV[3])
  redis.call('ZADD', KEYS[4], due, ARGV[5])
  redis.call('HSET', KEYS[3], 'status', 'queued', 'last_error', ARGV[4])
  parked = 1
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return parked
"""

# KEYS: stream, done, status, dead stream.
# ARGV: group, entry id, done ttl, error, attempts, report ('1'/'0'), dead fields...
_DEAD = f"""
if not ({_PENDING}) then return -2 end
local fresh = redis.call('SET', KEYS[2], 'dead', 'NX', 'EX', ARGV[3])
if fresh then
  redis.call('XADD', KEYS[4], '*', unpack(ARGV, 7))
  if ARGV[6] == '1' then
    redis.call('HSET', KEYS[3], 'status', 'dead', 'last_error', ARGV[4], 'attempts', ARGV[5])
  end
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
if fresh then return 1 end
return 0
"""

# Hand an entry back: it stays pending but looks idle long enough for any worker's next
# reclaim; an interrupted attempt is not counted.
# KEYS: stream, done, status. ARGV: group, entry id, consumer, idle ms, begun ('1'/'0').
_HAND_BACK = f"""
if not ({_PENDING}) then return -2 end
if ARGV[5] == '1' and redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('HINCRBY', KEYS[3], 'attempts', -1)
  redis.call('HSET', KEYS[3], 'status', 'queued')
end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'IDLE', ARGV[4], 'JUSTID')
return 1
"""

# Move due retries back to their streams. KEYS: retry set. ARGV: most to move.
_PROMOTE = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now_ms, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  local job = cjson.decode(member)
  redis.call('XADD', job.stream, '*', unpack(job.fields))
  redis.call('ZREM', KEYS[1], member)
end
return #due
"""


@dataclass(frozen=True)
class Script:
    name: str
    source: str

    @property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode()).hexdigest()


BEGIN = Script("begin", _BEGIN)
SUCCEED = Script("succeed", _SUCCEED)
RETRY = Script("retry", _RETRY)
DEAD = Script("dead", _DEAD)
HAND_BACK = Script("hand_back", _HAND_BACK)
PROMOTE = Script("promote", _PROMOTE)
SCRIPTS = (BEGIN, SUCCEED, RETRY, DEAD, HAND_BACK, PROMOTE)
