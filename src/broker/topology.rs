//! Names and declarations of every exchange and queue the worker uses.
//!
//! ```text
//! {events_exchange} (topic) --"#"--> {prefix}.events            fan-out consumer
//!   or, with amqp.event_queues = N > 1:
//!                           --"#"--> {prefix}.events.hash       (x-consistent-hash on
//!                                      --"1"--> {prefix}.events.1..N     message_id)
//! {prefix} (direct) --"deliveries"--> {prefix}.deliveries       job consumer
//!                   --"retry.<d>"---> {prefix}.retry.<d>        TTL d, dead-letters to "deliveries"
//!                                     (each tier's delay spread over several such queues)
//!                   --"dead"--------> {prefix}.dead             dead consumer (marks Failed)
//!                   --"quarantine"--> {prefix}.quarantine       parked, never consumed
//! {prefix}.operational (topic)                                  events about webhooks, for
//!                                                               the CRM to bind to
//! ```
//!
//! All our queues are quorum queues (RabbitMQ 3.10+): replicated, and the retry tiers
//! dead-letter at-least-once (with `reject-publish` overflow, as that strategy requires), so a
//! retry is never dropped between a tier and the work queue.

use std::time::Duration;

use lapin::{
    Channel, ExchangeKind,
    options::{
        ExchangeBindOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
        QueueDeclareOptions, QueueDeleteOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

use crate::{
    config::{AmqpConfig, MAX_EVENT_QUEUES},
    retry::{Jitter, tier_label},
};

pub const DELIVERIES_KEY: &str = "deliveries";
pub const DEAD_KEY: &str = "dead";
pub const QUARANTINE_KEY: &str = "quarantine";
/// The weight of each event queue's binding to the hash exchange: all equal.
const SHARD_WEIGHT: &str = "1";
/// Returns of one message (nacks, lost connections, crashes) after which the broker moves it
/// from a consumed queue to quarantine. Well above `amqp.delivery_limit` (at most 25), which
/// the worker counts itself: outages hand every message in flight back once, and must not
/// bring a valid event near this bound. A fixed value: a queue's arguments cannot change once
/// it is declared.
pub const BROKER_DELIVERY_LIMIT: i64 = 50;

/// A queue, its binding and its arguments.
#[derive(Debug)]
pub struct QueueSpec<'a> {
    pub name: &'a str,
    pub exchange: &'a str,
    pub key: &'a str,
    pub arguments: FieldTable,
    /// Consumed by the worker, and so declared with the broker's delivery limit.
    pub consumed: bool,
}

impl QueueSpec<'_> {
    /// Declares the queue durable with its arguments, and binds it.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        declare_bound(
            channel,
            self.name,
            self.exchange,
            self.key,
            self.arguments.clone(),
        )
        .await
    }

    /// Binds the queue as it already exists, whatever its arguments.
    pub async fn keep_as_declared(&self, channel: &Channel) -> lapin::Result<()> {
        let passive = QueueDeclareOptions {
            passive: true,
            ..Default::default()
        };
        channel
            .queue_declare(self.name.into(), passive, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                self.name.into(),
                self.exchange.into(),
                self.key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
    }
}

