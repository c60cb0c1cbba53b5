//! The embedded demo's banner (the data and events are decnet-api's
//! [`decnet_api::demo`]).

use decnet_api::demo::{DEMO_ATTACKER, DEMO_TOPOLOGY};

/// Tell a newcomer what is running and how to see it.
pub(crate) fn print_banner(addr: std::net::SocketAddr, tls: bool, token: &str) {
    let base = format!("{}://{addr}", if tls { "https" } else { "http" });
    println!(
        "\n\
decnet-events demo is running on {base} (memory bus, memory database, synthetic events)\n\
\n\
  demo attacker: {attacker}\n\
  demo topology: {topology}\n\
  token (24 h):  {token}\n\
\n\
Console:  {base}/#token={token}&attacker={attacker}\n\
\n\
Mint a ticket, then open a stream (tickets are single-use, 60 s):\n\
\n\
  TOKEN={token}\n\
  TICKET=$(curl -s -X POST -H \"Authorization: Bearer $TOKEN\" {base}/api/v1/auth/sse-ticket | sed 's/.*\"ticket\": *\"\\([^\"]*\\)\".*/\\1/')\n\
  curl -N \"{base}/api/v1/attackers/{attacker}/events?ticket=$TICKET\"\n\
\n\
Other streams: /api/v1/identities/events, /api/v1/campaigns/events, /api/v1/orchestrator/events/stream,\n\
/api/v1/topologies/{topology}/events, /api/v1/stream\n",
        attacker = DEMO_ATTACKER,
        topology = DEMO_TOPOLOGY,
    );
}
