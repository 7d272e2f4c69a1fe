//! The SASL exchange on one connection: SaslHandshake v1 names the mechanism (the broker
//! answers with the ones it has enabled when ours is not), then SaslAuthenticate requests
//! carry the mechanism's messages until the broker is satisfied. The same exchange runs again
//! on the open connection for KIP-368 re-authentication; the broker's last SaslAuthenticate
//! answer says how long the session lasts.
//!
//! Errors name the cluster, broker, mechanism and user; the broker's own message is passed
//! on (Kafka never puts credentials in it), and no secret is ever part of an error.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::{SaslAuthenticateRequest, SaslHandshakeRequest};
use kafka_protocol::protocol::StrBytes;

use super::oauth;
use super::scram::{ScramClient, ScramHash};
use super::{Credentials, Sasl};
use crate::client::error::ConnectionError;
use crate::client::messenger::Messenger;
use crate::config::SaslMechanism;
use crate::protocol::error_code::{ErrorCode, ResponseError};

/// Authenticates the connection of `messenger`; returns the session lifetime the broker
/// announced (`None`: no limit, no re-authentication needed).
pub(crate) async fn authenticate(messenger: &Messenger, sasl: &Sasl) -> Result<Option<Duration>, ConnectionError> {
    handshake(messenger, sasl).await?;
    let last = match (&sasl.credentials, sasl.mechanism) {
        (Credentials::Password { username, password }, SaslMechanism::Plain) => {
            let password = password.read().map_err(|source| credentials(messenger, source))?;
            // RFC 4616: authzid (empty), authcid, password, NUL-separated.
            let message = format!("\0{username}\0{}", password.expose());
            round(messenger, sasl, Bytes::from(message.into_bytes())).await?
        }
        (Credentials::Password { username, password }, SaslMechanism::ScramSha256 | SaslMechanism::ScramSha512) => {
            let password = password.read().map_err(|source| credentials(messenger, source))?;
            let hash = if sasl.mechanism == SaslMechanism::ScramSha256 { ScramHash::Sha256 } else { ScramHash::Sha512 };
            scram(messenger, sasl, hash, username, password.expose()).await?
        }
        (Credentials::Token(source, extensions), _) => {
            let token = source.token().await.map_err(|source| credentials(messenger, source))?;
            tracing::trace!(broker = %messenger.broker(), ?source, extensions = extensions.len(), "OAUTHBEARER token ready");
            oauth_bearer(messenger, sasl, &token, extensions).await?
        }
        (Credentials::Password { .. }, SaslMechanism::OauthBearer) => {
            return Err(failure(messenger, sasl, "OAUTHBEARER needs a token, not a password".to_owned()))
        }
    };
    Ok((last.session_lifetime_ms > 0).then(|| Duration::from_millis(last.session_lifetime_ms.unsigned_abs())))
}

async fn handshake(messenger: &Messenger, sasl: &Sasl) -> Result<(), ConnectionError> {
    let request = SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(sasl.mechanism.name()));
    let (_, response) = messenger.request_unguarded(&request).await?;
    match ErrorCode::from_code(response.error_code) {
        None => {
            tracing::trace!(broker = %messenger.broker(), mechanism = %sasl.mechanism, "SaslHandshake accepted");
            Ok(())
        }
        Some(ErrorCode(ResponseError::UnsupportedSaslMechanism)) => Err(ConnectionError::SaslMechanism {
            broker: messenger.broker().clone(),
            mechanism: sasl.mechanism,
            enabled: response.mechanisms.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", "),
        }),
        // A PLAINTEXT or SSL listener answers SaslHandshake so.
        Some(ErrorCode(ResponseError::IllegalSaslState)) => Err(failure(
            messenger,
            sasl,
            "this listener does not take SASL (ILLEGAL_SASL_STATE): it is a PLAINTEXT or SSL listener; \
             remove security.sasl for this cluster, or use the broker's SASL port"
                .to_owned(),
        )),
        Some(code) => Err(failure(messenger, sasl, format!("SaslHandshake refused: {code}"))),
    }
}

