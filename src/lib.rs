//! mailferry: move mail between servers and local stores.
//!
//! Data flows one way: a source's index and a target's index (read through the [`store`]
//! layer) go into the [`plan`]ner; the plan goes to the [`transfer`] engine; the target is
//! checked by [`verify`]; everything ends in a [`report`]. The stores import nothing above
//! them; protocol clients ([`pop3`], [`imap`]) know nothing of plans, and the planner touches
//! no socket.

pub mod altered;
pub mod auth;
pub mod batch;
pub mod cli;
pub mod deletion;
pub mod endpoint;
pub mod error;
pub mod folders;
pub mod header;
pub mod identity;
pub mod imap;
pub mod index;
pub mod metrics;
pub mod migrate;
pub mod mirror;
pub mod net;
pub mod parallel;
pub mod plan;
pub mod pop3;
pub mod preflight;
pub mod preset;
pub mod private_file;
pub mod progress;
pub mod report;

pub mod state;
pub mod store;

pub mod trace;
pub mod transfer;
pub mod uidl_keeping;
pub mod verify;
