//! Fuzzing entry points for rwproxy's parsers of untrusted input.
//!
//! Each `pub fn` takes the raw bytes libFuzzer generates and drives one
//! family of parsers with them, asserting the properties those parsers
//! promise (never panic, never exceed a limit, forward bytes unchanged…).
//! The same file is compiled twice: by the cargo-fuzz targets in
//! `fuzz_targets/` (nightly, libFuzzer) and, through `#[path]`, by the
//! stable test `tests/fuzz_corpus.rs`, which replays `fuzz/corpus/` so a
//! regression shows up in an ordinary `cargo test`. It may therefore use
//! only what the root crate depends on (`rwproxy`, `tokio`,
//! `mysql_common`).
//!
//! Async readers are driven over in-memory streams
//! (`tokio::io::join(&[u8], Vec<u8>)`): reads come from the fuzz input and
//! end in EOF, writes are collected so the test can check what went out.

use std::future::Future;

use mysql_common::constants::CapabilityFlags;
use rwproxy::protocol::auth::Stage1;
use rwproxy::protocol::command::{self, Command};
use rwproxy::protocol::handshake::{self, FirstReply, Login};
use rwproxy::protocol::packet::{FrameError, MAX_FRAME_PAYLOAD, PacketStream};
use rwproxy::protocol::response::{self, Expect, MetaCache};
use rwproxy::protocol::{get_lenenc_int, put_lenenc_int};
use rwproxy::router::classify::{StatementKind, classify as classify_sql};
use rwproxy::router::digest::{MAX_TEXT_LEN, digest_id, normalize};
use rwproxy::router::set::{SetEffect, parse_set};
use tokio::io::Join;

/// An in-memory peer: what it "sends" is the fuzz input, what rwproxy
/// writes to it is collected.
type Mem<'a> = Join<&'a [u8], Vec<u8>>;

fn mem(input: &[u8]) -> PacketStream<Mem<'_>> {
    PacketStream::new(tokio::io::join(input, Vec::new()))
}

fn written<'s>(s: &'s PacketStream<Mem<'_>>) -> &'s [u8] {
    s.get_ref().writer()
}

/// Runs a future on a per-thread current-thread runtime (no I/O driver:
/// the streams are in memory; timers enabled because `flush` may arm one).
fn block_on<F: Future>(f: F) -> F::Output {
    thread_local! {
        static RT: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime");
    }
    RT.with(|rt| rt.block_on(f))
}

/// Takes leading control bytes off the input; missing bytes read as 0 so
/// every input, even an empty one, is valid.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
    fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// Packet framing (`protocol::packet`) and response forwarding
/// (`protocol::response`) over a stream of arbitrary bytes.
///
/// Layout: `mode`, `caps: u32`, `limit: u24` (read_packet limit, at most
/// 1 MiB), `client_len: u16`, then `client_len` bytes the *client* sends
/// (used by LOCAL INFILE), then what the *server* sends.
pub fn packet(data: &[u8]) {
    let mut c = Cursor(data);
    let mode = c.u8();
    let caps = CapabilityFlags::from_bits_truncate(c.u32());
    let limit = (usize::from(c.u8()) | usize::from(c.u16()) << 8) % (1 << 20) + 1;
    let client_len = usize::from(c.u16());
    let client_in = c.take(client_len);
    let server_in = c.rest();

    if let Some((v, n)) = get_lenenc_int(server_in) {
        assert!(n <= server_in.len() && n <= 9);
        let mut b = Vec::new();
        put_lenenc_int(&mut b, v);
        // 0xfb..0xff are not integers; 0..=250 in one byte, the rest prefixed.
        assert_eq!(get_lenenc_int(&b), Some((v, b.len())));
    }

    block_on(async {
        match mode % 10 {
            0 => read_packets(server_in, limit, true).await,
            1 => read_packets(server_in, limit, false).await,
            2 => read_frames(server_in).await,
            3 => forward(client_in, server_in, Expect::Query, caps).await,
            4 => forward(client_in, server_in, Expect::Execute, caps).await,
            5 => forward(client_in, server_in, Expect::Fetch, caps).await,
            6 => forward(client_in, server_in, Expect::FieldList, caps).await,
            7 => forward(client_in, server_in, Expect::Simple, caps).await,
            8 => forward(client_in, server_in, Expect::Statistics, caps).await,
            _ => {
                if client_len % 2 == 0 {
                    let mut s = mem(server_in);
                    let mut cl = mem(client_in);
                    let _ = response::forward_prepare(
                        &mut s,
                        Some(&mut cl),
                        caps,
                        0x0102_0304,
                        client_len % 4 == 0,
                    )
                    .await;
                    // Only the statement id is rewritten; the length is kept.
                    assert!(written(&cl).len() <= server_in.len());
                } else {
                    let mut s = mem(server_in);
                    let _ = response::read_single_value(&mut s, caps, client_len % 4 == 1).await;
                }
            }
        }
        roundtrip(server_in, limit).await;
    });
}

