//! Certificates: from config per host, or self-signed, generated at first
//! start and kept in `data_dir/certs` so clients can pin them across restarts.

use anyhow::Context;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use starling_c2s::HostCertificate;
use starling_core::Config;
use std::path::Path;

/// The hosts' certificates, for client and server streams alike.
pub fn load_certificates(config: &Config) -> anyhow::Result<Vec<HostCertificate>> {
    let mut certs = Vec::new();
    for host in &config.server.hosts {
        let (cert_path, key_path) = match config.tls.certificates.get(host) {
            Some(c) => (c.cert.clone(), c.key.clone()),
            None => {
                let dir = config.server.data_dir.join("certs");
                let paths = (dir.join(format!("{host}.crt")), dir.join(format!("{host}.key")));
                if !paths.0.exists() || !paths.1.exists() {
                    generate_self_signed(host, &paths.0, &paths.1)?;
                }
                paths
            }
        };
        certs.push(load(host, &cert_path, &key_path)?);
    }
    Ok(certs)
}

fn load(host: &str, cert: &Path, key: &Path) -> anyhow::Result<HostCertificate> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("tls.certificates.{host}.cert: reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("tls.certificates.{host}.cert: parsing {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("tls.certificates.{host}.key: reading {}", key.display()))?;
    Ok(HostCertificate { host: host.to_owned(), chain, key })
}

fn generate_self_signed(host: &str, cert: &Path, key: &Path) -> anyhow::Result<()> {
    let dir = cert.parent().expect("cert path has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let generated = rcgen::generate_simple_self_signed(vec![host.to_owned(), format!("*.{host}")])?;
    std::fs::write(cert, generated.cert.pem())?;
    write_private(key, generated.signing_key.serialize_pem().as_bytes())?;
    tracing::warn!(host, cert = %cert.display(), "generated a self-signed certificate; configure a real one for production");
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(data)?;
    Ok(())
}