/// `value` with the characters a regular expression gives meaning to escaped.
fn regex_escape(value: &str) -> String {
    value
        .chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

#[derive(Debug, Clone)]
pub struct Topology {
    pub events_exchange: String,
    /// The consistent-hash exchange that spreads events over the event queues when there is
    /// more than one; absent (removed at start) otherwise.
    pub events_hash_exchange: String,
    /// The queues the fan-out consumes: `{prefix}.events`, or `{prefix}.events.1` to `.N`.
    pub events_queues: Vec<String>,
    /// Our direct exchange for jobs, tiers, the dead-letter and quarantine queues.
    pub work_exchange: String,
    /// Our topic exchange for operational events (`webhook.failing`, ...): routing key = type.
    pub operational_exchange: String,
    pub deliveries_queue: String,
    pub dead_queue: String,
    pub quarantine_queue: String,
    pub tiers: Vec<Tier>,
}

/// One delay of the retry schedule: the queues its jobs wait in, one per jittered delay.
#[derive(Debug, Clone)]
pub struct Tier {
    pub delay: Duration,
    /// Ascending by TTL; one queue when there is no jitter.
    pub queues: Vec<DelayQueue>,
}

/// A queue whose messages wait `ttl`, then go to the deliveries queue. Named after its TTL,
/// so tiers whose spreads overlap share it, and a changed schedule declares new queues
/// instead of clashing with old arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayQueue {
    pub ttl: Duration,
    pub queue: String,
    pub routing_key: String,
}

impl Tier {
    /// The queue for a job that must wait at least `at_least`: one of those whose TTL is long
    /// enough, chosen by `roll` (a random number); the longest when none is.
    pub fn pick(&self, at_least: Duration, roll: u64) -> &DelayQueue {
        let long_enough = self.queues.partition_point(|q| q.ttl < at_least);
        let candidates = match &self.queues[long_enough..] {
            [] => &self.queues[self.queues.len() - 1..],
            some => some,
        };
        let index = usize::try_from(roll % candidates.len() as u64).unwrap_or(0);
        &candidates[index]
    }
}

impl Topology {
    pub fn new(config: &AmqpConfig, tier_delays: &[Duration], jitter: Jitter) -> Self {
        let prefix = &config.prefix;
        let delay_queue = |ttl: Duration| {
            let label = tier_label(ttl);
            DelayQueue {
                ttl,
                queue: format!("{prefix}.retry.{label}"),
                routing_key: format!("retry.{label}"),
            }
        };
        Self {
            events_exchange: config.events_exchange.clone(),
            events_hash_exchange: format!("{prefix}.events.hash"),
            events_queues: event_queue_names(prefix, config.event_queues),
            work_exchange: prefix.clone(),
            operational_exchange: format!("{prefix}.operational"),
            deliveries_queue: format!("{prefix}.deliveries"),
            dead_queue: format!("{prefix}.dead"),
            quarantine_queue: format!("{prefix}.quarantine"),
            tiers: tier_delays
                .iter()
                .map(|&delay| Tier {
                    delay,
                    queues: jitter.spread(delay).into_iter().map(delay_queue).collect(),
                })
                .collect(),
        }
    }

    /// Whether the events are spread over several queues by the hash exchange.
    pub fn spreads_events(&self) -> bool {
        self.events_queues.len() > 1
    }

    /// Where an event goes to be handled again (exchange, routing key): the hash exchange,
    /// which picks the queue by its message_id, or the one events queue.
    pub fn events_entry(&self) -> (&str, &str) {
        if self.spreads_events() {
            (&self.events_hash_exchange, "")
        } else {
            ("", &self.events_queues[0])
        }
    }

    /// The one events queue of `amqp.event_queues = 1` (and of versions before the setting).
    pub fn single_events_queue(&self) -> String {
        event_queue_names(&self.work_exchange, 1).remove(0)
    }

    /// Every events queue another `amqp.event_queues` would declare.
    pub fn other_events_queues(&self) -> Vec<String> {
        let prefix = &self.work_exchange;
        let mut names = event_queue_names(prefix, 1);
        names.extend(event_queue_names(prefix, MAX_EVENT_QUEUES));
        names.retain(|name| !self.events_queues.contains(name));
        names
    }

    /// Every delay queue once, shortest TTL first.
    pub fn delay_queues(&self) -> Vec<&DelayQueue> {
        let mut queues: Vec<&DelayQueue> = self.tiers.iter().flat_map(|t| &t.queues).collect();
        queues.sort_by_key(|q| q.ttl);
        queues.dedup_by_key(|q| q.ttl);
        queues
    }

