//! One alert's life, as a pure function of its record and each evaluation: inactive →
//! pending (its condition has held for less than `for`) → firing → resolved once the
//! condition has been clear for `keep_firing_for` (hysteresis: a value hovering at the
//! threshold does not resolve and re-fire), then inactive.
//!
//! Flapping is judged as Nagios does: the share of changes between firing and not among the
//! last [`HISTORY`] evaluations, the newest weighted most (blips shorter than `for`, and
//! clearings shorter than `keep_firing_for`, are no changes). Above `flap_high` percent the alert is
//! flapping — it says so once and is quiet until the share falls below `flap_low`; then it
//! says once where it settled. So a check that flaps twenty times notifies twice, not twenty.
//!
//! The record is what the store keeps: a restart resumes from it, so nothing already said
//! is said again.

use serde::{Deserialize, Serialize};

/// Evaluations the flap detection looks back over.
pub const HISTORY: u32 = 21;
/// Fewer evaluations than this say nothing about flapping.
const MIN_EVALUATIONS: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum State {
    Inactive,
    /// The condition holds, not yet for `for`.
    Pending {
        since_ms: i64,
    },
    Firing {
        since_ms: i64,
    },
    /// Firing, and the condition has been clear since then (less than `keep_firing_for`).
    Clearing {
        firing_since_ms: i64,
        clear_since_ms: i64,
    },
}

/// When an alert fires and resolves, and when it flaps.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    /// How long the condition must hold before the alert fires.
    pub for_ms: i64,
    /// How long the condition must stay clear before a firing alert resolves.
    pub keep_firing_for_ms: i64,
    /// Flapping starts above this percentage of weighted state changes, and ends below
    /// `flap_low`.
    pub flap_high: f64,
    pub flap_low: f64,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            for_ms: 0,
            keep_firing_for_ms: 0,
            flap_high: 50.0,
            flap_low: 25.0,
        }
    }
}

/// What an evaluation tells the people the alert is routed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// The problem began at `since_ms`.
    Firing {
        since_ms: i64,
    },
    Resolved {
        since_ms: i64,
    },
    /// It keeps changing; nothing more is said until it settles.
    Flapping,
    /// It stopped flapping, firing or not.
    Settled {
        firing: bool,
    },
}

/// An alert's persisted record.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub state: State,
    /// Whether it was firing after each of the last [`HISTORY`] evaluations, newest in bit 0.
    pub history: u32,
    /// How many evaluations `history` holds (up to [`HISTORY`]).
    pub evaluations: u32,
    pub flapping: bool,
}

impl Default for Record {
    fn default() -> Self {
        Self {
            state: State::Inactive,
            history: 0,
            evaluations: 0,
            flapping: false,
        }
    }
}

impl Record {
    pub fn is_firing(&self) -> bool {
        matches!(self.state, State::Firing { .. } | State::Clearing { .. })
    }

    /// The record after one evaluation at `now_ms` (`holds`: the condition is met), and what
    /// to say about it, if anything.
    pub fn evaluate(self, holds: bool, now_ms: i64, timing: &Timing) -> (Self, Option<Notice>) {
        let (state, transition) = next_state(self.state, holds, now_ms, timing);
        let mask = (1u32 << HISTORY) - 1;
        let firing = matches!(state, State::Firing { .. } | State::Clearing { .. });
        let mut record = Self {
            state,
            history: ((self.history << 1) | u32::from(firing)) & mask,
            evaluations: (self.evaluations + 1).min(HISTORY),
            flapping: self.flapping,
        };
        let change = record.change_percent();
        let notice = if !record.flapping && change > timing.flap_high {
            record.flapping = true;
            Some(Notice::Flapping)
        } else if record.flapping && change < timing.flap_low {
            // Whatever was last said is stale after flapping: say where it settled.
            record.flapping = false;
            Some(Notice::Settled { firing })
        } else if record.flapping {
            None
        } else {
            transition
        };
        (record, notice)
    }

    /// The weighted share of changes between consecutive verdicts, in percent: the oldest
    /// change weighs 0.8, the newest 1.2 (Nagios' weighting).
    pub fn change_percent(&self) -> f64 {
        let n = self.evaluations;
        if n < MIN_EVALUATIONS {
            return 0.0;
        }
        let (mut changed, mut total) = (0.0, 0.0);
        // Change i lies between verdicts i and i + 1 (bit 0 newest); i = 0 is the newest.
        for i in 0..n - 1 {
            let weight = 1.2 - 0.4 * f64::from(i) / f64::from((n - 2).max(1));
            let a = (self.history >> i) & 1;
            let b = (self.history >> (i + 1)) & 1;
            if a != b {
                changed += weight;
            }
            total += weight;
        }
        changed / total * 100.0
    }
}

