//! Forwarding a server's response to a client, frame by frame.
//!
//! Only the headers are read: the first byte of each logical packet (OK,
//! ERR, EOF, LOCAL INFILE request or column count) and the status flags of
//! terminators, to know where a response ends and what it changed. Rows are
//! never decoded and never buffered beyond the output buffer's flush
//! threshold, so a result of any size streams in bounded memory.

use mysql_common::constants::{CapabilityFlags, StatusFlags};
use mysql_common::io::ParseBuf;
use mysql_common::packets::session_state_change::SessionStateChange;
use mysql_common::packets::{
    CommonOkPacket, OkPacket, OkPacketDeserializer, OldEofPacket, ResultSetTerminator,
};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use super::get_lenenc_int;
use super::packet::{Frame, FrameError, MAX_FRAME_PAYLOAD, PacketStream};

/// Output queued for the client is sent once it reaches this size (and at
/// the end of each response).
const FLUSH_AT: usize = 64 * 1024;

/// The shape of response a command produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY: OK / ERR / LOCAL INFILE / text result sets, possibly several.
    Query,
    /// COM_STMT_EXECUTE: OK / ERR / binary result sets; may open a cursor.
    Execute,
    /// COM_STMT_FETCH: rows then a terminator, or ERR.
    Fetch,
    /// COM_FIELD_LIST: column definitions then a terminator, or ERR.
    FieldList,
    /// A single OK / ERR / EOF packet (PING, INIT_DB, RESET…).
    Simple,
    /// COM_STATISTICS: one packet of plain text.
    Statistics,
}

/// What rwproxy learned from a response it forwarded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Status flags of the last OK/EOF (the truth about transactions).
    pub status: Option<StatusFlags>,
    /// Error code if the response (or its last result) was an ERR.
    pub error: Option<u16>,
    /// Rows forwarded (all result sets).
    pub rows: u64,
    /// Affected rows of the last OK.
    pub affected_rows: u64,
    /// Schema announced by session tracking (`USE` inside a statement).
    pub schema: Option<String>,
    /// GTID announced by session tracking.
    pub gtid: Option<String>,
    /// The last ERR in full (code, state, message).
    pub err: Option<super::ClientError>,
    /// Warnings the last OK/EOF reported (`SHOW WARNINGS` would list them).
    pub warnings: u16,
    /// An execution's result columns, when the server sent them (metadata
    /// cache: the server and the client now both hold these). Shares the
    /// client's copy when the content is the same.
    pub columns_sent: Option<Arc<[u8]>>,
    /// The server skipped columns the client does not hold: rwproxy sent
    /// the server's (`MetaCache::server_sent`) in their place, so the client
    /// now holds those.
    pub columns_injected: bool,
    /// The ERR in `err` was not forwarded: a read-only transaction's COMMIT
    /// that the replica refused (see [`forward_read_only_tx`]).
    pub held_back: bool,
}

/// MariaDB's metadata cache (`MARIADB_CLIENT_CACHE_METADATA`) on one
/// response. With it, a column count packet carries a "metadata follows"
/// byte, and a server skips an execution's column definitions while they
/// are the same as the ones it last sent *for that statement on that
/// connection*. A client's statement runs on several connections (replicas,
/// re-prepares), so what the client holds and what a server last sent can
/// differ (DDL seen by one server first): rwproxy tracks both, as raw
/// column-definition frames, and when a server skips columns the client
/// does not hold, it sends the server's own in their place.
#[derive(Debug, Default, Clone, Copy)]
pub struct MetaCache<'a> {
    /// The server's column count packets carry the flag byte.
    pub server: bool,
    /// The client's must.
    pub client: bool,
    /// For an execution: the column definitions the client holds for the
    /// statement (`None`: unknown or none).
    pub client_holds: Option<&'a Arc<[u8]>>,
    /// For an execution: those the server last sent for its statement.
    pub server_sent: Option<&'a Arc<[u8]>>,
}

impl MetaCache<'_> {
    /// No metadata cache on either side.
    pub const OFF: MetaCache<'static> = MetaCache {
        server: false,
        client: false,
        client_holds: None,
        server_sent: None,
    };
}

/// Session-state information a server reports in OK packets that the
/// client did not ask for and must not see: rwproxy's own read-your-writes
/// tracking on a backend connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hide {
    /// Forward OK packets as they are.
    Nothing,
    /// MariaDB: the tracked system variable `last_gtid`.
    LastGtid,
    /// MySQL: the GTIDs entry (`session_track_gtids = OWN_GTID`).
    Gtids,
}

impl Hide {
    /// What rwproxy's own tracking on a server of `flavor` adds.
    pub fn tracking_of(flavor: crate::dialect::Flavor) -> Hide {
        match flavor {
            crate::dialect::Flavor::MariaDb => Hide::LastGtid,
            crate::dialect::Flavor::MySql => Hide::Gtids,
        }
    }

    /// Whether an entry (type, data) of the session-state information is
    /// to be removed.
    fn drops(self, kind: u8, data: &[u8]) -> bool {
        /// Entry types (`enum_session_state_type`).
        const SYSTEM_VARIABLES: u8 = 0;
        const GTIDS: u8 = 3;
        match self {
            Hide::Nothing => false,
            Hide::Gtids => kind == GTIDS,
            Hide::LastGtid => {
                kind == SYSTEM_VARIABLES
                    && get_lenenc_int(data).is_some_and(|(n, k)| {
                        usize::try_from(n)
                            .ok()
                            .and_then(|n| data.get(k..k.checked_add(n)?))
                            == Some(b"last_gtid".as_slice())
                    })
            }
        }
    }
}

