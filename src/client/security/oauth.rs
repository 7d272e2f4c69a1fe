//! Where OAUTHBEARER tokens come from: a fixed token, a file (read again at every
//! authentication, so a token another process refreshes is used as soon as it changes), or
//! an OAuth 2 token endpoint asked with the client-credentials grant (RFC 6749 §4.4), whose
//! token is kept until 80% of its lifetime has passed. Also the SASL message (RFC 7628).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use tokio_rustls::TlsConnector;

use super::http::{self, HttpError, Url};
use super::SecretSource;
use crate::config::Secret;

/// How long a token endpoint may take to answer.
const ENDPOINT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why no credential could be had. Names the config key and file or URL; never a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialError {
    #[error("security.sasl.{key}: cannot read {}: {source}", .path.display())]
    Read { key: &'static str, path: PathBuf, source: std::sync::Arc<std::io::Error> },
    #[error("security.sasl.{key}: {} is empty", .path.display())]
    Empty { key: &'static str, path: PathBuf },
    #[error("security.sasl.token_endpoint {url}: {reason}")]
    Endpoint { url: String, reason: String },
}

/// An OAUTHBEARER token source.
pub(crate) enum TokenSource {
    Static(Secret),
    File(PathBuf),
    Endpoint(ClientCredentials),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(_) => f.write_str("Static(<redacted>)"),
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Endpoint(c) => f.debug_struct("Endpoint").field("url", &c.url_text).finish_non_exhaustive(),
        }
    }
}

impl TokenSource {
    /// The token to authenticate with now.
    pub(crate) async fn token(&self) -> Result<Secret, CredentialError> {
        match self {
            Self::Static(token) => Ok(token.clone()),
            Self::File(path) => SecretSource::File { key: "token_file", path: path.clone() }.read(),
            Self::Endpoint(credentials) => credentials.token().await,
        }
    }
}

/// The client-credentials grant against one token endpoint, with the token it last got.
pub(crate) struct ClientCredentials {
    pub(crate) url: Url,
    pub(crate) url_text: String,
    pub(crate) client_id: String,
    pub(crate) client_secret: SecretSource,
    pub(crate) scope: Option<String>,
    /// For an https endpoint: the cluster's CA setting (or the system's roots), no client
    /// certificate; `None` for http.
    pub(crate) tls: Option<TlsConnector>,
    /// The last token and when to ask for a new one; shared by every connection.
    pub(crate) cached: Mutex<Option<(Secret, Instant)>>,
}

impl ClientCredentials {
    async fn token(&self) -> Result<Secret, CredentialError> {
        if let Some((token, _)) = self.lock().as_ref().filter(|(_, renew_at)| Instant::now() < *renew_at) {
            return Ok(token.clone());
        }
        let (token, lifetime) = self.fetch().await?;
        // Renew at 80% of the lifetime, so a token is never sent about to expire; without
        // an expires_in, ask anew for every authentication.
        let renew_at = Instant::now() + lifetime.map_or(Duration::ZERO, |l| l.mul_f64(0.8));
        *self.lock() = Some((token.clone(), renew_at));
        Ok(token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Secret, Instant)>> {
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fetch(&self) -> Result<(Secret, Option<Duration>), CredentialError> {
        let fail = |reason: String| CredentialError::Endpoint { url: self.url_text.clone(), reason };
        let secret = self.client_secret.read()?;
        // RFC 6749 §2.3.1: both halves form-encoded before the Basic encoding.
        let basic =
            BASE64.encode(format!("{}:{}", http::form_encode(&self.client_id), http::form_encode(secret.expose())));
        let authorization = format!("Basic {basic}");
        let mut body = "grant_type=client_credentials".to_owned();
        if let Some(scope) = &self.scope {
            body.push_str(&format!("&scope={}", http::form_encode(scope)));
        }
        let response = http::post_form(
            &self.url,
            &[("Authorization", &authorization)],
            &body,
            self.tls.as_ref(),
            ENDPOINT_TIMEOUT,
        )
        .await
        .map_err(|e: HttpError| fail(e.to_string()))?;
        let json: serde_json::Value = serde_json::from_slice(&response.body)
            .map_err(|_| fail(format!("HTTP {} with a body that is not JSON", response.status)))?;
        if response.status != 200 {
            // RFC 6749 §5.2 error fields; they describe the failure, not the secret.
            let error = json.get("error").and_then(|e| e.as_str()).unwrap_or("no error code");
            let description = json.get("error_description").and_then(|e| e.as_str()).unwrap_or("");
            return Err(fail(format!("HTTP {}: {error} {description}", response.status).trim_end().to_owned()));
        }
        let token = json
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| fail("the answer has no access_token".to_owned()))?;
        let lifetime = json.get("expires_in").and_then(|e| e.as_u64()).map(Duration::from_secs);
        Ok((Secret::new(token.to_owned()), lifetime))
    }
}

/// The OAUTHBEARER client-first message (RFC 7628 §3.1) carrying `token` and `extensions`.
pub(crate) fn initial_response(token: &Secret, extensions: &[(String, String)]) -> Vec<u8> {
    let mut message = format!("n,,\x01auth=Bearer {}\x01", token.expose());
    for (key, value) in extensions {
        message.push_str(&format!("{key}={value}\x01"));
    }
    message.push('\x01');
    message.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initial_response_follows_rfc7628() {
        let message = initial_response(&Secret::new("abc.def.".to_owned()), &[]);
        assert_eq!(message, b"n,,\x01auth=Bearer abc.def.\x01\x01");
        let extensions =
            [("logicalCluster".to_owned(), "lkc-1".to_owned()), ("identityPoolId".to_owned(), "p".to_owned())];
        let message = initial_response(&Secret::new("t".to_owned()), &extensions);
        assert_eq!(message, b"n,,\x01auth=Bearer t\x01logicalCluster=lkc-1\x01identityPoolId=p\x01\x01");
    }

    #[test]
    fn debug_hides_static_tokens() {
        assert_eq!(format!("{:?}", TokenSource::Static(Secret::new("t0ken".to_owned()))), "Static(<redacted>)");
    }
}
