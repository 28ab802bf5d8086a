//! Packet framing: reads and writes MySQL frames (3-byte length, 1-byte
//! sequence id, payload) without touching their content.
//!
//! Written by hand rather than with `mysql_common::proto::codec::PacketCodec`
//! because a proxy needs what that codec hides: the codec joins frames of a
//! split (≥ 16 MiB) packet into one buffer and renumbers sequence ids on write,
//! whereas rwproxy forwards a server's frames byte for byte and streams huge
//! payloads without ever holding them whole. Client commands, which rwproxy
//! must classify, are joined here too, but only up to `max_allowed_packet`,
//! checked before each allocation.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::compress::{Algorithm, Compressor, Role};

/// Largest payload of one frame; a frame of exactly this size is followed by
/// a continuation frame of the same logical packet.
pub const MAX_FRAME_PAYLOAD: usize = 0xFF_FFFF;

/// Output is flushed once this many bytes are buffered, so that streaming a
/// large result never holds more than about this much per session.
const FLUSH_THRESHOLD: usize = 64 * 1024;

/// Framing-level failures.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The socket failed or was closed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection between packets.
    #[error("connection closed by peer")]
    Closed,
    /// The peer closed the connection in the middle of a packet.
    #[error("connection closed in the middle of a packet")]
    Truncated,
    /// A logical packet is larger than the configured limit.
    #[error("packet of at least {size} bytes exceeds max_allowed_packet ({limit})")]
    TooLarge { size: usize, limit: usize },
    /// A frame did not carry the sequence id the protocol requires.
    #[error("wrong sequence id: expected {expected}, got {got}")]
    Sequence { expected: u8, got: u8 },
}

/// One frame as read from the wire, header included.
#[derive(Debug)]
pub struct Frame {
    bytes: BytesMut,
}

impl Frame {
    /// The sequence id from the header.
    pub fn seq(&self) -> u8 {
        self.bytes[3]
    }
    /// The payload (everything after the 4-byte header).
    pub fn payload(&self) -> &[u8] {
        &self.bytes[4..]
    }
    /// The whole frame, header included, as it goes on the wire.
    pub fn raw(&self) -> &[u8] {
        &self.bytes
    }
    /// Whether a continuation frame follows (this one is exactly full).
    pub fn continues(&self) -> bool {
        self.payload().len() == MAX_FRAME_PAYLOAD
    }
    /// Mutable payload, for the few rewrites a proxy must do (statement ids).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[4..]
    }
    /// First byte of the payload, if any: the header byte of OK/ERR/EOF.
    pub fn first(&self) -> Option<u8> {
        self.bytes.get(4).copied()
    }
    /// Shortens the payload to `len` bytes (after an in-place rewrite that
    /// made it shorter) and updates the frame header's length.
    pub fn truncate_payload(&mut self, len: usize) {
        if len < self.payload().len() {
            self.bytes.truncate(4 + len);
            let n = len as u32;
            self.bytes[..3].copy_from_slice(&[n as u8, (n >> 8) as u8, (n >> 16) as u8]);
        }
    }
}

/// A logical packet whose payload may have spanned several frames.
#[derive(Debug)]
pub struct Packet {
    /// Sequence id of the first frame.
    pub seq: u8,
    /// Sequence id of the last frame (equal to `seq` unless split).
    pub last_seq: u8,
    /// The joined payload.
    pub payload: BytesMut,
}

