//! `caching_sha2_password` arithmetic and keys, for both sides of rwproxy.
//!
//! The exchange (MySQL 8.0+, the only plugin of MySQL 9.x):
//! - fast path: the client answers the 20-byte nonce `N` with
//!   `R = SHA256(pw) XOR SHA256(SHA256(SHA256(pw)) ‖ N)`. Checking it needs
//!   `H2 = SHA256(SHA256(pw))`, which the server only has in memory after a
//!   full authentication of that account (its "cache"). It then sends
//!   `0x01 0x03` and OK.
//! - full authentication (`0x01 0x04`): the client sends its cleartext
//!   password + NUL over TLS (or a Unix socket); on plaintext it asks for
//!   the server's RSA public key (`0x02`, answered with `0x01` + PEM) and
//!   sends `RSA-OAEP-SHA1((pw ‖ NUL) XOR N)`. The server checks the cleartext
//!   against the stored `$A$<rounds/1000 as 3 hex>$<20-byte salt><43 chars>`
//!   SHA-256-crypt hash (`mysql.user.authentication_string`).
//!
//! mysql_common has the client-side scramble (`scramble_sha256`); the
//! server side (verification, SHA-256-crypt with MySQL's 20-byte salts, RSA
//! decryption) is here, on RustCrypto's `sha2` and `rsa`.

use std::collections::HashMap;
use std::sync::Mutex;

use rsa::pkcs8::{DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The plugin's name on the wire.
pub const PLUGIN: &str = "caching_sha2_password";
/// `AuthMoreData` byte: fast authentication succeeded (OK follows).
pub const FAST_AUTH_SUCCESS: u8 = 0x03;
/// `AuthMoreData` byte: send the password (full authentication).
pub const PERFORM_FULL_AUTH: u8 = 0x04;
/// Client byte: send me your RSA public key.
pub const REQUEST_PUBLIC_KEY: u8 = 0x02;
/// Bits of rwproxy's own RSA key (MySQL's default key size).
const RSA_BITS: usize = 2048;

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A cleartext password held for logging into servers as the client's
/// user. Wiped from memory when dropped; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Sha2Secret(Zeroizing<Vec<u8>>);

impl Sha2Secret {
    pub fn new(password: &[u8]) -> Sha2Secret {
        Sha2Secret(Zeroizing::new(password.to_vec()))
    }

    pub fn password(&self) -> &[u8] {
        &self.0
    }

    /// `SHA256(SHA256(pw))`: what verifies a fast-path reply.
    pub fn double_hash(&self) -> [u8; 32] {
        sha256(&[&sha256(&[&self.0])])
    }

    /// The fast-path answer to a server's `nonce`.
    pub fn scramble(&self, nonce: &[u8]) -> [u8; 32] {
        let h1 = sha256(&[&self.0]);
        let mask = sha256(&[&sha256(&[&h1]), nonce]);
        let mut out = [0u8; 32];
        for i in 0..32 {
            out[i] = h1[i] ^ mask[i];
        }
        out
    }
}

impl std::fmt::Debug for Sha2Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sha2Secret(<redacted>)")
    }
}

/// Checks a fast-path reply against `H2 = SHA256(SHA256(pw))`.
pub fn verify_fast(nonce: &[u8], reply: &[u8], h2: &[u8; 32]) -> bool {
    if reply.len() != 32 {
        return false;
    }
    let mask = sha256(&[h2, nonce]);
    let mut h1 = [0u8; 32];
    for i in 0..32 {
        h1[i] = reply[i] ^ mask[i];
    }
    let check = sha256(&[&h1]);
    check
        .iter()
        .zip(h2.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// A stored `caching_sha2_password` hash: `$A$` + 3 hex digits (rounds
/// / 1000) + `$` + 20 salt bytes + 43 characters of SHA-256-crypt digest.
#[derive(Clone, PartialEq, Eq)]
pub struct ShaCryptHash {
    rounds: u32,
    salt: Vec<u8>,
    digest: Vec<u8>,
}

impl std::fmt::Debug for ShaCryptHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ShaCryptHash(rounds {}, <redacted>)", self.rounds)
    }
}

/// MySQL's salt length (`CRYPT_SALT_LENGTH`).
const SALT_LEN: usize = 20;
/// Characters of a base64-encoded SHA-256-crypt digest.
const DIGEST_LEN: usize = 43;

