//! TLS to RabbitMQ (`amqps://`) and Redis (`rediss://`): the CA file an operator
//! gives, the rustls client configuration built from it, and what a failed handshake
//! means.
//!
//! Verification is always on. With a CA file, only its certificates are trusted;
//! without one, the Mozilla root set bundled in the binary (webpki-roots), the same
//! for both services and whatever the image's system store holds. A certificate the
//! client does not trust, or one that does not name the URL's host, is a
//! [`TlsFailure`]: it fails the same way on every try, so callers stop at once
//! instead of retrying for their whole connect window.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The certificates of a CA file, read and checked once at start.
#[derive(Clone)]
pub struct Ca {
    path: PathBuf,
    pem: Vec<u8>,
    roots: RootCertStore,
}

impl Ca {
    /// Reads and checks `path`: PEM with at least one `CERTIFICATE` block, each one
    /// usable as a trust anchor.
    pub fn read(path: &Path) -> Result<Ca, CaFileError> {
        let pem = std::fs::read(path).map_err(|source| CaFileError::Read { path: path.to_path_buf(), source })?;
        Ca::parse(path, pem)
    }

    /// Checks the contents of a CA file (`path` only names it in errors).
    pub fn parse(path: &Path, pem: Vec<u8>) -> Result<Ca, CaFileError> {
        let path = path.to_path_buf();
        let mut roots = RootCertStore::empty();
        for (index, cert) in CertificateDer::pem_slice_iter(&pem).enumerate() {
            let cert = cert.map_err(|source| CaFileError::Pem { path: path.clone(), source })?;
            roots.add(cert).map_err(|source| CaFileError::Anchor { path: path.clone(), index: index + 1, source })?;
        }
        if roots.is_empty() {
            return Err(CaFileError::Empty { path });
        }
        Ok(Ca { path, pem, roots })
    }

    /// The file the certificates came from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's PEM text (the form redis-rs takes).
    pub fn pem(&self) -> &[u8] {
        &self.pem
    }
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").field("path", &self.path).field("certificates", &self.roots.len()).finish()
    }
}

/// A CA file that cannot be used; reported at start, before anything connects.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file cannot be read.
    #[error("CA file {}: cannot read it", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A PEM section is malformed.
    #[error("CA file {}: not valid PEM", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// The PEM reader's error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// No `-----BEGIN CERTIFICATE-----` block.
    #[error("CA file {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)", .path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A certificate that cannot be a trust anchor (not X.509, say).
    #[error("CA file {}: certificate {index} cannot be used as a trust anchor", .path.display())]
    Anchor {
        /// The file.
        path: PathBuf,
        /// Its position in the file, from 1.
        index: usize,
        /// rustls's error.
        #[source]
        source: rustls::Error,
    },
}

