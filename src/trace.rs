//! The protocol trace of `-v`, `-vv` and `-vvv`, written to stderr one line at a time:
//!
//! - `-v` ([`Verbosity::Connections`]): each connection opened, and whether it uses TLS;
//! - `-vv` ([`Verbosity::Commands`]): every command line mailferry sends;
//! - `-vvv` ([`Verbosity::Everything`]): every line the servers send back, too.
//!
//! Message bodies and other literals are never dumped: they show as `{N bytes}`. Secrets are
//! never written either, and not by scrubbing the trace afterwards: the code that sends a
//! password or token knows it is doing so and hands the trace a shown form in which the
//! secret is [`REDACTED`] (IMAP: [`crate::imap::command::CommandBuilder::secret`]; POP3: the
//! login's own lines).

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// What a secret shows as in the trace.
pub const REDACTED: &str = "<redacted>";

/// How much the trace shows; each level includes the ones below.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Nothing.
    #[default]
    Off,
    /// Connections opened (`-v`).
    Connections,
    /// And every command sent (`-vv`).
    Commands,
    /// And every response line received (`-vvv`).
    Everything,
}

impl Verbosity {
    /// The level of a count of `-v` flags.
    pub fn from_count(count: u8) -> Self {
        match count {
            0 => Verbosity::Off,
            1 => Verbosity::Connections,
            2 => Verbosity::Commands,
            _ => Verbosity::Everything,
        }
    }
}

/// Where trace lines go, shared by every connection of a job.
type Sink = Arc<Mutex<dyn Write + Send>>;

/// Told of every connection a job opens and closes (the `--metrics` gauge of open connections
/// per host). The trace is the one thing every connection of a job carries from its opening
/// to its end, so it is where the watch rides.
pub trait ConnectionWatch: Send + Sync {
    /// A connection to `host` was opened.
    fn opened(&self, host: &str);
    /// A connection to `host` was closed (its last user let go of it).
    fn closed(&self, host: &str);
}

/// The trace settings of a job: a level and a sink (stderr unless a test gives its own).
#[derive(Clone, Default)]
pub struct Trace {
    level: Verbosity,
    sink: Option<Sink>,
    watch: Option<Arc<dyn ConnectionWatch>>,
}

impl fmt::Debug for Trace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trace").field("level", &self.level).finish()
    }
}

/// Numbers connections in the order they are opened, so parallel ones can be told apart.
static NEXT_CONNECTION: AtomicU32 = AtomicU32::new(1);

impl Trace {
    /// A trace to stderr at this level.
    pub fn new(level: Verbosity) -> Self {
        Trace {
            level,
            sink: None,
            watch: None,
        }
    }

    /// The same trace, whose connections `watch` is told of as they open and close.
    pub fn watched_by(self, watch: Arc<dyn ConnectionWatch>) -> Self {
        Trace {
            watch: Some(watch),
            ..self
        }
    }

    /// A trace into `writer` (for tests).
    pub fn to_writer(level: Verbosity, writer: impl Write + Send + 'static) -> Self {
        Trace {
            level,
            sink: Some(Arc::new(Mutex::new(writer))),
            watch: None,
        }
    }

    /// The trace of a new connection to `host:port`, labelled with its number.
    pub fn connection(&self, host: &str, port: u16) -> ConnectionTrace {
        let number = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
        ConnectionTrace {
            trace: self.clone(),
            label: format!("[#{number} {host}:{port}]"),
            _open: self.watch.as_ref().map(|watch| {
                watch.opened(host);
                Arc::new(OpenConnection {
                    watch: Arc::clone(watch),
                    host: host.to_owned(),
                })
            }),
        }
    }
}

/// The trace of one connection; every line starts with the connection's label.
#[derive(Debug, Clone)]
pub struct ConnectionTrace {
    trace: Trace,
    label: String,
    /// Shared by the clones of this trace: the connection is closed when the last goes.
    _open: Option<Arc<OpenConnection>>,
}

/// Tells the watch that the connection closed when dropped.
struct OpenConnection {
    watch: Arc<dyn ConnectionWatch>,
    host: String,
}

impl fmt::Debug for OpenConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenConnection")
            .field("host", &self.host)
            .finish()
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.watch.closed(&self.host);
    }
}

impl ConnectionTrace {
    /// Whether lines of this level are written (to skip building what would not be shown).
    pub fn shows(&self, level: Verbosity) -> bool {
        self.trace.level >= level && level > Verbosity::Off
    }

    /// Something that happened to the connection (`-v`).
    pub fn event(&self, what: &str) {
        if self.shows(Verbosity::Connections) {
            self.write("*", what.as_bytes());
        }
    }

    /// Bytes sent (`-vv`), already in their shown form: secrets redacted, bodies summarised.
    pub fn sent(&self, shown: &[u8]) {
        if self.shows(Verbosity::Commands) {
            self.write("C:", shown);
        }
    }

    /// Bytes received (`-vvv`), already in their shown form (bodies summarised).
    pub fn received(&self, shown: &[u8]) {
        if self.shows(Verbosity::Everything) {
            self.write("S:", shown);
        }
    }

