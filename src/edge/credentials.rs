//! The server's TLS credentials at run time: CA, server certificate and key, and
//! certificate revocation lists, read from their files and reloadable without a
//! restart.
//!
//! Owns: turning the files into the rustls configuration the accept loop uses
//! (sent on a watch channel, so new connections use the newest one), and the set
//! of revoked certificate serials that handlers check, so that connections opened
//! before a revocation lose their calls too. Must never accept a configuration
//! that does not build (a bad reload keeps the previous one) nor read files on an
//! async worker (callers use `spawn_blocking`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::CertificateRevocationListDer;
use rustls_pki_types::pem::PemObject;
use tokio::sync::watch;

use crate::config::{TlsFiles, read_text};
use crate::error::{Error, Result};
use crate::tls;

/// What a (re)load found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// Serials (lowercase hex, as `PeerIdentity::cert_serial`) the CRLs revoke.
    pub revoked: HashSet<String>,
    /// CRL files read.
    pub crl_files: usize,
}

/// Cheap to clone; every clone sees the newest credentials.
#[derive(Clone)]
pub struct Credentials {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    config: watch::Sender<Arc<ServerConfig>>,
    revoked: RwLock<HashSet<String>>,
    /// One reload at a time, so the watch and the revoked set move together.
    reloading: Mutex<()>,
}

impl Credentials {
    /// Reads the files; the receiver feeds [`tls::incoming`]. Blocks on file I/O.
    pub fn load(files: TlsFiles) -> Result<(Credentials, watch::Receiver<Arc<ServerConfig>>)> {
        let (config, loaded) = read(&files)?;
        let (sender, receiver) = watch::channel(config);
        let credentials = Credentials {
            inner: Arc::new(Inner {
                files,
                config: sender,
                revoked: RwLock::new(loaded.revoked),
                reloading: Mutex::new(()),
            }),
        };
        Ok((credentials, receiver))
    }

    /// Re-reads every file; on success new connections use the new configuration
    /// and the new revoked set applies to every call from now on. On failure
    /// nothing changes. Blocks on file I/O.
    pub fn reload(&self) -> Result<Loaded> {
        let _one_at_a_time = self
            .inner
            .reloading
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (config, loaded) = read(&self.inner.files)?;
        *self
            .inner
            .revoked
            .write()
            .unwrap_or_else(|p| p.into_inner()) = loaded.revoked.clone();
        self.inner.config.send_replace(config);
        tracing::info!(
            crl_files = loaded.crl_files,
            revoked_serials = loaded.revoked.len(),
            "TLS credentials and revocation lists reloaded"
        );
        Ok(loaded)
    }

    /// Whether a loaded CRL revokes the certificate with this serial.
    pub fn is_revoked(&self, cert_serial: &str) -> bool {
        self.inner
            .revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(cert_serial)
    }
}

fn read(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Loaded)> {
    let crls = files
        .crls
        .iter()
        .map(|path| read_text(path))
        .collect::<Result<Vec<_>>>()?;
    let config = tls::server_config(
        &read_text(&files.ca_cert)?,
        &read_text(&files.server_cert)?,
        &read_text(&files.server_key)?,
        &crls,
    )?;
    let mut revoked = HashSet::new();
    for (index, pem) in crls.iter().enumerate() {
        revoked.extend(revoked_serials(pem).map_err(|problem| {
            Error::Certificate(format!(
                "CRL {}: {problem}",
                files
                    .crls
                    .get(index)
                    .map_or_else(|| index.to_string(), |p| p.display().to_string())
            ))
        })?);
    }
    Ok((
        config,
        Loaded {
            revoked,
            crl_files: crls.len(),
        },
    ))
}

/// The serials (lowercase hex without leading zeros) revoked by the CRLs in `pem`.
pub fn revoked_serials(pem: &str) -> std::result::Result<Vec<String>, String> {
    let mut serials = Vec::new();
    for der in CertificateRevocationListDer::pem_slice_iter(pem.as_bytes()) {
        let der = der.map_err(|e| format!("invalid PEM: {e}"))?;
        let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
            .map_err(|e| format!("cannot parse the CRL: {e}"))?;
        serials.extend(
            crl.iter_revoked_certificates()
                .map(|revoked| format!("{:x}", revoked.user_certificate)),
        );
    }
    Ok(serials)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertAuthority, Validity};

    #[test]
    fn reads_the_serials_a_crl_revokes_in_the_identity_form() {
        let ca = CertAuthority::generate("test CA").expect("ca");
        let client = ca
            .issue_client("bank-a", Validity::days(1))
            .expect("client");
        let der = rustls_pki_types::CertificateDer::from_pem_slice(client.cert_pem.as_bytes())
            .expect("pem");
        let serial = crate::identity::identify(&der)
            .expect("identity")
            .cert_serial;
        let crl = ca.crl_pem(&[&serial]).expect("crl");
        assert_eq!(revoked_serials(&crl).expect("parses"), vec![serial]);
        assert!(revoked_serials("not a crl").expect("no CRL").is_empty());
    }
}
