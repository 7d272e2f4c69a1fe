//! One connection to one broker, shared by every task that talks to that broker.
//!
//! Requests are pipelined: each gets a correlation id and a slot in the pending map, its
//! frame goes to a writer task through a bounded queue, and a reader task hands each
//! response frame to the slot with the same correlation id. A slow response therefore never
//! holds up the requests sent after it (the broker itself still answers a connection's
//! requests in order; parallelism comes from many partitions per request and many brokers).
//!
//! Failure is all-or-nothing, as in rskafka: the first I/O error, malformed frame, unknown
//! correlation id or request timeout *poisons* the messenger; every request in flight and
//! every later one fails with that same error, and the owner ([`super::Cluster`]) opens a
//! new connection. Cancelling a request is safe at any point: a frame is either queued whole
//! or not at all, and the slot of a request already on the wire is kept (with its in-flight
//! permit) until its response arrives and is discarded.
//!
//! Under the messenger is a [`super::transport`] stream (TCP or TLS). With SASL, the
//! connection authenticates before it is handed out, and re-authenticates (KIP-368) before
//! the session the broker announced runs out: the next request after 85% of the lifetime
//! first runs the SASL exchange again, with later requests held back until it is done.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest};
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, RwLock, RwLockReadGuard, Semaphore};
use tokio::task::JoinHandle;

use super::error::{BrokerRef, ConnectionError};
use super::quota::{QuotaWaits, Throttle};
use super::security::{sasl, Security};
use super::transport::{self, Transport};
use crate::protocol::api::{self, ApiRequest};
use crate::protocol::error_code::{ErrorCode, ResponseError};
use crate::protocol::frame::decode_frame;
use crate::protocol::versions::ApiVersionTable;

/// How a connection behaves; the same for every broker of a cluster.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// Sent in every request header; shows up in broker logs and quotas.
    pub client_id: String,
    pub connect_timeout: Duration,
    /// How long a request may wait for its response before the connection is dropped.
    pub request_timeout: Duration,
    /// Requests on the wire at once; further requests wait for a free slot.
    pub max_in_flight: usize,
    /// Largest response frame accepted; a larger size prefix means a corrupt stream.
    pub max_frame_bytes: usize,
    /// TLS and SASL of the cluster (default: plaintext, no authentication).
    pub security: Arc<Security>,
    /// Where the connections add up the throttle times brokers ask for; each
    /// [`super::Cluster`] has its own.
    pub quota: Arc<QuotaWaits>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        Self {
            client_id: "kferry".to_string(),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_in_flight: 64,
            max_frame_bytes: 256 * 1024 * 1024,
            security: Arc::default(),
            quota: Arc::default(),
        }
    }
}

