package storage

import "github.com/redis/go-redis/v9"

// Every script of an export lives here. Each takes the export's three keys
// (status, source, data) so that it touches one Cluster slot, and returns a
// table whose first element is a result code:
//
//	ok / complete / again   the step happened
//	missing                 no status record (never created, or expired)
//	state <state>           the export is in a state that forbids the step
//	fenced <token>          a newer claim owns the export
//	index <chunks>          the caller's idea of progress is stale
//	chunk_missing / corrupt the staged source is damaged
//
// Times are passed in from the client (milliseconds since the epoch) so
// that scripts stay deterministic, TTLs in milliseconds.

// createScript writes a fresh CREATED record, refusing to overwrite one:
// a generator that repeats an id fails loudly instead of mixing exports.
// A small source comes along whole (ARGV[11] on): it is staged and the
// record sealed in the same step, one round trip for the whole start.
// The record keeps its TTLs, so that workers configured otherwise still
// apply the ones its caller chose.
// ARGV: owner, queue, chunk_size, now, active_ttl, sealed ('1'/'0'),
// total_bytes, total_chunks, sha256, retention_ttl, chunks...
var createScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return {'exists'} end
redis.call('DEL', KEYS[2], KEYS[3])
local set = {'state', 'CREATED', 'owner', ARGV[1], 'queue', ARGV[2], 'chunk_size', ARGV[3],
  'bytes', '0', 'chunks', '0', 'fence', '0', 'attempts', '0', 'created_at', ARGV[4],
  'updated_at', ARGV[4], 'active_ttl', ARGV[5], 'retention_ttl', ARGV[10]}
if ARGV[6] == '1' then
  set[25], set[26], set[27], set[28], set[29], set[30] = 'total_bytes', ARGV[7], 'total_chunks', ARGV[8], 'sha256', ARGV[9]
else
  set[25], set[26] = 'staging', '1'
end
redis.call('HSET', KEYS[1], unpack(set))
redis.call('PEXPIRE', KEYS[1], ARGV[5])
if #ARGV >= 11 then
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 11))
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
end
return {'ok'}
`)

// sealScript ends staging: it checks that every staged chunk arrived and
// records the source's size and checksum.
// ARGV: total_bytes, total_chunks, sha256, now, active_ttl.
var sealScript = redis.NewScript(`
local st = redis.call('HMGET', KEYS[1], 'state', 'staging')
if st[1] ~= 'CREATED' or st[2] ~= '1' then return {'state', st[1] or ''} end
local n = redis.call('LLEN', KEYS[2])
if n ~= tonumber(ARGV[2]) then return {'corrupt', n} end
redis.call('HSET', KEYS[1], 'total_bytes', ARGV[1], 'total_chunks', ARGV[2],
  'sha256', ARGV[3], 'updated_at', ARGV[4])
redis.call('HDEL', KEYS[1], 'staging')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {'ok'}
`)

// moveBatch is the body that claimScript and appendScript share: it moves
// up to a batch of chunks from the head of the source to the tail of the
// data and, when the last chunk lands, completes the export in the same
// step (COMPLETE, source removed, retention TTL on what remains). Moving,
// not copying, makes a retry resume exactly at the first chunk not yet
// appended. A batch is at most 1024 chunks whatever their size, so that
// tiny chunks cannot make one script block Redis. Before moving it checks that source and data still hold what
// the counters say (LLEN is O(1)), so a damaged source fails at once.
// It expects the locals fence, done, copied (bytes so far), total,
// total_bytes, chunk_size, batch_bytes, now, active_ttl, retention_ttl and
// set (fields the caller changes, written with progress in one HSET), and
// returns {code, chunks, bytes, fence, bytes moved by this step}.
const moveBatch = `
local function refresh() for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], active_ttl) end end
local function finish(code, moved)
  local n = #set
  set[n+1], set[n+2], set[n+3], set[n+4], set[n+5], set[n+6] = 'chunks', done, 'bytes', copied, 'updated_at', now
  redis.call('HSET', KEYS[1], unpack(set))
  return {code, done, copied, fence, moved}
end
if redis.call('LLEN', KEYS[2]) ~= total - done or redis.call('LLEN', KEYS[3]) ~= done then
  refresh()
  return finish('corrupt', 0)
end
local want = math.min(math.max(1, math.floor(batch_bytes / math.max(chunk_size, 1))), 1024, total - done)
local moved, bytes = 0, 0
for i = 1, want do
  local v = redis.call('LMOVE', KEYS[2], KEYS[3], 'LEFT', 'RIGHT')
  if not v then break end
  moved = moved + 1
  bytes = bytes + #v
end
done, copied = done + moved, copied + bytes
if moved < want then
  refresh()
  return finish('chunk_missing', bytes)
