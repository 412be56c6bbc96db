//! What a worker does between tasks: warm-up, the heartbeat, idle eviction of the
//! lane's model (FR-019), re-warming an evicted lane on demand, and the memory
//! manager's upkeep. The eviction and re-warm rules are pure functions with table
//! tests; the functions around them only read the state and perform the decision.

use crate::ctx::{lock, Ctx};
use crate::infer::note_load;
use std::sync::Arc;
use std::time::{Duration, Instant};
use warmlane_infra::store::ActiveFallback;
use warmlane_infra::{InfraError, Report};
use warmlane_shared::{now_ms, FallbackCause, Heartbeat, WorkerState};

/// Why a warm-up failed.
#[derive(Debug, thiserror::Error)]
pub enum WarmUpError {
    /// The engine could not load the model.
    #[error("warm-up of `{model}` failed")]
    Engine {
        /// The model.
        model: String,
        /// The engine's failure.
        #[source]
        source: crate::engine::EngineFailure,
    },
    /// The blocking task running the load panicked or was cancelled.
    #[error("warm-up of `{model}` did not finish")]
    Aborted {
        /// The model.
        model: String,
        /// The task's error.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The load could not be counted in Redis.
    #[error("counting the load of `{model}`")]
    Count {
        /// The model.
        model: String,
        /// Redis's error.
        #[source]
        source: InfraError,
    },
}

/// Pure: whether idle eviction unloads the lane's model now. Only a loaded, idle
/// worker past the limit is evicted; `None` keeps the model for good.
pub fn should_evict(loaded: bool, state: WorkerState, idle_for: Duration, limit: Option<Duration>) -> bool {
    limit.is_some_and(|limit| loaded && state != WorkerState::Busy && idle_for >= limit)
}

/// Pure: whether an evicted lane worker loads its model again. An evicted lane is not
/// ready, so the producer sends its requests degraded for `capacity`; one sent so
/// after the eviction is the demand. A lane an operator disabled (`manual`, `quota`)
/// is not re-warmed.
pub fn should_rewarm(evicted_at_ms: Option<u64>, fallback: Option<&ActiveFallback>) -> bool {
    let (Some(evicted_at), Some(fallback)) = (evicted_at_ms, fallback) else { return false };
    fallback.cause == FallbackCause::Capacity && fallback.last_ms.is_some_and(|last| last >= evicted_at)
}

/// Loads the lane's model and runs the engine's warm-up before the worker reports `warm`.
pub async fn warm_up(ctx: &Arc<Ctx>) -> Result<(), WarmUpError> {
    let engine = ctx.engine.clone();
    let model = ctx.lane.clone();
    let started = Instant::now();
    let prepared = tokio::task::spawn_blocking(move || lock(&engine).prepare(&model)).await;
    let model = ctx.lane.clone();
    let load = match prepared {
        Ok(Ok(load)) => load.unwrap_or(started.elapsed()),
        Ok(Err(source)) => return Err(WarmUpError::Engine { model, source }),
        Err(source) => return Err(WarmUpError::Aborted { model, source }),
    };
    let ms = note_load(&ctx.status, &ctx.lane, &ctx.lane, load);
    ctx.store.count_load(&ctx.lane).await.map_err(|source| WarmUpError::Count { model, source })?;
    ctx.set_state(WorkerState::Warm);
    write_heartbeat(ctx).await;
    tracing::info!(lane = %ctx.lane, warmup_ms = ms, "model warm; lane ready");
    Ok(())
}

/// Writes the heartbeat every `heartbeat_interval_ms`, for the worker's life.
pub async fn heartbeat_loop(ctx: Arc<Ctx>) {
    let every = Duration::from_millis(ctx.settings.lanes.heartbeat_interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        write_heartbeat(&ctx).await;
    }
}

/// Writes one heartbeat with the engine's memory snapshot. Reading memory must not
/// wait behind a running generation: while a task holds the engine, the last
/// snapshot is sent again, dated by its `as_of_ms`.
pub async fn write_heartbeat(ctx: &Ctx) {
    let fresh = ctx.engine.try_lock().ok().map(|engine| engine.memory());
    let status = {
        let mut s = ctx.lock_status();
        if let Some(mut memory) = fresh {
            if let Some(m) = memory.as_mut() {
                m.as_of_ms = now_ms();
            }
            s.memory = memory;
        }
        s.clone()
    };
    let hb = Heartbeat {
        worker_id: ctx.worker_id.clone(),
        lane: ctx.lane.clone(),
        model: status.model,
        state: status.state,
        pid: std::process::id(),
        started_at_ms: status.started_at_ms,
        at_ms: now_ms(),
        loads: status.loads,
        tasks: status.tasks,
        memory: status.memory,
    };
    match ctx.store.heartbeat(&hb, ctx.settings.lanes.heartbeat_ttl_ms).await {
        // `/health` stays green for as long as routing counts this heartbeat.
        Ok(()) => warmlane_infra::liveness::beat(Duration::from_millis(ctx.settings.lanes.heartbeat_ttl_ms)),
        Err(e) => tracing::warn!(error = %Report(&e), "heartbeat failed"),
    }
}

/// Lets the engine's memory manager release components idle past their placement
/// policy and evict below the headroom (only while no task holds the engine).
pub async fn maintain_engine(ctx: &Ctx) {
    let engine = ctx.engine.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Ok(mut engine) = engine.try_lock() {
            engine.maintain();
        }
    })
    .await;
}

