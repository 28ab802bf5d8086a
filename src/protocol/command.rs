//! Client commands, decoded from a command packet's payload into a typed
//! value. Only what routing needs is decoded; the payload itself is
//! forwarded unchanged (except statement ids, which rwproxy owns).

/// Command codes (first payload byte).
pub mod code {
    pub const COM_QUIT: u8 = 0x01;
    pub const COM_INIT_DB: u8 = 0x02;
    pub const COM_QUERY: u8 = 0x03;
    pub const COM_FIELD_LIST: u8 = 0x04;
    pub const COM_REFRESH: u8 = 0x07;
    pub const COM_SHUTDOWN: u8 = 0x08;
    pub const COM_STATISTICS: u8 = 0x09;
    pub const COM_PROCESS_INFO: u8 = 0x0a;
    pub const COM_DEBUG: u8 = 0x0d;
    pub const COM_PROCESS_KILL: u8 = 0x0c;
    pub const COM_PING: u8 = 0x0e;
    pub const COM_CHANGE_USER: u8 = 0x11;
    pub const COM_STMT_PREPARE: u8 = 0x16;
    pub const COM_STMT_EXECUTE: u8 = 0x17;
    pub const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const COM_STMT_CLOSE: u8 = 0x19;
    pub const COM_STMT_RESET: u8 = 0x1a;
    pub const COM_SET_OPTION: u8 = 0x1b;
    pub const COM_STMT_FETCH: u8 = 0x1c;
    pub const COM_RESET_CONNECTION: u8 = 0x1f;
}

