//! The runner child: `warmlane-consumer runner --model <m>`. It holds one heavy
//! pipeline in an [`OrtEngine`] and answers the parent's frames on stdout; its logs go
//! to stderr. When it exits, the operating system takes back everything ONNX Runtime
//! allocated, which is the point of running the pipeline here.

use super::protocol::{read_frame, write_frame, FrameError, ParkRequest, ParkedPart, Request, Response, RunnerFaults};
use crate::engine::{Engine, EngineFailure};
use crate::ort_engine::OrtEngine;
use std::io::{BufReader, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;
use warmlane_engine::park::ParkPlan;
use warmlane_engine::{FaultPlan, LoadOptions, Provider};
use warmlane_shared::{ErrorCode, Settings};

struct Loaded {
    settings: Arc<Settings>,
    engine: OrtEngine,
    faults: RunnerFaults,
}

/// Runs the runner until `Shutdown` or the end of stdin; the process exit code.
/// `model` is fixed by `--model`; a spare runner (`None`) takes the model of its
/// first `Prepare`. ONNX Runtime is initialised before the first frame is read, so a
/// spare started ahead of a switch has that cost behind it (no session, no device
/// memory yet).
pub fn main(fixed_model: Option<&str>) -> ExitCode {
    init_stderr_logging();
    if let Err(e) = warmlane_engine::Runtime::init() {
        tracing::error!(error = %e, "ONNX Runtime did not initialise; the first Prepare will fail");
    }
    let mut model: String = fixed_model.unwrap_or("(spare)").to_string();
    let inbox = spawn_reader();
    let mut output = BufWriter::new(std::io::stdout().lock());
    let mut state: Option<Loaded> = None;
    loop {
        let request = match inbox.recv().unwrap_or(Ok(None)) {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::info!(model, "parent closed stdin; exiting");
                return ExitCode::SUCCESS;
            }
            Err(e) => {
                tracing::error!(model, error = %warmlane_infra::Report(&e), "bad frame from the parent; exiting");
                return ExitCode::from(3);
            }
        };
        let response = match request {
            Request::Shutdown => {
                // Exit at once: the kernel takes back every page and device allocation
                // when the process ends, faster than dropping sessions and tearing down
                // the ONNX Runtime environment one by one.
                tracing::info!(model, resident = state.is_some(), "shutdown requested; exiting");
                std::process::exit(0);
            }
            Request::Prepare { model: wanted, .. } if fixed_model.is_some_and(|m| m != wanted) || state.is_some() => {
                failed(EngineFailure {
                    code: ErrorCode::InferenceFailed,
                    message: format!("runner for `{model}` cannot load `{wanted}`"),
                })
            }
            Request::Prepare { model: wanted, settings_json, base_dir, provider, faults, park } => {
                model = wanted;
                match prepare(&model, &settings_json, &base_dir, provider, faults, park) {
                    Ok((loaded, load_ms)) => {
                        let (parked, from_parked) = loaded.engine.parked();
                        let parked = parked.into_iter().map(|(role, fd, len)| ParkedPart { role, fd, len }).collect();
                        let warmup_ms = loaded.engine.last_warmup().as_millis() as u64;
                        state = Some(loaded);
                        Response::Loaded { load_ms, warmup_ms, parked, from_parked }
                    }
                    Err(f) => failed(f),
                }
            }
            Request::Generate { request, lane, out_dir } => match state.as_mut() {
                None => failed(not_prepared()),
                Some(s) => generate(s, &model, &request, &lane, Path::new(&out_dir), (&mut output, &inbox)),
            },
            Request::Cancel { task_id } => {
                // Its generation ended before the cancel came: nothing to stop, no answer.
                tracing::debug!(task_id, "cancel after its generation ended; ignored");
                continue;
            }
            Request::ReleaseComponent { role } => match state.as_mut() {
                Some(s) => {
                    let _ = crate::managed::Managed::release_component(&mut s.engine, role);
                    memory(s)
                }
                None => failed(not_prepared()),
            },
            Request::Memory => Response::Memory { report: state.as_ref().and_then(|s| s.engine.pipeline_report()) },
        };
        if let Err(e) = write_frame(&mut output, &response) {
            tracing::error!(model, error = %e, "parent stream closed; exiting");
            return ExitCode::from(3);
        }
    }
}

/// Frames from the parent, read on a thread of their own so that a `Cancel` reaches
/// a generation in progress. `Ok(None)` is the end of stdin.
type Inbox = mpsc::Receiver<Result<Option<Request>, FrameError>>;

