//! Host name resolution without glibc: `/etc/hosts`, then DNS (A and AAAA over UDP, TCP
//! when the answer is truncated) to the name servers of `/etc/resolv.conf`, with its
//! `search` domains and `ndots`. Owns nothing else: connecting is `transport`'s job.
//!
//! Why not `getaddrinfo` (tokio's `lookup_host`): the static release binary (glibc with
//! `crt-static`) cannot load glibc's NSS modules, and the container image has no libc at
//! all. This covers what a container runtime gives a process (a mounted `/etc/hosts` and
//! `/etc/resolv.conf`); NSS plug-ins such as LDAP or mDNS are not supported.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long one query to one name server may take before the next is tried.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// DNS record types kferry asks for.
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;

/// Why a host name gave no address.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("\"{0}\" is not host:port")]
    BadAddress(String),
    #[error("host {host} not found (looked in /etc/hosts and asked {servers})")]
    NotFound { host: String, servers: String },
    #[error("host {host}: no name server answered ({servers}): {source}")]
    NoAnswer { host: String, servers: String, source: Arc<std::io::Error> },
}

/// The resolver's inputs, read from `/etc` (or from a test's files).
#[derive(Debug, Clone, Default)]
pub(crate) struct ResolverConfig {
    hosts: String,
    resolv_conf: String,
}

impl ResolverConfig {
    /// Reads `/etc/hosts` and `/etc/resolv.conf`; a missing file counts as empty (an empty
    /// root file system still resolves `localhost` and IP literals).
    pub(crate) fn system() -> Self {
        Self::from_files(Path::new("/etc/hosts"), Path::new("/etc/resolv.conf"))
    }

    fn from_files(hosts: &Path, resolv_conf: &Path) -> Self {
        // Small files read once per connection attempt: blocking for microseconds is cheaper
        // than a thread hop, and it follows edits the way libc does.
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        Self { hosts: read(hosts), resolv_conf: read(resolv_conf) }
    }

    #[cfg(test)]
    fn from_text(hosts: &str, resolv_conf: &str) -> Self {
        Self { hosts: hosts.to_owned(), resolv_conf: resolv_conf.to_owned() }
    }
}

/// Splits `host:port` (`[v6]:port` for IPv6) into its parts.
pub(crate) fn split_host_port(address: &str) -> Result<(&str, u16), ResolveError> {
    let bad = || ResolveError::BadAddress(address.to_owned());
    let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// Resolves `address` (`host:port`) with the system's files.
pub(crate) async fn resolve_address(address: &str) -> Result<Vec<SocketAddr>, ResolveError> {
    let (host, port) = split_host_port(address)?;
    resolve(host, port, &ResolverConfig::system()).await
}

/// All addresses of `host`, each with `port`: an IP literal as it is, else `/etc/hosts`,
/// else `localhost` (RFC 6761), else DNS.
pub(crate) async fn resolve(host: &str, port: u16, config: &ResolverConfig) -> Result<Vec<SocketAddr>, ResolveError> {
    let with_port = |ips: Vec<IpAddr>| ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect::<Vec<_>>();
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let from_hosts = hosts_lookup(&config.hosts, host);
    if !from_hosts.is_empty() {
        return Ok(with_port(from_hosts));
    }
    let bare = host.trim_end_matches('.');
    if bare.eq_ignore_ascii_case("localhost") || bare.to_ascii_lowercase().ends_with(".localhost") {
        return Ok(with_port(vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]));
    }
    let conf = ResolvConf::parse(&config.resolv_conf);
    dns_lookup(host, &conf).await.map(with_port)
}

