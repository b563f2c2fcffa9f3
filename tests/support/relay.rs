//! A fault-injecting TCP relay: listens on 127.0.0.1 and forwards every connection, byte for
//! byte, to a port on 127.0.0.1 (TLS passes through untouched, so a certificate for 127.0.0.1
//! still matches), and breaks connections on request the way networks break them:
//!
//! - [`Fault::Cut`]: the server receives exactly the first N bytes the client sent, then the
//!   end of the stream; the client's connection is shut down at once. With N inside an APPEND
//!   literal, the upload breaks mid-literal.
//! - [`Fault::LoseAnswer`]: once the client has sent N bytes, the connection is cut as soon as
//!   the server answers: the server received everything the client sent (and may have acted on
//!   it), but the answer never reaches the client.
//! - [`Fault::Stall`]: after the first N bytes from the client, nothing more is forwarded in
//!   either direction, and the connection stays open (a peer that stopped answering).
//! - [`Fault::Greet`]: the client gets other bytes in place of the server's greeting.
//! - [`Fault::Replace`]: some bytes the server sends are replaced by others.
//! - [`Fault::Trickle`]: the server's bytes reach the client one at a time, slowly.
//! - [`Fault::HideSaslPlain`]: plaintext only; the server's capability lists lose SASL PLAIN,
//!   as on a server that offers only IMAP LOGIN or POP3 USER/PASS, and the client's first
//!   bytes are kept in the log, to show which login command it chose.
//!
//! Faults are given per connection in the order the relay accepts them
//! ([`Relay::set_faults`]); connections beyond the list pass untouched. [`Relay::connections`]
//! says what happened on each, so a test can check that its fault really fired.
//!
//! [`Relay::set_quirks`] makes the server behind the relay quirky on every connection: what it
//! sends is rewritten as by a server that rewrites stored mail (bare LF, refolded headers,
//! added fields; see [`super::quirks`]), on top of any fault. Byte counts and cut offsets are
//! of the server's bytes as sent, before the rewriting.
//!
//! [`Relay::refuse_for`] takes the listener down for a while, as a server that is not up yet
//! (or restarting): connecting fails with "connection refused" until it is back on the same
//! port.
//!
//! Std threads only: an acceptor, and two pumps per connection. Every wait is bounded: reads
//! wake every [`POLL`] to look at the stop flag, writes give up after [`WRITE_TIMEOUT`], a
//! stalled connection is closed after [`MAX_STALL`]. Dropping the relay shuts every
//! connection down and joins every thread.

use std::borrow::Cow;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::quirks::{Quirks, Rewriter};

/// How long a pump's blocked read or the acceptor's idle loop waits before looking at the
/// stop flag again.
pub const POLL: Duration = Duration::from_millis(20);
/// A write the peer does not take for this long closes the connection.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connecting to the upstream port.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A stalled connection is closed after this long, even while the relay lives on.
pub const MAX_STALL: Duration = Duration::from_secs(120);
/// After a cut, the server's remaining output is read (and dropped) for at most this long, so
/// the relay never closes a socket with unread data (which would send a reset, and a reset
/// may make the server drop bytes it has not read yet).
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// What the relay does to one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward everything.
    #[default]
    Pass,
    /// Forward the first N bytes from the client, then end the stream to the server (which
    /// has got exactly those N bytes) and shut the client's connection down.
    Cut(u64),
    /// Forward the first N bytes from the server, then cut as [`Fault::Cut`] does: the client
    /// has received exactly those N bytes (a cut in the middle of a long answer).
    CutAnswer(u64),
    /// Forward everything until the client has sent N bytes; then, instead of forwarding the
    /// server's next bytes, cut as [`Fault::Cut`] does. With N the end of a command, the server
    /// executes it and its answer is lost.
    LoseAnswer(u64),
    /// Forward the first N bytes from the client, then nothing in either direction; the
    /// connection stays open (until the relay is dropped, or [`MAX_STALL`]).
    Stall(u64),
    /// Forward everything, but drop ` AUTH=PLAIN` (IMAP) and the `PLAIN` of a POP3 `SASL`
    /// line from what the server sends, and keep the first [`KEPT_FROM_CLIENT`] bytes the
    /// client sends in [`ConnectionLog::from_client`]. A pattern split across two reads would
    /// pass unchanged; Dovecot writes each capability line whole, and loopback keeps it so.
    HideSaslPlain,
    /// Forward everything, but what the server sends one byte at a time, each after this
    /// pause: a server (or a path) that trickles its answers.
    Trickle(Duration),
    /// Forward everything, but replace the first bytes (wherever one read from the server
    /// holds them whole) with the second: a server that announces one thing and does another.
    Replace(&'static [u8], &'static [u8]),
    /// Forward everything, but the client gets these bytes in place of the server's first
    /// read (its greeting): a greeting forged on the path, or one a server got wrong.
    Greet(&'static [u8]),
}

