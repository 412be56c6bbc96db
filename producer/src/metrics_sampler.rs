//! Periodic gauges that no request path emits: per-model lane readiness (routing's
//! rule: heartbeats in Redis and the cached consumer counts) and warm workers, and
//! queue depths (passive declares).
//!
//! Gauges sent only on events go stale on a quiet fleet; sampling them every few
//! seconds keeps the dashboard's "is the lane ready?" panel true even when no
//! request arrives. Run it beside the reaper (`serve` and `reaper` both do); several
//! samplers may run, since every sample overwrites the same gauges.

use crate::producer::Producer;
use std::sync::Arc;
use std::time::Duration;
use warmlane_infra::InfraError;
use warmlane_shared::metrics as m;
use warmlane_shared::{route, Route};

/// How often `serve` and `reaper` sample by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(5);

/// One model's lane at sampling time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneSample {
    /// The model.
    pub model: String,
    /// Whether routing would send its requests to its lane now.
    pub ready: bool,
    /// Fresh ready heartbeats of its lane.
    pub warm_workers: u32,
    /// Ready messages in its lane queue (None for a model without a lane, or when unknown).
    pub depth: Option<u32>,
}

/// Everything one pass measures.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Sample {
    /// Every model in the settings, in name order.
    pub lanes: Vec<LaneSample>,
    /// Ready messages in the degraded queue, when the broker answered.
    pub degraded_depth: Option<u32>,
}

/// Measures once: Redis for lane health, the broker for depths. A broker failure
/// leaves the depths unknown rather than failing the sample.
pub async fn sample_once(producer: &Producer) -> Result<Sample, InfraError> {
    let settings = producer.settings();
    let topo = producer.topology();
    let depths = match warmlane_infra::amqp::queue_depths(producer.publisher(), topo, settings).await {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %warmlane_infra::Report(&e), "queue depths unavailable for this sample");
            Default::default()
        }
    };
    let mut sample = Sample { degraded_depth: depths.get(&topo.degraded_queue()).copied(), ..Default::default() };
    for (model, ms) in &settings.models {
        let mut health =
            producer.store().lane_health(model, ms.dedicated_lane, settings.lanes.heartbeat_ttl_ms).await?;
        health.consumers = producer.lane_consumers().get(model);
        sample.lanes.push(LaneSample {
            model: model.clone(),
            ready: route(&health) == Route::Lane,
            warm_workers: health.warm_workers,
            depth: ms.dedicated_lane.then(|| depths.get(&topo.lane_queue(model)).copied()).flatten(),
        });
    }
    Ok(sample)
}

/// Sends a sample's gauges.
pub fn emit(sample: &Sample) {
    for lane in &sample.lanes {
        metrics::gauge!(m::LANE_READY, m::TAG_MODEL => lane.model.clone()).set(if lane.ready { 1.0 } else { 0.0 });
        metrics::gauge!(m::LANE_WARM_WORKERS, m::TAG_MODEL => lane.model.clone()).set(f64::from(lane.warm_workers));
        if let Some(depth) = lane.depth {
            metrics::gauge!(m::LANE_DEPTH, m::TAG_MODEL => lane.model.clone()).set(f64::from(depth));
        }
    }
    if let Some(depth) = sample.degraded_depth {
        metrics::gauge!(m::DEGRADED_DEPTH).set(f64::from(depth));
    }
}

/// Samples and emits every `every`, forever (cancel it by dropping the future or
/// aborting its task). Failures are logged once per streak and never end the loop.
pub async fn run(producer: Arc<Producer>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        match sample_once(&producer).await {
            Ok(sample) => {
                if failing {
                    tracing::info!("metrics sampling recovered");
                }
                failing = false;
                emit(&sample);
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %warmlane_infra::Report(&e), "metrics sampling failed; retrying quietly");
            }
            Err(_) => {}
        }
    }
}
