//! A TCP relay on 127.0.0.1 that counts the bytes it carries each way, to
//! check what crosses the wire between two parties (e.g. that a leg is
//! really compressed) without trusting either party's own figures.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running relay; stops accepting when dropped (open pairs finish).
pub struct Relay {
    pub addr: SocketAddr,
    /// Bytes from the connecting side to the target.
    pub up: Arc<AtomicU64>,
    /// Bytes from the target back to the connecting side.
    pub down: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Relay {
    /// Relays every connection made to the returned address to `target`.
    pub async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let up = Arc::new(AtomicU64::new(0));
        let down = Arc::new(AtomicU64::new(0));
        let (u, d) = (up.clone(), down.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pipe(cr, sw, u.clone()));
                tokio::spawn(pipe(sr, cw, d.clone()));
            }
        });
        Relay {
            addr,
            up,
            down,
            task,
        }
    }

    /// (up, down) byte counts so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.up.load(Ordering::SeqCst),
            self.down.load(Ordering::SeqCst),
        )
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicU64>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
                count.fetch_add(n as u64, Ordering::SeqCst);
            }
        }
    }
    let _ = to.shutdown().await;
}

/// What a [`FaultRelay`] does to the traffic, switchable at any time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward everything.
    Pass,
    /// Accept connections but carry nothing either way (a cable cut or a
    /// dropping firewall): bytes are held and, like TCP retransmissions,
    /// delivered when the fault is lifted.
    Blackhole,
    /// Nothing listens (connection refused); open connections are reset.
    Refuse,
    /// New connections are accepted and reset at once; open ones too.
    Reset,
    /// Every chunk is forwarded after this delay.
    Delay(std::time::Duration),
}

/// A TCP relay on 127.0.0.1 that injects [`Fault`]s between a client (say,
/// rwproxy) and one server, leaving every other path to that server alone.
pub struct FaultRelay {
    pub addr: SocketAddr,
    mode: Arc<tokio::sync::watch::Sender<Fault>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultRelay {
    fn drop(&mut self) {
        self.task.abort();
        // Open pairs end too.
        self.mode.send_replace(Fault::Reset);
    }
}

fn bind_reuse(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.set_reuseaddr(true)?;
    s.bind(addr)?;
    s.listen(128)
}

#[allow(deprecated)]
fn reset(s: &TcpStream) {
    let _ = s.set_linger(Some(std::time::Duration::ZERO));
}

impl FaultRelay {
    /// Relays every connection made to the returned address to `target`.
    pub async fn start(target: SocketAddr) -> FaultRelay {
        let first = bind_reuse("127.0.0.1:0".parse().expect("addr")).expect("bind relay");
        let addr = first.local_addr().expect("relay addr");
        let mode = Arc::new(tokio::sync::watch::channel(Fault::Pass).0);
        let m = mode.clone();
        let task = tokio::spawn(async move {
            let mut listener = Some(first);
            let mut rx = m.subscribe();
            loop {
                let current = *rx.borrow_and_update();
                if current == Fault::Refuse {
                    listener = None;
                    if rx.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                let l = match listener.take() {
                    Some(l) => l,
                    None => match bind_reuse(addr) {
                        Ok(l) => l,
                        Err(_) => {
                            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                };
                tokio::select! {
                    _ = rx.changed() => { listener = Some(l); }
                    accepted = l.accept() => {
                        listener = Some(l);
                        let Ok((client, _)) = accepted else { continue };
                        if *m.borrow() == Fault::Reset {
                            reset(&client);
                            continue;
                        }
                        let Ok(server) = TcpStream::connect(target).await else {
                            reset(&client);
                            continue;
                        };
                        let (cr, cw) = client.into_split();
                        let (sr, sw) = server.into_split();
                        let end = tokio_util::sync::CancellationToken::new();
                        tokio::spawn(fault_pipe(cr, sw, m.subscribe(), end.clone()));
                        tokio::spawn(fault_pipe(sr, cw, m.subscribe(), end));
                    }
                }
            }
        });
        FaultRelay { addr, mode, task }
    }

    /// Switches the fault (takes effect at once, on open connections too).
    pub fn set(&self, fault: Fault) {
        self.mode.send_replace(fault);
    }
}

/// One direction of a relayed pair. A Refuse/Reset fault ends both
/// directions (`end`) and resets the sockets.
async fn fault_pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: tokio::sync::watch::Receiver<Fault>,
    end: tokio_util::sync::CancellationToken,
) {
    let mut buf = vec![0u8; 64 * 1024];
    let broken = |f: Fault| matches!(f, Fault::Refuse | Fault::Reset);
    'outer: loop {
        let n = tokio::select! {
            _ = end.cancelled() => break,
            r = mode.wait_for(|f| broken(*f)) => { let _ = r; end.cancel(); break }
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        loop {
            let f = *mode.borrow_and_update();
            match f {
                Fault::Pass => break,
                Fault::Delay(d) => {
                    tokio::time::sleep(d).await;
                    break;
                }
                Fault::Refuse | Fault::Reset => {
                    end.cancel();
                    break 'outer;
                }
                Fault::Blackhole => {
                    tokio::select! {
                        _ = end.cancelled() => break 'outer,
                        r = mode.changed() => if r.is_err() { break 'outer },
                    }
                }
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            end.cancel();
            break;
        }
    }
    if end.is_cancelled() {
        // Dropping both halves without a shutdown; the peer sees the
        // connection die (RST when data is unread, else FIN).
        drop(from);
        drop(to);
    } else {
        let _ = to.shutdown().await;
    }
}
