//! `ostium-echo NAME ADDR...`: an echo backend (see `ostium_test_support`) on each address,
//! until interrupted. The quickstart runs its example backends with it.

use std::net::SocketAddr;

use ostium_test_support::EchoBackend;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(name), addrs) = (args.next(), args.collect::<Vec<_>>()) else {
        eprintln!("usage: ostium-echo NAME ADDR...");
        std::process::exit(64);
    };
    let mut backends = Vec::new();
    for addr in &addrs {
        let Ok(addr) = addr.parse::<SocketAddr>() else {
            eprintln!("ostium-echo: `{addr}` is not an address like 127.0.0.1:9081");
            std::process::exit(64);
        };
        match EchoBackend::start_on(&name, addr).await {
            Ok(backend) => backends.push(backend),
            Err(e) => {
                eprintln!("ostium-echo: cannot listen on {addr}: {e}");
                std::process::exit(1);
            }
        }
    }
    if backends.is_empty() {
        eprintln!("usage: ostium-echo NAME ADDR...");
        std::process::exit(64);
    }
    let _ = tokio::signal::ctrl_c().await;
}
