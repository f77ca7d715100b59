//! TLS for client streams: one certificate per virtual host chosen by SNI,
//! and the channel-binding data SCRAM-PLUS needs (RFC 9266, RFC 5929).

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256, Sha384, Sha512};
use starling_sasl::{ChannelBindingType, ChannelBindings};
use std::collections::HashMap;
use std::sync::Arc;

/// A host's certificate chain (leaf first) and private key.
pub struct HostCertificate {
    pub host: String,
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// The certificate for an SNI name: the host's, else the host a service
/// domain is under (self-signed ones cover `*.host`), else the first.
/// Client and server-to-server streams both serve it.
#[derive(Debug)]
pub struct SniResolver {
    by_host: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    pub fn new(by_host: HashMap<String, Arc<CertifiedKey>>, default: Arc<CertifiedKey>) -> Self {
        SniResolver { by_host, default }
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let key = hello.server_name().and_then(|name| lookup_under(&self.by_host, name));
        Some(key.unwrap_or(&self.default).clone())
    }
}

/// The entry for `domain` or for the nearest domain it is under.
pub fn lookup_under<'a, T>(map: &'a HashMap<String, T>, domain: &str) -> Option<&'a T> {
    let mut name = domain;
    loop {
        if let Some(found) = map.get(name) {
            return Some(found);
        }
        name = name.split_once('.')?.1;
    }
}

pub struct TlsContext {
    /// For STARTTLS.
    pub starttls: Arc<ServerConfig>,
    /// For direct TLS: ALPN `xmpp-client` (XEP-0368 §4).
    pub direct: Arc<ServerConfig>,
    /// tls-server-end-point binding per host (RFC 5929 §4.1).
    end_point: HashMap<String, Vec<u8>>,
    default_host: String,
}

impl TlsContext {
    /// `certs` must not be empty; the first is served when SNI names no host.
    pub fn new(certs: Vec<HostCertificate>) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut by_host = HashMap::new();
        let mut end_point = HashMap::new();
        let mut default = None;
        let default_host = certs.first().map(|c| c.host.clone()).ok_or_else(|| anyhow::anyhow!("no certificate"))?;
        for cert in certs {
            let leaf = cert.chain.first().ok_or_else(|| anyhow::anyhow!("{}: empty certificate chain", cert.host))?;
            end_point.insert(cert.host.clone(), end_point_hash(leaf));
            let key = CertifiedKey::from_der(cert.chain, cert.key, &provider)
                .map_err(|e| anyhow::anyhow!("{}: {e}", cert.host))?;
            let key = Arc::new(key);
            default.get_or_insert_with(|| key.clone());
            by_host.insert(cert.host, key);
        }
        let resolver = Arc::new(SniResolver::new(by_host, default.expect("at least one certificate")));
        let build = |alpn: Vec<Vec<u8>>| -> anyhow::Result<Arc<ServerConfig>> {
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(resolver.clone());
            config.alpn_protocols = alpn;
            // Clients reconnect often (mobile); resumption saves a full handshake.
            config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
            Ok(Arc::new(config))
        };
        Ok(TlsContext {
            starttls: build(Vec::new())?,
            direct: build(vec![b"xmpp-client".to_vec()])?,
            end_point,
            default_host,
        })
    }

    /// The channel bindings a finished handshake offers.
    pub fn bindings(&self, conn: &rustls::ServerConnection) -> ChannelBindings {
        let mut available = Vec::new();
        // RFC 9266 §3: tls-exporter is defined for TLS 1.3 (and 1.2 only with
        // extended master secret, which rustls does not let us check): 1.3 only.
        if conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
            let mut out = [0u8; 32];
            if conn.export_keying_material(&mut out[..], b"EXPORTER-Channel-Binding", None).is_ok() {
                available.push((ChannelBindingType::TlsExporter, out.to_vec()));
            }
        }
        let host = conn.server_name().filter(|h| self.end_point.contains_key(*h)).unwrap_or(&self.default_host);
        if let Some(hash) = self.end_point.get(host) {
            available.push((ChannelBindingType::TlsServerEndPoint, hash.clone()));
        }
        ChannelBindings { available }
    }
}

/// RFC 5929 §4.1: the certificate hashed with its signature's hash function,
/// SHA-256 when that is MD5 or SHA-1. The signature algorithm is found by its
/// OID bytes: the first signature-algorithm OID in the DER is the TBS
/// `signature` field (a full X.509 parser for one OID is not worth a crate).
fn end_point_hash(cert: &[u8]) -> Vec<u8> {
    const SHA384_OIDS: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0c], // sha384WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x03],       // ecdsa-with-SHA384
    ];
    const SHA512_OIDS: [&[u8]; 2] = [
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x0d], // sha512WithRSAEncryption
        &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],       // ecdsa-with-SHA512
    ];
    let position = |oids: &[&[u8]]| oids.iter().filter_map(|oid| cert.windows(oid.len()).position(|w| w == *oid)).min();
    match (position(&SHA384_OIDS), position(&SHA512_OIDS)) {
        (Some(a), b) if b.is_none_or(|b| a < b) => Sha384::digest(cert).to_vec(),
        (_, Some(_)) => Sha512::digest(cert).to_vec(),
        _ => Sha256::digest(cert).to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_domains_use_the_certificate_of_their_host() {
        let map: HashMap<String, u8> = [("example.com".to_owned(), 1), ("other.org".to_owned(), 2)].into();
        assert_eq!(lookup_under(&map, "example.com"), Some(&1));
        assert_eq!(lookup_under(&map, "conference.example.com"), Some(&1));
        assert_eq!(lookup_under(&map, "example.net"), None);
    }
}
