//! The MySQL wire protocol as rwproxy needs it: framing, handshake and
//! authentication, reading the headers of responses while forwarding them
//! untouched, and building the few packets rwproxy writes itself (ERR, OK).
//!
//! Bytes stay in this module: the session and router layers see typed
//! commands ([`command::Command`]) and response summaries
//! ([`response::Summary`]).

pub mod auth;
pub mod caching_sha2;
pub mod command;
pub mod compress;
pub mod handshake;
pub mod packet;
pub mod response;
pub mod stream;

use mysql_common::constants::{CapabilityFlags, MariadbCapabilities, StatusFlags};
use mysql_common::packets::{ErrPacket, ServerError, SqlState};
use mysql_common::proto::MySerialize;

/// Capabilities rwproxy can carry between a client and a server. Anything a
/// client asks for outside this set is masked off before the server sees it:
/// compression and TLS (each leg negotiates its own: see `compress` and
/// `stream`), MySQL 8 query attributes, and the MariaDB extended capabilities (bulk execute,
/// metadata cache) whose packets rwproxy does not parse.
pub fn supported_capabilities() -> CapabilityFlags {
    CapabilityFlags::CLIENT_LONG_PASSWORD
        | CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_CONNECT_WITH_DB
        | CapabilityFlags::CLIENT_NO_SCHEMA
        | CapabilityFlags::CLIENT_ODBC
        | CapabilityFlags::CLIENT_LOCAL_FILES
        | CapabilityFlags::CLIENT_IGNORE_SPACE
        | CapabilityFlags::CLIENT_PROTOCOL_41
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_IGNORE_SIGPIPE
        | CapabilityFlags::CLIENT_TRANSACTIONS
        | CapabilityFlags::CLIENT_RESERVED
        | CapabilityFlags::CLIENT_SECURE_CONNECTION
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH
        | CapabilityFlags::CLIENT_CONNECT_ATTRS
        | CapabilityFlags::CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA
        | CapabilityFlags::CLIENT_CAN_HANDLE_EXPIRED_PASSWORDS
        | CapabilityFlags::CLIENT_SESSION_TRACK
        | CapabilityFlags::CLIENT_DEPRECATE_EOF
}

/// MariaDB extended capabilities rwproxy can carry: the metadata cache (a
/// prepared statement's result columns are not sent again with every
/// execution while they stay the same), which rwproxy understands and
/// keeps consistent across the servers a statement runs on (see
/// `session::stmt`), and extended metadata (a column definition names the
/// data type behind a plain one: `format=json`, `type=point`).
///
/// Extended metadata is requested on a backend connection only when the
/// client asked for it, never always-then-stripped: column definitions are
/// forwarded as the server's bytes, so the server must write them in the
/// format the client negotiated, and stripping would mean re-encoding every
/// column definition of every result. The pool key holds these
/// capabilities ([`crate::backend::Pools::key`]), so connections with and
/// without it are never mixed up. Bulk execute and progress reports are
/// masked off.
pub fn supported_ext() -> MariadbCapabilities {
    MariadbCapabilities::MARIADB_CLIENT_CACHE_METADATA
        | MariadbCapabilities::MARIADB_CLIENT_EXTENDED_METADATA
}

/// The capabilities that change the shape of packets on a connection. A
/// backend connection can serve a client only if these match exactly, so
/// they are part of the pool key.
pub fn shaping_capabilities(caps: CapabilityFlags) -> CapabilityFlags {
    caps & (CapabilityFlags::CLIENT_FOUND_ROWS
        | CapabilityFlags::CLIENT_LONG_FLAG
        | CapabilityFlags::CLIENT_NO_SCHEMA
        | CapabilityFlags::CLIENT_ODBC
        | CapabilityFlags::CLIENT_LOCAL_FILES
        | CapabilityFlags::CLIENT_IGNORE_SPACE
        | CapabilityFlags::CLIENT_INTERACTIVE
        | CapabilityFlags::CLIENT_MULTI_STATEMENTS
        | CapabilityFlags::CLIENT_MULTI_RESULTS
        | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
        | CapabilityFlags::CLIENT_SESSION_TRACK
        | CapabilityFlags::CLIENT_DEPRECATE_EOF)
}

/// An error rwproxy itself reports to a client, with the code and SQLSTATE
/// a MySQL client library knows how to interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    pub code: u16,
    pub state: [u8; 5],
    pub message: String,
}

