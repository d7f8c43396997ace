//! `cloud-router` with a real edge hub client (kubeedge-edge) joining it with its token.

use kubeedge_edge::hub::{self, CertFiles};
use kubeedge_proto::{Content, Group, JoinToken, Message, Route};

use super::*;

fn after<'a>(lines: &'a [String], prefix: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| l.strip_prefix(prefix))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_router_answers_its_own_message_type_from_a_joined_edge() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("router").display().to_string();
    let mut router = Running::start("cloud-router", &[&state, "127.0.0.1:0", "127.0.0.1:0"])?;
    router.wait_line("the token", |l| l.starts_with("token "))?;
    let lines = router.output();
    let (ws, https, token) = (
        after(&lines, "websocket ")
            .context("websocket address")?
            .to_owned(),
        after(&lines, "https ").context("https address")?.to_owned(),
        after(&lines, "token ")
            .context("token")?
            .parse::<JoinToken>()?,
    );

    let files = CertFiles::in_dir(&dir.path().join("edge"));
    let tls = hub::bootstrap(&https, &token, "sensor-1", &files, LIMIT).await?;
    let mut config = hub::HubConfig::default();
    config.server = ws;
    config.node_name = "sensor-1".into();
    let (client, _inbound, driver) = hub::connect(config, tls);
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(driver.run(cancel.clone()));

    for expected in 1..=2 {
        let route = Route::new("sensor", Group::User, "update", "telemetry/temperature");
        let msg = Message::new(route, Content::string("21.5"));
        let reply = client.request(msg, LIMIT).await?;
        let body: serde_json::Value = reply.content.decode()?;
        ensure!(body["readings"] == expected, "reply {body}");
    }
    router.wait_line("the reading", |l| {
        l == "sensor-1 telemetry/temperature 21.5"
    })?;
    cancel.cancel();
    Ok(())
}
