//! The server side of `caching_sha2_password` towards clients (the
//! arithmetic is in [`crate::protocol::caching_sha2`]).
//!
//! Used when the account is a caching_sha2 account of a MySQL server
//! (`auth = "servers"`), or, with `auth = "config"`, when the client asks
//! for caching_sha2 and the user has a cleartext `password` in the config.
//! Everything else keeps the mysql_native_password path of the session.
//!
//! Servers mode, as mysqld does it: a fast-path reply is checked against
//! the in-memory cache of accounts that completed a full authentication
//! through this rwproxy (a cached account with a wrong reply is refused);
//! otherwise the client is asked for a full authentication (`0x01 0x04`):
//! its cleartext password over TLS or the Unix socket, or RSA-encrypted
//! with rwproxy's public key on plaintext TCP. The cleartext is checked
//! against the stored `$A$` hash and kept (in memory only) in the cache:
//! rwproxy needs it to log into servers that do not have the account in
//! their own cache (full authentication towards them).

use std::sync::Arc;

use mysql_common::packets::AuthSwitchRequest;
use mysql_common::proto::MySerialize;

use crate::accounts::{ClientAddr, Lookup};
use crate::backend::Credential;
use crate::config::{AuthMode, Config};
use crate::protocol::ClientError;
use crate::protocol::auth::{self, SCRAMBLE_LEN};
use crate::protocol::caching_sha2::{
    self, FAST_AUTH_SUCCESS, PERFORM_FULL_AUTH, PLUGIN, REQUEST_PUBLIC_KEY, Sha2Secret,
    ShaCryptHash,
};
use crate::protocol::handshake::ClientHello;
use crate::protocol::packet::{FrameError, PacketStream};
use crate::protocol::stream::ClientTransport;

use super::Shared;