/// What the reader task does with a response, by correlation id.
enum Slot {
    /// A caller is waiting for the response.
    Waiting(oneshot::Sender<Result<Bytes, ConnectionError>>),
    /// The caller gave up after the request was sent: discard the response when it comes,
    /// and only then free the in-flight slot.
    Abandoned(#[allow(dead_code)] OwnedSemaphorePermit),
}

#[derive(Default)]
struct Pending {
    slots: HashMap<i32, Slot>,
    poisoned: Option<ConnectionError>,
}

/// State shared by the messenger, its reader and writer tasks, and request guards.
struct Shared {
    broker: BrokerRef,
    pending: Mutex<Pending>,
    permits: Arc<Semaphore>,
    /// Flipped to `true` once poisoned, so both I/O tasks stop and the socket closes.
    closed: watch::Sender<bool>,
    /// Responses received; a close after only the first (ApiVersions) on a connection
    /// without SASL is what a SASL listener does to a client that does not authenticate.
    responses: AtomicU64,
    /// Whether the connection authenticates with SASL.
    sasl: bool,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the map inconsistent (every operation
        // is a single insert/remove), so a poisoned mutex is still safe to use.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fails every request in flight and every later one with `error`; the first error wins.
    fn poison(&self, error: ConnectionError) {
        let slots = {
            let mut pending = self.pending();
            if pending.poisoned.is_some() {
                return;
            }
            pending.poisoned = Some(error.clone());
            std::mem::take(&mut pending.slots)
        };
        for slot in slots.into_values() {
            if let Slot::Waiting(tx) = slot {
                let _ = tx.send(Err(error.clone()));
            }
        }
        self.permits.close();
        self.closed.send_replace(true);
    }

    fn poisoned(&self) -> Option<ConnectionError> {
        self.pending().poisoned.clone()
    }
}

/// A pipelined connection to one broker. See the module docs.
pub struct Messenger {
    shared: Arc<Shared>,
    client_id: StrBytes,
    request_timeout: Duration,
    next_correlation_id: AtomicI32,
    frames: mpsc::Sender<Bytes>,
    versions: ApiVersionTable,
    tasks: [JoinHandle<()>; 2],
    /// Present when the broker limits the SASL session's lifetime.
    session: Option<SaslSession>,
    security: Arc<Security>,
    /// Held while the broker throttles this connection (a quota, KIP-219).
    throttle: Throttle,
    quota: Arc<QuotaWaits>,
}

/// A SASL session with a lifetime, and the lock that holds requests back while it is renewed.
struct SaslSession {
    /// Requests take it shared while they are queued; re-authentication takes it exclusive,
    /// so no request slips between its SaslHandshake and SaslAuthenticate.
    gate: RwLock<()>,
    /// `None` once a renewal announced no lifetime: the session no longer expires.
    times: Mutex<Option<SessionTimes>>,
}

#[derive(Clone, Copy)]
struct SessionTimes {
    reauthenticate_at: Instant,
    /// After this the broker closes the connection at the next request (KIP-368).
    expires_at: Instant,
}

impl SessionTimes {
    fn starting_now(lifetime: Duration) -> Self {
        let now = Instant::now();
        Self { reauthenticate_at: now + sasl::reauthenticate_after(lifetime), expires_at: now + lifetime }
    }
}

impl SaslSession {
    fn times(&self) -> Option<SessionTimes> {
        *self.times.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_times(&self, times: Option<SessionTimes>) {
        *self.times.lock().unwrap_or_else(|p| p.into_inner()) = times;
    }
}

impl std::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messenger").field("broker", &self.shared.broker).finish_non_exhaustive()
    }
}

impl Drop for Messenger {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Messenger {
    /// Connects (with TLS when configured), starts the I/O tasks, learns the broker's API
    /// versions and authenticates (when SASL is configured).
    pub async fn connect(broker: BrokerRef, config: &ConnectionConfig) -> Result<Self, ConnectionError> {
        let stream = transport::connect(&broker, config).await?;
        let mut messenger = Self::start(stream, broker, config);
        messenger.versions = messenger.handshake().await.map_err(|e| messenger.explain_first_failure(e))?;
        if let Some(settings) = &config.security.sasl {
            let lifetime = sasl::authenticate(&messenger, settings).await.map_err(|e| messenger.fail(e))?;
            tracing::debug!(broker = %messenger.broker(), mechanism = %settings.mechanism, ?lifetime, "authenticated");
            messenger.session = lifetime.map(|lifetime| SaslSession {
                gate: RwLock::new(()),
                times: Mutex::new(Some(SessionTimes::starting_now(lifetime))),
            });
        }
        Ok(messenger)
    }

    /// The first request failing is where a plaintext client meets a TLS listener (the
    /// answer is a TLS alert record, whose first bytes read as a huge frame size) or a TLS
    /// client meets a broker that refuses its certificate: say so rather than "bad frame".
    fn explain_first_failure(&self, error: ConnectionError) -> ConnectionError {
        let broker = self.broker().clone();
        match &error {
            ConnectionError::Protocol { source: crate::protocol::ProtocolError::FrameSize { size, .. }, .. }
                if !self.security.uses_tls() && matches!(size >> 24, 0x15 | 0x16) =>
            {
                ConnectionError::TlsListener { broker }
            }
            ConnectionError::Io { source, .. } if self.security.uses_tls() => transport::tls_error(&broker, source),
            _ => error,
        }
    }

