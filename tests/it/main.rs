//! Integration tests against the real RabbitMQ and PostgreSQL. Each test starts its own worker
//! in-process with a random queue prefix, its own events exchange and its own database, and
//! receives webhooks on real HTTP servers on 127.0.0.1. See `harness`.

mod acks;
mod api;
mod circuit;
mod connect;
mod contract;
mod crash;
mod delivery;
mod deploy;
mod endpoint_health;
mod event_queues;
mod harness;
mod headers;
mod logs;
mod metrics;
mod openapi;
mod parking;
mod poison;
mod quarantine;
mod recorder;
mod recovery;
mod retention;
mod retries;
mod schema;
mod security;
mod ssrf;
mod stop;
mod subscriptions;
mod tenancy;
mod tls;
mod ui;
mod upgrade;