impl ShaCryptHash {
    /// Parses `mysql.user.authentication_string` of a caching_sha2 account.
    pub fn parse(stored: &[u8]) -> Option<ShaCryptHash> {
        let rest = stored.strip_prefix(b"$A$")?;
        let count = std::str::from_utf8(rest.get(..3)?).ok()?;
        let rounds = u32::from_str_radix(count, 16).ok()?.checked_mul(1000)?;
        if rest.get(3) != Some(&b'$') || rounds == 0 {
            return None;
        }
        let body = rest.get(4..)?;
        if body.len() != SALT_LEN + DIGEST_LEN {
            return None;
        }
        Some(ShaCryptHash {
            rounds,
            salt: body[..SALT_LEN].to_vec(),
            digest: body[SALT_LEN..].to_vec(),
        })
    }

    /// Whether `password` is the one this hash was made from (CPU time:
    /// `rounds` SHA-256 computations, ~5 ms for MySQL's 10,000).
    pub fn verify(&self, password: &[u8]) -> bool {
        let d = sha256_crypt(password, &self.salt, self.rounds);
        d.iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
            && d.len() == self.digest.len()
    }
}

/// SHA-256-crypt (Drepper's "Unix crypt using SHA-256", as MySQL's
/// `my_crypt_genhash` implements it: the salt is used whole, 20 bytes,
/// where glibc would cut it at 16), returning the 43 base64 characters.
pub fn sha256_crypt(pw: &[u8], salt: &[u8], rounds: u32) -> Vec<u8> {
    let b = sha256(&[pw, salt, pw]);
    let mut ctx = Sha256::new();
    ctx.update(pw);
    ctx.update(salt);
    let mut n = pw.len();
    while n > 32 {
        ctx.update(b);
        n -= 32;
    }
    ctx.update(&b[..n]);
    let mut n = pw.len();
    while n > 0 {
        if n & 1 == 1 {
            ctx.update(b);
        } else {
            ctx.update(pw);
        }
        n >>= 1;
    }
    let a: [u8; 32] = ctx.finalize().into();
    let mut dp = Sha256::new();
    for _ in 0..pw.len() {
        dp.update(pw);
    }
    let dp: [u8; 32] = dp.finalize().into();
    let p: Zeroizing<Vec<u8>> = Zeroizing::new(dp.iter().copied().cycle().take(pw.len()).collect());
    let mut ds = Sha256::new();
    for _ in 0..16 + usize::from(a[0]) {
        ds.update(salt);
    }
    let ds: [u8; 32] = ds.finalize().into();
    let s: Vec<u8> = ds.iter().copied().cycle().take(salt.len()).collect();
    let mut c = a;
    for i in 0..rounds {
        let mut h = Sha256::new();
        if i & 1 == 1 {
            h.update(&*p);
        } else {
            h.update(c);
        }
        if i % 3 != 0 {
            h.update(&s);
        }
        if i % 7 != 0 {
            h.update(&*p);
        }
        if i & 1 == 1 {
            h.update(c);
        } else {
            h.update(&*p);
        }
        c = h.finalize().into();
    }
    const ALPHABET: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const GROUPS: [(usize, usize, usize); 10] = [
        (0, 10, 20),
        (21, 1, 11),
        (12, 22, 2),
        (3, 13, 23),
        (24, 4, 14),
        (15, 25, 5),
        (6, 16, 26),
        (27, 7, 17),
        (18, 28, 8),
        (9, 19, 29),
    ];
    let mut out = Vec::with_capacity(DIGEST_LEN);
    let mut push = |w: u32, n: usize| {
        let mut w = w;
        for _ in 0..n {
            out.push(ALPHABET[(w & 0x3f) as usize]);
            w >>= 6;
        }
    };
    for (x, y, z) in GROUPS {
        push(
            (u32::from(c[x]) << 16) | (u32::from(c[y]) << 8) | u32::from(c[z]),
            4,
        );
    }
    push((u32::from(c[31]) << 8) | u32::from(c[30]), 3);
    out
}

/// `(password ‖ NUL) XOR nonce` (nonce repeated), what RSA encrypts.
fn xor_nonce(data: &[u8], nonce: &[u8]) -> Zeroizing<Vec<u8>> {
    if nonce.is_empty() {
        return Zeroizing::new(data.to_vec());
    }
    Zeroizing::new(
        data.iter()
            .zip(nonce.iter().cycle())
            .map(|(a, b)| a ^ b)
            .collect(),
    )
}

/// Encrypts a password for a server that sent its RSA public key (PEM,
/// SubjectPublicKeyInfo or PKCS#1), as MySQL clients do: OAEP with SHA-1.
/// `None` if the key cannot be read or is too small for the password.
pub fn encrypt_password(password: &[u8], nonce: &[u8], pem: &[u8]) -> Option<Vec<u8>> {
    use rsa::pkcs1::DecodeRsaPublicKey;
    let text = std::str::from_utf8(pem).ok()?.trim_end_matches('\0');
    let key = RsaPublicKey::from_public_key_pem(text)
        .or_else(|_| RsaPublicKey::from_pkcs1_pem(text))
        .ok()?;
    let mut plain = Zeroizing::new(password.to_vec());
    plain.push(0);
    let masked = xor_nonce(&plain, nonce);
    key.encrypt(&mut rand_core::OsRng, Oaep::new::<sha1::Sha1>(), &masked)
        .ok()
}

