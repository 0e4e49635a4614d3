//! The table run's in-memory adapters: a Snowflake table of (key, note)
//! rows ([`MemoryTable`], its snapshot and join delete) and a Postgres
//! target ([`MemoryTarget`]), and the run over them ([`replicator`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use uuid::Uuid;

use super::{MemoryQueue, MemoryStore};
use crate::config::RunLimits;
use crate::deadline::Deadline;
use crate::failure::{ErrorKind, SourceError, WriteError};
use crate::model::value::{EncodedPage, TablePage, Value};
use crate::ports::{
    IdMatch, RowNumbers, SinkOutcome, TableSink, TableSnapshot, TableSource, WriteLimits,
};
use crate::retry::Backoff;
use crate::table_run::TableReplicator;

/// Rows of (key, note).
type Rows = Arc<Mutex<Vec<(Option<i64>, String)>>>;

/// A table in memory; the snapshot is its rows sorted, and a delete takes
/// every live row equal to a chosen snapshot row, as the join does.
#[derive(Clone, Default)]
pub struct MemoryTable {
    pub rows: Rows,
    /// Reads fail: the snapshot went with its session (true), or Snowflake
    /// refuses them (false).
    pub read_fails: Arc<Mutex<Option<bool>>>,
    /// Snowflake goes down after this many more deletes.
    pub deletes_left: Arc<Mutex<Option<usize>>>,
}

struct MemoryTableSnapshot {
    table: MemoryTable,
    frozen: Vec<(Option<i64>, String)>,
}

pub fn cells(row: &(Option<i64>, String)) -> Vec<Result<Value, String>> {
    let note = if row.1 == "unreadable" {
        Err("column NOTE: unreadable".to_string())
    } else {
        Ok(Value::Text(row.1.as_str().into()))
    };
    vec![Ok(row.0.map_or(Value::Null, Value::Int)), note]
}

#[async_trait]
impl TableSource for MemoryTable {
    async fn count_rows(&self, _: Uuid, _: &Deadline) -> Result<u64, SourceError> {
        tokio::task::yield_now().await;
        Ok(self.rows.lock().unwrap().len() as u64)
    }
    async fn snapshot(
        &self,
        _: Uuid,
        limit: usize,
        _: &Deadline,
    ) -> Result<Box<dyn TableSnapshot + '_>, SourceError> {
        tokio::task::yield_now().await;
        let mut frozen = self.rows.lock().unwrap().clone();
        frozen.sort_by(|a, b| (a.0.is_none(), a.0, &a.1).cmp(&(b.0.is_none(), b.0, &b.1)));
        frozen.truncate(limit);
        Ok(Box::new(MemoryTableSnapshot {
            table: self.clone(),
            frozen,
        }))
    }
    fn statements_sent(&self) -> usize {
        0
    }
}

#[async_trait]
impl TableSnapshot for MemoryTableSnapshot {
    async fn read(&self, numbers: RowNumbers) -> Result<Box<dyn EncodedPage>, SourceError> {
        tokio::task::yield_now().await;
        match *self.table.read_fails.lock().unwrap() {
            Some(true) => {
                return Err(SourceError::SnapshotLost {
                    operation: "read",
                    detail: "the session ended".into(),
                })
            }
            Some(false) => {
                return Err(SourceError::Refused {
                    operation: "read",
                    detail: "insufficient privileges".into(),
                })
            }
            None => {}
        }
        let mut page = TablePage::new(*numbers.start(), 2, 0);
        for n in numbers {
            let Some(row) = usize::try_from(n - 1).ok().and_then(|i| self.frozen.get(i)) else {
                break;
            };
            page.push_row(cells(row));
        }
        Ok(Box::new(page))
    }
    async fn delete(&self, safe: &[RowNumbers], keys: IdMatch) -> Result<u64, SourceError> {
        tokio::task::yield_now().await;
        if let Some(left) = self.table.deletes_left.lock().unwrap().as_mut() {
            if *left == 0 {
                return Err(SourceError::Unreachable {
                    operation: "delete",
                    detail: "connection reset".into(),
                });
            }
            *left -= 1;
        }
        let chosen: Vec<&(Option<i64>, String)> = safe
            .iter()
            .flat_map(|r| r.clone())
            .filter_map(|n| self.frozen.get(usize::try_from(n - 1).ok()?))
            .filter(|row| (keys == IdMatch::BothNull) == row.0.is_none())
            .collect();
        let mut rows = self.table.rows.lock().unwrap();
        let before = rows.len();
        rows.retain(|row| !chosen.contains(&row));
        Ok((before - rows.len()) as u64)
    }
    async fn drop_snapshot(&self) -> Result<(), SourceError> {
        Ok(())
    }
}

