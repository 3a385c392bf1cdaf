//! `--metrics-listen`: a small HTTP listener on its own thread serving `/metrics` (the
//! Prometheus text exposition format) and `/health` (etcd's shape: 200 `{"health":true}`,
//! or 503 `{"health":false,"reason":"..."}`).
//!
//! Why a thread rather than a listener inside the mio loop: the loop's latency is the
//! cluster's, and everything about HTTP (accepting, reading a request at the client's
//! pace, formatting a few kilobytes) would sit in it. Here the loop does one thing for a
//! scrape: at the end of a turn it checks one flag (an atomic load, every turn, which is
//! all that metrics cost a loop nobody scrapes), and when it is set copies its figures
//! ([`Figures`]) into a mutex and wakes the waiting scrape. A scrape thus always sees
//! figures from after it arrived, and a loop that does not answer within
//! [`LOOP_ANSWER_WAIT`] is itself the finding: `/health` says so with 503.
//!
//! Bounds, so that no client can stall the node or pile up threads: each connection gets
//! its own thread, at most [`CONNECTIONS_MAX`] at once (more are answered 503 and closed);
//! a request must arrive whole within [`REQUEST_TIMEOUT`] and fit in [`REQUEST_BYTES_MAX`];
//! one request per connection (`Connection: close`). Only `GET` (and `HEAD`) of `/metrics`
//! and `/health` are served; other paths get 404, other methods 405, garbage 400.

use crate::metrics::{encode, Figures, ProcessFigures};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// How long a scrape waits for the event loop to publish fresh figures.
pub const LOOP_ANSWER_WAIT: Duration = Duration::from_secs(1);
/// Connections served at once.
pub const CONNECTIONS_MAX: usize = 8;
/// A request's line and headers must arrive within this.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A request's line and headers, at most.
pub const REQUEST_BYTES_MAX: usize = 8 << 10;

/// What the loop published last, and how many times.
#[derive(Default)]
struct Published {
    figures: Option<Figures>,
    generation: u64,
}

/// What the listener's threads share with the loop.
struct Shared {
    /// Set by a scrape; the loop publishes at the end of its turn and clears it.
    wanted: AtomicBool,
    published: Mutex<Published>,
    fresh: Condvar,
    /// Wakes the loop out of its poll.
    wake: Box<dyn Fn() + Send + Sync>,
    connections: AtomicUsize,
}

/// The loop's side of the metrics listener.
pub struct Exporter {
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

/// Binds the metrics listener (before anything else is opened, so that a port in use is
/// the one line a failed start prints).
pub fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).map_err(|e| format!("--metrics-listen: cannot listen on {addr}: {e}"))
}

impl Exporter {
    /// Starts the listener's thread on `listener` (from [`bind`]). `wake` wakes the event
    /// loop.
    pub fn start(
        listener: TcpListener,
        wake: Box<dyn Fn() + Send + Sync>,
    ) -> Result<Exporter, String> {
        let local_addr = listener
            .local_addr()
            .map_err(|e| format!("--metrics-listen: {e}"))?;
        let shared = Arc::new(Shared {
            wanted: AtomicBool::new(false),
            published: Mutex::new(Published::default()),
            fresh: Condvar::new(),
            wake,
            connections: AtomicUsize::new(0),
        });
        let accepting = shared.clone();
        std::thread::Builder::new()
            .name("metrics-listen".into())
            .spawn(move || accept_loop(listener, accepting))
            .map_err(|e| format!("cannot start the metrics listener thread: {e}"))?;
        Ok(Exporter { shared, local_addr })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// True when a scrape waits for figures: the loop then calls [`Exporter::publish`].
    /// One relaxed atomic load: cheap enough for every turn.
    pub fn wanted(&self) -> bool {
        self.shared.wanted.load(Ordering::Relaxed)
    }

    /// Hands fresh figures to the waiting scrapes.
    pub fn publish(&self, figures: Figures) {
        self.shared.wanted.store(false, Ordering::Relaxed);
        let mut p = lock(&self.shared.published);
        p.figures = Some(figures);
        p.generation += 1;
        drop(p);
        self.shared.fresh.notify_all();
    }
}

fn lock(m: &Mutex<Published>) -> std::sync::MutexGuard<'_, Published> {
    // The figures are plain data: a panic elsewhere leaves them readable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// Asks the loop for figures from after now. When it does not answer within
    /// [`LOOP_ANSWER_WAIT`]: the last ones it published (if any), and false.
    fn fresh_figures(&self) -> (Option<Figures>, bool) {
        let mut p = lock(&self.published);
        let asked_at = p.generation;
        self.wanted.store(true, Ordering::Relaxed);
        (self.wake)();
        let (p2, _) = self
            .fresh
            .wait_timeout_while(p, LOOP_ANSWER_WAIT, |p| p.generation == asked_at)
            .unwrap_or_else(|e| e.into_inner());
        p = p2;
        (p.figures.clone(), p.generation != asked_at)
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else {
            // A connection that failed before it was accepted (reset, out of descriptors):
            // nothing to answer; pause a little so a full descriptor table does not spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        if shared.connections.fetch_add(1, Ordering::Relaxed) >= CONNECTIONS_MAX {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
            let _ = respond(
                &mut stream,
                503,
                "text/plain",
                b"too many connections\n",
                false,
            );
            continue;
        }
        let serving = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("metrics-conn".into())
            .spawn(move || {
                serve(stream, &serving);
                serving.connections.fetch_sub(1, Ordering::Relaxed);
            });
        if let Err(e) = spawned {
            shared.connections.fetch_sub(1, Ordering::Relaxed);
            log::warn!("metrics listener: cannot start a thread for a connection: {e}");
        }
    }
}

