//! The development PKI: a certificate authority that issues the hub's server
//! certificate and one client certificate per organisation, and the on-disk
//! layout `init_dev_pki` maintains.
//!
//! Owns: how certificates are shaped (org client certificates carry CN =
//! org id, the URI SAN `urn:dip:org:<org_id>`, the clientAuth EKU and a random
//! serial; the server certificate carries DNS/IP SANs and the serverAuth EKU),
//! CRL generation, and the files under a dev PKI directory (keys with mode
//! 0600 on unix).
//!
//! Must never: commit or log private keys (the `Debug` impls here redact
//! them; errors never quote key material), overwrite an existing CA, or be
//! used as a production CA — it exists for development, tests and demos.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::string::{Ia5String, PrintableString};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    PublicKeyData, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};
use x509_parser::certificate::X509Certificate;
use x509_parser::der_parser::asn1_rs::Tag;
use x509_parser::x509::X509Name;

use crate::error::{Error, Result};
use crate::identity::{is_valid_org_id, org_uri};

/// How long a generated CA is valid.
const CA_VALIDITY_DAYS: u32 = 3650;
/// How long the hub's server certificate is valid.
const SERVER_VALIDITY_DAYS: u32 = 365;
/// How long an organisation's certificate written by `init_dev_pki` is valid.
const ORG_VALIDITY_DAYS: u32 = 365;
/// How long a CRL from [`CertAuthority::crl_pem`] announces itself valid.
const CRL_VALIDITY_DAYS: u32 = 30;
/// Length of a random certificate serial number, in bytes.
const SERIAL_LEN: usize = 16;

/// A certificate authority: its certificate (PEM) and its signing key.
pub struct CertAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// How the CA's subject key identifier is obtained, for CRLs.
    key_id: KeyIdMethod,
}

/// A freshly issued certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A certificate's validity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from one hour ago (tolerates clock skew) until `n` days from now.
    pub fn days(n: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now + Duration::days(i64::from(n)),
        }
    }

    /// A window that ended yesterday: for tests of expired certificates.
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::days(2),
            not_after: now - Duration::days(1),
        }
    }
}

