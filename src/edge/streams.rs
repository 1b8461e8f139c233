//! The stop signals of live streams, per organisation and per client certificate.
//!
//! Owns: a tree of cancellation tokens, hub → organisation → certificate serial →
//! stream, so that shutting the hub down, suspending an organisation or revoking
//! a certificate ends the affected streams at once. Must never decide who is
//! suspended or revoked (that is `admin`, `registry` and `credentials`); it only
//! ends streams when told.
//!
//! Race-freedom: a handler takes its stream's token *before* it checks the
//! registry (or the revocation list) one last time; the admin side changes the
//! registry *before* it ends the streams. Either the handler sees the change and
//! refuses, or its token exists when the streams are ended.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct Streams {
    root: CancellationToken,
    orgs: Arc<Mutex<HashMap<String, OrgStreams>>>,
}

struct OrgStreams {
    token: CancellationToken,
    certs: HashMap<String, CancellationToken>,
}

impl Streams {
    /// Streams that all end when `root` is cancelled (hub shutdown).
    pub fn new(root: CancellationToken) -> Streams {
        Streams {
            root,
            orgs: Arc::default(),
        }
    }

    /// The stop token for a new stream of `org_id` over certificate `cert_serial`.
    pub fn token(&self, org_id: &str, cert_serial: &str) -> CancellationToken {
        let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
        let org = orgs
            .entry(org_id.to_string())
            .or_insert_with(|| OrgStreams {
                token: self.root.child_token(),
                certs: HashMap::new(),
            });
        let org_token = org.token.clone();
        let cert = org
            .certs
            .entry(cert_serial.to_string())
            .or_insert_with(|| org_token.child_token());
        cert.child_token()
    }

    /// Ends every stream of `org_id`; later streams get fresh tokens.
    pub fn end_org(&self, org_id: &str) -> bool {
        let removed = {
            let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
            orgs.remove(org_id)
        };
        removed.map(|org| org.token.cancel()).is_some()
    }

    /// Ends every stream opened with one of the certificates `serials`.
    pub fn end_certs(&self, serials: &HashSet<String>) -> usize {
        let mut ended = Vec::new();
        {
            let mut orgs = self.orgs.lock().unwrap_or_else(|p| p.into_inner());
            for org in orgs.values_mut() {
                org.certs.retain(|serial, token| {
                    let revoked = serials.contains(serial);
                    if revoked {
                        ended.push(token.clone());
                    }
                    !revoked
                });
            }
        }
        for token in &ended {
            token.cancel();
        }
        ended.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspension_and_revocation_end_only_their_streams() {
        let root = CancellationToken::new();
        let streams = Streams::new(root.clone());
        let bank_a = streams.token("bank", "a1");
        let bank_b = streams.token("bank", "b2");
        let police = streams.token("police", "c3");
        assert_eq!(streams.end_certs(&HashSet::from(["a1".to_string()])), 1);
        assert!(bank_a.is_cancelled());
        assert!(!bank_b.is_cancelled() && !police.is_cancelled());
        assert!(streams.end_org("bank"));
        assert!(bank_b.is_cancelled());
        assert!(!police.is_cancelled());
        let again = streams.token("bank", "b2");
        assert!(!again.is_cancelled(), "a reactivated org streams again");
        root.cancel();
        assert!(police.is_cancelled() && again.is_cancelled());
    }
}
