//! systemd's service notification protocol (sd_notify(3)), for units with `Type=notify`: a
//! few lines over a Unix datagram socket rather than a dependency.
//!
//! When `NOTIFY_SOCKET` is set (systemd sets it for `Type=notify` units), the daemon sends
//! `READY=1` once recovery is done and it serves, `STATUS=` with its role, term and leader
//! when they change, `WATCHDOG=1` from its event loop every half `WATCHDOG_USEC` when the
//! unit sets `WatchdogSec=` (a wedged loop stops pinging and systemd restarts the node), and
//! `STOPPING=1` when it begins to stop. Without the variable every call does nothing. A
//! message that cannot be sent is logged once and never stops the node.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// Talks to the service manager, if there is one.
pub struct Notifier {
    socket: Option<(UnixDatagram, SocketAddr)>,
    /// Ping this often (half the unit's watchdog interval), if the unit has a watchdog.
    watchdog_every: Option<Duration>,
    last_watchdog: Instant,
    last_status: String,
    warned: bool,
}

impl Notifier {
    /// A notifier for the socket named by `NOTIFY_SOCKET` (`@name` for an abstract socket),
    /// with the watchdog of `WATCHDOG_USEC` when `WATCHDOG_PID` is unset or this process.
    pub fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let path = path.to_string_lossy().into_owned();
            match connect(&path) {
                Ok(socket) => Some(socket),
                Err(e) => {
                    log::warn!("NOTIFY_SOCKET {path}: {e}; systemd will not hear from this node");
                    None
                }
            }
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|pid| pid.parse::<u32>().ok())
            .is_none_or(|pid| pid == std::process::id());
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|&usec| usec > 0 && for_us)
            .map(|usec| Duration::from_micros(usec) / 2);
        Notifier {
            socket,
            watchdog_every,
            last_watchdog: Instant::now(),
            last_status: String::new(),
            warned: false,
        }
    }

    /// `READY=1` with a first status.
    pub fn ready(&mut self, status: String) {
        self.send(&format!("READY=1\nSTATUS={status}\n"));
        self.last_status = status;
        self.last_watchdog = Instant::now();
    }

    /// `STATUS=...` when it changed.
    pub fn status(&mut self, status: String) {
        if status != self.last_status {
            self.send(&format!("STATUS={status}\n"));
            self.last_status = status;
        }
    }

    /// `WATCHDOG=1` when half the watchdog interval passed since the last one.
    pub fn watchdog(&mut self) {
        let Some(every) = self.watchdog_every else {
            return;
        };
        if self.last_watchdog.elapsed() >= every {
            self.send("WATCHDOG=1\n");
            self.last_watchdog = Instant::now();
        }
    }

    /// `STOPPING=1`.
    pub fn stopping(&mut self) {
        self.send("STOPPING=1\nSTATUS=stopping\n");
    }

    fn send(&mut self, message: &str) {
        let Some((socket, addr)) = &self.socket else {
            return;
        };
        if let Err(e) = socket.send_to_addr(message.as_bytes(), addr) {
            if !self.warned {
                log::warn!("cannot notify systemd: {e}");
                self.warned = true;
            }
        }
    }
}

fn connect(path: &str) -> std::io::Result<(UnixDatagram, SocketAddr)> {
    let addr = match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())?
        }
        None => SocketAddr::from_pathname(path)?,
    };
    Ok((UnixDatagram::unbound()?, addr))
}