/// The rustls client configuration for a TLS connection: only `ca`'s certificates
/// when given, else the bundled webpki roots. Built on ring, the provider every
/// rustls user in this workspace shares.
pub fn client_config(ca: Option<&Ca>) -> Result<Arc<ClientConfig>, rustls::Error> {
    let roots = match ca {
        Some(ca) => ca.roots.clone(),
        None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
    };
    let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Makes ring the process's rustls provider, for clients that build their own
/// configuration from it (redis-rs). Harmless when one is installed already.
pub fn install_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why a TLS handshake failed, when it did; the rustls error stays the source.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsFailure {
    /// The server's certificate does not chain to a trusted root: the CA file is not
    /// the one that signed it, or a private CA was not given at all.
    #[error("certificate not trusted")]
    Untrusted(#[source] rustls::Error),
    /// The certificate does not name the URL's host.
    #[error("host name mismatch")]
    HostName(#[source] rustls::Error),
    /// The certificate has expired or is not valid yet.
    #[error("certificate outside its validity period")]
    Validity(#[source] rustls::Error),
    /// Any other handshake failure: no common protocol version, a plain-text server
    /// on a TLS URL, a server that wants a client certificate.
    #[error("TLS handshake failed")]
    Handshake(#[source] rustls::Error),
}

impl TlsFailure {
    /// The kind of a rustls error.
    pub fn of(e: &rustls::Error) -> TlsFailure {
        let make = match e {
            rustls::Error::InvalidCertificate(cert) => match cert {
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                    TlsFailure::HostName
                }
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => TlsFailure::Validity,
                _ => TlsFailure::Untrusted,
            },
            _ => TlsFailure::Handshake,
        };
        make(e.clone())
    }

    /// The TLS failure somewhere in `err`'s chain, if any. An I/O error hides the
    /// error it wraps from `source()`, and so does an error shared in an `Arc`
    /// (redis-rs keeps its cause so), so their inner errors are looked at too.
    pub fn find(err: &(dyn Error + 'static)) -> Option<TlsFailure> {
        let mut next = Some(err);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<TlsFailure>() {
                return Some(found.clone());
            }
            if let Some(rustls) = e.downcast_ref::<rustls::Error>() {
                return Some(TlsFailure::of(rustls));
            }
            if let Some(found) = wrapped(e).and_then(TlsFailure::find) {
                return Some(found);
            }
            next = e.source();
        }
        None
    }
}

/// The error inside an I/O error or an `Arc`, which `source()` does not give.
fn wrapped<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    if let Some(io) = e.downcast_ref::<std::io::Error>() {
        return io.get_ref().map(|inner| inner as &(dyn Error + 'static));
    }
    if let Some(shared) = e.downcast_ref::<Arc<dyn Error + Send + Sync>>() {
        return Some(&**shared);
    }
    e.downcast_ref::<Arc<std::io::Error>>().map(|io| &**io as &(dyn Error + 'static))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::ServerName;

    const NOT_A_CERT: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    #[test]
    fn a_ca_file_is_checked_once() {
        let p = Path::new("/etc/ca.pem");
        let cases: [(&str, &[u8], &str); 4] = [
            ("empty", b"", "holds no PEM certificate"),
            (
                "a key only",
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "holds no PEM certificate",
            ),
            ("unterminated", b"-----BEGIN CERTIFICATE-----\nAAAA\n", "not valid PEM"),
            ("not X.509", NOT_A_CERT.as_bytes(), "certificate 1 cannot be used as a trust anchor"),
        ];
        for (name, pem, expected) in cases {
            let e = Ca::parse(p, pem.to_vec()).expect_err(name);
            let text = crate::Report(&e).to_string();
            assert!(text.starts_with("CA file /etc/ca.pem: ") && text.contains(expected), "{name}: {text}");
        }
        let missing = Ca::read(Path::new("/nonexistent/ca.pem")).expect_err("missing");
        assert!(crate::Report(&missing).to_string().starts_with("CA file /nonexistent/ca.pem: cannot read it: "));
        let bundled = webpki_roots::TLS_SERVER_ROOTS.len();
        assert!(client_config(None).is_ok() && bundled > 50, "the bundled roots build a configuration");
    }

    #[test]
    fn handshake_failures_are_named() {
        let cert = |c: CertificateError| rustls::Error::InvalidCertificate(c);
        let name = ServerName::try_from("127.0.0.1").expect("an IP address");
        let cases = [
            (cert(CertificateError::UnknownIssuer), "certificate not trusted"),
            (cert(CertificateError::BadSignature), "certificate not trusted"),
            (cert(CertificateError::NotValidForName), "host name mismatch"),
            (
                cert(CertificateError::NotValidForNameContext { expected: name, presented: vec!["localhost".into()] }),
                "host name mismatch",
            ),
            (cert(CertificateError::Expired), "certificate outside its validity period"),
            (cert(CertificateError::NotValidYet), "certificate outside its validity period"),
            (rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure), "TLS handshake failed"),
            (rustls::Error::NoCertificatesPresented, "TLS handshake failed"),
        ];
        for (error, expected) in cases {
            let failure = TlsFailure::of(&error);
            assert_eq!(failure.to_string(), expected, "{error}");
            assert!(failure.source().is_some(), "the rustls error stays the source");
        }
    }

    #[test]
    fn a_failure_is_found_inside_io_and_client_errors() {
        let io = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
            )
        };
        let through_lapin = lapin::Error::from(io());
        let through_redis = redis::RedisError::from(io());
        for err in [&through_lapin as &(dyn Error + 'static), &through_redis, &io()] {
            assert!(matches!(TlsFailure::find(err), Some(TlsFailure::Untrusted(_))), "{err}");
        }
        let refused = lapin::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(TlsFailure::find(&refused).is_none(), "a refused connection is not a TLS failure");
    }
}
