//! `mock-upstream`: the test kit's mock upstream as a process, for client tests in other
//! languages and for benchmarks. Prints `listening on http://ADDR` once it accepts requests;
//! scripts go to `POST /_mock/push` (see `Reply::from_json`).
//!
//! Options: `--listen ADDR` (default an ephemeral loopback port), `--threads N` (runtime worker
//! threads; default one per core).

use std::net::SocketAddr;

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::args()
        .skip_while(|a| a != "--listen")
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into())
        .parse()
        .map_err(std::io::Error::other)?;
    let threads: Option<usize> = std::env::args()
        .skip_while(|a| a != "--threads")
        .nth(1)
        .map(|n| n.parse().map_err(std::io::Error::other))
        .transpose()?;
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n.max(1));
    }
    let rt = builder.enable_all().build()?;
    rt.block_on(async {
        let mock = modelgate_testkit::MockUpstream::bind(addr).await?;
        println!("listening on {}", mock.url());
        tokio::signal::ctrl_c().await?;
        drop(mock);
        Ok(())
    })
}
