//! The compressed protocol (`CLIENT_COMPRESS` = zlib,
//! `CLIENT_ZSTD_COMPRESSION_ALGORITHM` = zstd): a layer under the packet
//! stream that turns compressed packets (7-byte header: compressed length,
//! compressed sequence id, uncompressed length) into the plain byte stream
//! the packet layer reads, and the plain frames it writes into compressed
//! packets. Each leg of a session (client ↔ rwproxy, rwproxy ↔ server)
//! negotiates it on its own, so the layer sits in [`super::packet::PacketStream`],
//! switched on after the login's OK.
//!
//! Written by hand rather than with `mysql_common`'s `PacketCodec`: that
//! codec joins split packets and renumbers on write (see `packet.rs`), and
//! has no zstd; the compression itself is flate2's and zstd's.
//!
//! Two sequence numbers matter here:
//! - the *compressed* sequence id is checked by the peer. It is reset with
//!   each new command and otherwise continues from the last compressed
//!   packet either side sent, exactly like the plain one.
//! - servers (and libmysqlclient) resync the *plain* sequence id to the
//!   compressed one after every flush, so the plain frames inside
//!   compressed packets are not numbered continuously. Peers ignore them in
//!   compressed mode, but rwproxy forwards frames between a compressed and
//!   an uncompressed leg and checks them, so on reading this layer
//!   renumbers them as an uncompressed peer would have: continuing from the
//!   last frame written, or from 0 when the peer starts a new command.

use bytes::{Buf, BufMut, BytesMut};

use super::packet::{FrameError, MAX_FRAME_PAYLOAD};

/// Payloads shorter than this are sent uncompressed (MySQL's
/// `MIN_COMPRESS_LENGTH`): compressing them costs more than it saves.
const MIN_COMPRESS_LENGTH: usize = 50;

/// Header of a compressed packet.
const HEADER: usize = 7;

/// zlib level used for `CLIENT_COMPRESS`, as the servers use (zlib's default).
const ZLIB_LEVEL: u32 = 6;

/// The zstd level when a peer names none (MySQL's default).
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;

/// A compression algorithm and its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Zlib,
    Zstd { level: i32 },
}

impl Algorithm {
    /// The name operators and `SHOW SESSIONS` use.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Zlib => "zlib",
            Algorithm::Zstd { .. } => "zstd",
        }
    }
}

/// Which end of the connection rwproxy is: it decides how a new command is
/// recognized (a server learns it from the compressed sequence id reset to
/// 0; a client starts one whenever it writes a frame with plain id 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// rwproxy serves a client.
    Server,
    /// rwproxy is a server's client.
    Client,
}

/// The per-connection state of the compressed protocol.
pub struct Compressor {
    algo: Algorithm,
    role: Role,
    /// Compressed bytes read from the wire, not yet a whole packet.
    raw: BytesMut,
    /// Compressed output waiting to be written.
    pub(super) out: BytesMut,
    /// The next compressed sequence id to send (and, within the peer's
    /// turn, to expect).
    seq: u8,
    /// Whether rwproxy wrote last (the next packet read starts the peer's turn).
    wrote_last: bool,
    /// Plain sequence id of the last frame written.
    wr_last: u8,
    /// Plain sequence id the next frame read is given.
    rd_next: u8,
    /// Payload bytes of the current plain frame still to come.
    rd_skip: usize,
    /// Bytes of an incomplete plain frame header at the end of the buffer.
    rd_hdr: usize,
    zstd_c: Option<zstd::bulk::Compressor<'static>>,
    zstd_d: Option<zstd::bulk::Decompressor<'static>>,
}

fn u24(b: &[u8]) -> usize {
    usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16
}

fn corrupt(what: &str) -> FrameError {
    FrameError::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("compressed packet: {what}"),
    ))
}

