//! `mysql_native_password` arithmetic.
//!
//! The server stores `H2 = SHA1(SHA1(password))` (printed as `*HEX`). A
//! client answers a 20-byte scramble `S` with
//! `R = SHA1(password) XOR SHA1(S ‖ H2)`. Knowing `H2`, rwproxy checks `R`
//! and recovers `H1 = SHA1(password)` as `R XOR SHA1(S ‖ H2)`; `SHA1(H1)`
//! must equal `H2`. `H1` is exactly what is needed to answer any *other*
//! scramble for the same account, so rwproxy logs into every server as the
//! client's own user without ever knowing or storing the cleartext password.

use rand::Rng;
use sha1::{Digest, Sha1};

/// Length of a native-password scramble (nonce).
pub const SCRAMBLE_LEN: usize = 20;

/// `SHA1(password)`: the credential that proves the password to a server.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Stage1(pub [u8; 20]);

impl std::fmt::Debug for Stage1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Stage1(<redacted>)")
    }
}

/// `SHA1(SHA1(password))`: what a server's `mysql.user` stores.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct NativeHash(pub [u8; 20]);

impl std::fmt::Debug for NativeHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NativeHash(<redacted>)")
    }
}

fn sha1(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// Parses `*` + 40 hex digits (as `PASSWORD()` prints, either case).
pub fn parse_native_hash(text: &str) -> Option<NativeHash> {
    let hex = text.strip_prefix('*')?;
    if hex.len() != 40 {
        return None;
    }
    let mut out = [0u8; 20];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(2 * i..2 * i + 2)?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(NativeHash(out))
}

/// Credentials derived from a cleartext password (config convenience).
pub fn from_password(password: &str) -> (Stage1, NativeHash) {
    let h1 = sha1(&[password.as_bytes()]);
    (Stage1(h1), NativeHash(sha1(&[&h1])))
}

/// Checks a client's scramble reply against the stored hash; returns
/// `SHA1(password)` when it matches.
pub fn verify(scramble: &[u8], reply: &[u8], hash: &NativeHash) -> Option<Stage1> {
    if reply.len() != 20 {
        return None;
    }
    let mask = sha1(&[scramble, &hash.0]);
    let mut h1 = [0u8; 20];
    for i in 0..20 {
        h1[i] = reply[i] ^ mask[i];
    }
    // Constant-time comparison of SHA1(h1) with the stored hash.
    let check = sha1(&[&h1]);
    let diff = check
        .iter()
        .zip(hash.0.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (diff == 0).then_some(Stage1(h1))
}

/// Answers a server's scramble with `SHA1(password)` in hand.
pub fn reply(scramble: &[u8], stage1: &Stage1) -> [u8; 20] {
    let h2 = sha1(&[&stage1.0]);
    let mask = sha1(&[scramble, &h2]);
    let mut out = [0u8; 20];
    for i in 0..20 {
        out[i] = stage1.0[i] ^ mask[i];
    }
    out
}

/// A fresh random scramble. Bytes are printable ASCII without NUL or
/// quote characters, as servers generate them, because some clients treat
/// the scramble as a NUL-terminated string.
pub fn new_scramble() -> [u8; SCRAMBLE_LEN] {
    let mut rng = rand::rng();
    let mut s = [0u8; SCRAMBLE_LEN];
    for b in s.iter_mut() {
        *b = rng.random_range(0x21u8..0x7f);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_with_mysql_common_scramble() {
        let scramble = new_scramble();
        let (stage1, hash) = from_password("s3cret");
        let client = mysql_common::scramble::scramble_native(&scramble, b"s3cret").expect("some");
        assert_eq!(verify(&scramble, &client, &hash), Some(stage1));
        assert_eq!(reply(&scramble, &stage1), client);
        let wrong = mysql_common::scramble::scramble_native(&scramble, b"nope").expect("some");
        assert_eq!(verify(&scramble, &wrong, &hash), None);
        assert_eq!(verify(&scramble, &wrong[..5], &hash), None);
    }

    #[test]
    fn parses_password_function_output() {
        // SELECT PASSWORD('app') on MariaDB.
        let h = parse_native_hash("*5BCB3E6AC345B435C7C2E6B7949A04CE6F6563D3").expect("hash");
        assert_eq!(from_password("app").1, h);
        assert!(parse_native_hash("5BCB3E6AC345B435C7C2E6B7949A2C3BFBF6090E").is_none());
        assert!(parse_native_hash("*5BCB").is_none());
        assert!(parse_native_hash("*ZZCB3E6AC345B435C7C2E6B7949A2C3BFBF6090E").is_none());
        assert!(parse_native_hash("*é").is_none());
    }

    #[test]
    fn scrambles_are_random_and_printable() {
        let a = new_scramble();
        let b = new_scramble();
        assert_ne!(a, b);
        assert!(a.iter().all(|&c| (0x21..0x7f).contains(&c)));
    }
}
