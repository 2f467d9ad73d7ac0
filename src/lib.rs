//! tesoro-webhooks: delivers Tesoro CRM domain events to customers' systems as signed webhooks.
//!
//! # The path of one event
//!
//! 1. A CRM service publishes an envelope to the `tesoro.events` topic exchange; it lands in
//!    `{prefix}.events`.
//! 2. [`pipeline::fanout`] checks it ([`envelope`]; invalid ones go to quarantine) and finds the
//!    company's enabled webhooks whose filters match ([`domain::EventFilter`]) in a cache kept
//!    fresh by PostgreSQL LISTEN/NOTIFY ([`pipeline::Subscriptions`]).
//! 3. Each first attempt is made inline: [`sender`] signs ([`signing`]) and POSTs it, at most
//!    `max_in_flight_per_endpoint` at once per webhook (work for a slow one is handed to the
//!    deliveries queue; for a hanging one it is parked in the database, and
//!    [`pipeline::parking`] publishes its job when due). [`outcome`] classifies the result, and
//!    [`settle`] decides from it and the [`retry`] schedule what to publish, record and count.
//! 4. A failure publishes a job (headers: delivery, attempt) to a retry tier ([`broker`]): a
//!    quorum queue whose TTL dead-letters it into `{prefix}.deliveries` when due.
//!    [`pipeline::jobs`] runs it as the next attempt. After the last tier the delivery is
//!    Failed and its job goes to `{prefix}.dead`.
//! 5. The event, the delivery's new state and the attempt are written by the
//!    [`storage::Recorder`] in group-committed batches, keyed by (event id, webhook id). Each
//!    message is acked only after its outcome is durable: that commit, and any follow-up job
//!    confirmed by the broker, in the order [`settle`] documents.
//!
//! # Modules
//!
//! Pure: [`config`], [`domain`], [`envelope`], [`signing`], [`outcome`], [`retry`],
//! [`backoff`], [`circuit`] (when an endpoint's circuit opens, probes and closes), [`settle`] (how a delivery settles, which job may run, and the fate of a
//! message whose handling failed), [`endpoint_health`] (when a failing webhook is warned about
//! and disabled).
//! I/O, one crate each: [`storage`] (tokio-postgres), [`broker`] (lapin), [`sender`]
//! (reqwest), [`api`] (axum). Wiring: [`pipeline`], [`operational`] (publishing the events
//! about webhooks), [`recovery`], [`retention`], [`workers`] (the live workers' heartbeat), [`app`], [`cli`],
//! [`telemetry`], [`metrics`], [`internal_events`] (the notable events, each logged and counted by
//! one value), [`readiness`] (readiness, and the signal that pauses the consumers
//! during an outage). The load benchmark is the
//! `tesoro-bench` crate of the workspace (`bench/`).

pub mod api;
pub mod app;
pub mod backoff;
pub mod broker;
pub mod circuit;
pub mod cli;
pub mod config;
pub mod domain;
pub mod endpoint_health;
pub mod envelope;
pub mod internal_events;
pub mod metrics;
pub mod operational;
pub mod outcome;
pub mod pipeline;
pub mod readiness;
pub mod recovery;
pub mod retention;
pub mod retry;
pub mod sender;
pub mod settle;
pub mod signing;
pub mod storage;
pub mod telemetry;
pub mod workers;