    /// Writes one trace line per protocol line, in one write so that lines of parallel
    /// connections do not interleave.
    fn write(&self, direction: &str, shown: &[u8]) {
        let mut out = String::new();
        let text = String::from_utf8_lossy(shown);
        for line in text.split_inclusive('\n') {
            let line = line.trim_end_matches(['\r', '\n']);
            out.push_str(&self.label);
            out.push(' ');
            out.push_str(direction);
            out.push(' ');
            for c in line.chars() {
                if c.is_control() && c != '\t' {
                    out.extend(c.escape_default());
                } else {
                    out.push(c);
                }
            }
            out.push('\n');
        }
        // A trace that cannot be written must not stop the copy.
        let _ = match &self.trace.sink {
            Some(sink) => sink
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .write_all(out.as_bytes()),
            None => io::stderr().lock().write_all(out.as_bytes()),
        };
    }
}

/// Replaces each literal of `bytes` (given as `(start, length)` ranges, in order, each right
/// after its `{N}\r\n` announcement) by `{N bytes}`: how a response with literals is shown.
pub fn summarise_literals(bytes: &[u8], literals: &[(usize, usize)]) -> Vec<u8> {
    let mut shown = Vec::with_capacity(bytes.len().min(4096));
    let mut at = 0;
    for &(start, length) in literals {
        shown.extend_from_slice(&bytes[at..start]);
        // Drop the announcement `{N}` / `{N+}` and its line end; the summary replaces both.
        if let Some(open) = shown.iter().rposition(|&b| b == b'{') {
            shown.truncate(open);
        }
        shown.extend_from_slice(format!("{{{length} bytes}}").as_bytes());
        at = start + length;
    }
    shown.extend_from_slice(&bytes[at.min(bytes.len())..]);
    shown
}

/// A writer the tests read back: every trace line a job wrote.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

#[cfg(test)]
impl Captured {
    /// An address on 127.0.0.1 whose connections trace everything into a new `Captured`: for
    /// the clients' trace tests against a scripted server.
    pub(crate) fn loopback(port: u16) -> (crate::net::Address, Captured) {
        let captured = Captured::default();
        let address = crate::net::Address {
            host: "127.0.0.1".into(),
            port,
            timeout: std::time::Duration::from_secs(10),
            trace: Trace::to_writer(Verbosity::Everything, captured.clone()),
        };
        (address, captured)
    }

    /// What was written so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap_or_else(PoisonError::into_inner)).into()
    }
}

#[cfg(test)]
impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Watch(Mutex<Vec<String>>);

    impl ConnectionWatch for Watch {
        fn opened(&self, host: &str) {
            self.0.lock().unwrap().push(format!("+{host}"));
        }
        fn closed(&self, host: &str) {
            self.0.lock().unwrap().push(format!("-{host}"));
        }
    }

    #[test]
    fn a_watch_sees_a_connection_close_when_its_last_trace_goes() {
        let watch = Arc::new(Watch::default());
        let trace = Trace::new(Verbosity::Off).watched_by(watch.clone());
        let first = trace.connection("a.example", 993);
        let shared = first.clone();
        let second = trace.clone().connection("b.example", 995);
        drop(first);
        assert_eq!(*watch.0.lock().unwrap(), ["+a.example", "+b.example"]);
        drop((shared, second));
        assert_eq!(
            *watch.0.lock().unwrap(),
            ["+a.example", "+b.example", "-a.example", "-b.example"]
        );
    }

    #[test]
    fn levels_include_the_ones_below() {
        let captured = Captured::default();
        let trace = Trace::to_writer(Verbosity::Commands, captured.clone()).connection("h", 1);
        trace.event("connected");
        trace.sent(b"a1 NOOP\r\n");
        trace.received(b"a1 OK done\r\n");
        let text = captured.text();
        assert!(text.contains("* connected\n"), "{text}");
        assert!(text.contains(" C: a1 NOOP\n"), "{text}");
        assert!(!text.contains("done"), "{text}");
        let off = Trace::default().connection("h", 1);
        assert!(!off.shows(Verbosity::Connections));
    }

    #[test]
    fn one_trace_line_per_protocol_line_with_controls_escaped() {
        let captured = Captured::default();
        let trace = Trace::to_writer(Verbosity::Everything, captured.clone()).connection("h", 1);
        trace.received(b"+OK\r\nx\x1by\r\n");
        let lines: Vec<_> = captured.text().lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" S: +OK"));
        assert!(lines[1].ends_with(" S: x\\u{1b}y"));
    }

    #[test]
    fn literals_become_their_size() {
        let response = b"* 1 FETCH (UID 4 BODY[] {5}\r\nHello UID 5 X {2}\r\nab)\r\n";
        let first = response.windows(5).position(|w| w == b"Hello").unwrap();
        let second = response.windows(2).position(|w| w == b"ab").unwrap();
        assert_eq!(
            summarise_literals(response, &[(first, 5), (second, 2)]),
            b"* 1 FETCH (UID 4 BODY[] {5 bytes} UID 5 X {2 bytes})\r\n"
        );
        assert_eq!(summarise_literals(b"* OK\r\n", &[]), b"* OK\r\n");
    }
}
