//! The client side of SCRAM (RFC 5802, with SHA-256 per RFC 7677 and SHA-512 as Kafka uses
//! it): builds the client-first and client-final messages and checks the server's
//! signature. Pure computation on ring's HMAC, PBKDF2 and random source; no I/O.
//!
//! Kafka sends no channel binding (`n,,` GS2 header) and does not SASLprep user names or
//! passwords: the bytes given are the bytes hashed, as in Kafka's own client.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ring::{hmac, pbkdf2, rand::SecureRandom};

/// Which hash the mechanism uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScramHash {
    Sha256,
    Sha512,
}

impl ScramHash {
    fn hmac(self) -> hmac::Algorithm {
        match self {
            Self::Sha256 => hmac::HMAC_SHA256,
            Self::Sha512 => hmac::HMAC_SHA512,
        }
    }

    fn pbkdf2(self) -> pbkdf2::Algorithm {
        match self {
            Self::Sha256 => pbkdf2::PBKDF2_HMAC_SHA256,
            Self::Sha512 => pbkdf2::PBKDF2_HMAC_SHA512,
        }
    }

    fn digest(self) -> &'static ring::digest::Algorithm {
        match self {
            Self::Sha256 => &ring::digest::SHA256,
            Self::Sha512 => &ring::digest::SHA512,
        }
    }
}

/// Why a SCRAM exchange cannot go on. Never carries the password or a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ScramError {
    #[error("the broker's SCRAM challenge is malformed ({0})")]
    Malformed(&'static str),
    #[error("the broker's SCRAM nonce does not extend kferry's (a broker or proxy not to trust)")]
    NonceMismatch,
    #[error(
        "the broker asks for {0} PBKDF2 iterations; Kafka requires at least 4096 and kferry accepts at most 100000"
    )]
    Iterations(u32),
    #[error("the broker refused the SCRAM proof: {0}")]
    ServerError(String),
    #[error("the broker's SCRAM signature is wrong: it does not know this user's credentials (a server to not trust)")]
    BadServerSignature,
    #[error("no random nonce could be drawn")]
    Random,
}

/// A SCRAM exchange in progress, between client-first and server-final.
pub(crate) struct ScramClient {
    hash: ScramHash,
    client_first_bare: String,
    nonce: String,
    /// Set by [`ScramClient::client_final`]; checked against the server's final message.
    server_signature: Option<Vec<u8>>,
}

impl ScramClient {
    /// Starts an exchange for `username` with a fresh random nonce; returns the client-first
    /// message to send.
    pub(crate) fn start(hash: ScramHash, username: &str) -> Result<(Self, String), ScramError> {
        let mut raw = [0u8; 24];
        ring::rand::SystemRandom::new().fill(&mut raw).map_err(|_| ScramError::Random)?;
        Ok(Self::with_nonce(hash, username, &BASE64.encode(raw)))
    }

    /// As [`ScramClient::start`] with a given nonce (the RFC test vectors fix it).
    fn with_nonce(hash: ScramHash, username: &str, nonce: &str) -> (Self, String) {
        let client_first_bare = format!("n={},r={nonce}", escape_username(username));
        let first = format!("n,,{client_first_bare}");
        (Self { hash, client_first_bare, nonce: nonce.to_owned(), server_signature: None }, first)
    }

