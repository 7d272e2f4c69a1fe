//! The Helm chart in deploy/helm/kferry, checked with Helm itself: `helm lint`, then
//! `helm template` with the chart's defaults and with the values an operator sets, and the
//! rendered manifests read back as YAML. The Deployment must run `kferry run` on the
//! ConfigMap's file with the probes on the metrics port, memory requested and limited, and
//! the locked-down security context; the ConfigMap's file must be a kferry config that
//! kferry's own parser accepts, serving metrics where the probes look. Needs no broker; it
//! lives here with the other tests of real tools (Helm: scripts/setup installs it).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use protocol_tests::{crate_dir, unique_name};
use serde::Deserialize;
use serde_norway::Value;

/// Keep in step with scripts/setup, which installs Helm here when none is on the PATH.
const HELM_VERSION: &str = "v3.22.0";

/// The helm to run: `KFERRY_TEST_HELM`, else `helm` on the PATH, else the one scripts/setup
/// builds into the kferry cache.
fn helm_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("KFERRY_TEST_HELM") {
        return path.into();
    }
    let on_path = Command::new("helm").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if on_path.is_ok_and(|status| status.success()) {
        return "helm".into();
    }
    let cache = std::env::var_os("KFERRY_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/kferry"));
    cache.join(format!("helm-{HELM_VERSION}/bin/helm"))
}

/// Runs helm with `args`: its stdout if it succeeds, else its stderr as the error.
fn helm(args: &[&str]) -> Result<String, String> {
    let binary = helm_binary();
    let output = Command::new(&binary)
        .args(args)
        .current_dir(crate_dir().join(".."))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "{} does not run ({err}): install Helm with scripts/setup, or set KFERRY_TEST_HELM",
                binary.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("helm {args:?} failed: {stderr}{stdout}"))
    }
}

const CHART: &str = "deploy/helm/kferry";

/// `helm template` of the chart with `extra` arguments: the rendered documents.
fn render(extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["template", "kferry", CHART];
    args.extend_from_slice(extra);
    let text = helm(&args).unwrap_or_else(|err| panic!("{err}"));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|err| panic!("helm's output is not YAML: {err}\n{text}")))
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The one document of `kind`.
fn find<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let mut found = docs.iter().filter(|doc| doc["kind"].as_str() == Some(kind));
    let doc = found.next().unwrap_or_else(|| panic!("no {kind} rendered"));
    assert!(found.next().is_none(), "more than one {kind} rendered");
    doc
}

fn str_at<'a>(value: &'a Value, what: &str) -> &'a str {
    value.as_str().unwrap_or_else(|| panic!("{what} is not a string: {value:?}"))
}

