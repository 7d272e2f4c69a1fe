//! A minimal HTTP/1.1 client for one thing: POSTing a form to an OAuth token endpoint and
//! reading the answer. One request per connection (`Connection: close`), a bounded answer,
//! `Content-Length` or chunked bodies, `https://` over the cluster's TLS roots. A full HTTP
//! stack (hyper, reqwest) would weigh more than the rest of kferry's client together.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest answer read; a token response is a few KiB.
const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// Why a request failed. The URL is named by its caller; no header or body is ever shown.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("\"{0}\" is not a URL kferry can use ({1})")]
    BadUrl(String, &'static str),
    #[error("cannot connect: {0}")]
    Connect(Arc<std::io::Error>),
    #[error("TLS: {0}")]
    Tls(Arc<std::io::Error>),
    #[error("connection failed: {0}")]
    Io(Arc<std::io::Error>),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the answer is not HTTP/1.x ({0})")]
    Malformed(&'static str),
}

/// An `http://` or `https://` URL, split for the request line and the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    pub(crate) https: bool,
    pub(crate) host: String,
    pub(crate) port: u16,
    /// Path and query, starting with '/'.
    pub(crate) target: String,
}

impl Url {
    pub(crate) fn parse(url: &str) -> Result<Self, HttpError> {
        let bad = |why| HttpError::BadUrl(url.to_owned(), why);
        let (https, rest) = if let Some(rest) = url.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = url.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(bad("only http:// and https:// are supported"));
        };
        let (authority, target) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        // Credentials in the URL would end up in error messages; they belong in client_secret.
        if authority.contains('@') {
            return Err(bad("user info in the URL is not supported; use client_id and client_secret"));
        }
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => (host, port.parse().map_err(|_| bad("bad port"))?),
            _ => (authority, if https { 443 } else { 80 }),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        Ok(Self { https, host: host.trim_matches(['[', ']']).to_owned(), port, target: target.to_owned() })
    }
}

/// A response: status code and body.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// POSTs `body` (already `application/x-www-form-urlencoded`) with `headers` and returns
/// the answer, all within `timeout`.
pub(crate) async fn post_form(
    url: &Url,
    headers: &[(&str, &str)],
    body: &str,
    tls: Option<&TlsConnector>,
    timeout: Duration,
) -> Result<Response, HttpError> {
    tokio::time::timeout(timeout, exchange(url, headers, body, tls)).await.map_err(|_| HttpError::Timeout(timeout))?
}

async fn exchange(
    url: &Url,
    headers: &[(&str, &str)],
    body: &str,
    tls: Option<&TlsConnector>,
) -> Result<Response, HttpError> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port)).await.map_err(|e| HttpError::Connect(Arc::new(e)))?;
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        url.target,
        url.host,
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    if url.https {
        let tls = tls.ok_or(HttpError::BadUrl(url.host.clone(), "https without TLS settings (a kferry bug)"))?;
        let name = ServerName::try_from(url.host.clone())
            .map_err(|_| HttpError::BadUrl(url.host.clone(), "not a valid TLS server name"))?;
        let stream = tls.connect(name, tcp).await.map_err(|e| HttpError::Tls(Arc::new(e)))?;
        round_trip(stream, request.as_bytes()).await
    } else {
        round_trip(tcp, request.as_bytes()).await
    }
}

async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, request: &[u8]) -> Result<Response, HttpError> {
    let io = |e| HttpError::Io(Arc::new(e));
    stream.write_all(request).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut raw = Vec::new();
    // Connection: close, so the answer ends where the stream does.
    (&mut stream).take(MAX_RESPONSE_BYTES).read_to_end(&mut raw).await.map_err(io)?;
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Result<Response, HttpError> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or(HttpError::Malformed("no end of headers"))?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| HttpError::Malformed("headers are not text"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    if !status_line.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("no HTTP/1.x status line"));
    }
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or(HttpError::Malformed("no status code"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| HttpError::Malformed("bad Content-Length"))?);
        }
    }
    let rest = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(length) = length {
        rest.get(..length).ok_or(HttpError::Malformed("body shorter than Content-Length"))?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or(HttpError::Malformed("bad chunk"))?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| HttpError::Malformed("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| HttpError::Malformed("bad chunk size"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        body.extend_from_slice(data.get(..size).ok_or(HttpError::Malformed("short chunk"))?);
        data = data.get(size + 2..).ok_or(HttpError::Malformed("short chunk"))?;
    }
}

/// `application/x-www-form-urlencoded` escaping of one value.
pub(crate) fn form_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' => out.push(byte as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let url = Url::parse("https://idp.example.com/oauth2/token?x=1").unwrap();
        assert_eq!(
            url,
            Url { https: true, host: "idp.example.com".into(), port: 443, target: "/oauth2/token?x=1".into() }
        );
        let url = Url::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((url.host.as_str(), url.port, url.target.as_str()), ("127.0.0.1", 8080, "/"));
        assert!(Url::parse("ftp://x").is_err());
        assert!(Url::parse("https://user:pw@x/t").unwrap_err().to_string().contains("user info"));
    }

    #[test]
    fn parses_responses() {
        let plain = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}trailing").unwrap();
        assert_eq!((plain.status, plain.body.as_slice()), (200, b"{}".as_slice()));
        let chunked =
            parse_response(b"HTTP/1.1 401 No\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n")
                .unwrap();
        assert_eq!((chunked.status, chunked.body.as_slice()), (401, b"abcde".as_slice()));
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
    }

    #[test]
    fn form_encodes() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
