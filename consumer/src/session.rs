//! A consuming session (connection, channel, consumer), how it ends, and the one
//! step both consume loops take per delivery: [`crate::worker`]'s one at a time and
//! [`crate::window`]'s held window.

use crate::ctx::Ctx;
use crate::handle;
use lapin::message::Delivery;
use warmlane_infra::backoff::Backoff;
use warmlane_infra::Report;

/// A consuming session: the connection, its channel and the consumer.
pub(crate) type Session = (lapin::Connection, lapin::Channel, lapin::Consumer);

/// How a consuming session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Served {
    /// Shutdown was asked for: the consumer is cancelled.
    Stopped,
    /// The delivery stream failed or ended: reconnect.
    Lost,
}

/// Handles one delivery; when its outcome could not be recorded, requeues it and
/// backs off.
pub(crate) async fn handle_or_requeue(ctx: &Ctx, channel: &lapin::Channel, delivery: &Delivery, backoff: &mut Backoff) {
    if let Err(e) = handle::handle(ctx, channel, delivery).await {
        tracing::warn!(error = %Report(&e), "could not record a task's outcome; requeueing it");
        handle::requeue(delivery).await;
        tokio::time::sleep(backoff.next_delay()).await;
    } else {
        backoff.reset();
    }
}