/// Removes the session-state entries `hide` names from an OK payload
/// (header `0x00`, or `0xFE` for a terminator with `CLIENT_DEPRECATE_EOF`)
/// in place; returns the new payload length, or `None` when nothing was
/// removed (then not a byte changed). When no entry remains, the
/// `SERVER_SESSION_STATE_CHANGED` flag is cleared and the block dropped
/// (and an empty info string with it), as the server writes an OK that
/// changed nothing the client tracks.
/// Never allocates. A payload it cannot walk is left alone.
fn strip_session_state(p: &mut [u8], hide: Hide) -> Option<usize> {
    let flag = StatusFlags::SERVER_SESSION_STATE_CHANGED.bits();
    let mut i = 1;
    for _ in 0..2 {
        i += get_lenenc_int(p.get(i..)?)?.1;
    }
    let status_at = i;
    let status = u16::from_le_bytes([*p.get(i)?, *p.get(i + 1)?]);
    if status & flag == 0 {
        return None;
    }
    i += 4;
    let (info, k) = get_lenenc_int(p.get(i..)?)?;
    i = i.checked_add(k)?.checked_add(usize::try_from(info).ok()?)?;
    let block = i;
    let (total, k) = get_lenenc_int(p.get(i..)?)?;
    let entries = block + k;
    let end = entries.checked_add(usize::try_from(total).ok()?)?;
    if end > p.len() {
        return None;
    }
    // First pass: is anything to drop, and is every entry well formed?
    let (mut j, mut any) = (entries, false);
    while j < end {
        let kind = p[j];
        let (n, k) = get_lenenc_int(p.get(j + 1..end)?)?;
        let data_at = j + 1 + k;
        let next = data_at.checked_add(usize::try_from(n).ok()?)?;
        any |= hide.drops(kind, p.get(data_at..next.min(end))?);
        if next > end {
            return None;
        }
        j = next;
    }
    if !any {
        return None;
    }
    // Second pass: move the kept entries down, in order.
    let (mut j, mut w) = (entries, entries);
    while j < end {
        let kind = p[j];
        let (n, k) = get_lenenc_int(&p[j + 1..end])?;
        let data_at = j + 1 + k;
        let next = data_at + n as usize;
        if !hide.drops(kind, &p[data_at..next]) {
            p.copy_within(j..next, w);
            w += next - j;
        }
        j = next;
    }
    let kept = w - entries;
    if kept == 0 {
        let cleared = status & !flag;
        p[status_at..status_at + 2].copy_from_slice(&cleared.to_le_bytes());
        // The server writes the info string only when it is not empty or
        // session state follows.
        return Some(if info == 0 { status_at + 4 } else { block });
    }
    // The new length fits in no more bytes than the old one.
    let mut head = [0u8; 9];
    let hk = lenenc_into(&mut head, kept as u64);
    p.copy_within(entries..entries + kept, block + hk);
    p[block..block + hk].copy_from_slice(&head[..hk]);
    Some(block + hk + kept)
}

/// Writes `v` as a length-encoded integer into `buf`; returns its length.
fn lenenc_into(buf: &mut [u8; 9], v: u64) -> usize {
    if v < 251 {
        buf[0] = v as u8;
        1
    } else if v < 1 << 16 {
        buf[0] = 0xfc;
        buf[1..3].copy_from_slice(&(v as u16).to_le_bytes());
        3
    } else if v < 1 << 24 {
        buf[0] = 0xfd;
        buf[1..4].copy_from_slice(&(v as u32).to_le_bytes()[..3]);
        4
    } else {
        buf[0] = 0xfe;
        buf[1..9].copy_from_slice(&v.to_le_bytes());
        9
    }
}

/// Whether two sets of column definitions are the same.
/// MySQL's `SESSION_TRACK_GTIDS` data (`session_track_gtids = OWN_GTID`):
/// an encoding specification byte (0: the GTID set as text) and then the
/// set as a length-encoded string. mysql_common hands the data over raw
/// (spec byte included). None for another encoding or a malformed length,
/// so that read-your-writes falls back to asking the server.
fn mysql_tracked_gtids(data: &[u8]) -> Option<String> {
    let (&spec, rest) = data.split_first()?;
    if spec != 0 {
        return None;
    }
    let (len, n) = get_lenenc_int(rest)?;
    let text = rest.get(n..n.checked_add(usize::try_from(len).ok()?)?)?;
    Some(String::from_utf8_lossy(text).into_owned())
}

fn same_columns(a: Option<&Arc<[u8]>>, b: Option<&Arc<[u8]>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a[..] == b[..],
        (None, None) => true,
        _ => false,
    }
}

/// Why forwarding stopped.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The server failed. `started` tells whether some of its answer was
    /// already written to the client (then the statement cannot be retried).
    #[error("backend failed: {source}")]
    Backend {
        #[source]
        source: FrameError,
        started: bool,
    },
    /// The server sent something that is not a valid response.
    #[error("malformed response from backend: {0}")]
    Malformed(&'static str),
    /// The client failed or went away.
    #[error("client failed: {0}")]
    Client(#[source] FrameError),
}

impl ForwardError {
    /// The command could not be sent: nothing reached the client.
    pub fn unsent(source: FrameError) -> ForwardError {
        ForwardError::Backend {
            source,
            started: false,
        }
    }
}

/// Reads a server response to the command just sent and forwards it to
/// `client`. With `client = None` the response is consumed silently (for
/// statements rwproxy sends on its own, like state replay).
pub async fn forward<B, C>(
    backend: &mut PacketStream<B>,
    client: Option<&mut PacketStream<C>>,
    expect: Expect,
    caps: CapabilityFlags,
    meta: MetaCache<'_>,
) -> Result<Summary, ForwardError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    forward_with(
        backend,
        client,
        expect,
        caps,
        meta,
        ReadOnlyTx::No,
        Hide::Nothing,
    )
    .await
}

/// [`forward`] for a client's command on a connection where rwproxy
/// tracks session state of its own: OK packets lose the entries `hide`
/// names (the summary still reports them).
pub async fn forward_hiding<B, C>(
    backend: &mut PacketStream<B>,
    client: Option<&mut PacketStream<C>>,
    expect: Expect,
    caps: CapabilityFlags,
    meta: MetaCache<'_>,
    hide: Hide,
) -> Result<Summary, ForwardError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    forward_with(backend, client, expect, caps, meta, ReadOnlyTx::No, hide).await
}

