//! RabbitMQ adapter: connecting with backoff, declaring the topology from plain
//! data, and publishing with confirms.
//!
//! Every publish is `mandatory` and waits for its confirm: an unroutable message
//! comes back as [`Published::Returned`], a queue at its length limit as
//! [`Published::Nacked`], and a confirm lost with the connection as an error,
//! never as accepted.
//!
//! An `amqps://` URL connects over TLS with the endpoint's CA ([`crate::tls`]); the
//! TCP connection is lapin's, the handshake ours, so the publisher's pool, the
//! workers and the reaper all trust the same roots.

use crate::config::redact_url;
use crate::endpoint::Endpoint;
use crate::error::{BadSetting, InfraError, Service};
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::tcp::{AMQPUriTcpExt, RustlsConnector, TLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use std::time::Duration;
use tokio::sync::Mutex;
use warmlane_shared::topology::{ArgValue, Declarations, CONTENT_TYPE};

mod publisher;
pub use publisher::Publisher;
use warmlane_shared::{Settings, Topology};

/// The broker's answer to one publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Stored by the broker.
    Acked,
    /// Refused by the broker (queue at `x-max-length` with `reject-publish`).
    Nacked,
    /// No queue was bound for the routing key.
    Returned,
}

/// Checks that `url` is an AMQP URL before a client sees it: the client's own parse
/// error repeats the whole URL, password included, and would reach the logs.
pub fn check_url(url: &str) -> Result<(), InfraError> {
    crate::config::url_list(url).into_iter().try_for_each(|url| parse_url(url).map(drop))
}

fn parse_url(url: &str) -> Result<AMQPUri, InfraError> {
    url.parse::<AMQPUri>().map_err(|_| InfraError::Connect {
        service: Service::Broker,
        url: redact_url(url),
        source: Box::new(BadSetting(
            "not an AMQP URL; expected amqp://user:password@host:port/vhost or amqps://...".into(),
        )),
    })
}

/// Opens one connection, retrying with backoff until `give_up_after` has passed; a
/// wrong setting (a certificate not trusted, a URL that does not parse) fails at once.
pub async fn connect(endpoint: &Endpoint, give_up_after: Duration) -> Result<Connection, InfraError> {
    let attempt = || open(endpoint);
    crate::backoff::retry_while("RabbitMQ", give_up_after, attempt, InfraError::is_retryable).await
}

/// Longest a publish waits for its confirm: far above a quorum queue's commit, even
/// during a leader election, but a broker that stopped answering must not hold every
/// publisher sharing its channel.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest one node of a list may take to accept a connection before the next is
/// tried: a host that is down or cut off answers nothing, and the system's own
/// connect timeout is minutes. A single URL has no such limit (there is no other
/// node to try, and a broker slow under load must not fail every publish).
pub const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the next connection to a list of nodes starts: successive connections (a
/// publisher's pool, a worker's reconnect) go round the list, so a node that is down
/// costs one refused attempt and clients spread over the cluster.
static NEXT_NODE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Opens one connection, once: over TLS for an `amqps://` URL. An endpoint that
/// lists several nodes (`amqp://a,amqp://b,amqp://c`) is tried node by node, from
/// the next one round the list, until one accepts; a wrong setting (a certificate
/// not trusted) fails at once, else the last node's error is returned.
pub async fn open(endpoint: &Endpoint) -> Result<Connection, InfraError> {
    let nodes = endpoint.each();
    let start = NEXT_NODE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut last = None;
    for node in nodes.iter().cycle().skip(start % nodes.len()).take(nodes.len()) {
        let attempt = if nodes.len() == 1 {
            open_node(node).await
        } else {
            tokio::time::timeout(NODE_CONNECT_TIMEOUT, open_node(node)).await.unwrap_or_else(|_| {
                let silent = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} s", NODE_CONNECT_TIMEOUT.as_secs()),
                );
                Err(InfraError::connect(Service::Broker, node.redacted(), silent))
            })
        };
        match attempt {
            Ok(conn) => return Ok(conn),
            Err(e) if e.is_misconfigured() => return Err(e),
            Err(e) => {
                if nodes.len() > 1 {
                    tracing::warn!(node = %node.redacted(), error = %crate::Report(&e), "RabbitMQ node not answering; trying the next");
                }
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| InfraError::Refused("no RabbitMQ URL given".into())))
}