/// The state machine proper: the next state, and a notice when the alert fires or
/// resolves.
fn next_state(state: State, holds: bool, now: i64, timing: &Timing) -> (State, Option<Notice>) {
    let fire = |since_ms: i64| {
        (
            State::Firing { since_ms },
            Some(Notice::Firing { since_ms }),
        )
    };
    match (state, holds) {
        (State::Inactive, false) => (State::Inactive, None),
        (State::Inactive, true) if timing.for_ms <= 0 => fire(now),
        (State::Inactive, true) => (State::Pending { since_ms: now }, None),
        (State::Pending { since_ms }, true) if now - since_ms >= timing.for_ms => fire(since_ms),
        (State::Pending { since_ms }, true) => (State::Pending { since_ms }, None),
        (State::Pending { .. }, false) => (State::Inactive, None),
        (State::Firing { since_ms }, true) => (State::Firing { since_ms }, None),
        (State::Firing { .. }, false) if timing.keep_firing_for_ms <= 0 => {
            (State::Inactive, Some(Notice::Resolved { since_ms: now }))
        }
        (State::Firing { since_ms }, false) => (
            State::Clearing {
                firing_since_ms: since_ms,
                clear_since_ms: now,
            },
            None,
        ),
        (
            State::Clearing {
                firing_since_ms, ..
            },
            true,
        ) => (
            State::Firing {
                since_ms: firing_since_ms,
            },
            None,
        ),
        (State::Clearing { clear_since_ms, .. }, false)
            if now - clear_since_ms >= timing.keep_firing_for_ms =>
        {
            (
                State::Inactive,
                Some(Notice::Resolved {
                    since_ms: clear_since_ms,
                }),
            )
        }
        (clearing @ State::Clearing { .. }, false) => (clearing, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: i64 = 60_000;

    /// Runs `verdicts` one a minute from zero; the notices with the minute they came.
    fn run(verdicts: &[bool], timing: &Timing) -> (Record, Vec<(i64, Notice)>) {
        let mut record = Record::default();
        let mut notices = Vec::new();
        for (minute, holds) in verdicts.iter().enumerate() {
            let (next, notice) = record.evaluate(*holds, minute as i64 * MINUTE, timing);
            record = next;
            notices.extend(notice.map(|n| (minute as i64, n)));
        }
        (record, notices)
    }

    #[test]
    fn an_alert_fires_after_its_for_and_resolves_once() {
        let timing = Timing {
            for_ms: 2 * MINUTE,
            ..Timing::default()
        };
        let (record, notices) = run(&[false, true, true, true, true, false, false], &timing);
        assert_eq!(
            notices,
            [
                (3, Notice::Firing { since_ms: MINUTE }),
                (
                    5,
                    Notice::Resolved {
                        since_ms: 5 * MINUTE
                    }
                ),
            ],
            "the problem's start is when it began, not when it fired"
        );
        assert_eq!(record.state, State::Inactive);
        // Shorter than `for`: never fires.
        let (_, notices) = run(&[true, true, false, true, false], &timing);
        assert!(notices.is_empty(), "{notices:?}");
    }

    #[test]
    fn keep_firing_for_rides_out_a_short_clearing() {
        let timing = Timing {
            keep_firing_for_ms: 3 * MINUTE,
            ..Timing::default()
        };
        let verdicts = [true, false, false, true, false, false, false, false];
        let (record, notices) = run(&verdicts, &timing);
        assert_eq!(
            notices,
            [
                (0, Notice::Firing { since_ms: 0 }),
                (
                    7,
                    Notice::Resolved {
                        since_ms: 4 * MINUTE
                    }
                ),
            ]
        );
        assert!(!record.is_firing());
    }

    #[test]
    fn a_flapping_check_says_so_once_and_then_where_it_settled() {
        let timing = Timing::default();
        let mut verdicts: Vec<bool> = (0..20).map(|i| i % 2 == 0).collect();
        verdicts.extend([true; 25]);
        let (record, notices) = run(&verdicts, &timing);
        let kinds: Vec<Notice> = notices.iter().map(|(_, n)| *n).collect();
        assert_eq!(
            kinds,
            [
                Notice::Firing { since_ms: 0 },
                Notice::Resolved { since_ms: MINUTE },
                Notice::Firing {
                    since_ms: 2 * MINUTE
                },
                Notice::Flapping,
                Notice::Settled { firing: true },
            ],
            "{notices:?}"
        );
        assert!(!record.flapping && record.is_firing());
    }

    #[test]
    fn the_change_share_weighs_recent_changes_most() {
        let steady = Record {
            history: 0,
            evaluations: HISTORY,
            ..Record::default()
        };
        assert_eq!(steady.change_percent(), 0.0);
        let alternating = Record {
            history: 0b1_0101_0101_0101_0101_0101,
            evaluations: HISTORY,
            ..Record::default()
        };
        assert!((alternating.change_percent() - 100.0).abs() < 1e-9);
        let newest = Record {
            history: 0b1,
            evaluations: HISTORY,
            ..Record::default()
        };
        let oldest = Record {
            history: 1 << (HISTORY - 1),
            evaluations: HISTORY,
            ..Record::default()
        };
        assert!(newest.change_percent() > oldest.change_percent());
        // The record survives the store: a restart resumes where it was.
        let firing = Record {
            state: State::Firing { since_ms: 5 },
            ..steady
        };
        let stored = serde_json::to_string(&firing).unwrap();
        assert_eq!(serde_json::from_str::<Record>(&stored).unwrap(), firing);
        let (_, notice) = firing.evaluate(true, 10, &Timing::default());
        assert_eq!(notice, None, "firing again after a restart is not news");
    }
}