/// [`forward`], for a statement inside a read-only transaction that runs
/// on a replica: the replica refuses a write with ERR 1290 (`--read-only`)
/// where the primary, in the same transaction, answers ERR 1792 (25006,
/// "Cannot execute statement in a READ ONLY transaction"); the client gets
/// the latter, as it would directly. Every other byte is the server's.
///
/// `commit`: the statement is the transaction's COMMIT. MariaDB 10.11
/// refuses that with ERR 1290 on a `read_only` server after `WITH
/// CONSISTENT SNAPSHOT` and a `SAVEPOINT` (the primary commits it); such an
/// ERR is not forwarded but `held_back` in the summary, so the caller can
/// end the transaction with a ROLLBACK instead, which in a transaction
/// that cannot have written anything has the same effect.
pub async fn forward_read_only_tx<B, C>(
    backend: &mut PacketStream<B>,
    client: Option<&mut PacketStream<C>>,
    expect: Expect,
    caps: CapabilityFlags,
    meta: MetaCache<'_>,
    commit: bool,
) -> Result<Summary, ForwardError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mode = if commit {
        ReadOnlyTx::Commit
    } else {
        ReadOnlyTx::Statement
    };
    forward_with(backend, client, expect, caps, meta, mode, Hide::Nothing).await
}

/// Whether (and how) the statement forwarded runs inside a read-only
/// transaction on a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadOnlyTx {
    No,
    Statement,
    Commit,
}

async fn forward_with<B, C>(
    backend: &mut PacketStream<B>,
    mut client: Option<&mut PacketStream<C>>,
    expect: Expect,
    caps: CapabilityFlags,
    meta: MetaCache<'_>,
    read_only_tx: ReadOnlyTx,
    hide: Hide,
) -> Result<Summary, ForwardError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut fw = Forwarder::new(caps, read_only_tx);
    fw.hide = hide;
    let deprecate_eof = caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let mark = client.as_ref().map_or(0, |c| c.queued());
    let r = fw
        .run(backend, &mut client, expect, deprecate_eof, meta)
        .await;
    match r {
        Ok(()) => {
            if let Some(c) = client {
                c.flush().await.map_err(ForwardError::Client)?;
            }
            Ok(fw.summary)
        }
        Err(e) => {
            unqueue(&mut client, mark, &e);
            Err(e)
        }
    }
}

/// A response that failed before any of it left for the client must not
/// leave part of it queued either: the caller then retries the statement
/// on another server or answers with an ERR, and the client must see only
/// that. (Rows are queued without flushing until 64 KiB, so a server dying
/// mid-result would otherwise leave a half result in front of the retry.)
fn unqueue<C: AsyncRead + AsyncWrite + Unpin>(
    client: &mut Option<&mut PacketStream<C>>,
    mark: usize,
    e: &ForwardError,
) {
    if let (Some(c), ForwardError::Backend { started: false, .. }) = (client, e) {
        c.truncate_queued(mark);
    }
}

struct Forwarder {
    caps: CapabilityFlags,
    summary: Summary,
    /// Whether output has already left for the client.
    flushed: bool,
    /// Added to the sequence id of every frame forwarded (after rwproxy
    /// inserted column definitions of its own into the response).
    shift: u8,
    /// The statement runs inside a read-only transaction on a replica (see
    /// [`forward_read_only_tx`]).
    read_only_tx: ReadOnlyTx,
    /// Session-state entries OK packets lose on their way to the client.
    hide: Hide,
}

impl Forwarder {
    fn new(caps: CapabilityFlags, read_only_tx: ReadOnlyTx) -> Self {
        Forwarder {
            caps,
            summary: Summary::default(),
            flushed: false,
            shift: 0,
            read_only_tx,
            hide: Hide::Nothing,
        }
    }