async fn open_node(endpoint: &Endpoint) -> Result<Connection, InfraError> {
    let uri = parse_url(endpoint.url())?;
    let failed = |e: lapin::Error| InfraError::connect(Service::Broker, endpoint.redacted(), e);
    let tls = match uri.scheme {
        AMQPScheme::AMQPS => Some(RustlsConnector::from(
            crate::tls::client_config(endpoint.ca())
                .map_err(|e| InfraError::connect(Service::Broker, endpoint.redacted(), e))?,
        )),
        AMQPScheme::AMQP => None,
    };
    let runtime = lapin::runtime::default_runtime().map_err(failed)?;
    // lapin opens the TCP connection (its timeout, its resolver); the handshake is ours.
    let connect = async move |uri: AMQPUri, runtime| {
        let host = uri.authority.host.clone();
        let plain = AMQPUri { scheme: AMQPScheme::AMQP, ..uri };
        let stream = plain.connect_with_config_async(TLSConfig::default(), &runtime).await?;
        Ok(match &tls {
            Some(connector) => stream.into_rustls(connector, &host).await?,
            None => stream,
        })
    };
    Connection::connector(uri, runtime, connect, ConnectionProperties::default()).await.map_err(failed)
}

/// Converts plain queue arguments to an AMQP table.
pub fn field_table(args: &[(&'static str, ArgValue)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in args {
        let value = match v {
            ArgValue::Int(i) => AMQPValue::LongLongInt(*i),
            ArgValue::Str(s) => AMQPValue::LongString(LongString::from(s.clone())),
            ArgValue::Bool(b) => AMQPValue::Boolean(*b),
        };
        table.insert(ShortString::from(*k), value);
    }
    table
}

/// Declares every exchange, queue and binding; idempotent. A queue that exists with
/// other arguments fails with PRECONDITION_FAILED, reported with the queue's name.
pub async fn declare(channel: &Channel, decl: &Declarations) -> Result<(), InfraError> {
    for ex in &decl.exchanges {
        channel
            .exchange_declare(
                ex.name.as_str().into(),
                ExchangeKind::Direct,
                ExchangeDeclareOptions { durable: true, ..Default::default() },
                FieldTable::default(),
            )
            .await
            .map_err(InfraError::broker(format!("declaring exchange {}", ex.name)))?;
    }
    for q in &decl.queues {
        channel
            .queue_declare(q.name.as_str().into(), QueueDeclareOptions { durable: true, ..Default::default() }, field_table(&q.args))
            .await
            .map_err(InfraError::broker(format!(
                "declaring queue {} (a queue declared earlier with other arguments must be deleted or the old settings kept)",
                q.name
            )))?;
    }
    for b in &decl.bindings {
        channel
            .queue_bind(
                b.queue.as_str().into(),
                b.exchange.as_str().into(),
                b.key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(InfraError::broker(format!("binding {} to {}", b.queue, b.exchange)))?;
    }
    Ok(())
}

/// Properties of a warmlane message: persistent, MessagePack, `message_id` = task id.
pub fn message_properties(task_id: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(CONTENT_TYPE.into())
        .with_message_id(task_id.into())
        .with_timestamp(warmlane_shared::now_ms() / 1000)
        .with_headers(headers)
}

/// Publishes `mandatory` on a confirm channel and waits for the broker's answer.
///
/// The broker numbers a channel's publishes in the order their frames arrive, while
/// lapin takes a publish's confirm tag when the publish starts; two publishes racing
/// on one channel from different threads can therefore swap tags, and with them
/// their acks and nacks (a refused message reported stored, a stored one refused).
/// `order` keeps taking the tag and writing the frames together: every publisher
/// sharing `channel` must pass the same lock. It is released once the frames are
/// written, before the confirm is awaited, so confirms still overlap.
pub async fn publish(
    channel: &Channel,
    order: &Mutex<()>,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<Published, InfraError> {
    // An error before the frames are written means nothing was queued; after that,
    // only the confirm can tell, and without it the outcome is unknown.
    let pending = {
        let _in_order = order.lock().await;
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions { mandatory: true, ..Default::default() },
                body,
                properties,
            )
            .await
            .map_err(InfraError::broker("publishing"))?
    };
    let confirm = tokio::time::timeout(CONFIRM_TIMEOUT, pending)
        .await
        .map_err(|_| InfraError::ConfirmTimedOut(CONFIRM_TIMEOUT))?
        .map_err(InfraError::Unconfirmed)?;
    Ok(match confirm {
        lapin::Confirmation::Ack(Some(_)) => Published::Returned,
        lapin::Confirmation::Ack(None) => Published::Acked,
        lapin::Confirmation::Nack(_) => Published::Nacked,
        lapin::Confirmation::NotRequested => {
            return Err(InfraError::Unconfirmable("publish on a channel without confirms".into()))
        }
    })
}

/// A string header of a message, if present.
pub fn header_str(props: &BasicProperties, name: &str) -> Option<String> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// When a degraded message entered its queue (the producer's
/// `x-warmlane-enqueued-ms` header), unix ms.
pub fn enqueued_ms(props: &BasicProperties) -> Option<u64> {
    header_int(props, warmlane_shared::topology::HEADER_ENQUEUED_MS).and_then(|v| u64::try_from(v).ok())
}

/// An integer header of a message, if present.
pub fn header_int(props: &BasicProperties, name: &str) -> Option<i64> {
    match props.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongLongInt(i) => Some(*i),
        AMQPValue::LongInt(i) => Some(i64::from(*i)),
        AMQPValue::LongUInt(i) => Some(i64::from(*i)),
        AMQPValue::ShortInt(i) => Some(i64::from(*i)),
        AMQPValue::Timestamp(i) => i64::try_from(*i).ok(),
        _ => None,
    }
}

/// Ready messages in one queue (a passive declare); `None` when the queue does not exist.
pub async fn queue_depth(publisher: &Publisher, queue: &str) -> Result<Option<u32>, InfraError> {
    // A passive declare of a missing queue closes the channel, so each check gets a fresh one.
    let channel = publisher.channel_plain().await?;
    let depth = channel
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .ok()
        .map(|q| q.message_count());
    let _ = channel.close(200, "done".into()).await;
    Ok(depth)
}

/// What a passive declare reports about a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueCounts {
    /// Ready messages.
    pub messages: u32,
    /// Consumers subscribed now (the broker drops a consumer when its connection closes).
    pub consumers: u32,
}

