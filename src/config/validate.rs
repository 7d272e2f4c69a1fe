//! Checks on a configuration that parsed: everything that can be wrong without asking a
//! cluster. All problems are collected so the operator fixes them in one round.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::error::Problem;
use super::locate::{KeyPath, Locator};
use super::{
    ClusterConfig, Config, FlowConfig, MetricsConfig, ReplicationPolicy, SaslConfig, SaslMechanism, SecurityConfig,
};

/// Every problem in `config`, ordered by line (problems without a line last).
pub(super) fn problems(config: &Config, text: &str) -> Vec<Problem> {
    let mut report = Report { locator: Locator::new(text), problems: Vec::new() };
    check_clusters(&config.clusters, &mut report);
    check_flows(config, &mut report);
    check_identity_cycles(&config.flows, &mut report);
    check_one_flow_per_pair(&config.flows, &mut report);
    check_metrics(&config.metrics, &mut report);
    check_group(config, &mut report);
    let mut problems = report.problems;
    problems.sort_by_key(|p| p.line.unwrap_or(usize::MAX));
    problems
}

struct Report<'a> {
    locator: Locator<'a>,
    problems: Vec<Problem>,
}

impl Report<'_> {
    fn add(&mut self, path: &KeyPath, message: String) {
        let line = self.locator.line_of(path);
        self.problems.push(Problem::new(line, path.to_string(), message));
    }
}

fn check_clusters(clusters: &BTreeMap<String, ClusterConfig>, report: &mut Report<'_>) {
    let path = KeyPath::root().key("clusters");
    if clusters.is_empty() {
        report.add(
            &path,
            "no clusters defined; define at least a source and a target, e.g. \
             primary: { bootstrap_servers: [\"127.0.0.1:9092\"] }"
                .to_owned(),
        );
    }
    for (name, cluster) in clusters {
        let path = path.key(name);
        if !is_topic_name_part(name) {
            report.add(
                &path,
                format!(
                    "cluster name \"{name}\" may contain only letters, digits, '.', '_' and '-' \
                     (with the prefix policy it becomes part of topic names)"
                ),
            );
        }
        check_bootstrap(&cluster.bootstrap_servers, &path.key("bootstrap_servers"), report);
        check_security(&cluster.security, &path.key("security"), report);
    }
}

/// Keys that must go together or exclude each other; whether the files exist is checked
/// when connecting (a file may be mounted after the config is written).
fn check_security(security: &SecurityConfig, path: &KeyPath, report: &mut Report<'_>) {
    if let Some(tls) = &security.tls {
        let path = path.key("tls");
        match (&tls.cert, &tls.key) {
            (Some(_), None) => {
                report.add(&path.key("cert"), "needs key: the client certificate's private key".to_owned())
            }
            (None, Some(_)) => {
                report.add(&path.key("key"), "needs cert: the client certificate it belongs to".to_owned())
            }
            _ => {}
        }
        if tls.server_name.as_ref().is_some_and(|name| name.as_str().is_empty()) {
            report.add(&path.key("server_name"), "empty; leave it out to use the host of each address".to_owned());
        }
    }
    if let Some(sasl) = &security.sasl {
        check_sasl(sasl, &path.key("sasl"), report);
    }
}