/// Reads logical packets until the stream ends, checking the limit and
/// the sequence-id bookkeeping.
async fn read_packets(input: &[u8], limit: usize, expect_seq: bool) {
    let mut s = mem(input);
    let mut consumed = 0usize;
    let mut next_seq = 0u8;
    loop {
        let want = expect_seq.then_some(next_seq);
        match s.read_packet(limit, want).await {
            Ok(p) => {
                assert!(p.payload.len() <= limit, "packet over the limit");
                if let Some(w) = want {
                    assert_eq!(p.seq, w);
                }
                let frames = p.payload.len() / MAX_FRAME_PAYLOAD + 1;
                assert_eq!(
                    usize::from(p.last_seq.wrapping_sub(p.seq)),
                    (frames - 1) % 256
                );
                consumed += p.payload.len() + 4 * frames;
                assert!(consumed <= input.len());
                next_seq = p.last_seq.wrapping_add(1);
            }
            Err(FrameError::Closed) => {
                assert_eq!(consumed, input.len(), "clean close with bytes left");
                return;
            }
            Err(_) => return,
        }
    }
}

/// Reads raw frames until the stream ends: what `forward` sees.
async fn read_frames(input: &[u8]) {
    let mut s = mem(input);
    let mut consumed = 0usize;
    loop {
        let buffered = s.has_buffered_frame();
        match s.read_frame().await {
            Ok(f) => {
                assert_eq!(f.raw().len(), f.payload().len() + 4);
                assert_eq!(f.raw(), &input[consumed..consumed + f.raw().len()]);
                consumed += f.raw().len();
            }
            Err(FrameError::Closed) => {
                assert!(!buffered);
                assert_eq!(consumed, input.len());
                return;
            }
            Err(FrameError::Truncated) => {
                assert!(!buffered);
                assert!(consumed < input.len());
                return;
            }
            Err(e) => panic!("unexpected frame error over memory: {e}"),
        }
    }
}

/// Forwards a server response to a client: the client must receive a
/// prefix of the server's bytes, unchanged, and the server a prefix of
/// the client's (LOCAL INFILE data).
async fn forward(client_in: &[u8], server_in: &[u8], expect: Expect, caps: CapabilityFlags) {
    let mut s = mem(server_in);
    let mut cl = mem(client_in);
    let r = response::forward(&mut s, Some(&mut cl), expect, caps, MetaCache::OFF).await;
    let to_client = written(&cl);
    assert!(
        server_in.starts_with(to_client),
        "forwarded bytes differ from the server's ({r:?})"
    );
    let to_server = written(&s);
    assert!(
        client_in.starts_with(to_server),
        "LOCAL INFILE data altered"
    );
    // The same response consumed silently (state replay) must not panic.
    let mut s = mem(server_in);
    let _ = response::forward(
        &mut s,
        None::<&mut PacketStream<Mem<'_>>>,
        expect,
        caps,
        MetaCache::OFF,
    )
    .await;
    // With MariaDB's metadata cache on both sides, and column definitions
    // that differ between what the client holds and what the server sent
    // (rwproxy may then insert frames of its own): no panic.
    let holds: std::sync::Arc<[u8]> = std::sync::Arc::from(&b"\x01\x00\x00\x02\xfb"[..]);
    let sent: std::sync::Arc<[u8]> =
        std::sync::Arc::from(&b"\x02\x00\x00\x02\x00\x01\x01\x00\x00\x03\xfb"[..]);
    for (server, client) in [(true, true), (false, true), (true, false)] {
        let meta = MetaCache {
            server,
            client,
            client_holds: Some(&holds),
            server_sent: Some(&sent),
        };
        let mut s = mem(server_in);
        let mut cl = mem(client_in);
        let _ = response::forward(&mut s, Some(&mut cl), expect, caps, meta).await;
    }
}