/// How much of what the client sends [`Fault::HideSaslPlain`] keeps.
pub const KEPT_FROM_CLIENT: usize = 4096;

/// What happened on one relayed connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectionLog {
    /// The fault it was given.
    pub fault: Fault,
    /// Bytes forwarded from the client to the server (counted as they are handed over, so
    /// an answer is never seen before the bytes that caused it).
    pub to_server: u64,
    /// Bytes forwarded from the server to the client.
    pub to_client: u64,
    /// Whether the fault fired (always false for [`Fault::Pass`]).
    pub fired: bool,
    /// Each read from the server, in order: roughly the server's writes (over TLS, its
    /// records), as far as the network kept them apart.
    pub replies: Vec<Reply>,
    /// With [`Fault::HideSaslPlain`]: the client's first bytes.
    pub from_client: Vec<u8>,
}

/// One read from the server on a relayed connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reply {
    /// `to_client` once it was forwarded: the read spans the bytes before this offset.
    pub end: u64,
    /// `to_server` when it was read: how much the client had sent by then. The server answers
    /// a command once it has it all, so for an answer this is where the command ended (when
    /// the client waits for answers, as mailferry does).
    pub sent: u64,
}

/// A running relay; see the module documentation.
pub struct Relay {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Until when the listener stays down ([`Relay::refuse_for`]).
    down_until: Option<Instant>,
    /// Whether the acceptor's listener is open right now.
    listening: bool,
    /// Faults for the connections accepted since the last `set_faults`, in order.
    faults: Vec<Fault>,
    /// For the connections accepted from now on.
    quirks: Quirks,
    /// Every connection since the last `set_faults`.
    logs: Vec<Arc<Mutex<ConnectionLog>>>,
    /// Connections whose pumps still run, to shut them down on drop.
    live: Vec<Weak<Link>>,
    threads: Vec<JoinHandle<()>>,
}

