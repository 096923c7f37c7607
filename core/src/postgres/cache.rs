//! The prepared-statement cache: one named statement per (SQL, parameter types), kept
//! on the server and reused, the least recently used closed to make room.

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use super::row::Column;

/// How a query names its statement.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Prepared {
    /// Already prepared (or being prepared by a query ahead in the pipeline): Bind
    /// only.
    Cached(Arc<str>),
    /// Prepare it under this name first (Parse, Describe), then Bind.
    New(Arc<str>),
    /// The cache is full of statements in use, or disabled: use the unnamed statement.
    Unnamed,
}

/// What [`StatementCache::prepare`] decided.
pub(crate) struct Lookup {
    /// How the query names its statement.
    pub(crate) prepared: Prepared,
    /// A statement to close first, to make room.
    pub(crate) evicted: Option<Arc<str>>,
    /// The result columns, when already described.
    pub(crate) columns: Option<Arc<[Column]>>,
}

impl Lookup {
    const UNNAMED: Lookup = Lookup {
        prepared: Prepared::Unnamed,
        evicted: None,
        columns: None,
    };
}

/// Names of one SQL text's statements, by parameter types.
type ByTypes = Vec<(Box<[u32]>, Arc<str>)>;

struct Entry {
    sql: Box<str>,
    columns: Option<Arc<[Column]>>,
    in_use: usize,
    last_used: u64,
}

/// Statements by name, and their names by SQL then parameter types (so a hit
/// allocates nothing).
pub(crate) struct StatementCache {
    by_name: HashMap<Arc<str>, Entry>,
    by_sql: HashMap<Box<str>, ByTypes>,
    capacity: usize,
    next_name: u64,
    clock: u64,
}

impl StatementCache {
    pub(crate) fn new(capacity: usize) -> StatementCache {
        StatementCache {
            by_name: HashMap::default(),
            by_sql: HashMap::default(),
            capacity,
            next_name: 0,
            clock: 0,
        }
    }

    /// The statement for `sql` with `types`; a statement to close first (evicted)
    /// when a new one needs room; the result columns when already described.
    pub(crate) fn prepare(&mut self, sql: &str, types: &[u32]) -> Lookup {
        if let Some(hit) = self.hit(sql, types) {
            return hit;
        }
        let clock = self.clock;
        if self.capacity == 0 {
            return Lookup::UNNAMED;
        }
        let mut evicted = None;
        if self.by_name.len() >= self.capacity {
            let victim = self
                .by_name
                .iter()
                .filter(|(_, e)| e.in_use == 0 && e.columns.is_some())
                .min_by_key(|(_, e)| e.last_used)
                .map(|(name, _)| name.clone());
            match victim {
                Some(name) => {
                    self.forget(&name);
                    evicted = Some(name);
                }
                None => return Lookup::UNNAMED,
            }
        }
        self.next_name += 1;
        let name: Arc<str> = format!("effectful_s{}", self.next_name).into();
        self.by_name.insert(
            name.clone(),
            Entry {
                sql: sql.into(),
                columns: None,
                in_use: 1,
                last_used: clock,
            },
        );
        self.by_sql
            .entry(sql.into())
            .or_default()
            .push((types.into(), name.clone()));
        Lookup {
            prepared: Prepared::New(name),
            evicted,
            columns: None,
        }
    }

    /// The statement for `sql` with `types` if it is cached (counted as in use, as
    /// [`prepare`](Self::prepare) counts it); `None` leaves the cache as it was, but
    /// for its clock.
    pub(crate) fn hit(&mut self, sql: &str, types: &[u32]) -> Option<Lookup> {
        self.clock += 1;
        let clock = self.clock;
        let name = self
            .by_sql
            .get(sql)
            .and_then(|v| v.iter().find(|(t, _)| **t == *types))
            .map(|(_, name)| name.clone())?;
        let entry = self.by_name.get_mut(&name)?;
        entry.in_use += 1;
        entry.last_used = clock;
        Some(Lookup {
            prepared: Prepared::Cached(name),
            evicted: None,
            columns: entry.columns.clone(),
        })
    }

    /// The statement's result columns, once described.
    pub(crate) fn columns(&self, name: &str) -> Option<Arc<[Column]>> {
        self.by_name.get(name).and_then(|e| e.columns.clone())
    }

    /// Records the description of a newly prepared statement.
    pub(crate) fn described(&mut self, name: &str, columns: Arc<[Column]>) {
        if let Some(e) = self.by_name.get_mut(name) {
            e.columns = Some(columns);
        }
    }

    /// A query using `name` is done.
    pub(crate) fn release(&mut self, name: &str) {
        if let Some(e) = self.by_name.get_mut(name) {
            e.in_use = e.in_use.saturating_sub(1);
        }
    }

    /// The server refused to prepare `name`, or it was evicted: forget it.
    pub(crate) fn forget(&mut self, name: &str) {
        if let Some(entry) = self.by_name.remove(name) {
            if let Some(list) = self.by_sql.get_mut(&entry.sql) {
                list.retain(|(_, n)| &**n != name);
                if list.is_empty() {
                    self.by_sql.remove(&entry.sql);
                }
            }
        }
    }

    /// The server dropped every prepared statement (`DISCARD ALL`, `DEALLOCATE ALL`).
    pub(crate) fn clear(&mut self) {
        self.by_name.clear();
        self.by_sql.clear();
    }

    /// How many statements are cached.
    pub(crate) fn len(&self) -> usize {
        self.by_name.len()
    }
}
