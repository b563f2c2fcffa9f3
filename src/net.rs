//! TCP and TLS in one [`Connection`]: implicit TLS, the STARTTLS/STLS upgrade, I/O timeouts and
//! the three ways of trusting a server certificate (system roots, a `--tls-ca` file, or none
//! with `--tls-insecure`).
//!
//! A `--tls-ca` file holds CA certificates, which keep every webpki check, or the exact
//! certificate a server presents, which is trusted whatever its names and dates say (see
//! [`pinned`]).

mod pinned;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, StreamOwned};

use self::pinned::{PinningVerifier, Pins};

use crate::error::SessionError;
use crate::trace::{ConnectionTrace, Trace};

/// How a connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS from the first byte (`pop3s://`, `imaps://`).
    Implicit,
    /// Plain connect, then STLS / STARTTLS, which the server must offer.
    StartTls,
    /// Plain connect, then STLS / STARTTLS if the server offers it, else on in plaintext on
    /// the same connection; only when the user passed `--allow-plaintext`.
    StartTlsIfOffered,
    /// No TLS at all; only when the user passed `--allow-plaintext` and the server offers none.
    Plain,
}

/// How server certificates are checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TlsTrust {
    /// The system's root certificates (falling back to the Mozilla set when there are none).
    #[default]
    System,
    /// Trust the certificates in this PEM file, as CA roots or as pinned server certificates.
    CaFile(PathBuf),
    /// Accept any certificate (`--tls-insecure`).
    Insecure,
}

/// A TLS client configuration, built once per job and shared by every connection.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
    /// The `--tls-ca` certificates, to warn after a handshake about a pinned one.
    pins: Option<Arc<Pins>>,
}

impl TlsConfig {
    /// Builds the configuration for a trust choice. Fails when a `--tls-ca` file cannot be read.
    pub fn new(trust: &TlsTrust) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let (config, pins) = match trust {
            TlsTrust::System => (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(SystemRootsVerifier {
                        provider,
                        webpki: OnceLock::new(),
                    }))
                    .with_no_client_auth(),
                None,
            ),
            TlsTrust::CaFile(path) => {
                let certs = read_pem_certificates(path)?;
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(certs.iter().cloned());
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                let pins = Arc::new(Pins::new(certs));
                let verifier = PinningVerifier {
                    webpki,
                    pins: pins.clone(),
                };
                let config = builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(verifier))
                    .with_no_client_auth();
                (config, Some(pins))
            }
            TlsTrust::Insecure => (
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                    .with_no_client_auth(),
                None,
            ),
        };
        Ok(TlsConfig {
            config: Arc::new(config),
            pins,
        })
    }
}

/// The system's CA certificates, read once per process: reading them opens and parses every
/// file of the system's certificate directory, which a batch would otherwise do per account.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    Arc::clone(ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if roots.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        Arc::new(roots)
    }))
}

/// Every webpki check against the system's roots, read at the first certificate to check: a
/// run in plaintext never reads them (they cost a good part of a quick run's start).
#[derive(Debug)]
struct SystemRootsVerifier {
    provider: Arc<rustls::crypto::CryptoProvider>,
    webpki: OnceLock<Result<Arc<WebPkiServerVerifier>, rustls::Error>>,
}

impl SystemRootsVerifier {
    fn webpki(&self) -> Result<&WebPkiServerVerifier, rustls::Error> {
        let built = self.webpki.get_or_init(|| {
            WebPkiServerVerifier::builder_with_provider(system_roots(), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))
        });
        built.as_deref().map_err(Clone::clone)
    }
}

