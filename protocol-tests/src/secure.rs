//! The secured test broker: one real Kafka node started by `scripts/test` with
//! `KFERRY_KAFKA_SECURE=1` (see scripts/kafka/cluster.sh), whose listeners are
//!
//! - PLAINTEXT on the base port (test data goes in and out there with confluent-kafka),
//! - MTLS (SSL, client certificate required) on base + 2,
//! - SASLSSL (SASL_SSL: SCRAM-SHA-512 user `kferry`, PLAIN user `plainuser`) on base + 3,
//! - OAUTH (SASL_PLAINTEXT: OAUTHBEARER checked by Kafka's unsecured JWT validator, and
//!   SCRAM-SHA-256 user `kferry`) on base + 4,
//!
//! with SASL sessions limited to `connections.max.reauth.ms` (10 s), so re-authentication
//! happens within a test. The test CA, certificates and random passwords are in the
//! directory `KFERRY_TEST_SECURE_CERTS` names.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the security tests with ./scripts/test, which starts the secured broker")
    })
}

fn base_port() -> u16 {
    let address = required_env("KFERRY_TEST_SECURE");
    address.rsplit_once(':').and_then(|(_, port)| port.parse().ok()).expect("KFERRY_TEST_SECURE is host:port")
}

/// The PLAINTEXT listener.
pub fn plaintext() -> String {
    format!("127.0.0.1:{}", base_port())
}

/// The SSL listener that requires a client certificate.
pub fn mtls() -> String {
    format!("127.0.0.1:{}", base_port() + 2)
}

/// The SASL_SSL listener (SCRAM-SHA-512, PLAIN).
pub fn sasl_ssl() -> String {
    format!("127.0.0.1:{}", base_port() + 3)
}

/// The SASL_PLAINTEXT listener (OAUTHBEARER, SCRAM-SHA-256).
pub fn sasl_plaintext() -> String {
    format!("127.0.0.1:{}", base_port() + 4)
}

/// A file of the test PKI: `ca.pem`, `other-ca.pem`, `client.pem`, `client.key`, ...
pub fn cert_file(name: &str) -> PathBuf {
    PathBuf::from(required_env("KFERRY_TEST_SECURE_CERTS")).join(name)
}

fn password(name: &str) -> String {
    let path = cert_file(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim_end().to_owned()
}

/// Password of SCRAM user `kferry` (both SCRAM mechanisms).
pub fn scram_password() -> String {
    password("scram.password")
}

/// Password of PLAIN user `plainuser`.
pub fn plain_password() -> String {
    password("plain.password")
}

/// The broker's keystore password (never given to kferry; a test checks it never leaks).
pub fn keystore_password() -> String {
    password("keystore.password")
}

/// An unsigned JWT (`alg: none`) for subject `sub`, valid for an hour, as Kafka's unsecured
/// OAUTHBEARER validator accepts it.
pub fn unsecured_jwt(sub: &str) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs();
    let encode = |json: String| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
    format!(
        "{}.{}.",
        encode(r#"{"alg":"none"}"#.to_owned()),
        encode(format!(r#"{{"sub":"{sub}","iat":{now},"exp":{}}}"#, now + 3600))
    )
}

/// kferry's `security` value (YAML flow mapping) for the mTLS listener: the test CA and
/// the client certificate.
pub fn mtls_security() -> String {
    let file = |name: &str| cert_file(name).display().to_string();
    format!(
        "{{ tls: {{ ca: \"{}\", cert: \"{}\", key: \"{}\" }} }}",
        file("ca.pem"),
        file("client.pem"),
        file("client.key")
    )
}

/// confluent-kafka settings (`--client-config` of the verifier) for the mTLS listener.
pub fn mtls_verifier_config() -> Vec<String> {
    let file = |name: &str| cert_file(name).display().to_string();
    vec![
        "security.protocol=SSL".to_owned(),
        format!("ssl.ca.location={}", file("ca.pem")),
        format!("ssl.certificate.location={}", file("client.pem")),
        format!("ssl.key.location={}", file("client.key")),
    ]
}