    /// Answers the server-first message with the client-final message (the proof).
    pub(crate) fn client_final(&mut self, server_first: &str, password: &str) -> Result<String, ScramError> {
        let attributes = attributes(server_first);
        if let Some(error) = attributes.iter().find(|(k, _)| *k == 'e') {
            return Err(ScramError::ServerError(error.1.to_owned()));
        }
        let nonce = attribute(&attributes, 'r').ok_or(ScramError::Malformed("no nonce"))?;
        let salt = attribute(&attributes, 's').ok_or(ScramError::Malformed("no salt"))?;
        let iterations = attribute(&attributes, 'i').ok_or(ScramError::Malformed("no iteration count"))?;
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = BASE64.decode(salt).map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = iterations.parse().map_err(|_| ScramError::Malformed("iteration count"))?;
        // Kafka's minimum is 4096 (ScramMechanism); a huge count from a hostile server would
        // pin a core for minutes.
        if !(4096..=100_000).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let iterations = NonZeroU32::new(iterations).ok_or(ScramError::Iterations(0))?;

        let mut salted = vec![0u8; self.hash.digest().output_len()];
        pbkdf2::derive(self.hash.pbkdf2(), iterations, &salt, password.as_bytes(), &mut salted);
        let salted = hmac::Key::new(self.hash.hmac(), &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = ring::digest::digest(self.hash.digest(), client_key.as_ref());
        // "biws" is base64("n,,"): the GS2 header without channel binding.
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature =
            hmac::sign(&hmac::Key::new(self.hash.hmac(), stored_key.as_ref()), auth_message.as_bytes());
        let proof: Vec<u8> =
            client_key.as_ref().iter().zip(client_signature.as_ref()).map(|(key, sig)| key ^ sig).collect();
        let server_key = hmac::sign(&salted, b"Server Key");
        let server_signature =
            hmac::sign(&hmac::Key::new(self.hash.hmac(), server_key.as_ref()), auth_message.as_bytes());
        self.server_signature = Some(server_signature.as_ref().to_vec());
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Checks the server-final message: the server proves it knows the credentials too.
    pub(crate) fn verify_server_final(&self, server_final: &str) -> Result<(), ScramError> {
        let attributes = attributes(server_final);
        if let Some(error) = attribute(&attributes, 'e') {
            return Err(ScramError::ServerError(error.to_owned()));
        }
        let verifier = attribute(&attributes, 'v').ok_or(ScramError::Malformed("no server signature"))?;
        let verifier = BASE64.decode(verifier).map_err(|_| ScramError::Malformed("signature is not base64"))?;
        let expected = self.server_signature.as_deref().ok_or(ScramError::Malformed("server-final came too early"))?;
        // Not secret-dependent timing that matters here: the server already knows both.
        if verifier != expected {
            return Err(ScramError::BadServerSignature);
        }
        Ok(())
    }
}

/// RFC 5802 §5.1: ',' and '=' in a user name are written as =2C and =3D.
fn escape_username(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn attributes(message: &str) -> Vec<(char, &str)> {
    message
        .split(',')
        .filter_map(|part| {
            let mut chars = part.chars();
            let key = chars.next()?;
            part[key.len_utf8()..].strip_prefix('=').map(|value| (key, value))
        })
        .collect()
}

fn attribute<'a>(attributes: &[(char, &'a str)], key: char) -> Option<&'a str> {
    attributes.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677 §3: the SCRAM-SHA-256 example exchange, user "user", password "pencil".
    #[test]
    fn rfc7677_sha256_vector() {
        let (mut client, first) = ScramClient::with_nonce(ScramHash::Sha256, "user", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(first, "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        let last = client.client_final(server_first, "pencil").unwrap();
        assert_eq!(
            last,
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        client.verify_server_final("v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=").unwrap();
        assert_eq!(
            client.verify_server_final("v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(ScramError::BadServerSignature)
        );
    }

    #[test]
    fn hostile_or_broken_challenges_are_errors() {
        let (mut client, _) = ScramClient::with_nonce(ScramHash::Sha512, "u", "abc");
        assert_eq!(client.client_final("r=xyz,s=QQ==,i=4096", "p"), Err(ScramError::NonceMismatch));
        assert_eq!(client.client_final("r=abc,s=QQ==,i=4096", "p"), Err(ScramError::NonceMismatch));
        assert_eq!(client.client_final("r=abcd,s=QQ==,i=10", "p"), Err(ScramError::Iterations(10)));
        assert_eq!(client.client_final("r=abcd,i=4096", "p"), Err(ScramError::Malformed("no salt")));
        assert_eq!(client.client_final("e=invalid-proof", "p"), Err(ScramError::ServerError("invalid-proof".into())));
        assert_eq!(client.verify_server_final("v=AAAA"), Err(ScramError::Malformed("server-final came too early")));
    }

    #[test]
    fn user_names_are_escaped() {
        let (_, first) = ScramClient::with_nonce(ScramHash::Sha256, "a=b,c", "n");
        assert_eq!(first, "n,,n=a=3Db=2Cc,r=n");
    }
}
