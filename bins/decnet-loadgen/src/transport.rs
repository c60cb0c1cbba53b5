//! How a stream reaches the server: plain HTTP/1.1, HTTP/1.1 over TLS, or
//! HTTP/2 over TLS (one connection per stream, or N streams multiplexed on
//! each connection).
//!
//! HTTP/1.1, plain or TLS, goes through the minimal client of [`crate::http`]
//! over an [`Io`]; HTTP/2 goes through hyper's client over tokio-rustls (ring
//! provider, the server's own crypto stack). The test certificate the
//! benchmark server presents is trusted with `--ca` (its only root).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The wire a run's streams use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// Plain HTTP/1.1: one TCP connection per stream (the default).
    H1,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`): one connection per stream.
    H1Tls,
    /// HTTP/2 over TLS (ALPN `h2`): one connection per stream.
    H2,
    /// HTTP/2 over TLS with `--streams-per-conn` streams on each connection.
    H2Mux,
}

impl Transport {
    /// Parse `h1 | h1-tls | h2 | h2-mux`.
    pub(crate) fn parse(name: &str) -> Result<Transport> {
        Ok(match name {
            "h1" => Transport::H1,
            "h1-tls" => Transport::H1Tls,
            "h2" => Transport::H2,
            "h2-mux" => Transport::H2Mux,
            other => bail!("--transport must be h1, h1-tls, h2 or h2-mux, got {other:?}"),
        })
    }

    /// The name `--transport` takes.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Transport::H1 => "h1",
            Transport::H1Tls => "h1-tls",
            Transport::H2 => "h2",
            Transport::H2Mux => "h2-mux",
        }
    }

    /// Whether the connection is TLS (the URL must be `https://`).
    pub(crate) fn is_tls(self) -> bool {
        self != Transport::H1
    }

    /// Whether streams are HTTP/2.
    pub(crate) fn is_h2(self) -> bool {
        matches!(self, Transport::H2 | Transport::H2Mux)
    }
}

/// An HTTP/1.1 connection's byte stream: plain TCP or TLS.
#[derive(Debug)]
pub(crate) enum Io {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (boxed: the session state is a few KiB).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS side of a run: one client configuration per ALPN choice, trusting
/// only the given CA.
#[derive(Clone)]
pub(crate) struct TlsClient {
    h1: TlsConnector,
    h2: TlsConnector,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsClient")
    }
}

impl TlsClient {
    /// Trust the certificates of the PEM file `ca` (and nothing else).
    ///
    /// # Errors
    ///
    /// An unreadable file, no certificate in it, or one rustls refuses.
    pub(crate) fn from_ca_file(ca: &Path) -> Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("reading {}", ca.display()))?
        {
            let cert = cert.with_context(|| format!("a certificate in {}", ca.display()))?;
            roots.add(cert).context("an unusable CA certificate")?;
        }
        if roots.is_empty() {
            bail!("no certificate in {}", ca.display());
        }
        let config = |alpn: &[u8]| -> Result<TlsConnector> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .context("TLS protocol versions")?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsConnector::from(Arc::new(config)))
        };
        Ok(TlsClient {
            h1: config(b"http/1.1")?,
            h2: config(b"h2")?,
        })
    }

    /// TLS handshake on `tcp` offering `h2` (or `http/1.1`), checking that
    /// the server chose it.
    async fn handshake(
        &self,
        tcp: TcpStream,
        server: SocketAddr,
        h2: bool,
    ) -> Result<TlsStream<TcpStream>> {
        let connector = if h2 { &self.h2 } else { &self.h1 };
        let name = ServerName::IpAddress(server.ip().into());
        let tls = connector.connect(name, tcp).await.context("tls")?;
        let want: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        if tls.get_ref().1.alpn_protocol() != Some(want) {
            bail!(
                "tls: the server did not choose ALPN {}",
                String::from_utf8_lossy(want)
            );
        }
        Ok(tls)
    }

    /// An HTTP/1.1-over-TLS byte stream on `tcp`.
    pub(crate) async fn h1(&self, tcp: TcpStream, server: SocketAddr) -> Result<Io> {
        Ok(Io::Tls(Box::new(self.handshake(tcp, server, false).await?)))
    }

    /// An HTTP/2 connection on `tcp`: TLS, then the HTTP/2 handshake; the
    /// connection is driven by a task of its own until it closes.
    pub(crate) async fn h2(&self, tcp: TcpStream, server: SocketAddr) -> Result<H2Sender> {
        let tls = self.handshake(tcp, server, true).await?;
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .context("h2 handshake")?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

/// The request half of an HTTP/2 connection (cheap to clone: one per stream).
pub(crate) type H2Sender = hyper::client::conn::http2::SendRequest<Empty<Bytes>>;

/// TCP connect, then TLS for an HTTP/1.1-over-TLS transport.
///
/// # Errors
///
/// Connect or TLS failures.
pub(crate) async fn connect_h1(
    server: SocketAddr,
    source: Option<IpAddr>,
    tls: Option<&TlsClient>,
) -> Result<Io> {
    let tcp = crate::http::connect(server, source).await?;
    match tls {
        None => Ok(Io::Plain(tcp)),
        Some(tls) => tls.h1(tcp, server).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse() {
        assert_eq!(Transport::parse("h1").ok(), Some(Transport::H1));
        assert_eq!(Transport::parse("h2-mux").ok(), Some(Transport::H2Mux));
        assert!(Transport::parse("h3").is_err());
        for name in ["h1", "h1-tls", "h2", "h2-mux"] {
            assert_eq!(Transport::parse(name).map(Transport::name).ok(), Some(name));
        }
        assert!(!Transport::H1.is_tls());
        assert!(Transport::H1Tls.is_tls() && !Transport::H1Tls.is_h2());
        assert!(Transport::H2.is_h2() && Transport::H2Mux.is_h2());
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let key = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/tls/key-a.pem"
        ));
        assert!(TlsClient::from_ca_file(key).is_err());
        let cert = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/tls/cert-a.pem"
        ));
        assert!(TlsClient::from_ca_file(cert).is_ok());
    }
}
