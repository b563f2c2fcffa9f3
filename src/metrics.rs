//! `batch --metrics ADDR`: live counters of a batch in the Prometheus text format, for the
//! Grafana an admin already has.
//!
//! [`Metrics`] is one more observer of the engine ([`Observer`]: messages, bytes, retries,
//! throttles), a [`ConnectionWatch`] on every connection the batch opens (connections open per
//! host), and is told by the batch when an account starts and how it ended. Nothing polls:
//! every number moves when the event happens, and a scrape only reads them.
//!
//! Crates, both already well kept and building on Rust 1.95 without a runtime:
//! - `prometheus-client`, the Prometheus project's own Rust client, encodes the metrics in the
//!   OpenMetrics text format (Prometheus's text format made a standard; Prometheus, Grafana
//!   Agent and VictoriaMetrics scrape it), so no exposition syntax is written here;
//! - `tiny_http` serves it: a small blocking HTTP/1.1 server on std threads (mailferry has no
//!   async runtime, and pulling tokio and hyper in for one endpoint would outweigh the rest).
//!
//! The listener binds only the address given, answers `GET /metrics` (404 elsewhere) and is
//! stopped when [`MetricsServer`] is dropped, at the end of the batch.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

use crate::batch::Outcome;
use crate::error::Error;
use crate::index::SourceMessage;
use crate::store::MessageUid;
use crate::trace::ConnectionWatch;
use crate::transfer::Observer;

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

/// The counters of one batch (see README, "Watching a batch", for each metric).
pub struct Metrics {
    registry: Registry,
    accounts: Gauge,
    accounts_running: Gauge,
    accounts_finished: Family<OutcomeLabel, Counter>,
    messages_copied: Counter,
    bytes_copied: Counter,
    messages_failed: Counter,
    bytes_failed: Counter,
    retries: Counter,
    throttles: Counter,
    connections_open: Family<HostLabel, Gauge>,
}

impl Metrics {
    /// All metrics at zero, for a batch of `accounts` accounts.
    pub fn new(accounts: usize) -> Self {
        let mut metrics = Metrics {
            accounts: Gauge::default(),
            accounts_running: Gauge::default(),
            accounts_finished: Family::default(),
            messages_copied: Counter::default(),
            bytes_copied: Counter::default(),
            messages_failed: Counter::default(),
            bytes_failed: Counter::default(),
            retries: Counter::default(),
            throttles: Counter::default(),
            connections_open: Family::default(),
            registry: Registry::with_prefix("mailferry"),
        };
        let registry = &mut metrics.registry;
        metrics.accounts.set(count(accounts));
        registry.register(
            "accounts",
            "Accounts in this batch (this shard)",
            metrics.accounts.clone(),
        );
        registry.register(
            "accounts_running",
            "Accounts being copied now",
            metrics.accounts_running.clone(),
        );
        registry.register(
            "accounts_finished",
            "Accounts finished, by outcome (ok, partial, failed, skipped)",
            metrics.accounts_finished.clone(),
        );
        registry.register(
            "messages_copied",
            "Messages stored on the targets",
            metrics.messages_copied.clone(),
        );
        registry.register_with_unit(
            "messages_copied",
            "Bytes of the messages stored on the targets",
            Unit::Bytes,
            metrics.bytes_copied.clone(),
        );
        registry.register(
            "messages_failed",
            "Messages a target refused or that could not be transferred",
            metrics.messages_failed.clone(),
        );
        registry.register_with_unit(
            "messages_failed",
            "Bytes of the messages that failed",
            Unit::Bytes,
            metrics.bytes_failed.clone(),
        );
        registry.register(
            "retries",
            "Connections opened again during a copy after one failed (throttles included)",
            metrics.retries.clone(),
        );
        registry.register(
            "throttles",
            "Retries after a server asked to slow down ([THROTTLED], [UNAVAILABLE], BYE)",
            metrics.throttles.clone(),
        );
        registry.register(
            "connections_open",
            "Connections open now, by server host",
            metrics.connections_open.clone(),
        );
        metrics
    }

    /// An account starts; it counts as running until the returned guard is dropped (also when
    /// the account's run panics).
    pub fn account_running(&self) -> Running<'_> {
        self.accounts_running.inc();
        Running(&self.accounts_running)
    }

    /// An account ended this way.
    pub fn account_finished(&self, outcome: Outcome) {
        let outcome = match outcome {
            Outcome::Ok => "ok",
            Outcome::Partial => "partial",
            Outcome::Failed => "failed",
            Outcome::Skipped => "skipped",
        };
        self.accounts_finished
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing into a String cannot fail");
        text
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// An account counted as running; see [`Metrics::account_running`].
pub struct Running<'a>(&'a Gauge);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Observer for Metrics {
    fn message_copied(
        &self,
        _folder: &str,
        message: &Arc<SourceMessage>,
        _uid: Option<MessageUid>,
    ) {
        self.messages_copied.inc();
        self.bytes_copied.inc_by(message.size);
    }

