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

# KEYS: stream, done, status. ARGV: group, entry id, status ttl (0: none), '1' to set
# that ttl every time, '0' only when the hash has none (a signup's hash keeps the ttl it
# was stored with; one that expired while its job waited is not brought back forever).
# -> {-2} no longer pending, {-1} already done, else {attempts, last error or nil}.
_BEGIN = f"""
if not ({_PENDING}) then return {{-2}} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {{-1}} end
local attempts = redis.call('HINCRBY', KEYS[3], 'attempts', 1)
redis.call('HSET', KEYS[3], 'status', 'processing')
if ARGV[3] ~= '0' and (ARGV[4] == '1' or redis.call('TTL', KEYS[3]) == -1) then
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
return {{attempts, redis.call('HGET', KEYS[3], 'last_error')}}
"""

# The effect and its record in one step: a second run finds the record and skips both.
# KEYS: stream, done, status, effect key.
# ARGV: group, entry id, done ttl, kind, bound (xadd: the stream's maxlen; hincrby: most
# fields, past which new names count under 'other'), args...
# -> -2 no longer pending, 0 duplicate (effect skipped), 1 effect applied.
_SUCCEED = f"""
if not ({_PENDING}) then return -2 end
local fresh = redis.call('SET', KEYS[2], 'done', 'NX', 'EX', ARGV[3])
if fresh then
  if ARGV[4] == 'xadd' then
    redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', unpack(ARGV, 6))
  elseif ARGV[4] == 'hincrby' then
    local field = ARGV[6]
    if redis.call('HEXISTS', KEYS[4], field) == 0
        and redis.call('HLEN', KEYS[4]) >= tonumber(ARGV[5]) then
      field = 'other'
    end
    redis.call('HINCRBY', KEYS[4], field, ARGV[7])
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
# ARGV: group, entry id, done ttl, error, attempts, report ('1'/'0'), dead letters maxlen,
# dead fields...
_DEAD = f"""
if not ({_PENDING}) then return -2 end
local fresh = redis.call('SET', KEYS[2], 'dead', 'NX', 'EX', ARGV[3])
if fresh then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[7], '*', unpack(ARGV, 8))
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


# A signup, its two jobs and its Idempotency-Key record in one step, so a retry either
# finds the record (and the signup the first attempt stored) or stores everything anew:
# never a record without its signup, nor a signup stored twice under one key.
# KEYS: key record ('': no key), signup hash, email stream, analytics stream.
# ARGV: signup id, email, name, created at, fingerprint of the body, key window s,
# signup ttl s, analytics maxlen.
# -> {1, id} stored; {0, id} the key's earlier signup; {-1, id} the key names another body.
_SIGNUP = """
if KEYS[1] ~= '' then
  local seen = redis.call('GET', KEYS[1])
  if seen then
    local cut = string.find(seen, ' ', 1, true)
    local id = string.sub(seen, 1, cut - 1)
    if string.sub(seen, cut + 1) == ARGV[5] then return {0, id} end
    return {-1, id}
  end
end
redis.call('HSET', KEYS[2], 'status', 'queued', 'attempts', 0, 'email', ARGV[2],
  'name', ARGV[3], 'created_at', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[7])
-- The job's own idempotency key travels with it so a retried job has its effect once.
redis.call('XADD', KEYS[3], '*', 'task', 'welcome_email', 'signup_id', ARGV[1],
  'email', ARGV[2], 'name', ARGV[3], 'idempotency_key', 'welcome_email:' .. ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[8], '*', 'task', 'analytics',
  'event', 'signup', 'signup_id', ARGV[1], 'idempotency_key', 'analytics:' .. ARGV[1])
if KEYS[1] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[5], 'EX', ARGV[6])
end
return {1, ARGV[1]}
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
SIGNUP = Script("signup", _SIGNUP)
SCRIPTS = (BEGIN, SUCCEED, RETRY, DEAD, HAND_BACK, PROMOTE, SIGNUP)