end
if done == total then
  if copied ~= total_bytes or redis.call('LLEN', KEYS[2]) ~= 0 then
    refresh()
    return finish('corrupt', bytes)
  end
  set[#set+1], set[#set+2], set[#set+3], set[#set+4] = 'state', 'COMPLETE', 'finished_at', now
  redis.call('DEL', KEYS[2])
  redis.call('PEXPIRE', KEYS[1], retention_ttl)
  redis.call('PEXPIRE', KEYS[3], retention_ttl)
  return finish('complete', bytes)
end
refresh()
return finish('ok', bytes)
`

// claimScript moves a queued or resumed export to PENDING, hands out a
// fresh fence token that every later write of this attempt must carry,
// and moves the first batch: one round trip for a small export's whole run.
// ARGV: now, active_ttl, retention_ttl, batch_bytes.
var claimScript = redis.NewScript(`
local st = redis.call('HMGET', KEYS[1], 'state', 'staging', 'chunks', 'total_chunks', 'total_bytes',
  'chunk_size', 'active_ttl', 'retention_ttl', 'bytes', 'fence', 'attempts', 'started_at')
if not st[1] then return {'missing'} end
if st[1] ~= 'CREATED' and st[1] ~= 'PENDING' then return {'state', st[1]} end
if st[2] == '1' then return {'state', 'staging'} end
local done, total, total_bytes, chunk_size = tonumber(st[3]), tonumber(st[4]), tonumber(st[5]), tonumber(st[6])
local now, active_ttl, retention_ttl, batch_bytes = ARGV[1], st[7] or ARGV[2], st[8] or ARGV[3], tonumber(ARGV[4])
local copied, fence = tonumber(st[9]), tonumber(st[10]) + 1
local set = {'state', 'PENDING', 'fence', fence, 'attempts', tonumber(st[11]) + 1}
if not st[12] then set[7], set[8] = 'started_at', now end
` + moveBatch)

// appendScript moves the next batch for the attempt holding fence, after
// checking state, fence token and expected chunk index.
// ARGV: fence, expected_index, batch_bytes, now, active_ttl, retention_ttl.
var appendScript = redis.NewScript(`
local st = redis.call('HMGET', KEYS[1], 'state', 'fence', 'chunks', 'total_chunks', 'total_bytes',
  'chunk_size', 'active_ttl', 'retention_ttl', 'bytes')
if not st[1] then return {'missing'} end
if st[1] ~= 'PENDING' then return {'state', st[1]} end
if st[2] ~= ARGV[1] then return {'fenced', tonumber(st[2])} end
if st[3] ~= ARGV[2] then return {'index', tonumber(st[3])} end
local fence = tonumber(ARGV[1])
local done, total, total_bytes, chunk_size = tonumber(st[3]), tonumber(st[4]), tonumber(st[5]), tonumber(st[6])
local batch_bytes, now, active_ttl, retention_ttl = tonumber(ARGV[3]), ARGV[4], st[7] or ARGV[5], st[8] or ARGV[6]
local copied, set = tonumber(st[9]), {}
` + moveBatch)

// failScript ends a queued or running export FAILED with a reason. Data and
// source go first: under noeviction a full Redis refuses the HSET of a
// script that has not yet freed anything.
// ARGV: fence ('0' for any claim), reason, now, retention_ttl.
var failScript = redis.NewScript(`
local st = redis.call('HMGET', KEYS[1], 'state', 'fence', 'retention_ttl')
if not st[1] then return {'missing'} end
if st[1] ~= 'CREATED' and st[1] ~= 'PENDING' then return {'state', st[1]} end
if ARGV[1] ~= '0' and st[2] ~= ARGV[1] then return {'fenced', tonumber(st[2])} end
redis.call('DEL', KEYS[3], KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'FAILED', 'error', ARGV[2], 'updated_at', ARGV[3], 'finished_at', ARGV[3])
redis.call('PEXPIRE', KEYS[1], st[3] or ARGV[4])
return {'ok'}
`)

// cancelScript is the cancel guarantee: one atomic step that ends a queued
// or running export, deletes what it copied and staged, and so fences out
// every later append (appendScript requires PENDING). It returns the
// previous state and the record as it now is.
// ARGV: now, retention_ttl.
var cancelScript = redis.NewScript(`
local rec = redis.call('HMGET', KEYS[1], 'state', 'retention_ttl')
local st = rec[1]
if not st then return {'missing'} end
if st == 'CANCELLED' then return {'again', st, redis.call('HGETALL', KEYS[1])} end
if st ~= 'CREATED' and st ~= 'PENDING' then return {'state', st} end
redis.call('DEL', KEYS[3], KEYS[2])
redis.call('HSET', KEYS[1], 'state', 'CANCELLED', 'updated_at', ARGV[1], 'finished_at', ARGV[1])
redis.call('PEXPIRE', KEYS[1], rec[2] or ARGV[2])
return {'ok', st, redis.call('HGETALL', KEYS[1])}
`)
