//! Session threads: one single-threaded tokio runtime each (see
//! [`Workers`]), and [`home`], the thread a piece of code runs on.

use std::time::Duration;

thread_local! {
    static HOME: std::cell::Cell<u16> = const { std::cell::Cell::new(0) };
}

/// The session thread this code runs on (0 outside [`Workers`]).
pub fn home() -> u16 {
    HOME.with(|h| h.get())
}

/// Session threads, one single-threaded tokio runtime each, with its own
/// I/O driver (epoll) and timers, as HAProxy runs one event loop per
/// thread. A client connection is handed to one of them (round-robin) and
/// lives there with the backend connections it borrows, which the pools
/// keep per thread (`PoolKey::home`).
///
/// Why not tokio's multi-thread scheduler: with two cores shared with the
/// servers and the clients, its workers hand tasks to each other — a
/// parked worker is woken (futex) for work the other has often already
/// taken — and the machine sat idle ~6 µs per statement waiting on those
/// hand-offs (`benches/load.sh`: idle µs per statement), against ~1.6 µs
/// through HAProxy.
pub(crate) struct Workers {
    handles: Vec<tokio::runtime::Handle>,
    stops: Vec<tokio::sync::oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` session threads (at least one).
    pub(crate) fn start(n: usize) -> std::io::Result<Workers> {
        let mut w = Workers {
            handles: Vec::new(),
            stops: Vec::new(),
            threads: Vec::new(),
        };
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            w.handles.push(rt.handle().clone());
            w.stops.push(stop);
            let home = u16::try_from(i + 1).unwrap_or(u16::MAX);
            w.threads.push(
                std::thread::Builder::new()
                    .name(format!("rwproxy-worker-{i}"))
                    .spawn(move || {
                        HOME.with(|h| h.set(home));
                        rt.block_on(async {
                            // A timer always due within a second. tokio wakes
                            // its own event loop (an eventfd write and an
                            // extra epoll_wait) whenever a new timer is due
                            // before every other one; on a thread whose
                            // sessions have no timer running, that was each
                            // new session's handshake timeout — two
                            // syscalls per connection. With this one armed,
                            // session timers (seconds long) never come first.
                            let anchor = async {
                                loop {
                                    tokio::time::sleep(Duration::from_secs(1)).await;
                                }
                            };
                            tokio::select! {
                                _ = stopped => {}
                                _ = anchor => {}
                            }
                        });
                    })?,
            );
        }
        Ok(w)
    }

    /// The session thread for the `i`-th connection (round-robin).
    pub(crate) fn pick(&self, i: usize) -> &tokio::runtime::Handle {
        &self.handles[i % self.handles.len()]
    }

    /// Stops the threads; sessions still on them are dropped.
    pub(crate) fn stop(self) {
        for s in self.stops {
            let _ = s.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}