fn check_sasl(sasl: &SaslConfig, path: &KeyPath, report: &mut Report<'_>) {
    let mechanism = sasl.mechanism;
    let password_keys = [
        ("username", sasl.username.is_some()),
        ("password", sasl.password.is_some()),
        ("password_file", sasl.password_file.is_some()),
    ];
    let token_keys = [
        ("token", sasl.token.is_some()),
        ("token_file", sasl.token_file.is_some()),
        ("token_endpoint", sasl.token_endpoint.is_some()),
        ("client_id", sasl.client_id.is_some()),
        ("client_secret", sasl.client_secret.is_some()),
        ("client_secret_file", sasl.client_secret_file.is_some()),
        ("scope", sasl.scope.is_some()),
        ("extensions", !sasl.extensions.is_empty()),
    ];
    let (own, foreign) = if mechanism.uses_password() {
        (&password_keys[..], &token_keys[..])
    } else {
        (&token_keys[..], &password_keys[..])
    };
    for (key, _) in foreign.iter().filter(|(_, set)| *set) {
        report.add(&path.key(key), format!("does not apply to mechanism {mechanism}"));
    }
    let set = |key: &str| own.iter().any(|(k, set)| *k == key && *set);
    if mechanism.uses_password() {
        if !set("username") {
            report.add(&path.key("mechanism"), format!("{mechanism} needs username"));
        }
        one_of(&["password", "password_file"], &set, mechanism, path, report);
        return;
    }
    one_of(&["token", "token_file", "token_endpoint"], &set, mechanism, path, report);
    for (key, value) in &sasl.extensions {
        // RFC 7628 §3.1: key = 1*(ALPHA), value = *(VCHAR / SP / HTAB / CR / LF); "auth" is
        // the token's own key.
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphabetic()) || key == "auth" {
            report.add(
                &path.key("extensions").key(key),
                "an extension name is letters only, and not \"auth\"".to_owned(),
            );
        }
        if value.as_str().chars().any(|c| c == '\u{1}' || !(c.is_ascii_graphic() || c.is_ascii_whitespace())) {
            report.add(&path.key("extensions").key(key), "an extension value is printable ASCII only".to_owned());
        }
    }
    if let Some(endpoint) = &sasl.token_endpoint {
        let url = endpoint.as_str();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            report.add(&path.key("token_endpoint"), format!("\"{url}\" is not an http:// or https:// URL"));
        }
        if !set("client_id") {
            report.add(&path.key("token_endpoint"), "needs client_id".to_owned());
        }
        one_of(&["client_secret", "client_secret_file"], &set, SaslMechanism::OauthBearer, path, report);
    } else {
        for key in ["client_id", "client_secret", "client_secret_file", "scope"] {
            if set(key) {
                report.add(&path.key(key), "applies only with token_endpoint".to_owned());
            }
        }
    }
}

/// Exactly one of `keys` must be set.
fn one_of(
    keys: &[&str],
    set: &impl Fn(&str) -> bool,
    mechanism: SaslMechanism,
    path: &KeyPath,
    report: &mut Report<'_>,
) {
    let given: Vec<&str> = keys.iter().copied().filter(|k| set(k)).collect();
    match given.len() {
        1 => {}
        0 => report.add(&path.key("mechanism"), format!("{mechanism} needs one of {}", keys.join(", "))),
        _ => report.add(&path.key(given[1]), format!("give only one of {}", given.join(", "))),
    }
}