    /// Removes from an OK packet (already recorded) what the client must
    /// not see ([`Hide`]). Costs a comparison when there is nothing to
    /// hide, and a walk of the header when the OK changed no session state.
    fn hide_in(&self, f: &mut Frame, terminator: bool) {
        if self.hide == Hide::Nothing
            || f.continues()
            || (terminator && !self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF))
        {
            return;
        }
        if let Some(n) = strip_session_state(f.payload_mut(), self.hide) {
            f.truncate_payload(n);
        }
    }

    async fn next<B: AsyncRead + AsyncWrite + Unpin>(
        &self,
        backend: &mut PacketStream<B>,
    ) -> Result<Frame, ForwardError> {
        backend
            .read_frame()
            .await
            .map_err(|source| ForwardError::Backend {
                source,
                started: self.flushed,
            })
    }

    async fn out<C: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut Option<&mut PacketStream<C>>,
        frame: &Frame,
    ) -> Result<(), ForwardError> {
        if let Some(c) = client {
            if self.shift == 0 {
                c.queue_raw(frame.raw());
            } else {
                let at = c.queued();
                c.queue_raw(frame.raw());
                c.shift_seq(at, self.shift);
            }
        }
        self.flush_if_full(client).await
    }

    /// Sends the queued output once it reaches [`FLUSH_AT`] bytes.
    async fn flush_if_full<C: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut Option<&mut PacketStream<C>>,
    ) -> Result<(), ForwardError> {
        if let Some(c) = client
            && c.queued() >= FLUSH_AT
        {
            self.flushed = true;
            c.flush().await.map_err(ForwardError::Client)?;
        }
        Ok(())
    }

    /// Forwards a packet's continuation frames (a logical packet ≥ 16 MiB).
    async fn rest_of_packet<B, C>(
        &mut self,
        backend: &mut PacketStream<B>,
        client: &mut Option<&mut PacketStream<C>>,
        mut frame: Frame,
    ) -> Result<(), ForwardError>
    where
        B: AsyncRead + AsyncWrite + Unpin,
        C: AsyncRead + AsyncWrite + Unpin,
    {
        while frame.continues() {
            frame = self.next(backend).await?;
            self.out(client, &frame).await?;
        }
        Ok(())
    }

    fn record_ok(&mut self, frame: &Frame, terminator: bool) -> Result<StatusFlags, ForwardError> {
        let payload = frame.payload();
        let ok: OkPacket<'_> =
            if terminator && !self.caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF) {
                ParseBuf(payload)
                    .parse::<OkPacketDeserializer<'_, OldEofPacket>>(self.caps)
                    .map_err(|_| ForwardError::Malformed("bad EOF packet"))?
                    .into_inner()
            } else if terminator {
                ParseBuf(payload)
                    .parse::<OkPacketDeserializer<'_, ResultSetTerminator>>(self.caps)
                    .map_err(|_| ForwardError::Malformed("bad terminating OK packet"))?
                    .into_inner()
            } else {
                ParseBuf(payload)
                    .parse::<OkPacketDeserializer<'_, CommonOkPacket>>(self.caps)
                    .map_err(|_| ForwardError::Malformed("bad OK packet"))?
                    .into_inner()
            };
        let status = ok.status_flags();
        self.summary.status = Some(status);
        self.summary.warnings = ok.warnings();
        self.summary.error = None;
        self.summary.err = None;
        if !terminator {
            self.summary.affected_rows = ok.affected_rows();
        }
        if status.contains(StatusFlags::SERVER_SESSION_STATE_CHANGED)
            && let Ok(infos) = ok.session_state_info()
        {
            for info in infos {
                match info.decode() {
                    Ok(SessionStateChange::Schema(s)) => {
                        self.summary.schema = Some(s.as_str().into_owned());
                    }
                    Ok(SessionStateChange::Gtids(g)) => {
                        self.summary.gtid = mysql_tracked_gtids(g.as_bytes());
                    }
                    // MariaDB reports the session's last GTID as a tracked
                    // system variable when rwproxy asked for it.
                    Ok(SessionStateChange::SystemVariables(vars)) => {
                        for v in vars {
                            if v.name_bytes() == b"last_gtid" && !v.value_bytes().is_empty() {
                                self.summary.gtid = Some(v.value_str().into_owned());
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(status)
    }

    fn record_err(&mut self, frame: &Frame) {
        let err = super::handshake::parse_err(frame.payload());
        self.summary.error = Some(err.code);
        self.summary.err = Some(err);
    }

    /// Forwards an ERR packet and records it; inside a read-only
    /// transaction on a replica, the replica's `--read-only` refusal
    /// becomes the primary's answer to a write in a read-only transaction.
    async fn err_out<C: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        client: &mut Option<&mut PacketStream<C>>,
        frame: &Frame,
    ) -> Result<(), ForwardError> {
        if self.read_only_tx != ReadOnlyTx::No && !frame.continues() {
            let err = super::handshake::parse_err(frame.payload());
            if err.code == 1290 && err.message.contains("read-only") {
                if self.read_only_tx == ReadOnlyTx::Commit {
                    self.summary.error = Some(err.code);
                    self.summary.err = Some(err);
                    self.summary.held_back = true;
                    return Ok(());
                }
                let err = super::ClientError::new(
                    1792,
                    b"25006",
                    "Cannot execute statement in a READ ONLY transaction",
                );
                if let Some(c) = client {
                    c.queue_payload(frame.seq().wrapping_add(self.shift), &err.to_payload());
                }
                self.summary.error = Some(err.code);
                self.summary.err = Some(err);
                return self.flush_if_full(client).await;
            }
        }
        self.out(client, frame).await?;
        self.record_err(frame);
        Ok(())
    }

    /// Whether a frame is a terminator (EOF, or OK with the 0xFE header).
    fn is_terminator(frame: &Frame) -> bool {
        frame.first() == Some(0xfe) && frame.payload().len() < MAX_FRAME_PAYLOAD
    }

    async fn run<B, C>(
        &mut self,
        backend: &mut PacketStream<B>,
        client: &mut Option<&mut PacketStream<C>>,
        expect: Expect,
        deprecate_eof: bool,
        meta: MetaCache<'_>,
    ) -> Result<(), ForwardError>
    where
        B: AsyncRead + AsyncWrite + Unpin,
        C: AsyncRead + AsyncWrite + Unpin,
    {
        match expect {
            Expect::Statistics => {
                let f = self.next(backend).await?;
                self.out(client, &f).await?;
                return self.rest_of_packet(backend, client, f).await;
            }
            Expect::Simple => {
                let mut f = self.next(backend).await?;
                match f.first() {
                    Some(0x00) => {
                        self.record_ok(&f, false)?;
                        self.hide_in(&mut f, false);
                    }
                    Some(0xfe) => {
                        self.record_ok(&f, true)?;
                        self.hide_in(&mut f, true);
                    }
                    Some(0xff) => self.record_err(&f),
                    _ => {
                        self.out(client, &f).await?;
                        return Err(ForwardError::Malformed(
                            "unexpected reply to a simple command",
                        ));
                    }
                }
                self.out(client, &f).await?;
                return Ok(());
            }
            Expect::Fetch | Expect::FieldList => {
                return self.rows(backend, client).await.map(|_| ());
            }
            Expect::Query | Expect::Execute => {}
        }
        // The statement's cached columns concern its first result set only.
        let mut stmt_meta = (expect == Expect::Execute).then_some(meta);
        loop {
            let mut f = self.next(backend).await?;
            let more = match f.first() {
                Some(0x00) => {
                    let st = self.record_ok(&f, false)?;
                    self.hide_in(&mut f, false);
                    self.out(client, &f).await?;
                    st.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS)
                }
                Some(0xff) => {
                    self.err_out(client, &f).await?;
                    false
                }
                Some(0xfe) => {
                    let st = self.record_ok(&f, true)?;
                    self.hide_in(&mut f, true);
                    self.out(client, &f).await?;
                    st.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS)
                }
                Some(0xfb) if expect == Expect::Query => {
                    // LOCAL INFILE: the client streams the file, ending with
                    // an empty packet; then the server answers OK or ERR.
                    self.out(client, &f).await?;
                    self.local_infile(backend, client).await?;
                    continue;
                }
                Some(_) => {
                    self.columns(backend, client, f, meta, stmt_meta.take())
                        .await?;
                    if !deprecate_eof {
                        let eof = self.next(backend).await?;
                        self.out(client, &eof).await?;
                        if !Self::is_terminator(&eof) {
                            return Err(ForwardError::Malformed("missing EOF after columns"));
                        }
                        let st = self.record_ok(&eof, true)?;
                        if expect == Expect::Execute
                            && st.contains(StatusFlags::SERVER_STATUS_CURSOR_EXISTS)
                        {
                            // A cursor was opened: rows come with COM_STMT_FETCH.
                            return Ok(());
                        }
                    }
                    self.rows(backend, client).await?
                }
                None => return Err(ForwardError::Malformed("empty packet")),
            };
            if !more {
                return Ok(());
            }
            // Each result of a multi-result response reaches the client as
            // soon as it is complete while the server is still working on
            // the next one (nothing of it here yet): a client must not wait
            // for the whole batch (`SELECT SLEEP(1); SELECT SLEEP(2)` shows
            // its first result after 1 s, as directly). Results the server
            // sent together still leave together.
            if !backend.has_buffered_frame()
                && let Some(c) = client.as_mut()
                && c.queued() > 0
            {
                self.flushed = true;
                c.flush().await.map_err(ForwardError::Client)?;
            }
        }
    }

    /// Forwards a column count packet and the column definitions after it,
    /// translating MariaDB's "metadata follows" byte between the server's
    /// and the client's capabilities. `stmt` is given for an execution's
    /// first result set: columns the server sends are captured (the client
    /// and the server then both hold them), and skipped columns that the
    /// client does not hold are replaced by the server's (see [`MetaCache`]).
    async fn columns<B, C>(
        &mut self,
        backend: &mut PacketStream<B>,
        client: &mut Option<&mut PacketStream<C>>,
        count: Frame,
        meta: MetaCache<'_>,
        stmt: Option<MetaCache<'_>>,
    ) -> Result<(), ForwardError>
    where
        B: AsyncRead + AsyncWrite + Unpin,
        C: AsyncRead + AsyncWrite + Unpin,
    {
        if count.continues() {
            return Err(ForwardError::Malformed("oversized column count packet"));
        }
        let (columns, n) =
            get_lenenc_int(count.payload()).ok_or(ForwardError::Malformed("bad column count"))?;
        let follows = if meta.server {
            match count.payload().get(n) {
                Some(0) => false,
                Some(1) => true,
                _ => return Err(ForwardError::Malformed("bad metadata flag")),
            }
        } else {
            true
        };
        // Skipped columns the client does not hold: send the server's.
        let mut inject = None;
        if !follows {
            let holds = stmt.and_then(|m| m.client_holds);
            let sent = stmt.and_then(|m| m.server_sent);
            if stmt.is_none() || !meta.client {
                return Err(ForwardError::Malformed(
                    "server skipped result metadata rwproxy cannot supply",
                ));
            }
            if !same_columns(holds, sent) {
                inject = Some(sent.ok_or(ForwardError::Malformed(
                    "server skipped result metadata rwproxy never saw",
                ))?);
            }
        }
        if meta.server == meta.client && inject.is_none() {
            self.out(client, &count).await?;
        } else if let Some(c) = client {
            let mut payload = count.payload()[..n].to_vec();
            if meta.client {
                payload.push(u8::from(follows || inject.is_some()));
            }
            c.queue_payload(count.seq().wrapping_add(self.shift), &payload);
        }
        if let Some(cols) = inject {
            let mut seq = count.seq().wrapping_add(self.shift);
            if let Some(c) = client {
                let mut at = 0;
                while let Some(len) = cols.get(at..at + 3) {
                    let len =
                        usize::from(len[0]) | usize::from(len[1]) << 8 | usize::from(len[2]) << 16;
                    seq = seq.wrapping_add(1);
                    let start = c.queued();
                    c.queue_raw(cols.get(at..at + 4 + len).unwrap_or_default());
                    c.set_seq(start, seq);
                    at += 4 + len;
                }
            }
            // Every later frame of the response moves up by the number of
            // frames inserted (one per column; sequence ids wrap).
            self.shift = self.shift.wrapping_add(columns as u8);
            self.summary.columns_injected = true;
            return Ok(());
        }
        if !follows {
            return Ok(());
        }
        // Whatever columns reach a client with the cache are what it holds
        // now (a server without the cache always sends them).
        let capture = stmt.is_some() && meta.client;
        let mut captured = Vec::new();
        self.definitions(backend, client, columns, capture.then_some(&mut captured))
            .await?;
        if capture {
            let holds = stmt.and_then(|m| m.client_holds);
            self.summary.columns_sent = Some(match holds {
                Some(h) if h[..] == captured[..] => h.clone(),
                _ => Arc::from(captured),
            });
        }
        Ok(())
    }

    /// Forwards `count` column (or parameter) definitions; with `keep`,
    /// also appends their raw frames to it (metadata cache).
    async fn definitions<B, C>(
        &mut self,
        backend: &mut PacketStream<B>,
        client: &mut Option<&mut PacketStream<C>>,
        count: u64,
        mut keep: Option<&mut Vec<u8>>,
    ) -> Result<(), ForwardError>
    where
        B: AsyncRead + AsyncWrite + Unpin,
        C: AsyncRead + AsyncWrite + Unpin,
    {
        for _ in 0..count {
            let f = self.next(backend).await?;
            self.out(client, &f).await?;
            if let Some(k) = keep.as_deref_mut() {
                if f.continues() {
                    return Err(ForwardError::Malformed("oversized column definition"));
                }
                k.extend_from_slice(f.raw());
            }
            self.rest_of_packet(backend, client, f).await?;
        }
        Ok(())
    }

    /// Forwards rows until the terminator; returns whether more results follow.
    async fn rows<B, C>(
        &mut self,
        backend: &mut PacketStream<B>,
        client: &mut Option<&mut PacketStream<C>>,
    ) -> Result<bool, ForwardError>
    where
        B: AsyncRead + AsyncWrite + Unpin,
        C: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            // Fast path: every plain row already buffered, in one copy
            // (not when sequence ids must be rewritten).
            let (n, rows) = if self.shift == 0 {
                backend.buffered_rows(FLUSH_AT)
            } else {
                (0, 0)
            };
            if rows > 0 {
                if let Some(c) = client {
                    c.queue_raw(backend.buffered(n));
                }
                backend.consume(n);
                self.summary.rows += rows;
                self.flush_if_full(client).await?;
                continue;
            }
            let mut f = self.next(backend).await?;
            if Self::is_terminator(&f) {
                let st = self.record_ok(&f, true)?;
                self.hide_in(&mut f, true);
                self.out(client, &f).await?;
                return Ok(st.contains(StatusFlags::SERVER_MORE_RESULTS_EXISTS));
            }
            self.out(client, &f).await?;
            if f.first() == Some(0xff) {
                self.record_err(&f);
                return Ok(false);
            }
            self.summary.rows += 1;
            self.rest_of_packet(backend, client, f).await?;
        }
    }

    async fn local_infile<B, C>(
        &mut self,
        backend: &mut PacketStream<B>,
        client: &mut Option<&mut PacketStream<C>>,
    ) -> Result<(), ForwardError>
    where
        B: AsyncRead + AsyncWrite + Unpin,
        C: AsyncRead + AsyncWrite + Unpin,
    {
        let Some(c) = client else {
            return Err(ForwardError::Malformed(
                "LOCAL INFILE request to an internal statement",
            ));
        };
        c.flush().await.map_err(ForwardError::Client)?;
        self.flushed = true;
        // The file ends with an empty packet; an empty frame that continues
        // a full one is part of the previous packet, not the end.
        let mut continuing = false;
        loop {
            let f = c.read_frame().await.map_err(ForwardError::Client)?;
            backend.queue_raw(f.raw());
            let end = f.payload().is_empty() && !continuing;
            continuing = f.continues();
            if backend.queued() >= 64 * 1024 || end {
                backend
                    .flush()
                    .await
                    .map_err(|source| ForwardError::Backend {
                        source,
                        started: true,
                    })?;
            }
            if end {
                return Ok(());
            }
        }
    }
}

