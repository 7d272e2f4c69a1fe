//! TLS, mutual TLS and SASL (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER) against a real Kafka
//! broker's SSL, SASL_SSL and SASL_PLAINTEXT listeners (see `protocol_tests::secure`):
//! replication from a SASL_SSL source to an mTLS target read back by confluent-kafka, every
//! misconfiguration reported with its cause, KIP-368 re-authentication, and no secret in
//! kferry's output at trace level.
//!
//! The OAuth token endpoint here is a stub in the test process (an identity provider is not
//! something a test machine has); the tokens it hands out are checked by the real broker.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use kafka_protocol::messages::MetadataRequest;
use kferry::client::security::Security;
use kferry::client::{BrokerRef, ClientConfig, Cluster, ConnectionConfig, Messenger, RetryPolicy};
use kferry::config::Config;
use protocol_tests::secure::{self, cert_file, mtls_security};
use protocol_tests::{alias, consume, consume_with, create_topic, eventually, produce, unique_name, Kferry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A config text with cluster `name` at `bootstrap` with `security` (a YAML flow mapping),
/// and a flow to a placeholder cluster so that it validates.
fn one_cluster(name: &str, bootstrap: &str, security: &str) -> String {
    format!(
        "clusters:\n  {name}:\n    bootstrap_servers: [\"{bootstrap}\"]\n    security: {security}\n\
         \x20 placeholder: {{ bootstrap_servers: [\"127.0.0.1:1\"] }}\n\
         flows: [{{ source: {name}, target: placeholder }}]\n"
    )
}

/// Client settings for cluster `name` of `config_text`, with one attempt only: these tests
/// want the first error, not a retry schedule.
fn client_config(config_text: &str, name: &str) -> ClientConfig {
    let config = Config::parse(config_text, "test").unwrap_or_else(|e| panic!("{e}"));
    let security = Security::from_config(name, &config.clusters[name].security).unwrap_or_else(|e| panic!("{e}"));
    let mut client =
        ClientConfig { retry: RetryPolicy { max_attempts: 1, ..RetryPolicy::default() }, ..ClientConfig::default() };
    client.connection.connect_timeout = Duration::from_secs(10);
    client.connection.security = Arc::new(security);
    client
}

async fn connect(name: &str, bootstrap: &str, security: &str) -> Result<Arc<Cluster>, String> {
    let config = client_config(&one_cluster(name, bootstrap, security), name);
    Cluster::connect(name, &[bootstrap.to_owned()], config).await.map_err(|e| e.to_string())
}

fn path(name: &str) -> String {
    cert_file(name).display().to_string()
}

fn scram512_security(password: &str) -> String {
    format!(
        "{{ tls: {{ ca: \"{}\" }}, sasl: {{ mechanism: SCRAM-SHA-512, username: kferry, password: \"{password}\" }} }}",
        path("ca.pem")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_mechanism_authenticates_on_its_listener() {
    let ca = path("ca.pem");
    let cases = [
        ("mtls", secure::mtls(), mtls_security()),
        ("scram512", secure::sasl_ssl(), scram512_security(&secure::scram_password())),
        (
            "plain",
            secure::sasl_ssl(),
            format!(
                "{{ tls: {{ ca: \"{ca}\" }}, sasl: {{ mechanism: PLAIN, username: plainuser, password_file: \"{}\" }} }}",
                path("plain.password")
            ),
        ),
        (
            "scram256",
            secure::sasl_plaintext(),
            format!("{{ sasl: {{ mechanism: SCRAM-SHA-256, username: kferry, password_file: \"{}\" }} }}", path("scram.password")),
        ),
        (
            "oauth",
            secure::sasl_plaintext(),
            format!(
                "{{ sasl: {{ mechanism: OAUTHBEARER, token: \"{}\", extensions: {{ logicalCluster: lkc-1 }} }} }}",
                secure::unsecured_jwt("kferry")
            ),
        ),
        // The broker's certificate names localhost and 127.0.0.1: both pass the name check.
        (
            "servername",
            secure::mtls(),
            format!(
                "{{ tls: {{ ca: \"{ca}\", cert: \"{}\", key: \"{}\", server_name: localhost }} }}",
                path("client.pem"),
                path("client.key")
            ),
        ),
    ];
    for (name, bootstrap, security) in cases {
        let cluster = connect(name, &bootstrap, &security).await.unwrap_or_else(|e| panic!("{name}: {e}"));
        let snapshot = cluster.all_topics().await.unwrap_or_else(|e| panic!("{name}: {e}"));
        // Each listener advertises itself: the broker list must name the port we came in by.
        assert!(snapshot.brokers.values().any(|b| b.address() == bootstrap), "{name}: {:?}", snapshot.brokers);
        cluster.close();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_misconfiguration_is_named_with_cluster_and_broker() {
    let ca = path("ca.pem");
    let other_ca = path("other-ca.pem");
    let client = format!("cert: \"{}\", key: \"{}\"", path("client.pem"), path("client.key"));
    let cases = [
        (
            "untrusted",
            secure::mtls(),
            format!("{{ tls: {{ ca: \"{other_ca}\", {client} }} }}"),
            vec![
                "TLS: the broker's certificate (CN=localhost) is issued by CN=kferry test CA".to_owned(),
                format!("which is not among the CAs in {other_ca} (CN=kferry untrusted CA)"),
            ],
        ),
        (
            "wrongname",
            secure::mtls(),
            format!("{{ tls: {{ ca: \"{ca}\", {client}, server_name: kafka.example.com }} }}"),
            vec!["not valid for the name \"kafka.example.com\"".to_owned(), "localhost".to_owned()],
        ),
        (
            "nocert",
            secure::mtls(),
            format!("{{ tls: {{ ca: \"{ca}\" }} }}"),
            vec!["requires a client certificate it trusts".to_owned()],
        ),
        (
            "nomechanism",
            secure::sasl_ssl(),
            format!(
                "{{ tls: {{ ca: \"{ca}\" }}, sasl: {{ mechanism: SCRAM-SHA-256, username: kferry, password: x }} }}"
            ),
            vec!["SASL mechanism SCRAM-SHA-256 is not enabled on this listener; enabled: SCRAM-SHA-512, PLAIN"
                .to_owned()],
        ),
        (
            "badscram",
            secure::sasl_ssl(),
            scram512_security("not-the-password"),
            vec!["SCRAM-SHA-512 authentication as user kferry failed".to_owned(), "invalid credentials".to_owned()],
        ),
        (
            "badplain",
            secure::sasl_ssl(),
            format!(
                "{{ tls: {{ ca: \"{ca}\" }}, sasl: {{ mechanism: PLAIN, username: plainuser, password: wrong }} }}"
            ),
            vec!["PLAIN authentication as user plainuser failed".to_owned(), "Invalid username or password".to_owned()],
        ),
        (
            "badtoken",
            secure::sasl_plaintext(),
            "{ sasl: { mechanism: OAUTHBEARER, token: \"not.a.jwt\" } }".to_owned(),
            vec!["OAUTHBEARER authentication failed".to_owned(), "invalid_token".to_owned()],
        ),
        (
            "tlstoplaintext",
            secure::plaintext(),
            format!("{{ tls: {{ ca: \"{ca}\" }} }}"),
            vec!["closed the connection during the TLS handshake: this is likely a plaintext listener".to_owned()],
        ),
        (
            "saslonplaintext",
            secure::plaintext(),
            "{ sasl: { mechanism: SCRAM-SHA-512, username: kferry, password: x } }".to_owned(),
            vec!["SCRAM-SHA-512 authentication: this listener does not take SASL".to_owned()],
        ),
        (
            "nosasl",
            secure::sasl_plaintext(),
            "{}".to_owned(),
            vec!["right after its first answer, as a SASL listener does to a client that does not authenticate"
                .to_owned()],
        ),
        (
            "plaintexttotls",
            secure::sasl_ssl(),
            "{}".to_owned(),
            vec!["the broker answered with TLS: this is a TLS listener".to_owned()],
        ),
    ];
    for (name, bootstrap, security, wanted) in cases {
        let error = match connect(name, &bootstrap, &security).await {
            Ok(_) => panic!("{name}: connected with {security}"),
            Err(error) => error,
        };
        let place = format!("cluster {name}, bootstrap server {bootstrap}");
        assert!(error.contains(&place), "{name}: no \"{place}\" in: {error}");
        for want in wanted {
            assert!(error.contains(&want), "{name}: no \"{want}\" in: {error}");
        }
    }
}

/// Requests on one connection for longer than the broker's session lifetime (10 s): without
/// KIP-368 re-authentication the broker closes the connection at the first request after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_sessions_are_renewed_before_they_expire() {
    let token_file = std::env::temp_dir().join(format!("{}.token", unique_name("kferry-token")));
    std::fs::write(&token_file, secure::unsecured_jwt("kferry")).expect("token written");
    let scram = one_cluster("scram", &secure::sasl_ssl(), &scram512_security(&secure::scram_password()));
    let oauth = one_cluster(
        "oauth",
        &secure::sasl_plaintext(),
        &format!("{{ sasl: {{ mechanism: OAUTHBEARER, token_file: \"{}\" }} }}", token_file.display()),
    );
    let scram = messenger(&scram, "scram", &secure::sasl_ssl()).await;
    let oauth = messenger(&oauth, "oauth", &secure::sasl_plaintext()).await;
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(13) {
        for (name, messenger) in [("scram", &scram), ("oauth", &oauth)] {
            let request = MetadataRequest::default().with_topics(Some(Vec::new()));
            messenger
                .request(&request)
                .await
                .unwrap_or_else(|e| panic!("{name}: request after {:?} failed: {e}", started.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The token file is read again at re-authentication: an invalid token there now makes
    // the next renewal fail, which shows the file is not read once and cached.
    std::fs::write(&token_file, "not.a.jwt").expect("token replaced");
    let outcome = eventually("a renewal with the replaced token", Duration::from_secs(15), || async {
        let request = MetadataRequest::default().with_topics(Some(Vec::new()));
        oauth.request(&request).await.err()
    })
    .await;
    assert!(outcome.to_string().contains("invalid_token"), "{outcome}");
    let _ = std::fs::remove_file(&token_file);
}

async fn messenger(config_text: &str, name: &str, address: &str) -> Messenger {
    let connection: ConnectionConfig = client_config(config_text, name).connection;
    let broker = BrokerRef { cluster: name.into(), node_id: None, address: address.into() };
    Messenger::connect(broker, &connection).await.unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The endpoint's connection, plain or TLS.
trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Stream for T {}

/// A stand-in OAuth token endpoint: checks the client-credentials request and answers with
/// an unsecured JWT (or 401 for a wrong secret). Stopped when dropped.
struct TokenEndpoint {
    url: String,
    requests: Arc<AtomicUsize>,
    /// Every token handed out, so a test can look for them in kferry's output.
    issued: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

/// Reads one HTTP request (headers and a Content-Length body), bounded in reads and size.
async fn read_request(socket: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut request = Vec::new();
    for _ in 0..32 {
        match socket.read_buf(&mut request).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&request);
        let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: "))
            .and_then(|n| n.trim().parse::<usize>().ok())
            .unwrap_or(0);
        if body.len() >= length || request.len() > 64 * 1024 {
            break;
        }
    }
    String::from_utf8_lossy(&request).into_owned()
}

impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A TLS acceptor with the broker's certificate of the test PKI (valid for 127.0.0.1).
fn test_pki_acceptor() -> tokio_rustls::TlsAcceptor {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert_file("broker.pem"))
        .expect("broker.pem")
        .collect::<Result<Vec<_>, _>>()
        .expect("broker certificate");
    let key = PrivateKeyDer::from_pem_file(cert_file("broker.key")).expect("broker.key");
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

impl TokenEndpoint {
    /// Serves http, or https with the test PKI's broker certificate when `https`.
    async fn start(client_id: &str, secret: &str, https: bool) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let scheme = if https { "https" } else { "http" };
        let url = format!("{scheme}://{}/oauth2/token", listener.local_addr().expect("address"));
        let acceptor = https.then(test_pki_acceptor);
        let expected =
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{client_id}:{secret}")));
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let issued = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tokens = Arc::clone(&issued);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::Relaxed);
                let mut socket: Box<dyn Stream> = match &acceptor {
                    Some(acceptor) => match acceptor.accept(socket).await {
                        Ok(tls) => Box::new(tls),
                        Err(_) => continue,
                    },
                    None => Box::new(socket),
                };
                let request = read_request(&mut socket).await;
                let authorized = request.lines().any(|l| l.trim() == format!("Authorization: {expected}"));
                let grant = request.ends_with("\r\n\r\ngrant_type=client_credentials&scope=kafka");
                let (status, body) = if authorized && grant {
                    let token = secure::unsecured_jwt("kferry-oauth");
                    tokens.lock().expect("token list").push(token.clone());
                    ("200 OK", format!(r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":3600}}"#))
                } else {
                    let body = r#"{"error":"invalid_client","error_description":"unknown client or secret"}"#;
                    ("401 Unauthorized", body.to_owned())
                };
                let answer = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(answer.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        Self { url, requests, issued, task }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth_client_credentials_grant_gets_a_token_the_broker_accepts() {
    let endpoint = TokenEndpoint::start("kferry-client", "grant-secret-4711", false).await;
    let security = |secret: &str| {
        format!(
            "{{ sasl: {{ mechanism: OAUTHBEARER, token_endpoint: \"{}\", client_id: kferry-client, \
             client_secret: \"{secret}\", scope: kafka }} }}",
            endpoint.url
        )
    };
    let cluster = connect("grant", &secure::sasl_plaintext(), &security("grant-secret-4711")).await.unwrap();
    cluster.all_topics().await.unwrap();
    assert_eq!(endpoint.requests.load(Ordering::Relaxed), 1, "one token for the connection");
    cluster.close();

    let error = connect("badgrant", &secure::sasl_plaintext(), &security("wrong-secret")).await.unwrap_err();
    let want =
        format!("security.sasl.token_endpoint {}: HTTP 401: invalid_client unknown client or secret", endpoint.url);
    assert!(error.contains(&want), "no \"{want}\" in: {error}");
    assert!(!error.contains("wrong-secret"), "{error}");
}

/// Replication from the SASL_SSL listener (SCRAM-SHA-512) to the mTLS listener, read back
/// by confluent-kafka over mTLS; kferry runs at trace level for longer than a SASL session
/// lasts, and none of its output may contain a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_from_sasl_ssl_to_mtls_without_leaking_secrets() {
    const RECORDS: u32 = 2_000;
    let topic = unique_name("secure");
    // Test data goes in over PLAINTEXT: the broker (one node, every listener) is the same.
    create_topic(&secure::plaintext(), &topic, 2, &[]).await;
    produce(&secure::plaintext(), &topic, RECORDS, "lz4", &[]).await;
    let (source, target) = (alias("sasl"), alias("mtls"));
    // The password comes from the environment, as an operator would pass it.
    let source_security = format!(
        "{{ tls: {{ ca: \"{}\" }}, sasl: {{ mechanism: SCRAM-SHA-512, username: kferry, password: \"${{KFERRY_TEST_SCRAM}}\" }} }}",
        path("ca.pem")
    );
    let config = format!(
        "clusters:\n  {source}:\n    bootstrap_servers: [\"{}\"]\n    security: {source_security}\n\
         \x20 {target}:\n    bootstrap_servers: [\"{}\"]\n    security: {}\n\
         flows:\n  - source: {source}\n    target: {target}\n    policy: prefix\n    topics: [\"{topic}\"]\n\
         \x20   refresh_topics_interval_seconds: 1\n",
        secure::sasl_ssl(),
        secure::mtls(),
        mtls_security(),
    );
    let password = secure::scram_password();
    let kferry = Kferry::start_with_env("run", &config, &[("KFERRY_LOG", "trace"), ("KFERRY_TEST_SCRAM", &password)]);
    let remote = format!("{source}.{topic}");
    let verifier = secure::mtls_verifier_config();
    let replicated = eventually(&format!("{RECORDS} records in {remote}"), Duration::from_secs(120), || async {
        let topics = protocol_tests::verify_json(
            &[&["list-topics", "--bootstrap", &secure::mtls()][..], &client_args(&verifier)].concat(),
        )
        .await;
        if !topics["topics"].as_array().is_some_and(|t| t.iter().any(|name| name == remote.as_str())) {
            return None;
        }
        let records = consume_with(&secure::mtls(), &remote, "read_committed", 0, &verifier).await;
        (records.len() == RECORDS as usize).then_some(records)
    })
    .await;
    let source_records = consume(&secure::plaintext(), &topic, "read_committed", RECORDS as usize).await;
    let payload = |r: &protocol_tests::ConsumedRecord| (r.partition, r.key.clone(), r.value.clone(), r.timestamp);
    assert_eq!(
        replicated.iter().map(payload).collect::<Vec<_>>(),
        source_records.iter().map(payload).collect::<Vec<_>>()
    );
    // Keep going past the broker's 10 s session lifetime, so re-authentication shows up.
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (code, stdout, stderr) = kferry.stop().await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("re-authenticated (KIP-368)"), "no re-authentication in the trace log");
    assert_no_secrets(&format!("{stdout}\n{stderr}"), &[password]);
}

fn client_args(settings: &[String]) -> Vec<&str> {
    settings.iter().flat_map(|s| ["--client-config", s.as_str()]).collect()
}

/// Fails when `output` holds any of `extra`, the test PKI's passwords, or the client key.
fn assert_no_secrets(output: &str, extra: &[String]) {
    assert!(output.len() > 1000, "suspiciously little output: {output}");
    let key = std::fs::read_to_string(cert_file("client.key")).expect("client key");
    let key_lines = key.lines().filter(|l| !l.starts_with("-----")).map(str::to_owned);
    let secrets = [secure::scram_password(), secure::plain_password(), secure::keystore_password()]
        .into_iter()
        .chain(extra.iter().cloned())
        .chain(key_lines);
    for secret in secrets {
        assert!(secret.len() >= 8, "a short secret would match by chance: {}", secret.len());
        assert!(!output.contains(&secret), "a secret ({} chars) appears in kferry's output", secret.len());
    }
}

/// What [`check_at_trace_level`] saw: kferry's standard output and error, and every secret
/// it was given (besides the broker's, which [`assert_no_secrets`] adds).
struct TraceCheck {
    stdout: String,
    stderr: String,
    secrets: Vec<String>,
}

/// `kferry check` at trace level against every mechanism, with passwords, tokens and the
/// client secret passed as ${ENV}, files and inline; one cluster's password is wrong. Its
/// output names what failed. `env` is added to kferry's environment.
async fn check_at_trace_level(env: &[(&str, &str)]) -> TraceCheck {
    let endpoint = TokenEndpoint::start("check-client", "check-secret-31337", false).await;
    let tls_endpoint = TokenEndpoint::start("check-client", "check-secret-31337", true).await;
    let token = secure::unsecured_jwt("kferry-check");
    let ca = path("ca.pem");
    let wrong = "wrong-password-8d1e".to_owned();
    let grant_file = std::env::temp_dir().join(format!("{}.secret", unique_name("kferry-grant")));
    std::fs::write(&grant_file, "check-secret-31337\n").expect("secret written");
    let config = format!(
        "clusters:\n\
         \x20 plain: {{ bootstrap_servers: [\"{sasl_ssl}\"], security: {{ tls: {{ ca: \"{ca}\" }}, sasl: {{ mechanism: PLAIN, username: plainuser, password: \"${{KFERRY_TEST_PLAIN}}\" }} }} }}\n\
         \x20 scram512: {{ bootstrap_servers: [\"{sasl_ssl}\"], security: {{ tls: {{ ca: \"{ca}\" }}, sasl: {{ mechanism: SCRAM-SHA-512, username: kferry, password_file: \"{scram_file}\" }} }} }}\n\
         \x20 scram256: {{ bootstrap_servers: [\"{sasl_plain}\"], security: {{ sasl: {{ mechanism: SCRAM-SHA-256, username: kferry, password: \"{scram}\" }} }} }}\n\
         \x20 token: {{ bootstrap_servers: [\"{sasl_plain}\"], security: {{ sasl: {{ mechanism: OAUTHBEARER, token: \"${{KFERRY_TEST_TOKEN}}\" }} }} }}\n\
         \x20 grant: {{ bootstrap_servers: [\"{sasl_plain}\"], security: {{ sasl: {{ mechanism: OAUTHBEARER, token_endpoint: \"{url}\", client_id: check-client, client_secret: \"${{KFERRY_TEST_GRANT}}\", scope: kafka }} }} }}\n\
         \x20 granttls: {{ bootstrap_servers: [\"{sasl_plain}\"], security: {{ sasl: {{ mechanism: OAUTHBEARER, token_endpoint: \"{tls_url}\", client_id: check-client, client_secret_file: \"{grant_file}\", scope: kafka }} }} }}\n\
         \x20 mtls: {{ bootstrap_servers: [\"{mtls}\"], security: {mtls_security} }}\n\
         \x20 wrong: {{ bootstrap_servers: [\"{sasl_ssl}\"], security: {{ tls: {{ ca: \"{ca}\" }}, sasl: {{ mechanism: SCRAM-SHA-512, username: kferry, password: \"{wrong}\" }} }} }}\n\
         flows: [{{ source: plain, target: mtls }}]\n",
        sasl_ssl = secure::sasl_ssl(),
        sasl_plain = secure::sasl_plaintext(),
        mtls = secure::mtls(),
        mtls_security = mtls_security(),
        scram_file = path("scram.password"),
        scram = secure::scram_password(),
        url = endpoint.url,
        tls_url = tls_endpoint.url,
        grant_file = grant_file.display(),
    );
    let base_env = [
        ("KFERRY_LOG", "trace"),
        ("KFERRY_TEST_PLAIN", &secure::plain_password()),
        ("KFERRY_TEST_TOKEN", &token),
        ("KFERRY_TEST_GRANT", "check-secret-31337"),
        // The https endpoint is checked against the system's roots (no tls.ca): the test CA
        // becomes the system store through the variable rustls-native-certs honours.
        ("SSL_CERT_FILE", &ca),
    ];
    let env: Vec<(&str, &str)> = base_env.iter().copied().chain(env.iter().copied()).collect();
    let (code, stdout, stderr) = Kferry::run_to_end_with_env("check", &config, &env).await;
    assert_eq!(code, Some(1), "the cluster with the wrong password must fail check:\n{stdout}\n{stderr}");
    let _ = std::fs::remove_file(&grant_file);
    for healthy in ["plain", "scram512", "scram256", "token", "grant", "granttls", "mtls"] {
        assert!(stdout.contains(&format!("cluster {healthy}: id ")), "{healthy} not reached:\n{stdout}\n{stderr}");
    }
    assert!(stdout.contains("cluster wrong: UNREACHABLE"), "{stdout}");
    assert!(stdout.contains("  security: TLS, SASL PLAIN as plainuser"), "{stdout}");
    assert!(stdout.contains("  security: TLS with client certificate, no SASL"), "{stdout}");
    assert_eq!(tls_endpoint.requests.load(Ordering::Relaxed), 1, "the https endpoint was asked once");
    assert!(stderr.contains("SCRAM-SHA-512 authentication as user kferry failed"), "{stderr}");
    let mut secrets = vec![token, wrong, "check-secret-31337".to_owned()];
    secrets.extend(endpoint.issued.lock().expect("token list").iter().cloned());
    secrets.extend(tls_endpoint.issued.lock().expect("token list").iter().cloned());
    assert!(secrets.len() > 3, "the token endpoint was never asked");
    TraceCheck { stdout, stderr, secrets }
}

/// [`check_at_trace_level`]: no secret in its output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_at_trace_level_leaks_no_secret() {
    let check = check_at_trace_level(&[]).await;
    assert_no_secrets(&format!("{}\n{}", check.stdout, check.stderr), &check.secrets);
}

/// [`check_at_trace_level`] with `KFERRY_LOG_FORMAT=json`: every log line on standard error
/// is one JSON object with a level and a message, and no secret is in the output, neither
/// as written nor in the decoded JSON strings (an escape could hide one from a plain
/// search). The only other lines are `check`'s own report of the cluster it could not
/// reach (`error: ...`, as in text mode): command output, not log events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_at_trace_level_in_json_leaks_no_secret() {
    let check = check_at_trace_level(&[("KFERRY_LOG_FORMAT", "json")]).await;
    let mut events = 0;
    let mut decoded = String::new();
    for line in check.stderr.lines() {
        if line.starts_with("error: ") {
            continue;
        }
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
        let object = event.as_object().unwrap_or_else(|| panic!("a log line that is not a JSON object: {line}"));
        for key in ["timestamp", "level", "target", "message"] {
            assert!(object.get(key).is_some_and(serde_json::Value::is_string), "no string {key}: {line}");
        }
        assert!(!object.contains_key("fields") && !object.contains_key("spans"), "fields not flattened: {line}");
        assert!(!line.contains('\u{1b}'), "ANSI colours in a JSON line: {line}");
        for value in object.values() {
            match value {
                serde_json::Value::String(text) => decoded.push_str(text),
                other => decoded.push_str(&other.to_string()),
            }
            decoded.push('\n');
        }
        events += 1;
    }
    assert!(events > 20, "only {events} JSON log lines at trace level:\n{}", check.stderr);
    assert!(
        check.stderr.lines().any(|l| l.starts_with('{') && l.contains("\"level\":\"TRACE\"")),
        "no trace event:\n{}",
        check.stderr
    );
    assert_no_secrets(&format!("{}\n{}", check.stdout, check.stderr), &check.secrets);
    assert_no_secrets(&decoded, &check.secrets);
}
