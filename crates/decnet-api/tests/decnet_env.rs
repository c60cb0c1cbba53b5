//! DECNET's own env file, unchanged (testdata/decnet.env.local): read the
//! way the binary reads it, it means what it means to DECNET, and every
//! DECNET variable decnet-events does not use is ignored without complaint.

use std::path::Path;

use decnet_api::settings::{DbKind, Settings, env_files};
use decnet_bus::BusKind;

#[test]
fn a_decnet_hosts_env_file_configures_the_service() {
    let testdata = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata"));
    let file =
        env_files(testdata, Some(&testdata.join("decnet.env.local"))).expect("the env file parses");
    // DECNET's variables that decnet-events does not read are in it...
    for ignored in [
        "DECNET_INGEST_LOG_FILE",
        "DECNET_DB_POOL_SIZE",
        "DECNET_ADMIN_PASSWORD",
        "DECNET_BUS_GROUP",
    ] {
        assert!(file.contains_key(ignored), "{ignored}");
    }
    // ...and the settings take it whole, nothing else given.
    let settings =
        Settings::from_lookup(&|var| file.get(var).cloned()).expect("DECNET's env file is valid");
    assert_eq!(settings.db.kind, DbKind::Sqlite);
    assert_eq!(settings.db.sqlite_path, Path::new("/opt/decnet/decnet.db"));
    assert_eq!(settings.bus.kind, BusKind::Unix);
    assert_eq!(
        settings.bus.socket_path.as_deref(),
        Some(Path::new("/run/decnet/bus.sock"))
    );
    assert_eq!(
        settings.jwt_secret.as_deref(),
        Some("k3y-for-the-decnet-host-test-0123456789abcdef"),
        "quotes are removed"
    );
    assert!(
        !settings.developer,
        "DECNET_DEVELOPER=False is Python's false"
    );
    // DECNET's CORS default: a wildcard web host means localhost.
    assert_eq!(settings.app.cors.origins(), ["http://localhost:8080"]);
    let upstream = settings.upstream.as_ref().expect("the pass-through");
    assert_eq!(upstream.authority.as_str(), "127.0.0.1:8001");
    assert_eq!(
        settings.logs.state_file.as_deref(),
        Some(Path::new("/opt/decnet/decnet-state.json"))
    );
    assert!(!settings.demo(), "a DECNET host never runs the demo");
}
