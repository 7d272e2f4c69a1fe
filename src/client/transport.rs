//! The byte stream under a [`super::Messenger`]: a TCP connection, wrapped in TLS when the
//! cluster's security says so. Owns connecting (bounded by the connect timeout) and the
//! wording of TLS failures: untrusted certificate, wrong name, a plaintext listener
//! answering a TLS client, a client certificate the broker refuses.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::{AlertDescription, CertificateError};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::error::{BrokerRef, ConnectionError};
use super::messenger::ConnectionConfig;
use super::resolve;

/// A connected stream; the messenger splits each kind its own way (a TCP stream without
/// a lock, so the plaintext path costs nothing more than before TLS existed).
pub(super) enum Transport {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Connects to `broker`, with the TLS handshake when the cluster uses TLS; the whole is
/// bounded by the connect timeout.
pub(super) async fn connect(broker: &BrokerRef, config: &ConnectionConfig) -> Result<Transport, ConnectionError> {
    tokio::time::timeout(config.connect_timeout, connect_unbounded(broker, config))
        .await
        .map_err(|_| ConnectionError::ConnectTimeout { broker: broker.clone(), after: config.connect_timeout })?
}

async fn connect_unbounded(broker: &BrokerRef, config: &ConnectionConfig) -> Result<Transport, ConnectionError> {
    let connect_error = |e| ConnectionError::Connect { broker: broker.clone(), source: Arc::new(e) };
    let addresses = resolve::resolve_address(&broker.address)
        .await
        .map_err(|source| ConnectionError::Resolve { broker: broker.clone(), source })?;
    let stream = connect_first(&addresses).await.map_err(connect_error)?;
    // Requests are small and latency matters more than packet count.
    stream.set_nodelay(true).map_err(connect_error)?;
    let Some(tls) = &config.security.tls else {
        return Ok(Transport::Plain(stream));
    };
    let name = tls.server_name(&broker.address).ok_or_else(|| ConnectionError::Tls {
        broker: broker.clone(),
        reason: "the host is not a valid TLS server name; set security.tls.server_name".to_owned(),
    })?;
    let stream = tls.connector.connect(name, stream).await.map_err(|e| tls_error(broker, &e))?;
    let (_, session) = stream.get_ref();
    tracing::debug!(
        %broker,
        version = ?session.protocol_version(),
        cipher_suite = ?session.negotiated_cipher_suite().map(|s| s.suite()),
        "TLS established"
    );
    Ok(Transport::Tls(Box::new(stream)))
}

/// Connects to the first of `addresses` that accepts, as `getaddrinfo` users do; the error
/// is the last address's.
pub(super) async fn connect_first(addresses: &[SocketAddr]) -> std::io::Result<TcpStream> {
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// The error for a failed TLS handshake or a TLS failure on the first request.
pub(super) fn tls_error(broker: &BrokerRef, error: &std::io::Error) -> ConnectionError {
    match explain_tls(error) {
        Some(reason) => ConnectionError::Tls { broker: broker.clone(), reason },
        None => ConnectionError::Io {
            broker: broker.clone(),
            source: Arc::new(std::io::Error::new(error.kind(), error.to_string())),
        },
    }
}

/// Words a TLS failure for an operator; `None` when `error` is not one.
pub(super) fn explain_tls(error: &std::io::Error) -> Option<String> {
    if let Some(tls) = error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        return Some(match tls {
            rustls::Error::InvalidCertificate(CertificateError::Other(other)) => other.0.to_string(),
            rustls::Error::InvalidCertificate(other) => format!("the broker's certificate is not accepted: {other:?}"),
            rustls::Error::AlertReceived(
                alert @ (AlertDescription::CertificateRequired
                | AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::HandshakeFailure),
            ) => format!(
                "the broker ended the TLS handshake ({alert:?}): it requires a client certificate it trusts; \
                 set security.tls.cert and key to one signed by a CA the broker trusts"
            ),
            other => format!("TLS failed: {other}"),
        });
    }
    match error.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => Some(
            "the broker closed the connection during the TLS handshake: this is likely a plaintext listener \
             (security.tls is set for this cluster; remove it, or use the broker's SSL/SASL_SSL port)"
                .to_owned(),
        ),
        _ => None,
    }
}
