//! mailferry: move mail between servers.

pub mod error;
pub mod net;
pub mod header;
pub mod identity;
pub mod endpoint;
pub mod index;
pub mod plan;
pub mod progress;
pub mod report;
pub mod transfer;
pub mod cli;
pub mod migrate;
pub mod session;
pub mod source;
pub mod target;
pub mod verify;
