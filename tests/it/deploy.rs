//! The files under `deploy/` and the Dockerfile, checked as far as this machine can without a
//! Docker engine or a cluster: they parse, every configuration key they set exists, ports and
//! paths agree with the code, the dashboard and the alert rules name only metrics the worker
//! exports, and each alert has a runbook section in docs/operations.md.

use std::{collections::BTreeSet, path::PathBuf, time::Duration};

use clap::Parser;
use serde_json::Value;
use tesoro_webhooks::{cli::Cli, config::Config};

use crate::harness::{TestWorker, test_config};

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a YAML file, as JSON values, with `<<` merge keys applied.
fn yaml(path: &str) -> Vec<Value> {
    let text = read(path);
    yaml_serde::Deserializer::from_str(&text)
        .map(|document| {
            let mut value: yaml_serde::Value =
                serde::Deserialize::deserialize(document).unwrap_or_else(|e| panic!("{path}: {e}"));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("{path}: {e}"))
        })
        .collect()
}

/// The metric names an expression uses (histogram series named by their base metric).
fn metric_names(expression: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expression;
    while let Some(start) = rest.find("tesoro_webhooks_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        names.insert(base.to_owned());
        rest = &tail[end..];
    }
    names
}

fn alert_rules() -> Vec<Value> {
    yaml("deploy/prometheus/alerts.yml")[0]["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .collect()
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_name_only_metrics_the_worker_exports() {
    let dashboard: Value =
        serde_json::from_str(&read("deploy/grafana/tesoro-webhooks.json")).expect("json");
    let mut expressions: Vec<String> = dashboard["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|panel| panel["targets"].as_array().expect("targets").clone())
        .map(|target| target["expr"].as_str().expect("expr").to_owned())
        .collect();
    assert!(expressions.len() >= 15, "the board graphs something");
    expressions.extend(
        alert_rules()
            .iter()
            .map(|rule| rule["expr"].as_str().expect("expr").to_owned()),
    );
    let named: BTreeSet<String> = expressions.iter().flat_map(|e| metric_names(e)).collect();

    // The worker binary's own /metrics: every metric it exports is declared at start, but for
    // the gauges read from the database at each scrape, which a scrape on a loaded machine
    // may miss (their query has 1 s): up to the deadline, scrape again until all are there.
    let worker = TestWorker::start_process(test_config()).await;
    let scrape = || async {
        worker
            .metrics()
            .await
            .lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_owned)
            .collect::<BTreeSet<String>>()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let mut exported = scrape().await;
    while !named.is_subset(&exported) && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        exported = scrape().await;
    }
    assert!(exported.len() >= 20, "{exported:?}");

    let mut used = BTreeSet::new();
    for expression in &expressions {
        let names = metric_names(expression);
        for name in &names {
            assert!(
                exported.contains(name),
                "{name} (in {expression}) is not exported"
            );
        }
        used.extend(names);
    }
    for wanted in [
        "tesoro_webhooks_attempt_duration_seconds",
        "tesoro_webhooks_delivery_latency_seconds",
        "tesoro_webhooks_queue_messages_ready",
        "tesoro_webhooks_deliveries_parked",
        "tesoro_webhooks_deliveries_in_flight",
    ] {
        assert!(used.contains(wanted), "nothing shows {wanted}");
    }
}

#[test]
fn every_alert_has_a_summary_and_a_runbook_section() {
    let operations = read("docs/operations.md");
    let headings: BTreeSet<String> = operations
        .lines()
        .filter(|line| line.starts_with('#'))
        .map(|heading| heading.trim_start_matches('#').trim().to_lowercase())
        .collect();
    let rules = alert_rules();
    assert!(rules.len() >= 8);
    for rule in rules {
        let name = rule["alert"].as_str().expect("alert name");
        assert!(rule["annotations"]["summary"].is_string(), "{name}");
        let runbook = rule["annotations"]["runbook"].as_str().expect("runbook");
        let anchor = runbook
            .strip_prefix("docs/operations.md#")
            .expect("an anchor in docs/operations.md");
        assert!(
            headings.contains(anchor),
            "{name}: no section {anchor} in docs/operations.md"
        );
    }
    let prometheus = &yaml("deploy/prometheus/prometheus.yml")[0];
    assert_eq!(
        prometheus["scrape_configs"][0]["job_name"], "tesoro-webhooks",
        "the job name the alerts select"
    );
}

/// `TESORO_WEBHOOKS__SECTION__KEY` names a key of config/default.toml.
fn assert_config_key(variable: &str) {
    let defaults: toml::Table = toml::from_str(&read("config/default.toml")).expect("toml");
    let path = variable
        .strip_prefix("TESORO_WEBHOOKS__")
        .unwrap_or_else(|| panic!("{variable} is not a tesoro-webhooks setting"));
    let (section, key) = path.split_once("__").expect("SECTION__KEY");
    assert!(
        defaults
            .get(&section.to_lowercase())
            .and_then(|s| s.get(key.to_lowercase()))
            .is_some(),
        "{variable} names no configuration key"
    );
}

fn port(address: &str) -> u16 {
    address
        .rsplit(':')
        .next()
        .expect("port")
        .parse()
        .expect("a port")
}

/// The drain on SIGTERM: in-flight deliveries finish within the timeout plus 5 s.
fn drain(config: &Config) -> Duration {
    config.delivery.timeout + Duration::from_secs(5)
}

#[test]
fn the_kubernetes_files_agree_with_the_code() {
    let configmap = &yaml("deploy/k8s/configmap.yaml")[0];
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        file.path(),
        configmap["data"]["config.toml"]
            .as_str()
            .expect("config.toml"),
    )
    .expect("write");
    let config = Config::load(Some(file.path())).expect("the ConfigMap's config loads");
    let listen = config.api.listen.port();

    let deployment = &yaml("deploy/k8s/deployment.yaml")[0];
    let spec = &deployment["spec"]["template"]["spec"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    assert!(Duration::from_secs(grace) > drain(&config), "{grace}s");
    let container = &spec["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"], listen);
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg"))
        .collect();
    let mount = container["volumeMounts"][0]["mountPath"]
        .as_str()
        .expect("mount");
    assert_eq!(
        args[2],
        format!("{mount}/config.toml"),
        "the ConfigMap's file"
    );
    Cli::try_parse_from(std::iter::once("tesoro-webhooks").chain(args)).expect("valid args");

    let secret = &yaml("deploy/k8s/secret.example.yaml")[0];
    for variable in container["env"].as_array().expect("env") {
        assert_config_key(variable["name"].as_str().expect("name"));
        let key = variable["valueFrom"]["secretKeyRef"]["key"]
            .as_str()
            .expect("key");
        assert!(secret["stringData"][key].is_string(), "Secret has no {key}");
    }
    let service = &yaml("deploy/k8s/service.yaml")[0];
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "admin");
    assert_eq!(container["ports"][0]["name"], "admin");
}

