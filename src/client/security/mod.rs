//! Connection security of one cluster, ready to use: the TLS connector built from the
//! `security.tls` files, and the SASL mechanism with where its credentials come from.
//!
//! - `tls`: rustls connectors, certificate errors worded for operators.
//! - `sasl`: the SaslHandshake/SaslAuthenticate exchange on a [`super::Messenger`], and
//!   KIP-368 re-authentication timing.
//! - `scram` (RFC 5802/7677) and `oauth` (tokens, RFC 7628 message): the mechanisms' logic.
//! - `http`: the minimal HTTP/1.1 client the OAuth client-credentials grant needs.
//!
//! Secrets are held as [`Secret`] (redacted `Debug`) and read from their files only when a
//! connection authenticates; nothing here logs or formats a secret.

mod http;
mod oauth;
pub(crate) mod sasl;
mod scram;
mod tls;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use oauth::CredentialError;
pub(crate) use tls::TlsSettings;

use crate::config::{SaslConfig, SaslMechanism, Secret, SecurityConfig};

/// Why a cluster's security settings cannot be used. Names the cluster, the config key and
/// the file; never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SecurityError {
    #[error("cluster {cluster}: security.tls.{key}: {}: {reason}", .path.display())]
    Pem { cluster: String, key: &'static str, path: PathBuf, reason: String },
    #[error("cluster {cluster}: security.tls: {reason}")]
    Tls { cluster: String, reason: String },
    #[error(
        "cluster {cluster}: security.tls.ca is not set and the system's trust store has no usable CA ({reason}); \
         set security.tls.ca to the PEM file of the CA that signed the brokers' certificates"
    )]
    NoRoots { cluster: String, reason: String },
    #[error("cluster {cluster}: security.tls.server_name: \"{name}\" is not a DNS name or IP address")]
    ServerName { cluster: String, name: String },
    #[error("cluster {cluster}: security.sasl.token_endpoint: {reason}")]
    Endpoint { cluster: String, reason: String },
}

/// TLS and SASL of one cluster; shared by all its connections.
#[derive(Debug, Default)]
pub struct Security {
    pub(crate) tls: Option<TlsSettings>,
    pub(crate) sasl: Option<Sasl>,
}

impl Security {
    /// Reads the certificate files and prepares the credentials of `config` for cluster
    /// `cluster`. Secret files are not read here but at every authentication.
    pub fn from_config(cluster: &str, config: &SecurityConfig) -> Result<Self, SecurityError> {
        // An https token endpoint needs roots even when the brokers are plaintext; an http
        // one does not (and a machine without a system trust store must still work then).
        let needs_endpoint_tls = config
            .sasl
            .as_ref()
            .and_then(|s| s.token_endpoint.as_ref())
            .is_some_and(|url| url.as_str().starts_with("https://"));
        if config.tls.is_none() && !needs_endpoint_tls {
            return Ok(Self {
                tls: None,
                sasl: config.sasl.as_ref().map(|s| Sasl::from_config(cluster, s, None)).transpose()?,
            });
        }
        let (tls, endpoint_tls) = tls::build(cluster, config.tls.as_ref())?;
        let sasl = config.sasl.as_ref().map(|s| Sasl::from_config(cluster, s, Some(endpoint_tls))).transpose()?;
        Ok(Self { tls, sasl })
    }

    /// Whether connections use TLS.
    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// One line for `check`, like `TLS, SASL SCRAM-SHA-512 as kferry` or
    /// `TLS with client certificate, no SASL`.
    pub fn describe(&self) -> String {
        let tls = match &self.tls {
            Some(tls) if tls.client_certificate => "TLS with client certificate",
            Some(_) => "TLS",
            None => "plaintext",
        };
        match &self.sasl {
            Some(sasl) => match sasl.username() {
                Some(user) => format!("{tls}, SASL {} as {user}", sasl.mechanism),
                None => format!("{tls}, SASL {}", sasl.mechanism),
            },
            None => format!("{tls}, no SASL"),
        }
    }

    /// One line per credential that would cross the network unencrypted: a SASL PLAIN
    /// password on a listener without TLS, a client secret sent to an `http://` token
    /// endpoint. Allowed (test set-ups use them) but worth a warning.
    pub fn cleartext_warnings(&self, cluster: &str) -> Vec<String> {
        let Some(sasl) = &self.sasl else { return Vec::new() };
        let mut warnings = Vec::new();
        if sasl.mechanism == SaslMechanism::Plain && self.tls.is_none() {
            warnings.push(format!(
                "cluster {cluster}: SASL PLAIN without TLS sends the password of {} in clear text; \
                 set security.tls (SASL_SSL) or use SCRAM",
                sasl.username().unwrap_or("the user")
            ));
        }
        if let Credentials::Token(oauth::TokenSource::Endpoint(endpoint), _) = &sasl.credentials {
            if !endpoint.url.https {
                warnings.push(format!(
                    "cluster {cluster}: the token endpoint {} is http://, so the client secret of {} travels \
                     in clear text; use https://",
                    endpoint.url_text, endpoint.client_id
                ));
            }
        }
        warnings
    }

    /// The SASL mechanism connections authenticate with, if any.
    pub fn sasl_mechanism(&self) -> Option<SaslMechanism> {
        self.sasl.as_ref().map(|s| s.mechanism)
    }
}

/// A SASL mechanism with its credentials.
#[derive(Debug)]
pub(crate) struct Sasl {
    pub(crate) mechanism: SaslMechanism,
    credentials: Credentials,
}

