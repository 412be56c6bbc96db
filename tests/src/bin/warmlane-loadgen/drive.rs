//! The fleet run: requests through the producer library or the HTTP shim, timed from submit to reply.

use crate::samples::{ms, Samples, Waiters};
use crate::timed::InferenceLog;
use crate::Args;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use warmlane_tests::fleet::Fleet;

#[derive(Default)]
pub(crate) struct Run {
    pub(crate) accept: Samples,
    pub(crate) e2e: Samples,
    pub(crate) inference: Samples,
    pub(crate) overhead: Samples,
    pub(crate) throughput: f64,
    pub(crate) outcomes: BTreeMap<String, usize>,
}

impl Run {
    pub(crate) fn merge(&mut self, other: Run) {
        self.accept.extend(other.accept);
        self.e2e.extend(other.e2e);
        self.inference.extend(other.inference);
        self.overhead.extend(other.overhead);
        for (k, v) in other.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
    }
}

pub(crate) async fn start_http(fleet: &Fleet) -> String {
    let port = warmlane_tests::servers::free_port();
    let args = warmlane_producer::http::ServeArgs {
        listen: format!("127.0.0.1:{port}"),
        sse_max_s: 60,
        ..warmlane_producer::http::ServeArgs::for_tests(fleet.results_dir.clone())
    };
    let producer = fleet.producer.clone();
    let amqp = fleet.amqp_url.clone();
    tokio::spawn(async move {
        if let Err(e) = warmlane_producer::http::serve(producer, args, amqp.into(), std::future::pending()).await {
            panic!("HTTP shim: {e}");
        }
    });
    let addr = format!("127.0.0.1:{port}");
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(&addr).await.is_ok() {
            return addr;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the HTTP shim did not start on {addr}");
}

/// POST /generate on a keep-alive connection; returns the status code.
async fn post(stream: &mut BufReader<tokio::net::TcpStream>, body: &str) -> u16 {
    let req = format!("POST /generate HTTP/1.1\r\nhost: loadgen\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
    stream.get_mut().write_all(req.as_bytes()).await.expect("write");
    let mut line = String::new();
    stream.read_line(&mut line).await.expect("status line");
    let status: u16 = line.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let mut len = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line).await.expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some(v) = l.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).await.expect("body");
    status
}

pub(crate) async fn drive(
    fleet: &Arc<Fleet>,
    waiters: &Waiters,
    args: &Args,
    round: u32,
    http: Option<String>,
    inference: &InferenceLog,
) -> Run {
    let sem = Arc::new(Semaphore::new(if args.rate > 0.0 { usize::MAX >> 4 } else { args.in_flight }));
    let started = Instant::now();
    let mut handles = vec![];
    for i in 0..args.requests {
        if args.rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / args.rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let permit = sem.clone().acquire_owned().await.unwrap();
        let fleet = fleet.clone();
        let model = args.models[i % args.models.len()].clone();
        let http = http.clone();
        let waiters = waiters.clone();
        let mut body = warmlane_tests::request(&format!("{}-{round}-{i}", fleet.prefix), &model);
        body["width"] = args.width.into();
        body["height"] = args.height.into();
        body["frames"] = args.frames.into();
        handles.push(tokio::spawn(send_one(fleet, waiters, http, body, permit)));
    }
    let mut run = Run::default();
    for h in handles {
        let (accept, e2e, outcome) = h.await.unwrap();
        if let Some(a) = accept {
            run.accept.0.push(ms(a));
        }
        if let Some((id, e)) = e2e {
            let inf = inference.lock().unwrap().remove(&id).map(ms).unwrap_or(0.0);
            run.e2e.0.push(ms(e));
            run.inference.0.push(inf);
            run.overhead.0.push((ms(e) - inf).max(0.0));
        }
        *run.outcomes.entry(outcome).or_default() += 1;
    }
    run.throughput = args.requests as f64 / started.elapsed().as_secs_f64();
    run
}

/// One request's figures: accept latency (when accepted), task id and end-to-end
/// latency (when a reply came), and the outcome code.
type Sent = (Option<Duration>, Option<(String, Duration)>, String);

/// Submits `body` (over the shim at `http`, or through the library) and waits for its
/// reply; releases `permit` when done.
async fn send_one(
    fleet: Arc<Fleet>,
    waiters: Waiters,
    http: Option<String>,
    body: serde_json::Value,
    permit: OwnedSemaphorePermit,
) -> Sent {
    let id = body["task_id"].as_str().unwrap().to_string();
    let t0 = Instant::now();
    let accepted = match http {
        Some(addr) => {
            let mut s = BufReader::new(tokio::net::TcpStream::connect(addr).await.expect("connect to the shim"));
            let status = post(&mut s, &body.to_string()).await;
            if status == 202 {
                Ok(())
            } else {
                Err(format!("http_{status}"))
            }
        }
        None => fleet.producer.submit_json(&body).await.map(|_| ()).map_err(|e| match e {
            warmlane_producer::ProducerError::Rejected(r) => r.code.as_str().to_string(),
            other => format!("error: {other}"),
        }),
    };
    let accept = t0.elapsed();
    let result = match accepted {
        Ok(()) => {
            let key = fleet.producer.store().keys().reply(&id);
            let reply = waiters
                .pop(&key, 120.0)
                .await
                .map(|body| warmlane_shared::Reply::from_msgpack(&body).expect("a decodable reply"));
            let e2e = t0.elapsed();
            match reply {
                Some(r) => {
                    let outcome = r.code.map(|c| c.as_str().to_string()).unwrap_or_else(|| "done".into());
                    (Some(accept), Some((id, e2e)), outcome)
                }
                None => (Some(accept), None, "no_reply".into()),
            }
        }
        Err(code) => (None, None, code),
    };
    drop(permit);
    result
}
