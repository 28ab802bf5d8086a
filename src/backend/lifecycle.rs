//! How a backend connection's life ends: which server errors end the
//! server's session on it (the connection is never reused), and closing
//! connections the orderly way (`COM_QUIT`) from places that cannot wait.

use super::BackendConn;

/// Whether an ERR with `code` means the server ended (or is ending) its
/// session on the connection: after it the server closes the socket, so
/// the connection must never go back to a pool, and a client session that
/// depended on it must be closed (see `session::lifecycle`).
///
/// - 1927 `ER_CONNECTION_KILLED` (`KILL <id>`; MySQL: 3169
///   `ER_SESSION_WAS_KILLED`)
/// - 1053 `ER_SERVER_SHUTDOWN`
/// - 1152 / 1184 aborted connection
/// - 1153 `ER_NET_PACKET_TOO_LARGE` (the server closes after it), and the
///   other network errors 1154–1161
/// - 4031 `ER_CLIENT_INTERACTION_TIMEOUT` (MariaDB 11: `wait_timeout`)
pub fn ends_server_session(code: u16) -> bool {
    matches!(code, 1053 | 1152..=1161 | 1184 | 1927 | 3169 | 4031)
}

/// Closes `conns` with `COM_QUIT` in a task of its own when called from
/// code that cannot wait (under a lock, or in a synchronous path); outside
/// a runtime they are just dropped.
pub fn close_later(conns: Vec<BackendConn>) {
    if conns.is_empty() {
        return;
    }
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            for c in conns {
                c.quit().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::ends_server_session;

    #[test]
    fn errors_that_end_the_server_session() {
        for code in [1927, 1053, 1153, 1158, 1161, 4031, 3169] {
            assert!(ends_server_session(code), "{code}");
        }
        // Ordinary statement errors leave the session usable.
        for code in [1064, 1146, 1062, 1045, 1205, 1213, 1317, 1290] {
            assert!(!ends_server_session(code), "{code}");
        }
    }
}
