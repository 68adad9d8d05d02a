//! The fast versions of the end-to-end scenario matrix (`make e2e` runs the full ones and
//! writes docs/RELIABILITY.md). Every scenario must lose nothing and leave no seq gap.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use tern_tests::scenario::Report;
use tern_tests::scenarios::{self, Size};

/// Scenarios run one at a time: each already loads both cores with device processes, and the
/// SDK's 100 ms durability window is part of what they check.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

fn check(report: Report) {
    eprintln!("{report:#?}");
    assert!(report.expected > 0, "the scenario tracked events");
    assert_eq!(report.lost, 0, "{}: lost events", report.scenario);
    assert_eq!(report.seq_gaps, 0, "{}: seq gaps", report.scenario);
    assert_eq!(report.problem, None, "{}", report.scenario);
}

#[test]
fn steady_state() {
    let _serial = serial();
    check(scenarios::steady(Size::Fast).unwrap());
}

#[test]
fn offline_device_comes_back() {
    let _serial = serial();
    check(scenarios::offline(Size::Fast).unwrap());
}

#[test]
fn collector_killed_under_load() {
    let _serial = serial();
    check(scenarios::collector_kill(Size::Fast).unwrap());
}

#[test]
fn rolling_restart() {
    let _serial = serial();
    check(scenarios::rolling_restart(Size::Fast).unwrap());
}

#[test]
fn kinesis_throttling() {
    let _serial = serial();
    check(scenarios::throttling(Size::Fast).unwrap());
}

#[test]
fn kinesis_outage() {
    let _serial = serial();
    check(scenarios::outage(Size::Fast).unwrap());
}

#[test]
fn sdk_killed_during_flush() {
    let _serial = serial();
    check(scenarios::sdk_kill(Size::Fast).unwrap());
}

#[test]
fn clock_skew() {
    let _serial = serial();
    match scenarios::clock_skew(Size::Fast).unwrap() {
        Some(report) => check(report),
        // `make test` installs libfaketime (Debian package faketime); without it the scenario
        // cannot fake a device clock and says so.
        None => eprintln!("clock_skew: libfaketime is not installed; scenario not run"),
    }
}

/// Not serialized with the others: its devices track 5 events a second each, and most of its
/// three minutes is a network outage during which they only store; run beside the other
/// scenarios, its rows add little to `make test`'s time.
#[test]
fn shipped_policy_online_and_after_a_network_outage() {
    let reports = scenarios::shipped_policy(Size::Fast).unwrap();
    assert_eq!(reports.len(), 2, "both rows");
    for report in &reports {
        eprintln!("{report:#?}");
    }
    for report in reports {
        check(report);
    }
}