impl CertAuthority {
    /// Generates a new self-signed CA (ECDSA P-256) named `common_name`,
    /// valid for ten years, allowed to sign end-entity certificates and CRLs.
    pub fn generate(common_name: &str) -> Result<Self> {
        let key = KeyPair::generate().map_err(|e| rcgen_error("generating the CA key", e))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, Validity::days(CA_VALIDITY_DAYS))?;
        let cert = params
            .self_signed(&key)
            .map_err(|e| rcgen_error("self-signing the CA certificate", e))?;
        Ok(CertAuthority {
            cert_pem: cert.pem(),
            key_id: params.key_identifier_method.clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads a CA from its certificate and private key (both PEM).
    ///
    /// Checks that the certificate is a CA certificate and that the key is
    /// its key. Certificates issued afterwards name exactly the CA's subject
    /// and subject key identifier, so they chain to `cert_pem`.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self> {
        // Deliberately not quoting rcgen's error: it could echo key bytes.
        let key = KeyPair::from_pem(key_pem)
            .map_err(|_| Error::Certificate("the CA key is not a valid PEM private key".into()))?;
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| Error::Certificate(format!("the CA certificate is not valid PEM: {e}")))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| Error::Certificate(format!("cannot parse the CA certificate: {e}")))?;
        check_is_ca(&cert)?;
        if cert.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(Error::Certificate(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        let params = issuer_params(&cert)?;
        Ok(CertAuthority {
            cert_pem: cert_pem.to_owned(),
            key_id: params.key_identifier_method.clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (PKCS#8). Secret: never log it.
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// Issues the hub's server certificate for `names`: DNS names and IP
    /// addresses (e.g. `"localhost"`, `"127.0.0.1"`), serverAuth EKU.
    pub fn issue_server(&self, names: &[&str]) -> Result<IssuedCert> {
        let Some(first) = names.first() else {
            return Err(Error::Config(
                "the server certificate needs at least one DNS name or IP address".into(),
            ));
        };
        let owned: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(owned)
            .map_err(|e| Error::Config(format!("server names {names:?}: {e}")))?;
        params.distinguished_name = common_name_dn(first);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue_leaf(params, Validity::days(SERVER_VALIDITY_DAYS))
    }

    /// Issues organisation `org_id`'s client certificate: CN = org id, URI
    /// SAN `urn:dip:org:<org_id>`, clientAuth EKU, random serial.
    pub fn issue_client(&self, org_id: &str, validity: Validity) -> Result<IssuedCert> {
        check_org_id(org_id)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn(org_id);
        params.subject_alt_names = vec![uri_san(&org_uri(org_id))?];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue_leaf(params, validity)
    }

    /// A CRL (PEM) signed by this CA revoking the certificates whose serials
    /// are given as hex (the form of `PeerIdentity::cert_serial`), valid for
    /// 30 days. An empty list gives a valid CRL that revokes nothing.
    pub fn crl_pem(&self, revoked_serials: &[&str]) -> Result<String> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked_serials
            .iter()
            .map(|serial| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&hex_to_bytes(serial)?),
                    revocation_time: now,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let params = CertificateRevocationListParams {
            this_update: now,
            next_update: now + Duration::days(i64::from(CRL_VALIDITY_DAYS)),
            // Seconds since the epoch: increases from one CRL to the next.
            crl_number: SerialNumber::from(now.unix_timestamp().unsigned_abs()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: self.key_id.clone(),
        };
        let crl = params
            .signed_by(&self.issuer)
            .map_err(|e| rcgen_error("signing the CRL", e))?;
        crl.pem().map_err(|e| rcgen_error("encoding the CRL", e))
    }

    /// Signs `params` (plus validity, serial, key usage and AKI) for a new key.
    fn issue_leaf(&self, mut params: CertificateParams, validity: Validity) -> Result<IssuedCert> {
        set_validity(&mut params, validity)?;
        params.serial_number = Some(random_serial()?);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(|e| rcgen_error("generating a key", e))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| rcgen_error("signing a certificate", e))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// A leaf with exactly these URI SANs, for identity tests of
    /// certificates that `issue_client` refuses to make.
    #[cfg(test)]
    pub(crate) fn issue_with_uri_sans_for_tests(&self, uris: &[&str]) -> Result<IssuedCert> {
        let mut params = CertificateParams::default();
        params.distinguished_name = common_name_dn("test");
        params.subject_alt_names = uris.iter().map(|u| uri_san(u)).collect::<Result<_>>()?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue_leaf(params, Validity::days(1))
    }
}

impl fmt::Debug for CertAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertAuthority")
            .field("cert_pem", &self.cert_pem)
            .field("key", &"<redacted>")
            .finish()
    }
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Where a dev PKI directory keeps each file.
///
/// Paths are built, not checked: validate org ids (as [`init_dev_pki`] does)
/// before using [`DevPkiPaths::org_cert`] / [`DevPkiPaths::org_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevPkiPaths {
    dir: PathBuf,
}

impl DevPkiPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DevPkiPaths { dir: dir.into() }
    }

    /// The PKI directory itself.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir/ca.pem`
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `dir/ca.key`
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    /// `dir/server.pem`
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }

    /// `dir/server.key`
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// `dir/orgs`
    pub fn orgs_dir(&self) -> PathBuf {
        self.dir.join("orgs")
    }

    /// `dir/orgs/<org>.pem`
    pub fn org_cert(&self, org: &str) -> PathBuf {
        self.orgs_dir().join(format!("{org}.pem"))
    }

    /// `dir/orgs/<org>.key`
    pub fn org_key(&self, org: &str) -> PathBuf {
        self.orgs_dir().join(format!("{org}.key"))
    }
}

/// One certificate (with its key) of a dev PKI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PkiItem {
    Ca,
    Server,
    Org(String),
}

impl fmt::Display for PkiItem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PkiItem::Ca => f.write_str("CA"),
            PkiItem::Server => f.write_str("server certificate"),
            PkiItem::Org(org) => write!(f, "certificate of organisation {org}"),
        }
    }
}

