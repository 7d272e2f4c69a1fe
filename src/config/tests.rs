use super::*;

/// Two clusters and nothing else, to which a test appends its `flows:`.
const CLUSTERS: &str = "\
clusters:
  primary: { bootstrap_servers: [\"127.0.0.1:9092\"] }
  secondary: { bootstrap_servers: [\"127.0.0.1:9192\"] }
";

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, "config.yaml")
}

fn error_text(text: &str) -> String {
    match parse(text) {
        Ok(config) => panic!("accepted: {config:?}\n{text}"),
        Err(err) => err.to_string(),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn example_file_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    };
    let cluster = |address: &str| ClusterConfig {
        bootstrap_servers: strings(&[address]),
        security: SecurityConfig::default(),
        client_id: "kferry".into(),
    };
    let expected = Config {
        clusters: BTreeMap::from([
            ("primary".to_owned(), cluster("127.0.0.1:9092")),
            ("secondary".to_owned(), cluster("127.0.0.1:9192")),
        ]),
        flows: vec![FlowConfig {
            topics: strings(&[".*"]),
            topics_exclude: Vec::new(),
            policy: ReplicationPolicy::Identity,
            separator: ".".to_owned(),
            ..FlowConfig::between("primary", "secondary")
        }],
        metrics: MetricsConfig { listen: Some("127.0.0.1:9464".to_owned()), per_partition: true },
        log: LogConfig { format: LogFormat::Text },
        group: None,
    };
    assert_eq!(config, expected);
    assert_eq!(config.flows[0].name(), "primary->secondary");
}

#[test]
fn flow_keys_have_defaults() {
    let text = format!("{CLUSTERS}flows:\n  - source: primary\n    target: secondary\n");
    let config = match parse(&text) {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    };
    let flow = &config.flows[0];
    assert_eq!(flow.topics, strings(&[".*"]));
    assert!(flow.topics_exclude.is_empty());
    assert_eq!(flow.policy, ReplicationPolicy::Identity);
    assert_eq!(flow.separator, ".");
}

#[test]
fn reads_every_key() {
    let text = format!(
        "{CLUSTERS}flows:
  - source: primary
    target: secondary
    topics: [\"orders.*\", \"_schemas\"]
    topics_exclude: [\"orders-dlq\"]
    policy: prefix
    separator: \"_\"
"
    );
    let config = match parse(&text) {
        Ok(config) => config,
        Err(err) => panic!("{err}"),
    };
    let flow = &config.flows[0];
    assert_eq!(flow.topics, strings(&["orders.*", "_schemas"]));
    assert_eq!(flow.topics_exclude, strings(&["orders-dlq"]));
    assert_eq!(flow.policy, ReplicationPolicy::Prefix);
    assert_eq!(flow.policy.to_string(), "prefix");
    assert_eq!(flow.separator, "_");
}

#[test]
fn parse_errors_name_key_line_and_what_is_allowed() {
    let cases = [
        (
            format!("{CLUSTERS}\nflows:\n  - source: primary\n    target: secondary\n    polcy: identity\n"),
            "config.yaml line 8: flows[0]: unknown key \"polcy\"; \
             allowed: source, target, topics, topics_exclude, policy, separator, replication_factor, \
             sync_topic_configs, topic_configs_exclude, sync_topic_acls, refresh_topics_interval_seconds, delivery, start, on_source_reset, \
             buffer_bytes, max_bytes_per_second, shards, sync_group_offsets, groups, groups_exclude, sync_group_offsets_interval_seconds",
        ),
        (
            "clusters:\n  primary:\n    bootstrap_server: [a]\n".to_owned(),
            "config.yaml line 3: clusters.primary: unknown key \"bootstrap_server\"; \
             allowed: bootstrap_servers, security, client_id",
        ),
        (
            // serde_norway points at the document start; kferry finds the key's line.
            "# comment\n\nflow: []\n".to_owned(),
            "config.yaml line 3: unknown key \"flow\"; allowed: clusters, flows, metrics, log, group",
        ),
        (
            format!("{CLUSTERS}flows:\n- source: primary\n  target: secondary\n  policy: identiy\n"),
            "config.yaml line 7: flows[0].policy: unknown value \"identiy\"; \
             allowed: identity, prefix",
        ),
        (format!("{CLUSTERS}flows:\n- source: primary\n"), "config.yaml line 5: flows[0]: missing key \"target\""),
        (
            format!("{CLUSTERS}flows:\n- source: primary\n  target: secondary\n  topics: \".*\"\n"),
            "config.yaml line 7: flows[0].topics: invalid type: string \".*\", expected a sequence",
        ),
        (
            "flows:\n- source: a\n  source: b\n  target: b\n".to_owned(),
            "config.yaml line 2: flows[0]: key \"source\" is given twice",
        ),
        (
            "clusters:\n  a: {bootstrap_servers: [\"a:1\"]}\n  a: {bootstrap_servers: [\"b:1\"]}\n".to_owned(),
            "config.yaml line 2: clusters: key \"a\" is given twice",
        ),
        ("- a\n".to_owned(), "config.yaml line 1: invalid type: sequence, expected a mapping (key: value lines)"),
        (
            "clusters:\n\tprimary: {}\n".to_owned(),
            "config.yaml line 2: found character that cannot start any token, \
             while scanning for the next token",
        ),
    ];
    for (text, want) in cases {
        let err = parse(&text).err();
        assert!(matches!(err, Some(ConfigError::Parse { .. })), "{text}");
        assert_eq!(error_text(&text), want, "{text}");
    }
}

#[test]
fn semantic_errors_name_key_and_line() {
    let flow = |body: &str| format!("{CLUSTERS}flows:\n  - source: primary\n{body}");
    let cases = [
        (
            flow("    target: tertiary\n"),
            "config.yaml line 6: flows[0].target: cluster \"tertiary\" is not defined; \
             defined clusters: primary, secondary",
        ),
        (
            flow("    target: primary\n"),
            "config.yaml line 6: flows[0].target: source and target are both \"primary\"; \
             a flow copies between two different clusters",
        ),
        (
            flow("    target: secondary\n    topics:\n      - orders\n      - \"a(\"\n"),
            "config.yaml line 9: flows[0].topics[1]: invalid regex \"a(\": unclosed group",
        ),
        (
            flow("    target: secondary\n    topics_exclude: [\"*\"]\n"),
            "config.yaml line 7: flows[0].topics_exclude[0]: invalid regex \"*\": \
             repetition operator missing expression",
        ),
        (
            flow("    target: secondary\n    topics: []\n"),
            "config.yaml line 7: flows[0].topics: empty, so this flow would copy nothing; \
             \".*\" copies every topic",
        ),
        (
            flow("    target: secondary\n    policy: prefix\n    separator: \"\"\n"),
            "config.yaml line 8: flows[0].separator: empty; the prefix policy puts it between \
             the source alias and the topic name, e.g. \".\"",
        ),
        (
            "clusters:\n  primary:\n    bootstrap_servers: []\n  secondary: { bootstrap_servers: [\"b:1\"] }\n\
             flows: [{source: primary, target: secondary}]\n"
                .to_owned(),
            "config.yaml line 3: clusters.primary.bootstrap_servers: no bootstrap servers; \
             list at least one broker as \"host:port\"",
        ),
        (
            "clusters:\n  primary:\n    bootstrap_servers:\n      - \"a:1\"\n      - localhost\n\
             \x20 secondary: { bootstrap_servers: [\"b:1\"] }\n\
             flows: [{source: primary, target: secondary}]\n"
                .to_owned(),
            "config.yaml line 5: clusters.primary.bootstrap_servers[1]: \"localhost\" has no port; \
             write host:port, e.g. \"localhost:9092\"",
        ),
        (
            "flows: [{source: primary, target: secondary}]\n".to_owned(),
            "config.yaml: clusters: no clusters defined; define at least a source and a target, \
             e.g. primary: { bootstrap_servers: [\"127.0.0.1:9092\"] }",
        ),
        (
            CLUSTERS.to_owned(),
            "config.yaml: flows: no flows defined; add one, \
             e.g. - { source: primary, target: secondary }",
        ),
        (
            format!("{CLUSTERS}  us east: {{ bootstrap_servers: [\"c:1\"] }}\nflows: [{{source: primary, target: secondary}}]\n"),
            "config.yaml line 4: clusters.us east: cluster name \"us east\" may contain only \
             letters, digits, '.', '_' and '-' (with the prefix policy it becomes part of topic names)",
        ),
        (
            format!("{CLUSTERS}  us.east: {{ bootstrap_servers: [\"c:1\"] }}\n\
                     flows: [{{source: us.east, target: primary, policy: prefix}}]\n"),
            "config.yaml line 5: flows[0].source: cluster name \"us.east\" contains the separator \
             \".\"; with the prefix policy kferry could not tell it apart in remote topic names \
             (rename the cluster or choose another separator)",
        ),
    ];
    for (text, want) in cases {
        let err = parse(&text).err();
        assert!(matches!(err, Some(ConfigError::Invalid { .. })), "{text}");
        assert_eq!(error_text(&text), want, "{text}");
    }
}

#[test]
fn reports_every_problem_at_once_in_line_order() {
    let text = "\
clusters:
  secondary:
    bootstrap_servers: []
  primary:
    bootstrap_servers: [\"localhost\"]
flows:
  - source: primry
    target: secondary
    topics: [\"a(\"]
  - source: secondary
    target: secondary
";
    let problems = match parse(text) {
        Err(ConfigError::Invalid { problems, .. }) => problems,
        other => panic!("{other:?}"),
    };
    let got: Vec<(Option<usize>, &str)> = problems.iter().map(|p| (p.line, p.path.as_str())).collect();
    assert_eq!(
        got,
        [
            (Some(3), "clusters.secondary.bootstrap_servers"),
            (Some(5), "clusters.primary.bootstrap_servers[0]"),
            (Some(7), "flows[0].source"),
            (Some(9), "flows[0].topics[0]"),
            (Some(11), "flows[1].target"),
        ]
    );
    assert_eq!(error_text(text).lines().count(), 5);
}

#[test]
fn two_flows_between_one_pair_are_refused() {
    let text = format!(
        "{CLUSTERS}flows:\n  - {{source: primary, target: secondary, topics: [orders]}}\n  - {{source: primary, target: secondary, topics: [payments]}}\n"
    );
    assert_eq!(
        parse(&text).unwrap_err().to_string(),
        "config.yaml line 6: flows[1]: flow primary->secondary (flows[1]) has the same source and target as flows[0]; \
         two flows between one pair would share a transactional id and progress group and fence each other. Merge \
         them into one flow (list every topic pattern in its `topics`)"
    );
    let other_way = format!(
        "{CLUSTERS}flows:\n  - {{source: primary, target: secondary, policy: prefix}}\n  - {{source: secondary, target: primary, policy: prefix}}\n"
    );
    assert!(parse(&other_way).is_ok());
}

#[test]
fn identity_flows_must_not_form_a_cycle() {
    let three = "\
clusters:
  a: { bootstrap_servers: [\"a:1\"] }
  b: { bootstrap_servers: [\"b:1\"] }
  c: { bootstrap_servers: [\"c:1\"] }
";
    let cases = [
        (
            format!("{CLUSTERS}flows:\n  - {{source: primary, target: secondary}}\n  - {{source: secondary, target: primary}}\n"),
            Some(
                "config.yaml line 6: flows[1]: identity flows primary->secondary (flows[0]) and \
                 secondary->primary (flows[1]) form a cycle: every record would be copied back \
                 and forth forever; use policy: prefix for flows in both directions, or remove one",
            ),
        ),
        (
            format!("{three}flows:\n  - {{source: a, target: b}}\n  - {{source: b, target: c}}\n  - {{source: c, target: a}}\n"),
            Some(
                "config.yaml line 8: flows[2]: identity flows a->b (flows[0]), b->c (flows[1]) \
                 and c->a (flows[2]) form a cycle: every record would be copied back and forth \
                 forever; use policy: prefix for flows in both directions, or remove one",
            ),
        ),
        // Prefix in either direction breaks the loop by renaming.
        (
            format!("{CLUSTERS}flows:\n  - {{source: primary, target: secondary, policy: prefix}}\n  - {{source: secondary, target: primary, policy: prefix}}\n"),
            None,
        ),
        (
            format!("{CLUSTERS}flows:\n  - {{source: primary, target: secondary}}\n  - {{source: secondary, target: primary, policy: prefix}}\n"),
            None,
        ),
        (
            format!("{three}flows:\n  - {{source: a, target: b}}\n  - {{source: b, target: c}}\n  - {{source: a, target: c}}\n"),
            None,
        ),
    ];
    for (text, want) in cases {
        match (parse(&text), want) {
            (Ok(_), None) => {}
            (Err(err), Some(want)) => assert_eq!(err.to_string(), want),
            (got, want) => panic!("{text}\ngot {got:?}\nwant {want:?}"),
        }
    }
}

#[test]
fn unreadable_file_names_the_path() {
    let err = Config::load(Path::new("/nonexistent/kferry.yaml")).err();
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(text.starts_with("cannot read config file /nonexistent/kferry.yaml: "), "{text}");
}

/// A config whose `primary` cluster has `security` as given (YAML flow mapping).
fn with_security(security: &str) -> String {
    format!(
        "clusters:\n  primary:\n    bootstrap_servers: [\"a:1\"]\n    security: {security}\n\
         \x20 secondary: {{ bootstrap_servers: [\"b:1\"] }}\nflows: [{{source: primary, target: secondary}}]\n"
    )
}

#[test]
fn security_parses_with_env_expansion() {
    // A variable only this test sets, so parallel tests cannot disturb it.
    std::env::set_var("KFERRY_CONFIG_TEST_PASSWORD", "from-env");
    let text = with_security(
        "{ tls: { ca: ca.pem, cert: c.pem, key: c.key, server_name: kafka.example.com }, \
         sasl: { mechanism: SCRAM-SHA-512, username: kferry, password: \"${KFERRY_CONFIG_TEST_PASSWORD}\" } }",
    );
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let security = &config.clusters["primary"].security;
    let tls = security.tls.as_ref().unwrap();
    assert_eq!(tls.ca.as_ref().unwrap().as_str(), "ca.pem");
    assert_eq!(tls.server_name.as_ref().unwrap().as_str(), "kafka.example.com");
    let sasl = security.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
    assert_eq!(sasl.password.as_ref().unwrap().expose(), "from-env");
    assert!(!format!("{config:?}").contains("from-env"), "the password shows in Debug output");
}

#[test]
fn security_problems_are_named() {
    let cases = [
        (
            "{ sasl: { mechanism: SCRAM-SHA-256, password: \"${KFERRY_CONFIG_TEST_UNSET}\" } }",
            "environment variable KFERRY_CONFIG_TEST_UNSET is not set",
        ),
        ("{ sasl: { mechanism: SCRAM-SHA-256, password: x } }", "SCRAM-SHA-256 needs username"),
        ("{ sasl: { mechanism: PLAIN, username: u } }", "PLAIN needs one of password, password_file"),
        (
            "{ sasl: { mechanism: PLAIN, username: u, password: x, password_file: f } }",
            "give only one of password, password_file",
        ),
        (
            "{ sasl: { mechanism: PLAIN, username: u, password: x, token: t } }",
            "token: does not apply to mechanism PLAIN",
        ),
        ("{ sasl: { mechanism: OAUTHBEARER } }", "OAUTHBEARER needs one of token, token_file, token_endpoint"),
        ("{ sasl: { mechanism: OAUTHBEARER, token: t, client_id: c } }", "client_id: applies only with token_endpoint"),
        (
            "{ sasl: { mechanism: OAUTHBEARER, token_endpoint: \"ftp://x\", client_id: c, client_secret: s } }",
            "\"ftp://x\" is not an http:// or https:// URL",
        ),
        ("{ sasl: { mechanism: OAUTHBEARER, token_endpoint: \"http://x/t\" } }", "needs client_id"),
        (
            "{ sasl: { mechanism: GSSAPI } }",
            "unknown value \"GSSAPI\"; allowed: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER",
        ),
        ("{ tls: { cert: c.pem } }", "security.tls.cert: needs key"),
        (
            "{ sasl: { mechanism: OAUTHBEARER, token: t, extensions: { auth: x } } }",
            "extensions.auth: an extension name",
        ),
        ("{ sasl: { mechanism: PLAIN, username: u, password: p, extensions: { a: b } } }", "does not apply"),
    ];
    for (security, want) in cases {
        let text = with_security(security);
        let got = error_text(&text);
        assert!(got.contains(want), "{security}: {got}");
        assert!(got.contains("line 4") || got.contains("line 5"), "{security}: no line in {got}");
    }
}

#[test]
fn metrics_listen_must_be_an_address() {
    let text =
        format!("{CLUSTERS}flows:\n  - source: primary\n    target: secondary\nmetrics:\n  listen: \"localhost:x\"\n");
    let error = error_text(&text);
    assert!(error.contains("metrics.listen"), "{error}");
    assert!(error.contains("\"localhost:x\" is not an address to listen on"), "{error}");
    let text = format!("{CLUSTERS}flows:\n  - source: primary\n    target: secondary\nmetrics: {{ listen: \"[::]:9464\", per_partition: false }}\n");
    let config = parse(&text).unwrap();
    assert_eq!(config.metrics, MetricsConfig { listen: Some("[::]:9464".into()), per_partition: false });
    assert_eq!(
        parse(&format!("{CLUSTERS}flows:\n  - source: primary\n    target: secondary\n")).unwrap().metrics.listen,
        None
    );
}

#[test]
fn log_format_is_text_unless_json_is_asked() {
    let flow = format!("{CLUSTERS}flows:\n  - source: primary\n    target: secondary\n");
    assert_eq!(parse(&flow).unwrap().log.format, LogFormat::Text);
    assert_eq!(parse(&format!("{flow}log: {{}}\n")).unwrap().log.format, LogFormat::Text);
    let config = parse(&format!("{flow}log:\n  format: json\n")).unwrap();
    assert_eq!(config.log, LogConfig { format: LogFormat::Json });
    assert_eq!(config.log.format.to_string(), "json");
    for name in LogFormat::NAMES {
        assert_eq!(LogFormat::from_name(name).map(|f| f.to_string()), Some(name.to_owned()));
    }
    assert_eq!(LogFormat::from_name("JSON"), None);
}

#[test]
fn bad_log_keys_are_named_with_what_is_allowed() {
    let flow = format!("{CLUSTERS}flows:\n  - source: primary\n    target: secondary\n");
    let cases = [
        (
            format!("{flow}log:\n  format: xml\n"),
            "config.yaml line 8: log.format: unknown value \"xml\"; allowed: text, json",
        ),
        (
            format!("{flow}log:\n  format: 1\n"),
            "config.yaml line 8: log.format: unknown value \"1\"; allowed: text, json",
        ),
        (format!("{flow}log: {{ formt: json }}\n"), "config.yaml line 7: log: unknown key \"formt\"; allowed: format"),
    ];
    for (text, want) in cases {
        let err = parse(&text).err();
        assert!(matches!(err, Some(ConfigError::Parse { .. })), "{text}");
        assert_eq!(error_text(&text), want, "{text}");
    }
}
