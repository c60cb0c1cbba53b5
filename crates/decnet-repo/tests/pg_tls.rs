//! PostgreSQL over TLS, against the real server: `sslmode=require`
//! encrypts (the server's `pg_stat_ssl` says so), `verify-full` with a root
//! that did not sign the server's certificate refuses to connect,
//! `verify-ca` with the server's own certificate as the root connects, and
//! `sslmode=disable` stays in the clear.
#![cfg(feature = "postgres")]

use std::sync::Arc;

use decnet_repo::prelude::*;
use decnet_repo::{PgConfig, PgRepository, RepoError};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod svc_postgres {
    use super::*;

    /// `url` with `params` appended to its query.
    fn with(url: &str, params: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}{params}")
    }

    /// Whether the server sees a connection of `application_name` over TLS.
    async fn encrypted(url: &str, application: &str) -> Option<bool> {
        let (client, connection) =
            tokio_postgres::connect(&with(url, "sslmode=disable"), tokio_postgres::NoTls)
                .await
                .expect("a plain observer connection");
        tokio::spawn(connection);
        let row = client
            .query_opt(
                "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) \
                 WHERE a.application_name = $1 LIMIT 1",
                &[&application],
            )
            .await
            .expect("pg_stat_ssl");
        row.map(|r| r.get::<_, bool>(0))
    }

    async fn ping(url: String) -> Result<PgRepository, RepoError> {
        let repo = PgRepository::connect(PgConfig::new(url))?;
        repo.ping().await?;
        Ok(repo)
    }

    /// Does the server speak TLS at all? (`SHOW ssl`)
    async fn server_has_tls(url: &str) -> bool {
        let (client, connection) =
            tokio_postgres::connect(&with(url, "sslmode=disable"), tokio_postgres::NoTls)
                .await
                .expect("connect");
        tokio::spawn(connection);
        let row = client.query_one("SHOW ssl", &[]).await.expect("SHOW ssl");
        row.get::<_, String>(0) == "on"
    }

    #[tokio::test]
    async fn sslmode_require_encrypts_and_disable_does_not() {
        let url = test_support::require_service!(test_support::Service::Postgres);
        assert!(
            server_has_tls(&url).await,
            "the PostgreSQL under test has ssl=off: this test needs a server with TLS"
        );
        let app = format!("tls-require-{}", test_support::unique_suffix());
        let _repo = ping(with(
            &url,
            &format!("application_name={app}&sslmode=require"),
        ))
        .await
        .expect("sslmode=require connects");
        assert_eq!(encrypted(&url, &app).await, Some(true));

        let app = format!("tls-disable-{}", test_support::unique_suffix());
        let _repo = ping(with(
            &url,
            &format!("application_name={app}&sslmode=disable"),
        ))
        .await
        .expect("sslmode=disable connects");
        assert_eq!(encrypted(&url, &app).await, Some(false));
    }

    #[tokio::test]
    async fn verification_is_against_sslrootcert() {
        let url = test_support::require_service!(test_support::Service::Postgres);
        if !server_has_tls(&url).await {
            panic!("the PostgreSQL under test has ssl=off: this test needs a server with TLS");
        }
        // A root that never signed the server's certificate.
        let foreign = concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/tls/cert-a.pem");
        let refused = ping(with(
            &url,
            &format!("sslmode=verify-full&sslrootcert={foreign}"),
        ))
        .await;
        assert!(
            matches!(refused, Err(RepoError::Unavailable(_))),
            "a certificate from an unknown issuer must be refused: {refused:?}"
        );

        // The server's own (self-signed) certificate as the root: the chain
        // verifies; verify-ca does not look at the name.
        let pem = server_certificate_pem(&url).await;
        let dir =
            std::env::temp_dir().join(format!("decnet-pgtls-{}", test_support::unique_suffix()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let root = dir.join("root.pem");
        std::fs::write(&root, pem).expect("write root");
        let app = format!("tls-verify-ca-{}", test_support::unique_suffix());
        let verified = ping(with(
            &url,
            &format!(
                "application_name={app}&sslmode=verify-ca&sslrootcert={}",
                root.display()
            ),
        ))
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        let _repo = verified.expect("verify-ca with the server's own certificate connects");
        assert_eq!(encrypted(&url, &app).await, Some(true));
    }

    /// Records the certificate a server presents (test only).
    #[derive(Debug, Default)]
    struct Capture(std::sync::Mutex<Option<Vec<u8>>>);

    impl ServerCertVerifier for Capture {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            *self.0.lock().expect("lock") = Some(end_entity.to_vec());
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    /// The server's certificate, as PEM: PostgreSQL's SSLRequest, then a
    /// handshake that records what the server shows.
    async fn server_certificate_pem(url: &str) -> String {
        let config: tokio_postgres::Config = url.parse().expect("url");
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            other => panic!("a TCP host, not {other:?}"),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let mut tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .expect("connect");
        // Length 8, then the SSLRequest code 80877103.
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .await
            .expect("SSLRequest");
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.expect("answer");
        assert_eq!(&answer, b"S", "the server accepts TLS");
        let capture = Arc::new(Capture::default());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .dangerous()
            .with_custom_certificate_verifier(capture.clone())
            .with_no_client_auth();
        let name = ServerName::try_from(host).expect("name");
        let _tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, tcp)
            .await
            .expect("handshake");
        let der = capture
            .0
            .lock()
            .expect("lock")
            .clone()
            .expect("a certificate");
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).expect("ascii"));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        pem
    }
}
