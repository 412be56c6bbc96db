//! Metric names and tag keys, written once. Values of the `code` tag are
//! [`crate::ErrorCode::as_str`]; values of `cause` are [`crate::FallbackCause::as_str`].

/// Tag: model name.
pub const TAG_MODEL: &str = "model";
/// Tag: lane (`degraded` or a model).
pub const TAG_LANE: &str = "lane";
/// Tag: routing path (`lane`, `degraded`, `rejected`).
pub const TAG_PATH: &str = "path";
/// Tag: fallback cause.
pub const TAG_CAUSE: &str = "cause";
/// Tag: outcome (`done`, `failed`).
pub const TAG_OUTCOME: &str = "outcome";
/// Tag: error code.
pub const TAG_CODE: &str = "code";
/// Tag: reason of a code.
pub const TAG_REASON: &str = "reason";

/// Gauge: 1 when routing takes the lane: a warm worker, no lane queue seen without
/// consumers, not disabled.
pub const LANE_READY: &str = "lane.ready";
/// Gauge: warm workers of the lane.
pub const LANE_WARM_WORKERS: &str = "lane.warm_workers";
/// Counter: model loads (cold starts) by lane and model.
pub const COLD_STARTS: &str = "lane.cold_starts";
/// Histogram: load plus warm-up time in ms.
pub const WARMUP_MS: &str = "lane.warmup_ms";
/// Counter: requests by routing path.
pub const REQUESTS_ROUTED: &str = "requests.routed";
/// Counter: fallback activations by cause.
pub const FALLBACK_ACTIVATIONS: &str = "fallback.activations";
/// Histogram: how long a fallback lasted, ms.
pub const FALLBACK_DURATION_MS: &str = "fallback.duration_ms";
/// Gauge: ready messages in a dedicated lane's queue (sampled), by model.
pub const LANE_DEPTH: &str = "lane.depth";
/// Gauge: ready messages in the degraded queue (sampled).
pub const DEGRADED_DEPTH: &str = "degraded.depth";
/// Histogram: time from admission to the start of inference, ms.
pub const QUEUE_WAIT_MS: &str = "queue.wait_ms";
/// Counter: tasks answered `wait_timeout`.
pub const WAIT_TIMEOUT_DROPS: &str = "degraded.wait_timeouts";
/// Counter: `queue_overloaded` replies by reason.
pub const QUEUE_OVERLOADED: &str = "queue_overloaded";
/// Counter: cancelled tasks by stage (`pending`: answered at once and never run;
/// `running`: stopped at a denoising step).
pub const TASKS_CANCELLED: &str = "tasks.cancelled";
/// Tag: where a cancel found its task (`pending`, `running`).
pub const TAG_STAGE: &str = "stage";
/// Counter: finished tasks by outcome and code.
pub const TASKS_FINISHED: &str = "tasks.finished";
/// Histogram: inference time, ms.
pub const INFERENCE_MS: &str = "inference.duration_ms";
/// Histogram: degraded worker model switch time, ms.
pub const MODEL_SWITCH_MS: &str = "model.switch_ms";
/// Gauge: device memory after a generation, bytes.
pub const DEVICE_MEMORY_BYTES: &str = "memory.device_bytes";
/// Gauge: process memory after a generation, bytes.
pub const PROCESS_MEMORY_BYTES: &str = "memory.process_bytes";
/// Counter: OOM retries.
pub const OOM_RETRIES: &str = "oom.retries";
/// Counter: results store operations that failed, by `op` (`put`: a task failed
/// `inference_failed`/`storage`; `delete`, `list`: the retention sweep).
pub const RESULTS_STORE_FAILURES: &str = "results.store_failures";
/// Counter: results deleted by retention (`results_ttl_s`).
pub const RESULTS_EXPIRED: &str = "results.expired";
/// Tag: a results store operation (`put`, `get`, `delete`, `list`).
pub const TAG_OP: &str = "op";
/// Counter: validation rejections by code and reason.
pub const VALIDATION_REJECTIONS: &str = "validation.rejections";
/// Counter: messages moved to the dead queue.
pub const DEAD_LETTERED: &str = "dead.messages";