/// What [`init_dev_pki`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitReport {
    /// Written by this run.
    pub created: Vec<PkiItem>,
    /// Already on disk and left as they were.
    pub present: Vec<PkiItem>,
}

impl InitReport {
    fn record(&mut self, item: PkiItem, created: bool) {
        if created {
            self.created.push(item);
        } else {
            self.present.push(item);
        }
    }
}

/// The development PKI for every organisation in the registry file at
/// `registry`, with a server certificate for `localhost` and `127.0.0.1`
/// (what `dip-hub certs init` and the demo set up).
pub fn init_dev_pki_for_registry(dir: &Path, registry: &Path) -> Result<InitReport> {
    let orgs: Vec<String> = crate::registry::Registry::load(registry)?
        .all()
        .into_iter()
        .map(|o| o.id)
        .collect();
    init_dev_pki(dir, &orgs, &["localhost", "127.0.0.1"])
}

/// Creates or completes a dev PKI in `dir` (layout: [`DevPkiPaths`]).
///
/// Loads the CA if `ca.pem` and `ca.key` exist, else generates one; then
/// writes the server certificate and each organisation's certificate unless
/// both its files exist already. Rerunning with one more org issues just
/// that org. If the CA is new, every leaf is reissued (old leaves would not
/// chain to it). Only one of `ca.pem`/`ca.key` present is an error: the CA is
/// never overwritten. Every org id is checked before anything is written;
/// an id listed twice is handled once.
pub fn init_dev_pki(dir: &Path, org_ids: &[String], server_names: &[&str]) -> Result<InitReport> {
    for org in org_ids {
        check_org_id(org)?;
    }
    let paths = DevPkiPaths::new(dir);
    fs::create_dir_all(paths.orgs_dir())
        .map_err(|e| Error::io(format!("creating {}", paths.orgs_dir().display()), e))?;

    let mut report = InitReport::default();
    let (ca, ca_created) = load_or_generate_ca(&paths)?;
    report.record(PkiItem::Ca, ca_created);

    let created = ensure_leaf(
        &paths.server_cert(),
        &paths.server_key(),
        ca_created,
        || ca.issue_server(server_names),
    )?;
    report.record(PkiItem::Server, created);

    let mut seen = std::collections::HashSet::new();
    for org in org_ids.iter().filter(|org| seen.insert(org.as_str())) {
        let created = ensure_leaf(
            &paths.org_cert(org),
            &paths.org_key(org),
            ca_created,
            || ca.issue_client(org, Validity::days(ORG_VALIDITY_DAYS)),
        )?;
        report.record(PkiItem::Org(org.clone()), created);
    }
    Ok(report)
}

/// The CA in `paths`, and whether it had to be generated.
fn load_or_generate_ca(paths: &DevPkiPaths) -> Result<(CertAuthority, bool)> {
    let (cert_path, key_path) = (paths.ca_cert(), paths.ca_key());
    match (cert_path.exists(), key_path.exists()) {
        (true, true) => {
            let cert = read_to_string(&cert_path)?;
            let key = read_to_string(&key_path)?;
            Ok((CertAuthority::load(&cert, &key)?, false))
        }
        (false, false) => {
            let ca = CertAuthority::generate("DIP Hub development CA")?;
            write_file(&key_path, &ca.key_pem(), true)?;
            write_file(&cert_path, ca.cert_pem(), false)?;
            Ok((ca, true))
        }
        (has_cert, _) => {
            let (present, missing) = if has_cert {
                (&cert_path, &key_path)
            } else {
                (&key_path, &cert_path)
            };
            Err(Error::Config(format!(
                "{} exists but {} does not; restore it, or delete both to start a new CA",
                present.display(),
                missing.display()
            )))
        }
    }
}

