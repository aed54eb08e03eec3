//! The commands: what `attach`, `detach`, `gc` and `status` do to the state.
//! Decisions are plain functions (`rules`); every change is an idempotent
//! step (`steps`), so a repeated or interrupted command converges on the
//! asked-for state. Everything here runs under the pin root's lock.
pub mod attach;
pub mod check;
pub mod detach;

mod migrate;
pub mod reconcile;
pub mod report;
pub mod rules;
pub mod status;
pub mod steps;
pub mod upgrade;