impl ServerCertVerifier for SystemRootsVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.webpki()?
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki()?.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki()?.verify_tls13_signature(message, cert, dss)
    }

    /// Asked before any certificate arrives: from the provider, as webpki answers it.
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn read_pem_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read certificates from {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// `--tls-insecure`: any certificate, but the handshake signatures are still checked so the
/// session keys belong to whoever holds that certificate.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The byte stream under a connection: plain TCP, or TLS over TCP.
enum Stream {
    Plain(TimedSocket),
    Tls(Box<StreamOwned<ClientConnection, TimedSocket>>),
}

impl Stream {
    fn socket(&mut self) -> &mut TimedSocket {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(stream) => stream.get_mut(),
        }
    }

    fn socket_ref(&self) -> &TimedSocket {
        match self {
            Stream::Plain(socket) => socket,
            Stream::Tls(stream) => stream.get_ref(),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) if s.sock.write_failed => read_tls_without_writing(s, buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

/// Reads what the server sent, never writing: rustls's own `read` first sends what it still
/// holds to send, which fails again (or blocks) once a write has failed, so the server's last
/// words (a BYE) would never be read.
fn read_tls_without_writing(
    tls: &mut StreamOwned<ClientConnection, TimedSocket>,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        match tls.conn.reader().read(buf) {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        if tls.conn.read_tls(&mut tls.sock)? == 0 {
            return Ok(0);
        }
        tls.conn
            .process_new_packets()
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// What a server must send within one timeout's worth of waiting, unless its answer ends
/// first (the client then writes its next command, which starts the count afresh).
const PROGRESS_BYTES: usize = 64 * 1024;

/// A socket whose reads share one time budget. A per-read timeout alone lets a server that
/// sends a byte just before each timeout hold a connection (and the run) forever; here the
/// time spent waiting for the server adds up, from the last bytes sent or the last
/// [`PROGRESS_BYTES`] received, and the read that would exceed the timeout fails. Only time
/// spent in a read counts: a client busy elsewhere (uploading what it read) is not the
/// server's fault. Under TLS it counts the socket's reads, which a trickled record is made of.
struct TimedSocket {
    tcp: TcpStream,
    timeout: Duration,
    waited: Duration,
    received: usize,
    /// Set by [`Connection::stop_writing`]: writes fail at once, and what the server sends no
    /// longer buys more time.
    write_failed: bool,
}

impl TimedSocket {
    fn new(tcp: TcpStream, timeout: Duration) -> Self {
        TimedSocket {
            tcp,
            timeout,
            waited: Duration::ZERO,
            received: 0,
            write_failed: false,
        }
    }

    fn restart(&mut self) {
        self.waited = Duration::ZERO;
        self.received = 0;
    }
}

impl Read for TimedSocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.timeout.saturating_sub(self.waited);
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the server sent too little within the timeout",
            ));
        }
        self.tcp.set_read_timeout(Some(left))?;
        let started = Instant::now();
        let result = self.tcp.read(buf);
        self.waited += started.elapsed();
        if let Ok(n) = result {
            self.received += n;
            if self.received >= PROGRESS_BYTES && !self.write_failed {
                self.restart();
            }
        }
        result
    }
}

impl Write for TimedSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.write_failed {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "a write on this connection failed already",
            ));
        }
        self.restart();
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// Where to connect and how long to wait for the server.
#[derive(Debug, Clone)]
pub struct Address {
    /// Host name or IP address, as the user wrote it (also the TLS server name).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Connect, read and write timeout; also bounds the name lookup, the TLS handshake and
    /// the wait for each answer as a whole (see [`Connection`]).
    pub timeout: Duration,
    /// The protocol trace (`-v`…`-vvv`); off by default.
    pub trace: Trace,
}

/// One connection to a server: buffered reads ([`BufRead`]) and unbuffered writes ([`Write`]),
/// so callers batch what they pipeline into one `write_all`. The server has the timeout to
/// answer each command in all, counting only the time spent waiting for it, and again for
/// every 64 KiB it sends; a TLS handshake has the timeout in all.
pub struct Connection {
    reader: BufReader<Stream>,
    trace: ConnectionTrace,
}

/// Read buffer size: large enough that a bulk FETCH or RETR reads in big chunks.
const READ_BUFFER: usize = 256 * 1024;

