//! mailferry