/// Writes the certificate and key from `issue` unless both files exist and
/// `force` is false. Returns whether it wrote them.
fn ensure_leaf(
    cert_path: &Path,
    key_path: &Path,
    force: bool,
    issue: impl FnOnce() -> Result<IssuedCert>,
) -> Result<bool> {
    if !force && cert_path.exists() && key_path.exists() {
        return Ok(false);
    }
    let issued = issue()?;
    write_file(key_path, &issued.key_pem, true)?;
    write_file(cert_path, &issued.cert_pem, false)?;
    Ok(true)
}

fn read_to_string(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))
}

/// Writes `contents` to `path` through a temporary file and a rename, so a
/// crash never leaves half a file. `secret` files get mode 0600 on unix.
fn write_file(path: &Path, contents: &str, secret: bool) -> Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let context = || format!("writing {}", path.display());
    let mut file = open_for_write(&tmp, secret).map_err(|e| Error::io(context(), e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(context(), e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| Error::io(context(), e))
}

/// Creates or truncates `path`, owner-only if `secret` (unix).
fn open_for_write(path: &Path, secret: bool) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        if secret {
            options.mode(0o600);
        }
        let file = options.open(path)?;
        if secret {
            // `mode` only applies when the file is created; a leftover
            // temporary file keeps its old mode unless we set it.
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        Ok(file)
    }
    #[cfg(not(unix))]
    {
        let _ = secret;
        options.open(path)
    }
}

fn check_org_id(org_id: &str) -> Result<()> {
    if is_valid_org_id(org_id) {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "organisation id {org_id:?} is invalid: expected ^[a-z0-9][a-z0-9-]{{0,62}}$"
        )))
    }
}

fn common_name_dn(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    dn
}

fn uri_san(uri: &str) -> Result<SanType> {
    let uri = Ia5String::try_from(uri)
        .map_err(|e| Error::Certificate(format!("URI {uri:?} cannot be a SAN: {e}")))?;
    Ok(SanType::URI(uri))
}

fn set_validity(params: &mut CertificateParams, validity: Validity) -> Result<()> {
    if validity.not_after <= validity.not_before {
        return Err(Error::Certificate(format!(
            "validity ends ({}) before it starts ({})",
            validity.not_after, validity.not_before
        )));
    }
    params.not_before = validity.not_before;
    params.not_after = validity.not_after;
    Ok(())
}

/// A random positive serial of [`SERIAL_LEN`] bytes with no leading zero
/// byte, so its hex form is always `2 * SERIAL_LEN` digits.
fn random_serial() -> Result<SerialNumber> {
    let mut bytes = [0u8; SERIAL_LEN];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut bytes)
        .map_err(|_| Error::Certificate("the system random generator failed".into()))?;
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Parses a hex serial (odd length allowed, optional `:` separators).
fn hex_to_bytes(serial: &str) -> Result<Vec<u8>> {
    let digits: String = serial.chars().filter(|c| *c != ':').collect();
    let invalid = || Error::Config(format!("serial {serial:?} is not a hexadecimal number"));
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let padded = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits
    };
    (0..padded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&padded[i..i + 2], 16).map_err(|_| invalid()))
        .collect()
}

fn check_is_ca(cert: &X509Certificate<'_>) -> Result<()> {
    let is_ca = cert
        .basic_constraints()
        .map_err(|e| Error::Certificate(format!("CA basicConstraints unreadable: {e}")))?
        .is_some_and(|bc| bc.value.ca);
    if is_ca {
        Ok(())
    } else {
        Err(Error::Certificate(
            "the CA certificate is not a CA (basicConstraints cA is not set)".into(),
        ))
    }
}

/// The issuer parameters rcgen needs to sign as the CA in `cert`: its
/// subject, its subject key identifier and its key usages.
///
/// rcgen's own `Issuer::from_ca_cert_pem` needs rcgen's `x509-parser`
/// feature, which this project does not enable; this is its equivalent.
fn issuer_params(cert: &X509Certificate<'_>) -> Result<CertificateParams> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(cert.subject())?;
    params.key_identifier_method = key_id_method(cert);
    params.key_usages = key_usages(cert)?;
    Ok(params)
}