/// The addresses `/etc/hosts` gives `name` (case-insensitive), in file order.
fn hosts_lookup(hosts: &str, name: &str) -> Vec<IpAddr> {
    let name = name.trim_end_matches('.');
    hosts
        .lines()
        .map(|line| line.split('#').next().unwrap_or_default())
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let ip = fields.next()?.parse::<IpAddr>().ok()?;
            fields.any(|alias| alias.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect()
}

/// What kferry uses of `/etc/resolv.conf`.
#[derive(Debug, PartialEq, Eq)]
struct ResolvConf {
    servers: Vec<SocketAddr>,
    search: Vec<String>,
    ndots: usize,
}

impl ResolvConf {
    fn parse(text: &str) -> Self {
        let mut conf = Self { servers: Vec::new(), search: Vec::new(), ndots: 1 };
        for line in text.lines() {
            let mut fields = line.split(['#', ';']).next().unwrap_or_default().split_whitespace();
            match fields.next() {
                Some("nameserver") => {
                    // A link-local IPv6 server with a zone (fe80::1%eth0) is not supported.
                    if let Some(ip) = fields.next().and_then(|s| s.parse::<IpAddr>().ok()) {
                        conf.servers.push(SocketAddr::new(ip, 53));
                    }
                }
                // The last of `search`/`domain` wins, as in libc.
                Some("search") | Some("domain") => conf.search = fields.map(str::to_owned).collect(),
                Some("options") => {
                    for option in fields {
                        if let Some(n) = option.strip_prefix("ndots:").and_then(|n| n.parse().ok()) {
                            conf.ndots = n;
                        }
                    }
                }
                _ => {}
            }
        }
        if conf.servers.is_empty() {
            // libc's default when resolv.conf names no server.
            conf.servers.push(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 53));
        }
        conf
    }

    /// The names to ask for, in order (libc's rule: with at least `ndots` dots, the name as
    /// given first, else the search domains first; a trailing dot means exactly this name).
    fn candidates(&self, host: &str) -> Vec<String> {
        if let Some(absolute) = host.strip_suffix('.') {
            return vec![absolute.to_owned()];
        }
        let searched = self.search.iter().map(|domain| format!("{host}.{}", domain.trim_end_matches('.')));
        if host.matches('.').count() >= self.ndots {
            std::iter::once(host.to_owned()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(host.to_owned())).collect()
        }
    }
}

/// Asks the name servers for each candidate name in turn; the first with addresses wins.
async fn dns_lookup(host: &str, conf: &ResolvConf) -> Result<Vec<IpAddr>, ResolveError> {
    let servers = conf.servers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let mut last_io_error = None;
    let mut any_answer = false;
    for name in conf.candidates(host) {
        for server in &conf.servers {
            match query_both(server, &name).await {
                Ok(ips) if !ips.is_empty() => return Ok(ips),
                // The server answered: no such name; the next candidate may have it.
                Ok(_) => {
                    any_answer = true;
                    break;
                }
                Err(e) => last_io_error = Some(e),
            }
        }
    }
    match last_io_error {
        Some(source) if !any_answer => {
            Err(ResolveError::NoAnswer { host: host.to_owned(), servers, source: Arc::new(source) })
        }
        _ => Err(ResolveError::NotFound { host: host.to_owned(), servers }),
    }
}

/// The A and AAAA records of `name` from one server, IPv4 first (brokers usually listen
/// on both or on IPv4 only).
async fn query_both(server: &SocketAddr, name: &str) -> std::io::Result<Vec<IpAddr>> {
    let (v4, v6) = tokio::join!(query(server, name, TYPE_A), query(server, name, TYPE_AAAA));
    match (v4, v6) {
        (Ok(mut v4), Ok(v6)) => {
            v4.extend(v6);
            Ok(v4)
        }
        // A server that answers one type and not the other still gave an answer.
        (Ok(ips), Err(_)) | (Err(_), Ok(ips)) => Ok(ips),
        (Err(e), Err(_)) => Err(e),
    }
}

/// One question over UDP, again over TCP when the answer comes back truncated.
async fn query(server: &SocketAddr, name: &str, qtype: u16) -> std::io::Result<Vec<IpAddr>> {
    let id = random_id();
    let question = dns::encode_query(id, name, qtype)?;
    let bind: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { ([0u16; 8], 0).into() };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    socket.send(&question).await?;
    let mut buf = vec![0u8; 1232];
    let answer = tokio::time::timeout(QUERY_TIMEOUT, async {
        loop {
            let n = socket.recv(&mut buf).await?;
            // Ignore stray datagrams that do not answer this question.
            if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                return Ok::<_, std::io::Error>(buf[..n].to_vec());
            }
        }
    })
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no DNS answer from {server}")))??;
    match dns::parse_answer(&answer, id)? {
        dns::Answer::Truncated => query_tcp(server, &question, id).await,
        dns::Answer::Records(ips) => Ok(ips),
    }
}

