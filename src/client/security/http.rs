//! A minimal HTTP/1.1 client for one thing: POSTing a form to an OAuth token endpoint and
//! reading the answer. One request per connection (`Connection: close`), a bounded answer
//! read exactly as far as `Content-Length` or the last chunk says, `https://` over the cluster's TLS roots. A full HTTP
//! stack (hyper, reqwest) would weigh more than the rest of kferry's client together.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::client::resolve::{self, ResolveError, ResolverConfig};
use crate::client::transport;

/// Largest answer read; a token response is a few KiB.
const MAX_RESPONSE_BYTES: u64 = 1024 * 1024;

/// Why a request failed. The URL is named by its caller; no header or body is ever shown.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("\"{0}\" is not a URL kferry can use ({1})")]
    BadUrl(String, &'static str),
    #[error("{0}")]
    Resolve(ResolveError),
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

impl Url {
    /// The `Host` header (RFC 9110 §7.2): the port unless it is the scheme's default, IPv6
    /// literals in brackets.
    pub(crate) fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default_port = if self.https { 443 } else { 80 };
        if self.port == default_port {
            host
        } else {
            format!("{host}:{}", self.port)
        }
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
    let addresses =
        resolve::resolve(&url.host, url.port, &ResolverConfig::system()).await.map_err(HttpError::Resolve)?;
    let tcp = transport::connect_first(&addresses).await.map_err(|e| HttpError::Connect(Arc::new(e)))?;
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nAccept: application/json\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
        url.target,
        url.host_header(),
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
    let head_end = loop {
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        if !read_more(&mut stream, &mut raw).await? {
            return Err(HttpError::Malformed("no end of headers"));
        }
    };
    let head = parse_head(&raw[..head_end])?;
    let body_start = head_end + 4;
    // Read exactly what the framing says, never up to EOF: an identity provider that closes
    // its TLS connection without close_notify makes the read past the body fail.
    let body = match head.framing {
        Framing::Length(length) => {
            if length > MAX_RESPONSE_BYTES as usize {
                return Err(HttpError::Malformed("Content-Length over 1 MiB"));
            }
            while raw.len() < body_start + length {
                if !read_more(&mut stream, &mut raw).await? {
                    return Err(HttpError::Malformed("body shorter than Content-Length"));
                }
            }
            raw[body_start..body_start + length].to_vec()
        }
        Framing::Chunked => loop {
            match dechunk(&raw[body_start..]) {
                Ok(body) => break body,
                Err(Dechunk::Incomplete) => {
                    if !read_more(&mut stream, &mut raw).await? {
                        return Err(HttpError::Malformed("short chunk"));
                    }
                }
                Err(Dechunk::Bad(why)) => return Err(HttpError::Malformed(why)),
            }
        },
        // No length and not chunked: the body ends with the connection (HTTP/1.0 style);
        // here a missing close_notify is the end, not an error.
        Framing::UntilClose => {
            loop {
                match read_more(&mut stream, &mut raw).await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(HttpError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
            }
            raw[body_start..].to_vec()
        }
    };
    Ok(Response { status: head.status, body })
}

/// Appends what the stream has next to `raw`; `false` at end of stream. Bounded by
/// [`MAX_RESPONSE_BYTES`].
async fn read_more<S: AsyncRead + Unpin>(stream: &mut S, raw: &mut Vec<u8>) -> Result<bool, HttpError> {
    if raw.len() as u64 >= MAX_RESPONSE_BYTES {
        return Err(HttpError::Malformed("answer over 1 MiB"));
    }
    raw.reserve(8192);
    let n = stream.read_buf(raw).await.map_err(|e| HttpError::Io(Arc::new(e)))?;
    Ok(n > 0)
}

/// How the body of an answer is delimited.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

struct Head {
    status: u16,
    framing: Framing,
}

fn parse_head(head: &[u8]) -> Result<Head, HttpError> {
    let head = std::str::from_utf8(head).map_err(|_| HttpError::Malformed("headers are not text"))?;
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
    let mut framing = Framing::UntilClose;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            // RFC 9112 §6.3: chunked wins over Content-Length.
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            framing = Framing::Length(value.parse().map_err(|_| HttpError::Malformed("bad Content-Length"))?);
        }
    }
    Ok(Head { status, framing })
}

