//! The store's Lua scripts: each state change that must not race with another
//! writer (a redelivery, a second worker, the reaper) runs as one script.

use redis::Script;
use std::sync::LazyLock;

/// The history index orders tasks by Redis's own clock in microseconds, so that
/// tasks admitted within one millisecond (or by producers whose clocks differ) keep
/// their order. Prepended to the scripts that add to it.
macro_rules! with_server_ms {
    ($body:literal) => {
        concat!(
            "local function server_ms() local t = redis.call('TIME') return tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000 end\n",
            $body
        )
    };
}

const ADMIT: &str = with_server_ms!(
    r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'status', 'pending', 'model', ARGV[2], 'submitted_at_ms', ARGV[3], 'updated_at_ms', ARGV[3], 'deadline_ms', ARGV[4], 'progress', '0/' .. ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[3], server_ms(), ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -1 - tonumber(ARGV[7]))
return 1
"#
);

/// Admission and lane health in one round trip: reserve the id, note the lane as the
/// first choice, and read the lane's fresh ready workers, disabled cause and fallback flag.
const ADMIT_ROUTE: &str = with_server_ms!(
    r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, 0, '', 0} end
redis.call('HSET', KEYS[1], 'status', 'pending', 'model', ARGV[2], 'lane', ARGV[2], 'submitted_at_ms', ARGV[3], 'updated_at_ms', ARGV[3], 'deadline_ms', ARGV[4], 'progress', '0/' .. ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('ZADD', KEYS[6], server_ms(), ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -1 - tonumber(ARGV[8]))
local warm = redis.call('ZCOUNT', KEYS[3], ARGV[7], '+inf')
local cause = redis.call('HGET', KEYS[4], 'cause') or ''
local fallback = redis.call('EXISTS', KEYS[5])
return {1, warm, cause, fallback}
"#
);

/// A move to the degraded queue (ARGV[6] not empty: its limit) first takes a place
/// in the admission guard KEYS[3]: places whose deadline passed (ARGV[5] is now) are
/// freed, and with ARGV[6] places taken the move is refused (-1) and nothing changes.
const ROUTED: &str = r#"
local s = redis.call('HGET', KEYS[1], 'status')
if s ~= 'pending' then return 0 end
if ARGV[6] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[5])
  if not redis.call('ZSCORE', KEYS[3], ARGV[1]) and redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[6]) then return -1 end
  redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
end
redis.call('HSET', KEYS[1], 'lane', ARGV[2], 'deadline_ms', ARGV[3], 'updated_at_ms', ARGV[5])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'fallback_cause', ARGV[4]) end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
"#;

/// ARGV[8] `1`: a redelivery whose task has no count yet was first delivered to a
/// lane worker that started it without this script (see `FINISH`), so that
/// delivery counts. ARGV[9]: when the engine started (a late claim gives the time
/// the run began, not its own).
const START: &str = r#"
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'done' or s == 'failed' then return -1 end
if ARGV[8] == '1' and redis.call('HEXISTS', KEYS[1], 'attempts') == 0 then redis.call('HSET', KEYS[1], 'attempts', 1) end
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
-- A late claim keeps the steps its run already reported; a redelivery starts over.
local progress = '0/' .. ARGV[7]
if s == 'pending' then progress = redis.call('HGET', KEYS[1], 'progress') or progress end
redis.call('HSET', KEYS[1], 'status', 'processing', 'lane', ARGV[2], 'worker', ARGV[3], 'started_at_ms', ARGV[9], 'updated_at_ms', ARGV[4], 'model', ARGV[5], 'progress', progress)
if redis.call('HEXISTS', KEYS[1], 'submitted_at_ms') == 0 then redis.call('HSET', KEYS[1], 'submitted_at_ms', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return attempts
"#;

/// ARGV[8], when not empty: the worker that ran a first delivery without `START`;
/// the task then records attempt 1, that worker and ARGV[9] as its start, unless a
/// late `START` already did. ARGV[10]: the history's cap. ARGV[11] `1`: a cancel of a
/// pending task, recorded in the cancelled set KEYS[5] (entries before ARGV[12]
/// dropped) and announced on KEYS[6]. The hash's field/value pairs follow from ARGV[13].
/// The task's place in the degraded admission guard KEYS[7] is freed.
const FINISH: &str = with_server_ms!(
    r#"
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'done' or s == 'failed' then return 0 end
if ARGV[7] == 'pending' and s ~= 'pending' then return 0 end
if ARGV[7] == 'absent' and s then return 0 end
if ARGV[7] == 'unstarted' and s and s ~= 'pending' then return 0 end
-- A run that ended after its cancel was asked for is answered `cancelled`, not `done`.
if ARGV[2] == 'done' and redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return -2 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'updated_at_ms', ARGV[4], 'finished_at_ms', ARGV[4], unpack(ARGV, 13))
redis.call('HDEL', KEYS[1], 'stage')
-- A task published straight to a queue (no admission) enters the history when it ends.
if redis.call('ZADD', KEYS[4], 'NX', server_ms(), ARGV[1]) == 1 then
  redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -1 - tonumber(ARGV[10]))