impl Connection {
    /// Opens a plain TCP connection.
    pub fn connect_plain(address: &Address) -> Result<Self, SessionError> {
        let trace = address.trace.connection(&address.host, address.port);
        let tcp = open_tcp(address)?;
        trace.event("connected, no TLS yet");
        let socket = TimedSocket::new(tcp, address.timeout);
        Ok(Self::wrap(Stream::Plain(socket), trace))
    }

    /// Opens a TCP connection and starts TLS at once (implicit TLS: imaps, pop3s).
    pub fn connect_tls(address: &Address, tls: &TlsConfig) -> Result<Self, SessionError> {
        let trace = address.trace.connection(&address.host, address.port);
        let socket = TimedSocket::new(open_tcp(address)?, address.timeout);
        let stream = handshake(socket, &address.host, tls)?;
        trace.event(&format!("connected, {}", tls_description(&stream)));
        Ok(Self::wrap(Stream::Tls(stream), trace))
    }

    /// Upgrades a plain connection to TLS after the server agreed to STARTTLS / STLS.
    pub fn start_tls(self, host: &str, tls: &TlsConfig) -> Result<Self, SessionError> {
        if !self.reader.buffer().is_empty() {
            // Bytes the server sent before the handshake would be read as if they were
            // protected by TLS: a known injection attack (CVE-2011-0411 and kin).
            return Err(SessionError::Protocol(
                "the server sent data after agreeing to start TLS".into(),
            ));
        }
        match self.reader.into_inner() {
            Stream::Plain(socket) => {
                let stream = handshake(socket, host, tls)?;
                self.trace
                    .event(&format!("upgraded to {}", tls_description(&stream)));
                Ok(Self::wrap(Stream::Tls(stream), self.trace))
            }
            Stream::Tls(_) => Err(SessionError::Protocol("TLS is already active".into())),
        }
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        matches!(self.reader.get_ref(), Stream::Tls(_))
    }

    /// The connection's protocol trace, for the client speaking over it.
    pub fn trace(&self) -> &ConnectionTrace {
        &self.trace
    }

    /// The read and write timeout.
    pub fn timeout(&self) -> Duration {
        self.reader.get_ref().socket_ref().timeout
    }

    /// Sets the read and write timeout: a goodbye (LOGOUT, QUIT) gets a short one, so a
    /// server slow to answer it does not hold up the end of a run.
    pub fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        let socket = self.reader.get_mut().socket();
        socket.timeout = timeout;
        socket.restart();
        socket.tcp.set_write_timeout(Some(timeout))
    }

    /// After a write failed: from now on every write fails at once, and reads take only what
    /// the server sent, within `within` in all, without trying to send what is still
    /// unsent. A server often says why it ends a session (an IMAP BYE) just before closing,
    /// and the write that found it closed went before that was read. Returns false when
    /// writing had stopped already: what was left to read has been read.
    pub fn stop_writing(&mut self, within: Duration) -> bool {
        let socket = self.reader.get_mut().socket();
        if socket.write_failed {
            return false;
        }
        socket.write_failed = true;
        socket.timeout = within;
        socket.restart();
        true
    }

    fn wrap(stream: Stream, trace: ConnectionTrace) -> Self {
        Connection {
            reader: BufReader::with_capacity(READ_BUFFER, stream),
            trace,
        }
    }
}

impl Read for Connection {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.reader.read(buf)
    }
}

impl BufRead for Connection {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.reader.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        self.reader.consume(amount)
    }
}

impl Write for Connection {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.reader.get_mut().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.reader.get_mut().flush()
    }
}

