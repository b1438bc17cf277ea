//! Telemetry as projections of the one event stream: Prometheus metrics
//! (`metrics`) and OpenTelemetry traces (`traces`) are both built from the
//! events the store commits and broadcasts, so they can never disagree with
//! the event log, and no component needs instrumenting twice.

pub mod metrics;
pub mod traces;