#[test]
fn the_compose_file_and_the_dockerfile_agree_with_the_code() {
    let compose = &yaml("deploy/docker-compose.yml")[0];
    let services = &compose["services"];
    let defaults = Config::defaults().expect("defaults");
    for worker in ["worker-1", "worker-2"] {
        let service = &services[worker];
        let environment = service["environment"].as_object().expect("environment");
        for variable in environment.keys() {
            assert_config_key(variable);
        }
        let listen = environment["TESORO_WEBHOOKS__API__LISTEN"]
            .as_str()
            .expect("listen");
        let mapping = service["ports"][0].as_str().expect("port mapping");
        assert_eq!(port(mapping), port(listen), "{worker}");
        let grace = service["stop_grace_period"].as_str().expect("grace");
        let grace = humantime::parse_duration(grace).expect("duration");
        assert!(grace > drain(&defaults));
    }
    let prometheus = &yaml("deploy/prometheus/prometheus.yml")[0];
    let targets = prometheus["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_array()
        .expect("targets");
    assert_eq!(targets.len(), 2);
    for target in targets {
        let target = target.as_str().expect("target");
        assert!(services[target.split(':').next().expect("host")].is_object());
        assert_eq!(port(target), 8080);
    }
    // Mounted files exist beside the compose file (named volumes aside).
    for service in ["prometheus", "grafana", "rabbitmq"] {
        for volume in services[service]["volumes"].as_array().expect("volumes") {
            let source = volume
                .as_str()
                .expect("volume")
                .split(':')
                .next()
                .expect("source");
            if source.starts_with('.') {
                assert!(repo("deploy").join(source).exists(), "{source}");
            }
        }
    }
    // The broker can serve amqp.event_queues above 1.
    assert!(read("deploy/rabbitmq/enabled_plugins").contains("rabbitmq_consistent_hash_exchange"));
    for path in [
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "deploy/grafana/provisioning/dashboards/tesoro-webhooks.yml",
    ] {
        assert!(!yaml(path).is_empty(), "{path}");
    }

    let dockerfile = read("Dockerfile");
    let line = |prefix: &str| {
        dockerfile
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line"))
            .to_owned()
    };
    let listen = line("ENV TESORO_WEBHOOKS__API__LISTEN=");
    assert_config_key(listen["ENV ".len()..].split('=').next().expect("name"));
    assert_eq!(
        line("EXPOSE ")["EXPOSE ".len()..].trim(),
        port(&listen).to_string()
    );
    assert!(line("USER ").contains("nonroot"));
    assert!(dockerfile.contains(r#"CMD ["/usr/local/bin/tesoro-webhooks", "healthcheck"]"#));
    for args in [
        ["tesoro-webhooks", "healthcheck"],
        ["tesoro-webhooks", "run"],
    ] {
        Cli::try_parse_from(args).expect("a command the binary takes");
    }
    let stages = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert_eq!(stages, 2, "a build stage and a small runtime stage");
}
