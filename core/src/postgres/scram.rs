//! The client side of SCRAM-SHA-256 (RFC 5802, RFC 7677) with the nonce as an input.
//!
//! `postgres-protocol`'s `ScramSha256::new` draws its nonce from the thread RNG, which
//! core must never touch; this exchange is the same computation built from `hmac` and
//! `sha2`, with the client nonce made from entropy the driver hands in. Channel
//! binding is not offered (`n,,`): TLS lives in the driver.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use super::error::PgError;

/// The SASL mechanism name.
pub const SCRAM_SHA_256: &str = "SCRAM-SHA-256";

/// Bytes of entropy the driver supplies for one connection's SCRAM nonce.
pub const NONCE_ENTROPY_LEN: usize = 18;

type HmacSha256 = Hmac<Sha256>;

const GS2_HEADER: &str = "n,,";
/// `base64("n,,")`: the channel-binding field of the client-final message.
const CHANNEL_BINDING: &str = "biws";

/// One SCRAM-SHA-256 exchange, step by step.
pub(crate) struct Scram {
    client_nonce: String,
    client_first_bare: String,
    password: Vec<u8>,
    state: ScramState,
}

enum ScramState {
    /// Sent the client-first message; waiting for server-first.
    First,
    /// Sent the client-final message; waiting for server-final.
    Final { server_signature: [u8; 32] },
    /// The server proved it knows the password.
    Verified,
    /// Failed; nothing more to do.
    Failed,
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Result<[u8; 32], PgError> {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key)
        .map_err(|_| PgError::Auth("SCRAM: HMAC key rejected".into()))?;
    for part in parts {
        mac.update(part);
    }
    Ok(mac.finalize().into_bytes().into())
}

/// `Hi(password, salt, i)`: PBKDF2 with HMAC-SHA-256, one block.
fn hi(password: &[u8], salt: &[u8], iterations: u32) -> Result<[u8; 32], PgError> {
    let mut prev = hmac(password, &[salt, &[0, 0, 0, 1]])?;
    let mut out = prev;
    for _ in 1..iterations {
        prev = hmac(password, &[&prev])?;
        for (o, p) in out.iter_mut().zip(prev) {
            *o ^= p;
        }
    }
    Ok(out)
}

/// SASLprep where the password is valid UTF-8 and preparable, else the raw bytes, as
/// the server itself does.
fn normalize(password: &str) -> Vec<u8> {
    match stringprep::saslprep(password) {
        Ok(p) => p.into_owned().into_bytes(),
        Err(_) => password.as_bytes().to_vec(),
    }
}

impl Scram {
    /// Starts an exchange; the nonce is the base64 of `entropy`.
    pub(crate) fn new(password: &str, entropy: &[u8; NONCE_ENTROPY_LEN]) -> Scram {
        let client_nonce = STANDARD.encode(entropy);
        // The user name is taken from the startup message; SCRAM's is left empty.
        let client_first_bare = format!("n=,r={client_nonce}");
        Scram {
            client_nonce,
            client_first_bare,
            password: normalize(password),
            state: ScramState::First,
        }
    }

    /// The client-first message, for `SASLInitialResponse`.
    pub(crate) fn client_first(&self) -> String {
        format!("{GS2_HEADER}{}", self.client_first_bare)
    }

    /// Takes the server-first message (`AuthenticationSASLContinue`) and returns the
    /// client-final message, for `SASLResponse`.
    pub(crate) fn server_first(
        &mut self,
        message: &[u8],
        max_iterations: u32,
    ) -> Result<String, PgError> {
        if !matches!(self.state, ScramState::First) {
            return Err(PgError::Auth(
                "SCRAM: the server sent a second server-first message".into(),
            ));
        }
        self.state = ScramState::Failed;
        let server_first = std::str::from_utf8(message)
            .map_err(|_| PgError::Auth("SCRAM: the server-first message is not UTF-8".into()))?;
        let mut nonce = None;
        let mut salt = None;
        let mut iterations = None;
        for attribute in server_first.split(',') {
            match attribute.split_once('=') {
                Some(("r", v)) if nonce.is_none() => nonce = Some(v),
                Some(("s", v)) if salt.is_none() => salt = Some(v),
                Some(("i", v)) if iterations.is_none() => iterations = Some(v),
                Some(("m", _)) => {
                    return Err(PgError::Auth(
                        "SCRAM: the server requires an extension this client does not know".into(),
                    ));
                }
                _ => {
                    return Err(PgError::Auth(format!(
                        "SCRAM: unexpected attribute in the server-first message: {attribute:?}"
                    )));
                }
            }
        }
        let (Some(nonce), Some(salt), Some(iterations)) = (nonce, salt, iterations) else {
            return Err(PgError::Auth(
                "SCRAM: the server-first message lacks the nonce, salt or iteration count".into(),
            ));
        };
        if nonce.len() <= self.client_nonce.len() || !nonce.starts_with(&self.client_nonce) {
            return Err(PgError::Auth(
                "SCRAM: the server's nonce does not extend the client's".into(),
            ));
        }
        if !nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
        {
            return Err(PgError::Auth(
                "SCRAM: the server's nonce has characters outside printable ASCII".into(),
            ));
        }
        let iterations: u32 = iterations.parse().map_err(|_| {
            PgError::Auth(format!(
                "SCRAM: iteration count {iterations:?} is not a number"
            ))
        })?;
        if iterations == 0 || iterations > max_iterations {
            return Err(PgError::Auth(format!(
                "SCRAM: the server asked for {iterations} iterations; accepted are 1 to {max_iterations} (PgConfig::max_scram_iterations)"
            )));
        }
        let salt = STANDARD
            .decode(salt)
            .map_err(|_| PgError::Auth("SCRAM: the salt is not base64".into()))?;

        let salted_password = hi(&self.password, &salt, iterations)?;
        let client_key = hmac(&salted_password, &[b"Client Key"])?;
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let client_final_without_proof = format!("c={CHANNEL_BINDING},r={nonce}");
        let auth_message = format!(
            "{},{server_first},{client_final_without_proof}",
            self.client_first_bare
        );
        let client_signature = hmac(&stored_key, &[auth_message.as_bytes()])?;
        let mut proof = client_key;
        for (p, s) in proof.iter_mut().zip(client_signature) {
            *p ^= s;
        }
        let server_key = hmac(&salted_password, &[b"Server Key"])?;
        let server_signature = hmac(&server_key, &[auth_message.as_bytes()])?;
        self.state = ScramState::Final { server_signature };
        Ok(format!(
            "{client_final_without_proof},p={}",
            STANDARD.encode(proof)
        ))
    }