/// Ready messages and consumers of one queue, by a passive declare on `channel`.
/// A queue that does not exist is an error, and the broker then closes `channel`:
/// callers that keep a channel open drop it on any error.
pub async fn queue_counts(channel: &Channel, queue: &str) -> Result<QueueCounts, InfraError> {
    let q = channel
        .queue_declare(queue.into(), QueueDeclareOptions { passive: true, ..Default::default() }, FieldTable::default())
        .await
        .map_err(InfraError::broker(format!("checking queue {queue}")))?;
    Ok(QueueCounts { messages: q.message_count(), consumers: q.consumer_count() })
}

/// Ready-message counts of the lane and degraded queues, by queue name; a queue that
/// does not exist yet is left out.
pub async fn queue_depths(
    publisher: &Publisher,
    topology: &Topology,
    settings: &Settings,
) -> Result<std::collections::HashMap<String, u32>, InfraError> {
    let mut names: Vec<String> = settings.lane_models().map(|m| topology.lane_queue(m)).collect();
    names.push(topology.degraded_queue());
    let mut depths = std::collections::HashMap::new();
    for name in names {
        if let Some(depth) = queue_depth(publisher, &name).await? {
            depths.insert(name, depth);
        }
    }
    Ok(depths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Report;

    #[test]
    fn a_url_that_does_not_parse_is_refused_without_its_password() {
        for bad in ["guest:hunter2@localhost:5672", "http://guest:hunter2@localhost/", "amqp://guest:hunter2@[::1"] {
            let e = check_url(bad).expect_err(bad);
            assert!(!Report(&e).to_string().contains("hunter2"), "{}", Report(&e));
        }
        check_url("amqp://guest:guest@127.0.0.1:5672/%2f").expect("a good URL");
    }
}