/// Writing a payload and reading it back yields the same payload.
async fn roundtrip(payload: &[u8], limit: usize) {
    let mut w = mem(&[]);
    let last = w.queue_payload(3, payload);
    w.flush().await.expect("flush to memory");
    let wire = written(&w).to_vec();
    assert_eq!(
        wire.len(),
        payload.len() + 4 * (payload.len() / MAX_FRAME_PAYLOAD + 1)
    );
    let mut r = mem(&wire);
    match r.read_packet(limit, Some(3)).await {
        Ok(p) => {
            assert_eq!(&p.payload[..], payload);
            assert_eq!(p.last_seq, last);
        }
        Err(FrameError::TooLarge { .. }) => assert!(payload.len() > limit),
        Err(e) => panic!("roundtrip failed: {e}"),
    }
}

/// The connection phase, both ways: client handshake responses and
/// SSLRequests as rwproxy reads them from clients, a server's greeting
/// and auth exchange as rwproxy logs into a backend, and the pure parsers
/// (COM_CHANGE_USER payload, ERR packet, COM_STMT_PREPARE OK header).
///
/// Layout: `mode`, `flags`, `caps: u32`, then the peer's bytes.
pub fn handshake(data: &[u8]) {
    let mut c = Cursor(data);
    let mode = c.u8();
    let flags = c.u8();
    let caps = CapabilityFlags::from_bits_truncate(c.u32());
    let input = c.rest();

    if let Some(cu) = handshake::parse_change_user(input) {
        assert!(cu.auth_reply.len() <= input.len());
    }
    // An ERR from a server is relayed to the client: it must re-encode.
    let _ = handshake::parse_err(input).to_payload();
    if let Some((_, _, _)) = handshake::parse_prepare_ok(input) {
        assert!(input.len() >= 12);
    }

    block_on(async {
        if mode % 2 == 0 {
            // As a server to a client: the first reply may be an SSLRequest,
            // then (after TLS, here: on the same stream) the real response.
            let mut s = mem(input);
            let mut seq = flags;
            for _ in 0..2 {
                match handshake::read_client_hello(&mut s, 1 << 20, seq).await {
                    Ok(FirstReply::SslRequest) => seq = seq.wrapping_add(1),
                    Ok(FirstReply::Hello(h)) => {
                        assert!(h.caps.contains(CapabilityFlags::CLIENT_PROTOCOL_41));
                        break;
                    }
                    Err(_) => break,
                }
            }
        } else {
            // As a client to a backend server.
            let stage1 = Stage1([0x5a; 20]);
            let login = Login {
                user: "app",
                stage1: (flags & 1 != 0).then_some(&stage1),
                sha2: None,
                db: (flags & 2 != 0).then_some("appdb"),
                caps,
                ext: mysql_common::constants::MariadbCapabilities::from_bits_truncate(u32::from(
                    flags,
                )),
                collation: 45,
                max_packet: 16 << 20,
                compression: (flags & 4 != 0)
                    .then_some(rwproxy::protocol::compress::Algorithm::Zlib),
            };
            let mut s = mem(input);
            let _ = handshake::login(&mut s, &login).await;
        }
    });
}

