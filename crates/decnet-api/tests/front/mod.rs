//! A decnet-events front end in process, built as the binary builds it:
//! the settings table read from a map (never the environment), then
//! `App::from_settings` over a memory repository, a memory bus and memory
//! tickets, served by `serve()` on 127.0.0.1:0. For the tests of the front
//! door (pass-through, TLS, HTTP/2); the stream semantics have their own
//! multi-backend suite.

#![allow(dead_code, reason = "not every helper is used by every test file")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use decnet_api::settings::Settings;
use decnet_api::{App, Backends, ServeConfig, Tls};
use decnet_bus::Bus;
use decnet_repo::prelude::*;
use decnet_repo::{Attacker, MemoryRepository, User};

/// The JWT secret of every front.
pub(crate) const SECRET: &str = "front-door-test-secret-of-32-bytes!";

/// A running front end.
pub(crate) struct Front {
    /// Where it listens.
    pub(crate) addr: SocketAddr,
    /// Its bus (publish here to reach its streams).
    pub(crate) bus: Bus,
    /// Its repository (seed users and attackers here).
    pub(crate) repo: Arc<MemoryRepository>,
    /// The application (metrics, hub).
    pub(crate) app: App,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Front {
    /// A front configured by `vars` (DECNET_* names), plus `tls` when given.
    pub(crate) async fn start(vars: &[(&str, &str)], tls: Option<Arc<Tls>>) -> Front {
        Front::start_tuned(vars, tls, |_| {}).await
    }

    /// [`Front::start`], with `tune` applied to the serve config last (for
    /// what has no variable, such as the HTTP/2 ping interval).
    pub(crate) async fn start_tuned(
        vars: &[(&str, &str)],
        tls: Option<Arc<Tls>>,
        tune: impl FnOnce(&mut ServeConfig),
    ) -> Front {
        let mut map: BTreeMap<String, String> = [
            ("DECNET_JWT_SECRET", SECRET),
            ("DECNET_ACCESS_LOG", "false"),
        ]
        .iter()
        .chain(vars)
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        map.insert("HOME".into(), "/nonexistent".into());
        let settings = Settings::from_lookup(&move |k| map.get(k).cloned()).expect("settings");
        let repo = Arc::new(MemoryRepository::new());
        let bus = Bus::memory();
        let app = App::from_settings(
            &settings,
            Backends {
                repository: repo.clone(),
                bus: bus.clone(),
                tickets: Arc::new(decnet_auth::MemoryTicketStore::default()),
                secret: SECRET.as_bytes().to_vec(),
            },
        );
        tokio::time::timeout(Duration::from_secs(10), app.hub().wait_subscribed())
            .await
            .expect("the hub subscribes");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut config = ServeConfig {
            tls,
            ..settings.serve.clone()
        };
        tune(&mut config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(decnet_api::serve(
            listener,
            app.clone(),
            config,
            async move {
                let _ = stopped.await;
            },
        ));
        Front {
            addr,
            bus,
            repo,
            app,
            stop: Some(stop),
            task,
        }
    }

    /// A user who may read every stream, and a token of theirs valid for `ttl`.
    pub(crate) async fn user(&self, ttl: Duration) -> (String, String) {
        let uuid = uuid::Uuid::new_v4().to_string();
        self.repo
            .create_user(&User {
                uuid: uuid.clone(),
                username: format!("analyst-{uuid}"),
                password_hash: "!".into(),
                role: "viewer".into(),
                must_change_password: false,
                tokens_valid_from: None,
            })
            .await
            .expect("user");
        let token = decnet_auth::mint_access_token(SECRET.as_bytes(), &uuid, ttl)
            .expect("token")
            .0;
        (uuid, token)
    }

    /// A new attacker; its uuid.
    pub(crate) async fn attacker(&self) -> String {
        let uuid = uuid::Uuid::new_v4().to_string();
        self.repo
            .upsert_attacker(&Attacker {
                uuid: uuid.clone(),
                ip: "203.0.113.9".into(),
                identity_id: None,
            })
            .await
            .expect("attacker");
        uuid
    }

    /// Publish one observation of `attacker` (its stream's `observation`
    /// frame carries `marker` as the value).
    pub(crate) async fn observe(&self, attacker: &str, marker: &str) {
        let payload = serde_json::json!({
            "attacker_uuid": attacker,
            "primitive": "motor.input_modality",
            "value": marker,
        });
        let serde_json::Value::Object(payload) = payload else {
            unreachable!("a JSON object literal");
        };
        self.bus
            .publish(
                "attacker.observation.motor.input_modality",
                "observation",
                payload,
            )
            .await
            .expect("publish");
    }

    /// Resolve the shutdown future; `serve()`'s result, within `within`.
    pub(crate) async fn stop(mut self, within: Duration) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(within, &mut self.task)
            .await
            .expect("serve() returns within the bound")
            .expect("serve() does not panic")
    }
}