async fn query_tcp(server: &SocketAddr, question: &[u8], id: u16) -> std::io::Result<Vec<IpAddr>> {
    let exchange = async {
        let mut stream = TcpStream::connect(server).await?;
        let len = u16::try_from(question.len()).map_err(|_| dns::invalid("question too long"))?;
        stream.write_all(&len.to_be_bytes()).await?;
        stream.write_all(question).await?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).await?;
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut answer).await?;
        match dns::parse_answer(&answer, id)? {
            dns::Answer::Records(ips) => Ok(ips),
            dns::Answer::Truncated => Err(dns::invalid("truncated answer over TCP")),
        }
    };
    tokio::time::timeout(QUERY_TIMEOUT, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no DNS answer from {server} (TCP)")))?
}

/// A query id that an off-path attacker cannot guess.
fn random_id() -> u16 {
    let mut id = [0u8; 2];
    // Failing system randomness is not a reason to stop resolving; 0 is still a valid id.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut id);
    u16::from_be_bytes(id)
}

/// The DNS wire format, as far as one question and A/AAAA answers need it (RFC 1035, 3596).
/// No I/O here.
mod dns {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::{TYPE_A, TYPE_AAAA};

    pub(super) enum Answer {
        Records(Vec<IpAddr>),
        Truncated,
    }