/// Kafka's legal topic-name characters.
fn is_topic_name_part(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn check_bootstrap(servers: &[String], path: &KeyPath, report: &mut Report<'_>) {
    if servers.is_empty() {
        report.add(path, "no bootstrap servers; list at least one broker as \"host:port\"".to_owned());
    }
    for (i, address) in servers.iter().enumerate() {
        if let Some(why) = address_problem(address) {
            report.add(&path.index(i), why);
        }
    }
}

/// Why `address` is not a usable `host:port`, if it is not.
fn address_problem(address: &str) -> Option<String> {
    // Java clients take one comma-separated string; people copy it over as it is.
    if address.contains(',') {
        return Some(format!(
            "\"{address}\" holds several addresses; list each as its own item, \
             e.g. [\"broker1:9092\", \"broker2:9092\"]"
        ));
    }
    if address.contains("://") {
        return Some(format!("\"{address}\": write host:port without a scheme, e.g. \"broker1:9092\""));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Some(format!("\"{address}\" has no port; write host:port, e.g. \"{address}:9092\""));
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Some(format!("\"{address}\" is not host:port: \"{host}\" is not a host"));
    }
    let bracketed = host.starts_with('[') && host.ends_with(']');
    if host.contains(':') && !bracketed {
        return Some(format!("\"{address}\": put an IPv6 address in brackets, e.g. \"[::1]:9092\""));
    }
    match port.parse::<u16>() {
        Ok(port) if port > 0 => None,
        _ => Some(format!("\"{address}\": port \"{port}\" is not a number from 1 to 65535")),
    }
}

fn check_metrics(metrics: &MetricsConfig, report: &mut Report<'_>) {
    let Some(listen) = &metrics.listen else { return };
    if listen.parse::<std::net::SocketAddr>().is_err() {
        report.add(
            &KeyPath::root().key("metrics").key("listen"),
            format!(
                "\"{listen}\" is not an address to listen on; write ip:port, e.g. \"0.0.0.0:9464\" (every \
                 interface), \"127.0.0.1:9464\" or \"[::]:9464\""
            ),
        );
    }
}

fn check_group(config: &Config, report: &mut Report<'_>) {
    let Some(group) = &config.group else { return };
    let path = KeyPath::root().key("group");
    if group.id.trim().is_empty() {
        report.add(&path.key("id"), "empty; name the group the kferry processes share, e.g. kferry-dr".to_owned());
    }
    if !config.clusters.is_empty() && !config.clusters.contains_key(&group.cluster) {
        report.add(&path.key("cluster"), undefined_cluster(&group.cluster, &config.clusters));
    }
    if group.instance_id.as_ref().is_some_and(|id| id.as_str().trim().is_empty()) {
        report.add(&path.key("instance_id"), "empty; leave it out for a dynamic member".to_owned());
    }
    if !(1_000..=1_800_000).contains(&group.session_timeout_ms) {
        report.add(
            &path.key("session_timeout_ms"),
            "must be from 1000 to 1800000 (the broker's group.min/max.session.timeout.ms bound it further)".to_owned(),
        );
    }
}

fn check_flows(config: &Config, report: &mut Report<'_>) {
    let path = KeyPath::root().key("flows");
    if config.flows.is_empty() {
        report.add(&path, "no flows defined; add one, e.g. - { source: primary, target: secondary }".to_owned());
    }
    for (i, flow) in config.flows.iter().enumerate() {
        let path = path.index(i);
        check_flow_clusters(flow, &config.clusters, &path, report);
        if flow.topics.is_empty() {
            report.add(
                &path.key("topics"),
                "empty, so this flow would copy nothing; \".*\" copies every topic".to_owned(),
            );
        }
        check_patterns(&flow.topics, &path.key("topics"), report);
        check_patterns(&flow.topics_exclude, &path.key("topics_exclude"), report);
        check_patterns(&flow.topic_configs_exclude, &path.key("topic_configs_exclude"), report);
        check_separator(flow, &path, report);
        if flow.replication_factor.is_some_and(|rf| rf < 1) {
            report.add(
                &path.key("replication_factor"),
                "must be 1 or more; leave it out to use the target cluster's default.replication.factor".to_owned(),
            );
        }
        if flow.buffer_bytes < 1024 * 1024 {
            report.add(
                &path.key("buffer_bytes"),
                "must be at least 1048576 (1 MiB): a batch can be that large".to_owned(),
            );
        }
        if flow.max_bytes_per_second.is_some_and(|rate| rate < 64 * 1024) {
            report.add(
                &path.key("max_bytes_per_second"),
                "must be at least 65536 (64 KiB/s); leave it out for no limit".to_owned(),
            );
        }
        if !(1..=64).contains(&flow.shards) {
            report.add(&path.key("shards"), "must be from 1 to 64".to_owned());
        } else if flow.shards > 1 && flow.buffer_bytes / u64::from(flow.shards) < 1024 * 1024 {
            report.add(
                &path.key("shards"),
                format!(
                    "each shard gets buffer_bytes / shards, under 1 MiB with {} shards: raise buffer_bytes",
                    flow.shards
                ),
            );
        }
        if flow.refresh_topics_interval_seconds == 0 {
            report.add(&path.key("refresh_topics_interval_seconds"), "must be 1 or more".to_owned());
        }
        check_patterns(&flow.groups, &path.key("groups"), report);
        check_patterns(&flow.groups_exclude, &path.key("groups_exclude"), report);
        if flow.sync_group_offsets_interval_seconds == 0 {
            report.add(&path.key("sync_group_offsets_interval_seconds"), "must be 1 or more".to_owned());
        }
    }
}

fn check_flow_clusters(
    flow: &FlowConfig,
    clusters: &BTreeMap<String, ClusterConfig>,
    path: &KeyPath,
    report: &mut Report<'_>,
) {
    for (key, alias) in [("source", &flow.source), ("target", &flow.target)] {
        // With no clusters at all, "no clusters defined" says it already.
        if !clusters.is_empty() && !clusters.contains_key(alias) {
            report.add(&path.key(key), undefined_cluster(alias, clusters));
        }
    }
    if flow.source == flow.target {
        report.add(
            &path.key("target"),
            format!("source and target are both \"{}\"; a flow copies between two different clusters", flow.target),
        );
    }
}

fn undefined_cluster(alias: &str, clusters: &BTreeMap<String, ClusterConfig>) -> String {
    let defined: Vec<&str> = clusters.keys().map(String::as_str).collect();
    format!("cluster \"{alias}\" is not defined; defined clusters: {}", defined.join(", "))
}

fn check_patterns(patterns: &[String], path: &KeyPath, report: &mut Report<'_>) {
    for (i, pattern) in patterns.iter().enumerate() {
        if let Err(err) = regex::Regex::new(pattern) {
            report.add(&path.index(i), format!("invalid regex \"{pattern}\": {}", regex_error_reason(&err)));
        }
    }
}

/// The one-line reason of a regex error. The regex crate's message draws a caret under
/// the pattern over several lines, which would break the one-problem-per-line listing.
pub(crate) fn regex_error_reason(err: &regex::Error) -> String {
    let text = err.to_string();
    match text.lines().rev().find_map(|l| l.strip_prefix("error: ")) {
        Some(reason) => reason.to_owned(),
        None => text.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

fn check_separator(flow: &FlowConfig, path: &KeyPath, report: &mut Report<'_>) {
    if flow.separator.is_empty() {
        report.add(
            &path.key("separator"),
            "empty; the prefix policy puts it between the source alias and the topic name, \
             e.g. \".\""
                .to_owned(),
        );
        return;
    }
    if flow.policy != ReplicationPolicy::Prefix {
        return;
    }
    // Remote topic names are split at the separator to find which cluster a topic came
    // from; an alias containing it could not be recognised, so cycles would go unseen.
    for (key, alias) in [("source", &flow.source), ("target", &flow.target)] {
        if alias.contains(flow.separator.as_str()) {
            report.add(
                &path.key(key),
                format!(
                    "cluster name \"{alias}\" contains the separator \"{}\"; with the prefix \
                     policy kferry could not tell it apart in remote topic names \
                     (rename the cluster or choose another separator)",
                    flow.separator
                ),
            );
        }
    }
}

/// Two flows from the same source to the same target would share everything kferry names
/// after the pair: the transactional id (each one's InitProducerId fences the other, so
/// they stop each other in turn), the progress group, the offset map and the failover
/// record. One flow per pair, with every topic in its `topics` list, does the same work.
fn check_one_flow_per_pair(flows: &[FlowConfig], report: &mut Report<'_>) {
    let mut first: HashMap<(&str, &str), usize> = HashMap::new();
    for (index, flow) in flows.iter().enumerate() {
        match first.get(&(flow.source.as_str(), flow.target.as_str())) {
            Some(&earlier) => report.add(
                &KeyPath::root().key("flows").index(index),
                format!(
                    "flow {} (flows[{index}]) has the same source and target as flows[{earlier}]; two flows between \
                     one pair would share a transactional id and progress group and fence each other. Merge them \
                     into one flow (list every topic pattern in its `topics`)",
                    flow.name()
                ),
            ),
            None => {
                first.insert((flow.source.as_str(), flow.target.as_str()), index);
            }
        }
    }
}

/// Identity flows that lead back to where they started (A->B and B->A, or longer
/// rings) would copy every record around forever: with the same topic names on both
/// sides nothing tells a copied record from a new one. MM2 runs such a setup and loops;
/// kferry refuses it. Each cycle is reported once, at its last flow in the file.
fn check_identity_cycles(flows: &[FlowConfig], report: &mut Report<'_>) {
    let edges: Vec<(usize, &FlowConfig)> = flows
        .iter()
        .enumerate()
        .filter(|(_, f)| f.policy == ReplicationPolicy::Identity && f.source != f.target)
        .collect();
    let mut seen = BTreeSet::new();
    for &(index, flow) in &edges {
        let Some(back) = shortest_route(&edges, &flow.target, &flow.source) else {
            continue;
        };
        let mut cycle = vec![index];
        cycle.extend(back);
        let mut key = cycle.clone();
        key.sort_unstable();
        if !seen.insert(key) {
            continue;
        }
        report_cycle(flows, &cycle, report);
    }
}

/// Flow indices of a shortest route of `edges` from cluster `from` to cluster `to`.
fn shortest_route(edges: &[(usize, &FlowConfig)], from: &str, to: &str) -> Option<Vec<usize>> {
    // Breadth-first; `arrived_by` maps a cluster to the flow first seen reaching it.
    let mut arrived_by: HashMap<&str, usize> = HashMap::new();
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            return Some(route_to(edges, &arrived_by, from, to));
        }
        for &(index, flow) in edges.iter().filter(|(_, f)| f.source == at) {
            let next = flow.target.as_str();
            if next != from && !arrived_by.contains_key(next) {
                arrived_by.insert(next, index);
                queue.push_back(next);
            }
        }
    }
    None
}

fn route_to(edges: &[(usize, &FlowConfig)], arrived_by: &HashMap<&str, usize>, from: &str, to: &str) -> Vec<usize> {
    let mut route = Vec::new();
    let mut at = to;
    while at != from {
        let Some(&index) = arrived_by.get(at) else {
            break;
        };
        route.push(index);
        match edges.iter().find(|(i, _)| *i == index) {
            Some((_, flow)) => at = flow.source.as_str(),
            None => break,
        }
    }
    route.reverse();
    route
}

fn report_cycle(flows: &[FlowConfig], cycle: &[usize], report: &mut Report<'_>) {
    let named: Vec<String> = cycle.iter().map(|&i| format!("{} (flows[{i}])", flows[i].name())).collect();
    let last = cycle.iter().copied().max().unwrap_or_default();
    report.add(
        &KeyPath::root().key("flows").index(last),
        format!(
            "identity flows {} form a cycle: every record would be copied back and forth \
             forever; use policy: prefix for flows in both directions, or remove one",
            join_and(&named)
        ),
    );
}

/// `a`, `a and b`, `a, b and c`.
fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_addresses() {
        let good = ["127.0.0.1:9092", "broker-1.example.com:9092", "[::1]:9092", "b:1"];
        for address in good {
            assert_eq!(address_problem(address), None, "{address}");
        }
        let bad = [
            ("localhost", "has no port"),
            (":9092", "is not a host"),
            ("a b:9092", "is not a host"),
            ("::1:9092", "IPv6"),
            ("a:9092,b:9092", "several addresses"),
            ("kafka://a:9092", "without a scheme"),
            ("a:0", "1 to 65535"),
            ("a:65536", "1 to 65535"),
            ("a:", "1 to 65535"),
            ("a:x", "1 to 65535"),
        ];
        for (address, want) in bad {
            let got = address_problem(address).unwrap_or_default();
            assert!(got.contains(want), "{address}: {got}");
        }
    }

    #[test]
    fn regex_reason_is_one_line() {
        // Built at run time: clippy rejects invalid regex literals.
        let pattern = String::from("a(");
        match regex::Regex::new(&pattern) {
            Ok(_) => panic!("accepted {pattern}"),
            Err(err) => assert_eq!(regex_error_reason(&err), "unclosed group"),
        }
    }

    #[test]
    fn joins_with_and() {
        let items = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(join_and(&items(&["a"])), "a");
        assert_eq!(join_and(&items(&["a", "b"])), "a and b");
        assert_eq!(join_and(&items(&["a", "b", "c"])), "a, b and c");
    }
}
