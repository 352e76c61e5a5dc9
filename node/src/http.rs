//! The HTTP side: `/metrics`, `/flows`, `/healthz` on a single-threaded
//! tokio runtime in its own thread, which also turns SIGINT/SIGTERM into the
//! pipeline's stop flag (so the main thread can detach in order).
#![forbid(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use wirelens_dataplane::pipeline::merge_summary;
use wirelens_dataplane::report::FlowRecord;
use wirelens_dataplane::report::Summary;
use wirelens_dataplane::xdp::{iface_carries_host_traffic, interface_exists, AttachState};

use crate::export::{now_ns, FlowsRequest, WorkerShared};
use crate::NodeState;

/// How long `/flows` waits for every worker to take up a request, and at
/// most between two chunks (a worker silent that long has stalled: the
/// body is cut off, without its summary line).
const FLOWS_WAIT: Duration = Duration::from_secs(2);
/// Chunks of records queued per `/flows` request (all workers together);
/// with the client slower than that, the workers pause their walks.
const FLOWS_QUEUED: usize = 4;
/// How often a running node (without `--force`) checks again that its
/// interface does not carry the host's traffic (a link and route dump).
const HOST_RECHECK: Duration = Duration::from_secs(10);
/// A worker that has not exported for this long is unhealthy.
const STALE_AFTER_NS: u64 = 5_000_000_000;

/// `/flows` requests served at once: each makes every worker walk its
/// whole table, so more are refused (503, counted) rather than queued.
const MAX_FLOWS_REQUESTS: usize = 2;

struct App {
    node: Arc<NodeState>,
    registry: Registry,
    flows_slots: Arc<Semaphore>,
    flows_ids: AtomicU64,
}

impl App {
    fn new(node: Arc<NodeState>) -> App {
        App {
            registry: crate::metrics::registry(node.clone()),
            node,
            flows_slots: Arc::new(Semaphore::new(MAX_FLOWS_REQUESTS)),
            flows_ids: AtomicU64::new(0),
        }
    }
}

/// The running HTTP thread; [`HttpServer::shutdown`] ends it.
#[derive(Debug)]
pub(crate) struct HttpServer {
    thread: Option<JoinHandle<()>>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl HttpServer {
    /// Serves on `listener` and sets `stop` on SIGINT/SIGTERM. Returns once
    /// the signal handlers are in place.
    pub(crate) fn start(
        listener: std::net::TcpListener,
        node: Arc<NodeState>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<HttpServer> {
        listener.set_nonblocking(true)?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("wirelens-http".into())
            .spawn(move || {
                // Started before the main thread drops its capabilities; it
                // needs none (the listener is bound), so it drops them all.
                if let Err(e) = crate::privs::drop_all_in_this_thread() {
                    eprintln!("wirelens: HTTP thread: dropping capabilities failed: {e}");
                }
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(serve(listener, node, stop, ready_tx, shutdown_rx));
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(HttpServer {
                thread: Some(thread),
                shutdown: Some(shutdown_tx),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other(
                    "the HTTP thread ended before it was ready",
                ))
            }
        }
    }

    /// Stops serving and waits for the thread.
    pub(crate) fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    node: Arc<NodeState>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<io::Result<()>>,
    shutdown: oneshot::Receiver<()>,
) {
    let setup = (|| {
        let int = signal(SignalKind::interrupt())?;
        let term = signal(SignalKind::terminate())?;
        let l = tokio::net::TcpListener::from_std(listener)?;
        Ok::<_, io::Error>((int, term, l))
    })();
    let (mut int, mut term, listener) = match setup {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    let recheck_stop = stop.clone();
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = int.recv() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            };
            if stop.swap(true, Ordering::SeqCst) {
                eprintln!("wirelens: {name} again: already stopping (detaching XDP)");
            } else {
                eprintln!("wirelens: {name}: stopping the workers, then detaching XDP");
            }
        }
    });
    if !node.force {
        // The --force check again, while running: an interface that starts
        // carrying the host's traffic (an address from DHCP, a route, a
        // bridge) must not stay taken over. Stopping detaches XDP.
        let (node, stop) = (node.clone(), recheck_stop);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HOST_RECHECK);
            tick.tick().await;
            loop {
                tick.tick().await;
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                // A vanished interface carries nothing (the kernel removed
                // the program with it); /healthz reports that one.
                // Inline mode: every port of every pair (`A,B;C,D`).
                for port in node.iface.split([',', ';']) {
                    if !interface_exists(port) {
                        continue;
                    }
                    if let Some(why) = iface_carries_host_traffic(port) {
                        eprintln!(
                            "wirelens: {why}: {port} now carries the host's traffic; stopping \
                             (tap mode detaches XDP; inline mode stops analysing and keeps \
                             forwarding; --force keeps going)"
                        );
                        let _ = node.host_traffic.set(why);
                        stop.store(true, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });
    }
    let r = axum::serve(listener, router(Arc::new(App::new(node))))
        .with_graceful_shutdown(async {
            let _ = shutdown.await;
        })
        .await;
    if let Err(e) = r {
        eprintln!("wirelens: HTTP server: {e}");
    }
}

fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/flows", get(flows))
        .route("/healthz", get(healthz))
        .with_state(app)
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    match crate::metrics::render(&app.registry) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n").into_response(),
    }
}

