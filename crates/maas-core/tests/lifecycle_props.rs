//! Properties and scenarios of the machine lifecycle: every status change is an
//! edge of the transition table, refusals leave the machine untouched, checks
//! run in MAAS's order (status, permission, lock), and deadlines follow the
//! policy.

use std::cell::RefCell;
use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use maas_core::lifecycle::{
    Action, ActionOptions, ActionPermission, Actor, AllowedStatuses, DeadlinePolicy,
    LifecycleError, NodeStatus, StatusChange, TRANSITIONS, transition_allowed,
};
use maas_core::machine::Machine;
use maas_core::{Architecture, Hostname, SystemId};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use NodeStatus::*;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 14, 9, 26, 53).unwrap()
}

fn machine(status: NodeStatus) -> Machine {
    let mut m = Machine::new(
        SystemId::parse("4y3h7n").unwrap(),
        Hostname::parse("node-1").unwrap(),
        Architecture::amd64(),
        t0(),
    );
    m.status = status;
    m
}

fn policy() -> DeadlinePolicy {
    DeadlinePolicy::default()
}

fn opts() -> ActionOptions {
    ActionOptions::default()
}

fn alice() -> Actor {
    Actor::user("alice", false)
}

fn bob() -> Actor {
    Actor::user("bob", false)
}

fn root() -> Actor {
    Actor::user("root", true)
}

/// The actors of the property, with whether each is an administrator
/// (independent of `Actor::is_admin`).
fn actors() -> [(Actor, bool); 4] {
    [
        (Actor::System, true),
        (alice(), false),
        (bob(), false),
        (root(), true),
    ]
}

