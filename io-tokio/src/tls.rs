//! TLS for the driver's client connections (PostgreSQL, Redis), on `rustls` with the
//! `ring` provider.
//!
//! The core's protocol machines never see TLS: PostgreSQL asks for it in plain text
//! (`SSLRequest`, then `Event::StartTls`) and the driver stacks this layer under the
//! bytes; Redis (`rediss://`) speaks TLS from the first byte. Either way the driver
//! calls [`TlsClient::connect`] on the open socket and reads and writes the stream it
//! returns.
//!
//! What the server's certificate must prove is a [`Verify`], the three levels libpq's
//! `sslmode` names (`require`, `verify-ca`, `verify-full`):
//!
//! | `Verify` | encrypted | chain checked against the roots | names the host |
//! |---|---|---|---|
//! | [`Verify::Nothing`] | yes | no | no |
//! | [`Verify::Chain`] | yes | yes | no |
//! | [`Verify::Full`] | yes | yes | yes |
//!
//! The roots are the PEM certificates of a file (`sslrootcert`), or else the Mozilla
//! roots bundled with `webpki-roots` (public certificate authorities, as managed
//! services use). Errors name the file or the server and say what failed; they never
//! hold key material.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite};

pub use tokio_rustls::client::TlsStream;

/// What the server's certificate must prove.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Nothing: the connection is encrypted, but anyone on the path can pose as the
    /// server (libpq's `sslmode=require` without a root certificate file).
    Nothing,
    /// A chain to one of the roots; any host name (`verify-ca`).
    Chain,
    /// A chain to one of the roots, for the host connected to (`verify-full`, and
    /// `rediss://`).
    Full,
}

/// Why TLS could not be set up or negotiated.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The root certificate file could not be read or holds no certificate.
    #[error("TLS root certificates from {path}: {reason}")]
    Roots {
        /// The file.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
    /// The name to verify the server by is not a valid DNS name or IP address.
    #[error("{0:?} is not a host name TLS can verify (a DNS name or an IP address)")]
    ServerName(String),
    /// The TLS handshake failed (the server's certificate was refused, the server
    /// does not speak TLS, the connection broke).
    #[error("TLS handshake with {server} failed: {reason}")]
    Handshake {
        /// The server, as named for verification.
        server: String,
        /// What failed.
        reason: String,
    },
    /// The configuration could not be built (a bug or an unusable root store).
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Opens TLS sessions over established connections; cheap to clone, one per pool.
#[derive(Clone)]
pub struct TlsClient {
    config: Arc<ClientConfig>,
    verify: Verify,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsClient")
            .field("verify", &self.verify)
            .finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client that verifies as `verify` says, against the certificates in
    /// `root_cert` (PEM), or the bundled Mozilla roots when `None`.
    pub fn new(verify: Verify, root_cert: Option<&Path>) -> Result<TlsClient, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(match root_cert {
            Some(path) => roots_from_file(path)?,
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        });
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let config = match verify {
            Verify::Full => builder.with_root_certificates(roots).with_no_client_auth(),
            Verify::Chain => {
                let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
                    .build()
                    .map_err(|e| TlsError::Config(e.to_string()))?;
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly { inner }))
                    .with_no_client_auth()
            }
            Verify::Nothing => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SignaturesOnly {
                    algorithms: provider.signature_verification_algorithms,
                }))
                .with_no_client_auth(),
        };
        Ok(TlsClient {
            config: Arc::new(config),
            verify,
        })
    }

    /// What this client verifies.
    pub fn verify(&self) -> Verify {
        self.verify
    }

    /// Runs the TLS handshake over `stream` with the server named `server` (the host
    /// connected to: checked against the certificate under [`Verify::Full`], sent as
    /// SNI when it is a DNS name).
    pub async fn connect<S>(&self, server: &str, stream: S) -> Result<TlsStream<S>, TlsError>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(server.to_owned())
            .map_err(|_| TlsError::ServerName(server.to_owned()))?;
        tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, stream)
            .await
            .map_err(|e| TlsError::Handshake {
                server: server.to_owned(),
                reason: e.to_string(),
            })
    }
}

/// Decodes `%XX` escapes in a URL's part (TLS settings name files in URLs, and a
/// path may hold `&`, `?` or spaces). `None` on a bad escape or bytes that are not
/// UTF-8 once decoded.
pub(crate) fn percent_decode(part: &str) -> Option<String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, TlsError> {
    let refuse = |reason: String| TlsError::Roots {
        path: path.to_owned(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|e| refuse(e.to_string()))?;
    for cert in certs {
        let cert = cert.map_err(|e| refuse(e.to_string()))?;
        roots
            .add(cert)
            .map_err(|e| refuse(format!("a certificate is not usable as a root: {e}")))?;
    }
    if roots.is_empty() {
        return Err(refuse("the file holds no PEM certificate".to_owned()));
    }
    Ok(roots)
}

/// `verify-ca`: the chain must lead to a root, whatever host it names.
#[derive(Debug)]
struct ChainOnly {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // The name is checked after the chain: a name mismatch means the chain held.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `require`: any certificate, but the handshake's signatures must still be made by
/// the key of the certificate presented (so the session keys are the server's).
#[derive(Debug)]
struct SignaturesOnly {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for SignaturesOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