/// NDJSON: the flow.v1 records of every worker's live and recently closed
/// flows, then one summary line (as `wirelens analyze --format ndjson`),
/// streamed in chunks as the workers build them (see [`crate::export`]).
/// With `--flows-token-file`, 401 (counted) without one of its tokens.
async fn flows(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let Some(workers) = app.node.workers.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    if let Some(tokens) = &app.node.flows_tokens {
        let known = wirelens_proto::auth::bearer(&headers).and_then(|t| tokens.check(t));
        if known.is_none() {
            app.node.flows_unauthorized.fetch_add(1, Ordering::Relaxed);
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"wirelens\"")],
                "/flows requires `Authorization: Bearer TOKEN` with a token of \
                 --flows-token-file\n",
            )
                .into_response();
        }
    }
    let Ok(slot) = app.flows_slots.clone().try_acquire_owned() else {
        app.node.flows_busy.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("busy: {MAX_FLOWS_REQUESTS} /flows requests are being served; retry\n"),
        )
            .into_response();
    };
    let id = app.flows_ids.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(FLOWS_QUEUED);
    for w in workers {
        w.request_flows(FlowsRequest { id, tx: tx.clone() });
    }
    drop(tx);
    let deadline = Instant::now() + FLOWS_WAIT;
    let mut stale: Vec<&WorkerShared> = Vec::new();
    loop {
        stale.clear();
        stale.extend(workers.iter().filter(|w| w.flows_pending(id)).map(|w| &**w));
        if stale.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for w in &stale {
        w.cancel_flows(id);
    }
    let body = FlowsBody {
        rx,
        workers: workers.clone(),
        _slot: slot,
        done: false,
    };
    let stream = futures_util::stream::unfold(body, FlowsBody::next);
    let mut resp = (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(stream),
    )
        .into_response();
    if !stale.is_empty() {
        // Those workers did not take the request up: nothing from them.
        let queues: Vec<String> = stale.iter().map(|w| w.queue.to_string()).collect();
        if let Ok(v) = queues.join(",").parse() {
            resp.headers_mut().insert("x-wirelens-stale-queues", v);
        }
    }
    resp
}

/// One `/flows` body being streamed; holds its request slot.
struct FlowsBody {
    rx: mpsc::Receiver<Vec<FlowRecord>>,
    workers: Vec<Arc<WorkerShared>>,
    _slot: OwnedSemaphorePermit,
    done: bool,
}

