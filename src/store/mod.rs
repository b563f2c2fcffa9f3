//! Mail stores on local disk. (The servers' stores sit in `source` and `target` for now.)

pub mod maildir;
pub mod mbox;
