//! Publishing tables to the proxy: one writer, any number of readers.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::{ArcSwap, Guard};

use crate::Table;

/// The writing side: holds the table being served and replaces it atomically. Not `Clone`, so
/// there is one writer.
pub struct TableStore {
    shared: Arc<Shared>,
}

/// A reading side, cheap to clone: each request loads the current table once.
#[derive(Clone)]
pub struct TableReader {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<Table>,
    ready: AtomicBool,
}

impl TableStore {
    /// A store serving `initial` (usually an empty table) and not yet ready.
    pub fn new(initial: Table) -> Self {
        let shared = Shared { current: ArcSwap::from_pointee(initial), ready: AtomicBool::new(false) };
        Self { shared: Arc::new(shared) }
    }

    pub fn reader(&self) -> TableReader {
        TableReader { shared: self.shared.clone() }
    }

    /// The table being served.
    pub fn current(&self) -> Arc<Table> {
        self.shared.current.load_full()
    }

    /// Serves `table` from now on. Requests in progress keep the table they loaded. The first
    /// publish makes the store ready.
    pub fn publish(&self, table: Arc<Table>) {
        self.shared.current.store(table);
        self.shared.ready.store(true, Ordering::Release);
    }
}

impl TableReader {
    /// The current table. Cheap; do not hold it across an `.await` (clone what you need).
    pub fn load(&self) -> Guard<Arc<Table>> {
        self.shared.current.load()
    }

    /// The current table, as an owned `Arc` (for holding across an `.await`).
    pub fn load_full(&self) -> Arc<Table> {
        self.shared.current.load_full()
    }

    /// Whether a complete table from the source has been published.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire)
    }
}

impl fmt::Debug for TableStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableStore").field("ready", &self.shared.ready.load(Ordering::Relaxed)).finish()
    }
}

impl fmt::Debug for TableReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TableReader").field("ready", &self.is_ready()).finish()
    }
}
