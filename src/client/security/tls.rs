//! TLS for broker connections (and an https token endpoint): rustls on the ring provider,
//! roots from a PEM CA bundle or the system's trust store, an optional client certificate
//! (mutual TLS), and a server-name override. A certificate the roots do not vouch for is
//! reported with the name of its issuer and of the CAs kferry trusts, which is what an
//! operator needs to fix a wrong `ca` file.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_rustls::TlsConnector;

use super::SecurityError;
use crate::config::TlsConfig;

/// TLS as one cluster uses it.
pub(crate) struct TlsSettings {
    pub(crate) connector: TlsConnector,
    /// Checks and SNI use this name instead of each address's host.
    server_name: Option<ServerName<'static>>,
    /// Whether a client certificate is presented (mutual TLS).
    pub(crate) client_certificate: bool,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// The name to check the certificate of the broker at `address` (`host:port`) against.
    pub(crate) fn server_name(&self, address: &str) -> Option<ServerName<'static>> {
        if let Some(name) = &self.server_name {
            return Some(name.clone());
        }
        let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
        ServerName::try_from(host.trim_matches(['[', ']']).to_owned()).ok()
    }
}

/// Builds the broker connector and a connector for an https token endpoint (same roots, no
/// client certificate) from `tls` (`None`: system roots for the endpoint only).
pub(crate) fn build(
    cluster: &str,
    tls: Option<&TlsConfig>,
) -> Result<(Option<TlsSettings>, TlsConnector), SecurityError> {
    let (roots, trusted) = roots(cluster, tls.and_then(|t| t.ca.as_ref()).map(|ca| ca.path()).as_deref())?;
    let verifier = Arc::new(ExplainingVerifier::new(cluster, roots, trusted)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = || {
        rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|e| SecurityError::Tls { cluster: cluster.to_owned(), reason: e.to_string() })
            .map(|b| b.dangerous().with_custom_certificate_verifier(verifier.clone()))
    };
    let endpoint = TlsConnector::from(Arc::new(builder()?.with_no_client_auth()));
    let Some(tls) = tls else { return Ok((None, endpoint)) };
    let config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let chain = certificates(cluster, "cert", &cert.path())?;
            let key = PrivateKeyDer::from_pem_file(key.path()).map_err(|e| SecurityError::Pem {
                cluster: cluster.to_owned(),
                key: "key",
                path: key.path(),
                reason: key_problem(&key.path(), e),
            })?;
            builder()?.with_client_auth_cert(chain, key).map_err(|e| SecurityError::Tls {
                cluster: cluster.to_owned(),
                reason: format!("security.tls.cert and key do not go together: {e}"),
            })?
        }
        _ => builder()?.with_no_client_auth(),
    };
    let server_name =
        match &tls.server_name {
            Some(name) => Some(ServerName::try_from(name.as_str().to_owned()).map_err(|_| {
                SecurityError::ServerName { cluster: cluster.to_owned(), name: name.as_str().to_owned() }
            })?),
            None => None,
        };
    let client_certificate = tls.cert.is_some();
    Ok((
        Some(TlsSettings { connector: TlsConnector::from(Arc::new(config)), server_name, client_certificate }),
        endpoint,
    ))
}

/// Why a private key file gave no key; an encrypted key is the common case worth naming.
fn key_problem(path: &Path, error: rustls::pki_types::pem::Error) -> String {
    let encrypted = std::fs::read_to_string(path).is_ok_and(|text| text.contains("ENCRYPTED"));
    if encrypted {
        "the key is encrypted, which kferry does not support; write it out decrypted \
         (openssl pkey -in KEY -out KEY.pem) and protect the file instead"
            .to_owned()
    } else {
        error.to_string()
    }
}

/// The trusted roots and a description of them for messages.
fn roots(cluster: &str, ca: Option<&Path>) -> Result<(RootCertStore, String), SecurityError> {
    let mut store = RootCertStore::empty();
    let Some(ca) = ca else {
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = store.add_parsable_certificates(found.certs);
        if added == 0 {
            let why = found.errors.first().map_or("none found".to_owned(), |e| e.to_string());
            return Err(SecurityError::NoRoots { cluster: cluster.to_owned(), reason: why });
        }
        return Ok((store, format!("the system's trust store ({added} CAs)")));
    };
    let certs = certificates(cluster, "ca", ca)?;
    let names: Vec<String> = certs.iter().map(|c| subject_summary(c)).collect();
    for cert in certs {
        store.add(cert).map_err(|e| SecurityError::Pem {
            cluster: cluster.to_owned(),
            key: "ca",
            path: ca.to_owned(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok((store, format!("the CAs in {} ({})", ca.display(), names.join("; "))))
}

fn certificates(cluster: &str, key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let error = |reason: String| SecurityError::Pem { cluster: cluster.to_owned(), key, path: path.to_owned(), reason };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| error(e.to_string()))?;
    if certs.is_empty() {
        return Err(error("no CERTIFICATE block in the file".to_owned()));
    }
    Ok(certs)
}

/// webpki's verifier, with errors that name the certificate's issuer and the trusted CAs.
#[derive(Debug)]
struct ExplainingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    trusted: String,
}

impl ExplainingVerifier {
    fn new(cluster: &str, roots: RootCertStore, trusted: String) -> Result<Self, SecurityError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| SecurityError::Tls { cluster: cluster.to_owned(), reason: e.to_string() })?;
        Ok(Self { inner, trusted })
    }
}

