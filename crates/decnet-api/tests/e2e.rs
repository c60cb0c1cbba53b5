//! End-to-end tests of the decnet-events application, in process: the real
//! `decnet_api::serve()` on 127.0.0.1:0, driven over HTTP/1.1, on every
//! backend pair the binary can be configured with (see `common/mod.rs`
//! for the harness, `cases/` for the cases).
//!
//! Each case is written once, as an `async fn` in `cases`, and run by the
//! `matrix!` modules on memory + memory (always), PostgreSQL + NATS and
//! PostgreSQL + Redis (Redis tickets). Test paths carry the markers of
//! every service they need (`svc_postgres`, `svc_nats`, `svc_redis`), so
//! `--skip svc_nats` filters out exactly the tests that need NATS. Without
//! the `DECNET_TEST_*_URL` variables the service tests print SKIPPED and
//! return (and fail under `CI`).
//!
//! What needs a process of its own (exit codes, signals, the embedded demo,
//! the subcommands) is in `bins/decnet-events/tests/process.rs`.

mod cases;
mod common;

/// One `#[tokio::test]` per case, each in a world of its own. Current-thread
/// runtimes: the cases move Tokio's clock (`World::advance`), which Tokio
/// allows there only.
macro_rules! matrix {
    ($backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                if let Some(world) = crate::common::World::new($backend).await {
                    crate::cases::$case(world).await;
                }
            }
        )*
    };
}

/// The cases every backend pair runs.
macro_rules! all_cases {
    ($backend:expr) => {
        matrix!(
            $backend;
            ticket_endpoint,
            events_authentication,
            tickets_across_instances,
            connection_limit,
            slow_consumer,
            stream_body,
            identity_rekeying,
            malformed_bus_messages,
            resume,
            ops_endpoints,
            session_expiry,
            session_revocation,
            graceful_shutdown,
        );
    };
}

/// Memory bus, memory repository, memory tickets: no service needed.
mod memory {
    use crate::common::Backend;

    all_cases!(Backend::Memory);

    #[tokio::test]
    async fn repository_unavailable() {
        crate::cases::repository_unavailable(Backend::Memory).await;
    }

    matrix!(
        Backend::Memory;
        open_rate_limit,
        identities_stream,
        campaigns_stream,
        orchestrator_stream,
        topology_stream,
        per_user_cap_is_shared_across_kinds,
    );
}

mod svc_postgres {
    mod svc_nats {
        use crate::common::Backend;

        all_cases!(Backend::PgNats);

        #[tokio::test]
        async fn broker_restart() {
            crate::cases::broker_restart(Backend::PgNats).await;
        }
    }

    mod svc_redis {
        use crate::common::Backend;

        all_cases!(Backend::PgRedis);

        #[tokio::test]
        async fn broker_restart() {
            crate::cases::broker_restart(Backend::PgRedis).await;
        }
    }
}

/// Repository unreachable: these need the bus, not PostgreSQL.
mod svc_nats {
    #[tokio::test]
    async fn repository_unavailable() {
        crate::cases::repository_unavailable(crate::common::Backend::PgNats).await;
    }
}

mod svc_redis {
    #[tokio::test]
    async fn repository_unavailable() {
        crate::cases::repository_unavailable(crate::common::Backend::PgRedis).await;
    }
}