    /// Every queue with its role, the label metrics name it by: `events`, `deliveries`,
    /// `retry.<ttl>` for each delay queue, `dead`, `quarantine`.
    pub fn queue_roles(&self) -> Vec<(String, &str)> {
        let mut roles: Vec<(String, &str)> = self
            .events_queues
            .iter()
            .map(|queue| (self.events_role(queue), queue.as_str()))
            .collect();
        roles.push(("deliveries".to_owned(), self.deliveries_queue.as_str()));
        roles.extend(
            self.delay_queues()
                .into_iter()
                .map(|q| (q.routing_key.clone(), q.queue.as_str())),
        );
        roles.push(("dead".to_owned(), self.dead_queue.as_str()));
        roles.push(("quarantine".to_owned(), self.quarantine_queue.as_str()));
        roles
    }

    /// An events queue's label in metrics: `events`, or `events.<n>` when they are spread.
    pub fn events_role(&self, queue: &str) -> String {
        let prefix_len = self.work_exchange.len() + 1;
        queue.get(prefix_len..).unwrap_or(queue).to_owned()
    }

    pub fn tier_for(&self, delay: Duration) -> Option<&Tier> {
        self.tiers.iter().find(|t| t.delay == delay)
    }

    /// Declares the exchanges; idempotent, and safe from several processes at once.
    pub async fn declare_exchanges(&self, channel: &Channel) -> lapin::Result<()> {
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
        channel
            .exchange_declare(
                self.operational_exchange.as_str().into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        if self.spreads_events() {
            channel
                .exchange_declare(
                    self.events_hash_exchange.as_str().into(),
                    ExchangeKind::Custom(HASH_EXCHANGE_TYPE.to_owned()),
                    durable,
                    hash_on_message_id(),
                )
                .await?;
            channel
                .exchange_bind(
                    self.events_hash_exchange.as_str().into(),
                    self.events_exchange.as_str().into(),
                    "#".into(),
                    ExchangeBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Stops routing events to `queue`, one of [`Self::other_events_queues`] that exists.
    /// Called once this layout's queues are bound, so that no event finds no queue meanwhile.
    pub async fn unbind_other_events_queue(
        &self,
        channel: &Channel,
        queue: &str,
    ) -> lapin::Result<()> {
        let (exchange, key) = if self.single_events_queue() == queue {
            (&self.events_exchange, "#")
        } else {
            (&self.events_hash_exchange, SHARD_WEIGHT)
        };
        channel
            .queue_unbind(
                queue.into(),
                exchange.as_str().into(),
                key.into(),
                FieldTable::default(),
            )
            .await
    }

    /// With one events queue, removes the hash exchange of a spread layout, and with it its
    /// bindings (from the events exchange, to the spread queues).
    pub async fn remove_unused_hash_exchange(&self, channel: &Channel) -> lapin::Result<()> {
        if self.spreads_events() {
            return Ok(());
        }
        channel
            .exchange_delete(
                self.events_hash_exchange.as_str().into(),
                ExchangeDeleteOptions::default(),
            )
            .await
    }

    /// Every queue, with its binding and arguments, in the order they are declared.
    pub fn queues<'a>(&'a self) -> Vec<QueueSpec<'a>> {
        let consumed = |name: &'a str, exchange: &'a str, key: &'a str| QueueSpec {
            name,
            exchange,
            key,
            arguments: self.consumed_arguments(),
            consumed: true,
        };
        let mut queues: Vec<QueueSpec<'a>> = if self.spreads_events() {
            let spread = |name: &'a String| QueueSpec {
                arguments: self.spread_arguments(),
                ..consumed(name, &self.events_hash_exchange, SHARD_WEIGHT)
            };
            self.events_queues.iter().map(spread).collect()
        } else {
            vec![consumed(&self.events_queues[0], &self.events_exchange, "#")]
        };
        queues.extend([
            consumed(&self.deliveries_queue, &self.work_exchange, DELIVERIES_KEY),
            consumed(&self.dead_queue, &self.work_exchange, DEAD_KEY),
            QueueSpec {
                name: &self.quarantine_queue,
                exchange: &self.work_exchange,
                key: QUARANTINE_KEY,
                arguments: quorum(),
                consumed: false,
            },
        ]);
        queues.extend(self.delay_queues().into_iter().map(|q| QueueSpec {
            name: &q.queue,
            exchange: &self.work_exchange,
            key: &q.routing_key,
            arguments: self.delay_arguments(q.ttl),
            consumed: false,
        }));
        queues
    }

    /// The queues the worker consumes: the broker ends any loop that the worker's own bound
    /// (`amqp.delivery_limit`) cannot see, such as a message that kills the process each time,
    /// by dead-lettering it into quarantine after [`BROKER_DELIVERY_LIMIT`] returns. Explicit,
    /// so that no broker version drops it instead (RabbitMQ 4.0 and later set a limit of 20
    /// by default, and without a target drop the message).
    fn consumed_arguments(&self) -> FieldTable {
        let mut args = quorum();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(BROKER_DELIVERY_LIMIT),
        );
        self.dead_letter_to(&mut args, QUARANTINE_KEY);
        args
    }

    /// A spread events queue: as any consumed one, with its leader placed on the node that
    /// leads the fewest queues, so that N queues on N nodes lead one each.
    fn spread_arguments(&self) -> FieldTable {
        let mut args = self.consumed_arguments();
        args.insert("x-queue-leader-locator".into(), long_string("balanced"));
        args
    }

    /// Dead-letters into our exchange under `key`, at least once (which needs
    /// `reject-publish` overflow).
    fn dead_letter_to(&self, args: &mut FieldTable, key: &str) {
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(&self.work_exchange),
        );
        args.insert("x-dead-letter-routing-key".into(), long_string(key));
        args.insert(
            "x-dead-letter-strategy".into(),
            long_string("at-least-once"),
        );
        args.insert("x-overflow".into(), long_string("reject-publish"));
    }

    /// What an operator runs to give queues declared by an older version (without the
    /// delivery limit and dead-letter target, which a queue cannot change once declared) the
    /// same safety net, as a policy.
    pub fn safety_net_policy_command(&self) -> String {
        let prefix = regex_escape(&self.work_exchange);
        format!(
            "rabbitmqctl set_policy --apply-to queues {name}-safety-net '^{prefix}\\.(events|deliveries|dead)$' \
             '{{\"delivery-limit\":{BROKER_DELIVERY_LIMIT},\"dead-letter-exchange\":\"{exchange}\",\
             \"dead-letter-routing-key\":\"{QUARANTINE_KEY}\",\"dead-letter-strategy\":\"at-least-once\",\
             \"overflow\":\"reject-publish\"}}'",
            name = self.work_exchange,
            exchange = self.work_exchange,
        )
    }

    fn delay_arguments(&self, delay: Duration) -> FieldTable {
        let mut args = quorum();
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        // Without an explicit key the tier's own key would be kept, looping back into it.
        self.dead_letter_to(&mut args, DELIVERIES_KEY);
        args
    }

    /// Deletes every queue and exchange with our prefix, those of another
    /// `amqp.event_queues` too (not the shared events exchange, unless
    /// `include_events_exchange`). For tests and benchmarks.
    pub async fn delete(
        &self,
        channel: &Channel,
        include_events_exchange: bool,
    ) -> lapin::Result<()> {
        let mut queues: Vec<&String> = self.events_queues.iter().collect();
        queues.extend([
            &self.deliveries_queue,
            &self.dead_queue,
            &self.quarantine_queue,
        ]);
        queues.extend(self.delay_queues().into_iter().map(|q| &q.queue));
        let others = self.other_events_queues();
        queues.extend(&others);
        for queue in queues {
            channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await?;
        }
        for exchange in [
            &self.work_exchange,
            &self.operational_exchange,
            &self.events_hash_exchange,
        ] {
            channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await?;
        }
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

/// The exchange type of RabbitMQ's plugin `rabbitmq_consistent_hash_exchange`.
pub const HASH_EXCHANGE_TYPE: &str = "x-consistent-hash";

/// Hashes the AMQP message_id (the event id), so that every copy of an event, published
/// again or handed back, goes to the same queue; a message without one goes to a fixed queue.
fn hash_on_message_id() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("hash-property".into(), long_string("message_id"));
    args
}