    /// Takes the server-final message (`AuthenticationSASLFinal`) and checks the
    /// server's signature: only then has the server proved it knows the password.
    pub(crate) fn server_final(&mut self, message: &[u8]) -> Result<(), PgError> {
        let ScramState::Final { server_signature } = self.state else {
            return Err(PgError::Auth(
                "SCRAM: the server sent its final message out of turn".into(),
            ));
        };
        self.state = ScramState::Failed;
        let text = std::str::from_utf8(message)
            .map_err(|_| PgError::Auth("SCRAM: the server-final message is not UTF-8".into()))?;
        if let Some(error) = text.strip_prefix("e=") {
            return Err(PgError::Auth(format!("SCRAM: the server said {error:?}")));
        }
        let verifier = text
            .split(',')
            .find_map(|a| a.strip_prefix("v="))
            .ok_or_else(|| {
                PgError::Auth("SCRAM: the server-final message has no verifier".into())
            })?;
        let verifier = STANDARD
            .decode(verifier)
            .map_err(|_| PgError::Auth("SCRAM: the server's verifier is not base64".into()))?;
        // Compared in constant time: every byte is looked at whatever the first
        // difference.
        let differs = verifier.len() != server_signature.len()
            || verifier
                .iter()
                .zip(server_signature)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                != 0;
        if differs {
            return Err(PgError::Auth(
                "SCRAM: the server's signature is wrong; it does not know the password (or is not the server you meant)".into(),
            ));
        }
        self.state = ScramState::Verified;
        Ok(())
    }

    /// Whether the server has proved itself.
    pub(crate) fn is_verified(&self) -> bool {
        matches!(self.state, ScramState::Verified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7677's test vector, with the user name PostgreSQL leaves empty and a nonce
    /// chosen so that the whole exchange is reproducible.
    #[test]
    fn the_exchange_matches_an_independent_computation() {
        let entropy = [7u8; NONCE_ENTROPY_LEN];
        let mut scram = Scram::new("pencil", &entropy);
        let nonce = STANDARD.encode(entropy);
        assert_eq!(scram.client_first(), format!("n,,n=,r={nonce}"));
        let salt = STANDARD.encode(b"salty salt");
        let server_first = format!("r={nonce}SERVERPART,s={salt},i=4096");
        let client_final = scram.server_first(server_first.as_bytes(), 10_000).unwrap();
        assert!(client_final.starts_with(&format!("c=biws,r={nonce}SERVERPART,p=")));

        // The server's side, computed independently from the same secrets.
        let salted = hi(b"pencil", b"salty salt", 4096).unwrap();
        let server_key = hmac(&salted, &[b"Server Key"]).unwrap();
        let auth = format!("n=,r={nonce},{server_first},c=biws,r={nonce}SERVERPART");
        let sig = hmac(&server_key, &[auth.as_bytes()]).unwrap();
        scram
            .server_final(format!("v={}", STANDARD.encode(sig)).as_bytes())
            .unwrap();
        assert!(scram.is_verified());
    }

    #[test]
    fn a_wrong_server_signature_is_refused() {
        let entropy = [1u8; NONCE_ENTROPY_LEN];
        let mut scram = Scram::new("pw", &entropy);
        let nonce = STANDARD.encode(entropy);
        scram
            .server_first(format!("r={nonce}x,s=c2FsdA==,i=1").as_bytes(), 10)
            .unwrap();
        let err = scram
            .server_final(format!("v={}", STANDARD.encode([0u8; 32])).as_bytes())
            .unwrap_err();
        assert!(err.to_string().contains("signature is wrong"), "{err}");
        assert!(!scram.is_verified());
    }

    #[test]
    fn too_many_iterations_are_refused_before_any_work() {
        let entropy = [1u8; NONCE_ENTROPY_LEN];
        let mut scram = Scram::new("pw", &entropy);
        let nonce = STANDARD.encode(entropy);
        let err = scram
            .server_first(
                format!("r={nonce}x,s=c2FsdA==,i=4000000000").as_bytes(),
                100_000,
            )
            .unwrap_err();
        assert!(err.to_string().contains("max_scram_iterations"), "{err}");
    }

    #[test]
    fn a_nonce_that_does_not_extend_the_clients_is_refused() {
        let mut scram = Scram::new("pw", &[1u8; NONCE_ENTROPY_LEN]);
        let err = scram
            .server_first(b"r=someoneelse,s=c2FsdA==,i=1", 10)
            .unwrap_err();
        assert!(err.to_string().contains("nonce"), "{err}");
    }
}
