//! A minimal hand-written MySQL client over a `TcpStream`, for what
//! mysql_async cannot do: commands it does not expose (COM_INIT_DB,
//! COM_SET_OPTION, COM_STATISTICS, COM_FIELD_LIST, unknown codes) and
//! broken or hostile frames (truncated packets, wrong sequence ids, lying
//! length headers, pipelining without reading).
#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long [`Raw::expect_closed`] waits for the proxy to close.
pub const DEADLINE: Duration = Duration::from_secs(20);

pub const CLIENT_LONG_PASSWORD: u32 = 0x1;
pub const CLIENT_LONG_FLAG: u32 = 0x4;
pub const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
pub const CLIENT_PROTOCOL_41: u32 = 0x200;
pub const CLIENT_TRANSACTIONS: u32 = 0x2000;
pub const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
pub const CLIENT_MULTI_RESULTS: u32 = 0x20000;
pub const CLIENT_PLUGIN_AUTH: u32 = 0x80000;

pub const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;

/// A server reply as the raw client understood it.
#[derive(Debug, PartialEq)]
pub enum Reply {
    Ok {
        status: u16,
    },
    Err {
        code: u16,
        state: String,
        message: String,
    },
    /// A text result set: rows of nullable text cells; `more` = another
    /// result follows.
    Rows {
        rows: Vec<Vec<Option<String>>>,
        more: bool,
    },
}

pub struct Raw {
    /// The socket, for tests that write broken frames by hand.
    pub s: TcpStream,
}

pub fn lenenc(p: &[u8]) -> Option<(u64, usize)> {
    match *p.first()? {
        x @ 0..=0xfa => Some((u64::from(x), 1)),
        0xfc => Some((u64::from(u16::from_le_bytes([*p.get(1)?, *p.get(2)?])), 3)),
        0xfd => Some((
            u64::from(p.get(1)?.to_owned())
                | u64::from(*p.get(2)?) << 8
                | u64::from(*p.get(3)?) << 16,
            4,
        )),
        0xfe => Some((u64::from_le_bytes(p.get(1..9)?.try_into().ok()?), 9)),
        _ => None,
    }
}

/// Reads `n` length-encoded strings from `p`.
pub fn lenenc_strings(mut p: &[u8], n: usize) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for _ in 0..n {
        if p.first() == Some(&0xfb) {
            out.push(None);
            p = &p[1..];
            continue;
        }
        let (len, skip) = lenenc(p).expect("lenenc");
        let end = skip + len as usize;
        out.push(Some(String::from_utf8_lossy(&p[skip..end]).into_owned()));
        p = &p[end..];
    }
    out
}

pub fn parse_err(p: &[u8]) -> Reply {
    let code = u16::from_le_bytes([p[1], p[2]]);
    let (state, msg) = if p.get(3) == Some(&b'#') {
        (String::from_utf8_lossy(&p[4..9]).into_owned(), &p[9..])
    } else {
        (String::new(), &p[3..])
    };
    Reply::Err {
        code,
        state,
        message: String::from_utf8_lossy(msg).into_owned(),
    }
}

pub fn ok_status(p: &[u8]) -> u16 {
    let (_, a) = lenenc(&p[1..]).expect("affected");
    let (_, b) = lenenc(&p[1 + a..]).expect("insert id");
    let at = 1 + a + b;
    u16::from_le_bytes([p[at], p[at + 1]])
}

impl Raw {
    /// Connects and logs in with `mysql_native_password`; `Err` carries the
    /// server's refusal.
    pub async fn connect(
        addr: std::net::SocketAddr,
        user: &str,
        password: &str,
        db: Option<&str>,
    ) -> Result<Raw, Reply> {
        Self::connect_with(addr, user, password, db, 0).await
    }

