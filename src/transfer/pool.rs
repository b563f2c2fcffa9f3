//! Where the engine gets its connections: target connections shared by the upload workers,
//! and the way to open source connections.

use std::sync::Mutex;

use crate::error::Error;
use crate::store::{Source, Target};

/// Opens a new, logged-in target connection.
pub type TargetConnector<'a> = dyn Fn() -> Result<Box<dyn Target>, Error> + Sync + 'a;

/// Where upload workers get their target connections: one left idle by an earlier folder's
/// worker when there is one, else a new one. Over a slow link a login costs
/// several round trips, so a copy of many folders logs in about `connections` times, not once
/// per folder. An idle connection the server closed meanwhile breaks at its first use and is
/// replaced as any broken connection is.
pub struct TargetPool<'a> {
    connect: &'a TargetConnector<'a>,
    idle: Mutex<Vec<Box<dyn Target>>>,
}

impl<'a> TargetPool<'a> {
    /// A pool that opens connections with `connect`, none idle yet.
    pub fn new(connect: &'a TargetConnector<'a>) -> Self {
        TargetPool {
            connect,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Opens a new connection.
    pub fn connect(&self) -> Result<Box<dyn Target>, Error> {
        (self.connect)()
    }

    /// Leaves a connection for the next worker (or the caller) to take.
    pub fn put(&self, target: Box<dyn Target>) {
        self.idle.lock().unwrap().push(target);
    }

    /// Takes an idle connection, if there is one.
    pub fn take(&self) -> Option<Box<dyn Target>> {
        self.idle.lock().unwrap().pop()
    }
}

/// Opens a new, logged-in source connection; called once per folder lane but the first.
pub type SourceConnector<'a> = dyn Fn() -> Result<Box<dyn Source>, Error> + Sync + 'a;
