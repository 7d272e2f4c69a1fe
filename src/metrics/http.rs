//! The HTTP listener of `metrics.listen`: `/metrics` (Prometheus text), `/healthz` and
//! `/readyz` (JSON). Hand-written on tokio because it needs so little: read a request
//! head of bounded size within a timeout, look at its request line, answer, close. No
//! keep-alive, no request body, at most [`CONNECTIONS`] connections served at once.
//!
//! [`parse_head`] is a pure function over bytes (fuzzed by its unit tests with bad input):
//! "incomplete" is a normal state while the head arrives, as in mini-redis' framing.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use super::Registry;

/// Largest request head read; a scraper's is a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// A connection must send its head and take the answer within this.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; further ones wait in the kernel's backlog.
const CONNECTIONS: usize = 16;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    #[error("metrics.listen: cannot listen on {address}: {source}")]
    Bind { address: String, source: std::io::Error },
    #[error("no kferry answers on metrics.listen {address}: {reason}")]
    Probe { address: String, reason: String },
}

/// Largest answer [`probe`] reads: a `/readyz` body of thousands of partitions fits.
const MAX_PROBE_ANSWER: u64 = 16 * 1024 * 1024;

/// GETs `path` from the kferry serving on `listen` (its `metrics.listen`; an unspecified
/// address such as `0.0.0.0` is asked on loopback): the status code and body. For
/// `kferry status`, which adds what a running kferry knows to what the clusters say.
pub async fn probe(listen: &str, path: &str) -> Result<(u16, String), MetricsError> {
    let failed = |reason: String| MetricsError::Probe { address: listen.to_string(), reason };
    let mut address: SocketAddr = listen.parse().map_err(|_| failed("not an ip:port address".into()))?;
    if address.ip().is_unspecified() {
        address.set_ip(if address.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let exchange = async {
        let mut stream = TcpStream::connect(address).await?;
        stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes()).await?;
        let mut answer = Vec::new();
        stream.take(MAX_PROBE_ANSWER).read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .map_err(|_| failed("no answer within 5 s".into()))?
        .map_err(|e| failed(e.to_string()))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| failed("not an HTTP answer".into()))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| failed(format!("not an HTTP status line: {:?}", head.lines().next().unwrap_or_default())))?;
    Ok((status, body.to_string()))
}

/// Opens the listener (before the flows start, so a taken port fails `kferry run` at once).
pub async fn bind(address: &str) -> Result<TcpListener, MetricsError> {
    let parsed: SocketAddr = address.parse().map_err(|_| MetricsError::Bind {
        address: address.to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not an ip:port address"),
    })?;
    TcpListener::bind(parsed).await.map_err(|source| MetricsError::Bind { address: address.to_string(), source })
}