    fn start(stream: Transport, broker: BrokerRef, config: &ConnectionConfig) -> Self {
        let (closed, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            broker,
            pending: Mutex::new(Pending::default()),
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            closed,
            responses: AtomicU64::new(0),
            sasl: config.security.sasl.is_some(),
        });
        let (frames, frame_queue) = mpsc::channel(config.max_in_flight);
        let max_frame = config.max_frame_bytes;
        let (reader, writer) = match stream {
            // TCP splits into owned halves without a lock: the plaintext path is unchanged.
            Transport::Plain(tcp) => {
                let (read, write) = tcp.into_split();
                (
                    tokio::spawn(read_responses(read, Arc::clone(&shared), max_frame)),
                    tokio::spawn(write_requests(write, frame_queue, Arc::clone(&shared))),
                )
            }
            // A TLS session is one state machine for both directions: split behind a lock.
            Transport::Tls(tls) => {
                let (read, write) = tokio::io::split(*tls);
                (
                    tokio::spawn(read_responses(read, Arc::clone(&shared), max_frame)),
                    tokio::spawn(write_requests(write, frame_queue, Arc::clone(&shared))),
                )
            }
        };
        Self {
            shared,
            client_id: StrBytes::from_string(config.client_id.clone()),
            request_timeout: config.request_timeout,
            next_correlation_id: AtomicI32::new(0),
            frames,
            versions: ApiVersionTable::default(),
            tasks: [reader, writer],
            session: None,
            security: Arc::clone(&config.security),
            throttle: Throttle::default(),
            quota: Arc::clone(&config.quota),
        }
    }

    /// Sends ApiVersions at the newest version we know; a broker that does not know it
    /// answers in v0 with UNSUPPORTED_VERSION and its own range, and we ask again at that.
    async fn handshake(&self) -> Result<ApiVersionTable, ConnectionError> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kferry"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut version = ApiVersionsRequest::VERSIONS.max;
        loop {
            let frame = self.send(&request, version, self.request_timeout).await?;
            let response = match api::decode_response::<ApiVersionsRequest>(frame.clone(), version) {
                Ok(response) => response,
                // The broker's UNSUPPORTED_VERSION answer is always encoded as v0.
                Err(e) => api::decode_response::<ApiVersionsRequest>(frame, 0)
                    .map_err(|_| self.fail(ConnectionError::Protocol { broker: self.broker().clone(), source: e }))?,
            };
            match ErrorCode::from_code(response.error_code) {
                None => return Ok(ApiVersionTable::from_response(&response)),
                Some(ErrorCode(ResponseError::UnsupportedVersion)) => {
                    let theirs = ApiVersionTable::from_response(&response).range(ApiKey::ApiVersions);
                    version = theirs
                        .and_then(|theirs| api::negotiate(ApiVersionsRequest::VERSIONS, theirs))
                        .filter(|&v| v < version)
                        .ok_or_else(|| ConnectionError::UnsupportedApi {
                            broker: self.broker().clone(),
                            api: "ApiVersions",
                            ours: ApiVersionsRequest::VERSIONS,
                            theirs,
                        })?;
                }
                Some(code) => return Err(ConnectionError::Handshake { broker: self.broker().clone(), code }),
            }
        }
    }

    pub fn broker(&self) -> &BrokerRef {
        &self.shared.broker
    }

    /// The broker's API versions, as learnt when connecting.
    pub fn versions(&self) -> &ApiVersionTable {
        &self.versions
    }

    /// Whether the connection has failed and must be replaced (also when its SASL session
    /// ran out while it was idle: the broker would close it at the next request).
    pub fn is_poisoned(&self) -> bool {
        self.shared.poisoned().is_some()
            || self.session.as_ref().and_then(SaslSession::times).is_some_and(|t| Instant::now() >= t.expires_at)
    }

    /// The version kferry uses for `R` with this broker: the highest both support.
    pub fn version_for<R: ApiRequest>(&self) -> Result<i16, ConnectionError> {
        self.version_at_most::<R>(R::VERSIONS.max)
    }

