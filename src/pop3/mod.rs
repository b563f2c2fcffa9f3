//! POP3 source (RFC 1939, with RFC 2449 CAPA/PIPELINING/RESP-CODES, RFC 2595 STLS and
//! RFC 5034 AUTH PLAIN).
//!
//! Split as sans-I/O: [`codec`] knows the wire format and never touches a socket, so every
//! edge case (a `.` line, a response cut across reads) is a unit test with bytes in it;
//! [`Pop3Client`] is the small blocking driver over a [`Connection`](crate::net::Connection).
//! We write our own because every POP3 crate corrupts mail (dot-stuffing left in, 8-bit bytes
//! replaced, CRLF rewritten) or cannot handle large messages.

mod client;
pub mod codec;

pub use client::{FetchError, Listing, MAX_HEADER_SIZE, Pop3Client};