/// A certificate problem worded for an operator; rustls carries it to the handshake error.
#[derive(Debug)]
struct Untrusted(String);

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Untrusted {}

impl ServerCertVerifier for ExplainingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now).map_err(|error| {
            let explained = match &error {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
                    "the broker's certificate ({}) is issued by {}, which is not among {}",
                    subject_summary(end_entity),
                    issuer_summary(end_entity),
                    self.trusted
                ),
                rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext { expected, presented }) => {
                    format!(
                        "the broker's certificate is not valid for the name {} (it names {}); set security.tls.server_name \
                         to one of those, or connect by a name the certificate carries",
                        name_text(expected),
                        presented.join(", ")
                    )
                }
                other => return other.clone(),
            };
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(Untrusted(
                explained,
            )))))
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

fn name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => format!("\"{}\"", dns.as_ref()),
        ServerName::IpAddress(ip) => format!("{:?}", std::net::IpAddr::from(*ip)),
        _ => format!("{name:?}"),
    }
}

/// `CN=..., O=...` of a certificate's subject, for messages.
fn subject_summary(cert: &CertificateDer<'_>) -> String {
    name_summary(der::tbs_names(cert).map(|(_, subject)| subject))
}

fn issuer_summary(cert: &CertificateDer<'_>) -> String {
    name_summary(der::tbs_names(cert).map(|(issuer, _)| issuer))
}

fn name_summary(name: Option<&[u8]>) -> String {
    let parts = name.map(der::name_parts).unwrap_or_default();
    if parts.is_empty() {
        "an unnamed certificate".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Just enough DER (X.690) to read the issuer and subject names of an X.509 certificate
/// (RFC 5280 §4.1) for error messages; webpki does the real parsing and checking.
mod der {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    /// id-at-commonName (2.5.4.3) and id-at-organizationName (2.5.4.10).
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    const ORGANIZATION: &[u8] = &[0x55, 0x04, 0x0a];

    /// Splits one TLV off `data`: (tag, contents, rest).
    fn tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = data.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let len = rest[..count].iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[count..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }

    /// The DER of the issuer and subject Names of a certificate.
    pub(super) fn tbs_names(cert: &[u8]) -> Option<(&[u8], &[u8])> {
        let (SEQUENCE, certificate, _) = tlv(cert)? else { return None };
        let (SEQUENCE, tbs, _) = tlv(certificate)? else { return None };
        let mut rest = tbs;
        // [0] EXPLICIT version, present from X.509 v2 on.
        if rest.first() == Some(&0xa0) {
            rest = tlv(rest)?.2;
        }
        let (_serial, _, rest) = tlv(rest)?;
        let (_signature, _, rest) = tlv(rest)?;
        let (SEQUENCE, issuer, rest) = tlv(rest)? else { return None };
        let (_validity, _, rest) = tlv(rest)?;
        let (SEQUENCE, subject, _) = tlv(rest)? else { return None };
        Some((issuer, subject))
    }

    /// `CN=x` and `O=y` of a Name's contents, in order.
    pub(super) fn name_parts(mut name: &[u8]) -> Vec<String> {
        let mut parts = Vec::new();
        while let Some((SET, mut set, rest)) = tlv(name) {
            name = rest;
            while let Some((SEQUENCE, attribute, next)) = tlv(set) {
                set = next;
                let Some((OID, oid, value)) = tlv(attribute) else { continue };
                let Some((_, text, _)) = tlv(value) else { continue };
                let label = match oid {
                    COMMON_NAME => "CN",
                    ORGANIZATION => "O",
                    _ => continue,
                };
                parts.push(format!("{label}={}", String::from_utf8_lossy(text)));
            }
        }
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Expanded;

    fn temp_file(name: &str, text: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!("kferry-tls-{}-{name}", std::process::id()));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn error(tls: TlsConfig) -> String {
        match build("east", Some(&tls)) {
            Ok(_) => panic!("accepted {tls:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unusable_files_are_named() {
        let missing = TlsConfig { ca: Some(Expanded("/nonexistent/ca.pem".into())), ..TlsConfig::default() };
        let got = error(missing);
        assert!(got.starts_with("cluster east: security.tls.ca: /nonexistent/ca.pem: "), "{got}");

        let empty = temp_file("empty.pem", "not a certificate\n");
        let got = error(TlsConfig { ca: Some(Expanded(empty.display().to_string())), ..TlsConfig::default() });
        assert!(got.contains("no CERTIFICATE block in the file"), "{got}");

        let encrypted =
            temp_file("key.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n");
        let got = key_problem(&encrypted, rustls::pki_types::pem::Error::NoItemsFound);
        assert!(got.starts_with("the key is encrypted, which kferry does not support"), "{got}");
        assert_eq!(key_problem(&empty, rustls::pki_types::pem::Error::NoItemsFound), "no items found");
        for path in [empty, encrypted] {
            let _ = std::fs::remove_file(path);
        }
    }
}
