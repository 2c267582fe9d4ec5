//! The relay of a pinned PostgreSQL connection: sqlx connects to a listener
//! on 127.0.0.1; each accepted connection is carried over a TLS connection to
//! the server that trusts only the pinned roots. The relay holds no
//! credentials (sqlx authenticates through it), so a local process that
//! reaches the listener gains nothing it could not do by connecting itself.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::Pin;

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A running relay; dropping it stops accepting (connections already
/// carried end with their client).
pub(crate) struct Relay {
    port: u16,
    accept: AbortHandle,
    last_error: Arc<Mutex<Option<String>>>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl Relay {
    pub(crate) async fn start(pin: Arc<Pin>) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let last_error = Arc::new(Mutex::new(None));
        let errors = last_error.clone();
        let accept = tokio::spawn(async move {
            loop {
                let client = match listener.accept().await {
                    Ok((client, _)) => client,
                    Err(_) => {
                        // Out of descriptors, say: try again shortly.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (pin, errors) = (pin.clone(), errors.clone());
                tokio::spawn(async move { carry(client, &pin, &errors).await });
            }
        })
        .abort_handle();
        Ok(Self {
            port,
            accept,
            last_error,
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Why the last connection through the relay failed, if one did.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// As long as sqlx waits for a connection from the pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn carry(mut client: TcpStream, pin: &Pin, errors: &Mutex<Option<String>>) {
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect(pin))
        .await
        .unwrap_or_else(|_| Err("no TLS connection within 10s".into()));
    match connected {
        Ok(mut server) => {
            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        }
        Err(e) => {
            let msg = format!(
                "PostgreSQL TLS to {}:{} (trusting only the {} certificate(s) of sslrootcert {}): {e}",
                pin.host,
                pin.port,
                pin.roots,
                pin.root_file.display()
            );
            tracing::warn!("{msg}");
            if let Ok(mut last) = errors.lock() {
                *last = Some(msg);
            }
        }
    }
}

/// A verified TLS connection to the server, as libpq makes it: SSLRequest,
/// `S`, then the handshake.
pub(crate) async fn connect(pin: &Pin) -> Result<TlsStream<TcpStream>, String> {
    let mut tcp = TcpStream::connect((pin.host.as_str(), pin.port))
        .await
        .map_err(|e| e.to_string())?;
    tcp.write_all(&SSL_REQUEST)
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    if answer[0] != b'S' {
        return Err("the server does not offer TLS".into());
    }
    let name = ServerName::try_from(pin.host.clone()).map_err(|e| e.to_string())?;
    TlsConnector::from(pin.config.clone())
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}