/// The kferry container of the Deployment.
fn container(docs: &[Value]) -> &Value {
    let containers = find(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .expect("the Deployment has containers");
    assert_eq!(containers.len(), 1, "one container: {containers:?}");
    &containers[0]
}

/// The config file the ConfigMap holds, parsed by kferry; also its text.
fn config(docs: &[Value]) -> (kferry::config::Config, String) {
    let text = str_at(&find(docs, "ConfigMap")["data"]["config.yaml"], "the ConfigMap's config.yaml").to_owned();
    let config = kferry::config::Config::parse(&text, "the chart's ConfigMap")
        .unwrap_or_else(|err| panic!("kferry refuses the rendered config: {err}\n{text}"));
    (config, text)
}

/// The number of the container port named `metrics`.
fn metrics_port(container: &Value) -> u64 {
    let ports = container["ports"].as_sequence().expect("the container has ports");
    let port = ports.iter().find(|port| port["name"].as_str() == Some("metrics")).expect("a port named metrics");
    port["containerPort"].as_u64().expect("containerPort is a number")
}

/// Everything the chart promises, with its defaults and a given metrics port.
fn check_deployment(docs: &[Value], port: u64) {
    let deployment = find(docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(1), "one process by default");
    assert_eq!(deployment["spec"]["strategy"]["type"].as_str(), Some("Recreate"), "never two lone kferry at once");
    let container = container(docs);
    let args: Vec<&str> =
        container["args"].as_sequence().expect("args").iter().map(|arg| str_at(arg, "an argument")).collect();
    assert_eq!(args, ["run", "--config", "/etc/kferry/config.yaml"]);
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("volumeMounts")
        .iter()
        .find(|mount| mount["mountPath"].as_str() == Some("/etc/kferry/config.yaml"))
        .expect("the config file is mounted at /etc/kferry/config.yaml");
    let volume = deployment["spec"]["template"]["spec"]["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .expect("the config volume");
    assert_eq!(volume["configMap"]["name"], find(docs, "ConfigMap")["metadata"]["name"], "mounted from the ConfigMap");
    assert_eq!(mount["subPath"].as_str(), Some("config.yaml"));

    assert_eq!(metrics_port(container), port);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}: {get:?}");
        assert_eq!(get["port"].as_str(), Some("metrics"), "{probe} on the metrics port: {get:?}");
    }

    let resources = &container["resources"];
    assert_eq!(resources["limits"]["memory"].as_str(), Some("512Mi"), "{resources:?}");
    assert!(resources["requests"]["memory"].as_str().is_some(), "memory requested: {resources:?}");
    assert!(resources["requests"]["cpu"].as_str().is_some(), "cpu requested: {resources:?}");

    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"].as_bool(), Some(true), "{security:?}");
    // The image's user (scripts/build-image).
    assert_eq!(security["runAsUser"].as_u64(), Some(65532), "{security:?}");
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true), "{security:?}");
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false), "{security:?}");
    assert_eq!(security["capabilities"]["drop"].as_sequence().map(Vec::as_slice), Some(&[Value::from("ALL")][..]));
    assert_eq!(security["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"), "{security:?}");
    let pod_security = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(pod_security["runAsNonRoot"].as_bool(), Some(true), "{pod_security:?}");
    assert_eq!(pod_security["seccompProfile"]["type"].as_str(), Some("RuntimeDefault"), "{pod_security:?}");

    let service = find(docs, "Service");
    let service_ports = service["spec"]["ports"].as_sequence().expect("the Service has ports");
    assert_eq!(service_ports.len(), 1, "{service_ports:?}");
    assert_eq!(service_ports[0]["port"].as_u64(), Some(port));
    assert_eq!(service_ports[0]["targetPort"].as_str(), Some("metrics"));
    assert_eq!(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"], "the Service finds the pod");
}

#[test]
fn helm_lint_accepts_the_chart() {
    let said = helm(&["lint", "--strict", CHART]).unwrap_or_else(|err| panic!("{err}"));
    assert!(said.contains("0 chart(s) failed"), "helm lint: {said}");
}

#[test]
fn the_default_rendering_runs_kferry_with_probes_limits_and_a_locked_down_container() {
    let docs = render(&[]);
    check_deployment(&docs, 9464);
    let container = container(&docs);
    assert_eq!(
        str_at(&container["image"], "image"),
        format!("kferry:{}", env!("CARGO_PKG_VERSION")),
        "the image scripts/build-image builds, tagged with kferry's version"
    );
    let (config, _) = config(&docs);
    assert_eq!(config.metrics.listen.as_deref(), Some("0.0.0.0:9464"));
    assert_eq!(config.flows.len(), 1);
    assert_eq!(config.flows[0].buffer_bytes, 256 << 20, "the default buffer, as the memory limit assumes");
    let annotations = &find(&docs, "Service")["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"), "{annotations:?}");
    assert_eq!(annotations["prometheus.io/port"].as_str(), Some("9464"), "{annotations:?}");
}