/// rwproxy's own RSA key pair for clients that do full authentication over
/// plaintext. Generated in memory at first use, never written anywhere:
/// a client that asks gets the public half (as from a MySQL server whose
/// `caching_sha2_password_auto_generate_rsa_keys` made one).
pub struct RsaKey {
    private: RsaPrivateKey,
    public_pem: String,
}

impl RsaKey {
    /// Generates a 2048-bit key (CPU: 0.1–2 s; call off the async threads).
    pub fn generate() -> Option<RsaKey> {
        let private = RsaPrivateKey::new(&mut rand_core::OsRng, RSA_BITS).ok()?;
        let public_pem = private
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .ok()?;
        Some(RsaKey {
            private,
            public_pem,
        })
    }

    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Decrypts a client's RSA-encrypted password; `None` if it does not
    /// decrypt. The trailing NUL is removed.
    pub fn decrypt_password(&self, data: &[u8], nonce: &[u8]) -> Option<Sha2Secret> {
        let plain = Zeroizing::new(self.private.decrypt(Oaep::new::<sha1::Sha1>(), data).ok()?);
        let clear = xor_nonce(&plain, nonce);
        let end = clear.iter().position(|b| *b == 0).unwrap_or(clear.len());
        Some(Sha2Secret::new(&clear[..end]))
    }
}

/// What rwproxy remembers of an account after a full authentication,
/// keyed by `(user, host pattern)` of the account.
struct CacheEntry {
    /// The stored hash it was verified against: a changed password
    /// (ALTER USER, seen at the next accounts refresh) no longer matches,
    /// so the entry is dropped, as the server evicts its own on ALTER USER.
    stored: Vec<u8>,
    /// `SHA256(SHA256(pw))`: checks fast-path replies.
    double_hash: [u8; 32],
    /// The cleartext password, for full authentication on servers that
    /// do not have the account in their own cache (restart, FLUSH
    /// PRIVILEGES, a replica that never saw this user log in).
    secret: Sha2Secret,
}

/// The in-memory cache of successful full authentications (servers mode).
#[derive(Default)]
pub struct Sha2Cache {
    entries: Mutex<HashMap<(String, String), CacheEntry>>,
}

impl Sha2Cache {
    /// A fast-path check: `None` on a cache miss (full authentication
    /// needed); `Some(Ok(secret))` when the account is cached for this
    /// stored hash and `reply` proves the same password; `Some(Err(()))`
    /// for a wrong reply on a cached account (access denied, as mysqld).
    pub fn fast(
        &self,
        account: (&str, &str),
        stored: &[u8],
        nonce: &[u8],
        reply: &[u8],
    ) -> Option<Result<Sha2Secret, ()>> {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let key = (account.0.to_string(), account.1.to_string());
        let entry = map.get(&key)?;
        if entry.stored != stored {
            map.remove(&key);
            return None;
        }
        Some(if verify_fast(nonce, reply, &entry.double_hash) {
            Ok(entry.secret.clone())
        } else {
            Err(())
        })
    }

    /// Remembers a successful full authentication.
    pub fn insert(&self, account: (&str, &str), stored: &[u8], secret: &Sha2Secret) {
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(
            (account.0.to_string(), account.1.to_string()),
            CacheEntry {
                stored: stored.to_vec(),
                double_hash: secret.double_hash(),
                secret: secret.clone(),
            },
        );
    }

