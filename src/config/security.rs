//! The `security:` section of a cluster: TLS (CA bundle, client certificate, server name)
//! and SASL (mechanism and credentials), as the file states them. No file is read and no
//! network is touched here: `client::Security` turns this into connectors and credentials.
//!
//! Every string may name environment variables as `${NAME}`, expanded while parsing (a
//! variable that is not set is a parse error naming it). Secrets ([`Secret`]) never show in
//! `Debug` output, error messages or logs: they print as `<redacted>`.

use std::fmt;
use std::path::PathBuf;

use serde::de::{self, Deserializer};
use serde::Deserialize;

/// How kferry protects and authenticates its connections to one cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// TLS on every connection; absent: plaintext.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// SASL authentication after connecting (over TLS when `tls` is set); absent: none.
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
}

/// TLS settings (`security.tls`). An empty mapping (`tls: {}`) means TLS trusting the
/// system's CAs, without a client certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the CA certificates that may sign the brokers' certificates; absent: the
    /// system's trust store.
    #[serde(default)]
    pub ca: Option<Expanded>,
    /// PEM file with the client certificate (chain) for mutual TLS; needs `key`.
    #[serde(default)]
    pub cert: Option<Expanded>,
    /// PEM file with the client certificate's private key (PKCS#8, PKCS#1 or SEC1).
    #[serde(default)]
    pub key: Option<Expanded>,
    /// The name the brokers' certificates must carry (and that is sent as SNI), when it is
    /// not the host of the address kferry connects to.
    #[serde(default)]
    pub server_name: Option<Expanded>,
}

/// SASL settings (`security.sasl`). Which keys apply depends on the mechanism; validation
/// says which are missing or out of place.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    /// PLAIN and SCRAM: the user.
    #[serde(default)]
    pub username: Option<Expanded>,
    /// PLAIN and SCRAM: the password (or `password_file`).
    #[serde(default)]
    pub password: Option<Secret>,
    /// PLAIN and SCRAM: a file holding the password, read at every authentication (so a
    /// rotated password is picked up without a restart); one trailing newline is ignored.
    #[serde(default)]
    pub password_file: Option<Expanded>,
    /// OAUTHBEARER: a fixed access token.
    #[serde(default)]
    pub token: Option<Secret>,
    /// OAUTHBEARER: a file holding the access token, read again at every (re-)authentication
    /// so a token refreshed by another process is used as soon as it changes.
    #[serde(default)]
    pub token_file: Option<Expanded>,
    /// OAUTHBEARER: an OAuth 2 token endpoint (`http://` or `https://`) kferry asks for a
    /// token with the client-credentials grant.
    #[serde(default)]
    pub token_endpoint: Option<Expanded>,
    /// OAUTHBEARER with `token_endpoint`: the OAuth client id.
    #[serde(default)]
    pub client_id: Option<Expanded>,
    /// OAUTHBEARER with `token_endpoint`: the OAuth client secret (or `client_secret_file`).
    #[serde(default)]
    pub client_secret: Option<Secret>,
    #[serde(default)]
    pub client_secret_file: Option<Expanded>,
    /// OAUTHBEARER with `token_endpoint`: the scope asked for, if any.
    #[serde(default)]
    pub scope: Option<Expanded>,
    /// OAUTHBEARER: SASL extensions sent with the token (RFC 7628 key/value pairs), e.g.
    /// Confluent Cloud's `logicalCluster` and `identityPoolId`.
    #[serde(default)]
    pub extensions: std::collections::BTreeMap<String, Expanded>,
}

/// The SASL mechanisms kferry speaks, spelt as Kafka spells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "OAUTHBEARER")]
    OauthBearer,
}

impl SaslMechanism {
    /// The name in SaslHandshake and in Kafka's `sasl.enabled.mechanisms`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
            Self::OauthBearer => "OAUTHBEARER",
        }
    }

    /// Whether the mechanism authenticates a user with a password (PLAIN, SCRAM).
    pub fn uses_password(self) -> bool {
        !matches!(self, Self::OauthBearer)
    }
}

impl fmt::Display for SaslMechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A string from the file with `${NAME}` environment references expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expanded(pub String);

impl Expanded {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(&self.0)
    }
}

impl<'de> Deserialize<'de> for Expanded {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        expand_env(&text, |name| std::env::var(name).ok()).map(Self).map_err(de::Error::custom)
    }
}

/// A password, token or client secret. Its `Debug` prints `<redacted>`, and it has no
/// `Display`: the value leaves only through [`Secret::expose`], to be put on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret itself, for the authentication exchange only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // The raw text is dropped once expanded; an error names the variable, never a value.
        let text = String::deserialize(deserializer)?;
        expand_env(&text, |name| std::env::var(name).ok()).map(Self).map_err(de::Error::custom)
    }
}

/// Replaces every `${NAME}` in `text` by `lookup(NAME)`. A `$` not followed by `{` stays as
/// it is (passwords contain dollars); `$${` writes a literal `${`.
fn expand_env(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
        } else if let Some(reference) = after.strip_prefix('{') {
            let end = reference.find('}').ok_or_else(|| "unclosed \"${\" (write ${NAME})".to_owned())?;
            let name = &reference[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("\"${{{name}}}\" is not an environment variable reference (write ${{NAME}})"));
            }
            let value = lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
            out.push_str(&value);
            rest = &reference[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PASSWORD" => Some("s3cr$t".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_references() {
        assert_eq!(expand_env("${PASSWORD}", env).unwrap(), "s3cr$t");
        assert_eq!(expand_env("a-${PASSWORD}-${EMPTY}b", env).unwrap(), "a-s3cr$t-b");
        assert_eq!(expand_env("pa$$word$", env).unwrap(), "pa$$word$");
        assert_eq!(expand_env("$${PASSWORD}", env).unwrap(), "${PASSWORD}");
        assert_eq!(expand_env("no refs", env).unwrap(), "no refs");
    }

    #[test]
    fn bad_references_name_the_problem() {
        assert_eq!(expand_env("${MISSING}", env).unwrap_err(), "environment variable MISSING is not set");
        assert!(expand_env("${PASSWORD", env).unwrap_err().contains("unclosed"));
        assert!(expand_env("${A B}", env).unwrap_err().contains("not an environment variable reference"));
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let secret = Secret::new("hunter2".to_owned());
        assert_eq!(format!("{secret:?}"), "<redacted>");
        let sasl = SaslConfig {
            mechanism: SaslMechanism::Plain,
            username: Some(Expanded("u".to_owned())),
            password: Some(secret),
            password_file: None,
            token: None,
            token_file: None,
            token_endpoint: None,
            client_id: None,
            client_secret: None,
            client_secret_file: None,
            scope: None,
            extensions: Default::default(),
        };
        assert!(!format!("{sasl:?}").contains("hunter2"));
    }
}