/// Unloads the lane's model when it has idled past `limit` (FR-019).
pub fn evict_if_idle(ctx: &Ctx, limit: Option<Duration>) {
    let mut status = ctx.lock_status();
    if !should_evict(status.model.is_some(), status.state, status.last_active.elapsed(), limit) {
        return;
    }
    // A task that holds the engine keeps it; the next check tries again.
    if let Ok(mut engine) = ctx.engine.try_lock() {
        engine.release();
        tracing::info!(lane = %ctx.lane, idle_s = limit.unwrap_or_default().as_secs(), "idle eviction: model unloaded (FR-019)");
        status.model = None;
        status.state = if ctx.is_degraded() { WorkerState::Idle } else { WorkerState::Evicted };
        status.evicted_at_ms = (!ctx.is_degraded()).then(now_ms);
    }
}

/// Loads an evicted lane's model again when requests for it went degraded meanwhile
/// ([`should_rewarm`]); a failed load waits for the next such request.
pub async fn rewarm_on_demand(ctx: &Arc<Ctx>) {
    let evicted_at = {
        let mut s = ctx.lock_status();
        if s.state != WorkerState::Evicted {
            // A task delivered to the lane itself loaded the model meanwhile.
            s.evicted_at_ms = None;
        }
        s.evicted_at_ms
    };
    if evicted_at.is_none() {
        return;
    }
    let fallback = match ctx.store.fallback(&ctx.lane).await {
        Ok(f) => f,
        Err(e) => {
            tracing::debug!(error = %Report(&e), "could not read the lane's fallback record");
            return;
        }
    };
    if !should_rewarm(evicted_at, fallback.as_ref()) {
        return;
    }
    tracing::info!(lane = %ctx.lane, "requests for an evicted lane went degraded: loading the model again");
    ctx.set_state(WorkerState::Loading);
    match warm_up(ctx).await {
        Ok(()) => ctx.lock_status().evicted_at_ms = None,
        Err(e) => {
            tracing::error!(lane = %ctx.lane, error = %Report(&e), "re-warming the lane failed; it stays evicted");
            let mut s = ctx.lock_status();
            s.state = WorkerState::Evicted;
            s.evicted_at_ms = Some(now_ms());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use WorkerState::*;

    #[test]
    fn eviction_table() {
        let min = Duration::from_secs(60);
        let cases = [
            (true, Warm, min, Some(min), true),
            (true, Warm, min * 2, Some(min), true),
            (true, Warm, min - Duration::from_millis(1), Some(min), false),
            (true, Busy, min * 10, Some(min), false),
            (false, Evicted, min * 10, Some(min), false),
            (true, Idle, min, Some(min), true),
            (true, Warm, min * 10, None, false),
        ];
        for (loaded, state, idle, limit, want) in cases {
            assert_eq!(should_evict(loaded, state, idle, limit), want, "{loaded} {state:?} {idle:?} {limit:?}");
        }
    }

    #[test]
    fn rewarm_table() {
        let fb = |cause, last_ms| ActiveFallback { cause, since_ms: 0, last_ms };
        let cases = [
            (Some(100), Some(fb(FallbackCause::Capacity, Some(150))), true),
            (Some(100), Some(fb(FallbackCause::Capacity, Some(100))), true),
            (Some(100), Some(fb(FallbackCause::Capacity, Some(99))), false),
            (Some(100), Some(fb(FallbackCause::Capacity, None)), false),
            (Some(100), Some(fb(FallbackCause::Manual, Some(150))), false),
            (Some(100), Some(fb(FallbackCause::Quota, Some(150))), false),
            (Some(100), None, false),
            (None, Some(fb(FallbackCause::Capacity, Some(150))), false),
        ];
        for (evicted_at, fallback, want) in cases {
            assert_eq!(should_rewarm(evicted_at, fallback.as_ref()), want, "{evicted_at:?} {fallback:?}");
        }
    }
}