/// A statement prepared on a backend connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    /// The id the backend assigned (never shown to the client).
    pub backend_id: u32,
    pub columns: u16,
    pub params: u16,
    /// The result column definitions (raw frames), when asked to keep them
    /// (metadata cache).
    pub column_defs: Option<Arc<[u8]>>,
}

/// Reads a COM_STMT_PREPARE response. With a client, forwards it with the
/// statement id replaced by `client_id` (rwproxy owns client-visible ids).
/// Returns the backend's statement, or the server's ERR payload.
pub async fn forward_prepare<B, C>(
    backend: &mut PacketStream<B>,
    mut client: Option<&mut PacketStream<C>>,
    caps: CapabilityFlags,
    client_id: u32,
    keep_columns: bool,
) -> Result<Result<Prepared, Vec<u8>>, ForwardError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mark = client.as_ref().map_or(0, |c| c.queued());
    let r = prepare_response(backend, &mut client, caps, client_id, keep_columns).await;
    if let Err(e) = &r {
        unqueue(&mut client, mark, e);
    }
    r
}

async fn prepare_response<B, C>(
    backend: &mut PacketStream<B>,
    client: &mut Option<&mut PacketStream<C>>,
    caps: CapabilityFlags,
    client_id: u32,
    keep_columns: bool,
) -> Result<Result<Prepared, Vec<u8>>, ForwardError>
where
    B: AsyncRead + AsyncWrite + Unpin,
    C: AsyncRead + AsyncWrite + Unpin,
{
    let mut fw = Forwarder::new(caps, ReadOnlyTx::No);
    let mut first = fw.next(backend).await?;
    if first.first() == Some(0xff) {
        fw.out(client, &first).await?;
        if let Some(c) = client {
            c.flush().await.map_err(ForwardError::Client)?;
        }
        return Ok(Err(first.payload().to_vec()));
    }
    let (backend_id, columns, params) = super::handshake::parse_prepare_ok(first.payload())
        .ok_or(ForwardError::Malformed("bad COM_STMT_PREPARE response"))?;
    first.payload_mut()[1..5].copy_from_slice(&client_id.to_le_bytes());
    fw.out(client, &first).await?;
    let deprecate_eof = caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    let mut kept = Vec::new();
    for (count, keep) in [(params, false), (columns, keep_columns)] {
        if count == 0 {
            continue;
        }
        fw.definitions(backend, client, u64::from(count), keep.then_some(&mut kept))
            .await?;
        if !deprecate_eof {
            let eof = fw.next(backend).await?;
            fw.out(client, &eof).await?;
        }
    }
    if let Some(c) = client {
        c.flush().await.map_err(ForwardError::Client)?;
    }
    Ok(Ok(Prepared {
        backend_id,
        columns,
        params,
        column_defs: (keep_columns && columns > 0).then(|| Arc::from(kept)),
    }))
}