#[derive(Debug)]
enum Credentials {
    Password {
        username: String,
        password: SecretSource,
    },
    /// OAUTHBEARER: where the token comes from, and the SASL extensions sent with it.
    Token(oauth::TokenSource, Vec<(String, String)>),
}

impl Sasl {
    fn from_config(
        cluster: &str,
        config: &SaslConfig,
        endpoint_tls: Option<tokio_rustls::TlsConnector>,
    ) -> Result<Self, SecurityError> {
        // Validation made sure the keys a mechanism needs are there; the fallbacks below
        // are for a config built in code without validation.
        let credentials = if config.mechanism.uses_password() {
            Credentials::Password {
                username: config.username.as_ref().map(|u| u.as_str().to_owned()).unwrap_or_default(),
                password: SecretSource::from_keys(
                    config.password.as_ref(),
                    config.password_file.as_ref(),
                    "password_file",
                ),
            }
        } else if let Some(token) = &config.token {
            Credentials::Token(oauth::TokenSource::Static(token.clone()), extensions(config))
        } else if let Some(file) = &config.token_file {
            Credentials::Token(oauth::TokenSource::File(file.path()), extensions(config))
        } else {
            let url_text = config.token_endpoint.as_ref().map(|u| u.as_str().to_owned()).unwrap_or_default();
            let url = http::Url::parse(&url_text)
                .map_err(|e| SecurityError::Endpoint { cluster: cluster.to_owned(), reason: e.to_string() })?;
            let tls = endpoint_tls.filter(|_| url.https);
            Credentials::Token(
                oauth::TokenSource::Endpoint(oauth::ClientCredentials {
                    url,
                    url_text,
                    client_id: config.client_id.as_ref().map(|c| c.as_str().to_owned()).unwrap_or_default(),
                    client_secret: SecretSource::from_keys(
                        config.client_secret.as_ref(),
                        config.client_secret_file.as_ref(),
                        "client_secret_file",
                    ),
                    scope: config.scope.as_ref().map(|s| s.as_str().to_owned()),
                    tls,
                    cached: Mutex::new(None),
                }),
                extensions(config),
            )
        };
        Ok(Self { mechanism: config.mechanism, credentials })
    }

    /// The user name for messages (PLAIN and SCRAM); `None` for OAUTHBEARER.
    pub(crate) fn username(&self) -> Option<&str> {
        match &self.credentials {
            Credentials::Password { username, .. } => Some(username),
            Credentials::Token(..) => None,
        }
    }
}

fn extensions(config: &SaslConfig) -> Vec<(String, String)> {
    config.extensions.iter().map(|(k, v)| (k.clone(), v.as_str().to_owned())).collect()
}

/// A secret given inline or as a file read at each use.
pub(crate) enum SecretSource {
    Inline(Secret),
    File { key: &'static str, path: PathBuf },
}

impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::File { path, .. } => f.debug_struct("File").field("path", path).finish(),
        }
    }
}

impl SecretSource {
    fn from_keys(inline: Option<&Secret>, file: Option<&crate::config::Expanded>, file_key: &'static str) -> Self {
        match (inline, file) {
            (Some(secret), _) => Self::Inline(secret.clone()),
            (None, Some(path)) => Self::File { key: file_key, path: path.path() },
            (None, None) => Self::Inline(Secret::new(String::new())),
        }
    }

    /// The secret now: files are read at every call, so a rotated secret takes effect at
    /// the next authentication. One trailing line break is dropped (editors add one).
    pub(crate) fn read(&self) -> Result<Secret, CredentialError> {
        let (key, path) = match self {
            Self::Inline(secret) => return Ok(secret.clone()),
            Self::File { key, path } => (*key, path),
        };
        let mut text = std::fs::read_to_string(path).map_err(|source| CredentialError::Read {
            key,
            path: path.clone(),
            source: Arc::new(source),
        })?;
        if text.ends_with('\n') {
            text.pop();
            if text.ends_with('\r') {
                text.pop();
            }
        }
        if text.is_empty() {
            return Err(CredentialError::Empty { key, path: path.clone() });
        }
        Ok(Secret::new(text))
    }
}

#[cfg(test)]
mod tests {
    use super::Security;
    use crate::config::Config;

    fn security(cluster_yaml: &str) -> Security {
        let text = format!(
            "clusters:\n  a: {{ bootstrap_servers: [\"h:1\"], security: {cluster_yaml} }}\n  b: {{ bootstrap_servers: [\"h:2\"] }}\nflows:\n  - {{ source: a, target: b }}\n"
        );
        let config = Config::parse(&text, "test").unwrap_or_else(|e| panic!("{e}"));
        Security::from_config("a", &config.clusters["a"].security).unwrap()
    }

    #[test]
    fn warns_when_a_secret_would_travel_in_clear_text() {
        let plain = security("{ sasl: { mechanism: PLAIN, username: u, password: p } }");
        let warnings = plain.cleartext_warnings("a");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("SASL PLAIN without TLS") && warnings[0].contains(" u "), "{warnings:?}");
        assert!(!warnings[0].contains(" p "), "never the password itself");
        let endpoint = security(
            "{ sasl: { mechanism: OAUTHBEARER, token_endpoint: \"http://idp:8080/t\", client_id: c, client_secret: s } }",
        );
        let warnings = endpoint.cleartext_warnings("a");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("http://idp:8080/t") && warnings[0].contains("client secret"), "{warnings:?}");
        // SCRAM never sends the password; TLS protects PLAIN.
        assert!(security("{ sasl: { mechanism: SCRAM-SHA-512, username: u, password: p } }")
            .cleartext_warnings("a")
            .is_empty());
    }
}