    /// Drops entries of accounts that no longer exist or changed (called
    /// after each accounts refresh with the current `(user, host, stored)`).
    pub fn retain_current<'a>(&self, current: impl Iterator<Item = (&'a str, &'a str, &'a [u8])>) {
        let keep: HashMap<(&str, &str), &[u8]> = current.map(|(u, h, s)| ((u, h), s)).collect();
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|(u, h), e| {
            keep.get(&(u.as_str(), h.as_str()))
                .is_some_and(|s| *s == e.stored.as_slice())
        });
    }

    /// Number of cached accounts.
    pub fn len(&self) -> usize {
        self.entries.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// `SELECT HEX(authentication_string) FROM mysql.user` on MySQL 9.7.4
    /// (the sandbox), for `app` IDENTIFIED BY 'app' and `root` BY 'root'.
    const APP: &str = "244124303041247A466A2D393B3349764D3172760D576D0E0754726A306D466F4A764A6E397A4A57555753306146492E6A316B477977796F494A2E304F39567655736948562F";
    const ROOT: &str = "24412430304124011A6C4649572A25252B5D4F3C2F306919293507623632444C53417A4B34362E722E6A5479457A3974614D7A6F314C6D393738435835585838377A67527032";

    #[test]
    fn verifies_hashes_made_by_mysql_9_7() {
        let app = ShaCryptHash::parse(&unhex(APP)).expect("parse");
        assert_eq!(app.rounds, 10_000);
        assert!(app.verify(b"app"));
        assert!(!app.verify(b"App"));
        assert!(!app.verify(b""));
        let root = ShaCryptHash::parse(&unhex(ROOT)).expect("parse");
        assert!(root.verify(b"root"));
        assert!(!root.verify(b"app"));
    }

    #[test]
    fn glibc_vector_with_a_short_salt() {
        // glibc crypt() and `openssl passwd -5 -salt saltstring "Hello world!"`.
        assert_eq!(
            sha256_crypt(b"Hello world!", b"saltstring", 5000),
            b"5B8vYYiY.CVt1RlTTf8KbXBH3hsxY/GNooZaBBGWEc5".to_vec()
        );
    }

    #[test]
    fn malformed_hashes_are_refused() {
        let good = unhex(APP);
        assert!(ShaCryptHash::parse(&good[..good.len() - 1]).is_none());
        assert!(ShaCryptHash::parse(b"*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3").is_none());
        assert!(ShaCryptHash::parse(b"$A$zzz$").is_none());
        assert!(ShaCryptHash::parse(b"").is_none());
        let mut zero = good.clone();
        zero[3..6].copy_from_slice(b"000");
        assert!(ShaCryptHash::parse(&zero).is_none());
    }

    #[test]
    fn fast_path_matches_mysql_common() {
        let nonce = crate::protocol::auth::new_scramble();
        let secret = Sha2Secret::new(b"s3cret");
        let client = mysql_common::scramble::scramble_sha256(&nonce, b"s3cret").expect("some");
        assert_eq!(secret.scramble(&nonce), client);
        assert!(verify_fast(&nonce, &client, &secret.double_hash()));
        let wrong = mysql_common::scramble::scramble_sha256(&nonce, b"nope").expect("some");
        assert!(!verify_fast(&nonce, &wrong, &secret.double_hash()));
        assert!(!verify_fast(&nonce, &client[..31], &secret.double_hash()));
    }

    #[test]
    fn rsa_round_trip_with_mysql_common_client_side() {
        let key = RsaKey::generate().expect("key");
        let nonce = crate::protocol::auth::new_scramble();
        // What mysql_async sends: encrypt((pw ‖ NUL) XOR nonce).
        let mut masked = b"s3cret\0".to_vec();
        for (i, b) in masked.iter_mut().enumerate() {
            *b ^= nonce[i % nonce.len()];
        }
        let data = mysql_common::crypto::encrypt(&masked, key.public_pem().as_bytes());
        let got = key.decrypt_password(&data, &nonce).expect("decrypts");
        assert_eq!(got.password(), b"s3cret");
        // Ours, as the backend side sends it.
        let data = encrypt_password(b"s3cret", &nonce, key.public_pem().as_bytes()).expect("enc");
        assert_eq!(
            key.decrypt_password(&data, &nonce).expect("dec").password(),
            b"s3cret"
        );
        assert!(key.decrypt_password(b"garbage", &nonce).is_none());
        assert!(encrypt_password(b"x", &nonce, b"not a key").is_none());
    }

    #[test]
    fn cache_forgets_changed_accounts() {
        let cache = Sha2Cache::default();
        let nonce = crate::protocol::auth::new_scramble();
        let secret = Sha2Secret::new(b"pw");
        let reply = secret.scramble(&nonce);
        assert!(cache.fast(("u", "%"), b"h1", &nonce, &reply).is_none());
        cache.insert(("u", "%"), b"h1", &secret);
        assert_eq!(
            cache.fast(("u", "%"), b"h1", &nonce, &reply),
            Some(Ok(secret.clone()))
        );
        let wrong = Sha2Secret::new(b"px").scramble(&nonce);
        assert_eq!(cache.fast(("u", "%"), b"h1", &nonce, &wrong), Some(Err(())));
        // Password changed on the server: a different stored hash.
        assert!(cache.fast(("u", "%"), b"h2", &nonce, &reply).is_none());
        assert!(cache.is_empty());
        cache.insert(("u", "%"), b"h1", &secret);
        cache.retain_current([("u", "%", &b"h1"[..])].into_iter());
        assert_eq!(cache.len(), 1);
        cache.retain_current([("v", "%", &b"h1"[..])].into_iter());
        assert!(cache.is_empty());
    }
}
