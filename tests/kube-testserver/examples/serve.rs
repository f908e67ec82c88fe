//! Run a test API server until killed, for poking at it with kubectl:
//! `cargo run -p kube-testserver --example serve -- /tmp/kubeconfig`

#[tokio::main]
async fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "kubeconfig".into());
    let server = kube_testserver::TestApiServer::start("dev").await;
    server
        .write_kubeconfig(std::path::Path::new(&path), "dev")
        .expect("write kubeconfig");
    println!("serving {} ; kubeconfig at {path}", server.url());
    tokio::signal::ctrl_c().await.expect("ctrl-c");
}