    fn message_failed(&self, _folder: &str, message: &SourceMessage, _reason: &str) {
        self.messages_failed.inc();
        self.bytes_failed.inc_by(message.size);
    }

    fn retrying(&self, slowed_down: bool) {
        self.retries.inc();
        if slowed_down {
            self.throttles.inc();
        }
    }
}

impl ConnectionWatch for Metrics {
    fn opened(&self, host: &str) {
        self.connections_open
            .get_or_create(&HostLabel { host: host.into() })
            .inc();
    }

    fn closed(&self, host: &str) {
        self.connections_open
            .get_or_create(&HostLabel { host: host.into() })
            .dec();
    }
}

/// The HTTP listener serving [`Metrics`]; stopped when dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Listens on `address` (and nowhere else) and serves `metrics` until dropped.
    pub fn start(address: SocketAddr, metrics: Arc<Metrics>) -> Result<Self, Error> {
        let cannot = |why: String| Error::Usage {
            message: format!("cannot serve --metrics on {address}: {why}"),
            hint: Some("give --metrics a free port on an address of this machine".into()),
        };
        let listener = TcpListener::bind(address).map_err(|e| cannot(e.to_string()))?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map(Arc::new)
            .map_err(|e| cannot(e.to_string()))?;
        let thread = {
            let server = Arc::clone(&server);
            std::thread::spawn(move || serve(&server, &metrics))
        };
        Ok(MetricsServer {
            server,
            thread: Some(thread),
        })
    }
}

fn serve(server: &tiny_http::Server, metrics: &Metrics) {
    // Ends when `unblock` is called: the iterator then yields nothing more.
    for request in server.incoming_requests() {
        let response = if request.url() == "/metrics" {
            let header = tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                .expect("the content type is a valid header");
            tiny_http::Response::from_string(metrics.encode()).with_header(header)
        } else {
            tiny_http::Response::from_string("not found; the metrics are at /metrics\n")
                .with_status_code(404)
        };
        // A scraper that went away is its own business; the batch goes on.
        let _ = request.respond(response);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(metrics: &Metrics, name: &str) -> Option<String> {
        metrics
            .encode()
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{name} ")).map(str::to_owned))
    }

    #[test]
    fn events_move_the_documented_metrics() {
        let metrics = Metrics::new(3);
        let message = Arc::new(SourceMessage::with_id(1, "m1"));
        metrics.message_copied("INBOX", &message, None);
        metrics.message_copied("INBOX", &message, None);
        metrics.message_failed("INBOX", &message, "too big");
        metrics.retrying(false);
        metrics.retrying(true);
        metrics.opened("mail.example");
        metrics.opened("mail.example");
        metrics.closed("mail.example");
        {
            let _running = metrics.account_running();
            assert_eq!(
                sample(&metrics, "mailferry_accounts_running").as_deref(),
                Some("1")
            );
        }
        metrics.account_finished(Outcome::Partial);
        let size = message.size;
        for (name, value) in [
            ("mailferry_accounts", "3".to_owned()),
            ("mailferry_accounts_running", "0".to_owned()),
            (
                "mailferry_accounts_finished_total{outcome=\"partial\"}",
                "1".to_owned(),
            ),
            ("mailferry_messages_copied_total", "2".to_owned()),
            (
                "mailferry_messages_copied_bytes_total",
                (2 * size).to_string(),
            ),
            ("mailferry_messages_failed_total", "1".to_owned()),
            ("mailferry_messages_failed_bytes_total", size.to_string()),
            ("mailferry_retries_total", "2".to_owned()),
            ("mailferry_throttles_total", "1".to_owned()),
            (
                "mailferry_connections_open{host=\"mail.example\"}",
                "1".to_owned(),
            ),
        ] {
            assert_eq!(sample(&metrics, name), Some(value), "{name}");
        }
        assert!(metrics.encode().ends_with("# EOF\n"));
    }

    fn get(address: SocketAddr, path: &str) -> std::io::Result<String> {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(address)?;
        write!(stream, "GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n")?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    }

    #[test]
    fn the_listener_serves_until_dropped() {
        let address = TcpListener::bind("127.0.0.1:0")
            .and_then(|free| free.local_addr())
            .unwrap();
        let metrics = Arc::new(Metrics::new(7));
        let server = MetricsServer::start(address, Arc::clone(&metrics)).unwrap();
        let scraped = get(address, "/metrics").unwrap();
        assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
        assert!(scraped.contains("\nmailferry_accounts 7\n"), "{scraped}");
        assert!(get(address, "/").unwrap().starts_with("HTTP/1.1 404"));
        let taken = MetricsServer::start(address, metrics).err().unwrap();
        assert_eq!(taken.exit_code(), crate::error::EXIT_USAGE);
        drop(server);
        assert!(get(address, "/metrics").is_err(), "still listening");
    }
}
