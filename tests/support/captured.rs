//! A protocol trace kept in memory, for tests that check what mailferry sent.

use std::io::Write;
use std::sync::{Arc, Mutex};

/// The trace (`Trace::to_writer`'s writer), shared by its clones.
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// How many commands sent contain `text`.
    pub fn commands_with(&self, text: &str) -> usize {
        let trace = String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned();
        trace
            .lines()
            .filter(|line| line.contains(" C: ") && line.contains(text))
            .count()
    }
}
