//! HTTPS: a certificate and key from PEM files (`DECNET_TLS_CERT`,
//! `DECNET_TLS_KEY`), ALPN `h2` and `http/1.1`, rustls with the ring
//! provider, and reloading without dropping open connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM certificate (or key).
    #[error("{path} holds no PEM {what}")]
    Empty {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// The file is not valid PEM.
    #[error("{path} is not valid PEM")]
    Pem {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// rustls refused the pair (a key that does not match the certificate,
    /// an unsupported algorithm).
    #[error("the certificate and key cannot be used together")]
    Rustls(#[source] rustls::Error),
}

/// The HTTPS settings: where the PEM files are, and the server config built
/// from them, swapped whole on [`Tls::reload`] (connections already
/// handshaken keep theirs).
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    // std RwLock: read to clone the Arc at accept, written on reload; never
    // held across an `.await`.
    current: RwLock<Arc<ServerConfig>>,
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The rustls server config of a PEM certificate chain and key, ring only,
/// ALPN `h2` then `http/1.1`.
fn server_config(cert: &Path, key: &Path) -> Result<ServerConfig, TlsError> {
    let chain_pem = read(cert)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|source| TlsError::Pem {
            path: cert.to_path_buf(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::Empty {
            path: cert.to_path_buf(),
            what: "certificate",
        });
    }
    let key_pem = read(key)?;
    let key_der = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|source| match source {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            path: key.to_path_buf(),
            what: "private key",
        },
        source => TlsError::Pem {
            path: key.to_path_buf(),
            source,
        },
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(TlsError::Rustls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

impl Tls {
    /// Load the certificate chain and key.
    ///
    /// # Errors
    ///
    /// [`TlsError`] naming the file at fault.
    pub fn load(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Result<Arc<Tls>, TlsError> {
        let (cert, key) = (cert.into(), key.into());
        let config = server_config(&cert, &key)?;
        Ok(Arc::new(Tls {
            cert,
            key,
            current: RwLock::new(Arc::new(config)),
        }))
    }

    /// Read the files again (after a renewal; the binary calls this on
    /// SIGHUP). New connections get the new certificate; open ones keep
    /// theirs. On error the old certificate stays in use.
    ///
    /// # Errors
    ///
    /// [`TlsError`] naming the file at fault.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }

    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        TlsAcceptor::from(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> PathBuf {
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/tls")).join(name)
    }

    #[test]
    fn loads_and_reloads_the_test_certificates() {
        let tls = Tls::load(testdata("cert-a.pem"), testdata("key-a.pem")).expect("load");
        let before = tls.current.read().map(|c| Arc::as_ptr(&c)).expect("lock");
        tls.reload().expect("reload");
        let after = tls.current.read().map(|c| Arc::as_ptr(&c)).expect("lock");
        assert_ne!(before, after);
    }

    #[test]
    fn errors_name_the_file() {
        let missing = Tls::load(testdata("nope.pem"), testdata("key-a.pem")).err();
        assert!(missing.is_some_and(|e| e.to_string().contains("nope.pem")));
        let swapped = Tls::load(testdata("key-a.pem"), testdata("cert-a.pem")).err();
        assert!(
            swapped.is_some_and(|e| e.to_string().contains("key-a.pem")),
            "a key is no certificate"
        );
        let mismatched = Tls::load(testdata("cert-a.pem"), testdata("key-b.pem")).err();
        assert!(
            matches!(mismatched, Some(TlsError::Rustls(_))),
            "{mismatched:?}"
        );
    }
}
