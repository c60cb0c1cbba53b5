//! The health check a container runs (`decnet-events healthcheck`: a
//! distroless image has no curl): `GET /readyz` on the listener the
//! settings describe.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::settings::Settings;

/// Why the probe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// `/readyz` is only on the HTTPS listener, which the probe does not
    /// speak (it would have to trust the certificate).
    #[error(
        "the main listener is HTTPS: set DECNET_OPS_BIND so the health check can reach /readyz over plain HTTP"
    )]
    HttpsOnly,
    /// No answer in time.
    #[error("no answer from {0} within the deadline")]
    Timeout(SocketAddr),
    /// The request failed (refused, reset).
    #[error("GET http://{addr}/readyz failed")]
    Request {
        /// Where.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    /// An answer, but not 200 (the body says which component is down).
    #[error("not ready ({status}): {body}")]
    NotReady {
        /// The status.
        status: u16,
        /// `/readyz`'s body.
        body: String,
    },
}

/// The address `/readyz` is served on: the ops listener when there is one,
/// else the main listener; an unspecified bind (`0.0.0.0`, `::`) is
/// probed on loopback.
///
/// # Errors
///
/// [`ProbeError::HttpsOnly`] when only an HTTPS listener serves `/readyz`.
pub fn probe_target(settings: &Settings) -> Result<SocketAddr, ProbeError> {
    let mut addr = match settings.ops_bind {
        Some(ops) => ops,
        None if settings.tls.is_some() => return Err(ProbeError::HttpsOnly),
        None => settings.bind,
    };
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// `GET /readyz` on `addr` within `deadline`: `Ok` on 200.
///
/// # Errors
///
/// [`ProbeError`] saying what failed, with `/readyz`'s body when it
/// answered otherwise.
pub async fn probe_ready(addr: SocketAddr, deadline: Duration) -> Result<(), ProbeError> {
    let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri = format!("http://{addr}/readyz")
        .parse::<http::Uri>()
        .map_err(|_| ProbeError::Timeout(addr))?;
    let exchange = async {
        let response = client
            .get(uri)
            .await
            .map_err(|source| ProbeError::Request { addr, source })?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        if status == http::StatusCode::OK {
            Ok(())
        } else {
            Err(ProbeError::NotReady {
                status: status.as_u16(),
                body,
            })
        }
    };
    tokio::time::timeout(deadline, exchange)
        .await
        .map_err(|_| ProbeError::Timeout(addr))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::TlsFiles;

    #[test]
    fn targets() {
        let mut settings = Settings {
            bind: "0.0.0.0:8000".parse().expect("addr"),
            ..Settings::default()
        };
        assert_eq!(probe_target(&settings).ok(), "127.0.0.1:8000".parse().ok());
        settings.tls = Some(TlsFiles {
            cert: "c".into(),
            key: "k".into(),
        });
        assert!(matches!(
            probe_target(&settings),
            Err(ProbeError::HttpsOnly)
        ));
        settings.ops_bind = "[::]:9000".parse().ok();
        assert_eq!(probe_target(&settings).ok(), "[::1]:9000".parse().ok());
    }

    #[tokio::test]
    async fn nobody_listening_is_an_error() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a port");
        let error = probe_ready(closed, Duration::from_secs(5)).await.err();
        assert!(
            matches!(error, Some(ProbeError::Request { .. })),
            "{error:?}"
        );
    }
}