    /// As [`Messenger::version_for`], but no higher than `cap` (a protocol kferry speaks
    /// only up to some version, like the transaction protocol before KIP-890).
    fn version_at_most<R: ApiRequest>(&self, cap: i16) -> Result<i16, ConnectionError> {
        let ours = VersionRange { min: R::VERSIONS.min, max: R::VERSIONS.max.min(cap) };
        let theirs = self.versions.range(R::KEY);
        theirs.and_then(|theirs| api::negotiate(ours, theirs)).ok_or_else(|| ConnectionError::UnsupportedApi {
            broker: self.broker().clone(),
            api: R::NAME,
            ours,
            theirs,
        })
    }

    /// Sends `request` at the highest common version not above `cap`.
    pub async fn request_capped<R: ApiRequest>(
        &self,
        request: &R,
        cap: i16,
        timeout: Duration,
    ) -> Result<(i16, R::Response), ConnectionError> {
        let version = self.version_at_most::<R>(cap)?;
        self.request_at(request, version, timeout).await
    }

    /// Sends the request `build` makes for the negotiated version: for messages whose
    /// fields moved between versions (a field set outside its versions cannot be encoded).
    pub async fn request_built<R: ApiRequest>(
        &self,
        build: impl FnOnce(i16) -> R,
    ) -> Result<(i16, R::Response), ConnectionError> {
        let version = self.version_for::<R>()?;
        self.request_at(&build(version), version, self.request_timeout).await
    }

    /// Sends `request` at the negotiated version and waits for its decoded response.
    pub async fn request<R: ApiRequest>(&self, request: &R) -> Result<(i16, R::Response), ConnectionError> {
        self.request_with_timeout(request, self.request_timeout).await
    }

    /// As [`Messenger::request`], for calls that legitimately take longer than the request
    /// timeout (a Fetch that waits `max_wait_ms` for data).
    pub async fn request_with_timeout<R: ApiRequest>(
        &self,
        request: &R,
        timeout: Duration,
    ) -> Result<(i16, R::Response), ConnectionError> {
        let version = self.version_for::<R>()?;
        self.request_at(request, version, timeout).await
    }

    async fn request_at<R: ApiRequest>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<(i16, R::Response), ConnectionError> {
        let frame = self.send(request, version, timeout).await?;
        let response = api::decode_response::<R>(frame, version)
            .map_err(|source| self.fail(ConnectionError::Protocol { broker: self.broker().clone(), source }))?;
        self.note_throttle::<R>(&response);
        Ok((version, response))
    }

    /// A response's `throttle_time_ms` holds this connection's next requests back.
    fn note_throttle<R: ApiRequest>(&self, response: &R::Response) {
        let millis = R::throttle_time_ms(response);
        if millis > 0 {
            self.throttle.throttled(self.broker(), R::NAME, millis, &self.quota);
        }
    }

    /// The configured request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Poisons the connection with `error` and returns it, for `map_err`.
    fn fail(&self, error: ConnectionError) -> ConnectionError {
        self.shared.poison(error.clone());
        error
    }

    /// Sends one request at `version` and returns its raw response frame.
    async fn send<R: ApiRequest>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<Bytes, ConnectionError> {
        self.enqueue(request, version, timeout).await?.frame().await
    }

