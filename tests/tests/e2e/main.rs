//! End-to-end tests: the real `tollgate` with `tollgate-mock` providers over loopback.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod api;
mod cache;
mod cli;
mod crash;
mod edge;
mod failover;
mod faults;
mod governance;
mod guardrails;
mod h2_resets;
mod hardening;
mod large;
mod ledger;
mod prometheus;
mod providers;
mod routing;
mod sdk;
mod secrets;
mod slowloris;
mod smuggling;
mod telemetry;
