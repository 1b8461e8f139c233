//! Who the peer is: the organisation named by a verified client certificate.
//!
//! Owns: the rule that turns a certificate into a [`PeerIdentity`] (the single
//! `urn:dip:org:<id>` URI SAN) and the syntax of organisation ids. This is the
//! ONLY place in the project that reads client identity from a certificate.
//!
//! Must never: verify certificates (rustls has done that before we are called),
//! fall back to the subject CN or any other field, or guess when a certificate
//! names zero or several organisations.

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;

use crate::error::{Error, Result};

/// Prefix of the URI SAN that names an organisation: `urn:dip:org:<org_id>`.
pub const ORG_URI_PREFIX: &str = "urn:dip:org:";

/// Longest organisation id accepted, in bytes.
const MAX_ORG_ID_LEN: usize = 63;

/// The authenticated organisation behind a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// The organisation id from the certificate's `urn:dip:org:` URI SAN.
    pub org_id: String,
    /// The certificate's serial number as lowercase hex without leading
    /// zeros (the form used in CRLs and audit logs).
    pub cert_serial: String,
}

/// Reads the organisation identity from a DER certificate that rustls has
/// already verified.
///
/// The certificate must carry exactly one URI SAN starting with
/// [`ORG_URI_PREFIX`] whose remainder is a valid org id
/// (see [`is_valid_org_id`]); otherwise this returns [`Error::Certificate`].
pub fn identify(cert_der: &[u8]) -> Result<PeerIdentity> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
        .map_err(|e| Error::Certificate(format!("cannot parse the peer certificate: {e}")))?;
    let org_id = org_id_of(&cert)?;
    Ok(PeerIdentity {
        org_id,
        cert_serial: serial_hex(&cert),
    })
}

/// The URI SAN naming an organisation, e.g. `urn:dip:org:bank-a`.
pub fn org_uri(org_id: &str) -> String {
    format!("{ORG_URI_PREFIX}{org_id}")
}

/// Whether `org_id` matches `^[a-z0-9][a-z0-9-]{0,62}$`.
pub fn is_valid_org_id(org_id: &str) -> bool {
    let mut bytes = org_id.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    first_ok
        && org_id.len() <= MAX_ORG_ID_LEN
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The single valid org id among the certificate's `urn:dip:org:` URI SANs.
fn org_id_of(cert: &X509Certificate<'_>) -> Result<String> {
    let ids = org_uris(cert)?;
    match ids.as_slice() {
        [id] if is_valid_org_id(id) => Ok((*id).to_owned()),
        [id] => Err(Error::Certificate(format!(
            "the certificate names organisation {id:?}, which is not a valid org id \
             (expected ^[a-z0-9][a-z0-9-]{{0,62}}$)"
        ))),
        [] => Err(Error::Certificate(format!(
            "the certificate has no {ORG_URI_PREFIX}<org_id> URI SAN, so it names no organisation"
        ))),
        several => Err(Error::Certificate(format!(
            "the certificate names {} organisations ({}); exactly one {ORG_URI_PREFIX} URI SAN \
             is allowed",
            several.len(),
            several.join(", ")
        ))),
    }
}

/// The suffixes of every URI SAN that starts with [`ORG_URI_PREFIX`].
fn org_uris<'a>(cert: &'a X509Certificate<'_>) -> Result<Vec<&'a str>> {
    let san = cert
        .subject_alternative_name()
        .map_err(|e| Error::Certificate(format!("unreadable subjectAltName extension: {e}")))?;
    let Some(san) = san else {
        return Ok(Vec::new());
    };
    Ok(san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(ORG_URI_PREFIX),
            _ => None,
        })
        .collect())
}

/// The serial number as lowercase hex without leading zeros ("0" for zero).
fn serial_hex(cert: &X509Certificate<'_>) -> String {
    format!("{:x}", cert.tbs_certificate.serial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{CertAuthority, Validity};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    fn der(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// A leaf with arbitrary SANs signed by `ca`, for negative cases that
    /// pki.rs deliberately cannot produce.
    fn leaf_with_sans(ca: &CertAuthority, sans: &[&str]) -> Vec<u8> {
        der(&ca.issue_with_uri_sans_for_tests(sans).unwrap().cert_pem)
    }

    #[test]
    fn identifies_org_and_serial_of_an_issued_client_cert() {
        let ca = CertAuthority::generate("test ca").unwrap();
        let issued = ca.issue_client("bank-a", Validity::days(1)).unwrap();
        let cert_der = der(&issued.cert_pem);

        let identity = identify(&cert_der).unwrap();

        assert_eq!(identity.org_id, "bank-a");
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert_der).unwrap();
        let raw: String = parsed
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(identity.cert_serial, raw.trim_start_matches('0'));
        assert!(
            identity
                .cert_serial
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
    }

    #[test]
    fn two_certs_for_one_org_have_different_serials() {
        let ca = CertAuthority::generate("test ca").unwrap();
        let a = identify(&der(&ca
            .issue_client("x", Validity::days(1))
            .unwrap()
            .cert_pem))
        .unwrap();
        let b = identify(&der(&ca
            .issue_client("x", Validity::days(1))
            .unwrap()
            .cert_pem))
        .unwrap();
        assert_eq!(a.org_id, b.org_id);
        assert_ne!(a.cert_serial, b.cert_serial);
    }

    #[test]
    fn a_server_cert_names_no_organisation() {
        let ca = CertAuthority::generate("test ca").unwrap();
        let server = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        let err = identify(&der(&server.cert_pem)).unwrap_err();
        assert!(
            matches!(&err, Error::Certificate(m) if m.contains("no urn:dip:org:")),
            "{err}"
        );
    }

    #[test]
    fn several_org_uris_are_rejected() {
        let ca = CertAuthority::generate("test ca").unwrap();
        let cert = leaf_with_sans(&ca, &["urn:dip:org:bank-a", "urn:dip:org:police"]);
        let err = identify(&cert).unwrap_err();
        assert!(
            matches!(&err, Error::Certificate(m) if m.contains("2 organisations")),
            "{err}"
        );
    }

    #[test]
    fn an_invalid_org_id_in_the_uri_is_rejected() {
        let ca = CertAuthority::generate("test ca").unwrap();
        let cert = leaf_with_sans(&ca, &["urn:dip:org:Bank_A"]);
        let err = identify(&cert).unwrap_err();
        assert!(
            matches!(&err, Error::Certificate(m) if m.contains("Bank_A")),
            "{err}"
        );
    }

    #[test]
    fn other_uri_sans_are_ignored() {
        let ca = CertAuthority::generate("test ca").unwrap();
        let cert = leaf_with_sans(&ca, &["https://example.org/", "urn:dip:org:telco"]);
        assert_eq!(identify(&cert).unwrap().org_id, "telco");
    }

    #[test]
    fn garbage_is_a_certificate_error() {
        let err = identify(b"not a certificate").unwrap_err();
        assert!(matches!(err, Error::Certificate(_)), "{err}");
    }

    #[test]
    fn org_id_syntax() {
        for ok in ["a", "0", "bank-a", "a-", &"a".repeat(63)] {
            assert!(is_valid_org_id(ok), "{ok:?} should be valid");
        }
        for bad in ["", "-a", "A", "bank_a", "bank a", "é", &"a".repeat(64)] {
            assert!(!is_valid_org_id(bad), "{bad:?} should be invalid");
        }
    }
}
