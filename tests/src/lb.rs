//! A small round-robin TCP load balancer on 127.0.0.1, as in front of several collector
//! instances: each new connection goes to the next backend; a backend that refuses the
//! connection is skipped (as a load balancer's health check would), so killing one instance
//! leaves the others serving. It doubles as a device's network: while its link is down
//! ([`LoadBalancer::set_link`]), connections are closed before any answer and those open are
//! cut, which is what an SDK sees when the device is offline.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Result;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The load balancer; stops when dropped.
pub struct LoadBalancer {
    /// Its address.
    pub addr: SocketAddr,
    backends: Arc<RwLock<Vec<SocketAddr>>>,
    link: watch::Sender<bool>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl LoadBalancer {
    /// Starts balancing over `backends`.
    pub fn start(backends: Vec<SocketAddr>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let backends = Arc::new(RwLock::new(backends));
        let next = Arc::new(AtomicUsize::new(0));
        let (link, link_rx) = watch::channel(true);
        {
            let backends = Arc::clone(&backends);
            runtime.spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let backends = Arc::clone(&backends);
                    let next = Arc::clone(&next);
                    let mut link = link_rx.clone();
                    if !*link.borrow_and_update() {
                        // Offline: closed before any answer.
                        drop(client);
                        continue;
                    }
                    tokio::spawn(async move {
                        let list = backends.read().map(|b| b.clone()).unwrap_or_default();
                        for _ in 0..list.len() {
                            let i = next.fetch_add(1, Ordering::Relaxed) % list.len();
                            if let Ok(server) = TcpStream::connect(list[i]).await {
                                let (mut client, mut server) = (client, server);
                                tokio::select! {
                                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                    // The link went down: the connection is cut.
                                    _ = link.wait_for(|up| !*up) => {}
                                }
                                return;
                            }
                        }
                        // No backend answers: the client sees the connection close.
                    });
                }
            });
        }
        Ok(Self {
            addr,
            backends,
            link,
            runtime: Some(runtime),
        })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Brings the link up or down. Down: new connections are closed before any answer and
    /// open ones are cut, as when the device loses its network.
    pub fn set_link(&self, up: bool) {
        self.link.send_replace(up);
    }

    /// Replaces the backend list (an instance restarted on a new port).
    pub fn set_backends(&self, backends: Vec<SocketAddr>) {
        if let Ok(mut b) = self.backends.write() {
            *b = backends;
        }
    }
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
