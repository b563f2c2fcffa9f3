//! mailferry: move mail between servers.

pub mod error;
pub mod net;
