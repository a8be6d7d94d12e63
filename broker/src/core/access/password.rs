//! Password hashes in RabbitMQ's format, so users exported from RabbitMQ log in with the same
//! passwords: a 4-byte random salt, then the digest of salt ++ password, the two base64-encoded
//! together (`rabbit_password`, `rabbit_password_hashing_sha256` / `_sha512`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256, Sha512};

/// A hashing algorithm, by RabbitMQ's module name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Hashing {
    /// `rabbit_password_hashing_sha256`, RabbitMQ's default.
    #[default]
    Sha256,
    /// `rabbit_password_hashing_sha512`.
    Sha512,
}

impl Hashing {
    /// RabbitMQ's name for it, as definitions files carry it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Hashing::Sha256 => "rabbit_password_hashing_sha256",
            Hashing::Sha512 => "rabbit_password_hashing_sha512",
        }
    }

    /// The algorithm a definitions file names (`None`: one Warren does not support, such as
    /// the legacy `rabbit_password_hashing_md5`).
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name {
            "rabbit_password_hashing_sha256" => Some(Hashing::Sha256),
            "rabbit_password_hashing_sha512" => Some(Hashing::Sha512),
            _ => None,
        }
    }

    fn digest(self, salt: &[u8], password: &[u8]) -> Vec<u8> {
        match self {
            Hashing::Sha256 => Sha256::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
            Hashing::Sha512 => Sha512::new()
                .chain_update(salt)
                .chain_update(password)
                .finalize()
                .to_vec(),
        }
    }
}

/// Hashes a password with a fresh random salt; returns the base64 text definitions carry.
pub(crate) fn hash(algorithm: Hashing, password: &str) -> String {
    let salt: [u8; 4] = rand::random();
    let mut out = salt.to_vec();
    out.extend(algorithm.digest(&salt, password.as_bytes()));
    STANDARD.encode(out)
}

/// Whether `password` matches a stored base64 hash, as `rabbit_auth_backend_internal` checks
/// it: the first 4 bytes are the salt, the rest must equal the digest of salt ++ password. An
/// empty or malformed hash (a user without a password) matches nothing.
pub(crate) fn verify(algorithm: Hashing, stored: &str, password: &str) -> bool {
    let Ok(raw) = STANDARD.decode(stored) else {
        return false;
    };
    if raw.len() <= 4 {
        return false;
    }
    let (salt, expected) = raw.split_at(4);
    let actual = algorithm.digest(salt, password.as_bytes());
    // Constant time over the digest, so the comparison leaks nothing about the stored hash.
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// Whether a stored hash has the shape `algorithm` produces (base64 of 4 + digest bytes), or
/// is empty (no password).
pub(crate) fn well_formed(algorithm: Hashing, stored: &str) -> bool {
    if stored.is_empty() {
        return true;
    }
    let digest_len = match algorithm {
        Hashing::Sha256 => 32,
        Hashing::Sha512 => 64,
    };
    STANDARD
        .decode(stored)
        .is_ok_and(|raw| raw.len() == 4 + digest_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_a_hash_made_by_rabbitmq() {
        // `rabbitmqctl hash_password guest` output style: the salt is the first 4 bytes.
        let salt = [0x90u8, 0x8d, 0xc6, 0x0a];
        let mut raw = salt.to_vec();
        raw.extend(Sha256::digest([&salt[..], b"guest"].concat()));
        let stored = STANDARD.encode(raw);
        assert!(verify(Hashing::Sha256, &stored, "guest"));
        assert!(!verify(Hashing::Sha256, &stored, "guesT"));
        assert!(!verify(Hashing::Sha512, &stored, "guest"));
    }

    #[test]
    fn round_trips_and_rejects_empty_hashes() {
        for alg in [Hashing::Sha256, Hashing::Sha512] {
            let h = hash(alg, "s3cret");
            assert!(well_formed(alg, &h));
            assert!(verify(alg, &h, "s3cret"));
            assert!(!verify(alg, &h, ""));
            assert_ne!(h, hash(alg, "s3cret"), "salted");
        }
        assert!(!verify(Hashing::Sha256, "", ""));
        assert!(!verify(Hashing::Sha256, "not base64!", "x"));
        assert!(!well_formed(Hashing::Sha256, "AAAA"));
    }
}