/// `{prefix}.events` for one queue; `{prefix}.events.1` to `.{count}` for several.
fn event_queue_names(prefix: &str, count: u16) -> Vec<String> {
    match count {
        1 => vec![format!("{prefix}.events")],
        _ => (1..=count)
            .map(|i| format!("{prefix}.events.{i}"))
            .collect(),
    }
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
        let topology = crate::app::topology(&config);
        assert_eq!(topology.events_queues, ["webhooks.events"]);
        assert_eq!(topology.deliveries_queue, "webhooks.deliveries");
        assert_eq!(topology.dead_queue, "webhooks.dead");
        let first: Vec<_> = topology.tiers[0]
            .queues
            .iter()
            .map(|q| q.queue.as_str())
            .collect();
        assert_eq!(
            first,
            [
                "webhooks.retry.54s",
                "webhooks.retry.57s",
                "webhooks.retry.1m",
                "webhooks.retry.1m3s",
                "webhooks.retry.1m6s"
            ]
        );
        let last: Vec<_> = topology.tiers[3]
            .queues
            .iter()
            .map(|q| q.routing_key.as_str())
            .collect();
        assert_eq!(
            last,
            [
                "retry.1h48m",
                "retry.1h54m",
                "retry.2h",
                "retry.2h6m",
                "retry.2h12m"
            ]
        );
        assert_eq!(topology.delay_queues().len(), 20);
        assert!(topology.tier_for(Duration::from_secs(300)).is_some());
        assert!(topology.tier_for(Duration::from_secs(301)).is_none());
    }

    #[test]
    fn a_job_goes_to_a_random_queue_of_its_tier_that_waits_long_enough() {
        let config = Config::defaults().expect("defaults");
        let topology = crate::app::topology(&config);
        let tier = topology.tier_for(Duration::from_secs(60)).expect("tier");
        let picked = |at_least: u64| -> std::collections::BTreeSet<Duration> {
            (0..50)
                .map(|roll| tier.pick(Duration::from_secs(at_least), roll).ttl)
                .collect()
        };
        let secs = |v: &[u64]| v.iter().copied().map(Duration::from_secs).collect();
        assert_eq!(picked(0), secs(&[54, 57, 60, 63, 66]));
        assert_eq!(picked(60), secs(&[60, 63, 66]));
        assert_eq!(picked(64), secs(&[66]));
        // Longer than the tier holds: its longest queue (the caller chose the tier).
        assert_eq!(picked(600), secs(&[66]));
    }

    #[test]
    fn overlapping_spreads_share_their_queues() {
        let config = Config::defaults().expect("defaults");
        let amqp = &config.amqp;
        let jitter = Jitter::new(0.1).expect("valid");
        let delays = [Duration::from_millis(200), Duration::from_millis(220)];
        let topology = Topology::new(amqp, &delays, jitter);
        let ttls: Vec<_> = topology
            .delay_queues()
            .iter()
            .map(|q| q.ttl.as_millis())
            .collect();
        assert_eq!(ttls, [180, 190, 198, 200, 209, 210, 220, 231, 242]);
        assert_eq!(topology.queues().len(), 4 + ttls.len());
    }

    fn as_json(args: &FieldTable) -> serde_json::Value {
        args.inner()
            .iter()
            .map(|(key, value)| {
                let value = match value {
                    AMQPValue::LongString(s) => {
                        serde_json::json!(String::from_utf8_lossy(s.as_bytes()))
                    }
                    AMQPValue::LongLongInt(n) => serde_json::json!(n),
                    other => panic!("unexpected argument {other:?}"),
                };
                (key.to_string(), value)
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    }

    /// `definitions` declares exactly what the workers declare with `topology`: the same
    /// queues with the same arguments (a queue declared with other arguments would make the
    /// workers' own declaration fail), bindings and exchanges.
    fn assert_definitions_match(definitions: &str, topology: &Topology) {
        let definitions: serde_json::Value =
            serde_json::from_str(definitions).expect("definitions parse");
        let queues = definitions["queues"].as_array().expect("queues");
        let bindings = definitions["bindings"].as_array().expect("bindings");
        let specs = topology.queues();
        let exchange_bindings = usize::from(topology.spreads_events());
        assert_eq!(queues.len(), specs.len());
        assert_eq!(bindings.len(), specs.len() + exchange_bindings);
        for spec in &specs {
            let queue = queues
                .iter()
                .find(|q| q["name"] == spec.name)
                .unwrap_or_else(|| panic!("{} missing", spec.name));
            assert_eq!(queue["durable"], true, "{}", spec.name);
            assert_eq!(
                queue["arguments"],
                as_json(&spec.arguments),
                "{}",
                spec.name
            );
            assert!(
                bindings.iter().any(|b| b["source"] == spec.exchange
                    && b["destination"] == spec.name
                    && b["destination_type"] == "queue"
                    && b["routing_key"] == spec.key),
                "binding of {}",
                spec.name
            );
        }
        let exchanges: Vec<_> = definitions["exchanges"]
            .as_array()
            .expect("exchanges")
            .iter()
            .map(|e| {
                (
                    e["name"].as_str().unwrap_or(""),
                    e["type"].as_str().unwrap_or(""),
                    e["arguments"].clone(),
                )
            })
            .collect();
        let none = serde_json::json!({});
        let mut expected = vec![
            (topology.events_exchange.as_str(), "topic", none.clone()),
            (topology.work_exchange.as_str(), "direct", none.clone()),
            (topology.operational_exchange.as_str(), "topic", none),
        ];
        if topology.spreads_events() {
            expected.push((
                topology.events_hash_exchange.as_str(),
                HASH_EXCHANGE_TYPE,
                as_json(&hash_on_message_id()),
            ));
            assert!(
                bindings
                    .iter()
                    .any(|b| b["source"] == *topology.events_exchange
                        && b["destination"] == *topology.events_hash_exchange
                        && b["destination_type"] == "exchange"
                        && b["routing_key"] == "#"),
                "the events exchange feeds the hash exchange"
            );
        }
        assert_eq!(exchanges, expected);
    }

    /// The definitions shipped for teams that provision the broker ahead of the workers:
    /// `deploy/rabbitmq/definitions.json` for the default configuration, and
    /// `definitions.event-queues-3.json` for `amqp.event_queues = 3`.
    #[test]
    fn the_shipped_definitions_match_the_topology() {
        let mut config = Config::defaults().expect("defaults");
        assert_definitions_match(
            include_str!("../../deploy/rabbitmq/definitions.json"),
            &crate::app::topology(&config),
        );
        config.amqp.event_queues = 3;
        assert_definitions_match(
            include_str!("../../deploy/rabbitmq/definitions.event-queues-3.json"),
            &crate::app::topology(&config),
        );
    }

    #[test]
    fn several_event_queues_are_fed_by_the_hash_exchange_and_led_by_balanced_nodes() {
        let mut config = Config::defaults().expect("defaults");
        config.amqp.event_queues = 3;
        let topology = crate::app::topology(&config);
        assert_eq!(
            topology.events_queues,
            [
                "webhooks.events.1",
                "webhooks.events.2",
                "webhooks.events.3"
            ]
        );
        assert_eq!(topology.events_entry(), ("webhooks.events.hash", ""));
        assert_eq!(topology.events_role("webhooks.events.2"), "events.2");
        let spread: Vec<_> = topology
            .queues()
            .into_iter()
            .filter(|q| q.exchange == "webhooks.events.hash")
            .collect();
        assert_eq!(spread.len(), 3);
        for queue in &spread {
            assert_eq!(queue.key, "1", "{}", queue.name);
            assert!(queue.consumed, "{}", queue.name);
            assert_eq!(
                queue.arguments.inner().get("x-queue-leader-locator"),
                Some(&long_string("balanced")),
                "{}",
                queue.name
            );
        }
        // The other layouts' queues, drained when they exist: the single queue, and those of
        // a larger count.
        let others = topology.other_events_queues();
        assert_eq!(others[0], "webhooks.events");
        assert_eq!(others[1], "webhooks.events.4");
        assert_eq!(others.len(), 1 + usize::from(MAX_EVENT_QUEUES) - 3);

        config.amqp.event_queues = 1;
        let single = crate::app::topology(&config);
        assert_eq!(single.events_entry(), ("", "webhooks.events"));
        assert_eq!(single.events_role("webhooks.events"), "events");
        let others = single.other_events_queues();
        assert_eq!(others.len(), usize::from(MAX_EVENT_QUEUES));
        assert_eq!(others[0], "webhooks.events.1");
    }

    /// No broker version may drop a consumed message silently: each consumed queue ends a
    /// loop in quarantine; the quarantine queue itself dead-letters nowhere.
    #[test]
    fn consumed_queues_dead_letter_into_quarantine() {
        let config = Config::defaults().expect("defaults");
        let topology = crate::app::topology(&config);
        let queues = topology.queues();
        let text = |args: &FieldTable, key: &str| match args.inner().get(key) {
            Some(AMQPValue::LongString(s)) => {
                Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
            }
            _ => None,
        };
        for queue in &queues {
            let args = &queue.arguments;
            assert_eq!(
                text(args, "x-queue-type").as_deref(),
                Some("quorum"),
                "{}",
                queue.name
            );
            let consumed =
                ["webhooks.events", "webhooks.deliveries", "webhooks.dead"].contains(&queue.name);
            assert_eq!(queue.consumed, consumed, "{}", queue.name);
            if consumed {
                assert_eq!(
                    args.inner().get("x-delivery-limit"),
                    Some(&AMQPValue::LongLongInt(BROKER_DELIVERY_LIMIT)),
                    "{}",
                    queue.name
                );
                assert_eq!(
                    text(args, "x-dead-letter-exchange").as_deref(),
                    Some("webhooks")
                );
                assert_eq!(
                    text(args, "x-dead-letter-routing-key").as_deref(),
                    Some(QUARANTINE_KEY)
                );
                assert_eq!(
                    text(args, "x-dead-letter-strategy").as_deref(),
                    Some("at-least-once")
                );
            }
            if queue.name == "webhooks.quarantine" {
                assert_eq!(text(args, "x-dead-letter-exchange"), None);
                assert!(args.inner().get("x-delivery-limit").is_none());
            }
        }
        let policy = topology.safety_net_policy_command();
        assert!(
            policy.contains("'^webhooks\\.(events|deliveries|dead)$'"),
            "{policy}"
        );
        assert!(policy.contains("\"delivery-limit\":50"), "{policy}");
        assert!(
            policy.contains("\"dead-letter-routing-key\":\"quarantine\""),
            "{policy}"
        );
    }

    #[test]
    fn regex_escape_escapes_what_a_policy_pattern_gives_meaning_to() {
        assert_eq!(regex_escape("tw.prod-1"), "tw\\.prod-1");
        assert_eq!(regex_escape("a+b(c)"), "a\\+b\\(c\\)");
    }
}
