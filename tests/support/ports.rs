//! Free loopback ports, for servers the tests start and for "connection refused" cases.

use std::net::{Ipv4Addr, TcpListener};

/// A loopback port where nothing listens, for "connection refused" tests.
pub fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// Distinct free ports: all are held at once while picking, so the kernel cannot hand out
/// one twice.
pub(super) fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("local_addr").port())
}