/// A parsed request line: method, path.
#[derive(Debug, PartialEq, Eq)]
struct RequestLine {
    method: String,
    path: String,
}

/// Reads a request's line and headers (up to the blank line); `None` for garbage, a
/// request too long, or one that did not arrive in time.
fn read_request(stream: &mut TcpStream) -> Option<RequestLine> {
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    let mut buf = vec![0u8; REQUEST_BYTES_MAX];
    let mut len = 0;
    while !buf[..len].windows(4).any(|w| w == b"\r\n\r\n")
        && !buf[..len].windows(2).any(|w| w == b"\n\n")
    {
        // A trickle of bytes renews no timeout: the whole request has one deadline.
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if len == buf.len() || left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).ok()?;
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => return None,
            Ok(n) => len += n,
        }
    }
    parse_request_line(&buf[..len])
}

fn parse_request_line(head: &[u8]) -> Option<RequestLine> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
        return None;
    }
    // The query string does not choose anything here.
    let path = target.split('?').next().unwrap_or(target);
    Some(RequestLine {
        method: method.to_string(),
        path: path.to_string(),
    })
}

fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let Some(request) = read_request(&mut stream) else {
        let _ = respond(&mut stream, 400, "text/plain", b"bad request\n", false);
        return;
    };
    let head_only = request.method == "HEAD";
    if request.method != "GET" && !head_only {
        let _ = respond(&mut stream, 405, "text/plain", b"only GET\n", false);
        return;
    }
    let (status, content_type, body) = match request.path.as_str() {
        "/metrics" => metrics_page(shared),
        "/health" => health_page(shared),
        _ => (
            404,
            "text/plain",
            b"not found: this server has /metrics and /health\n".to_vec(),
        ),
    };
    let _ = respond(&mut stream, status, content_type, &body, head_only);
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn metrics_page(shared: &Shared) -> (u16, &'static str, Vec<u8>) {
    match shared.fresh_figures().0 {
        Some(f) => (
            200,
            OPENMETRICS,
            encode(&f, ProcessFigures::read()).into_bytes(),
        ),
        None => (
            503,
            "text/plain",
            b"the event loop has not answered yet\n".to_vec(),
        ),
    }
}

fn health_page(shared: &Shared) -> (u16, &'static str, Vec<u8>) {
    let verdict = match shared.fresh_figures() {
        (Some(f), true) => f.health(),
        _ => Err(format!(
            "the event loop did not answer within {} ms",
            LOOP_ANSWER_WAIT.as_millis()
        )),
    };
    let body = match &verdict {
        Ok(()) => serde_json::json!({"health": true}),
        Err(reason) => serde_json::json!({"health": false, "reason": reason}),
    };
    let status = if verdict.is_ok() { 200 } else { 503 };
    (status, "application/json", format!("{body}\n").into_bytes())
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if !head_only {
        stream.write_all(body)?;
    }
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Request lines: the method and the path without its query; garbage is refused.
    #[test]
    fn request_lines() {
        let ok = |m: &str, p: &str| {
            Some(RequestLine {
                method: m.into(),
                path: p.into(),
            })
        };
        assert_eq!(
            parse_request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            ok("GET", "/metrics")
        );
        assert_eq!(
            parse_request_line(b"HEAD /health?x=1 HTTP/1.0\n\n"),
            ok("HEAD", "/health")
        );
        for garbage in [
            &b"\x00\x01\x02\r\n\r\n"[..],
            b"GET /metrics\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET /metrics SPDY/3\r\n\r\n",
            b"\xff\xfe / HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(parse_request_line(garbage), None, "{garbage:?}");
        }
    }
}
