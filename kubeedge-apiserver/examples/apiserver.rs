//! A standalone API server: `cargo run -p kubeedge-apiserver --example apiserver -- [DB] [ADDR] [KUBECONFIG]`
//! (defaults `apiserver.db`, `127.0.0.1:6443`, `admin.kubeconfig`), then
//! `kubectl --kubeconfig admin.kubeconfig get ns`. Enter (or end of input) stops it.

use kubeedge_apiserver::{
    serve, write_kubeconfig, ApiConfig, ApiService, Pki, ServeConfig, SqliteStore,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let db = args.next().unwrap_or_else(|| "apiserver.db".into());
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:6443".into());
    let kubeconfig = args.next().unwrap_or_else(|| "admin.kubeconfig".into());
    let store = SqliteStore::open(&db)?;
    let service = ApiService::new(store, ApiConfig::default()).await?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    // The CA lives next to the database, so the kubeconfig stays valid across restarts.
    let pki = Pki::load_or_generate(std::path::Path::new(&format!("{db}.pki")), &[])?;
    let admin = pki.issue_client_cert("admin", Some("system:masters"))?;
    write_kubeconfig(
        std::path::Path::new(&kubeconfig),
        &format!("https://{local}"),
        &pki.ca_pem(),
        Some(&admin),
        None,
    )?;
    println!("serving https://{local} (store {db}); kubeconfig written to {kubeconfig}");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = stop.send(());
    });
    serve(
        listener,
        service,
        pki.server_tls()?,
        ServeConfig::default(),
        async {
            let _ = stopped.await;
        },
    )
    .await?;
    Ok(())
}