/// Serves until `stop` turns true.
pub async fn serve(listener: TcpListener, registry: Arc<Registry>, mut stop: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(CONNECTIONS));
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let registry = Arc::clone(&registry);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CONNECTION_TIMEOUT, answer(stream, &registry)).await;
                    drop(permit);
                });
            }
            Err(error) => {
                // Out of file descriptors, typically: pause rather than spin.
                tracing::warn!(%error, "metrics listener cannot accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, registry: &Registry) {
    let mut head = Vec::with_capacity(1024);
    let response = loop {
        match parse_head(&head) {
            Parsed::Complete(request) => break route(&request, registry),
            Parsed::Bad(status) => break respond(status, None),
            Parsed::Incomplete if head.len() >= MAX_HEAD => break respond(Status::HeadTooLarge, None),
            Parsed::Incomplete => {
                let mut limited = (&mut stream).take((MAX_HEAD - head.len()) as u64);
                if !matches!(limited.read_buf(&mut head).await, Ok(1..)) {
                    return;
                }
            }
        }
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

/// A request as far as kferry cares: its method and path.
#[derive(Debug, PartialEq, Eq)]
pub struct Request {
    pub method: Method,
    /// The path without its query string.
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Other,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The head has not fully arrived yet.
    Incomplete,
    Complete(Request),
    Bad(Status),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    BadRequest,
    NotFound,
    MethodNotAllowed,
    HeadTooLarge,
    Unavailable,
}

impl Status {
    fn line(self) -> &'static str {
        match self {
            Self::Ok => "200 OK",
            Self::BadRequest => "400 Bad Request",
            Self::NotFound => "404 Not Found",
            Self::MethodNotAllowed => "405 Method Not Allowed",
            Self::HeadTooLarge => "431 Request Header Fields Too Large",
            Self::Unavailable => "503 Service Unavailable",
        }
    }
}

/// Parses a request head once it has arrived whole (up to the blank line).
pub fn parse_head(bytes: &[u8]) -> Parsed {
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| bytes.windows(2).position(|w| w == b"\n\n"));
    let Some(end) = end else {
        // The request line alone can already be judged: refuse garbage early.
        return match bytes.iter().position(|&b| b == b'\n') {
            Some(line_end) if parse_line(&bytes[..line_end]).is_none() => Parsed::Bad(Status::BadRequest),
            _ => Parsed::Incomplete,
        };
    };
    let line_end = bytes[..=end].iter().position(|&b| b == b'\n').unwrap_or(end);
    match parse_line(&bytes[..line_end]) {
        Some(request) => Parsed::Complete(request),
        None => Parsed::Bad(Status::BadRequest),
    }
}

/// `METHOD SP target SP HTTP/1.x` (a trailing CR allowed).
fn parse_line(line: &[u8]) -> Option<Request> {
    let line = std::str::from_utf8(line).ok()?.strip_suffix('\r').unwrap_or(std::str::from_utf8(line).ok()?);
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !matches!(version, "HTTP/1.0" | "HTTP/1.1") || !target.starts_with('/') {
        return None;
    }
    if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let path = target.split(['?', '#']).next().unwrap_or(target).to_string();
    Some(Request { method, path })
}

fn route(request: &Request, registry: &Registry) -> Vec<u8> {
    if request.method == Method::Other {
        return respond(Status::MethodNotAllowed, None);
    }
    let (status, content_type, body) = match request.path.as_str() {
        "/metrics" => (Status::Ok, "text/plain; version=0.0.4; charset=utf-8", registry.render()),
        "/healthz" => {
            let health = registry.health();
            let status = if health.healthy { Status::Ok } else { Status::Unavailable };
            (status, "application/json", serde_json::to_string(&health).unwrap_or_default())
        }
        "/readyz" => {
            let readiness = registry.readiness();
            let status = if readiness.ready { Status::Ok } else { Status::Unavailable };
            (status, "application/json", serde_json::to_string(&readiness).unwrap_or_default())
        }
        _ => return respond(Status::NotFound, None),
    };
    let mut response = respond(status, Some((content_type, &body)));
    if request.method == Method::Head {
        // The headers of a GET (its content-length too), without the body.
        response.truncate(response.len() - body.len());
    }
    response
}

fn respond(status: Status, body: Option<(&str, &str)>) -> Vec<u8> {
    let (content_type, body) = body.unwrap_or(("text/plain; charset=utf-8", status.line()));
    format!(
        "HTTP/1.1 {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        status.line(),
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::{parse_head, Method, Parsed, Request, Status};

    fn get(path: &str) -> Parsed {
        Parsed::Complete(Request { method: Method::Get, path: path.to_string() })
    }

    #[test]
    fn parses_a_scrape() {
        let head = b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9464\r\nAccept: text/plain\r\n\r\n";
        assert_eq!(parse_head(head), get("/metrics"));
        assert_eq!(parse_head(b"GET /readyz?verbose=1 HTTP/1.0\n\n"), get("/readyz"));
        assert_eq!(
            parse_head(b"HEAD /healthz HTTP/1.1\r\n\r\n"),
            Parsed::Complete(Request { method: Method::Head, path: "/healthz".into() })
        );
        assert_eq!(
            parse_head(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Parsed::Complete(Request { method: Method::Other, path: "/metrics".into() })
        );
    }

    #[test]
    fn waits_for_the_whole_head() {
        let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
        for cut in 0..head.len() - 1 {
            assert_eq!(parse_head(&head[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn refuses_bad_request_lines() {
        let bad: [&[u8]; 12] = [
            b"\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /metrics\r\n\r\n",
            b"GET /metrics HTTP/2\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics HTTP/1.1 extra\r\n\r\n",
            b"get /metrics HTTP/1.1\r\n\r\n",
            b"\xff\xfe /metrics HTTP/1.1\r\n\r\n",
            b"GET /m\xc3 HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\n",
            b"SSH-2.0-OpenSSH_9.2\r\n",
        ];
        for head in bad {
            assert_eq!(parse_head(head), Parsed::Bad(Status::BadRequest), "{head:?}");
        }
    }

    #[test]
    fn never_panics_on_any_bytes() {
        // A small deterministic fuzz: every prefix of many byte soups, none may panic.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2_000 {
            let mut soup = Vec::new();
            for _ in 0..(state % 64) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let alphabet = b"GET /metricsHTP1.\r\n \x00\xff?";
                soup.push(alphabet[(state % alphabet.len() as u64) as usize]);
            }
            for cut in 0..=soup.len() {
                let _ = parse_head(&soup[..cut]);
            }
        }
    }
}
