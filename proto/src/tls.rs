//! TLS shared by both ends (rustls with the ring provider, TLS 1.2 and 1.3):
//! the provider ([`provider`]), a client's own certificate
//! ([`client_identity`]) and trust roots ([`client_roots`]), and the errors
//! of every TLS setup ([`TlsError`]). The server's side (its certificate,
//! mutual TLS, the listener) is in the control plane.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Why TLS could not be set up; names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS certificate file {path}: {reason}")]
    Cert { path: PathBuf, reason: String },
    #[error("TLS key file {path}: {reason}")]
    Key { path: PathBuf, reason: String },
    #[error("TLS certificate {cert} and key {key} do not fit together: {reason}")]
    Config {
        cert: PathBuf,
        key: PathBuf,
        reason: String,
    },
    #[error("CA file {path}: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("client CA file {path} (--client-ca): {reason}")]
    ClientCa { path: PathBuf, reason: String },
    #[error("client certificate {path}: {reason}")]
    ClientCert { path: PathBuf, reason: String },
}

/// The crypto provider of every TLS endpoint here: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client's certificate chain and private key (PEM files), for a control
/// plane that requires client certificates.
pub fn client_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let err = |path: &Path, reason: String| TlsError::ClientCert {
        path: path.to_path_buf(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, pem_reason(&e)))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert, pem_reason(&e)))?;
    if chain.is_empty() {
        return Err(err(cert, "no CERTIFICATE block in PEM".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        err(
            key,
            match e {
                rustls::pki_types::pem::Error::NoItemsFound => {
                    "no PRIVATE KEY block (PKCS#8, RSA or EC) in PEM; encrypted keys are not read"
                        .into()
                }
                e => pem_reason(&e),
            },
        )
    })?;
    Ok((chain, key_der))
}

/// Why a PEM file could not be read, for the messages of [`TlsError`].
pub fn pem_reason(e: &rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(io) => io.to_string(),
        e => format!("not valid PEM ({e:?})"),
    }
}

/// Where Linux distributions keep the system's CA bundle (as openssl-probe
/// looks for it); `SSL_CERT_FILE` first.
const SYSTEM_BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
];

/// The certificates a client trusts: those of `ca_file` (PEM), else the
/// system's CA bundle.
pub fn client_roots(ca_file: Option<&Path>) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |path: &Path| -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let ca_err = |reason: String| TlsError::Ca {
            path: path.to_path_buf(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_err(pem_reason(&e)))?
            .collect::<Result<_, _>>()
            .map_err(|e| ca_err(pem_reason(&e)))?;
        if certs.is_empty() {
            return Err(ca_err("no CERTIFICATE block in PEM".into()));
        }
        Ok(certs)
    };
    if let Some(p) = ca_file {
        return read(p);
    }
    let env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let candidates = env
        .into_iter()
        .chain(SYSTEM_BUNDLES.iter().map(PathBuf::from));
    for p in candidates {
        if p.is_file() {
            return read(&p);
        }
    }
    Err(TlsError::Ca {
        path: PathBuf::from(SYSTEM_BUNDLES[0]),
        reason: "no system CA bundle found (install ca-certificates, set SSL_CERT_FILE, or \
                 pass --ca-file / WIRELENS_CA_FILE)"
            .into(),
    })
}
