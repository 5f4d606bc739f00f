//! Fault injection for the infrastructure: a TCP proxy in front of the S3 server that can
//! pass traffic, cut every connection (and refuse new ones), or delay new connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const PASS: u8 = 0;
const FAIL: u8 = 1;
const SLOW: u8 = 2;

/// A fault-injecting proxy; stops with its value.
pub(crate) struct S3Proxy {
    /// `http://127.0.0.1:<port>`.
    pub(crate) endpoint: String,
    mode: Arc<AtomicU8>,
    cut: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl S3Proxy {
    /// Proxies to `upstream` (`http://host:port`).
    pub(crate) async fn start(upstream: &str) -> anyhow::Result<Self> {
        let upstream = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let mode = Arc::new(AtomicU8::new(PASS));
        let (cut, cuts) = watch::channel(0u64);
        let accept_mode = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (mode, upstream, mut cuts) =
                    (accept_mode.clone(), upstream.clone(), cuts.clone());
                tokio::spawn(async move {
                    match mode.load(Ordering::SeqCst) {
                        FAIL => return, // dropped: the client sees the connection closed
                        SLOW => tokio::time::sleep(Duration::from_millis(1500)).await,
                        _ => {}
                    }
                    let Ok(server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (mut client, mut server) = (client, server);
                    cuts.mark_unchanged();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {} // a failure starts: cut open connections too
                    }
                });
            }
        });
        Ok(Self {
            endpoint,
            mode,
            cut,
            task,
        })
    }

    /// Every connection fails until [`S3Proxy::pass`].
    pub(crate) fn fail(&self) {
        self.mode.store(FAIL, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
    }

    /// New connections wait 1.5 s before reaching S3.
    pub(crate) fn slow(&self) {
        self.mode.store(SLOW, Ordering::SeqCst);
    }

    /// Traffic passes again.
    pub(crate) fn pass(&self) {
        self.mode.store(PASS, Ordering::SeqCst);
    }
}

impl Drop for S3Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