fn timeout(status: NodeStatus) -> chrono::Duration {
    chrono::Duration::from_std(policy().timeout(status).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------
// The tables, transcribed from /work/shared/spec/lifecycle.md, checked against
// the library's data.

const SPEC_TRANSITIONS: &str = "\
None -> MISSING,NEW,RETIRED
NEW -> BROKEN,COMMISSIONING,ENTERING_RESCUE_MODE,MISSING,READY,RETIRED,TESTING
COMMISSIONING -> BROKEN,FAILED_COMMISSIONING,MISSING,NEW,READY,RETIRED,TESTING
FAILED_COMMISSIONING -> BROKEN,COMMISSIONING,ENTERING_RESCUE_MODE,MISSING,RETIRED,TESTING
READY -> ALLOCATED,BROKEN,COMMISSIONING,ENTERING_RESCUE_MODE,MISSING,RESERVED,RETIRED,TESTING
RESERVED -> ALLOCATED,BROKEN,DISK_ERASING,ENTERING_RESCUE_MODE,MISSING,READY,RELEASING,RETIRED,TESTING
ALLOCATED -> BROKEN,DEPLOYING,DISK_ERASING,ENTERING_RESCUE_MODE,MISSING,READY,RELEASING,RETIRED,TESTING
RELEASING -> ALLOCATED,BROKEN,DEPLOYED,FAILED_DEPLOYMENT,FAILED_DISK_ERASING,FAILED_RELEASING,MISSING,NEW,READY,RESERVED
DEPLOYING -> ALLOCATED,BROKEN,DEPLOYED,DISK_ERASING,FAILED_DEPLOYMENT,MISSING,READY,RELEASING
FAILED_DEPLOYMENT -> ALLOCATED,BROKEN,DISK_ERASING,ENTERING_RESCUE_MODE,MISSING,READY,RELEASING,TESTING
DEPLOYED -> ALLOCATED,BROKEN,DISK_ERASING,ENTERING_RESCUE_MODE,MISSING,READY,RELEASING,TESTING
MISSING -> ALLOCATED,BROKEN,COMMISSIONING,ENTERING_RESCUE_MODE,NEW,READY,TESTING
RETIRED -> BROKEN,ENTERING_RESCUE_MODE,MISSING,NEW,READY,TESTING
BROKEN -> COMMISSIONING,DEPLOYED,DISK_ERASING,ENTERING_RESCUE_MODE,READY,RELEASING,TESTING
FAILED_RELEASING -> BROKEN,DISK_ERASING,READY,RELEASING,TESTING
DISK_ERASING -> BROKEN,DISK_ERASING,FAILED_DISK_ERASING,READY,RELEASING
FAILED_DISK_ERASING -> ALLOCATED,BROKEN,DISK_ERASING,ENTERING_RESCUE_MODE,READY,RELEASING,TESTING
ENTERING_RESCUE_MODE -> BROKEN,DEPLOYED,EXITING_RESCUE_MODE,FAILED_ENTERING_RESCUE_MODE,READY,RESCUE_MODE
FAILED_ENTERING_RESCUE_MODE -> BROKEN,ENTERING_RESCUE_MODE,EXITING_RESCUE_MODE,TESTING
RESCUE_MODE -> BROKEN,EXITING_RESCUE_MODE,TESTING
EXITING_RESCUE_MODE -> ALLOCATED,BROKEN,DEPLOYED,FAILED_COMMISSIONING,FAILED_DEPLOYMENT,FAILED_DISK_ERASING,FAILED_ENTERING_RESCUE_MODE,FAILED_EXITING_RESCUE_MODE,FAILED_RELEASING,FAILED_TESTING,MISSING,NEW,READY,RESCUE_MODE,RESERVED,RETIRED
FAILED_EXITING_RESCUE_MODE -> BROKEN,EXITING_RESCUE_MODE,TESTING
TESTING -> ALLOCATED,BROKEN,COMMISSIONING,DEPLOYED,FAILED_DEPLOYMENT,FAILED_DISK_ERASING,FAILED_ENTERING_RESCUE_MODE,FAILED_EXITING_RESCUE_MODE,FAILED_RELEASING,FAILED_TESTING,MISSING,NEW,READY,RESERVED,RETIRED
FAILED_TESTING -> BROKEN,COMMISSIONING,DEPLOYED,ENTERING_RESCUE_MODE,MISSING,READY,TESTING
";

const SPEC_ACTIONS: &str = "\
delete: ALL_STATUSES
set-zone: ALL_STATUSES
set-pool: ALL_STATUSES
commission: NEW, FAILED_COMMISSIONING, READY, BROKEN
test: FAILED_COMMISSIONING, NEW, READY, RESERVED, ALLOCATED, FAILED_DEPLOYMENT, DEPLOYED, MISSING, RETIRED, BROKEN, RESCUE_MODE, FAILED_RELEASING, FAILED_DISK_ERASING, FAILED_ENTERING_RESCUE_MODE, FAILED_EXITING_RESCUE_MODE, FAILED_TESTING
abort: COMMISSIONING, DISK_ERASING, DEPLOYING, TESTING
acquire: READY
deploy: READY, ALLOCATED
on: DEPLOYING, DEPLOYED, BROKEN
off: NON_MONITORED_STATUSES
release: ALLOCATED, DEPLOYED, DEPLOYING, FAILED_DEPLOYMENT, FAILED_RELEASING, FAILED_DISK_ERASING
mark-broken: NEW, COMMISSIONING, READY, ALLOCATED, RELEASING, DEPLOYING, DEPLOYED, DISK_ERASING, TESTING
mark-fixed: BROKEN
lock: DEPLOYED, DEPLOYING
unlock: ALL_STATUSES
override-failed-testing: FAILED_TESTING
rescue-mode: NEW, FAILED_COMMISSIONING, READY, RESERVED, ALLOCATED, FAILED_DEPLOYMENT, DEPLOYED, MISSING, RETIRED, BROKEN, FAILED_DISK_ERASING, FAILED_ENTERING_RESCUE_MODE, FAILED_ENTERING_RESCUE_MODE, FAILED_EXITING_RESCUE_MODE, FAILED_TESTING
exit-rescue-mode: RESCUE_MODE, ENTERING_RESCUE_MODE, FAILED_ENTERING_RESCUE_MODE, FAILED_EXITING_RESCUE_MODE
tag: ALL_STATUSES
untag: ALL_STATUSES
clone: ALL_STATUSES
";

fn status_by_name(name: &str) -> NodeStatus {
    let st: NodeStatus = name.parse().unwrap();
    assert_eq!(st.name(), name, "the spec's name parses to its own status");
    st
}

#[test]
fn transition_table_is_the_spec_table() {
    let mut edges = 0;
    let mut rows = 0;
    for line in SPEC_TRANSITIONS.lines() {
        let (from, tos) = line.split_once(" -> ").unwrap();
        let from = (from != "None").then(|| status_by_name(from));
        let tos: Vec<NodeStatus> = tos.split(',').map(status_by_name).collect();
        rows += 1;
        for to in NodeStatus::ALL {
            assert_eq!(
                transition_allowed(from, to),
                tos.contains(&to),
                "{from:?} -> {to:?}"
            );
            if let Some(f) = from {
                assert_eq!(f.can_transition_to(to), tos.contains(&to));
            }
        }
        edges += tos.len();
    }
    assert_eq!(rows, 24);
    assert_eq!(edges, 174);
    let lib_edges: usize = TRANSITIONS.iter().map(|(_, t)| t.len()).sum();
    assert_eq!(lib_edges, edges);
}

#[test]
fn action_table_is_the_spec_table() {
    let mut seen = Vec::new();
    for line in SPEC_ACTIONS.lines() {
        let (name, statuses) = line.split_once(": ").unwrap();
        let action: Action = name.parse().unwrap();
        assert_eq!(action.name(), name);
        seen.push(action);
        let allowed: Vec<NodeStatus> = match statuses {
            "ALL_STATUSES" => NodeStatus::ALL.to_vec(),
            "NON_MONITORED_STATUSES" => NodeStatus::ALL
                .into_iter()
                .filter(|s| s.failure_status().is_none())
                .collect(),
            list => list.split(", ").map(status_by_name).collect(),
        };
        for st in NodeStatus::ALL {
            assert_eq!(
                action.allowed_statuses().contains(st),
                allowed.contains(&st),
                "{name} in {st:?}"
            );
        }
    }
    assert_eq!(seen.len(), Action::ALL.len());
    for a in Action::ALL {
        assert!(seen.contains(&a), "{a:?} is in the spec");
    }
    assert_eq!(
        Action::Off.allowed_statuses(),
        AllowedStatuses::NotMonitored
    );
}

// ---------------------------------------------------------------------------
// The random-walk property.

#[derive(Debug, Clone)]
enum Op {
    Perform {
        action: Action,
        actor: usize,
        erase: bool,
        comment: Option<String>,
        advance: i64,
    },
    Transition {
        to: NodeStatus,
        advance: i64,
    },
    Expire {
        advance: i64,
    },
}

#[derive(Debug, Clone)]
struct Start {
    status: NodeStatus,
    previous: Option<NodeStatus>,
    owner: Option<&'static str>,
    locked: bool,
}

fn any_status() -> impl Strategy<Value = NodeStatus> {
    proptest::sample::select(NodeStatus::ALL.to_vec())
}

fn advance() -> impl Strategy<Value = i64> {
    // Seconds; deadlines are 5 to 60 minutes, so some steps cross them.
    prop_oneof![Just(0i64), 0i64..600, 0i64..7200]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (
            proptest::sample::select(Action::ALL.to_vec()),
            0usize..4,
            any::<bool>(),
            proptest::option::of("[a-z ]{0,12}"),
            advance(),
        )
            .prop_map(|(action, actor, erase, comment, advance)| Op::Perform {
                action,
                actor,
                erase,
                comment,
                advance,
            }),
        2 => (any_status(), advance()).prop_map(|(to, advance)| Op::Transition { to, advance }),
        1 => advance().prop_map(|advance| Op::Expire { advance }),
    ]
}

fn start() -> impl Strategy<Value = Start> {
    (
        any_status(),
        proptest::option::of(any_status()),
        proptest::sample::select(vec![None, Some("alice"), Some("bob")]),
        any::<bool>(),
    )
        .prop_map(|(status, previous, owner, locked)| Start {
            status,
            previous,
            owner,
            locked,
        })
}

/// Which outcomes the walk produced, so the property is known not to pass
/// vacuously.
#[derive(Debug, Default)]
struct Coverage {
    outcomes: BTreeMap<&'static str, usize>,
}

impl Coverage {
    fn hit(&mut self, what: &'static str) {
        *self.outcomes.entry(what).or_default() += 1;
    }
}

/// Whether the actor may run the action, from the rules in the brief rather
/// than the library's own check.
fn oracle_permitted(action: Action, actor: &Actor, admin: bool, m: &Machine) -> bool {
    match action.permission() {
        ActionPermission::Anyone => true,
        ActionPermission::Admin => admin,
        ActionPermission::Owner => {
            admin
                || (m.owner.is_some() && m.owner.as_deref() == actor.username())
                || (action == Action::Deploy && m.status == Ready && m.owner.is_none())
        }
    }
}

/// The statuses `action` walks the machine through, from the documented
/// effects of each action; `None` for actions without a status effect.
fn oracle_path(action: Action, m: &Machine, o: &ActionOptions) -> Option<Vec<NodeStatus>> {
    let fixed = if m.previous_status == Some(Deployed) {
        Deployed
    } else {
        Ready
    };
    Some(match action {
        Action::Commission => vec![Commissioning],
        Action::Test => vec![Testing],
        Action::Acquire => vec![Allocated],
        Action::Deploy if m.status == Ready => vec![Allocated, Deploying],
        Action::Deploy => vec![Deploying],
        Action::Release if o.erase => vec![DiskErasing],
        Action::Release => vec![Releasing],
        Action::MarkBroken => vec![Broken],
        Action::MarkFixed | Action::OverrideFailedTesting => vec![fixed],
        Action::RescueMode => vec![EnteringRescueMode],
        Action::ExitRescueMode => vec![ExitingRescueMode],
        Action::Abort => vec![match m.status {
            Deploying => Allocated,
            DiskErasing => FailedDiskErasing,
            st => match m.previous_status {
                Some(p) if transition_allowed(Some(st), p) => p,
                _ if st == Commissioning => New,
                _ => FailedTesting,
            },
        }],
        _ => return None,
    })
}

/// (a) and (e): the changes are table edges that chain from `before` to
/// `after`, and the deadline matches the status entered last.
fn check_changes(
    before: &Machine,
    after: &Machine,
    changes: &[StatusChange],
    now: DateTime<Utc>,
) -> Result<(), TestCaseError> {
    for c in changes {
        prop_assert!(
            transition_allowed(Some(c.from), c.to),
            "{:?} -> {:?} is not an edge",
            c.from,
            c.to
        );
    }
    for w in changes.windows(2) {
        prop_assert_eq!(w[0].to, w[1].from, "changes chain");
    }
    match (changes.first(), changes.last()) {
        (Some(first), Some(last)) => {
            prop_assert_eq!(first.from, before.status);
            prop_assert_eq!(last.to, after.status);
            if after.status.is_monitored() {
                prop_assert_eq!(after.status_deadline, Some(now + timeout(after.status)));
            } else {
                prop_assert_eq!(after.status_deadline, None);
            }
            // previous_status remembers the last unmonitored status left.
            let mut prev = before.previous_status;
            for c in changes {
                if !c.from.is_monitored() {
                    prev = Some(c.from);
                }
            }
            prop_assert_eq!(after.previous_status, prev);
        }
        _ => {
            prop_assert_eq!(after.status, before.status);
            prop_assert_eq!(after.status_deadline, before.status_deadline);
            prop_assert_eq!(after.previous_status, before.previous_status);
        }
    }
    Ok(())
}

fn run_walk(start: &Start, ops: &[Op], cov: &mut Coverage) -> Result<(), TestCaseError> {
    let policy = policy();
    let actors = actors();
    let mut m = machine(start.status);
    m.previous_status = start.previous;
    m.owner = start.owner.map(str::to_owned);
    m.locked = start.locked;
    let mut now = t0();

    for op in ops {
        let before = m.clone();
        match op {
            Op::Perform {
                action,
                actor,
                erase,
                comment,
                advance,
            } => {
                now += chrono::Duration::seconds(*advance);
                let action = *action;
                let (actor, admin) = &actors[*actor];
                let options = ActionOptions {
                    erase: *erase,
                    comment: comment.clone(),
                };
                let status_ok = action.allowed_statuses().contains(before.status);
                let permitted = oracle_permitted(action, actor, *admin, &before);
                let lock_ok = !before.locked || action.allowed_when_locked();
                let path = oracle_path(action, &before, &options);
                let path_ok = path.as_ref().is_none_or(|p| {
                    let mut from = before.status;
                    p.iter().all(|to| {
                        let ok = transition_allowed(Some(from), *to);
                        from = *to;
                        ok
                    })
                });

                let res = m.perform(action, actor, &options, now, &policy);
                match res {
                    Ok(changes) => {
                        cov.hit(if changes.is_empty() {
                            "perform ok without change"
                        } else {
                            "perform ok with changes"
                        });
                        // (c)
                        prop_assert!(status_ok, "{action:?} ran in {:?}", before.status);
                        prop_assert!(permitted, "{action:?} ran for {actor:?} on {before:?}");
                        prop_assert!(lock_ok, "{action:?} ran on a locked machine");
                        // (a), (e)
                        check_changes(&before, &m, &changes, now)?;
                        // The documented effect of each action.
                        match &path {
                            Some(p) => {
                                let got: Vec<NodeStatus> = changes.iter().map(|c| c.to).collect();
                                prop_assert_eq!(&got, p, "{:?} from {:?}", action, before.status);
                            }
                            None => {
                                prop_assert!(changes.is_empty());
                                let mut expect = before.clone();
                                match action {
                                    Action::Lock => expect.locked = true,
                                    Action::Unlock => expect.locked = false,
                                    _ => {}
                                }
                                prop_assert_eq!(&m, &expect);
                            }
                        }
                        match action {
                            Action::Acquire => {
                                prop_assert_eq!(m.owner.as_deref(), actor.username());
                            }
                            Action::Deploy if before.status == Ready => {
                                prop_assert_eq!(m.owner.as_deref(), actor.username());
                            }
                            Action::MarkBroken => {
                                prop_assert_eq!(
                                    &m.error_description,
                                    &comment.clone().unwrap_or_default()
                                );
                            }
                            Action::MarkFixed | Action::OverrideFailedTesting => {
                                prop_assert_eq!(&m.error_description, "");
                            }
                            _ => {
                                prop_assert_eq!(&m.error_description, &before.error_description);
                            }
                        }
                        // Back in the pool (or enlisting) means owned by nobody;
                        // otherwise the owner is whatever the action set.
                        let ends_unowned =
                            m.status != before.status && matches!(m.status, Ready | New);
                        if ends_unowned {
                            prop_assert_eq!(&m.owner, &None);
                        } else if !matches!(action, Action::Acquire | Action::Deploy) {
                            prop_assert_eq!(&m.owner, &before.owner);
                        }
                        if !matches!(action, Action::Lock | Action::Unlock) {
                            prop_assert_eq!(m.locked, before.locked);
                        }
                    }
                    Err(err) => {
                        // (b)
                        prop_assert_eq!(&m, &before, "refused {:?} changed the machine", action);
                        // (d) and the order of the checks.
                        if !status_ok {
                            cov.hit("perform ActionNotAllowed");
                            prop_assert_eq!(
                                &err,
                                &LifecycleError::ActionNotAllowed {
                                    action,
                                    status: before.status
                                }
                            );
                            let text = err.to_string();
                            prop_assert!(text.contains(action.name()), "{text}");
                            prop_assert!(text.contains(before.status.label()), "{text}");
                        } else if !permitted {
                            cov.hit("perform PermissionDenied");
                            prop_assert!(
                                matches!(
                                    &err,
                                    LifecycleError::PermissionDenied { action: a, actor: who, .. }
                                        if *a == action && *who == actor.to_string()
                                ),
                                "{err:?}"
                            );
                        } else if !lock_ok {
                            cov.hit("perform Locked");
                            prop_assert_eq!(&err, &LifecycleError::Locked { action });
                        } else {
                            cov.hit("perform InvalidTransition");
                            prop_assert!(!path_ok, "{action:?} refused although {err:?}");
                            prop_assert!(
                                matches!(
                                    err,
                                    LifecycleError::InvalidTransition { from: Some(_), .. }
                                ),
                                "{err:?}"
                            );
                        }
                    }
                }
            }
            Op::Transition { to, advance } => {
                now += chrono::Duration::seconds(*advance);
                let allowed = transition_allowed(Some(before.status), *to);
                match m.transition(*to, now, &policy) {
                    Ok(change) => {
                        cov.hit("transition ok");
                        prop_assert!(allowed);
                        prop_assert_eq!(
                            change,
                            StatusChange {
                                from: before.status,
                                to: *to
                            }
                        );
                        check_changes(&before, &m, &[change], now)?;
                        if matches!(to, Ready | New) {
                            prop_assert_eq!(&m.owner, &None);
                        } else {
                            prop_assert_eq!(&m.owner, &before.owner);
                        }
                        prop_assert_eq!(m.locked, before.locked);
                    }
                    Err(err) => {
                        cov.hit("transition refused");
                        prop_assert!(!allowed);
                        prop_assert_eq!(&m, &before);
                        prop_assert_eq!(
                            err,
                            LifecycleError::InvalidTransition {
                                from: Some(before.status),
                                to: *to
                            }
                        );
                    }
                }
            }
            Op::Expire { advance } => {
                now += chrono::Duration::seconds(*advance);
                let due = before.status.is_monitored()
                    && before.status_deadline.is_some_and(|d| now >= d);
                match m.expire(now, &policy) {
                    Some(change) => {
                        cov.hit("expired");
                        prop_assert!(due);
                        prop_assert_eq!(
                            change,
                            StatusChange {
                                from: before.status,
                                to: before.status.failure_status().unwrap()
                            }
                        );
                        check_changes(&before, &m, &[change], now)?;
                        prop_assert!(m.error_description.contains("timed out"));
                        prop_assert_eq!(&m.owner, &before.owner);
                    }
                    None => {
                        cov.hit(if before.status_deadline.is_some() {
                            "not yet expired"
                        } else {
                            "no deadline"
                        });
                        prop_assert!(!due);
                        prop_assert_eq!(&m, &before);
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn random_walks_respect_the_tables_permissions_locks_and_deadlines() {
    let mut runner = TestRunner::new(Config {
        cases: 1024,
        failure_persistence: None,
        ..Config::default()
    });
    let cov = RefCell::new(Coverage::default());
    let strategy = (start(), proptest::collection::vec(op(), 0..=40));
    let result = runner.run(&strategy, |(start, ops)| {
        run_walk(&start, &ops, &mut cov.borrow_mut())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let cov = cov.into_inner();
    for outcome in [
        "perform ok with changes",
        "perform ok without change",
        "perform ActionNotAllowed",
        "perform PermissionDenied",
        "perform Locked",
        "transition ok",
        "transition refused",
        "expired",
        "not yet expired",
        "no deadline",
    ] {
        assert!(
            cov.outcomes.get(outcome).copied().unwrap_or(0) >= 5,
            "outcome {outcome:?} seen too rarely: {:?}",
            cov.outcomes
        );
    }
}

// ---------------------------------------------------------------------------
// Deadlines.

const MONITORED: [NodeStatus; 7] = [
    Commissioning,
    Deploying,
    Releasing,
    DiskErasing,
    EnteringRescueMode,
    ExitingRescueMode,
    Testing,
];

/// An unmonitored status with an edge into `to`.
fn predecessor(to: NodeStatus) -> NodeStatus {
    TRANSITIONS
        .iter()
        .filter_map(|(from, tos)| from.filter(|f| !f.is_monitored() && tos.contains(&to)))
        .next()
        .unwrap()
}

#[test]
fn exactly_seven_statuses_are_monitored() {
    let monitored: Vec<_> = NodeStatus::ALL
        .into_iter()
        .filter(|s| s.is_monitored())
        .collect();
    assert_eq!(monitored, MONITORED);
    let p = policy();
    for st in NodeStatus::ALL {
        assert_eq!(p.timeout(st).is_some(), st.is_monitored(), "{st:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn monitored_statuses_expire_exactly_at_their_deadline(
        status in proptest::sample::select(MONITORED.to_vec()),
        // Seconds after entering, or a few seconds either side of the deadline.
        elapsed in 0i64..=7200,
        near_deadline in any::<bool>(),
        jitter in -3i64..=3,
        owner in proptest::sample::select(vec![None, Some("alice")]),
        locked in any::<bool>(),
    ) {
        let policy = policy();
        let mut m = machine(predecessor(status));
        m.owner = owner.map(str::to_owned);
        m.locked = locked;
        m.transition(status, t0(), &policy).unwrap();
        let deadline = t0() + timeout(status);
        prop_assert_eq!(m.status_deadline, Some(deadline));
        let now = if near_deadline {
            deadline + chrono::Duration::seconds(jitter)
        } else {
            t0() + chrono::Duration::seconds(elapsed)
        };
        let before = m.clone();
        match m.expire(now, &policy) {
            Some(change) => {
                prop_assert!(now >= deadline, "expired early at {now} (deadline {deadline})");
                prop_assert_eq!(change, StatusChange { from: status, to: status.failure_status().unwrap() });
                prop_assert_eq!(m.status, status.failure_status().unwrap());
                prop_assert_eq!(m.status_deadline, None);
                prop_assert_eq!(&m.owner, &before.owner);
                prop_assert_eq!(m.locked, locked);
                prop_assert!(m.error_description.contains(status.label()), "{}", m.error_description);
                // Once failed, nothing more expires.
                let failed = m.clone();
                prop_assert_eq!(m.expire(now + chrono::Duration::days(365), &policy), None);
                prop_assert_eq!(&m, &failed);
            }
            None => {
                prop_assert!(now < deadline, "not expired at {now} (deadline {deadline})");
                prop_assert_eq!(&m, &before);
            }
        }
    }

    #[test]
    fn unmonitored_statuses_never_expire(
        status in any_status().prop_filter("unmonitored", |s| !s.is_monitored()),
        stale_deadline in any::<bool>(),
        elapsed in 0i64..=100_000_000,
    ) {
        let policy = policy();
        let mut m = machine(status);
        // Even a deadline left behind (by hand) does not make it expire.
        m.status_deadline = stale_deadline.then(t0);
        let before = m.clone();
        prop_assert_eq!(m.expire(t0() + chrono::Duration::seconds(elapsed), &policy), None);
        prop_assert_eq!(&m, &before);
    }
}

#[test]
fn entering_an_unmonitored_status_clears_the_deadline() {
    let p = policy();
    let mut m = machine(Allocated);
    m.transition(Deploying, t0(), &p).unwrap();
    assert_eq!(m.status_deadline, Some(t0() + timeout(Deploying)));
    let later = t0() + chrono::Duration::minutes(3);
    m.transition(Deployed, later, &p).unwrap();
    assert_eq!(m.status_deadline, None);
    assert_eq!(m.expire(later + chrono::Duration::days(1), &p), None);
    assert_eq!(m.status, Deployed);
}

// ---------------------------------------------------------------------------
// Scenarios.

#[test]
fn the_whole_deploy_and_release_path() {
    let p = policy();
    let now = t0();
    let mut m = machine(Ready);

    let changes = m
        .perform(Action::Deploy, &alice(), &opts(), now, &p)
        .unwrap();
    assert_eq!(
        changes,
        [
            StatusChange {
                from: Ready,
                to: Allocated
            },
            StatusChange {
                from: Allocated,
                to: Deploying
            },
        ]
    );
    assert_eq!(m.status, Deploying);
    assert_eq!(m.owner.as_deref(), Some("alice"));
    assert_eq!(m.status_deadline, Some(now + chrono::Duration::minutes(40)));
    assert_eq!(m.previous_status, Some(Allocated));

    let done = now + chrono::Duration::minutes(12);
    let c = m.transition(Deployed, done, &p).unwrap();
    assert_eq!(
        c,
        StatusChange {
            from: Deploying,
            to: Deployed
        }
    );
    assert_eq!(m.status_deadline, None);
    assert_eq!(m.owner.as_deref(), Some("alice"));

    let changes = m
        .perform(Action::Release, &alice(), &opts(), done, &p)
        .unwrap();
    assert_eq!(
        changes,
        [StatusChange {
            from: Deployed,
            to: Releasing
        }]
    );
    assert_eq!(m.status_deadline, Some(done + chrono::Duration::minutes(5)));
    assert_eq!(
        m.owner.as_deref(),
        Some("alice"),
        "the owner stays until released"
    );

    m.transition(Ready, done + chrono::Duration::minutes(1), &p)
        .unwrap();
    assert_eq!(m.status, Ready);
    assert_eq!(m.owner, None);
    assert_eq!(m.status_deadline, None);
}

#[test]
fn release_with_erase_goes_through_disk_erasing() {
    let p = policy();
    let mut m = machine(Deployed);
    m.owner = Some("alice".into());
    let erase = ActionOptions {
        erase: true,
        comment: None,
    };
    let changes = m
        .perform(Action::Release, &alice(), &erase, t0(), &p)
        .unwrap();
    assert_eq!(
        changes,
        [StatusChange {
            from: Deployed,
            to: DiskErasing
        }]
    );
    assert_eq!(m.status, DiskErasing);
    assert_eq!(m.status_deadline, Some(t0() + chrono::Duration::hours(1)));
    m.transition(Ready, t0(), &p).unwrap();
    assert_eq!(m.owner, None);
}

#[test]
fn abort_of_deploying_returns_to_allocated() {
    let p = policy();
    let mut m = machine(Ready);
    m.perform(Action::Deploy, &alice(), &opts(), t0(), &p)
        .unwrap();
    let changes = m
        .perform(Action::Abort, &root(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(
        changes,
        [StatusChange {
            from: Deploying,
            to: Allocated
        }]
    );
    assert_eq!(m.status, Allocated);
    assert_eq!(m.owner.as_deref(), Some("alice"));
    assert_eq!(m.status_deadline, None);
    // Abort needs an administrator, even for the owner.
    let mut again = machine(Ready);
    again
        .perform(Action::Deploy, &alice(), &opts(), t0(), &p)
        .unwrap();
    assert!(matches!(
        again.perform(Action::Abort, &alice(), &opts(), t0(), &p),
        Err(LifecycleError::PermissionDenied {
            action: Action::Abort,
            ..
        })
    ));
}

#[test]
fn abort_of_commissioning_returns_to_the_previous_status() {
    let p = policy();
    let mut m = machine(New);
    m.perform(Action::Commission, &root(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(m.status, Commissioning);
    assert_eq!(m.previous_status, Some(New));
    let changes = m
        .perform(Action::Abort, &Actor::System, &opts(), t0(), &p)
        .unwrap();
    assert_eq!(
        changes,
        [StatusChange {
            from: Commissioning,
            to: New
        }]
    );
    assert_eq!(m.status, New);
    assert_eq!(m.status_deadline, None);

    // From Ready, abort returns to Ready.
    let mut r = machine(Ready);
    r.perform(Action::Commission, &root(), &opts(), t0(), &p)
        .unwrap();
    r.perform(Action::Abort, &root(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(r.status, Ready);
}

#[test]
fn abort_of_disk_erasing_and_testing() {
    let p = policy();
    let mut m = machine(DiskErasing);
    m.perform(Action::Abort, &root(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(m.status, FailedDiskErasing);

    let mut t = machine(Deployed);
    t.perform(Action::Test, &root(), &opts(), t0(), &p).unwrap();
    assert_eq!(t.status, Testing);
    t.perform(Action::Abort, &root(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(t.status, Deployed);

    // No usable previous status: testing fails.
    let mut u = machine(Testing);
    u.previous_status = None;
    u.perform(Action::Abort, &root(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(u.status, FailedTesting);
}

#[test]
fn mark_broken_keeps_the_comment_and_mark_fixed_returns_to_deployed() {
    let p = policy();
    let mut m = machine(Deployed);
    m.owner = Some("alice".into());
    let why = ActionOptions {
        erase: false,
        comment: Some("disk smells of smoke".into()),
    };
    let changes = m
        .perform(Action::MarkBroken, &alice(), &why, t0(), &p)
        .unwrap();
    assert_eq!(
        changes,
        [StatusChange {
            from: Deployed,
            to: Broken
        }]
    );
    assert_eq!(m.status, Broken);
    assert_eq!(m.error_description, "disk smells of smoke");
    assert_eq!(m.previous_status, Some(Deployed));

    // Only an administrator fixes it.
    let before = m.clone();
    assert!(matches!(
        m.perform(Action::MarkFixed, &alice(), &opts(), t0(), &p),
        Err(LifecycleError::PermissionDenied { .. })
    ));
    assert_eq!(m, before);

    let changes = m
        .perform(Action::MarkFixed, &root(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(
        changes,
        [StatusChange {
            from: Broken,
            to: Deployed
        }]
    );
    assert_eq!(m.status, Deployed);
    assert_eq!(m.error_description, "");
    assert_eq!(m.owner.as_deref(), Some("alice"));
}

#[test]
fn mark_fixed_without_a_deployed_past_goes_to_ready() {
    let p = policy();
    let mut m = machine(New);
    m.perform(Action::MarkBroken, &root(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(m.error_description, "");
    m.perform(Action::MarkFixed, &root(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(m.status, Ready);
}

/// A machine allocated to alice, broken and fixed, comes back Ready. A Ready
/// machine must be free for anyone to allocate: `transition` clears the owner
/// on entering Ready, and `constraints::allocatable` refuses owned Ready
/// machines.
#[test]
fn a_machine_fixed_back_to_ready_has_no_owner() {
    let p = policy();
    let mut m = machine(Ready);
    m.perform(Action::Acquire, &alice(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(m.owner.as_deref(), Some("alice"));
    m.perform(Action::MarkBroken, &alice(), &opts(), t0(), &p)
        .unwrap();
    m.perform(Action::MarkFixed, &root(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(m.status, Ready);
    assert_eq!(
        m.owner, None,
        "a Ready machine left owned cannot be allocated by anyone else"
    );
    assert!(maas_core::constraints::allocatable(&m));
}

#[test]
fn only_the_owner_or_an_admin_may_release() {
    let p = policy();
    let mut m = machine(Deployed);
    m.owner = Some("alice".into());
    let before = m.clone();
    let err = m
        .perform(Action::Release, &bob(), &opts(), t0(), &p)
        .unwrap_err();
    assert_eq!(
        err,
        LifecycleError::PermissionDenied {
            action: Action::Release,
            actor: "bob".into(),
            required: "the owner or an administrator",
        }
    );
    assert!(err.to_string().contains("bob"), "{err}");
    assert_eq!(m, before);

    let changes = m
        .perform(Action::Release, &root(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(
        changes,
        [StatusChange {
            from: Deployed,
            to: Releasing
        }]
    );
    // ...and so may the system.
    let mut s = before.clone();
    s.perform(Action::Release, &Actor::System, &opts(), t0(), &p)
        .unwrap();
    assert_eq!(s.status, Releasing);
}

#[test]
fn a_non_owner_cannot_deploy_an_allocated_machine_but_anyone_deploys_a_free_one() {
    let p = policy();
    let mut m = machine(Allocated);
    m.owner = Some("alice".into());
    assert!(matches!(
        m.perform(Action::Deploy, &bob(), &opts(), t0(), &p),
        Err(LifecycleError::PermissionDenied { .. })
    ));
    let mut free = machine(Ready);
    free.perform(Action::Deploy, &bob(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(free.owner.as_deref(), Some("bob"));
}

#[test]
fn a_locked_machine_refuses_release_and_accepts_unlock() {
    let p = policy();
    let mut m = machine(Deployed);
    m.owner = Some("alice".into());
    m.perform(Action::Lock, &alice(), &opts(), t0(), &p)
        .unwrap();
    assert!(m.locked);

    let before = m.clone();
    for actor in [alice(), root(), Actor::System] {
        let err = m
            .perform(Action::Release, &actor, &opts(), t0(), &p)
            .unwrap_err();
        assert_eq!(
            err,
            LifecycleError::Locked {
                action: Action::Release
            }
        );
        assert!(err.to_string().contains("locked"), "{err}");
        assert_eq!(m, before);
    }
    // Permission is checked before the lock.
    assert!(matches!(
        m.perform(Action::Release, &bob(), &opts(), t0(), &p),
        Err(LifecycleError::PermissionDenied { .. })
    ));

    let changes = m
        .perform(Action::Unlock, &alice(), &opts(), t0(), &p)
        .unwrap();
    assert!(changes.is_empty());
    assert!(!m.locked);
    assert_eq!(m.status, Deployed);
    m.perform(Action::Release, &alice(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(m.status, Releasing);
}

#[test]
fn rescue_mode_from_failed_exiting_rescue_mode_is_refused_by_the_transition_table() {
    // The action table allows rescue-mode in FAILED_EXITING_RESCUE_MODE but
    // the transition table has no FAILED_EXITING_RESCUE_MODE ->
    // ENTERING_RESCUE_MODE edge: MAAS's own data disagree, and the table wins.
    assert!(
        Action::RescueMode
            .allowed_statuses()
            .contains(FailedExitingRescueMode)
    );
    assert!(!FailedExitingRescueMode.can_transition_to(EnteringRescueMode));

    let p = policy();
    let mut m = machine(FailedExitingRescueMode);
    let before = m.clone();
    let err = m
        .perform(Action::RescueMode, &root(), &opts(), t0(), &p)
        .unwrap_err();
    assert_eq!(
        err,
        LifecycleError::InvalidTransition {
            from: Some(FailedExitingRescueMode),
            to: EnteringRescueMode
        }
    );
    assert_eq!(
        err.to_string(),
        "no transition from Failed to exit rescue mode to Entering rescue mode"
    );
    assert_eq!(m, before);

    // exit-rescue-mode is the way out.
    m.perform(Action::ExitRescueMode, &root(), &opts(), t0(), &p)
        .unwrap();
    assert_eq!(m.status, ExitingRescueMode);
}

#[test]
fn a_refused_action_names_itself_and_the_status() {
    let p = policy();
    let mut m = machine(Deploying);
    let err = m
        .perform(Action::Commission, &root(), &opts(), t0(), &p)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "action 'commission' is not allowed when the machine is Deploying (status 9)"
    );
    let mut r = machine(FailedReleasing);
    let err = r
        .perform(Action::MarkBroken, &root(), &opts(), t0(), &p)
        .unwrap_err();
    assert_eq!(
        err,
        LifecycleError::ActionNotAllowed {
            action: Action::MarkBroken,
            status: FailedReleasing
        }
    );
    let text = err.to_string();
    assert!(
        text.contains("mark-broken") && text.contains("Releasing failed") && text.contains("13"),
        "{text}"
    );
}