    pub(super) fn invalid(why: &str) -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad DNS answer: {why}"))
    }

    /// A recursive query for `name`, type `qtype`, class IN.
    pub(super) fn encode_query(id: u16, name: &str, qtype: u16) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(18 + name.len());
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&[0x01, 0x00]); // RD: ask for recursion
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]); // one question
        for label in name.split('.').filter(|l| !l.is_empty()) {
            let len = u8::try_from(label.len()).ok().filter(|&l| l <= 63).ok_or_else(|| invalid("label too long"))?;
            out.push(len);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out.extend_from_slice(&qtype.to_be_bytes());
        out.extend_from_slice(&[0, 1]);
        Ok(out)
    }

    /// The A/AAAA records of an answer; empty for NXDOMAIN or no data. Every A/AAAA record
    /// of the answer section counts: the server put the CNAME chain there itself.
    pub(super) fn parse_answer(msg: &[u8], id: u16) -> std::io::Result<Answer> {
        let header = msg.get(..12).ok_or_else(|| invalid("short header"))?;
        if u16::from_be_bytes([header[0], header[1]]) != id || header[2] & 0x80 == 0 {
            return Err(invalid("not an answer to this query"));
        }
        if header[2] & 0x02 != 0 {
            return Ok(Answer::Truncated);
        }
        match header[3] & 0x0f {
            0 => {}
            3 => return Ok(Answer::Records(Vec::new())), // NXDOMAIN
            code => return Err(invalid(&format!("server error (rcode {code})"))),
        }
        let questions = u16::from_be_bytes([header[4], header[5]]);
        let answers = u16::from_be_bytes([header[6], header[7]]);
        let mut at = 12;
        for _ in 0..questions {
            at = skip_name(msg, at)? + 4;
        }
        let mut ips = Vec::new();
        for _ in 0..answers {
            at = skip_name(msg, at)?;
            let fixed = msg.get(at..at + 10).ok_or_else(|| invalid("short record"))?;
            let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
            let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
            let data = msg.get(at + 10..at + 10 + len).ok_or_else(|| invalid("short record data"))?;
            match (rtype, len) {
                (TYPE_A, 4) => ips.push(IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3]))),
                (TYPE_AAAA, 16) => {
                    let octets: [u8; 16] = data.try_into().map_err(|_| invalid("AAAA length"))?;
                    ips.push(IpAddr::V6(Ipv6Addr::from(octets)));
                }
                _ => {}
            }
            at += 10 + len;
        }
        Ok(Answer::Records(ips))
    }

    /// The offset after the (possibly compressed) name at `at`.
    fn skip_name(msg: &[u8], mut at: usize) -> std::io::Result<usize> {
        loop {
            let len = *msg.get(at).ok_or_else(|| invalid("name runs past the end"))?;
            match len {
                0 => return Ok(at + 1),
                l if l & 0xc0 == 0xc0 => return Ok(at + 2), // a pointer ends the name
                l => at += 1 + usize::from(l),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_host_and_port() {
        assert_eq!(split_host_port("kafka-1.example:9092").unwrap(), ("kafka-1.example", 9092));
        assert_eq!(split_host_port("[::1]:9093").unwrap(), ("::1", 9093));
        assert!(split_host_port("no-port").is_err());
        assert!(split_host_port(":9092").is_err());
        assert!(split_host_port("host:99999").is_err());
    }

    #[test]
    fn reads_hosts_file_with_aliases_and_comments() {
        let hosts = "# comment\n127.0.0.1 localhost\n10.0.0.5  kafka-a.internal kafka-a # broker\n::1 kafka-a\n";
        assert_eq!(hosts_lookup(hosts, "KAFKA-A"), vec!["10.0.0.5".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]);
        assert_eq!(hosts_lookup(hosts, "kafka-a.internal."), vec!["10.0.0.5".parse::<IpAddr>().unwrap()]);
        assert!(hosts_lookup(hosts, "broker").is_empty());
    }

    #[test]
    fn parses_resolv_conf_and_orders_candidates() {
        let conf = ResolvConf::parse(
            "nameserver 10.0.0.2\nnameserver fe80::1%eth0\nsearch a.svc b.local\noptions ndots:5 timeout:1\n",
        );
        assert_eq!(conf.servers, vec!["10.0.0.2:53".parse().unwrap()]);
        assert_eq!(conf.ndots, 5);
        assert_eq!(conf.candidates("kafka"), vec!["kafka.a.svc", "kafka.b.local", "kafka"]);
        assert_eq!(conf.candidates("kafka.example.com."), vec!["kafka.example.com"]);
        let default = ResolvConf::parse("");
        assert_eq!(default.servers, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(default.candidates("a.b"), vec!["a.b"]);
    }

    #[tokio::test]
    async fn literals_hosts_and_localhost_need_no_dns() {
        // resolv.conf points at a port nobody serves: any DNS query would fail.
        let config = ResolverConfig::from_text("192.0.2.7 broker-1\n", "nameserver 127.0.0.1\n");
        let got = resolve("broker-1", 9092, &config).await.unwrap();
        assert_eq!(got, vec!["192.0.2.7:9092".parse().unwrap()]);
        let got = resolve("127.0.0.1", 1, &config).await.unwrap();
        assert_eq!(got, vec!["127.0.0.1:1".parse().unwrap()]);
        let empty = ResolverConfig::from_text("", "");
        let got = resolve("localhost", 9092, &empty).await.unwrap();
        assert_eq!(got[0], "127.0.0.1:9092".parse().unwrap());
    }

    #[test]
    fn parses_a_compressed_answer_with_a_cname() {
        let query = dns::encode_query(0x1234, "kafka.example", TYPE_A).unwrap();
        let mut msg = query.clone();
        msg[2] = 0x81; // QR + RD
        msg[3] = 0x80; // RA, rcode 0
        msg[7] = 2; // two answers
                    // CNAME kafka.example -> (pointer to offset 12), then A 10.1.2.3 for the pointer name.
        msg.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]);
        match dns::parse_answer(&msg, 0x1234).unwrap() {
            dns::Answer::Records(ips) => assert_eq!(ips, vec!["10.1.2.3".parse::<IpAddr>().unwrap()]),
            dns::Answer::Truncated => panic!("not truncated"),
        }
        assert!(dns::parse_answer(&msg, 0x9999).is_err());
        assert!(dns::parse_answer(&msg[..20], 0x1234).is_err());
        let mut truncated = query;
        truncated[2] = 0x83;
        assert!(matches!(dns::parse_answer(&truncated, 0x1234).unwrap(), dns::Answer::Truncated));
    }

    /// A real DNS exchange with a tiny UDP server of the test's own.
    #[tokio::test]
    async fn asks_the_name_server_and_uses_search_domains() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let serve = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            for _ in 0..4 {
                let (n, peer) = server.recv_from(&mut buf).await.unwrap();
                let mut reply = buf[..n].to_vec();
                reply[2] |= 0x80;
                let wanted = b"\x05kafka\x03svc\x00";
                let is_a = reply[n - 4..n - 2] == TYPE_A.to_be_bytes();
                if reply[12..12 + wanted.len()] == wanted[..] && is_a {
                    reply[7] = 1;
                    reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 9, 8, 7]);
                } else if reply[12..12 + wanted.len()] != wanted[..] {
                    reply[3] = 3; // NXDOMAIN
                }
                server.send_to(&reply, peer).await.unwrap();
            }
        });
        let conf = ResolvConf { servers: vec![addr], search: vec!["svc".into()], ndots: 1 };
        let got = dns_lookup("kafka", &conf).await.unwrap();
        assert_eq!(got, vec!["10.9.8.7".parse::<IpAddr>().unwrap()]);
        serve.abort();
    }
}