/// A client command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Quit,
    InitDb(&'a [u8]),
    Query(&'a [u8]),
    /// Table name (NUL-terminated) and wildcard; forwarded as is.
    FieldList,
    Statistics,
    Ping,
    /// The rest of the payload (user, auth data, db, charset, …).
    ChangeUser(&'a [u8]),
    StmtPrepare(&'a [u8]),
    StmtExecute {
        stmt_id: u32,
    },
    StmtSendLongData {
        stmt_id: u32,
    },
    StmtClose {
        stmt_id: u32,
    },
    StmtReset {
        stmt_id: u32,
    },
    StmtFetch {
        stmt_id: u32,
    },
    ResetConnection,
    SetOption(u16),
    /// `COM_PROCESS_KILL`: `KILL CONNECTION id`.
    ProcessKill(u32),
    /// A server administration command, forwarded as is to the primary.
    Admin(Admin),
    /// Anything else: answered with ERR 1047, as the server answers a
    /// command it does not know.
    Unsupported(u8),
}

/// The server administration commands the server itself answers (MariaDB
/// 10.11 and 11.x; MySQL 8.4 knows the same). Every other code the server
/// knows is either handled by rwproxy (the rest of [`Command`]) or belongs
/// to replication (`COM_BINLOG_DUMP`, `COM_REGISTER_SLAVE`: a replica must
/// connect to its primary, not through a proxy) or to bulk execution
/// (`COM_STMT_BULK_EXECUTE`, whose capability rwproxy does not offer);
/// those, and the codes the server itself does not know (`COM_SLEEP`,
/// `COM_CONNECT`, `COM_TIME`, `COM_DELAYED_INSERT`, `COM_TABLE_DUMP`, …:
/// ERR 1047), get the server's own "Unknown command".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admin {
    /// `COM_REFRESH` (`mariadb-admin refresh`, `flush-hosts`, …): OK or ERR.
    Refresh,
    /// `COM_SHUTDOWN`: EOF (then the server stops) or ERR.
    Shutdown,
    /// `COM_PROCESS_INFO` (`SHOW PROCESSLIST`): a result set or ERR.
    ProcessInfo,
    /// `COM_DEBUG` (`mariadb-admin debug`): EOF or ERR.
    Debug,
}

/// A command packet too short for its command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed command packet (code {code:#04x}, {len} bytes)")]
pub struct MalformedCommand {
    pub code: u8,
    pub len: usize,
}

fn stmt_id(payload: &[u8]) -> Option<u32> {
    let b = payload.get(1..5)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// Decodes a command payload. An empty payload or a truncated statement
/// command is malformed; an unknown code is `Unsupported`.
pub fn decode(payload: &[u8]) -> Result<Command<'_>, MalformedCommand> {
    use code::*;
    let Some(&c) = payload.first() else {
        return Err(MalformedCommand { code: 0, len: 0 });
    };
    let bad = MalformedCommand {
        code: c,
        len: payload.len(),
    };
    let rest = &payload[1..];
    Ok(match c {
        COM_QUIT => Command::Quit,
        COM_INIT_DB => Command::InitDb(rest),
        COM_QUERY => Command::Query(rest),
        COM_FIELD_LIST => Command::FieldList,
        COM_STATISTICS => Command::Statistics,
        COM_REFRESH => Command::Admin(Admin::Refresh),
        COM_SHUTDOWN => Command::Admin(Admin::Shutdown),
        COM_PROCESS_INFO => Command::Admin(Admin::ProcessInfo),
        COM_DEBUG => Command::Admin(Admin::Debug),
        COM_PING => Command::Ping,
        COM_PROCESS_KILL => Command::ProcessKill(stmt_id(payload).ok_or(bad)?),
        COM_CHANGE_USER => Command::ChangeUser(rest),
        COM_STMT_PREPARE => Command::StmtPrepare(rest),
        COM_STMT_EXECUTE => {
            // id(4) flags(1) iteration-count(4)
            if payload.len() < 10 {
                return Err(bad);
            }
            Command::StmtExecute {
                stmt_id: stmt_id(payload).ok_or(bad)?,
            }
        }
        COM_STMT_SEND_LONG_DATA => {
            // id(4) param(2) data
            if payload.len() < 7 {
                return Err(bad);
            }
            Command::StmtSendLongData {
                stmt_id: stmt_id(payload).ok_or(bad)?,
            }
        }
        COM_STMT_CLOSE => Command::StmtClose {
            stmt_id: stmt_id(payload).ok_or(bad)?,
        },
        COM_STMT_RESET => Command::StmtReset {
            stmt_id: stmt_id(payload).ok_or(bad)?,
        },
        COM_STMT_FETCH => {
            if payload.len() < 9 {
                return Err(bad);
            }
            Command::StmtFetch {
                stmt_id: stmt_id(payload).ok_or(bad)?,
            }
        }
        COM_RESET_CONNECTION => Command::ResetConnection,
        COM_SET_OPTION => {
            let b = payload.get(1..3).ok_or(bad)?;
            Command::SetOption(u16::from_le_bytes([b[0], b[1]]))
        }
        other => Command::Unsupported(other),
    })
}

/// Rewrites the statement id of a statement command in place.
pub fn set_stmt_id(payload: &mut [u8], id: u32) {
    if let Some(b) = payload.get_mut(1..5) {
        b.copy_from_slice(&id.to_le_bytes());
    }
}

/// Where the parameter types sit in a COM_STMT_EXECUTE payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecuteLayout {
    /// Offset of the `new_params_bound` flag byte.
    pub bound_flag_at: usize,
    /// Whether the client sent types with this execution.
    pub types_sent: bool,
}

/// Finds the parameter-type block of an execute packet for a statement with
/// `params` parameters. `None` when there are no parameters or the packet is
/// too short to hold what it must.
pub fn execute_layout(payload: &[u8], params: u16) -> Option<ExecuteLayout> {
    if params == 0 {
        return None;
    }
    let bitmap = usize::from(params).div_ceil(8);
    let at = 10 + bitmap;
    let flag = *payload.get(at)?;
    if flag == 1 && payload.len() < at + 1 + 2 * usize::from(params) {
        return None;
    }
    Some(ExecuteLayout {
        bound_flag_at: at,
        types_sent: flag == 1,
    })
}

/// The parameter types a client sent (2 bytes per parameter).
pub fn execute_types(payload: &[u8], layout: ExecuteLayout, params: u16) -> Option<&[u8]> {
    if !layout.types_sent {
        return None;
    }
    payload.get(layout.bound_flag_at + 1..layout.bound_flag_at + 1 + 2 * usize::from(params))
}

/// Builds an execute payload with the types block inserted, for a backend
/// connection that has never seen this statement's types (the client sent
/// them once, to another connection).
pub fn execute_with_types(payload: &[u8], layout: ExecuteLayout, types: &[u8]) -> Vec<u8> {
    let at = layout.bound_flag_at;
    let mut out = Vec::with_capacity(payload.len() + types.len());
    out.extend_from_slice(&payload[..at]);
    out.push(1);
    out.extend_from_slice(types);
    out.extend_from_slice(&payload[at + 1..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_and_rejects_short_packets() {
        assert_eq!(decode(b"\x03SELECT 1"), Ok(Command::Query(b"SELECT 1")));
        assert_eq!(decode(b"\x01"), Ok(Command::Quit));
        assert!(decode(b"").is_err());
        assert!(decode(b"\x17\x01\x00").is_err());
        assert!(decode(b"\x19\x01").is_err());
        assert!(decode(b"\x1b\x01").is_err());
        assert_eq!(decode(b"\x1b\x01\x00"), Ok(Command::SetOption(1)));
        assert_eq!(decode(b"\x20"), Ok(Command::Unsupported(0x20)));
        assert_eq!(decode(b"\x07\x04"), Ok(Command::Admin(Admin::Refresh)));
        assert_eq!(decode(b"\x0d"), Ok(Command::Admin(Admin::Debug)));
        assert_eq!(decode(b"\x12"), Ok(Command::Unsupported(0x12)));
        assert_eq!(
            decode(b"\x0c\x2a\x00\x00\x00"),
            Ok(Command::ProcessKill(42))
        );
        assert!(decode(b"\x0c\x2a\x00").is_err());
        assert_eq!(
            decode(b"\x19\x05\x00\x00\x00"),
            Ok(Command::StmtClose { stmt_id: 5 })
        );
    }

    #[test]
    fn execute_types_are_found_and_inserted() {
        // id=7, flags=0, iter=1, 2 params: bitmap 1 byte, bound=1, types, values.
        let mut with = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0, 8, 0];
        with.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        let l = execute_layout(&with, 2).expect("layout");
        assert!(l.types_sent);
        let types = execute_types(&with, l, 2).expect("types").to_vec();
        assert_eq!(types, vec![3, 0, 8, 0]);
        let mut without = vec![0x17, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0];
        without.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        let l2 = execute_layout(&without, 2).expect("layout");
        assert!(!l2.types_sent);
        assert_eq!(execute_with_types(&without, l2, &types), with);
        assert!(execute_layout(&with[..11], 2).is_none());
        assert!(execute_layout(&with[..13], 2).is_none());
    }
}