impl Compressor {
    /// Compression state for a connection whose login just completed;
    /// `pending` is whatever the packet layer had already read past the
    /// login's last packet (already compressed data).
    pub fn new(algo: Algorithm, role: Role, pending: BytesMut) -> Result<Self, FrameError> {
        let (zstd_c, zstd_d) = match algo {
            Algorithm::Zlib => (None, None),
            Algorithm::Zstd { level } => (
                Some(zstd::bulk::Compressor::new(level).map_err(FrameError::Io)?),
                Some(zstd::bulk::Decompressor::new().map_err(FrameError::Io)?),
            ),
        };
        Ok(Compressor {
            algo,
            role,
            raw: pending,
            out: BytesMut::new(),
            seq: 0,
            // A server's first read is the client's first command.
            wrote_last: role == Role::Server,
            wr_last: 0,
            rd_next: 0,
            rd_skip: 0,
            rd_hdr: 0,
            zstd_c,
            zstd_d,
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algo
    }

    /// Room to read more compressed bytes into, bounded per step (the
    /// announced length comes from the peer).
    pub(super) fn raw_buf(&mut self) -> &mut BytesMut {
        let want = match self.raw.get(..3) {
            Some(h) if self.raw.len() >= HEADER => (HEADER + u24(h)).saturating_sub(self.raw.len()),
            _ => HEADER,
        };
        self.raw.reserve(want.clamp(4 * 1024, 256 * 1024));
        &mut self.raw
    }

    /// Whether compressed bytes are buffered that have not been decoded.
    pub(super) fn has_raw(&self) -> bool {
        !self.raw.is_empty()
    }

    /// Decodes one whole compressed packet, if buffered, appending its plain
    /// bytes to `plain`. `Ok(false)`: more compressed bytes are needed.
    pub(super) fn decode_one(&mut self, plain: &mut BytesMut) -> Result<bool, FrameError> {
        if self.raw.len() < HEADER {
            return Ok(false);
        }
        let clen = u24(&self.raw[..3]);
        let seq = self.raw[3];
        let ulen = u24(&self.raw[4..7]);
        if self.raw.len() < HEADER + clen {
            return Ok(false);
        }
        self.start_peer_packet(seq)?;
        let start = plain.len();
        let body = &self.raw[HEADER..HEADER + clen];
        if ulen == 0 {
            plain.extend_from_slice(body);
        } else {
            // `ulen` is at most 16 MiB − 1 (3 bytes): the output is bounded
            // by what the header announces, and must be exactly that.
            plain.resize(start + ulen, 0);
            let out = &mut plain[start..];
            let got = match self.algo {
                Algorithm::Zlib => {
                    let mut d = flate2::Decompress::new(true);
                    let status = d
                        .decompress(body, out, flate2::FlushDecompress::Finish)
                        .map_err(|e| corrupt(&e.to_string()))?;
                    if status != flate2::Status::StreamEnd {
                        return Err(corrupt("zlib stream longer than announced"));
                    }
                    d.total_out() as usize
                }
                Algorithm::Zstd { .. } => {
                    let d = self
                        .zstd_d
                        .as_mut()
                        .ok_or_else(|| corrupt("no zstd context"))?;
                    d.decompress_to_buffer(body, out)
                        .map_err(|e| corrupt(&e.to_string()))?
                }
            };
            if got != ulen {
                return Err(corrupt("uncompressed length differs from its header"));
            }
        }
        self.raw.advance(HEADER + clen);
        self.renumber(plain, start);
        Ok(true)
    }

    /// Checks and advances the compressed sequence id of a packet read,
    /// and decides where the plain numbering of the peer's turn starts.
    fn start_peer_packet(&mut self, seq: u8) -> Result<(), FrameError> {
        let new_command = self.role == Role::Server && seq == 0;
        if new_command {
            // A client may pipeline commands: each starts at 0.
            self.rd_next = 0;
        } else if self.wrote_last {
            // The peer answers what rwproxy wrote: a server may resync its
            // compressed id, so take it; plain ids continue rwproxy's.
            if self.role == Role::Server && seq != self.seq {
                return Err(FrameError::Sequence {
                    expected: self.seq,
                    got: seq,
                });
            }
            self.rd_next = self.wr_last.wrapping_add(1);
        } else if seq != self.seq && self.role == Role::Server {
            return Err(FrameError::Sequence {
                expected: self.seq,
                got: seq,
            });
        }
        self.wrote_last = false;
        self.seq = seq.wrapping_add(1);
        Ok(())
    }

    /// Renumbers the plain frames whose headers lie in `plain[start..]`
    /// (and one left incomplete at the end of the previous packet).
    fn renumber(&mut self, plain: &mut BytesMut, start: usize) {
        let end = plain.len();
        // The incomplete header stays buffered: nothing consumes part of a frame.
        let mut pos = start.saturating_sub(self.rd_hdr);
        self.rd_hdr = 0;
        let skip = self.rd_skip.min(end - pos);
        pos += skip;
        self.rd_skip -= skip;
        while pos < end {
            if end - pos < 4 {
                self.rd_hdr = end - pos;
                break;
            }
            let len = u24(&plain[pos..]);
            plain[pos + 3] = self.rd_next;
            self.rd_next = self.rd_next.wrapping_add(1);
            pos += 4;
            let skip = len.min(end - pos);
            pos += skip;
            self.rd_skip = len - skip;
        }
    }

    /// Compresses whole plain frames into `self.out`. As a client, each
    /// new command (a frame with plain id 0 that does not continue a
    /// wrapped sequence) starts its own compressed packet with id 0, as
    /// libmysqlclient's one flush per command does.
    pub(super) fn encode(&mut self, plain: &[u8]) -> Result<(), FrameError> {
        let mut chunk_start = 0;
        let mut pos = 0;
        while pos + 4 <= plain.len() {
            let seq = plain[pos + 3];
            if self.role == Role::Client && seq == 0 && !(self.wrote_last && self.wr_last == 255) {
                self.emit(&plain[chunk_start..pos])?;
                chunk_start = pos;
                self.seq = 0;
            }
            self.wrote_last = true;
            self.wr_last = seq;
            pos += 4 + u24(&plain[pos..]);
        }
        self.emit(&plain[chunk_start..])?;
        Ok(())
    }

    /// Writes `data` as compressed packets (each at most 16 MiB − 1 of
    /// uncompressed data).
    fn emit(&mut self, data: &[u8]) -> Result<(), FrameError> {
        for chunk in data.chunks(MAX_FRAME_PAYLOAD) {
            let at = self.out.len();
            self.out.reserve(HEADER + chunk.len() + 64);
            self.out.put_slice(&[0u8; HEADER]);
            let mut compressed = false;
            if chunk.len() >= MIN_COMPRESS_LENGTH {
                let body_at = self.out.len();
                match self.algo {
                    Algorithm::Zlib => {
                        let mut c =
                            flate2::Compress::new(flate2::Compression::new(ZLIB_LEVEL), true);
                        let mut out = Vec::with_capacity(chunk.len() / 2 + 64);
                        loop {
                            let status = c
                                .compress_vec(
                                    &chunk[c.total_in() as usize..],
                                    &mut out,
                                    flate2::FlushCompress::Finish,
                                )
                                .map_err(|e| corrupt(&e.to_string()))?;
                            if status == flate2::Status::StreamEnd {
                                break;
                            }
                            out.reserve(out.capacity().max(1024));
                        }
                        self.out.put_slice(&out);
                    }
                    Algorithm::Zstd { .. } => {
                        let c = self
                            .zstd_c
                            .as_mut()
                            .ok_or_else(|| corrupt("no zstd context"))?;
                        let out = c.compress(chunk).map_err(FrameError::Io)?;
                        self.out.put_slice(&out);
                    }
                }
                let clen = self.out.len() - body_at;
                // Worth it only if it saves something (as the servers decide).
                if clen < chunk.len() {
                    compressed = true;
                } else {
                    self.out.truncate(body_at);
                }
            }
            let (clen, ulen) = if compressed {
                (self.out.len() - at - HEADER, chunk.len())
            } else {
                self.out.put_slice(chunk);
                (chunk.len(), 0)
            };
            self.out[at..at + HEADER].copy_from_slice(&[
                clen as u8,
                (clen >> 8) as u8,
                (clen >> 16) as u8,
                self.seq,
                ulen as u8,
                (ulen >> 8) as u8,
                (ulen >> 16) as u8,
            ]);
            self.seq = self.seq.wrapping_add(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::packet::test_frame;

    fn algos() -> [Algorithm; 2] {
        [Algorithm::Zlib, Algorithm::Zstd { level: 3 }]
    }

    /// Writes `frames` as `from` and reads them back as the other end.
    fn roundtrip(algo: Algorithm, from: Role, frames: &[u8]) -> (BytesMut, Vec<u8>) {
        let mut w = Compressor::new(algo, from, BytesMut::new()).unwrap();
        w.encode(frames).unwrap();
        let wire = w.out.to_vec();
        let to = if from == Role::Client {
            Role::Server
        } else {
            Role::Client
        };
        let mut r = Compressor::new(algo, to, BytesMut::new()).unwrap();
        if to == Role::Client {
            // A client reads only after writing its command (plain id 0).
            r.encode(&test_frame(0, b"\x03select 1")).unwrap();
        }
        r.raw.extend_from_slice(&wire);
        let mut plain = BytesMut::new();
        while r.decode_one(&mut plain).unwrap() {}
        assert!(r.raw.is_empty());
        (plain, wire)
    }

    #[test]
    fn commands_and_results_survive_both_algorithms() {
        for algo in algos() {
            let mut cmd = test_frame(0, b"\x03");
            cmd.extend(vec![b'a'; 5000]);
            cmd[0..3].copy_from_slice(&[0x89, 0x13, 0]);
            let (plain, wire) = roundtrip(algo, Role::Client, &cmd);
            assert_eq!(&plain[..], &cmd[..]);
            assert!(wire.len() < 200, "{algo:?}: {} bytes", wire.len());
            assert_eq!(wire[3], 0, "a command starts at compressed id 0");
        }
    }

    #[test]
    fn short_payloads_go_uncompressed() {
        let cmd = test_frame(0, b"\x0e");
        let (plain, wire) = roundtrip(Algorithm::Zlib, Role::Client, &cmd);
        assert_eq!(&plain[..], &cmd[..]);
        assert_eq!(&wire[4..7], &[0, 0, 0], "uncompressed length 0 = stored");
        assert_eq!(&wire[7..], &cmd[..]);
    }

    #[test]
    fn a_payload_over_16_mib_is_split_and_rejoined() {
        for algo in algos() {
            let mut frames = Vec::new();
            let big = vec![7u8; MAX_FRAME_PAYLOAD];
            frames.extend(test_frame(1, &big));
            frames.extend(test_frame(2, &[9u8; 1000]));
            let (plain, wire) = roundtrip(algo, Role::Server, &frames);
            assert_eq!(plain.len(), frames.len());
            assert!(plain[..] == frames[..]);
            // Two compressed packets (16 MiB − 1 of plain data at most each).
            let first = u24(&wire) + HEADER;
            assert_eq!(wire[first + 3], wire[3].wrapping_add(1));
        }
    }

    #[test]
    fn plain_ids_are_renumbered_as_an_uncompressed_peer_sends_them() {
        // A server resyncs plain ids to compressed ones after a flush: the
        // reader sees 1, 2, then 2, 3 again; rwproxy must see 1, 2, 3, 4.
        let mut srv = Compressor::new(Algorithm::Zlib, Role::Server, BytesMut::new()).unwrap();
        let mut cli = Compressor::new(Algorithm::Zlib, Role::Client, BytesMut::new()).unwrap();
        cli.encode(&test_frame(0, b"\x03select a")).unwrap();
        srv.raw.extend_from_slice(&cli.out);
        let mut cmd = BytesMut::new();
        assert!(srv.decode_one(&mut cmd).unwrap());
        let mut a = test_frame(1, b"\x01");
        a.extend(test_frame(2, &[b'x'; 60]));
        srv.encode(&a).unwrap();
        let mut b = test_frame(2, &[b'y'; 70]);
        b.extend(test_frame(3, b"\xfe\x00\x00\x02\x00"));
        srv.encode(&b).unwrap();
        cli.raw.extend_from_slice(&srv.out);
        let mut plain = BytesMut::new();
        while cli.decode_one(&mut plain).unwrap() {}
        let mut ids = Vec::new();
        let mut pos = 0;
        while pos < plain.len() {
            ids.push(plain[pos + 3]);
            pos += 4 + u24(&plain[pos..]);
        }
        assert_eq!(ids, vec![1, 2, 3, 4]);
    }

    #[test]
    fn a_frame_header_split_across_compressed_packets_is_renumbered() {
        let mut r = Compressor::new(Algorithm::Zlib, Role::Server, BytesMut::new()).unwrap();
        // Command frame with id 5 (wrong on purpose) split after 2 bytes.
        let f = test_frame(5, b"\x03select 1");
        let mut wire = vec![2, 0, 0, 0, 0, 0, 0];
        wire.extend(&f[..2]);
        let rest = &f[2..];
        wire.extend([rest.len() as u8, 0, 0, 1, 0, 0, 0]);
        wire.extend(rest);
        r.raw.extend_from_slice(&wire);
        let mut plain = BytesMut::new();
        assert!(r.decode_one(&mut plain).unwrap());
        assert!(r.decode_one(&mut plain).unwrap());
        assert_eq!(plain[3], 0, "a new command's first frame is id 0");
        assert_eq!(&plain[4..], b"\x03select 1");
    }

    #[test]
    fn each_client_command_restarts_the_compressed_ids() {
        let mut c =
            Compressor::new(Algorithm::Zstd { level: 1 }, Role::Client, BytesMut::new()).unwrap();
        // COM_STMT_CLOSE (no answer) then COM_QUERY in one flush.
        let mut two = test_frame(0, b"\x19\x01\x00\x00\x00");
        two.extend(test_frame(0, b"\x03select 1"));
        c.encode(&two).unwrap();
        let first = u24(&c.out) + HEADER;
        assert_eq!(c.out[3], 0);
        assert_eq!(c.out[first + 3], 0);
    }

    #[test]
    fn garbage_and_lying_headers_are_errors_not_panics() {
        for algo in algos() {
            // Claims 100 bytes uncompressed, carries junk.
            let mut r = Compressor::new(algo, Role::Server, BytesMut::new()).unwrap();
            r.raw
                .extend_from_slice(&[5, 0, 0, 0, 100, 0, 0, 1, 2, 3, 4, 5]);
            assert!(r.decode_one(&mut BytesMut::new()).is_err());
            // Real data whose header understates its uncompressed size.
            let mut w = Compressor::new(algo, Role::Client, BytesMut::new()).unwrap();
            w.encode(&test_frame(0, &[b'z'; 4000])).unwrap();
            let mut wire = w.out.to_vec();
            wire[4] = 10;
            wire[5] = 0;
            let mut r = Compressor::new(algo, Role::Server, BytesMut::new()).unwrap();
            r.raw.extend_from_slice(&wire);
            assert!(r.decode_one(&mut BytesMut::new()).is_err());
        }
        // Out of order: the server expects id 0 or the next id.
        let mut r = Compressor::new(Algorithm::Zlib, Role::Server, BytesMut::new()).unwrap();
        r.raw.extend_from_slice(&[1, 0, 0, 7, 0, 0, 0, 0x0e]);
        assert!(matches!(
            r.decode_one(&mut BytesMut::new()),
            Err(FrameError::Sequence { .. })
        ));
    }
}