impl FlowsBody {
    /// The next piece of the body: a chunk's NDJSON lines; once every
    /// worker is done, the summary line; an error (the body is cut off)
    /// when no chunk came for [`FLOWS_WAIT`].
    async fn next(mut self) -> Option<(io::Result<Bytes>, FlowsBody)> {
        if self.done {
            return None;
        }
        let mut out = Vec::new();
        match tokio::time::timeout(FLOWS_WAIT, self.rx.recv()).await {
            Ok(Some(chunk)) => {
                for r in &chunk {
                    if serde_json::to_writer(&mut out, r).is_ok() {
                        out.push(b'\n');
                    }
                }
            }
            Ok(None) => {
                self.done = true;
                let mut summary: Option<Summary> = None;
                for w in &self.workers {
                    let s = &w.snapshot().summary;
                    match summary.as_mut() {
                        None => summary = Some(s.clone()),
                        Some(t) => merge_summary(t, s),
                    }
                }
                if let Some(s) = summary {
                    if serde_json::to_writer(&mut out, &s).is_ok() {
                        out.push(b'\n');
                    }
                }
            }
            Err(_) => {
                self.done = true;
                return Some((
                    Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "a worker sent no /flows chunk for 2 s",
                    )),
                    self,
                ));
            }
        }
        Some((Ok(Bytes::from(out)), self))
    }
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    let Some(workers) = app.node.workers.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    if app.node.stopping.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response();
    }
    // Our program must still be the one on the interface: a detach or a
    // replacement behind our back means nothing reaches the workers.
    let attached = app
        .node
        .prog
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|p| (p.prog_id(), p.attach_state()));
    match attached {
        Some((_, Ok(AttachState::Ours))) | None => {}
        Some((id, state)) => {
            let why = match state {
                Ok(AttachState::Replaced(other)) => format!("replaced by program {other}"),
                Ok(_) => "no longer attached".to_string(),
                Err(e) => format!("unknown ({e})"),
            };
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("XDP program {id} on {}: {why}\n", app.node.iface),
            )
                .into_response();
        }
    }
    // Inline: our program must still be on every port (else that port
    // neither forwards through us nor is analysed).
    let inline = app
        .node
        .inline
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .map(|p| {
            (
                p.prog_id(),
                p.attach_states().map(|v| {
                    v.into_iter()
                        .filter(|(_, st)| *st != AttachState::Ours)
                        .map(|(port, st)| format!("{port}: {st:?}"))
                        .collect::<Vec<_>>()
                }),
            )
        });
    match inline {
        None => {}
        Some((_, Ok(lost))) if lost.is_empty() => {}
        Some((id, lost)) => {
            let why = match lost {
                Ok(l) => l.join(", "),
                Err(e) => format!("unknown ({e})"),
            };
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("inline XDP program {id} no longer attached: {why}\n"),
            )
                .into_response();
        }
    }
    let now = now_ns();
    let stale: Vec<String> = workers
        .iter()
        .filter(|w| now.saturating_sub(w.snapshot().at_ns) > STALE_AFTER_NS)
        .map(|w| w.queue.to_string())
        .collect();
    if stale.is_empty() {
        (
            StatusCode::OK,
            format!("ok: {} workers exporting\n", workers.len()),
        )
            .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "no export for 5 s from the workers of queues {}\n",
                stale.join(",")
            ),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Mutex, OnceLock};
    use wirelens_proto::auth::Tokens;

    /// A node with one worker that never runs its hook.
    fn app(flows_tokens: Option<Tokens>) -> Arc<App> {
        let node = Arc::new(NodeState {
            iface: "wl-test".into(),
            started_ns: 0,
            info: OnceLock::new(),
            workers: OnceLock::new(),
            prog: Mutex::new(None),
            inline: Mutex::new(None),
            stopping: Arc::new(AtomicBool::new(false)),
            push: None,
            ipfix: None,
            force: true,
            host_traffic: OnceLock::new(),
            flows_busy: AtomicU64::new(0),
            flows_tokens,
            flows_unauthorized: AtomicU64::new(0),
            probes: None,
        });
        let _ = node.workers.set(vec![Arc::new(WorkerShared::new(0, 10))]);
        Arc::new(App::new(node))
    }

    /// Workers that never publish keep each admitted request waiting its
    /// full FLOWS_WAIT: one beyond the cap is refused at once and counted.
    /// A slot is held until the body is dropped.
    #[tokio::test(flavor = "current_thread")]
    async fn flows_beyond_the_cap_are_refused_and_counted() {
        let app = app(None);
        let node = app.node.clone();
        let held: Vec<_> = (0..MAX_FLOWS_REQUESTS)
            .map(|_| tokio::spawn(flows(State(app.clone()), HeaderMap::new())))
            .collect();
        // Let each take its slot and start waiting.
        tokio::task::yield_now().await;
        let t = Instant::now();
        let refused = flows(State(app.clone()), HeaderMap::new()).await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(t.elapsed() < FLOWS_WAIT / 2, "refused at once");
        assert_eq!(node.flows_busy.load(Ordering::Relaxed), 1);
        for h in held {
            let r = h.await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            assert_eq!(r.headers()["x-wirelens-stale-queues"], "0");
        }
        assert_eq!(app.flows_slots.available_permits(), MAX_FLOWS_REQUESTS);
    }

    /// With a token file, /flows wants one of its tokens: none, another
    /// scheme or an unknown one get 401 (counted); a known one is served.
    #[tokio::test(flavor = "current_thread")]
    async fn flows_with_a_token_file_need_a_token() {
        let tokens = Tokens::parse("reader-token-1\ngw-a:node-token-2\n", "f").unwrap();
        let app = app(Some(tokens));
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        for h in [
            HeaderMap::new(),
            with("Basic reader-token-1"),
            with("Bearer reader-token-"),
            with("Bearer reader-token-11"),
        ] {
            let r = flows(State(app.clone()), h).await;
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert!(r.headers().contains_key(header::WWW_AUTHENTICATE));
        }
        assert_eq!(app.node.flows_unauthorized.load(Ordering::Relaxed), 4);
        assert_eq!(app.flows_slots.available_permits(), MAX_FLOWS_REQUESTS);
        for t in ["Bearer reader-token-1", "bearer node-token-2"] {
            let r = flows(State(app.clone()), with(t)).await;
            assert_eq!(r.status(), StatusCode::OK, "{t}");
        }
        assert_eq!(app.node.flows_unauthorized.load(Ordering::Relaxed), 4);
        let text = crate::metrics::render(&app.registry).unwrap();
        assert!(
            text.contains("wirelens_http_flows_unauthorized_total 4"),
            "{text}"
        );
    }

    /// Over a real socket, from a worker thread that runs the hook's
    /// `/flows` part every millisecond: a table of several chunks arrives
    /// chunked, every flow once, then the summary line.
    #[tokio::test(flavor = "current_thread")]
    async fn flows_stream_a_table_of_many_chunks_over_http() {
        use crate::export::{ExportHook, FLOWS_CHUNK};
        use std::io::{Read, Write};
        let app = app(None);
        let shared = app.node.workers.get().unwrap()[0].clone();
        let stop = Arc::new(AtomicBool::new(false));
        let worker = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut engine =
                    crate::push::tests::engine_with_flows(3 * FLOWS_CHUNK, 12 * FLOWS_CHUNK as u64);
                let flows = engine.table().len();
                let (mut hook, _agg) =
                    ExportHook::new(shared, Duration::from_secs(1), 10, 10, None, None);
                while !stop.load(Ordering::Relaxed) {
                    hook.take_up_flows_requests();
                    hook.stream_flows(&mut engine);
                    std::thread::sleep(Duration::from_millis(1));
                }
                flows
            })
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = router(app.clone());
        let server = tokio::spawn(async move { axum::serve(listener, router).await });
        let raw = tokio::task::spawn_blocking(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /flows HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut raw = Vec::new();
            c.read_to_end(&mut raw).unwrap();
            raw
        })
        .await
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        let flows = worker.join().unwrap();
        server.abort();
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains("transfer-encoding: chunked"),
            "{head}"
        );
        let lines: Vec<&str> = body.lines().filter(|l| l.starts_with('{')).collect();
        let mut names = std::collections::BTreeSet::new();
        for l in &lines[..lines.len() - 1] {
            let r: FlowRecord = serde_json::from_str(l).unwrap();
            assert!(names.insert(format!("{:?} {:?} {:?}", r.proto, r.client, r.server)));
        }
        assert!(flows > 2 * FLOWS_CHUNK, "{flows} flows");
        assert_eq!(names.len(), flows);
        let _: Summary = serde_json::from_str(lines[lines.len() - 1]).unwrap();
        assert_eq!(app.flows_slots.available_permits(), MAX_FLOWS_REQUESTS);
    }

    /// No token file: /flows stays open, and its body is streamed to the
    /// end (here: no worker took it up, so only the summary line).
    #[tokio::test(flavor = "current_thread")]
    async fn flows_without_a_token_file_are_open() {
        let app = app(None);
        let r = flows(State(app.clone()), HeaderMap::new()).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        let lines: Vec<&[u8]> = body
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 1);
        // No snapshot was published: the default summary.
        let s: Summary = serde_json::from_slice(lines[0]).unwrap();
        assert_eq!(s, Summary::default());
        assert_eq!(app.flows_slots.available_permits(), MAX_FLOWS_REQUESTS);
    }
}
