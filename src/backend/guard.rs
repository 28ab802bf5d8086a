//! Bounds on one exchange with a backend: the response must end within
//! `backend_read_timeout` (when set), and an exchange with a server that is
//! being demoted is aborted at once ([`super::Pools::sever`]).
//!
//! Why abort rather than wait: a statement sent to a primary that hung
//! (SIGSTOP, a stalled disk) may be committed there when it resumes, after
//! another server was promoted. Its OK would acknowledge a write the new
//! primary never has. Aborting before the promotion is published turns it
//! into an error whose outcome is unknown — what the client would see if
//! the server had crashed — never a late acknowledgement.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Why an exchange was cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Cut {
    #[error(
        "no complete response within backend_read_timeout ({0:?}); the statement's outcome is unknown"
    )]
    TimedOut(Duration),
    #[error(
        "the server was demoted (another server was promoted) while the statement ran; its outcome is unknown"
    )]
    Demoted,
}

impl Cut {
    /// As the I/O error the packet layer reports for a failed backend.
    pub fn io_error(self) -> std::io::Error {
        let kind = match self {
            Cut::TimedOut(_) => std::io::ErrorKind::TimedOut,
            Cut::Demoted => std::io::ErrorKind::ConnectionAborted,
        };
        std::io::Error::new(kind, self)
    }
}

/// Runs `exchange` unless `cut` fires or `timeout` passes first.
pub async fn guarded<T>(
    exchange: impl Future<Output = T>,
    cut: &CancellationToken,
    timeout: Option<Duration>,
) -> Result<T, Cut> {
    if cut.is_cancelled() {
        return Err(Cut::Demoted);
    }
    let bounded = async {
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| Cut::TimedOut(t)),
            None => Ok(exchange.await),
        }
    };
    tokio::select! {
        biased;
        _ = cut.cancelled() => Err(Cut::Demoted),
        r = bounded => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn cut_and_timeout_abort_a_pending_exchange() {
        let token = CancellationToken::new();
        let t = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            t.cancel();
        });
        let r = guarded(std::future::pending::<()>(), &token, None).await;
        assert_eq!(r, Err(Cut::Demoted));
        let fresh = CancellationToken::new();
        let r = guarded(
            std::future::pending::<()>(),
            &fresh,
            Some(Duration::from_millis(20)),
        )
        .await;
        assert_eq!(r, Err(Cut::TimedOut(Duration::from_millis(20))));
        assert_eq!(guarded(async { 7 }, &fresh, None).await, Ok(7));
    }
}
