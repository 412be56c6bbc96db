//! The HTTP shim (placeholder; see the HTTP shim issue).

use crate::producer::Producer;
use clap::Args;
use std::future::Future;
use std::sync::Arc;

/// Flags of `warmlane-producer serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "WARMLANE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub listen: String,
}

/// Serves the HTTP shim (and runs the reaper beside it) until `shutdown`.
pub async fn serve(_producer: Arc<Producer>, _args: ServeArgs, _amqp_url: String, _shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), crate::ProducerError> {
    Err(crate::ProducerError::Broker("the HTTP shim is not built yet".into()))
}