/// Reads a text result set of one row, one column (a query rwproxy asked
/// for itself) and returns that value; `None` for NULL or no row.
pub async fn read_single_value<B>(
    backend: &mut PacketStream<B>,
    caps: CapabilityFlags,
    meta_flag: bool,
) -> Result<Option<String>, ForwardError>
where
    B: AsyncRead + AsyncWrite + Unpin,
{
    let fw = Forwarder::new(caps, ReadOnlyTx::No);
    let first = fw.next(backend).await?;
    match first.first() {
        Some(0xff) => return Err(ForwardError::Malformed("internal query failed")),
        Some(0x00) => return Ok(None),
        _ => {}
    }
    let (columns, n) =
        get_lenenc_int(first.payload()).ok_or(ForwardError::Malformed("bad column count"))?;
    // A text result always has its metadata, flag or not.
    if !(meta_flag && first.payload().get(n) == Some(&0)) {
        for _ in 0..columns {
            fw.next(backend).await?;
        }
    }
    let deprecate_eof = caps.contains(CapabilityFlags::CLIENT_DEPRECATE_EOF);
    if !deprecate_eof {
        fw.next(backend).await?;
    }
    let mut value = None;
    loop {
        let f = fw.next(backend).await?;
        if Forwarder::is_terminator(&f) || f.first() == Some(0xff) {
            return Ok(value);
        }
        if value.is_none() && f.first() != Some(0xfb) {
            let p = f.payload();
            if let Some((len, n)) = get_lenenc_int(p) {
                let end = n.saturating_add(usize::try_from(len).unwrap_or(usize::MAX));
                if let Some(v) = p.get(n..end) {
                    value = Some(String::from_utf8_lossy(v).into_owned());
                }
            }
        }
    }
}