/// One relayed connection.
struct Link {
    client: TcpStream,
    server: TcpStream,
    log: Arc<Mutex<ConnectionLog>>,
    /// With quirks: rewrites what the server sends (and watches what the client sends, to
    /// know which POP3 answers are multi-line).
    rewriter: Option<Mutex<Rewriter>>,
    /// Set once a cut fired: the client side is shut down, the server side drained.
    cut: AtomicBool,
    /// When a stall fired.
    stalled: Mutex<Option<Instant>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Relay {
    /// Starts a relay in front of `127.0.0.1:upstream_port`, forwarding everything until
    /// [`Relay::set_faults`] says otherwise.
    pub fn start(upstream_port: u16) -> Relay {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("make the listener non-blocking");
        let port = listener.local_addr().expect("local_addr").port();
        let shared = Arc::new(Shared {
            upstream: (Ipv4Addr::LOCALHOST, upstream_port).into(),
            stop: AtomicBool::new(false),
            state: Mutex::new(State::default()),
        });
        lock(&shared.state).listening = true;
        let acceptor = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || accept_loop(listener, port, &shared))
        };
        Relay {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// The port on 127.0.0.1 to connect to instead of the upstream one.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Gives the connections accepted from now on these faults, in order (the first one
    /// accepted gets `faults[0]`); later connections pass. Also starts a new
    /// [`Relay::connections`] log. Connections already open keep their fault.
    pub fn set_faults(&self, faults: &[Fault]) {
        let mut state = lock(&self.shared.state);
        state.faults = faults.to_vec();
        state.logs.clear();
    }

    /// Makes the server quirky on the connections accepted from now on (connections already
    /// open keep theirs); [`Quirks::default`] ends that. Plaintext connections only: see
    /// [`super::quirks`].
    pub fn set_quirks(&self, quirks: Quirks) {
        lock(&self.shared.state).quirks = quirks;
    }

    /// Closes the listening socket now and opens it again, on the same port, once `duration`
    /// has passed (at once for zero): meanwhile every connection attempt is refused.
    /// Connections already open are not touched. Returns once the listener is down.
    pub fn refuse_for(&self, duration: Duration) {
        lock(&self.shared.state).down_until = Some(Instant::now() + duration);
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        while !duration.is_zero() && lock(&self.shared.state).listening {
            assert!(
                Instant::now() < deadline,
                "the relay's listener did not close"
            );
            thread::sleep(POLL / 4);
        }
    }

    /// What happened on each connection accepted since the last [`Relay::set_faults`] (or
    /// the start), in order. Counts of connections still open may still grow.
    pub fn connections(&self) -> Vec<ConnectionLog> {
        let state = lock(&self.shared.state);
        state.logs.iter().map(|log| lock(log).clone()).collect()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // The acceptor has stopped, so the lists no longer grow.
        let (live, threads) = {
            let mut state = lock(&self.shared.state);
            (
                std::mem::take(&mut state.live),
                std::mem::take(&mut state.threads),
            )
        };
        for link in live.iter().filter_map(Weak::upgrade) {
            link.shut_down();
        }
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// How long the acceptor tries to bind its port again after [`Relay::refuse_for`].
const REBIND_LIMIT: Duration = Duration::from_secs(10);

fn accept_loop(listener: TcpListener, port: u16, shared: &Arc<Shared>) {
    let mut listener = Some(listener);
    while !shared.stop.load(Ordering::SeqCst) {
        let down = {
            let mut state = lock(&shared.state);
            let down = state.down_until.is_some_and(|until| Instant::now() < until);
            if down {
                listener = None;
            }
            state.listening = listener.is_some();
            down
        };
        if down {
            thread::sleep(POLL / 4);
            continue;
        }
        let Some(open) = &listener else {
            listener = Some(rebind(port));
            continue;
        };
        match open.accept() {
            Ok((client, _)) => {
                if let Err(e) = relay_connection(client, shared) {
                    eprintln!("relay: cannot relay a connection: {e}");
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(e) => {
                eprintln!("relay: accept failed: {e}");
                thread::sleep(POLL);
            }
        }
    }
}

/// Listens on `port` again (the standard library sets SO_REUSEADDR, so connections of the
/// previous listener in TIME_WAIT do not stand in the way).
fn rebind(port: u16) -> TcpListener {
    let deadline = Instant::now() + REBIND_LIMIT;
    loop {
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(listener) => {
                listener
                    .set_nonblocking(true)
                    .expect("make the listener non-blocking");
                return listener;
            }
            Err(e) if Instant::now() < deadline => {
                eprintln!("relay: cannot listen on port {port} again yet: {e}");
                thread::sleep(POLL);
            }
            Err(e) => panic!("relay: cannot listen on port {port} again: {e}"),
        }
    }
}

/// Connects to the upstream port and starts the two pumps. An upstream that refuses leaves
/// the client to see its connection closed, as it would without the relay.
fn relay_connection(client: TcpStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    let server = TcpStream::connect_timeout(&shared.upstream, CONNECT_TIMEOUT)?;
    for stream in [&client, &server] {
        // Commands and answers are small; Nagle's algorithm would hold them back.
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(POLL))?;
        stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    }
    let mut state = lock(&shared.state);
    let index = state.logs.len();
    let fault = state.faults.get(index).copied().unwrap_or_default();
    let log = Arc::new(Mutex::new(ConnectionLog {
        fault,
        ..ConnectionLog::default()
    }));
    state.logs.push(Arc::clone(&log));
    let quirks = state.quirks;
    let link = Arc::new(Link {
        client,
        server,
        log,
        rewriter: quirks.any().then(|| Mutex::new(Rewriter::new(quirks))),
        cut: AtomicBool::new(false),
        stalled: Mutex::new(None),
    });
    state.live.retain(|link| link.strong_count() > 0);
    state.live.push(Arc::downgrade(&link));
    state.threads.retain(|thread| !thread.is_finished());
    for direction in [Direction::ToServer, Direction::ToClient] {
        let (link, shared) = (Arc::clone(&link), Arc::clone(shared));
        state
            .threads
            .push(thread::spawn(move || pump(&link, direction, &shared)));
    }
    Ok(())
}

impl Link {
    /// How many of `n` bytes read in `direction` may be forwarded, and whether the fault
    /// fires instead of forwarding more. Counts the bytes to be forwarded.
    fn admit(&self, direction: Direction, n: usize) -> (usize, bool) {
        let mut log = lock(&self.log);
        let mut allowed = n;
        let mut fire = false;
        if !log.fired {
            match (log.fault, direction) {
                (Fault::Cut(limit) | Fault::Stall(limit), Direction::ToServer) => {
                    let room = limit.saturating_sub(log.to_server);
                    allowed = n.min(usize::try_from(room).unwrap_or(usize::MAX));
                    fire = log.to_server + allowed as u64 >= limit;
                }
                (Fault::CutAnswer(limit), Direction::ToClient) => {
                    let room = limit.saturating_sub(log.to_client);
                    allowed = n.min(usize::try_from(room).unwrap_or(usize::MAX));
                    fire = log.to_client + allowed as u64 >= limit;
                }
                (Fault::LoseAnswer(limit), Direction::ToClient) if log.to_server >= limit => {
                    allowed = 0;
                    fire = true;
                }
                _ => {}
            }
        }
        match direction {
            Direction::ToServer => log.to_server += allowed as u64,
            Direction::ToClient if allowed > 0 => {
                log.to_client += allowed as u64;
                let reply = Reply {
                    end: log.to_client,
                    sent: log.to_server,
                };
                log.replies.push(reply);
            }
            Direction::ToClient => {}
        }
        (allowed, fire)
    }

    /// Fires the connection's fault.
    fn fire(&self) {
        let fault = {
            let mut log = lock(&self.log);
            log.fired = true;
            log.fault
        };
        match fault {
            Fault::Pass
            | Fault::HideSaslPlain
            | Fault::Greet(_)
            | Fault::Trickle(_)
            | Fault::Replace(..) => {}
            Fault::Cut(_) | Fault::CutAnswer(_) | Fault::LoseAnswer(_) => {
                self.cut.store(true, Ordering::SeqCst);
                let _ = self.client.shutdown(Shutdown::Both);
                // The server gets the end of the stream after the bytes already forwarded.
                let _ = self.server.shutdown(Shutdown::Write);
            }
            Fault::Stall(_) => *lock(&self.stalled) = Some(Instant::now()),
        }
    }

    /// What goes on of bytes read in `direction`: unchanged, but for [`Fault::HideSaslPlain`]
    /// and quirks. The rewriter sees the client's bytes before the server does, so it knows
    /// each command before its answer.
    fn rewrite<'b>(&self, direction: Direction, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        if let Some(greeting) = self.forged_greeting(direction) {
            return greeting.into();
        }
        let bytes = match self.replace(direction, bytes) {
            Cow::Borrowed(unchanged) => self.hide_sasl_plain(direction, unchanged),
            replaced => replaced,
        };
        let Some(rewriter) = &self.rewriter else {
            return bytes;
        };
        let mut rewriter = lock(rewriter);
        match direction {
            Direction::ToServer => {
                rewriter.client_sent(&bytes);
                bytes
            }
            Direction::ToClient => rewriter.server_sent(&bytes).into(),
        }
    }

    /// What the quirks' rewriter still holds back once the server's stream has ended.
    fn rewrite_end(&self) -> Vec<u8> {
        self.rewriter
            .as_ref()
            .map(|rewriter| lock(rewriter).finish())
            .unwrap_or_default()
    }

    /// [`Fault::Greet`]'s part of [`Link::rewrite`]: its bytes, the first time the server
    /// sends something.
    fn forged_greeting(&self, direction: Direction) -> Option<&'static [u8]> {
        let mut log = lock(&self.log);
        match log.fault {
            Fault::Greet(greeting) if direction == Direction::ToClient && !log.fired => {
                log.fired = true;
                Some(greeting)
            }
            _ => None,
        }
    }