    /// Puts the request's frame in the writer's queue and returns at once: requests
    /// enqueued one after the other reach the broker in that order (which idempotent
    /// produce needs), while their responses are awaited later.
    async fn enqueue<R: ApiRequest>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<Queued<'_, R>, ConnectionError> {
        // Held until the frame is queued, so a re-authentication never interleaves with it.
        let _session = match &self.session {
            Some(session) => Some(self.keep_session(session).await?),
            None => None,
        };
        self.enqueue_unguarded(request, version, timeout).await
    }

    /// Re-authenticates when the session is due for it (KIP-368), then lets the request go.
    async fn keep_session<'a>(&'a self, session: &'a SaslSession) -> Result<RwLockReadGuard<'a, ()>, ConnectionError> {
        // A session exists only on a SASL connection; without settings there is nothing to renew.
        let Some(settings) = &self.security.sasl else { return Ok(session.gate.read().await) };
        let due = || session.times().is_some_and(|t| Instant::now() >= t.reauthenticate_at);
        loop {
            if session.times().is_some_and(|t| Instant::now() >= t.expires_at) {
                return Err(self.fail(ConnectionError::SessionExpired { broker: self.broker().clone() }));
            }
            if !due() {
                return Ok(session.gate.read().await);
            }
            let _exclusive = session.gate.write().await;
            // Another request may have renewed the session while this one waited.
            if !due() {
                continue;
            }
            let lifetime = sasl::authenticate(self, settings).await.map_err(|e| self.fail(e))?;
            tracing::debug!(broker = %self.broker(), mechanism = %settings.mechanism, ?lifetime, "re-authenticated (KIP-368)");
            session.set_times(lifetime.map(SessionTimes::starting_now));
        }
    }

    /// Sends `request` without waiting for a re-authentication: for the SASL exchange itself.
    pub(super) async fn request_unguarded<R: ApiRequest>(
        &self,
        request: &R,
    ) -> Result<(i16, R::Response), ConnectionError> {
        let version = self.version_for::<R>()?;
        let frame = self.enqueue_unguarded(request, version, self.request_timeout).await?.frame().await?;
        let response = api::decode_response::<R>(frame, version)
            .map_err(|source| self.fail(ConnectionError::Protocol { broker: self.broker().clone(), source }))?;
        Ok((version, response))
    }

    async fn enqueue_unguarded<R: ApiRequest>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<Queued<'_, R>, ConnectionError> {
        // Before the request's timeout starts: a throttled broker does not read it anyway.
        self.throttle.wait().await;
        let permit = Arc::clone(&self.shared.permits).acquire_owned().await.map_err(|_| self.poison_error())?;
        let correlation_id = self.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let frame = api::encode_request(request, version, correlation_id, &self.client_id)
            .map_err(|source| ConnectionError::Encode { broker: self.broker().clone(), source })?;
        let (tx, rx) = oneshot::channel();
        let mut guard = SlotGuard { shared: &self.shared, correlation_id, permit: Some(permit), queued: false };
        {
            let mut pending = self.shared.pending();
            if let Some(error) = &pending.poisoned {
                return Err(error.clone());
            }
            pending.slots.insert(correlation_id, Slot::Waiting(tx));
        }
        // Cancel-safe: if this await is dropped, the frame was not queued.
        self.frames.send(frame).await.map_err(|_| self.poison_error())?;
        guard.queued = true;
        Ok(Queued { messenger: self, guard, rx, version, timeout, request: std::marker::PhantomData })
    }

    /// Sends `request` (at the highest common version not above `cap`) and returns once it
    /// is queued; its response is read with [`Queued::response`]. Use it to have several
    /// requests on the wire in a given order.
    pub async fn submit<R: ApiRequest>(
        &self,
        request: &R,
        cap: i16,
        timeout: Duration,
    ) -> Result<Queued<'_, R>, ConnectionError> {
        let version = self.version_at_most::<R>(cap)?;
        self.enqueue(request, version, timeout).await
    }

    fn poison_error(&self) -> ConnectionError {
        self.shared.poisoned().unwrap_or_else(|| ConnectionError::Shutdown { broker: self.broker().clone() })
    }

    /// Closes the connection: requests in flight fail with [`ConnectionError::Shutdown`].
    pub fn close(&self) {
        self.shared.poison(ConnectionError::Shutdown { broker: self.broker().clone() });
    }
}

/// A request whose frame is queued for the broker and whose response is still to come.
/// Dropping it is safe: the response is discarded when it arrives.
pub struct Queued<'a, R: ApiRequest> {
    messenger: &'a Messenger,
    guard: SlotGuard<'a>,
    rx: oneshot::Receiver<Result<Bytes, ConnectionError>>,
    version: i16,
    timeout: Duration,
    request: std::marker::PhantomData<fn() -> R>,
}

