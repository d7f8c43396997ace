mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smoke() -> anyhow::Result<()> {
    let srv = common::TestServer::start().await?;
    println!("KUBECONFIG={}", srv.kubeconfig.display());
    let out = srv.kubectl(&["get", "ns"]).await?;
    println!("{out}");
    if let Ok(wait) = std::env::var("SMOKE_WAIT") {
        std::fs::write("/tmp/smoke-kubeconfig", std::fs::read(&srv.kubeconfig)?)?;
        tokio::time::sleep(std::time::Duration::from_secs(wait.parse()?)).await;
    }
    srv.stop().await;
    Ok(())
}