/// Why a caching_sha2 login did not succeed.
#[derive(Debug, thiserror::Error)]
pub(super) enum Sha2LoginError {
    /// Refused: send `err` with sequence id `seq`, then close.
    #[error("{}", .err.message)]
    Refused { err: ClientError, seq: u8 },
    /// The client connection failed.
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// The cleartext password of a config user, for logging into servers that
/// ask for caching_sha2 (`None` unless `auth = "config"` with `password`).
pub(super) fn config_secret(cfg: &Config, user: &str) -> Option<Arc<Sha2Secret>> {
    if cfg.auth != AuthMode::Config {
        return None;
    }
    let u = cfg.users.iter().find(|u| u.name == user)?;
    let pw = u.password.as_deref().filter(|p| !p.is_empty())?;
    Some(Arc::new(Sha2Secret::new(pw.as_bytes())))
}

/// Authenticates the client with caching_sha2_password when its account
/// calls for it. `seq` is the sequence id of rwproxy's next packet.
/// `Ok(None)`: not a caching_sha2 case, the native path decides (nothing
/// was sent). `Ok(Some((credential, seq)))`: authenticated, the OK goes out
/// with `seq`.
pub(super) async fn try_login<S: ClientTransport>(
    shared: &Shared,
    client: &mut PacketStream<S>,
    hello: &ClientHello,
    seq: u8,
    scramble: &[u8; SCRAMBLE_LEN],
    peer: ClientAddr,
) -> Result<Option<(Credential, u8)>, Sha2LoginError> {
    let cfg = shared.config.load_full();
    let asked_sha2 = hello.plugin.as_deref() == Some(PLUGIN);
    let secure = S::LOCAL || client.get_ref().is_tls();
    let denied = |seq: u8, using: bool| Sha2LoginError::Refused {
        err: ClientError::access_denied(&hello.user, &shared.accounts.host_name(&peer), using),
        seq,
    };
    if cfg.auth == AuthMode::Config {
        // The config has the cleartext: H2 is known, the fast path always
        // applies (no cache, no full authentication).
        if !asked_sha2 {
            return Ok(None);
        }
        let Some(user) = cfg.users.iter().find(|u| u.name == hello.user) else {
            return Ok(None);
        };
        let Some(secret) = config_secret(&cfg, &hello.user) else {
            return Ok(None);
        };
        if !caching_sha2::verify_fast(scramble, &hello.auth_reply, &secret.double_hash()) {
            return Err(denied(seq, !hello.auth_reply.is_empty()));
        }
        if user.require_tls && !secure {
            return Err(Sha2LoginError::Refused {
                err: super::insecure_transport(),
                seq,
            });
        }
        more_data(client, seq, &[FAST_AUTH_SUCCESS]).await?;
        let cred = Credential {
            user: Arc::from(user.name.as_str()),
            stage1: user.password.as_deref().map(|p| auth::from_password(p).0),
            sha2: Some(secret),
        };
        return Ok(Some((cred, seq.wrapping_add(1))));
    }
    let Lookup::FoundSha2 {
        name,
        host,
        stored,
        require_tls,
    } = shared.accounts.lookup(&hello.user, peer).await
    else {
        return Ok(None);
    };
    // Make the client answer the scramble with caching_sha2.
    let (reply, mut seq) = if asked_sha2 {
        (hello.auth_reply.clone(), seq)
    } else {
        let mut data = scramble.to_vec();
        data.push(0);
        let mut buf = Vec::with_capacity(48);
        AuthSwitchRequest::new(PLUGIN.as_bytes(), data).serialize(&mut buf);
        client.queue_payload(seq, &buf);
        client.flush().await?;
        let p = client.read_packet(1024, Some(seq.wrapping_add(1))).await?;
        (p.payload.to_vec(), p.last_seq.wrapping_add(1))
    };
    if reply.is_empty() {
        return Err(denied(seq, false));
    }
    let cache = &shared.accounts.sha2_cache;
    let secret = match cache.fast((&name, &host), &stored, scramble, &reply) {
        Some(Ok(secret)) => {
            more_data(client, seq, &[FAST_AUTH_SUCCESS]).await?;
            seq = seq.wrapping_add(1);
            secret
        }
        Some(Err(())) => {
            // Maybe the password changed since the accounts were read: with
            // a new stored hash the cache misses and a full authentication
            // follows, as on the server after ALTER USER.
            shared.accounts.refresh_after_miss().await;
            match shared.accounts.lookup(&hello.user, peer).await {
                Lookup::FoundSha2 { stored: s, .. } if s != stored => {
                    let (secret, next) =
                        full_auth(shared, client, &hello.user, peer, seq, scramble, secure).await?;
                    seq = next;
                    verify_full(shared, hello, peer, &name, &host, &s, &secret)
                        .await
                        .ok_or_else(|| denied(seq, true))?;
                    secret
                }
                _ => return Err(denied(seq, true)),
            }
        }
        None => {
            let (secret, next) =
                full_auth(shared, client, &hello.user, peer, seq, scramble, secure).await?;
            seq = next;
            verify_full(shared, hello, peer, &name, &host, &stored, &secret)
                .await
                .ok_or_else(|| denied(seq, true))?
        }
    };
    if require_tls && !secure {
        return Err(Sha2LoginError::Refused {
            err: super::insecure_transport(),
            seq,
        });
    }
    let cred = Credential {
        user: name,
        stage1: None,
        sha2: Some(Arc::new(secret)),
    };
    Ok(Some((cred, seq)))
}

/// Checks a cleartext password against the stored hash (CPU-bound: off the
/// session thread); on a mismatch, refreshes the accounts once (the
/// password may have just changed) and checks the new hash. On success the
/// account enters the fast-path cache. Returns the secret.
async fn verify_full(
    shared: &Shared,
    hello: &ClientHello,
    peer: ClientAddr,
    name: &str,
    host: &str,
    stored: &Arc<[u8]>,
    secret: &Sha2Secret,
) -> Option<Sha2Secret> {
    if check(stored, secret).await {
        shared
            .accounts
            .sha2_cache
            .insert((name, host), stored, secret);
        return Some(secret.clone());
    }
    shared.accounts.refresh_after_miss().await;
    match shared.accounts.lookup(&hello.user, peer).await {
        Lookup::FoundSha2 {
            name,
            host,
            stored: fresh,
            ..
        } if fresh != *stored && check(&fresh, secret).await => {
            shared
                .accounts
                .sha2_cache
                .insert((&name, &host), &fresh, secret);
            Some(secret.clone())
        }
        _ => None,
    }
}

async fn check(stored: &Arc<[u8]>, secret: &Sha2Secret) -> bool {
    let stored = stored.clone();
    let secret = secret.clone();
    tokio::task::spawn_blocking(move || {
        ShaCryptHash::parse(&stored).is_some_and(|h| h.verify(secret.password()))
    })
    .await
    .unwrap_or(false)
}

/// Sends an AuthMoreData packet (`0x01` + `data`).
async fn more_data<S: ClientTransport>(
    client: &mut PacketStream<S>,
    seq: u8,
    data: &[u8],
) -> Result<(), FrameError> {
    let mut buf = Vec::with_capacity(1 + data.len());
    buf.push(0x01);
    buf.extend_from_slice(data);
    client.queue_payload(seq, &buf);
    client.flush().await
}

/// Asks for a full authentication and reads the cleartext password: as
/// is over TLS / the Unix socket, RSA-encrypted otherwise. Returns it and
/// the sequence id of rwproxy's next packet.
async fn full_auth<S: ClientTransport>(
    shared: &Shared,
    client: &mut PacketStream<S>,
    user: &str,
    peer: ClientAddr,
    seq: u8,
    scramble: &[u8; SCRAMBLE_LEN],
    secure: bool,
) -> Result<(Sha2Secret, u8), Sha2LoginError> {
    let denied = |seq: u8| Sha2LoginError::Refused {
        err: ClientError::access_denied(user, &shared.accounts.host_name(&peer), true),
        seq,
    };
    more_data(client, seq, &[PERFORM_FULL_AUTH]).await?;
    let p = client.read_packet(4096, Some(seq.wrapping_add(1))).await?;
    let mut next = p.last_seq.wrapping_add(1);
    tracing::debug!(len = p.payload.len(), first = ?p.payload.first(), secure, "caching_sha2 full authentication");
    if secure {
        let end = p
            .payload
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(p.payload.len());
        let secret = Sha2Secret::new(&p.payload[..end]);
        return Ok((secret, next));
    }
    let Some(key) = shared.accounts.rsa_key().await else {
        return Err(Sha2LoginError::Refused {
            err: ClientError::new(
                2061,
                b"HY000",
                "Authentication requires secure connection (rwproxy has no RSA key)",
            ),
            seq: next,
        });
    };
    let encrypted = if p.payload.as_ref() == [REQUEST_PUBLIC_KEY] {
        more_data(client, next, key.public_pem().as_bytes()).await?;
        let p = client.read_packet(4096, Some(next.wrapping_add(1))).await?;
        next = p.last_seq.wrapping_add(1);
        p.payload.to_vec()
    } else {
        // A client that already has the key (`--server-public-key-path`).
        p.payload.to_vec()
    };
    let secret = key
        .decrypt_password(&encrypted, scramble)
        .ok_or_else(|| denied(next))?;
    Ok((secret, next))
}