#[cfg(test)]
mod strip_tests {
    use super::*;

    /// An OK with session-state entries (type, data).
    fn ok(status: u16, entries: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut block = Vec::new();
        for (t, d) in entries {
            block.push(*t);
            crate::protocol::put_lenenc_int(&mut block, d.len() as u64);
            block.extend_from_slice(d);
        }
        let mut p = vec![0x00, 1, 0];
        p.extend_from_slice(&status.to_le_bytes());
        p.extend_from_slice(&[0, 0]);
        if !entries.is_empty() {
            p.push(0); // info: empty
            crate::protocol::put_lenenc_int(&mut p, block.len() as u64);
            p.extend_from_slice(&block);
        }
        p
    }

    fn var(name: &str, value: &str) -> (u8, Vec<u8>) {
        let mut d = Vec::new();
        for x in [name, value] {
            crate::protocol::put_lenenc_int(&mut d, x.len() as u64);
            d.extend_from_slice(x.as_bytes());
        }
        (0, d)
    }

    #[test]
    fn last_gtid_is_removed_and_the_rest_kept() {
        let changed = 0x4002;
        let mut p = ok(changed, &[var("last_gtid", "0-1-42")]);
        let n = strip_session_state(&mut p, Hide::LastGtid).expect("stripped");
        assert_eq!(&p[..n], &ok(0x0002, &[])[..]);

        let long = "x".repeat(300);
        let mut p = ok(
            changed,
            &[
                var("autocommit", "ON"),
                var("last_gtid", &long),
                (2, b"1".to_vec()),
            ],
        );
        let n = strip_session_state(&mut p, Hide::LastGtid).expect("stripped");
        assert_eq!(
            &p[..n],
            &ok(changed, &[var("autocommit", "ON"), (2, b"1".to_vec())])[..]
        );

        let mut p = ok(changed, &[var("autocommit", "ON")]);
        let before = p.clone();
        assert_eq!(strip_session_state(&mut p, Hide::LastGtid), None);
        assert_eq!(p, before);
        let mut p = ok(
            changed,
            &[(3, b"\x00\x03abc".to_vec()), (1, b"\x02db".to_vec())],
        );
        let n = strip_session_state(&mut p, Hide::Gtids).expect("stripped");
        assert_eq!(&p[..n], &ok(changed, &[(1, b"\x02db".to_vec())])[..]);
        // Truncated or garbage: left alone, never a panic.
        for cut in 0..before.len() {
            let mut q = before[..cut].to_vec();
            let _ = strip_session_state(&mut q, Hide::LastGtid);
        }
        let mut q = vec![0x00, 0, 0, 0x00, 0x40, 0, 0, 0, 0xfe, 0xff];
        assert_eq!(strip_session_state(&mut q, Hide::LastGtid), None);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mysql_own_gtid_tracker_data_is_decoded() {
        // As MySQL 9.7 sends it: spec 0, then a length-encoded set.
        let set = b"62a8a386-f1cd-11f1-96ff-02fc00000001:23";
        let mut data = vec![0u8, set.len() as u8];
        data.extend_from_slice(set);
        assert_eq!(
            super::mysql_tracked_gtids(&data).as_deref(),
            Some("62a8a386-f1cd-11f1-96ff-02fc00000001:23")
        );
        assert_eq!(super::mysql_tracked_gtids(&[1, 1, b'x']), None);
        assert_eq!(super::mysql_tracked_gtids(&[0, 5, b'x']), None);
        assert_eq!(super::mysql_tracked_gtids(&[]), None);
    }

    use super::*;
    use crate::protocol::packet::test_frame as frame;
    use tokio::io::AsyncWriteExt;

    type Pipe = tokio::io::DuplexStream;

    /// The server's end (write a response into it), rwproxy's backend and
    /// client streams, and the client's end (read what was forwarded).
    fn pipes() -> (Pipe, PacketStream<Pipe>, PacketStream<Pipe>, Pipe) {
        let (server, proxy_side) = tokio::io::duplex(1 << 16);
        let (client_side, client_end) = tokio::io::duplex(1 << 16);
        let (backend, client) = (
            PacketStream::new(proxy_side),
            PacketStream::new(client_side),
        );
        (server, backend, client, client_end)
    }

    /// A server that dies in the middle of a result set, before anything
    /// was flushed to the client: the error says nothing started, and none
    /// of the half result stays queued (a retry elsewhere or an ERR
    /// follows, and must be all the client sees).
    #[tokio::test]
    async fn a_result_cut_short_leaves_nothing_queued_for_the_client() {
        let (mut server, mut backend, mut client, _client) = pipes();
        client.queue_raw(b"earlier");
        let column =
            b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x01\x00\x00\x00\x03\x81\x00\x00\x00\x00";
        let cut = [
            frame(1, &[1]),
            frame(2, column),
            frame(3, &[0xfe, 0, 0, 2, 0]),
            frame(4, b"\x011"),
            frame(5, b"\x012"),
        ]
        .concat();
        server.write_all(&cut).await.expect("write");
        drop(server);
        let r = forward(
            &mut backend,
            Some(&mut client),
            Expect::Query,
            CapabilityFlags::CLIENT_PROTOCOL_41,
            MetaCache::OFF,
        )
        .await;
        assert!(
            matches!(r, Err(ForwardError::Backend { started: false, .. })),
            "{r:?}"
        );
        assert_eq!(client.queued(), b"earlier".len());
    }

    /// A client with the metadata cache in front of a server without it
    /// (e.g. an older replica): the "metadata follows" byte is added, and
    /// nothing else changes.
    #[tokio::test]
    async fn a_server_without_the_metadata_cache_gets_the_flag_added_for_the_client() {
        let (mut server, mut backend, mut client, mut client_end) = pipes();
        let column =
            b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x01\x00\x00\x00\x03\x81\x00\x00\x00\x00";
        let reply = [
            frame(1, &[1]),
            frame(2, column),
            frame(3, &[0xfe, 0, 0, 2, 0]),
            frame(4, b"\x011"),
            frame(5, &[0xfe, 0, 0, 2, 0]),
        ];
        server.write_all(&reply.concat()).await.expect("write");
        let meta = MetaCache {
            server: false,
            client: true,
            ..MetaCache::OFF
        };
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41;
        let summary = forward(&mut backend, Some(&mut client), Expect::Query, caps, meta)
            .await
            .expect("forward");
        assert_eq!(summary.rows, 1);
        drop(client);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client_end, &mut got)
            .await
            .expect("read");
        let want = [frame(1, &[1, 1]), reply[1..].concat()].concat();
        assert_eq!(got, want);
    }

