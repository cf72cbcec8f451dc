//! `kvmctl agent certs`: a private CA for agents and controllers, and certificates it signs.
//!
//! One directory holds the CA (`ca.pem`, `ca-key.pem`), one client certificate for the
//! controllers (`controller.pem`, `controller-key.pem`) and one server certificate per agent
//! host (`agent-HOST.pem`, `agent-HOST-key.pem`, the host's names and addresses as subject
//! alternative names). Running it again with more hosts signs their certificates with the
//! same CA and leaves what exists alone. Keys are written mode 0600.

use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use std::path::{Path, PathBuf};

const CA_NAME: &str = "kvmctl agent CA";

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("cannot make a certificate: {0}")]
    Make(String),
    #[error("host {0:?}: give a DNS name or an IP address (letters, digits, '.', '-', ':')")]
    Host(String),
}

/// The files `certs` wrote or found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub controller_cert: PathBuf,
    pub controller_key: PathBuf,
    /// (host, certificate, key) per agent host.
    pub agents: Vec<(String, PathBuf, PathBuf)>,
    /// Files made this time (the others existed).
    pub made: Vec<PathBuf>,
}

fn make(e: rcgen::Error) -> CertError {
    CertError::Make(e.to_string())
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, CA_NAME);
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
    p
}

fn write(path: &Path, text: &str, secret: bool, made: &mut Vec<PathBuf>) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| CertError::File { path: path.to_owned(), message: e.to_string() };
    let mut f =
        std::fs::OpenOptions::new().write(true).create_new(true).mode(if secret { 0o600 } else { 0o644 }).open(path).map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    made.push(path.to_owned());
    Ok(())
}

fn read(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|e| CertError::File { path: path.to_owned(), message: e.to_string() })
}

/// A host name fit for a file name and a subject alternative name.
fn host_check(h: &str) -> Result<(), CertError> {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
        && !h.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(CertError::Host(h.to_owned()))
    }
}

/// Makes (or completes) the directory: CA, controller client certificate, one server
/// certificate per host in `agent_hosts`.
pub fn certs(dir: &Path, agent_hosts: &[String]) -> Result<CertFiles, CertError> {
    for h in agent_hosts {
        host_check(h)?;
    }
    std::fs::create_dir_all(dir).map_err(|e| CertError::File { path: dir.to_owned(), message: e.to_string() })?;
    let mut made = Vec::new();
    let (ca_pem, ca_key_pem) = (dir.join("ca.pem"), dir.join("ca-key.pem"));
    let ca_key = if ca_key_pem.exists() {
        KeyPair::from_pem(&read(&ca_key_pem)?).map_err(|e| CertError::File { path: ca_key_pem.clone(), message: e.to_string() })?
    } else {
        let k = KeyPair::generate().map_err(make)?;
        write(&ca_key_pem, &k.serialize_pem(), true, &mut made)?;
        k
    };
    // The same name and key sign the same way: certificates made in a later run verify
    // against the ca.pem of the first.
    let ca = ca_params().self_signed(&ca_key).map_err(make)?;
    if !ca_pem.exists() {
        write(&ca_pem, &ca.pem(), false, &mut made)?;
    }
    let mut leaf = |name: &str, sans: Vec<String>, usage: ExtendedKeyUsagePurpose, cert: &Path, key: &Path| -> Result<(), CertError> {
        if cert.exists() && key.exists() {
            return Ok(());
        }
        let k = KeyPair::generate().map_err(make)?;
        let mut p = CertificateParams::new(sans).map_err(make)?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        p.distinguished_name = dn;
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let c = p.signed_by(&k, &ca, &ca_key).map_err(make)?;
        let _ = std::fs::remove_file(cert);
        let _ = std::fs::remove_file(key);
        write(key, &k.serialize_pem(), true, &mut made)?;
        write(cert, &c.pem(), false, &mut made)
    };
    let (cc, ck) = (dir.join("controller.pem"), dir.join("controller-key.pem"));
    leaf("kvmctl controller", vec![], ExtendedKeyUsagePurpose::ClientAuth, &cc, &ck)?;
    let mut agents = Vec::new();
    for h in agent_hosts {
        let (c, k) = (dir.join(format!("agent-{h}.pem")), dir.join(format!("agent-{h}-key.pem")));
        leaf(&format!("kvmctl agent {h}"), vec![h.clone()], ExtendedKeyUsagePurpose::ServerAuth, &c, &k)?;
        agents.push((h.clone(), c, k));
    }
    Ok(CertFiles { ca: ca_pem, controller_cert: cc, controller_key: ck, agents, made })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_run_signs_with_the_same_ca_and_keeps_what_exists() {
        let dir = tempfile::tempdir().unwrap();
        let first = super::certs(dir.path(), &["10.0.0.2".into()]).unwrap();
        assert_eq!(first.made.len(), 6, "{:?}", first.made);
        let ca = std::fs::read(&first.ca).unwrap();
        let second = super::certs(dir.path(), &["10.0.0.2".into(), "node3.example".into()]).unwrap();
        assert_eq!(second.made.len(), 2, "only node3's pair is new: {:?}", second.made);
        assert_eq!(std::fs::read(&second.ca).unwrap(), ca);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("ca-key.pem")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(super::certs(dir.path(), &["../x".into()]).is_err());
        assert!(super::certs(dir.path(), &["a/b".into()]).is_err());
    }
}
