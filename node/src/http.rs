//! The HTTP side: `/metrics`, `/flows`, `/healthz` on a single-threaded
//! tokio runtime in its own thread, which also turns SIGINT/SIGTERM into the
//! pipeline's stop flag (so the main thread can detach in order).
#![forbid(unsafe_code)]

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::oneshot;
use wirelens_dataplane::pipeline::merge_summary;
use wirelens_dataplane::report::Summary;
use wirelens_dataplane::xdp::{iface_carries_host_traffic, interface_exists, AttachState};

use crate::export::now_ns;
use crate::NodeState;

/// How long `/flows` waits for every worker to publish fresh records.
const FLOWS_WAIT: Duration = Duration::from_secs(2);
/// How often a running node (without `--force`) checks again that its
/// interface does not carry the host's traffic (a link and route dump).
const HOST_RECHECK: Duration = Duration::from_secs(10);
/// A worker that has not exported for this long is unhealthy.
const STALE_AFTER_NS: u64 = 5_000_000_000;

/// `/flows` requests served at once: each makes every worker build the
/// records of its whole table, so more are refused (503, counted) rather
/// than queued.
const MAX_FLOWS_REQUESTS: usize = 2;

struct App {
    node: Arc<NodeState>,
    registry: Registry,
    flows_slots: tokio::sync::Semaphore,
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
    let app = Arc::new(App {
        registry: crate::metrics::registry(node.clone()),
        node,
        flows_slots: tokio::sync::Semaphore::new(MAX_FLOWS_REQUESTS),
    });
    let router = Router::new()
        .route("/metrics", get(metrics))
        .route("/flows", get(flows))
        .route("/healthz", get(healthz))
        .with_state(app);
    let r = axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = shutdown.await;
        })
        .await;
    if let Err(e) = r {
        eprintln!("wirelens: HTTP server: {e}");
    }
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
/// flows, then one summary line (as `wirelens analyze --format ndjson`).
async fn flows(State(app): State<Arc<App>>) -> Response {
    let Some(workers) = app.node.workers.get() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response();
    };
    let Ok(_slot) = app.flows_slots.try_acquire() else {
        app.node.flows_busy.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            format!("busy: {MAX_FLOWS_REQUESTS} /flows requests are being served; retry\n"),
        )
            .into_response();
    };
    let wanted: Vec<u64> = workers.iter().map(|w| w.want_flows()).collect();
    let deadline = Instant::now() + FLOWS_WAIT;
    let mut stale = Vec::new();
    loop {
        stale.clear();
        for (w, g) in workers.iter().zip(&wanted) {
            if w.flows().generation < *g {
                stale.push(w.queue.to_string());
            }
        }
        if stale.is_empty() || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut body = Vec::new();
    let mut summary: Option<Summary> = None;
    for w in workers {
        let f = w.flows();
        for r in &f.records {
            if serde_json::to_writer(&mut body, r).is_ok() {
                body.push(b'\n');
            }
        }
        let s = &w.snapshot().summary;
        match summary.as_mut() {
            None => summary = Some(s.clone()),
            Some(t) => merge_summary(t, s),
        }
    }
    if let Some(s) = summary {
        if serde_json::to_writer(&mut body, &s).is_ok() {
            body.push(b'\n');
        }
    }
    let mut resp = ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response();
    if !stale.is_empty() {
        // Served what those workers published last.
        if let Ok(v) = stale.join(",").parse() {
            resp.headers_mut().insert("x-wirelens-stale-queues", v);
        }
    }
    resp
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
    use crate::export::WorkerShared;
    use std::sync::atomic::AtomicU64;
    use std::sync::{Mutex, OnceLock};

    /// Workers that never publish keep each admitted request waiting its
    /// full FLOWS_WAIT: one beyond the cap is refused at once and counted.
    #[tokio::test(flavor = "current_thread")]
    async fn flows_beyond_the_cap_are_refused_and_counted() {
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
            probes: None,
        });
        let _ = node.workers.set(vec![Arc::new(WorkerShared::new(0, 10))]);
        let app = Arc::new(App {
            registry: crate::metrics::registry(node.clone()),
            node: node.clone(),
            flows_slots: tokio::sync::Semaphore::new(MAX_FLOWS_REQUESTS),
        });
        let held: Vec<_> = (0..MAX_FLOWS_REQUESTS)
            .map(|_| tokio::spawn(flows(State(app.clone()))))
            .collect();
        // Let each take its slot and start waiting.
        tokio::task::yield_now().await;
        let t = Instant::now();
        let refused = flows(State(app.clone())).await;
        assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(t.elapsed() < FLOWS_WAIT / 2, "refused at once");
        assert_eq!(node.flows_busy.load(Ordering::Relaxed), 1);
        for h in held {
            assert_eq!(h.await.unwrap().status(), StatusCode::OK);
        }
        assert_eq!(app.flows_slots.available_permits(), MAX_FLOWS_REQUESTS);
    }
}