/// Rebuilds a subject name so that rcgen re-encodes it byte for byte
/// (same attribute order and string types), which chain building requires.
fn distinguished_name(name: &X509Name<'_>) -> Result<DistinguishedName> {
    let mut dn = DistinguishedName::new();
    for rdn in name.iter() {
        let mut attrs = rdn.iter();
        let (Some(attr), None) = (attrs.next(), attrs.next()) else {
            return Err(Error::Certificate(
                "the CA subject has a multi-valued name component".into(),
            ));
        };
        let oid: Vec<u64> = attr
            .attr_type()
            .iter()
            .ok_or_else(|| Error::Certificate("the CA subject has an oversized OID".into()))?
            .collect();
        dn.push(DnType::from_oid(&oid), dn_value(attr.attr_value())?);
    }
    Ok(dn)
}

fn dn_value(value: &x509_parser::der_parser::asn1_rs::Any<'_>) -> Result<DnValue> {
    let unsupported =
        || Error::Certificate("the CA subject uses an unsupported string type".into());
    let text = std::str::from_utf8(value.data).map_err(|_| unsupported())?;
    match value.header.tag() {
        Tag::Utf8String => Ok(DnValue::Utf8String(text.to_owned())),
        Tag::PrintableString => PrintableString::try_from(text)
            .map(DnValue::PrintableString)
            .map_err(|_| unsupported()),
        Tag::Ia5String => Ia5String::try_from(text)
            .map(DnValue::Ia5String)
            .map_err(|_| unsupported()),
        _ => Err(unsupported()),
    }
}

/// The CA's subject key identifier as given, or SHA-256 (rcgen's default).
fn key_id_method(cert: &X509Certificate<'_>) -> KeyIdMethod {
    cert.iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            x509_parser::extensions::ParsedExtension::SubjectKeyIdentifier(id) => {
                Some(KeyIdMethod::PreSpecified(id.0.to_vec()))
            }
            _ => None,
        })
        .unwrap_or(KeyIdMethod::Sha256)
}

fn key_usages(cert: &X509Certificate<'_>) -> Result<Vec<KeyUsagePurpose>> {
    let usage = cert
        .key_usage()
        .map_err(|e| Error::Certificate(format!("CA keyUsage unreadable: {e}")))?;
    let Some(usage) = usage else {
        return Ok(Vec::new());
    };
    let ku = usage.value;
    Ok([
        (ku.digital_signature(), KeyUsagePurpose::DigitalSignature),
        (ku.key_cert_sign(), KeyUsagePurpose::KeyCertSign),
        (ku.crl_sign(), KeyUsagePurpose::CrlSign),
    ]
    .into_iter()
    .filter_map(|(set, purpose)| set.then_some(purpose))
    .collect())
}

