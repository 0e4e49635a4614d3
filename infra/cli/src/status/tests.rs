//! The health rules, on made-up findings.
use super::*;

fn status() -> Status {
    Status {
        health: Health::Healthy,
        reasons: Vec::new(),
        snowflake_backlog: Part::Ok(0),
        runs: Part::Ok(Runs {
            last: Vec::new(),
            last_success: Some(Utc::now()),
            overdue: false,
            overdue_tables: Vec::new(),
            window_minutes: 45,
        }),
        retry_queue: Part::Ok(QueueDepth {
            visible: 0,
            in_flight: 0,
        }),
        dead_letter_queue: Part::Ok(QueueDepth {
            visible: 0,
            in_flight: 0,
        }),
        changes_queue: None,
        changes_dead_letter_queue: None,
        unresolved_failures: Part::Ok(Vec::new()),
    }
}

#[test]
fn the_verdict_follows_the_worst_finding() {
    let mut s = status();
    judge(&mut s);
    assert_eq!(s.health, Health::Healthy, "{:?}", s.reasons);

    let mut s = status();
    s.dead_letter_queue = Part::Ok(QueueDepth {
        visible: 2,
        in_flight: 1,
    });
    judge(&mut s);
    assert_eq!(s.health, Health::Degraded);
    assert!(s.reasons[0].contains("3 dead letters"));

    let mut s = status();
    s.dead_letter_queue = Part::Ok(QueueDepth {
        visible: 2,
        in_flight: 0,
    });
    s.snowflake_backlog = Part::Unreachable("timeout".into());
    judge(&mut s);
    assert_eq!(s.health, Health::Down, "an unreachable dependency is down");
    assert_eq!(s.reasons.len(), 2, "{:?}", s.reasons);
    assert!(render(&s).contains("UNREACHABLE: timeout"));
    assert!(!render(&s).contains("changes queue"), "batch mode");

    let mut s = status();
    s.changes_queue = Some(Part::Ok(QueueDepth {
        visible: 7,
        in_flight: 0,
    }));
    s.changes_dead_letter_queue = Some(Part::Ok(QueueDepth {
        visible: 1,
        in_flight: 0,
    }));
    judge(&mut s);
    assert_eq!(s.health, Health::Degraded);
    assert!(s.reasons[0].contains("1 change batches"), "{:?}", s.reasons);
    assert!(render(&s).contains("changes queue     7 visible"));
    s.changes_queue = Some(Part::Unreachable("gone".into()));
    judge(&mut s);
    assert_eq!(s.health, Health::Down, "{:?}", s.reasons);
}

#[test]
fn a_table_that_keeps_failing_is_down_while_case_succeeds() {
    let mut s = status();
    if let Part::Ok(runs) = &mut s.runs {
        runs.overdue_tables = vec!["orders".into()];
    }
    judge(&mut s);
    assert_eq!(s.health, Health::Down);
    assert!(
        s.reasons
            .iter()
            .any(|r| r.starts_with("table orders: no successful run")),
        "{:?}",
        s.reasons
    );
}
