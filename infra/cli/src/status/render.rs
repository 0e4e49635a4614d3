//! `countries status` as one screen of text.

use countries_shared::ledger::SinkKind;

use super::{Health, Part, QueueDepth, Status};

/// The status as one screen of text.
pub fn render(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let verdict = match s.health {
        Health::Healthy => "HEALTHY",
        Health::Degraded => "DEGRADED",
        Health::Down => "DOWN",
    };
    let _ = writeln!(out, "countries replication: {verdict}");
    for reason in &s.reasons {
        let _ = writeln!(out, "  - {reason}");
    }
    let part = |p: &Part<String>| match p {
        Part::Ok(text) => text.clone(),
        Part::Unreachable(why) => format!("UNREACHABLE: {why}"),
        Part::NotConfigured(why) => format!("not configured: {why}"),
    };
    let map = |p: &Part<QueueDepth>| match p {
        Part::Ok(q) => Part::Ok(format!("{} visible, {} in flight", q.visible, q.in_flight)),
        Part::Unreachable(e) => Part::Unreachable(e.clone()),
        Part::NotConfigured(e) => Part::NotConfigured(e.clone()),
    };
    let backlog = match &s.snowflake_backlog {
        Part::Ok(n) => Part::Ok(format!("{n} rows waiting in the source table")),
        Part::Unreachable(e) => Part::Unreachable(e.clone()),
        Part::NotConfigured(e) => Part::NotConfigured(e.clone()),
    };
    let _ = writeln!(out, "\nSnowflake         {}", part(&backlog));
    let _ = writeln!(out, "retry queue       {}", part(&map(&s.retry_queue)));
    let _ = writeln!(
        out,
        "dead-letter queue {}",
        part(&map(&s.dead_letter_queue))
    );
    if let Some(changes) = &s.changes_queue {
        let _ = writeln!(out, "changes queue     {}", part(&map(changes)));
    }
    if let Some(dlq) = &s.changes_dead_letter_queue {
        let _ = writeln!(out, "changes DLQ       {}", part(&map(dlq)));
    }
    match &s.runs {
        Part::Ok(runs) => {
            let _ = writeln!(
                out,
                "\nlast successful run: {}",
                runs.last_success.map_or("never".to_string(), |t| t
                    .format("%Y-%m-%d %H:%M:%S UTC")
                    .to_string())
            );
            let _ = writeln!(
                out,
                "{:<20} {:<10} {:<12} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  error",
                "started",
                "function",
                "table",
                "outcome",
                "read",
                "written",
                "enqueued",
                "deferred",
                "deleted",
                "seconds"
            );
            for r in &runs.last {
                let _ = writeln!(
                    out,
                    "{:<20} {:<10} {:<12} {:<10} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}  {}",
                    r.started_at.format("%Y-%m-%d %H:%M:%S"),
                    if r.sink == SinkKind::ChangesQueue.as_str() {
                        SinkKind::ChangesQueue.function()
                    } else {
                        SinkKind::Postgres.function()
                    },
                    r.table,
                    r.outcome,
                    r.rows_read,
                    r.rows_written,
                    r.rows_enqueued,
                    r.rows_deferred,
                    r.rows_deleted,
                    r.duration_seconds.map_or("-".into(), |d| format!("{d:.1}")),
                    countries_shared::model::text::one_line(r.error.as_deref().unwrap_or(""), 80),
                );
            }
        }
        other => {
            let _ = writeln!(
                out,
                "\nruns             {}",
                part(&match other {
                    Part::Unreachable(e) => Part::Unreachable(e.clone()),
                    Part::NotConfigured(e) => Part::NotConfigured(e.clone()),
                    Part::Ok(_) => Part::Ok(String::new()),
                })
            );
        }
    }
    match &s.unresolved_failures {
        Part::Ok(groups) if groups.is_empty() => {
            let _ = writeln!(out, "\nunresolved failures: none");
        }
        Part::Ok(groups) => {
            let _ = writeln!(out, "\nunresolved failures (oldest first):");
            for g in groups {
                let _ = writeln!(
                    out,
                    "  {:<10} {:<8} {:>6}  since {}",
                    g.error_class,
                    g.sqlstate,
                    g.count,
                    g.oldest.format("%Y-%m-%d %H:%M")
                );
            }
        }
        _ => {}
    }
    out
}
