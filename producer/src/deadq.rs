//! Inspecting and replaying `<prefix>.dead` (placeholder; see the operations issue).

use crate::producer::Producer;
use clap::Subcommand;

/// `warmlane-producer dead ...`
#[derive(Debug, Clone, Subcommand)]
pub enum DeadCommand {
    /// List messages in the dead queue without removing them.
    List,
}

/// Runs a dead-queue command.
pub async fn run(_producer: &Producer, _cmd: DeadCommand) -> Result<(), crate::ProducerError> {
    Err(crate::ProducerError::Broker("dead-queue commands are not built yet".into()))
}
