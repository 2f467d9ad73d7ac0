//! Names and declarations of every exchange and queue the worker uses.
//!
//! ```text
//! {events_exchange} (topic) --"#"--> {prefix}.events            fan-out consumer
//! {prefix} (direct) --"deliveries"--> {prefix}.deliveries       job consumer
//!                   --"retry.<d>"---> {prefix}.retry.<d>        TTL d, dead-letters to "deliveries"
//!                   --"dead"--------> {prefix}.dead             dead consumer (marks Failed)
//!                   --"quarantine"--> {prefix}.quarantine       parked, never consumed
//! ```
//!
//! All our queues are quorum queues (RabbitMQ 3.10+): replicated, and the retry tiers
//! dead-letter at-least-once (with `reject-publish` overflow, as that strategy requires), so a
//! retry is never dropped between a tier and the work queue.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{
        ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
        QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use crate::{config::AmqpConfig, retry::tier_label};

pub const DELIVERIES_KEY: &str = "deliveries";
pub const DEAD_KEY: &str = "dead";
pub const QUARANTINE_KEY: &str = "quarantine";

#[derive(Debug, Clone)]
pub struct Topology {
    pub events_exchange: String,
    /// Our direct exchange for jobs, tiers, the dead-letter and quarantine queues.
    pub work_exchange: String,
    pub events_queue: String,
    pub deliveries_queue: String,
    pub dead_queue: String,
    pub quarantine_queue: String,
    pub tiers: Vec<Tier>,
}

#[derive(Debug, Clone)]
pub struct Tier {
    pub delay: Duration,
    pub queue: String,
    pub routing_key: String,
}

impl Topology {
    pub fn new(config: &AmqpConfig, tier_delays: &[Duration]) -> Self {
        let prefix = &config.prefix;
        Self {
            events_exchange: config.events_exchange.clone(),
            work_exchange: prefix.clone(),
            events_queue: format!("{prefix}.events"),
            deliveries_queue: format!("{prefix}.deliveries"),
            dead_queue: format!("{prefix}.dead"),
            quarantine_queue: format!("{prefix}.quarantine"),
            tiers: tier_delays
                .iter()
                .map(|&delay| {
                    let label = tier_label(delay);
                    Tier {
                        delay,
                        queue: format!("{prefix}.retry.{label}"),
                        routing_key: format!("retry.{label}"),
                    }
                })
                .collect(),
        }
    }

    pub fn tier_for(&self, delay: Duration) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.delay == delay)
    }

    /// Declares everything; idempotent, and safe from several processes at once.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        channel
            .exchange_declare(
                self.events_exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.work_exchange.as_str().into(),
                ExchangeKind::Direct,
                durable,
                FieldTable::default(),
            )
            .await?;
        declare_bound(
            channel,
            &self.events_queue,
            &self.events_exchange,
            "#",
            quorum(),
        )
        .await?;
        for (queue, key) in [
            (&self.deliveries_queue, DELIVERIES_KEY),
            (&self.dead_queue, DEAD_KEY),
            (&self.quarantine_queue, QUARANTINE_KEY),
        ] {
            declare_bound(channel, queue, &self.work_exchange, key, quorum()).await?;
        }
        for tier in &self.tiers {
            let args = self.tier_arguments(tier.delay);
            declare_bound(
                channel,
                &tier.queue,
                &self.work_exchange,
                &tier.routing_key,
                args,
            )
            .await?;
        }
        Ok(())
    }

    fn tier_arguments(&self, delay: Duration) -> FieldTable {
        let mut args = quorum();
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.work_exchange),
        );
        // Without an explicit key the tier's own key would be kept, looping back into it.
        args.insert(
            "x-dead-letter-routing-key".into(),
            long_string(DELIVERIES_KEY),
        );
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
        args
    }

    /// Deletes every queue and exchange with our prefix (not the shared events exchange,
    /// unless `include_events_exchange`). For tests and benchmarks.
    pub async fn delete(
        &self,
        channel: &Channel,
        include_events_exchange: bool,
    ) -> lapin::Result<()> {
        let mut queues = vec![
            &self.events_queue,
            &self.deliveries_queue,
            &self.dead_queue,
            &self.quarantine_queue,
        ];
        queues.extend(self.tiers.iter().map(|t| &t.queue));
        for queue in queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        channel
            .exchange_delete(
                self.work_exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await?;
        if include_events_exchange {
            channel
                .exchange_delete(
                    self.events_exchange.as_str().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await?;
        }
        Ok(())
    }
}

/// A topic exchange and a quorum queue bound to all of it.
pub async fn declare_tap(channel: &Channel, exchange: &str, queue: &str) -> lapin::Result<()> {
    let options = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Topic,
            options,
            FieldTable::default(),
        )
        .await?;
    declare_bound(channel, queue, exchange, "#", quorum()).await
}

pub async fn delete_tap(channel: &Channel, exchange: &str, queue: &str) -> lapin::Result<()> {
    channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    channel
        .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
        .await
}

/// A durable queue with `args`, bound to `exchange` under `key`.
async fn declare_bound(
    channel: &Channel,
    queue: &str,
    exchange: &str,
    key: &str,
    args: FieldTable,
) -> lapin::Result<()> {
    let options = QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel.queue_declare(queue.into(), options, args).await?;
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    args
}

pub fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

pub fn short(value: &str) -> ShortString {
    ShortString::from(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn names_follow_the_prefix_and_the_design() {
        let config = Config::defaults().expect("defaults");
        let topology = Topology::new(&config.amqp, &config.delivery.retry_schedule.tiers());
        assert_eq!(topology.events_queue, "webhooks.events");
        assert_eq!(topology.deliveries_queue, "webhooks.deliveries");
        assert_eq!(topology.dead_queue, "webhooks.dead");
        let tiers: Vec<_> = topology.tiers.iter().map(|t| t.queue.as_str()).collect();
        assert_eq!(
            tiers,
            [
                "webhooks.retry.1m",
                "webhooks.retry.5m",
                "webhooks.retry.30m",
                "webhooks.retry.2h"
            ]
        );
        assert!(topology.tier_for(Duration::from_secs(300)).is_some());
        assert!(topology.tier_for(Duration::from_secs(301)).is_none());
    }
}