/// Parses a whole response held in memory (tests).
#[cfg(test)]
fn parse_response(raw: &[u8]) -> Result<Response, HttpError> {
    let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or(HttpError::Malformed("no end of headers"))?;
    let head = parse_head(&raw[..head_end])?;
    let rest = &raw[head_end + 4..];
    let body = match head.framing {
        Framing::Chunked => dechunk(rest).map_err(|e| match e {
            Dechunk::Incomplete => HttpError::Malformed("short chunk"),
            Dechunk::Bad(why) => HttpError::Malformed(why),
        })?,
        Framing::Length(length) => {
            rest.get(..length).ok_or(HttpError::Malformed("body shorter than Content-Length"))?.to_vec()
        }
        Framing::UntilClose => rest.to_vec(),
    };
    Ok(Response { status: head.status, body })
}

/// Why a chunked body could not be decoded (yet).
enum Dechunk {
    /// More bytes are needed.
    Incomplete,
    Bad(&'static str),
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, Dechunk> {
    let mut body = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").ok_or(Dechunk::Incomplete)?;
        let size_text = std::str::from_utf8(&data[..line_end]).map_err(|_| Dechunk::Bad("bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).map_err(|_| Dechunk::Bad("bad chunk size"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            // Trailers are not read: the body is complete and the connection is closed.
            return Ok(body);
        }
        body.extend_from_slice(data.get(..size).ok_or(Dechunk::Incomplete)?);
        data = data.get(size + 2..).ok_or(Dechunk::Incomplete)?;
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
    fn host_header_carries_a_non_default_port() {
        assert_eq!(Url::parse("https://idp.example/t").unwrap().host_header(), "idp.example");
        assert_eq!(Url::parse("http://idp.example:8080/t").unwrap().host_header(), "idp.example:8080");
        assert_eq!(Url::parse("https://[::1]:8443/t").unwrap().host_header(), "[::1]:8443");
        assert_eq!(Url::parse("http://idp:443/t").unwrap().host_header(), "idp:443");
    }

    /// A stream that gives `data` in small pieces, then fails the way rustls does when the
    /// peer closes without close_notify; it accepts every write.
    struct NoCloseNotify {
        data: Vec<u8>,
        at: usize,
    }

    impl AsyncRead for NoCloseNotify {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if self.at == self.data.len() {
                let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "peer closed without close_notify");
                return std::task::Poll::Ready(Err(eof));
            }
            let n = (self.data.len() - self.at).min(7).min(buf.remaining());
            buf.put_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    impl AsyncWrite for NoCloseNotify {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            std::task::Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    async fn exchange_with(answer: &[u8]) -> Result<Response, HttpError> {
        round_trip(NoCloseNotify { data: answer.to_vec(), at: 0 }, b"POST / HTTP/1.1\r\n\r\n").await
    }

    #[tokio::test]
    async fn reads_exactly_the_body_and_ignores_a_missing_close_notify() {
        let answer = exchange_with(b"HTTP/1.1 200 OK\r\nContent-Length: 28\r\n\r\n{\"access_token\":\"abc\",\"x\":1}")
            .await
            .unwrap();
        assert_eq!((answer.status, answer.body.as_slice()), (200, b"{\"access_token\":\"abc\",\"x\":1}".as_slice()));
        let chunked =
            exchange_with(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n")
                .await
                .unwrap();
        assert_eq!(chunked.body, b"{\"a\":1}");
        let until_close = exchange_with(b"HTTP/1.0 200 OK\r\n\r\n{}").await.unwrap();
        assert_eq!(until_close.body, b"{}");
        // A body cut short is still an error.
        assert!(exchange_with(b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}").await.is_err());
        assert!(exchange_with(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999\r\n\r\n").await.is_err());
    }

    #[test]
    fn form_encodes() {
        assert_eq!(form_encode("a b&c=d/é"), "a+b%26c%3Dd%2F%C3%A9");
    }
}