#[test]
fn a_config_file_secrets_and_another_port_render_as_given() {
    let dir = std::env::temp_dir().join(unique_name("kferry-helm"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("kferry.yaml");
    let text = "# as an operator writes it\n\
        clusters:\n  \
          primary:\n    \
            bootstrap_servers: [\"kafka-a:9093\"]\n    \
            security:\n      \
              sasl:\n        \
                mechanism: SCRAM-SHA-512\n        \
                username: kferry\n        \
                password: \"${KAFKA_PASSWORD}\"\n  \
          secondary:\n    \
            bootstrap_servers: [\"kafka-b:9092\"]\n\
        flows:\n  \
          - source: primary\n    \
            target: secondary\n    \
            topics: [\"orders.*\"]\n\
        metrics:\n  \
          listen: \"0.0.0.0:9500\"\n";
    std::fs::write(&file, text).expect("config written");
    let file_arg = format!("config={}", file.display());
    let docs = render(&[
        "--set-file",
        &file_arg,
        "--set",
        "metrics.port=9500",
        "--set",
        "secretEnv.KAFKA_PASSWORD.secretName=kafka-creds",
        "--set",
        "secretEnv.KAFKA_PASSWORD.key=password",
        "--set",
        "image.repository=registry.example.com/kferry,image.tag=test",
    ]);
    check_deployment(&docs, 9500);
    let container = container(&docs);
    assert_eq!(str_at(&container["image"], "image"), "registry.example.com/kferry:test");
    let env = container["env"].as_sequence().expect("env");
    let password = env.iter().find(|var| var["name"].as_str() == Some("KAFKA_PASSWORD")).expect("KAFKA_PASSWORD set");
    assert_eq!(password["valueFrom"]["secretKeyRef"]["name"].as_str(), Some("kafka-creds"), "{password:?}");
    assert_eq!(password["valueFrom"]["secretKeyRef"]["key"].as_str(), Some("password"), "{password:?}");
    // The file goes in as it is: comments kept, ${KAFKA_PASSWORD} left for kferry to expand
    // from the Secret (parsing it here would need the variable set).
    let config_map = find(&docs, "ConfigMap");
    assert_eq!(str_at(&config_map["data"]["config.yaml"], "config.yaml"), text);

    // A file whose metrics.listen the probes would not reach is refused, saying why.
    let without = dir.join("no-metrics.yaml");
    std::fs::write(&without, text.replace("  listen: \"0.0.0.0:9500\"\n", "  per_partition: false\n"))
        .expect("written");
    let err = helm(&["template", "kferry", CHART, "--set-file", &format!("config={}", without.display())])
        .expect_err("a config without metrics.listen renders");
    assert!(err.contains("metrics.listen must be \"0.0.0.0:9464\""), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_values_config_without_metrics_listen_gets_the_metrics_port() {
    let docs = render(&["--set", "metrics.port=9600", "--set", "config.metrics=null"]);
    check_deployment(&docs, 9600);
    let (config, text) = config(&docs);
    assert_eq!(config.metrics.listen.as_deref(), Some("0.0.0.0:9600"), "{text}");
}

#[test]
fn replicas_share_the_flows_through_a_group_and_roll_one_pod_at_a_time() {
    let group = ["--set", "config.group.id=kferry-dr", "--set", "config.group.cluster=secondary"];
    let docs = render(&[&group[..], &["--set", "replicas=3"]].concat());
    let deployment = find(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(3));
    let strategy = &deployment["spec"]["strategy"];
    assert_eq!(strategy["type"].as_str(), Some("RollingUpdate"), "{strategy:?}");
    assert_eq!(strategy["rollingUpdate"]["maxUnavailable"].as_u64(), Some(0), "{strategy:?}");
    let (config, _) = config(&docs);
    let group = config.group.expect("the group reaches kferry's config");
    assert_eq!((group.id.as_str(), group.cluster.as_str()), ("kferry-dr", "secondary"));

    let refused = helm(&["template", "kferry", CHART, "--set", "replicas=2"]).expect_err("two lone processes refused");
    assert!(refused.contains("replicas: 2 needs a `group` section in config"), "{refused}");
}
