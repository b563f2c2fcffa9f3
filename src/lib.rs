//! mailferry: move mail between servers.

pub mod error;
pub mod net;
pub mod header;
pub mod identity;
pub mod endpoint;
pub mod index;
pub mod plan;
