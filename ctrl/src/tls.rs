//! TLS for the control plane (rustls with the ring provider, TLS 1.2 and 1.3):
//! the server's certificate and key ([`server_config`]), optionally with
//! client certificates required (mutual TLS, [`server_config_with_client_ca`]),
//! and an axum listener that completes handshakes off the accept loop
//! ([`TlsListener`]). The client's half ([`client_roots`],
//! [`client_identity`]) and the provider are `wirelens_proto::tls`,
//! re-exported here.
//!
//! Handshakes run in their own tasks with a deadline ([`HANDSHAKE_TIMEOUT`]),
//! so a client that opens a connection and says nothing holds neither the
//! accept loop nor other clients; a failed handshake is counted, not logged
//! per connection (a port scan would flood the log).
#![forbid(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use wirelens_proto::tls::pem_reason;
pub use wirelens_proto::tls::{client_identity, client_roots, provider, TlsError};

/// Longest a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes completed but not yet taken by the server.
const BACKLOG: usize = 128;

/// Handshakes in progress at once; connections beyond are closed at once
/// (and counted), so a connection flood cannot pile up tasks.
pub const MAX_HANDSHAKES: usize = 1024;

/// The server's TLS configuration from a PEM certificate chain (the server's
/// certificate first) and a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_with_client_ca(cert, key, None)
}

/// [`server_config`], and with `client_ca` (PEM CA certificates) every client
/// must present a certificate chain to one of those CAs (mutual TLS): a
/// client without one, or with another CA's, fails its handshake.
pub fn server_config_with_client_ca(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let cert_err = |reason: String| TlsError::Cert {
        path: cert.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| cert_err(pem_reason(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(pem_reason(&e)))?;
    if chain.is_empty() {
        return Err(cert_err(
            "no CERTIFICATE block; give the server's certificate (and its chain) in PEM".into(),
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::Key {
        path: key.to_path_buf(),
        reason: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no PRIVATE KEY block (PKCS#8, RSA or EC) in PEM; encrypted keys are not read"
                    .into()
            }
            e => pem_reason(&e),
        },
    })?;
    let verifier = match client_ca {
        Some(path) => Some(client_verifier(path)?),
        None => None,
    };
    let cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .and_then(|b| {
            match verifier {
                Some(v) => b.with_client_cert_verifier(v),
                None => b.with_no_client_auth(),
            }
            .with_single_cert(chain, key_der)
        })
        .map_err(|e| TlsError::Config {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            reason: e.to_string(),
        })?;
    let mut cfg = cfg;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Verifies client certificates against the CA certificates in `path`.
fn client_verifier(
    path: &Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let err = |reason: String| TlsError::ClientCa {
        path: path.to_path_buf(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(pem_reason(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(pem_reason(&e)))?;
    if certs.is_empty() {
        return Err(err(
            "no CERTIFICATE block; give the CA certificate(s) that sign the nodes' certificates in PEM"
                .into(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| err(format!("not a usable CA certificate: {e}")))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| err(e.to_string()))
}

/// Accepts TCP connections and hands out those whose TLS handshake completed.
#[derive(Debug)]
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    failed: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `tcp` (inside a tokio runtime).
    pub fn new(tcp: TcpListener, cfg: Arc<rustls::ServerConfig>) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let acceptor = TlsAcceptor::from(cfg);
        let (tx, rx) = mpsc::channel(BACKLOG);
        let failed = Arc::new(AtomicU64::new(0));
        let f2 = Arc::clone(&failed);
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        let task = tokio::spawn(async move {
            loop {
                let (stream, addr) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(_) => {
                        // Out of file descriptors and the like: back off as
                        // axum's own listener does.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    f2.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                };
                let (acceptor, tx, failed) = (acceptor.clone(), tx.clone(), Arc::clone(&f2));
                tokio::spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        _ => {
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        Ok(TlsListener {
            rx,
            local,
            failed,
            task,
        })
    }

    /// Handshakes that failed or timed out so far (shared counter).
    pub fn failed_handshakes(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.failed)
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended (aborted at shutdown): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