fn spawn_reader() -> Inbox {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut input = BufReader::new(std::io::stdin().lock());
        loop {
            let frame = read_frame::<_, Request>(&mut input);
            let end = !matches!(frame, Ok(Some(_)));
            if tx.send(frame).is_err() || end {
                return;
            }
        }
    });
    rx
}

fn init_stderr_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .try_init();
}

fn failed(f: EngineFailure) -> Response {
    f.into()
}

fn not_prepared() -> EngineFailure {
    EngineFailure { code: ErrorCode::InferenceFailed, message: "the runner got a request before Prepare".into() }
}

fn prepare(
    model: &str,
    settings_json: &str,
    base_dir: &str,
    provider: Option<Provider>,
    faults: RunnerFaults,
    park: ParkRequest,
) -> Result<(Loaded, u64), EngineFailure> {
    let bad = |message: String| EngineFailure { code: ErrorCode::InferenceFailed, message };
    let settings = Settings::from_json(settings_json, Path::new("(from the worker)"), Path::new(base_dir))
        .map_err(|e| bad(e.to_string()))?;
    let plan = FaultPlan { fail_at_step: faults.fail_at_step, oom_next_runs: faults.oom_next_runs };
    let park = ParkPlan { save: park.save, from: park.from.into_iter().map(|(r, p)| (r, p.into())).collect() };
    let options = LoadOptions { provider_override: provider, park, ..LoadOptions::default() };
    let settings = Arc::new(settings);
    let mut engine = OrtEngine::with_options(settings.clone(), options)?;
    let load = engine.prepare(model)?.unwrap_or(Duration::ZERO);
    // Faults apply to generations, not to the warm-up run of the load.
    engine.set_faults(plan);
    Ok((Loaded { settings, engine, faults }, load.as_millis() as u64))
}

/// Generates one request, reporting each step on `out` and stopping after the step
/// at which a `Cancel` for it has arrived in `inbox`. Another frame arriving
/// meanwhile breaks the protocol: the runner exits and the parent restarts it.
fn generate(
    s: &mut Loaded,
    model: &str,
    body: &[u8],
    lane: &str,
    out_dir: &Path,
    (out, inbox): (&mut impl Write, &Inbox),
) -> Response {
    let req = match warmlane_shared::decode_msgpack(body, &s.settings) {
        Ok(r) => r,
        Err(e) => return failed(EngineFailure { code: e.rejection.code, message: e.rejection.message }),
    };
    if req.model != model {
        return failed(EngineFailure {
            code: ErrorCode::InferenceFailed,
            message: format!("runner for `{model}` got a request for `{}`", req.model),
        });
    }
    let faults = s.faults;
    s.faults.wait_frame_at_step = None;
    let mut progress = |step: u32, steps: u32| {
        if faults.exit_at_step == Some(step) {
            tracing::error!(step, "injected crash (RunnerFaults.exit_at_step)");
            std::process::exit(101);
        }
        if faults.hang_at_step == Some(step) {
            tracing::error!(step, "injected hang (RunnerFaults.hang_at_step)");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        let _ = write_frame(out, &Response::Progress { step, steps });
        let next = if faults.wait_frame_at_step == Some(step) {
            let _ = out.flush();
            inbox.recv().map_err(|_| mpsc::TryRecvError::Disconnected)
        } else {
            inbox.try_recv()
        };
        match next {
            Ok(Ok(Some(Request::Cancel { task_id }))) if task_id == req.task_id => {
                tracing::info!(task_id, step, "cancelled; stopping after this step");
                ControlFlow::Break(())
            }
            // Empty, or a stale cancel of an earlier generation.
            Err(mpsc::TryRecvError::Empty) | Ok(Ok(Some(Request::Cancel { .. }))) => ControlFlow::Continue(()),
            // Stdin closed or a frame other than a cancel: the parent is gone or broke the protocol.
            Err(mpsc::TryRecvError::Disconnected) | Ok(_) => {
                tracing::error!(step, "the parent closed stdin or sent a frame during a generation; exiting");
                std::process::exit(3);
            }
        }
    };
    match s.engine.generate(&req, lane, out_dir, &mut progress) {
        Ok(output) => Response::Done { output },
        Err(f) => failed(f),
    }
}

fn memory(s: &Loaded) -> Response {
    Response::Memory { report: s.engine.pipeline_report() }
}
