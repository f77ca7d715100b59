//! A certificate authority of the test's own, for TLS between servers:
//! certificates it issues are valid (for the names given) to whoever trusts
//! its root, like a public CA's, without any network.

use anyhow::Context;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, as PEM files.
pub struct IssuedCert {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TestCa {
    pub fn new() -> anyhow::Result<Self> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "Starling test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        set_validity(&mut params)?;
        let key = KeyPair::generate()?;
        let pem = params.self_signed(&key)?.pem();
        Ok(TestCa { issuer: Issuer::new(params, key), pem })
    }

    /// The root certificate, PEM (what peers put in their trust store).
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Writes the root to `path`.
    pub fn write_root(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, &self.pem).with_context(|| format!("writing {}", path.display()))
    }

    /// A certificate for `domain` and its subdomains (`*.domain`), usable by
    /// a server both ways (server and client authentication), written to
    /// `dir/NAME.crt` and `dir/NAME.key` where NAME is `domain`.
    pub fn issue(&self, domain: &str, dir: &Path) -> anyhow::Result<IssuedCert> {
        self.issue_for(domain, &[domain.to_owned(), format!("*.{domain}")], dir)
    }

    /// A certificate named `name` (the files' name) for `names`.
    pub fn issue_for(&self, name: &str, names: &[String], dir: &Path) -> anyhow::Result<IssuedCert> {
        let mut params = CertificateParams::new(names.to_vec())?;
        params.distinguished_name.push(DnType::CommonName, names.first().map_or(name, String::as_str));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        std::fs::create_dir_all(dir)?;
        let issued = IssuedCert { cert: dir.join(format!("{name}.crt")), key: dir.join(format!("{name}.key")) };
        std::fs::write(&issued.cert, cert.pem())?;
        std::fs::write(&issued.key, key.serialize_pem())?;
        Ok(issued)
    }
}

/// About a year on either side of now. rcgen's default validity ends in
/// 4096, past what some peers can schedule an expiry timer for (ejabberd's
/// certificate checker crashes on it).
fn set_validity(params: &mut CertificateParams) -> anyhow::Result<()> {
    let year = 1970 + SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() / 31_556_952;
    let year = i32::try_from(year)?;
    params.not_before = date_time_ymd(year - 1, 1, 1);
    params.not_after = date_time_ymd(year + 1, 12, 31);
    Ok(())
}