impl<R: ApiRequest> Queued<'_, R> {
    /// Waits for the response frame.
    async fn frame(mut self) -> Result<Bytes, ConnectionError> {
        let outcome = tokio::time::timeout(self.timeout, &mut self.rx).await;
        self.guard.answered();
        let messenger = self.messenger;
        match outcome {
            Ok(Ok(result)) => result,
            Ok(Err(_sender_dropped)) => Err(messenger.poison_error()),
            Err(_elapsed) => Err(messenger.fail(ConnectionError::RequestTimeout {
                broker: messenger.broker().clone(),
                api: R::NAME,
                after: self.timeout,
            })),
        }
    }

    /// Waits for the response and decodes it.
    pub async fn response(self) -> Result<(i16, R::Response), ConnectionError> {
        let (messenger, version) = (self.messenger, self.version);
        let frame = self.frame().await?;
        let response = api::decode_response::<R>(frame, version).map_err(|source| {
            messenger.fail(ConnectionError::Protocol { broker: messenger.broker().clone(), source })
        })?;
        messenger.note_throttle::<R>(&response);
        Ok((version, response))
    }
}

/// Keeps the pending map right when a request future is dropped early.
struct SlotGuard<'a> {
    shared: &'a Shared,
    correlation_id: i32,
    permit: Option<OwnedSemaphorePermit>,
    queued: bool,
}

impl SlotGuard<'_> {
    /// The response (or the connection's failure) arrived: nothing left to clean up.
    fn answered(&mut self) {
        self.permit = None;
    }
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else { return };
        let mut pending = self.shared.pending();
        if self.queued {
            // The frame may already be on the wire: its response will come and must not be
            // mistaken for an unknown correlation id.
            if let Some(slot) = pending.slots.get_mut(&self.correlation_id) {
                *slot = Slot::Abandoned(permit);
            }
        } else {
            pending.slots.remove(&self.correlation_id);
        }
    }
}

async fn write_requests<W: AsyncWrite + Unpin>(write: W, mut frames: mpsc::Receiver<Bytes>, shared: Arc<Shared>) {
    let mut closed = shared.closed.subscribe();
    let mut write = BufWriter::with_capacity(64 * 1024, write);
    loop {
        let frame = tokio::select! {
            _ = closed.wait_for(|closed| *closed) => break,
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                None => break,
            },
        };
        let mut result = write.write_all(&frame).await;
        // Flush only when no other request is waiting, so a burst of pipelined requests
        // leaves in as few segments as possible.
        if result.is_ok() && frames.is_empty() {
            result = write.flush().await;
        }
        if let Err(e) = result {
            shared.poison(ConnectionError::Io { broker: shared.broker.clone(), source: Arc::new(e) });
            break;
        }
    }
    let _ = write.shutdown().await;
}

async fn read_responses<R: AsyncRead + Unpin>(mut read: R, shared: Arc<Shared>, max_frame_bytes: usize) {
    let mut closed = shared.closed.subscribe();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let error = loop {
        if let Err(error) = dispatch_frames(&mut buf, &shared, max_frame_bytes) {
            break error;
        }
        let read = tokio::select! {
            _ = closed.wait_for(|closed| *closed) => return,
            read = read.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => {
                let unauthenticated = !shared.sasl && shared.responses.load(Ordering::Relaxed) == 1;
                break ConnectionError::Closed {
                    broker: shared.broker.clone(),
                    mid_response: !buf.is_empty(),
                    after_first_response: unauthenticated,
                };
            }
            Ok(_) => {}
            Err(e) => break ConnectionError::Io { broker: shared.broker.clone(), source: Arc::new(e) },
        }
    };
    shared.poison(error);
}

/// Hands every complete frame in `buf` to the request waiting for it.
fn dispatch_frames(buf: &mut BytesMut, shared: &Shared, max_frame_bytes: usize) -> Result<(), ConnectionError> {
    let broker = || shared.broker.clone();
    while let Some(frame) =
        decode_frame(buf, max_frame_bytes).map_err(|source| ConnectionError::Protocol { broker: broker(), source })?
    {
        let correlation_id = api::response_correlation_id(&frame)
            .map_err(|source| ConnectionError::Protocol { broker: broker(), source })?;
        let slot = shared.pending().slots.remove(&correlation_id);
        shared.responses.fetch_add(1, Ordering::Relaxed);
        match slot {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(Ok(frame));
            }
            Some(Slot::Abandoned(_permit)) => {}
            None => return Err(ConnectionError::UnexpectedCorrelationId { broker: broker(), correlation_id }),
        }
    }
    Ok(())
}