/// A buffered MySQL packet stream over any byte stream (TCP, TLS, Unix).
pub struct PacketStream<S> {
    stream: S,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Bytes read from the peer so far (metrics).
    pub bytes_in: u64,
    /// Bytes written to the peer so far (metrics).
    pub bytes_out: u64,
    /// A peer that stops reading (its socket buffer full) longer than this
    /// is given up on, so it cannot pin a backend connection forever.
    write_timeout: Option<std::time::Duration>,
    /// The compressed protocol, once the login negotiated it.
    comp: Option<Box<Compressor>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketStream<S> {
    pub fn new(stream: S) -> Self {
        PacketStream {
            stream,
            // Small to start: an idle session costs ~8 KiB of buffers; both
            // grow on demand (and reading reserves in bounded steps).
            rbuf: BytesMut::with_capacity(4 * 1024),
            wbuf: BytesMut::with_capacity(4 * 1024),
            bytes_in: 0,
            bytes_out: 0,
            write_timeout: None,
            comp: None,
        }
    }

    /// Switches to the compressed protocol; called right after the login's
    /// OK (it is the last uncompressed packet either side sends). Bytes
    /// already read past it are compressed data.
    pub fn start_compression(&mut self, algo: Algorithm, role: Role) -> Result<(), FrameError> {
        let pending = std::mem::take(&mut self.rbuf);
        self.comp = Some(Box::new(Compressor::new(algo, role, pending)?));
        Ok(())
    }

    /// The compression algorithm in force, if any.
    pub fn compression(&self) -> Option<Algorithm> {
        self.comp.as_ref().map(|c| c.algorithm())
    }

    /// Bounds how long one flush may wait for the peer to read.
    pub fn set_write_timeout(&mut self, t: Option<std::time::Duration>) {
        self.write_timeout = t;
    }

    /// The underlying stream (for TLS upgrade or peer address).
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// Gives back the stream; buffered input must be empty (it is between
    /// handshake steps, where TLS upgrades happen).
    pub fn into_inner(self) -> (S, BytesMut) {
        (self.stream, self.rbuf)
    }

    /// Waits until at least one byte of the next packet is here (`Ok(false)`
    /// on a clean EOF). Cancel-safe: bytes read stay buffered.
    pub async fn wait_readable(&mut self) -> Result<bool, FrameError> {
        self.fill(1).await
    }

    /// Reads until at least `n` bytes are buffered. `Ok(false)` on a clean
    /// EOF with nothing buffered.
    async fn fill(&mut self, n: usize) -> Result<bool, FrameError> {
        if self.comp.is_some() {
            return self.fill_compressed(n).await;
        }
        while self.rbuf.len() < n {
            // Grow in bounded steps: `n` comes from a header the peer wrote,
            // so never reserve more than what the frame can hold (≤ 16 MiB),
            // and reserve lazily as bytes actually arrive.
            let want = (n - self.rbuf.len()).min(256 * 1024);
            self.rbuf.reserve(want.max(4 * 1024));
            let read = self.stream.read_buf(&mut self.rbuf).await?;
            if read == 0 {
                if self.rbuf.is_empty() {
                    return Ok(false);
                }
                return Err(FrameError::Truncated);
            }
            self.bytes_in += read as u64;
        }
        Ok(true)
    }

    /// [`PacketStream::fill`] under the compressed protocol: decodes whole
    /// compressed packets, one at a time and only while more plain bytes
    /// are needed (so that a client's pipelined commands keep their own
    /// sequence ids).
    async fn fill_compressed(&mut self, n: usize) -> Result<bool, FrameError> {
        let Some(comp) = self.comp.as_mut() else {
            return Ok(false);
        };
        while self.rbuf.len() < n {
            if comp.decode_one(&mut self.rbuf)? {
                continue;
            }
            let read = self.stream.read_buf(comp.raw_buf()).await?;
            if read == 0 {
                if self.rbuf.is_empty() && !comp.has_raw() {
                    return Ok(false);
                }
                return Err(FrameError::Truncated);
            }
            self.bytes_in += read as u64;
        }
        Ok(true)
    }

    /// Payload length from the buffered header; at least 4 bytes must be buffered.
    fn peek_len(&self) -> usize {
        usize::from(self.rbuf[0]) | usize::from(self.rbuf[1]) << 8 | usize::from(self.rbuf[2]) << 16
    }

    /// Reads one frame. `Err(Closed)` on a clean EOF between frames.
    pub async fn read_frame(&mut self) -> Result<Frame, FrameError> {
        if !self.fill(4).await? {
            return Err(FrameError::Closed);
        }
        let len = self.peek_len();
        if !self.fill(4 + len).await? {
            return Err(FrameError::Truncated);
        }
        Ok(Frame {
            bytes: self.rbuf.split_to(4 + len),
        })
    }

    /// The result-row fast path: the length in bytes, and the count, of the
    /// run of complete frames at the start of the buffer that are plain
    /// rows — single-frame packets (shorter than 16 MiB − 1) whose first
    /// byte is neither 0xFE (EOF/OK terminator) nor 0xFF (ERR). Stops
    /// before `max` bytes unless the first frame alone is longer. Nothing
    /// is consumed: see [`PacketStream::buffered`] and
    /// [`PacketStream::consume`].
    ///
    /// Forwarding such a run is one copy and no per-row await; rows are
    /// most of what a server sends (a 100-row range select is 100 frames).
    pub fn buffered_rows(&self, max: usize) -> (usize, u64) {
        let buf = &self.rbuf[..];
        let (mut at, mut rows) = (0usize, 0u64);
        while let Some(h) = buf.get(at..at + 5) {
            let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
            let end = at + 4 + len;
            if len == 0
                || len >= MAX_FRAME_PAYLOAD
                || h[4] == 0xfe
                || h[4] == 0xff
                || end > buf.len()
                || (end > max && rows > 0)
            {
                break;
            }
            at = end;
            rows += 1;
        }
        (at, rows)
    }

    /// The first `n` buffered bytes (`n` from [`PacketStream::buffered_rows`]).
    pub fn buffered(&self, n: usize) -> &[u8] {
        &self.rbuf[..n]
    }

    /// Drops the first `n` buffered bytes (already forwarded).
    pub fn consume(&mut self, n: usize) {
        self.rbuf.advance(n);
    }

    /// Whether a complete logical packet (one frame, not continued) is
    /// already buffered.
    pub fn has_buffered_packet(&self) -> bool {
        self.has_buffered_frame() && self.peek_len() < MAX_FRAME_PAYLOAD
    }

    /// Whether a complete frame is already buffered (no read needed).
    pub fn has_buffered_frame(&self) -> bool {
        self.rbuf.len() >= 4 && self.rbuf.len() >= 4 + self.peek_len()
    }

    /// Reads one logical packet, joining split frames, refusing to grow past
    /// `limit` bytes. When `expect_seq` is given the first frame must carry
    /// it; continuation frames must always follow in sequence.
    pub async fn read_packet(
        &mut self,
        limit: usize,
        expect_seq: Option<u8>,
    ) -> Result<Packet, FrameError> {
        if !self.fill(4).await? {
            return Err(FrameError::Closed);
        }
        let announced = self.peek_len();
        if announced > limit {
            return Err(FrameError::TooLarge {
                size: announced,
                limit,
            });
        }
        let first = self.read_frame().await?;
        let seq = first.seq();
        if let Some(expected) = expect_seq
            && expected != seq
        {
            return Err(FrameError::Sequence { expected, got: seq });
        }
        let mut continues = first.continues();
        let mut payload = first.bytes;
        payload.advance(4);
        if payload.len() > limit {
            return Err(FrameError::TooLarge {
                size: payload.len(),
                limit,
            });
        }
        let mut last_seq = seq;
        while continues {
            // Check the announced size before reading the body.
            if !self.fill(4).await? {
                return Err(FrameError::Truncated);
            }
            let len = self.peek_len();
            if payload.len() + len > limit {
                return Err(FrameError::TooLarge {
                    size: payload.len() + len,
                    limit,
                });
            }
            let next = self.read_frame().await?;
            let expected = last_seq.wrapping_add(1);
            if next.seq() != expected {
                return Err(FrameError::Sequence {
                    expected,
                    got: next.seq(),
                });
            }
            last_seq = expected;
            continues = next.continues();
            payload.extend_from_slice(next.payload());
        }
        Ok(Packet {
            seq,
            last_seq,
            payload,
        })
    }

    /// Queues a frame exactly as read from another stream.
    pub fn queue_raw(&mut self, raw: &[u8]) {
        self.wbuf.extend_from_slice(raw);
    }

    /// Queues a payload, splitting it into frames as the protocol requires;
    /// returns the sequence id of the last frame written.
    pub fn queue_payload(&mut self, mut seq: u8, payload: &[u8]) -> u8 {
        let mut rest = payload;
        loop {
            let chunk = rest.len().min(MAX_FRAME_PAYLOAD);
            let len = chunk as u32;
            self.wbuf
                .extend_from_slice(&[len as u8, (len >> 8) as u8, (len >> 16) as u8, seq]);
            self.wbuf.extend_from_slice(&rest[..chunk]);
            rest = &rest[chunk..];
            if chunk < MAX_FRAME_PAYLOAD {
                return seq;
            }
            seq = seq.wrapping_add(1);
        }
    }

    /// Writes out everything queued.
    pub async fn flush(&mut self) -> Result<(), FrameError> {
        if let Some(comp) = self.comp.as_mut() {
            if self.wbuf.is_empty() {
                return Ok(());
            }
            comp.encode(&self.wbuf)?;
            self.wbuf.clear();
            std::mem::swap(&mut self.wbuf, &mut comp.out);
            let r = self.write_out().await;
            if let Some(comp) = self.comp.as_mut() {
                std::mem::swap(&mut self.wbuf, &mut comp.out);
                comp.out.clear();
            }
            return r;
        }
        self.write_out().await
    }

    /// Writes `wbuf` to the stream, bounded by the write timeout.
    async fn write_out(&mut self) -> Result<(), FrameError> {
        if !self.wbuf.is_empty() {
            self.bytes_out += self.wbuf.len() as u64;
            match self.write_timeout {
                Some(t) => {
                    // One write attempt first: it usually takes everything,
                    // and then no timer is set up (that reads the clock).
                    let stream = &mut self.stream;
                    let buf = &self.wbuf[..];
                    let done = std::future::poll_fn(|cx| {
                        match std::pin::Pin::new(&mut *stream).poll_write(cx, buf) {
                            std::task::Poll::Pending => std::task::Poll::Ready(Ok(0)),
                            other => other,
                        }
                    })
                    .await?;
                    if done < self.wbuf.len() {
                        tokio::time::timeout(t, self.stream.write_all(&self.wbuf[done..]))
                            .await
                            .map_err(|_| {
                                std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "peer stopped reading",
                                )
                            })??
                    }
                }
                None => self.stream.write_all(&self.wbuf).await?,
            }
            self.wbuf.clear();
        }
        Ok(())
    }