    /// [`Fault::Replace`]'s part of [`Link::rewrite`].
    fn replace<'b>(&self, direction: Direction, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        let mut log = lock(&self.log);
        let Fault::Replace(from, to) = log.fault else {
            return bytes.into();
        };
        let found = bytes.windows(from.len()).position(|window| window == from);
        match found {
            Some(at) if direction == Direction::ToClient => {
                log.fired = true;
                [&bytes[..at], to, &bytes[at + from.len()..]]
                    .concat()
                    .into()
            }
            _ => bytes.into(),
        }
    }

    /// [`Fault::HideSaslPlain`]'s part of [`Link::rewrite`].
    fn hide_sasl_plain<'b>(&self, direction: Direction, bytes: &'b [u8]) -> Cow<'b, [u8]> {
        let mut log = lock(&self.log);
        if log.fault != Fault::HideSaslPlain {
            return bytes.into();
        }
        match direction {
            Direction::ToServer => {
                let room = KEPT_FROM_CLIENT.saturating_sub(log.from_client.len());
                log.from_client
                    .extend_from_slice(&bytes[..bytes.len().min(room)]);
                bytes.into()
            }
            Direction::ToClient => {
                let text = String::from_utf8_lossy(bytes);
                if !text.contains("PLAIN") {
                    return bytes.into();
                }
                text.replace(" AUTH=PLAIN", "")
                    .replace("SASL PLAIN", "SASL")
                    .into_bytes()
                    .into()
            }
        }
    }

    /// With [`Fault::Trickle`], the pause before each byte the server sends (the fault counts
    /// as fired once it has slowed one).
    fn trickle(&self, direction: Direction) -> Option<Duration> {
        let mut log = lock(&self.log);
        match log.fault {
            Fault::Trickle(pause) if direction == Direction::ToClient => {
                log.fired = true;
                Some(pause)
            }
            _ => None,
        }
    }

    fn stalled_since(&self) -> Option<Instant> {
        *lock(&self.stalled)
    }

    fn shut_down(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

/// Forwards one direction of a connection until either side ends it, a fault ends it, or the
/// relay stops.
fn pump(link: &Link, direction: Direction, shared: &Shared) {
    let (mut from, mut to) = match direction {
        Direction::ToServer => (&link.client, &link.server),
        Direction::ToClient => (&link.server, &link.client),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut cut_at = None;
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            link.shut_down();
            return;
        }
        if let Some(since) = link.stalled_since() {
            if since.elapsed() >= MAX_STALL {
                link.shut_down();
                return;
            }
            thread::sleep(POLL);
            continue;
        }
        if link.cut.load(Ordering::SeqCst) {
            // The client is gone. The server's side is read to its end and dropped; the
            // client's side has nothing more to give.
            if direction == Direction::ToServer {
                return;
            }
            let since = *cut_at.get_or_insert_with(Instant::now);
            match from.read(&mut buf) {
                Ok(0) => return,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return,
            }
            if since.elapsed() >= DRAIN_LIMIT {
                link.shut_down();
                return;
            }
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => {
                // An orderly end in one direction is passed on as such, after anything the
                // quirks held back.
                if direction == Direction::ToClient {
                    let _ = to.write_all(&link.rewrite_end());
                }
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => {
                link.shut_down();
                return;
            }
        };
        if link.stalled_since().is_some() || link.cut.load(Ordering::SeqCst) {
            // The fault fired while this read waited: these bytes are not forwarded.
            continue;
        }
        let (allowed, fire) = link.admit(direction, n);
        let forwarded = link.rewrite(direction, &buf[..allowed]);
        let written = match link.trickle(direction) {
            Some(pause) => forwarded.iter().try_for_each(|byte| {
                thread::sleep(pause);
                if shared.stop.load(Ordering::SeqCst) {
                    return Err(ErrorKind::Interrupted.into());
                }
                to.write_all(&[*byte])
            }),
            None => to.write_all(&forwarded),
        };
        if written.is_err() {
            link.shut_down();
            return;
        }
        if fire {
            link.fire();
        }
    }
}