    /// A server that skips columns the client does not hold: its own
    /// columns are sent in their place and every later frame's sequence id
    /// moves up by the frames inserted.
    #[tokio::test]
    async fn skipped_columns_the_client_does_not_hold_are_supplied() {
        let (mut server, mut backend, mut client, mut client_end) = pipes();
        let col_a = frame(
            9,
            b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x01\x00\x00\x00\x03\x81\x00\x00\x00\x00",
        );
        let col_b = frame(
            9,
            b"\x03def\x00\x00\x00\x01b\x00\x0c\x3f\x00\x01\x00\x00\x00\x08\x81\x00\x00\x00\x00",
        );
        let server_sent: Arc<[u8]> = Arc::from([col_a.clone(), col_b.clone()].concat());
        let client_holds: Arc<[u8]> = Arc::from(col_a.clone());
        let row = b"\x00\x00\x01\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00";
        let reply = [
            frame(1, &[2, 0]),
            frame(2, &[0xfe, 0, 0, 2, 0]),
            frame(3, row),
            frame(4, &[0xfe, 0, 0, 2, 0]),
        ];
        server.write_all(&reply.concat()).await.expect("write");
        let meta = MetaCache {
            server: true,
            client: true,
            client_holds: Some(&client_holds),
            server_sent: Some(&server_sent),
        };
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41;
        let summary = forward(&mut backend, Some(&mut client), Expect::Execute, caps, meta)
            .await
            .expect("forward");
        assert!(summary.columns_injected);
        assert_eq!(summary.columns_sent, None);
        drop(client);
        let mut got = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut client_end, &mut got)
            .await
            .expect("read");
        let with_seq = |f: &[u8], seq: u8| {
            let mut f = f.to_vec();
            f[3] = seq;
            f
        };
        let want = [
            frame(1, &[2, 1]),
            with_seq(&col_a, 2),
            with_seq(&col_b, 3),
            frame(4, &[0xfe, 0, 0, 2, 0]),
            frame(5, row),
            frame(6, &[0xfe, 0, 0, 2, 0]),
        ]
        .concat();
        assert_eq!(got, want);
    }

    /// Columns a server sends with an execution are kept, sharing the
    /// client's copy when they are the same.
    #[tokio::test]
    async fn columns_sent_with_an_execution_are_captured() {
        let col = frame(
            2,
            b"\x03def\x00\x00\x00\x01a\x00\x0c\x3f\x00\x01\x00\x00\x00\x03\x81\x00\x00\x00\x00",
        );
        // (server has the cache, client holds these columns already).
        // A server without the cache always sends its columns: the client
        // (with the cache) keeps them, so rwproxy must know it does.
        let other: Arc<[u8]> = Arc::from(&b"other"[..]);
        let same: Arc<[u8]> = Arc::from(col.clone());
        for (server_cache, holds) in [(true, &same), (true, &other), (false, &other)] {
            let (mut server, mut backend, mut client, _client_end) = pipes();
            // The column count, then the metadata-follows flag if cached.
            let head = if server_cache {
                frame(1, &[1, 1])
            } else {
                frame(1, &[1])
            };
            let reply = [
                head,
                col.clone(),
                frame(3, &[0xfe, 0, 0, 2, 0]),
                frame(4, &[0xfe, 0, 0, 2, 0]),
            ];
            server.write_all(&reply.concat()).await.expect("write");
            let meta = MetaCache {
                server: server_cache,
                client: true,
                client_holds: Some(holds),
                server_sent: None,
            };
            let caps = CapabilityFlags::CLIENT_PROTOCOL_41;
            let summary = forward(&mut backend, Some(&mut client), Expect::Execute, caps, meta)
                .await
                .expect("forward");
            let sent = summary.columns_sent.expect("captured");
            assert_eq!(&sent[..], &col[..]);
            // Shared with the client's copy when they are the same.
            assert_eq!(Arc::ptr_eq(&sent, holds), Arc::ptr_eq(holds, &same));
            assert!(!summary.columns_injected);
        }
    }
}