fn rcgen_error(doing: &str, error: rcgen::Error) -> Error {
    Error::Certificate(format!("{doing}: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::extensions::GeneralName;

    fn parse(pem: &str) -> Vec<u8> {
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    /// Panics unless rustls accepts `leaf_der` as a client certificate
    /// issued by the CA in `ca_pem`.
    fn verify_client_cert(ca_pem: &str, leaf_der: &[u8]) {
        use rustls::server::WebPkiClientVerifier;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(parse(ca_pem))).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            WebPkiClientVerifier::builder_with_provider(std::sync::Arc::new(roots), provider)
                .build()
                .unwrap();
        let now = rustls_pki_types::UnixTime::now();
        verifier
            .verify_client_cert(&CertificateDer::from(leaf_der.to_vec()), &[], now)
            .unwrap();
    }

    fn orgs(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn client_cert_has_cn_uri_san_client_auth_and_validity() {
        let ca = CertAuthority::generate("test ca").unwrap();
        let validity = Validity::days(7);
        let issued = ca.issue_client("police", validity).unwrap();
        let der = parse(&issued.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();

        let cn = cert.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), "police");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.client_auth && !eku.server_auth);
        assert_eq!(
            cert.validity().not_after.timestamp(),
            validity.not_after.unix_timestamp()
        );
        assert_eq!(cert.raw_serial().len(), SERIAL_LEN);
        assert_eq!(crate::identity::identify(&der).unwrap().org_id, "police");
        assert!(issued.key_pem.contains("PRIVATE KEY"));
    }

    #[test]
    fn server_cert_has_dns_and_ip_sans_and_server_auth() {
        let ca = CertAuthority::generate("test ca").unwrap();
        let issued = ca.issue_server(&["localhost", "127.0.0.1"]).unwrap();
        let der = parse(&issued.cert_pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = &cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            sans.general_names,
            vec![
                GeneralName::DNSName("localhost"),
                GeneralName::IPAddress(&[127, 0, 0, 1]),
            ]
        );
        assert!(
            cert.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );
    }

    #[test]
    fn server_cert_needs_a_name() {
        let ca = CertAuthority::generate("test ca").unwrap();
        assert!(matches!(ca.issue_server(&[]), Err(Error::Config(_))));
    }

    #[test]
    fn invalid_org_ids_are_refused() {
        let ca = CertAuthority::generate("test ca").unwrap();
        let err = ca.issue_client("Bank A", Validity::days(1)).unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("Bank A")),
            "{err}"
        );
    }

    #[test]
    fn expired_validity_is_in_the_past() {
        let v = Validity::expired();
        assert!(v.not_after < OffsetDateTime::now_utc());
        assert!(v.not_before < v.not_after);
    }

    #[test]
    fn loaded_ca_issues_certs_that_chain_to_it() {
        let original = CertAuthority::generate("chain ca").unwrap();
        let loaded = CertAuthority::load(original.cert_pem(), &original.key_pem()).unwrap();
        let ca_der = parse(original.cert_pem());
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        let leaf_der = parse(
            &loaded
                .issue_client("bank", Validity::days(1))
                .unwrap()
                .cert_pem,
        );
        let (_, leaf) = x509_parser::parse_x509_certificate(&leaf_der).unwrap();

        assert_eq!(leaf.issuer().as_raw(), ca.subject().as_raw());
        verify_client_cert(original.cert_pem(), &leaf_der);
        let aki = leaf
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                x509_parser::extensions::ParsedExtension::AuthorityKeyIdentifier(a) => {
                    a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => None,
            })
            .unwrap();
        assert_eq!(KeyIdMethod::PreSpecified(aki), key_id_method(&ca));
    }

    #[test]
    fn load_refuses_a_key_from_another_ca() {
        let a = CertAuthority::generate("a").unwrap();
        let b = CertAuthority::generate("b").unwrap();
        let err = CertAuthority::load(a.cert_pem(), &b.key_pem()).unwrap_err();
        assert!(
            matches!(&err, Error::Certificate(m) if m.contains("does not belong")),
            "{err}"
        );
    }

    #[test]
    fn load_refuses_a_leaf_as_ca() {
        let ca = CertAuthority::generate("a").unwrap();
        let leaf = ca.issue_client("x", Validity::days(1)).unwrap();
        let err = CertAuthority::load(&leaf.cert_pem, &leaf.key_pem).unwrap_err();
        assert!(
            matches!(&err, Error::Certificate(m) if m.contains("not a CA")),
            "{err}"
        );
    }

    #[test]
    fn debug_output_redacts_keys() {
        let ca = CertAuthority::generate("a").unwrap();
        let issued = ca.issue_client("x", Validity::days(1)).unwrap();
        for text in [format!("{ca:?}"), format!("{issued:?}")] {
            assert!(!text.contains("PRIVATE KEY"), "{text}");
        }
    }

    #[test]
    fn crl_lists_the_revoked_serials() {
        let ca = CertAuthority::generate("a").unwrap();
        let leaf = parse(&ca.issue_client("x", Validity::days(1)).unwrap().cert_pem);
        let serial = crate::identity::identify(&leaf).unwrap().cert_serial;
        let crl_pem = ca.crl_pem(&[&serial]).unwrap();
        let crl_der =
            rustls_pki_types::CertificateRevocationListDer::from_pem_slice(crl_pem.as_bytes())
                .unwrap();
        let (_, crl) = x509_parser::parse_x509_crl(&crl_der).unwrap();
        let listed: Vec<String> = crl
            .iter_revoked_certificates()
            .map(|r| format!("{:x}", r.user_certificate))
            .collect();
        assert_eq!(listed, vec![serial]);
        assert!(matches!(ca.crl_pem(&["xyz"]), Err(Error::Config(_))));
    }

    #[test]
    fn hex_serials_parse() {
        assert_eq!(hex_to_bytes("0a0b").unwrap(), vec![0x0a, 0x0b]);
        assert_eq!(hex_to_bytes("a0b").unwrap(), vec![0x0a, 0x0b]);
        assert_eq!(hex_to_bytes("0a:0b").unwrap(), vec![0x0a, 0x0b]);
        assert!(hex_to_bytes("").is_err());
    }

    #[test]
    fn init_dev_pki_creates_then_keeps_then_adds_an_org() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DevPkiPaths::new(dir.path());

        let first = init_dev_pki(dir.path(), &orgs(&["bank", "police"]), &["localhost"]).unwrap();
        assert_eq!(
            first.created,
            vec![
                PkiItem::Ca,
                PkiItem::Server,
                PkiItem::Org("bank".into()),
                PkiItem::Org("police".into())
            ]
        );
        assert!(first.present.is_empty());
        let bank_pem = fs::read_to_string(paths.org_cert("bank")).unwrap();

        let second = init_dev_pki(
            dir.path(),
            &orgs(&["bank", "police", "telco"]),
            &["localhost"],
        )
        .unwrap();
        assert_eq!(second.created, vec![PkiItem::Org("telco".into())]);
        assert_eq!(second.present.len(), 4);
        assert_eq!(
            fs::read_to_string(paths.org_cert("bank")).unwrap(),
            bank_pem
        );

        // The new org's certificate chains to the CA that was already there.
        let ca_pem = fs::read_to_string(paths.ca_cert()).unwrap();
        let telco_der = parse(&fs::read_to_string(paths.org_cert("telco")).unwrap());
        verify_client_cert(&ca_pem, &telco_der);
        assert!(paths.org_key("telco").exists());
    }

    #[test]
    fn a_repeated_org_is_issued_once() {
        let dir = tempfile::tempdir().unwrap();
        let report = init_dev_pki(dir.path(), &orgs(&["bank", "bank"]), &["localhost"]).unwrap();
        assert_eq!(report.created.len(), 3);
    }

    #[cfg(unix)]
    #[test]
    fn key_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = DevPkiPaths::new(dir.path());
        init_dev_pki(dir.path(), &orgs(&["bank"]), &["localhost"]).unwrap();
        for key in [paths.ca_key(), paths.server_key(), paths.org_key("bank")] {
            let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
    }

    #[test]
    fn init_dev_pki_rejects_a_bad_org_before_writing() {
        let dir = tempfile::tempdir().unwrap();
        let err = init_dev_pki(dir.path(), &orgs(&["ok", "../evil"]), &["localhost"]).unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("../evil")),
            "{err}"
        );
        assert!(!DevPkiPaths::new(dir.path()).ca_cert().exists());
    }

    #[test]
    fn init_dev_pki_refuses_half_a_ca() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DevPkiPaths::new(dir.path());
        init_dev_pki(dir.path(), &[], &["localhost"]).unwrap();
        fs::remove_file(paths.ca_key()).unwrap();
        let err = init_dev_pki(dir.path(), &[], &["localhost"]).unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("ca.key")),
            "{err}"
        );
    }

    #[test]
    fn a_new_ca_reissues_every_leaf() {
        let dir = tempfile::tempdir().unwrap();
        let paths = DevPkiPaths::new(dir.path());
        init_dev_pki(dir.path(), &orgs(&["bank"]), &["localhost"]).unwrap();
        fs::remove_file(paths.ca_key()).unwrap();
        fs::remove_file(paths.ca_cert()).unwrap();
        let report = init_dev_pki(dir.path(), &orgs(&["bank"]), &["localhost"]).unwrap();
        assert_eq!(report.created.len(), 3);
        assert!(report.present.is_empty());
    }
}
