//! The relay of a pinned PostgreSQL connection: sqlx connects to a Unix
//! socket in a directory of its own (mode 0700, removed with the relay);
//! each accepted connection is carried over a TLS connection to the server
//! that trusts only the pinned roots. The relay holds no password (sqlx
//! authenticates through it) but presents `sslcert` if one is given, so no
//! other local user may reach it: hence a private Unix socket, not a
//! loopback port.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};
use tokio::task::AbortHandle;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::Pin;

/// PostgreSQL's SSLRequest: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// The port in the socket's name (sqlx looks for `DIR/.s.PGSQL.PORT`).
pub(crate) const RELAY_PORT: u16 = 5432;

/// A running relay; dropping it stops accepting (connections already
/// carried end with their client).
pub(crate) struct Relay {
    /// The socket's directory (0700); removed when the relay is dropped.
    dir: tempfile::TempDir,
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
        // Created 0700: no moment when another user could enter it.
        let dir = tempfile::Builder::new()
            .prefix("tollgate-pg-")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()?;
        let listener = UnixListener::bind(dir.path().join(format!(".s.PGSQL.{RELAY_PORT}")))?;
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
            dir,
            accept,
            last_error,
        })
    }

    /// The directory of its socket (`.s.PGSQL.`[`RELAY_PORT`]), as sqlx's
    /// `host=` takes it.
    pub(crate) fn socket_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Why the last connection through the relay failed, if one did.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }
}

/// As long as sqlx waits for a connection from the pool.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

async fn carry(mut client: UnixStream, pin: &Pin, errors: &Mutex<Option<String>>) {
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
        .map_err(|e| super::verify::describe(&e))
}