impl ClientError {
    pub fn new(code: u16, state: &[u8; 5], message: impl Into<String>) -> Self {
        ClientError {
            code,
            state: *state,
            message: message.into(),
        }
    }

    /// 1045 / 28000.
    pub fn access_denied(user: &str, host: &str, using_password: bool) -> Self {
        let using = if using_password { "YES" } else { "NO" };
        Self::new(
            1045,
            b"28000",
            format!("Access denied for user '{user}'@'{host}' (using password: {using})"),
        )
    }

    /// 1047 / 08S01 (ER_UNKNOWN_COM_ERROR): a command rwproxy does not
    /// forward, in the server's own words (which do not name the code).
    pub fn unknown_command() -> Self {
        Self::new(1047, b"08S01", "Unknown command")
    }

    /// 1835 / HY000 (ER_MALFORMED_PACKET): a command rwproxy cannot decode.
    pub fn malformed_packet() -> Self {
        Self::new(1835, b"HY000", "Malformed communication packet")
    }

    /// 1153 / 08S01.
    pub fn packet_too_large() -> Self {
        Self::new(
            1153,
            b"08S01",
            "Got a packet bigger than 'max_allowed_packet' bytes",
        )
    }

    /// 2013-style: the server went away while answering. Uses 1927
    /// (ER_CONNECTION_KILLED, 70100) because a client must see that the
    /// statement's outcome is unknown, and the 2xxx codes are client-side.
    pub fn lost_backend(server: &str, why: &str) -> Self {
        Self::new(
            1927,
            b"70100",
            format!("rwproxy: lost connection to backend '{server}' during query: {why}"),
        )
    }

    /// The ERR payload (without frame header).
    pub fn to_payload(&self) -> Vec<u8> {
        let err = ErrPacket::Error(ServerError::new(
            self.code,
            Some(SqlState::new(self.state)),
            self.message.as_bytes(),
        ));
        let mut buf = Vec::with_capacity(16 + self.message.len());
        err.serialize(&mut buf);
        buf
    }
}

/// Builds an OK payload. Hand-written because mysql_common can parse but
/// not serialize OK packets.
pub fn ok_payload(affected_rows: u64, last_insert_id: u64, status: StatusFlags) -> Vec<u8> {
    let mut buf = Vec::with_capacity(11);
    buf.push(0x00);
    put_lenenc_int(&mut buf, affected_rows);
    put_lenenc_int(&mut buf, last_insert_id);
    buf.extend_from_slice(&status.bits().to_le_bytes());
    buf.extend_from_slice(&0u16.to_le_bytes());
    buf
}

/// Appends a length-encoded integer.
pub fn put_lenenc_int(buf: &mut Vec<u8>, v: u64) {
    if v < 251 {
        buf.push(v as u8);
    } else if v < 1 << 16 {
        buf.push(0xfc);
        buf.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v < 1 << 24 {
        buf.push(0xfd);
        buf.extend_from_slice(&(v as u32).to_le_bytes()[..3]);
    } else {
        buf.push(0xfe);
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// Reads a length-encoded integer; `None` if truncated or invalid.
pub fn get_lenenc_int(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    match first {
        0..=250 => Some((u64::from(first), 1)),
        0xfc => {
            let b = buf.get(1..3)?;
            Some((u64::from(u16::from_le_bytes([b[0], b[1]])), 3))
        }
        0xfd => {
            let b = buf.get(1..4)?;
            Some((
                u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16,
                4,
            ))
        }
        0xfe => {
            let b = buf.get(1..9)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            Some((u64::from_le_bytes(a), 9))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_roundtrip() {
        for v in [
            0u64,
            250,
            251,
            65535,
            65536,
            (1 << 24) - 1,
            1 << 24,
            u64::MAX,
        ] {
            let mut b = Vec::new();
            put_lenenc_int(&mut b, v);
            assert_eq!(get_lenenc_int(&b), Some((v, b.len())));
        }
        assert_eq!(get_lenenc_int(&[0xfc, 1]), None);
        assert_eq!(get_lenenc_int(&[0xff]), None);
        assert_eq!(get_lenenc_int(&[]), None);
    }

    #[test]
    fn err_payload_layout() {
        let p = ClientError::access_denied("app", "127.0.0.1", true).to_payload();
        assert_eq!(p[0], 0xff);
        assert_eq!(u16::from_le_bytes([p[1], p[2]]), 1045);
        assert_eq!(&p[3..9], b"#28000");
        assert!(p.ends_with(b"(using password: YES)"));
    }
}