    /// Like [`Raw::connect`], asking for MariaDB extended capabilities
    /// `ext` (then `CLIENT_MYSQL`, the old `CLIENT_LONG_PASSWORD`, is left
    /// unset, as MariaDB clients do).
    pub async fn connect_with(
        addr: std::net::SocketAddr,
        user: &str,
        password: &str,
        db: Option<&str>,
        ext: u32,
    ) -> Result<Raw, Reply> {
        let s = TcpStream::connect(addr).await.expect("tcp connect");
        let mut raw = Raw { s };
        let (_, greeting) = raw.read().await.expect("greeting");
        assert_eq!(greeting[0], 10, "protocol version");
        let mut i = 1 + greeting[1..].iter().position(|&b| b == 0).unwrap() + 1;
        i += 4; // connection id
        let mut scramble = greeting[i..i + 8].to_vec();
        i += 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10;
        scramble.extend_from_slice(&greeting[i..i + 12]);
        let mut caps = CLIENT_LONG_PASSWORD
            | CLIENT_LONG_FLAG
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_MULTI_RESULTS
            | CLIENT_PLUGIN_AUTH;
        if db.is_some() {
            caps |= CLIENT_CONNECT_WITH_DB;
        }
        if ext != 0 {
            caps &= !CLIENT_LONG_PASSWORD;
        }
        let mut hr = Vec::new();
        hr.extend_from_slice(&caps.to_le_bytes());
        hr.extend_from_slice(&(1u32 << 30).to_le_bytes());
        hr.push(45); // utf8mb4_general_ci
        hr.extend_from_slice(&[0; 19]);
        hr.extend_from_slice(&ext.to_le_bytes());
        hr.extend_from_slice(user.as_bytes());
        hr.push(0);
        let auth = mysql_common::scramble::scramble_native(&scramble, password.as_bytes())
            .map(|a| a.to_vec())
            .unwrap_or_default();
        hr.push(auth.len() as u8);
        hr.extend_from_slice(&auth);
        if let Some(db) = db {
            hr.extend_from_slice(db.as_bytes());
            hr.push(0);
        }
        hr.extend_from_slice(b"mysql_native_password\0");
        raw.write(1, &hr).await;
        let (seq, reply) = raw.read().await.expect("auth reply");
        match reply[0] {
            0x00 => Ok(raw),
            0xff => Err(parse_err(&reply)),
            0xfe => {
                // Auth switch: plugin name, then the new scramble.
                let nul = reply[1..].iter().position(|&b| b == 0).unwrap() + 1;
                let data = &reply[nul + 1..];
                let data = &data[..data.len().min(20)];
                let auth = mysql_common::scramble::scramble_native(data, password.as_bytes())
                    .map(|a| a.to_vec())
                    .unwrap_or_default();
                raw.write(seq + 1, &auth).await;
                let (_, reply) = raw.read().await.expect("auth reply after switch");
                match reply[0] {
                    0x00 => Ok(raw),
                    _ => Err(parse_err(&reply)),
                }
            }
            other => panic!("unexpected auth reply {other:#x}"),
        }
    }

    /// Reads one frame (sequence id, payload); `None` on EOF.
    pub async fn read(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut h = [0u8; 4];
        if self.s.read_exact(&mut h).await.is_err() {
            return None;
        }
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        let mut p = vec![0u8; len];
        self.s.read_exact(&mut p).await.ok()?;
        Some((h[3], p))
    }

    pub async fn write(&mut self, seq: u8, payload: &[u8]) {
        let len = payload.len();
        let mut f = vec![len as u8, (len >> 8) as u8, (len >> 16) as u8, seq];
        f.extend_from_slice(payload);
        self.s.write_all(&f).await.expect("write");
    }

    /// Sends a command (sequence 0) and reads one complete reply.
    pub async fn command(&mut self, cmd: u8, arg: &[u8]) -> Reply {
        let mut p = vec![cmd];
        p.extend_from_slice(arg);
        self.write(0, &p).await;
        self.reply().await
    }

    /// Reads one reply: OK, ERR, or one text result set.
    pub async fn reply(&mut self) -> Reply {
        let (_, first) = self.read().await.expect("reply");
        match first[0] {
            0x00 => Reply::Ok {
                status: ok_status(&first),
            },
            0xff => parse_err(&first),
            0xfe if first.len() < 9 => Reply::Ok {
                status: u16::from_le_bytes([first[3], first[4]]),
            },
            _ => {
                let (cols, _) = lenenc(&first).expect("column count");
                for _ in 0..cols {
                    self.read().await.expect("column");
                }
                let (_, eof) = self.read().await.expect("eof");
                assert_eq!(eof[0], 0xfe, "EOF after columns");
                let mut rows = Vec::new();
                loop {
                    let (_, p) = self.read().await.expect("row");
                    if p[0] == 0xfe && p.len() < 9 {
                        let status = u16::from_le_bytes([p[3], p[4]]);
                        return Reply::Rows {
                            rows,
                            more: status & SERVER_MORE_RESULTS_EXISTS != 0,
                        };
                    }
                    if p[0] == 0xff {
                        return parse_err(&p);
                    }
                    rows.push(lenenc_strings(&p, cols as usize));
                }
            }
        }
    }

    pub async fn query(&mut self, sql: &str) -> Reply {
        self.command(0x03, sql.as_bytes()).await
    }

    /// The first cell of a one-row result.
    pub async fn value(&mut self, sql: &str) -> Option<String> {
        match self.query(sql).await {
            Reply::Rows { rows, .. } => rows[0][0].clone(),
            other => panic!("{sql}: {other:?}"),
        }
    }

    /// Waits for the proxy to close the connection; returns what it sent
    /// before closing (e.g. an ERR), or panics if it is still open after
    /// the deadline.
    pub async fn expect_closed(&mut self) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let r = tokio::time::timeout(DEADLINE, async {
            while let Some((_, p)) = self.read().await {
                got.push(p);
            }
        })
        .await;
        assert!(
            r.is_ok(),
            "the proxy did not close the connection; got {got:?}"
        );
        got
    }
}
