//! A NATS cluster on loopback, as the benchmark and the tests run it.
//!
//! Owns: the configuration of one of its servers (JetStream with
//! `sync_interval: always`, a cluster block routing to every server), a plain
//! HTTP/1.0 GET on a server's monitoring endpoint (`/healthz`, `/jsz`), and
//! finding the log stream's detail (its leader, its last sequence as that
//! server holds it) in `/jsz`. Must never be used on a request path of the hub.

use std::io::{Read, Write};
use std::time::Duration;

use super::STREAM;

/// Ports of one loopback NATS server: (client, cluster route, monitoring HTTP).
pub type Ports = (u16, u16, u16);

/// The configuration file of server `name` (ports `own`) in a cluster of
/// `all`, storing JetStream in `store`.
pub fn server_config(name: &str, own: Ports, all: &[Ports], store: &std::path::Path) -> String {
    let (client, route, http) = own;
    let routes = all
        .iter()
        .map(|(_, route, _)| format!("\"nats-route://127.0.0.1:{route}\""))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "server_name: {name}\nlisten: \"127.0.0.1:{client}\"\nhttp: \"127.0.0.1:{http}\"\n\
         jetstream {{ store_dir: \"{}\", sync_interval: always }}\n\
         cluster {{ name: dip, listen: \"127.0.0.1:{route}\", routes: [{routes}] }}\n",
        store.display()
    )
}

/// The body of a 200 answer to `GET path` on `127.0.0.1:port`.
pub async fn get(port: u16, path: &str) -> Option<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).ok()?;
        let (head, body) = response.split_once("\r\n\r\n")?;
        head.lines()
            .next()
            .is_some_and(|status| status.contains(" 200 "))
            .then(|| body.to_owned())
    })
    .await
    .ok()?
}

/// The log stream's detail in the server's `/jsz` (its own replica's state and
/// the stream's leader), if it holds the stream.
pub async fn stream_detail(port: u16) -> Option<serde_json::Value> {
    let body = get(port, "/jsz?streams=true").await?;
    let jsz: serde_json::Value = serde_json::from_str(&body).ok()?;
    jsz["account_details"]
        .as_array()?
        .iter()
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .find(|s| s["name"] == STREAM)
}
