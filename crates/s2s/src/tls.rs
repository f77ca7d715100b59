//! TLS between servers. Both sides present their host's certificate (the
//! initiator as a client certificate, for SASL EXTERNAL, XEP-0178), and both
//! accept whatever the peer presents during the handshake: whether it is
//! valid for the peer's domain decides how the peer may authenticate
//! (EXTERNAL, dialback, or not at all), which is only known after the stream
//! headers. The handshake signatures are still verified, so a peer cannot
//! present a certificate whose key it does not hold.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use starling_c2s::tls::{lookup_under, SniResolver};
use starling_c2s::HostCertificate;
use starling_core::config::S2sConfig;
use std::collections::HashMap;
use std::sync::Arc;

/// ALPN of direct TLS between servers (XEP-0368 §4).
pub(crate) const ALPN: &[u8] = b"xmpp-server";

pub struct S2sTls {
    /// For incoming STARTTLS.
    pub(crate) starttls: Arc<ServerConfig>,
    /// For incoming direct TLS.
    pub(crate) direct: Arc<ServerConfig>,
    /// For outgoing streams, by local host: its certificate as client certificate.
    clients: HashMap<String, Arc<ClientConfig>>,
    default_client: Arc<ClientConfig>,
    /// Chain and name checks (RFC 6125 DNS-ID) against the trusted roots;
    /// `None` when no root is trusted (every certificate is then invalid).
    validator: Option<Arc<WebPkiServerVerifier>>,
}

impl std::fmt::Debug for S2sTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S2sTls").field("hosts", &self.clients.keys()).finish_non_exhaustive()
    }
}

/// Accepts any certificate; see the module doc.
#[derive(Debug)]
struct CheckedLater(Arc<CryptoProvider>);

impl CheckedLater {
    fn tls12(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> TlsResult {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn tls13(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> TlsResult {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

type TlsResult = Result<HandshakeSignatureValid, rustls::Error>;

impl ServerCertVerifier for CheckedLater {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> TlsResult {
        self.tls12(m, c, d)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> TlsResult {
        self.tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl ClientCertVerifier for CheckedLater {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }
    // A peer without a certificate can still use dialback.
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn verify_client_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> TlsResult {
        self.tls12(m, c, d)
    }
    fn verify_tls13_signature(&self, m: &[u8], c: &CertificateDer<'_>, d: &DigitallySignedStruct) -> TlsResult {
        self.tls13(m, c, d)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.schemes()
    }
}

impl S2sTls {
    pub fn new(certs: &[HostCertificate], config: &S2sConfig) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(CheckedLater(provider.clone()));
        let mut by_host = HashMap::new();
        let mut clients = HashMap::new();
        for cert in certs {
            let key = CertifiedKey::from_der(cert.chain.clone(), cert.key.clone_key(), &provider)
                .map_err(|e| anyhow::anyhow!("{}: {e}", cert.host))?;
            by_host.insert(cert.host.clone(), Arc::new(key));
            let client = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .dangerous()
                .with_custom_certificate_verifier(verifier.clone())
                .with_client_auth_cert(cert.chain.clone(), cert.key.clone_key())?;
            clients.insert(cert.host.clone(), Arc::new(client));
        }
        let first = certs.first().ok_or_else(|| anyhow::anyhow!("no certificate"))?;
        let default = by_host[&first.host].clone();
        let default_client = clients[&first.host].clone();
        let resolver = Arc::new(SniResolver::new(by_host, default));
        let build = |alpn: Vec<Vec<u8>>| -> anyhow::Result<Arc<ServerConfig>> {
            let mut server = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()?
                .with_client_cert_verifier(verifier.clone())
                .with_cert_resolver(resolver.clone());
            server.alpn_protocols = alpn;
            Ok(Arc::new(server))
        };
        let roots = load_roots(config)?;
        let validator = if roots.is_empty() {
            tracing::warn!("no trusted CA certificates: no peer certificate can be valid");
            None
        } else {
            Some(WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build()?)
        };
        Ok(S2sTls {
            starttls: build(Vec::new())?,
            direct: build(vec![ALPN.to_vec()])?,
            clients,
            default_client,
            validator,
        })
    }

    /// The client configuration of an outgoing stream from `local`.
    pub(crate) fn client_for(&self, local: &str, direct: bool) -> Arc<ClientConfig> {
        let config = lookup_under(&self.clients, local).unwrap_or(&self.default_client);
        if !direct {
            return config.clone();
        }
        let mut config = ClientConfig::clone(config);
        config.alpn_protocols = vec![ALPN.to_vec()];
        Arc::new(config)
    }

    /// Whether `chain` (leaf first) is valid now for `domain`: signed by a
    /// trusted root, with `domain` among its DNS names (RFC 6125 DNS-ID;
    /// XEP-0178 also allows SRV-ID and XmppAddr, not checked here).
    pub(crate) fn valid_for(&self, chain: Option<&[CertificateDer<'static>]>, domain: &str) -> bool {
        let (Some(validator), Some((leaf, intermediates))) = (&self.validator, chain.and_then(<[_]>::split_first))
        else {
            return false;
        };
        let Ok(name) = ServerName::try_from(domain.to_owned()) else { return false };
        match validator.verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now()) {
            Ok(_) => true,
            Err(e) => {
                tracing::debug!(domain, error = %e, "peer certificate not valid for its domain");
                false
            }
        }
    }
}

/// `ca_file`'s certificates, else the system's roots.
fn load_roots(config: &S2sConfig) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path)
                .map_err(|e| anyhow::anyhow!("s2s.ca_file: {}: {e}", path.display()))?
            {
                let cert = cert.map_err(|e| anyhow::anyhow!("s2s.ca_file: {}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| anyhow::anyhow!("s2s.ca_file: {}: {e}", path.display()))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "reading a system CA certificate failed");
            }
            roots.add_parsable_certificates(native.certs);
        }
    }
    Ok(roots)
}