    /// Flushes only when enough output is queued; used while streaming.
    pub async fn flush_if_full(&mut self) -> Result<(), FrameError> {
        if self.wbuf.len() >= FLUSH_THRESHOLD {
            self.flush().await?;
        }
        Ok(())
    }

    /// Adds `by` to the sequence id of the frame queued at offset `at`.
    pub fn shift_seq(&mut self, at: usize, by: u8) {
        if let Some(s) = self.wbuf.get_mut(at + 3) {
            *s = s.wrapping_add(by);
        }
    }

    /// Sets the sequence id of the frame queued at offset `at`.
    pub fn set_seq(&mut self, at: usize, seq: u8) {
        if let Some(s) = self.wbuf.get_mut(at + 3) {
            *s = seq;
        }
    }

    /// Drops queued output past the first `len` bytes (a response that
    /// failed before any of it was sent).
    pub fn truncate_queued(&mut self, len: usize) {
        self.wbuf.truncate(len);
    }

    /// Bytes waiting to be written.
    pub fn queued(&self) -> usize {
        self.wbuf.len()
    }

    /// Shuts the write side down (best effort).
    pub async fn shutdown(&mut self) {
        let _ = self.flush().await;
        let _ = self.stream.shutdown().await;
    }
}

/// One wire frame (header + payload), for tests that feed raw bytes.
#[cfg(test)]
pub(crate) fn test_frame(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    f.extend_from_slice(payload);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pair() -> (
        PacketStream<tokio::io::DuplexStream>,
        PacketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(1 << 20);
        (PacketStream::new(a), PacketStream::new(b))
    }

    async fn roundtrip(len: usize) -> Packet {
        let (mut a, mut b) = pair().await;
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let writer = tokio::spawn(async move {
            a.queue_payload(0, &data);
            a.flush().await.expect("flush");
            a
        });
        let p = b.read_packet(64 << 20, Some(0)).await.expect("read");
        let _ = writer.await;
        assert_eq!(p.payload.len(), len);
        assert!(
            p.payload
                .iter()
                .enumerate()
                .all(|(i, &v)| v == (i % 251) as u8)
        );
        p
    }

    /// A stream whose read buffer holds exactly `bytes`.
    async fn buffered_with(bytes: &[u8]) -> PacketStream<tokio::io::DuplexStream> {
        let (mut a, mut b) = pair().await;
        a.queue_raw(bytes);
        let writer = tokio::spawn(async move {
            a.flush().await.expect("flush");
            a
        });
        b.fill(bytes.len()).await.expect("fill");
        writer.await.expect("writer");
        b
    }

    use super::test_frame as frame;

    #[tokio::test]
    async fn row_runs_stop_at_terminators_errors_partial_and_continued_frames() {
        let rows = [
            frame(3, b"\x01a"),
            frame(4, b"\x02bc"),
            frame(5, b"\x00\x00x"),
        ]
        .concat();
        let eof = frame(6, &[0xfe, 0, 0, 2, 0]);
        let err = frame(6, &[0xff, 0x15, 0x04, b'#']);
        // Rows then the terminator: the rows only.
        let b = buffered_with(&[rows.clone(), eof.clone()].concat()).await;
        assert_eq!(b.buffered_rows(usize::MAX), (rows.len(), 3));
        assert_eq!(b.buffered(rows.len()), &rows[..]);
        // Rows then an ERR: the rows only.
        let b = buffered_with(&[rows.clone(), err].concat()).await;
        assert_eq!(b.buffered_rows(usize::MAX), (rows.len(), 3));
        // A terminator first: nothing.
        let b = buffered_with(&eof).await;
        assert_eq!(b.buffered_rows(usize::MAX), (0, 0));
        // A frame not yet complete ends the run.
        let partial = frame(6, b"\x05hello");
        let b = buffered_with(&[rows.clone(), partial[..6].to_vec()].concat()).await;
        assert_eq!(b.buffered_rows(usize::MAX), (rows.len(), 3));
        // An empty frame (the end of a continued packet) is not a row.
        let b = buffered_with(&[rows.clone(), frame(6, b"")].concat()).await;
        assert_eq!(b.buffered_rows(usize::MAX), (rows.len(), 3));
        // `max` bounds the run, but the first row always goes.
        let b = buffered_with(&rows).await;
        assert_eq!(b.buffered_rows(7), (6, 1));
        assert_eq!(b.buffered_rows(1), (6, 1));
        let mut b = buffered_with(&[rows.clone(), eof.clone()].concat()).await;
        b.consume(rows.len());
        assert_eq!(b.read_frame().await.expect("eof").raw(), &eof[..]);
    }

    #[tokio::test]
    async fn a_continued_row_is_left_to_the_frame_path() {
        // A 16 MiB - 1 frame continues in the next: never part of a run.
        let big = vec![0x01u8; MAX_FRAME_PAYLOAD];
        let b = buffered_with(&[frame(3, b"\x01a"), frame(4, &big)].concat()).await;
        assert_eq!(b.buffered_rows(usize::MAX), (6, 1));
    }

    #[tokio::test]
    async fn split_exactly_at_and_over_the_frame_limit() {
        // Exactly 16 MiB - 1 needs a trailing empty frame.
        let p = roundtrip(MAX_FRAME_PAYLOAD).await;
        assert_eq!((p.seq, p.last_seq), (0, 1));
        let p = roundtrip(MAX_FRAME_PAYLOAD - 1).await;
        assert_eq!((p.seq, p.last_seq), (0, 0));
        let p = roundtrip(MAX_FRAME_PAYLOAD + 1).await;
        assert_eq!((p.seq, p.last_seq), (0, 1));
        let p = roundtrip(2 * MAX_FRAME_PAYLOAD + 5).await;
        assert_eq!((p.seq, p.last_seq), (0, 2));
        let p = roundtrip(0).await;
        assert_eq!((p.seq, p.last_seq), (0, 0));
    }

    #[tokio::test]
    async fn limit_is_checked_before_buffering() {
        let (mut a, mut b) = pair().await;
        // Announce a 16 MiB frame but send only 3 bytes of it, then a
        // continuation header: the limit must trip without waiting for data.
        a.queue_raw(&[0xff, 0xff, 0xff, 0, 1, 2, 3]);
        a.flush().await.expect("flush");
        drop(a);
        let e = b.read_packet(1024, Some(0)).await.unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { .. }), "{e:?}");
    }

    #[tokio::test]
    async fn too_large_and_wrong_sequence() {
        let (mut a, mut b) = pair().await;
        a.queue_payload(0, &[7u8; 2000]);
        a.flush().await.expect("flush");
        let e = b.read_packet(1000, Some(0)).await.unwrap_err();
        assert!(matches!(e, FrameError::TooLarge { .. }), "{e:?}");
        // (After TooLarge the stream is abandoned; use a fresh pair.)
        let (mut a, mut b) = pair().await;
        a.queue_payload(5, b"x");
        a.flush().await.expect("flush");
        let e = b.read_packet(1000, Some(0)).await.unwrap_err();
        assert!(
            matches!(
                e,
                FrameError::Sequence {
                    expected: 0,
                    got: 5
                }
            ),
            "{e:?}"
        );
    }

    #[tokio::test]
    async fn clean_close_and_truncation() {
        let (a, mut b) = pair().await;
        drop(a);
        assert!(matches!(b.read_frame().await, Err(FrameError::Closed)));
        let (mut a, mut b) = pair().await;
        a.queue_raw(&[10, 0, 0, 0, 1, 2]);
        a.flush().await.expect("flush");
        drop(a);
        assert!(matches!(b.read_frame().await, Err(FrameError::Truncated)));
    }
}
