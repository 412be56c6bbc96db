//! `submit --wait`: waiting for the terminal reply, with a live progress bar on
//! stderr when it is a terminal (step/steps, status, lane, elapsed time), fed by the
//! task hash. On a pipe nothing is drawn and nothing is polled.

use crate::producer::Producer;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;
use warmlane_infra::InfraError;
use warmlane_shared::reply::field;
use warmlane_shared::Reply;

/// How often the bar reads the task hash.
const POLL: Duration = Duration::from_millis(200);

/// `(step, steps)` of a task hash's `progress` (`<step>/<steps>`).
pub fn progress_of(hash: &HashMap<String, String>) -> Option<(u64, u64)> {
    let (step, steps) = hash.get(field::PROGRESS)?.split_once('/')?;
    let (step, steps) = (step.parse().ok()?, steps.parse().ok()?);
    (step <= steps && steps > 0).then_some((step, steps))
}

/// Waits up to `timeout` for `task_id`'s terminal reply (consumed), drawing progress
/// when stderr is a terminal.
pub async fn wait_reply(
    producer: &Producer,
    task_id: &str,
    lane: &str,
    timeout: Duration,
) -> Result<Option<Reply>, InfraError> {
    let reply = producer.store().wait_reply(task_id, timeout);
    if !std::io::stderr().is_terminal() {
        return reply.await;
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} steps, {elapsed}")
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_message(format!("{task_id} pending on {lane}"));
    bar.enable_steady_tick(Duration::from_millis(120));
    tokio::pin!(reply);
    let mut tick = tokio::time::interval(POLL);
    loop {
        tokio::select! {
            result = &mut reply => {
                bar.finish_and_clear();
                return result;
            }
            _ = tick.tick() => {
                let Ok(hash) = producer.store().task(task_id).await else { continue };
                if let Some((step, steps)) = progress_of(&hash) {
                    bar.set_length(steps);
                    bar.set_position(step);
                }
                let status = hash.get(field::STATUS).map_or("pending", String::as_str);
                let on = hash.get(field::LANE).map_or(lane, String::as_str);
                match hash.get(field::STAGE) {
                    Some(stage) => bar.set_message(format!("{task_id} {status} ({stage}) on {on}")),
                    None => bar.set_message(format!("{task_id} {status} on {on}")),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_step_of_steps() {
        let hash = |p: &str| HashMap::from([(field::PROGRESS.to_string(), p.to_string())]);
        let cases = [
            ("3/8", Some((3, 8))),
            ("8/8", Some((8, 8))),
            ("0/4", Some((0, 4))),
            ("9/8", None),
            ("x/8", None),
            ("3", None),
            ("0/0", None),
        ];
        for (text, want) in cases {
            assert_eq!(progress_of(&hash(text)), want, "{text}");
        }
        assert_eq!(progress_of(&HashMap::new()), None);
    }
}
