//! Alerts: rules over check verdicts, metrics, forecasts, links and jobs, each alert a
//! persisted state machine, routed to notification channels. So far, the state machine
//! (`state`): firing, resolving with hysteresis, flap detection.

pub mod state;