/// One SaslAuthenticate request; a refusal becomes the error naming mechanism and user.
async fn round(
    messenger: &Messenger,
    sasl: &Sasl,
    message: Bytes,
) -> Result<kafka_protocol::messages::SaslAuthenticateResponse, ConnectionError> {
    let request = SaslAuthenticateRequest::default().with_auth_bytes(message);
    let (_, response) = messenger.request_unguarded(&request).await?;
    match ErrorCode::from_code(response.error_code) {
        None => Ok(response),
        Some(code) => {
            let said = response.error_message.as_ref().map_or_else(|| code.to_string(), |m| m.to_string());
            Err(ConnectionError::Authentication {
                broker: messenger.broker().clone(),
                mechanism: sasl.mechanism,
                user: sasl.username().map(str::to_owned),
                message: said,
            })
        }
    }
}

async fn scram(
    messenger: &Messenger,
    sasl: &Sasl,
    hash: ScramHash,
    username: &str,
    password: &str,
) -> Result<kafka_protocol::messages::SaslAuthenticateResponse, ConnectionError> {
    let scram_failure = |e: super::scram::ScramError| failure(messenger, sasl, e.to_string());
    let (mut client, first) = ScramClient::start(hash, username).map_err(scram_failure)?;
    let challenge = round(messenger, sasl, Bytes::from(first.into_bytes())).await?;
    let server_first = std::str::from_utf8(&challenge.auth_bytes)
        .map_err(|_| failure(messenger, sasl, "the SCRAM challenge is not UTF-8".to_owned()))?;
    let last = client.client_final(server_first, password).map_err(scram_failure)?;
    let outcome = round(messenger, sasl, Bytes::from(last.into_bytes())).await?;
    let server_final = std::str::from_utf8(&outcome.auth_bytes)
        .map_err(|_| failure(messenger, sasl, "the SCRAM server-final message is not UTF-8".to_owned()))?;
    client.verify_server_final(server_final).map_err(scram_failure)?;
    tracing::trace!(broker = %messenger.broker(), mechanism = %sasl.mechanism, "SCRAM server signature verified");
    Ok(outcome)
}

async fn oauth_bearer(
    messenger: &Messenger,
    sasl: &Sasl,
    token: &crate::config::Secret,
    extensions: &[(String, String)],
) -> Result<kafka_protocol::messages::SaslAuthenticateResponse, ConnectionError> {
    let response = round(messenger, sasl, Bytes::from(oauth::initial_response(token, extensions))).await?;
    if response.auth_bytes.is_empty() {
        return Ok(response);
    }
    // RFC 7628 §3.2.2: a refused token comes back as a JSON error challenge, which the client
    // acknowledges with a single 0x01; the broker then fails the exchange with its message.
    let status = String::from_utf8_lossy(&response.auth_bytes).into_owned();
    match round(messenger, sasl, Bytes::from_static(b"\x01")).await {
        Err(ConnectionError::Authentication { broker, mechanism, user, message }) => {
            // Kafka repeats the challenge as its message; add the challenge only if it does not.
            let message = if message.contains(&status) { message } else { format!("{message} ({status})") };
            Err(ConnectionError::Authentication { broker, mechanism, user, message })
        }
        Err(other) => Err(other),
        Ok(_) => Err(failure(messenger, sasl, format!("the broker refused the token: {status}"))),
    }
}

fn credentials(messenger: &Messenger, source: super::CredentialError) -> ConnectionError {
    ConnectionError::Credentials { broker: messenger.broker().clone(), source }
}

fn failure(messenger: &Messenger, sasl: &Sasl, reason: String) -> ConnectionError {
    ConnectionError::Sasl { broker: messenger.broker().clone(), mechanism: sasl.mechanism, reason }
}

/// When to re-authenticate a session of `lifetime`: at 85% of it, as Kafka's Java client
/// does at the earliest (it picks 85-95%), so a slow exchange still ends in time.
pub(crate) fn reauthenticate_after(lifetime: Duration) -> Duration {
    lifetime.mul_f64(0.85)
}