/// The command decoder and the COM_STMT_EXECUTE parameter-type helpers.
///
/// Layout: `params: u16` (the statement's parameter count, as rwproxy
/// learned it at prepare time), then the command payload.
pub fn command(data: &[u8]) {
    let mut c = Cursor(data);
    let params = c.u16() % 1024;
    let payload = c.rest();

    let Ok(cmd) = command::decode(payload) else {
        return;
    };
    match cmd {
        Command::ChangeUser(rest) => {
            let _ = handshake::parse_change_user(rest);
        }
        Command::StmtExecute { .. }
        | Command::StmtSendLongData { .. }
        | Command::StmtClose { .. }
        | Command::StmtReset { .. }
        | Command::StmtFetch { .. } => {
            // rwproxy rewrites the id in place; the command must still
            // decode the same, with the new id.
            let mut copy = payload.to_vec();
            command::set_stmt_id(&mut copy, 0xdead_beef);
            let again = command::decode(&copy).expect("rewritten command decodes");
            assert_eq!(std::mem::discriminant(&again), std::mem::discriminant(&cmd));
        }
        _ => {}
    }
    if let Command::StmtExecute { .. } = cmd
        && let Some(layout) = command::execute_layout(payload, params)
    {
        match command::execute_types(payload, layout, params) {
            Some(types) => {
                assert!(layout.types_sent);
                assert_eq!(types.len(), 2 * usize::from(params));
            }
            None => {
                assert!(!layout.types_sent);
                // Inject types as rwproxy does for a connection that has
                // not seen them: the result must carry them.
                let types: Vec<u8> = (0..2 * usize::from(params)).map(|i| i as u8).collect();
                let rebuilt = command::execute_with_types(payload, layout, &types);
                assert_eq!(rebuilt.len(), payload.len() + types.len());
                let l2 = command::execute_layout(&rebuilt, params).expect("layout");
                assert!(l2.types_sent);
                assert_eq!(
                    command::execute_types(&rebuilt, l2, params),
                    Some(&types[..])
                );
            }
        }
    }
}

/// The statement classifier and the digest normalizer on arbitrary bytes.
pub fn classify(data: &[u8]) {
    let c = classify_sql(data);
    if c.kind == StatementKind::Set {
        // The session layer parses what the classifier called a SET.
        let _ = parse_set(data);
    }
    let mut text = String::with_capacity(MAX_TEXT_LEN);
    let id = normalize(data, &mut text);
    assert!(text.len() <= MAX_TEXT_LEN, "digest text over the cap");
    assert_eq!(id, digest_id(text.as_bytes()), "id is not the text's hash");
    // A digest text is itself SQL-like text; feeding it back must be safe.
    let _ = classify_sql(text.as_bytes());
}

/// The SET parser. What it records must itself be a replayable SET: the
/// session replays `SET <text>` on other connections.
pub fn set(data: &[u8]) {
    let effect = parse_set(data);
    if let SetEffect::Session(items) = effect {
        for item in items {
            assert!(!item.key.is_empty(), "empty key from {data:?}");
            assert!(!item.text.is_empty(), "empty text from {data:?}");
            let replay = format!("SET {}", item.text);
            let _ = parse_set(replay.as_bytes());
        }
    }
    let _ = classify_sql(data);
}

/// The compressed protocol (`protocol::compress`) under the packet reader:
/// the first byte picks the algorithm (bit 0: zlib / zstd) and rwproxy's
/// role (bit 1: serving a client / a server's client); the rest is what
/// the peer sends. Every packet read must be well framed and bounded;
/// lying lengths, corrupt streams and bad sequence ids must be errors.
pub fn compress(data: &[u8]) {
    use rwproxy::protocol::compress::{Algorithm, Role};
    let mut c = Cursor(data);
    let mode = c.u8();
    let input = c.rest();
    let algo = if mode & 1 == 0 {
        Algorithm::Zlib
    } else {
        Algorithm::Zstd { level: 3 }
    };
    let role = if mode & 2 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    block_on(async {
        let mut s = mem(input);
        if s.start_compression(algo, role).is_err() {
            return;
        }
        if role == Role::Client {
            s.queue_payload(0, b"\x03select 1");
            if s.flush().await.is_err() {
                return;
            }
        }
        for _ in 0..64 {
            match s.read_packet(1 << 20, None).await {
                Ok(p) => assert!(p.payload.len() <= 1 << 20),
                Err(_) => break,
            }
        }
    });
}
