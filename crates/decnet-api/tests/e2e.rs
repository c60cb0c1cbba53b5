//! End-to-end tests of the decnet-events application, in process: the real
//! `decnet_api::serve()` on 127.0.0.1:0, driven over HTTP/1.1, on every
//! backend pair the binary can be configured with (see `common/mod.rs`
//! for the harness, `cases/` for the cases).
//!
//! Each case is written once, as an `async fn` in `cases`, and run by the
//! `matrix!` modules on memory + memory (always), DECNET's UNIX-socket bus
//! (a `TestBroker` of the test's own) + SQLite (a file with DECNET's schema,
//! WAL; always), DECNET's UNIX-socket bus + MySQL (a database of the test's
//! own on the shared MariaDB), PostgreSQL + NATS and PostgreSQL + Redis
//! (Redis tickets). Test paths carry the markers of every service they need
//! (`svc_postgres`, `svc_mysql`, `svc_nats`, `svc_redis`), so `--skip
//! svc_nats` filters out exactly the tests that need NATS. Without the
//! `DECNET_TEST_*_URL` variables the service tests print SKIPPED and return
//! (and fail under `CI`).
//!
//! The stream kinds other than the attacker's (identities, campaigns,
//! orchestrator, topology, `/stream`) and the mixed-kind cap run on memory,
//! `unix` + SQLite, `unix` + MySQL and PostgreSQL + NATS (a private
//! `nats-server`: on a shared one the firehose kinds get every other
//! publisher's events); the broker killed and restarted with a stream of
//! every kind open runs on every pair with a broker (the `unix` pairs' own,
//! a private `nats-server`, a private `redis-server`); what only one
//! engine has (a SQLite writer holding a write transaction, a private
//! MariaDB restarted) runs on its pair.
//!
//! What needs a process of its own (exit codes, signals, the embedded demo,
//! the subcommands) is in `bins/decnet-events/tests/process.rs`.

mod capture;
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

/// [`matrix!`] on a broker of the test's own (a private `nats-server` or
/// `redis-server`; the `unix` pairs have their own anyway): for the
/// firehose kinds, which on a shared broker would get every other
/// publisher's events.
macro_rules! private_bus_matrix {
    ($backend:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $case() {
                if let Some((_broker, world)) = crate::cases::PrivateBroker::world($backend).await {
                    crate::cases::$case(world).await;
                }
            }
        )*
    };
}

/// The stream kinds beyond the attacker's, seeded through the world's
/// repository writer (`$matrix`: [`matrix!`] or [`private_bus_matrix!`]).
macro_rules! kind_cases {
    ($matrix:ident, $backend:expr) => {
        $matrix!(
            $backend;
            identities_stream,
            campaigns_stream,
            orchestrator_stream,
            topology_stream,
            per_user_cap_is_shared_across_kinds,
            logs_stream_search,
            logs_stream_replay_stats_histogram,
            logs_stream_one_poller_per_filter,
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

    matrix!(Backend::Memory; open_rate_limit, cors_wildcard, access_log_controls);
    kind_cases!(matrix, Backend::Memory);
}

/// DECNET's UNIX-socket bus (a broker of the test's own) and a SQLite file
/// with DECNET's schema: no service needed.
mod unix_sqlite {
    use crate::common::Backend;

    all_cases!(Backend::UnixSqlite);
    kind_cases!(matrix, Backend::UnixSqlite);
    matrix!(
        Backend::UnixSqlite;
        sqlite_busy_writer,
        bus_restart_with_every_kind_open,
    );

    #[tokio::test]
    async fn broker_restart() {
        crate::cases::broker_restart(Backend::UnixSqlite).await;
    }
}

mod svc_mysql {
    /// DECNET's UNIX-socket bus and a MySQL database of the test's own.
    mod unix {
        use crate::common::Backend;

        all_cases!(Backend::UnixMysql);
        kind_cases!(matrix, Backend::UnixMysql);
        matrix!(Backend::UnixMysql; bus_restart_with_every_kind_open);

        #[tokio::test]
        async fn broker_restart() {
            crate::cases::broker_restart(Backend::UnixMysql).await;
        }

        /// A private MariaDB, restarted under an open stream.
        #[tokio::test]
        async fn mysql_restart() {
            crate::cases::mysql_restart().await;
        }
    }
}

mod svc_postgres {
    mod svc_nats {
        use crate::common::Backend;

        all_cases!(Backend::PgNats);
        kind_cases!(private_bus_matrix, Backend::PgNats);
        // A private nats-server of its own, killed and restarted.
        matrix!(Backend::PgNats; bus_restart_with_every_kind_open);

        #[tokio::test]
        async fn broker_restart() {
            crate::cases::broker_restart(Backend::PgNats).await;
        }
    }

    mod svc_redis {
        use crate::common::Backend;

        all_cases!(Backend::PgRedis);
        // A private redis-server of its own (bus and tickets), killed and
        // restarted.
        matrix!(Backend::PgRedis; bus_restart_with_every_kind_open);

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
