//! TLS for PostgreSQL connections: rustls (ring) behind tokio-postgres's
//! `MakeTlsConnect`, configured by libpq's `sslmode` and `sslrootcert`.
//!
//! libpq's meaning of each mode is kept:
//! - `disable`: never TLS;
//! - `allow`, `prefer` (the default): TLS when the server offers it,
//!   without checking the certificate (libpq's behaviour when no root
//!   certificate is configured);
//! - `require`: TLS or no connection; the certificate is checked against
//!   `sslrootcert` when one is given (as libpq does), otherwise not;
//! - `verify-ca`: TLS, the chain checked against `sslrootcert`;
//! - `verify-full`: `verify-ca`, and the server's name checked too.
//!
//! tokio-postgres knows only `disable`, `prefer` and `require` and no
//! `sslrootcert`, so [`TlsSettings::take_from_url`] removes both from a URL
//! and hands tokio-postgres the mode it knows. No channel binding is offered
//! (SCRAM without `-PLUS`).

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::SslMode;
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};

/// How the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Not at all (encryption only, libpq's `prefer` / `require`).
    Nothing,
    /// The chain, against the root certificates (`verify-ca`).
    Chain,
    /// The chain and the server's name (`verify-full`).
    Full,
}

/// The TLS part of a PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// What tokio-postgres is told.
    pub(crate) mode: SslMode,
    /// How the certificate is checked.
    pub(crate) verify: Verify,
    /// `sslrootcert`: PEM root certificates.
    pub(crate) root_cert: Option<PathBuf>,
}

impl TlsSettings {
    /// Take `sslmode` and `sslrootcert` out of a `postgres://` URL's query
    /// (a key-value connection string is left to tokio-postgres, which
    /// reads its `sslmode`). Returns the URL without them and the settings.
    pub(crate) fn take_from_url(url: &str) -> Result<(String, TlsSettings), String> {
        let mut settings = TlsSettings {
            mode: SslMode::Prefer,
            verify: Verify::Nothing,
            root_cert: None,
        };
        let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
            return Ok((url.to_owned(), settings));
        };
        // Raw segments are kept as written (tokio-postgres percent-decodes
        // them itself, and a `+` is not a space to it).
        let decode = |text: &str| {
            percent_encoding::percent_decode_str(text)
                .decode_utf8()
                .map(|t| t.into_owned())
                .map_err(|_| "the URL's query is not UTF-8 once decoded".to_owned())
        };
        let mut mode = None;
        let mut kept = Vec::new();
        for segment in query.split('&').filter(|s| !s.is_empty()) {
            let (key, value) = segment.split_once('=').unwrap_or((segment, ""));
            match decode(key)?.as_str() {
                "sslmode" => mode = Some(decode(value)?),
                "sslrootcert" => settings.root_cert = Some(PathBuf::from(decode(value)?)),
                _ => kept.push(segment),
            }
        }
        let (mode, verify) = match mode.as_deref() {
            None | Some("prefer" | "allow") => (SslMode::Prefer, Verify::Nothing),
            Some("disable") => (SslMode::Disable, Verify::Nothing),
            Some("require") if settings.root_cert.is_some() => (SslMode::Require, Verify::Chain),
            Some("require") => (SslMode::Require, Verify::Nothing),
            Some("verify-ca") => (SslMode::Require, Verify::Chain),
            Some("verify-full") => (SslMode::Require, Verify::Full),
            Some(other) => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ));
            }
        };
        if verify != Verify::Nothing && settings.root_cert.is_none() {
            return Err("sslmode=verify-ca and verify-full need sslrootcert=<PEM file>".into());
        }
        settings.mode = mode;
        settings.verify = verify;
        let url = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((url, settings))
    }

    /// The rustls client config these settings describe.
    pub(crate) fn client_config(&self) -> Result<ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?;
        let config = match (&self.root_cert, self.verify) {
            (Some(path), verify) if verify != Verify::Nothing => {
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                }
                if roots.is_empty() {
                    return Err(format!(
                        "sslrootcert {} holds no certificate",
                        path.display()
                    ));
                }
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
                let verifier: Arc<dyn ServerCertVerifier> = if verify == Verify::Full {
                    webpki
                } else {
                    Arc::new(ChainOnly(webpki))
                };
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(verifier)
                    .with_no_client_auth()
            }
            _ => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(EncryptionOnly(
                    provider.signature_verification_algorithms,
                )))
                .with_no_client_auth(),
        };
        Ok(config)
    }
}

/// `prefer` / `require` without a root: any certificate, but the handshake's
/// signatures are still checked against it (so the session key is the
/// server's, whoever the server is).
#[derive(Debug)]
struct EncryptionOnly(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for EncryptionOnly {
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
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca`: the chain must lead to a root; the name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::{CertificateError, Error};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(Error::InvalidCertificate(
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
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// tokio-postgres's TLS constructor over one rustls config.
#[derive(Clone)]
pub(crate) struct MakeRustls(Arc<ClientConfig>);

impl MakeRustls {
    pub(crate) fn new(config: ClientConfig) -> Self {
        Self(Arc::new(config))
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(domain.to_owned())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        Ok(RustlsConnect {
            connector: tokio_rustls::TlsConnector::from(self.0.clone()),
            name,
        })
    }
}

/// One TLS handshake to come.
pub(crate) struct RustlsConnect {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let stream = self.connector.connect(self.name, stream).await?;
            Ok(RustlsStream(stream))
        })
    }
}

/// A TLS connection to PostgreSQL.
pub(crate) struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_and_sslrootcert_leave_the_url() {
        let (url, tls) = TlsSettings::take_from_url(
            "postgres://u@h/db?application_name=x&sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&options=-c%20TimeZone%3D+05",
        )
        .expect("valid");
        assert_eq!(
            url,
            "postgres://u@h/db?application_name=x&options=-c%20TimeZone%3D+05"
        );
        assert_eq!(tls.mode, SslMode::Require);
        assert_eq!(tls.verify, Verify::Full);
        assert_eq!(tls.root_cert, Some(PathBuf::from("/etc/ca.pem")));

        let (url, tls) = TlsSettings::take_from_url("postgres://u@h/db").expect("valid");
        assert_eq!(
            (url.as_str(), tls.mode, tls.verify),
            ("postgres://u@h/db", SslMode::Prefer, Verify::Nothing)
        );
        let (_, tls) =
            TlsSettings::take_from_url("postgres://h/db?sslmode=disable").expect("valid");
        assert_eq!(tls.mode, SslMode::Disable);
        let (url, tls) =
            TlsSettings::take_from_url("postgres://h/db?sslmode=require&sslrootcert=ca.pem")
                .expect("valid");
        assert_eq!(
            (url.as_str(), tls.verify),
            ("postgres://h/db", Verify::Chain)
        );
        // A key-value string is tokio-postgres's to read.
        let (url, _) = TlsSettings::take_from_url("host=h sslmode=require").expect("valid");
        assert_eq!(url, "host=h sslmode=require");
    }

    #[test]
    fn bad_modes_and_missing_roots_are_errors() {
        assert!(TlsSettings::take_from_url("postgres://h/db?sslmode=maybe").is_err());
        assert!(TlsSettings::take_from_url("postgres://h/db?sslmode=verify-full").is_err());
        let settings = TlsSettings {
            mode: SslMode::Require,
            verify: Verify::Full,
            root_cert: Some(PathBuf::from("/nonexistent/ca.pem")),
        };
        assert!(
            settings
                .client_config()
                .is_err_and(|e| e.contains("/nonexistent/ca.pem"))
        );
    }
}