end
if ARGV[2] == 'done' then
  local steps = string.match(redis.call('HGET', KEYS[1], 'progress') or '', '/(%d+)$')
  if steps then redis.call('HSET', KEYS[1], 'progress', steps .. '/' .. steps) end
end
if ARGV[8] ~= '' then
  redis.call('HSETNX', KEYS[1], 'attempts', 1)
  redis.call('HSETNX', KEYS[1], 'worker', ARGV[8])
  redis.call('HSETNX', KEYS[1], 'started_at_ms', ARGV[9])
end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('LPUSH', KEYS[2], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[7], ARGV[1])
-- A cancel of a pending task: recorded (older cancels dropped) and announced with its reply.
if ARGV[11] == '1' then
  redis.call('ZADD', KEYS[5], ARGV[4], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[12])
  redis.call('PUBLISH', KEYS[6], ARGV[1])
end
return 1
"#
);

const FORGET_UNPUBLISHED: &str = r#"
if redis.call('HGET', KEYS[1], 'status') ~= 'pending' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"#;

/// A run reports steps before its late claim (the task still reads `pending`); they
/// are kept, so progress never jumps from 0 to done. Returns -1 when the run should
/// stop: a cancel was asked for, or the task already has its terminal reply (a cancel
/// of a pending task the lane worker had started unclaimed); 0 when there is no hash
/// (a task published straight to a queue and not claimed yet).
const PROGRESS: &str = r#"
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'done' or s == 'failed' or redis.call('HGET', KEYS[1], 'cancel_requested') == '1' then return -1 end
if s ~= 'processing' and s ~= 'pending' then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[1], 'updated_at_ms', ARGV[2], 'stage', ARGV[3])
return 1
"#;

/// A cancel of a task a worker has started (a pending one is answered through
/// `FINISH` with `pending`): flags it for the worker's next step, records it in the
/// cancelled set (dropping entries older than ARGV[3]) and announces it on the cancel
/// channel. Returns the status found (`''` for no such task).
const REQUEST_CANCEL: &str = r#"
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return '' end
if s == 'processing' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'updated_at_ms', ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[3])
  redis.call('PUBLISH', KEYS[2], ARGV[1])
end
return s
"#;

pub(super) static ADMIT_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ADMIT));
pub(super) static ADMIT_ROUTE_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ADMIT_ROUTE));
pub(super) static ROUTED_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(ROUTED));
pub(super) static START_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(START));
pub(super) static FINISH_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FINISH));
pub(super) static PROGRESS_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(PROGRESS));
pub(super) static REQUEST_CANCEL_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(REQUEST_CANCEL));
pub(super) static FORGET_UNPUBLISHED_SCRIPT: LazyLock<Script> = LazyLock::new(|| Script::new(FORGET_UNPUBLISHED));