fn open_tcp(address: &Address) -> Result<TcpStream, SessionError> {
    // RFC 6761 §6.4: name resolution libraries should answer names under `.invalid` with an
    // immediate negative response. The system resolver may instead ask DNS (and wait on it);
    // answering here also lets a test exercise the unknown-host path without leaving loopback.
    if is_under_invalid(&address.host) {
        return Err(SessionError::Resolve(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} does not exist (names under .invalid never do, RFC 6761)",
                address.host
            ),
        )));
    }
    let addrs = resolve(&address.host, address.port, address.timeout)?;
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "no address for the host");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, address.timeout) {
            Ok(tcp) => {
                tcp.set_read_timeout(Some(address.timeout))
                    .and_then(|()| tcp.set_write_timeout(Some(address.timeout)))
                    .and_then(|()| tcp.set_nodelay(true))
                    .map_err(SessionError::Connect)?;
                return Ok(tcp);
            }
            Err(err) => last_error = err,
        }
    }
    Err(SessionError::Connect(last_error))
}

/// Looks the host up, giving up after `timeout`: the system resolver's own retries can take
/// far longer. The lookup cannot be cancelled; on a timeout its thread is left to finish
/// alone, its answer dropped.
fn resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, SessionError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (answer, lookup) = crossbeam_channel::bounded(1);
    let name = host.to_owned();
    std::thread::spawn(move || {
        let _ = answer.send(
            (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>),
        );
    });
    match lookup.recv_timeout(timeout) {
        Ok(found) => found.map_err(SessionError::Resolve),
        Err(_) => Err(SessionError::Resolve(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer for {host} within {} s", timeout.as_secs()),
        ))),
    }
}

/// Whether `host` is `invalid` or a name under it (any case, with or without the final dot).
fn is_under_invalid(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    host == "invalid" || host.ends_with(".invalid")
}

/// The negotiated protocol version, e.g. `TLSv1_3`, for the trace.
fn tls_description(stream: &StreamOwned<ClientConnection, TimedSocket>) -> String {
    match stream.conn.protocol_version() {
        Some(version) => format!("{version:?}"),
        None => "TLS".into(),
    }
}

/// Runs the TLS handshake to its end, over a [`TimedSocket`]: a server trickling its part
/// of the handshake runs out of time as it would answering a command.
fn handshake(
    mut socket: TimedSocket,
    host: &str,
    tls: &TlsConfig,
) -> Result<Box<StreamOwned<ClientConnection, TimedSocket>>, SessionError> {
    let name = ServerName::try_from(host.to_owned())
        .map_err(|e| SessionError::Tls(format!("{host} is not a valid server name: {e}")))?;
    let mut session = ClientConnection::new(tls.config.clone(), name)
        .map_err(|e| SessionError::Tls(e.to_string()))?;
    // Drive the handshake to its end here, so a certificate problem surfaces as a TLS error
    // on connect rather than as a strange failure of the first command.
    while session.is_handshaking() {
        session
            .complete_io(&mut socket)
            .map_err(|err| match SessionError::from(err) {
                // Ended, not refused: a certificate hint would send the user astray.
                SessionError::Closed => SessionError::HandshakeCut,
                SessionError::Io(err) if err.kind() == io::ErrorKind::InvalidData => {
                    SessionError::Tls(err.to_string())
                }
                other => other,
            })?;
    }
    if let Some(pins) = &tls.pins {
        pins.warn_once(host, session.peer_certificates());
    }
    Ok(Box::new(StreamOwned::new(session, socket)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_certificates_are_read_once_per_process() {
        // Every account of a batch builds its TLS settings; the store must be the same one.
        assert!(Arc::ptr_eq(&system_roots(), &system_roots()));
    }

    #[test]
    fn names_under_invalid_fail_without_a_lookup() {
        for host in ["nohost.invalid", "a.b.INVALID.", "invalid"] {
            assert!(is_under_invalid(host), "{host}");
        }
        for host in ["invalid.example", "xinvalid", "127.0.0.1", "[::1]"] {
            assert!(!is_under_invalid(host), "{host}");
        }
        let address = Address {
            host: "nohost.invalid".into(),
            port: 143,
            timeout: Duration::from_secs(1),
            trace: Trace::default(),
        };
        let err = open_tcp(&address).unwrap_err();
        assert!(matches!(err, SessionError::Resolve(_)), "{err}");
        assert!(
            err.to_string().contains("nohost.invalid does not exist"),
            "{err}"
        );
    }
}