/// Postgres in memory: refuses notes equal to "refused" (a CHECK); upserts
/// by the key (the first value), recording each change it makes (an upsert
/// that changes nothing records nothing, as the staged upsert).
#[derive(Clone, Default)]
pub struct MemoryTarget {
    pub current: Arc<Mutex<Vec<Vec<Value>>>>,
    pub changes: Arc<Mutex<Vec<Vec<Value>>>>,
    pub down: Arc<Mutex<bool>>,
    /// Each write takes this long (a deadline can pass mid-run).
    pub delay: Arc<Mutex<Option<Duration>>>,
    /// What `target_drift` says (a changed target table).
    pub drift: Arc<Mutex<Option<String>>>,
}

#[async_trait]
impl TableSink for MemoryTarget {
    async fn write(&self, rows: &[&[Value]], _: WriteLimits, _: &Deadline) -> SinkOutcome {
        tokio::task::yield_now().await;
        let delay = *self.delay.lock().unwrap();
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let mut outcome = SinkOutcome::default();
        if *self.down.lock().unwrap() {
            outcome.deferred = (0..rows.len()).collect();
            outcome.stop = Some(crate::failure::SinkError::Postgres(WriteError::transient(
                "down",
            )));
            return outcome;
        }
        for (i, row) in rows.iter().enumerate() {
            if row[1] == Value::Text("refused".into()) || row[1] == Value::Text("ZZZ".into()) {
                outcome.rejected.push((
                    i,
                    WriteError {
                        kind: ErrorKind::RowLevel,
                        sqlstate: Some("23514".into()),
                        message: "violates check constraint".into(),
                    },
                ));
            } else {
                let mut current = self.current.lock().unwrap();
                let held = current.iter().position(|r| r[0] == row[0]);
                if held.is_none_or(|k| current[k] != *row) {
                    current.retain(|r| r[0] != row[0]);
                    current.push(row.to_vec());
                    self.changes.lock().unwrap().push(row.to_vec());
                    outcome.changed += 1;
                }
                outcome.written.push(i);
            }
        }
        outcome
    }

    async fn target_drift(&self, _: &Deadline) -> Option<String> {
        self.drift.lock().unwrap().clone()
    }
}

pub fn replicator(
    table: &MemoryTable,
    target: &MemoryTarget,
    queue: &MemoryQueue,
) -> TableReplicator {
    TableReplicator {
        name: "notes".into(),
        columns: vec!["ID".into(), "NOTE".into()],
        targets: vec!["id".into(), "note".into()],
        key_positions: vec![0],
        rules: crate::model::rules::BoundRules::default(),
        source: Box::new(table.clone()),
        guard: Box::new(MemoryStore::default()),
        sink: Box::new(target.clone()),
        queue: Box::new(queue.clone()),
        limits: RunLimits {
            page_rows: 3,
            batch_size: 2,
            ..RunLimits::default()
        },
        backoff: Backoff::ZERO,
    }
}

/// An empty table, target and queue.
pub fn services() -> (MemoryTable, MemoryTarget, MemoryQueue) {
    Default::default()
}

pub fn load(table: &MemoryTable, rows: &[(Option<i64>, &str)]) {
    table
        .rows
        .lock()
        .unwrap()
        .extend(rows.iter().map(|(k, n)| (*k, n.to_string())));
}
