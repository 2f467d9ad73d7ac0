//! What tesoro-webhooks' tests and benchmark need that is not the product, kept out of the
//! product's API:
//!
//! - [`amqp`]: a connection to the first broker node that answers, a raw publisher (any bytes,
//!   any exchange, many confirms outstanding), and the benchmark's tap queue;
//! - [`baseline`]: the bare consume → POST → ack loop, the ceiling the benchmark compares the
//!   worker with;
//! - [`receiver`]: the benchmark's receivers (one that records arrivals, one that never
//!   answers);
//! - [`signature`]: a Standard Webhooks verifier written from the specification alone, so a
//!   test checks the worker's signatures against a second implementation.

pub mod amqp;
pub mod baseline;
pub mod receiver;
pub mod signature;
